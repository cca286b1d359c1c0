"""Deploy the firmware to a board with mpremote: library, app, main.py, the board's board.py, config.json,
secrets.json and the certificates the configuration names. Idempotent: mpremote's ``cp`` skips every file
whose SHA-256 already matches on the board, and the preparation step only creates missing folders and removes
files that would shadow the new ones.

    python -m tools.deploy --board esp32_bg96 --port /dev/ttyUSB0 --config dev.json \\
        [--secrets secrets.json] [--certs DIR] [--mpy | --frozen] [--dry-run] [--resume] [--no-reset]

What goes where (the layout firmware/app/main.py expects; ``sys.path`` on a board is '', '.frozen', '/lib'):

    /main.py  /board.py  /app/*.py  /config.json  /secrets.json  /<tls.dir>/<tls.ca|cert|key>
    /lib/cellmqtt/*.py  /lib/board_base.py

The code files are those the board's manifest.py would freeze (so a BG96 board gets no BC660K-GL driver);
a board without a manifest (unix) gets the whole library. ``--mpy`` compiles them with mpy-cross first, at
the optimisation level the manifest gives (the same bytecode as a frozen build; .mpy loads with less RAM).
``--frozen`` is for a firmware built from the board's manifest: only main.py and the data files are copied,
and copies of frozen modules that would shadow them are removed. Before copying, the configuration is checked
as the device will check it (schema, board, modem, what this firmware contains) and the certificates as PEM.
Secret values are never printed: the commands hold file paths only.
"""

import argparse
import ast
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from tools.frozen_size import BOARDS, ROOT, Frozen, Manifest, ManifestError, compile_mpy

sys.path.insert(0, str(ROOT / "firmware"))
sys.path.insert(0, str(ROOT / "lib"))
from app import config as appconfig  # the firmware's own schema (CPython-compatible)
from cellmqtt.certs import CertError, check_pem

ROOT_TARGETS = ("board.py", "app/")  # found via '' (the flash root) on the device; the rest lives in /lib
# what a configuration needs beyond the driver: (config key, value, frozen target that provides it)
NEEDS = (
    ("mqtt.transport", "socket", "cellmqtt/mqtt_client.py"),
    ("cloud.profile", "huawei", "cellmqtt/huawei.py"),
    ("cloud.profile", "enos", "cellmqtt/enos.py"),
    ("cloud.profile", "mqtt", "app/plain.py"),
)


class DeployError(Exception):
    """Refused before touching the board; the message names the file or config key, never a secret value."""


def mpremote_exe():
    exe = Path(sys.executable).with_name("mpremote")
    return str(exe) if exe.exists() else "mpremote"


def board_constants(board):
    """NAME and MODEM from boards/<board>/board.py (module-level string assignments), without importing it."""
    path = BOARDS / board / "board.py"
    if not path.is_file():
        have = sorted(p.parent.name for p in BOARDS.glob("*/board.py"))
        raise DeployError("no board %r (boards: %s)" % (board, ", ".join(have)))
    out = {"NAME": board, "MODEM": None}
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for t in node.targets:
                if isinstance(t, ast.Name) and t.id in out:
                    out[t.id] = node.value.value
    return out


def code_files(board):
    """The Frozen entries of what this board runs: its manifest's files, or for a board without a manifest the
    root manifest's (every driver, transport and cloud) plus its board.py."""
    try:
        if (BOARDS / board / "manifest.py").is_file():
            return Manifest().execute(str(BOARDS / board / "manifest.py")).files
        m = Manifest().execute(str(ROOT / "manifest.py"), port_manifest=False)
    except ManifestError as e:
        raise DeployError(str(e)) from None
    return m.files + [Frozen(str(BOARDS / board / "board.py"), "board.py", None, "(deploy)")]


def device_path(target):
    return target if target.startswith(ROOT_TARGETS) else "lib/" + target


def load_config(config_path, secrets_path):
    """The validated configuration as the firmware will see it (config merged with secrets)."""

    def read(path, what):
        try:
            with open(path) as f:
                d = json.load(f)
        except OSError as e:
            raise DeployError("%s %s: %s" % (what, path, e.strerror)) from None
        except ValueError:
            raise DeployError("%s %s: not valid JSON" % (what, path)) from None
        if not isinstance(d, dict):
            raise DeployError("%s %s: must hold a JSON object" % (what, path))
        return d

    raw = read(config_path, "config")
    if secrets_path:
        appconfig._merge(raw, read(secrets_path, "secrets"))
    try:
        return appconfig.validate(raw)
    except appconfig.ConfigError as e:
        raise DeployError("%s: %s" % (config_path, e)) from None


def check_config(cfg, consts, targets):
    """Refuse what the board would refuse at start-up (safe mode) -- better here than after a deploy."""
    if cfg["board"] != consts["NAME"]:
        raise DeployError('config board is "%s" but this deploy is for %s: set "board": "%s"' % (
            cfg["board"], consts["NAME"], consts["NAME"]))
    if consts["MODEM"] and cfg["modem"]["type"] != consts["MODEM"]:
        raise DeployError("config modem.type is %s but board %s carries a %s" % (
            cfg["modem"]["type"], consts["NAME"], consts["MODEM"]))
    for key, value, target in NEEDS:
        if appconfig.get(cfg, key) == value and target not in targets:
            raise DeployError("config %s is %s, which needs %s: not in board %s's firmware (its manifest.py)" % (
                key, value, target, consts["NAME"]))


def cert_files(cfg, certs_dir):
    """[(local path, device path)] of the certificates the configuration names, each checked as PEM."""
    t = cfg["tls"]
    if not t["enabled"] or not certs_dir:
        return []
    out = []
    for key, kind in (("ca", "cert"), ("cert", "cert"), ("key", "key")):
        name = t[key]
        if not name:
            continue
        if "/" in name or name in (".", ".."):
            raise DeployError("tls.%s: must be a file name inside tls.dir" % key)
        local = os.path.join(certs_dir, name)
        try:
            with open(local, "rb") as f:
                check_pem(f.read(), "tls.%s (%s)" % (key, local), kind)
        except OSError as e:
            raise DeployError("tls.%s: %s: %s" % (key, local, e.strerror)) from None
        except CertError as e:
            raise DeployError(str(e)) from None
        folder = t["dir"].strip("/")  # relative to the flash root, where the app runs
        out.append((local, folder + "/" + name if folder else name))
    return out


def _tuple(items):
    return "(" + "".join(json.dumps(x) + "," for x in items) + ")"


def _prep_script(dirs, remove):
    # runs on the board: create missing folders (parents first), remove files that would shadow or duplicate
    # the ones being copied. Both are no-ops when already done, which keeps a repeated deploy idempotent.
    lines = ["import os"]
    if dirs:
        lines += ["for d in %s:" % _tuple(dirs), " try:os.mkdir(d)", " except OSError:pass"]
    if remove:
        lines += ["for f in %s:" % _tuple(remove), " try:os.remove(f)", " except OSError:pass"]
    return "\n".join(lines)


def plan(board, config, secrets=None, certs=None, mode="py", build_dir=None, port="auto", resume=False,
         reset=True):
    """(mpremote argument vector, notes for the user) of the deploy; compiles .mpy files when mode == "mpy"."""
    consts = board_constants(board)
    files = code_files(board)
    targets = {f.target for f in files}
    cfg = load_config(config, secrets)
    check_config(cfg, consts, targets)
    certs_list = cert_files(cfg, certs)

    copies = []  # (local, device path)
    remove = []
    if mode == "py":
        copies += [(f.source, device_path(f.target)) for f in files]
        remove += [device_path(f.target)[:-3] + ".mpy" for f in files]
    elif mode == "mpy":
        out = Path(build_dir or ROOT / "build" / "deploy" / board)
        for f in files:
            dest = device_path(f.target)[:-3] + ".mpy"
            local = out / dest
            local.parent.mkdir(parents=True, exist_ok=True)
            try:
                compile_mpy(f.source, f.target, f.opt, local)
            except ManifestError as e:
                raise DeployError(str(e)) from None
            copies.append((str(local), dest))
            remove.append(device_path(f.target))  # a stale .py would be imported before the .mpy
    elif mode == "frozen":
        for f in files:
            remove += [device_path(f.target), device_path(f.target)[:-3] + ".mpy"]
    else:
        raise DeployError("mode must be py, mpy or frozen")
    # data next, main.py last: until it lands, an interrupted first deploy boots to the REPL, not a half app
    copies += certs_list
    if secrets:
        copies.append((str(secrets), "secrets.json"))
    copies.append((str(config), "config.json"))
    copies.append((str(ROOT / "firmware" / "main.py"), "main.py"))

    dirs = []
    for _, dest in copies:
        parts = dest.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.append(d)

    argv = [mpremote_exe(), "connect", port]
    if resume:
        argv.append("resume")
    argv += ["exec", _prep_script(dirs, remove)]
    # in order; consecutive files for one folder that keep their names share a cp (dest "folder/"); a file for
    # the root or a renamed one gets its own with the full name (mpremote cannot stat ":" as a folder)
    group, group_dir = [], None
    for local, dest in copies + [(None, None)]:
        folder, _, name = dest.rpartition("/") if dest else (None, None, None)
        keep = local is not None and folder and os.path.basename(local) == name
        if group and not (keep and folder == group_dir):
            argv += ["+", "cp"] + group + [":" + group_dir + "/"]
            group = []
        if keep:
            group.append(local)
            group_dir = folder
        elif local is not None:
            argv += ["+", "cp", local, ":" + dest]
    if reset:
        argv += ["+", "reset"]
    notes = []
    if cfg["tls"]["enabled"] and not certs:
        notes.append("no --certs: the certificates already on the board are kept")
    return argv, notes


def format_command(argv):
    """The command as a shell line, continued at each '+' so it reads one mpremote step per line."""
    out = []
    line = []
    for a in argv:
        if a == "+" and line:
            out.append(" ".join(line))
            line = []
        line.append(shlex.quote(a))
    out.append(" ".join(line))
    return " \\\n  ".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.deploy", description="Copy the firmware to a board "
                                 "with mpremote (idempotent: unchanged files are skipped).")
    ap.add_argument("--board", required=True, help="boards/<board>: esp32_bg96, stm32_bc660k (or unix)")
    ap.add_argument("--port", default="auto", help="serial port of the board (default: mpremote's auto)")
    ap.add_argument("--config", required=True, help="the configuration file; copied as /config.json")
    ap.add_argument("--secrets", help="secrets file merged over the config; copied as /secrets.json")
    ap.add_argument("--certs", help="folder holding the certificates the config names (tls.ca, tls.cert, tls.key)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--mpy", action="store_true", help="compile the code with mpy-cross and copy .mpy files")
    g.add_argument("--frozen", action="store_true",
                   help="the board runs firmware built from the board's manifest: copy main.py and data only")
    ap.add_argument("--build-dir", help="where --mpy puts the compiled files (default build/deploy/<board>)")
    ap.add_argument("--dry-run", action="store_true", help="print the mpremote command instead of running it")
    ap.add_argument("--resume", action="store_true",
                    help="connect without a soft reset (needed for the unix port's REPL, which has none)")
    ap.add_argument("--no-reset", action="store_true", help="do not reset the board at the end")
    a = ap.parse_args(argv)
    mode = "mpy" if a.mpy else "frozen" if a.frozen else "py"
    try:
        cmd, notes = plan(a.board, a.config, a.secrets, a.certs, mode, a.build_dir, a.port, a.resume,
                          not a.no_reset)
    except DeployError as e:
        print("deploy: %s" % e, file=sys.stderr)
        return 2
    for n in notes:
        print("deploy: %s" % n, file=sys.stderr)
    if a.dry_run:
        print(format_command(cmd))
        return 0
    return subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
