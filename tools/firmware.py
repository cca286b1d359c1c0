"""Build a board's real firmware image: MicroPython with the board's manifest frozen in (issue 16).

    python -m tools.firmware BOARD [--mpy-dir DIR] [--jobs N] [--force] [--quiet] [--json]

``make firmware BOARD=stm32_bc660k`` runs this. The board's ``boards/<board>/firmware.json`` says how:

* ``port``: the MicroPython port (``stm32``, ``qemu``); ``base_board``: the port's board it builds
  (NUCLEO_F429ZI, PYBV11, ...); ``make``: extra make variables; ``vendor``: the pinned submodule archives of
  ../shared/vendor it needs (unpacked into lib/<name>, sha256 checked); ``mbedtls``: Debian's mbed TLS source
  into lib/mbedtls (hashlib sha1 and the ssl module on NUCLEO_F429ZI);
* ``board_dir`` + ``patches`` (qemu_cm3): a board folder of our own, copied into ports/<port>/boards/<base_board>,
  and unified diffs applied to the tree with ``patch -p1`` (the project's own patch set).

The source is MicroPython 1.26.1 from Debian's pinned tarball (tools/frozen_unix.py: the same download, sha256
checked), unpacked once per board into build/firmware/<board>/micropython-1.26.1 (each board its own tree and
build folder, so boards never share objects), or ``--mpy-dir`` (``make firmware MPY_DIR=...``): a user's own
MicroPython checkout with its submodules, used through a shadow tree of symlinks (only ports/<port> is copied,
so the patch set never touches the user's tree). The board's manifest.py is the FROZEN_MANIFEST; MPY_LIB_DIR is
the tree's lib/micropython-lib (require("hmac")).

The image lands in build/firmware/<board>/ (firmware.elf plus firmware.dfu, firmware.hex and firmware0.bin /
firmware1.bin where the port makes them) with
``firmware.json``: the inputs' digest, the image's flash and RAM use (arm-none-eabi-size: text + data is
flash, data + bss is static RAM) and the bytes the frozen content takes (the linker map's frozen_content.o).
A second run with unchanged inputs (the board folder, the root manifest, lib/cellmqtt, firmware/app, the pinned
archives, the make options) rebuilds nothing. One progress line per stage goes to stderr; concurrent runs wait
for each other (a lock file per board). GIT_CEILING_DIRECTORIES keeps MicroPython's makeversionhdr from
reading our repository's git.

``build()`` raises ``BuildError`` with the reason (no arm-none-eabi-gcc, a checksum mismatch, a failed make
with the tail of its log) -- tests skip and benchmarks report with that reason.
"""

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tools import frozen_unix as fu

ROOT = fu.ROOT
BOARDS = ROOT / "boards"
OUT = ROOT / "build" / "firmware"
VENDOR = Path(os.environ.get("CELLMQTT_VENDOR", str(ROOT.parent / "shared" / "vendor")))
# the pinned submodule archives (../shared/vendor/README.md): name -> (file, sha256)
VENDOR_ARCHIVES = {
    "stm32lib": ("stm32lib-928df86-f4.tar.xz", "124131146ec16d7d997338451adbbd074f65da855980a4a6b990555826e3f520"),
    "lwip": ("lwip-77dcd25a-src.tar.xz", "7728e71ea2e6b364005e4ac976d973d1b9b6a58d1221eb53815054724320af5e"),
    "micropython-lib": ("micropython-lib-34c4ee16.tar.xz",
                        "aae879581ea393105eb1a4ae56b9c95658b22b603389d62e520058886fcb16a8"),
}
# the frozen sources of every board: a change rebuilds its frozen content
SOURCES = ("manifest.py", "lib/cellmqtt/*.py", "firmware/app/*.py", "firmware/main.py", "boards/common/*.py")
_KEEP = ("py/", "extmod/", "shared/", "lib/", "drivers/", "mpy-cross/", "tools/", "LICENSE")
_SHADOW = ("py", "extmod", "shared", "lib", "drivers", "mpy-cross", "tools")


class BuildError(Exception):
    """The image cannot be built here; the message says why."""


def boards():
    """The boards with a firmware.json (the ones `make firmware` builds)."""
    return sorted(p.parent.name for p in BOARDS.glob("*/firmware.json"))


def spec(board):
    p = BOARDS / board / "firmware.json"
    if not p.is_file():
        raise BuildError("boards/%s/firmware.json: no such file (boards with an image: %s)" % (board, ", ".join(boards())))
    s = json.loads(p.read_text())
    for key in ("port", "base_board"):
        if not s.get(key):
            raise BuildError("boards/%s/firmware.json: %r is missing" % (board, key))
    return s


def check_tools():
    """None when the cross toolchain is present, else what is missing."""
    missing = [t for t in ("make", "gcc", "patch", "arm-none-eabi-gcc", "arm-none-eabi-size") if shutil.which(t) is None]
    return ("not installed: " + ", ".join(missing)) if missing else None


def _log(quiet, board, msg):
    if not quiet:
        print("firmware %s: %s" % (board, msg), file=sys.stderr, flush=True)


def _board_files(board, s):
    files = [BOARDS / board / "firmware.json", BOARDS / board / "manifest.py"]
    files += sorted((BOARDS / board).glob("*.py"))
    if s.get("board_dir"):
        files += sorted(p for p in (BOARDS / board / s["board_dir"]).rglob("*") if p.is_file())
    files += [BOARDS / board / p for p in s.get("patches", ())]
    files += sorted({p for pattern in SOURCES for p in ROOT.glob(pattern)})
    return sorted(set(files))


def _make_args(board, s, tree, build):
    args = ["BOARD=" + s["base_board"], "BUILD=" + str(build),
            "FROZEN_MANIFEST=" + str(BOARDS / board / "manifest.py"),
            "MPY_LIB_DIR=" + str(tree / "lib" / "micropython-lib")]
    return args + ["%s=%s" % kv for kv in sorted(s.get("make", {}).items())]


def digest(board, mpy_dir=None):
    """sha256 over everything the image is built from."""
    s = spec(board)
    h = hashlib.sha256()
    parts = [json.dumps(s, sort_keys=True), str(mpy_dir or fu.MICROPYTHON_TARBALL[1])]
    parts += [VENDOR_ARCHIVES[v][1] for v in s.get("vendor", ())]
    parts += [fu.MBEDTLS_TARBALL[1] if s.get("mbedtls") else "no-mbedtls"]
    for part in parts:
        h.update(part.encode() + b"\0")
    for p in _board_files(board, s):
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _sha256(path):
    return fu._sha256(path)


def _vendor(name):
    fn, sha = VENDOR_ARCHIVES[name]
    p = VENDOR / fn
    if not p.is_file():
        raise BuildError("%s: not found (the pinned vendor archives, ../shared/vendor/README.md; set CELLMQTT_VENDOR "
                         "to their folder)" % p)
    got = _sha256(p)
    if got != sha:
        raise BuildError("%s: sha256 %s, expected %s" % (p, got, sha))
    return p


def _tarball_tree(board, s, base, quiet):
    """The board's own unpacked MicroPython tree (re-unpacked when its inputs change)."""
    tree = base / ("micropython-" + fu.MP_VERSION)
    inputs = [fu.MICROPYTHON_TARBALL[1]] + [VENDOR_ARCHIVES[v][1] for v in s.get("vendor", ())]
    inputs += [fu.MBEDTLS_TARBALL[1] if s.get("mbedtls") else "-", s["port"]]
    stamp = tree / ".cellmqtt-unpacked"
    if stamp.exists() and stamp.read_text().split() == inputs:
        return tree
    cache = fu.DEFAULT_CACHE  # the downloads tools/frozen_unix.py keeps (build/micropython-1.26.1/dl)
    cache.mkdir(parents=True, exist_ok=True)
    tb = fu._download(cache, *fu.MICROPYTHON_TARBALL, quiet)
    _log(quiet, board, "unpacking %s (ports/%s)" % (tb.name, s["port"]))
    fu._unpack(tb, tree, "micropython-" + fu.MP_VERSION, _KEEP + ("ports/" + s["port"] + "/",))
    for name in s.get("vendor", ()):
        p = _vendor(name)
        _log(quiet, board, "unpacking %s into lib/%s" % (p.name, name))
        dest = tree / "lib" / name
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fu._unpack(p, dest, name, ("",))
    if s.get("mbedtls"):
        mb = fu._download(cache, *fu.MBEDTLS_TARBALL, quiet)
        _log(quiet, board, "unpacking %s into lib/mbedtls" % mb.name)
        fu._unpack(mb, tree / "lib" / "mbedtls", "mbedtls-3.6.7", ("include/", "library/", "LICENSE"))
    stamp.write_text("\n".join(inputs) + "\n")
    return tree


def _shadow_tree(board, s, base, mpy_dir, quiet):
    """A tree over the user's MicroPython checkout: symlinks to its folders, ports/<port> copied."""
    src = Path(mpy_dir).resolve()
    if not (src / "py" / "mkenv.mk").is_file() or not (src / "ports" / s["port"]).is_dir():
        raise BuildError("MPY_DIR=%s: not a MicroPython tree with ports/%s" % (mpy_dir, s["port"]))
    tree = base / "mpy-dir"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "ports").mkdir(parents=True)
    for name in _SHADOW:
        os.symlink(src / name, tree / name)
    _log(quiet, board, "copying %s/ports/%s" % (src, s["port"]))
    shutil.copytree(src / "ports" / s["port"], tree / "ports" / s["port"], symlinks=True,
                    ignore=shutil.ignore_patterns("build-*", "build"))
    if not (src / "lib" / "micropython-lib" / "README.md").exists():
        raise BuildError("MPY_DIR=%s: lib/micropython-lib is empty (git submodule update --init lib/micropython-lib)"
                         % mpy_dir)
    return tree


def _board_layer(board, s, tree, quiet):
    """The board folder of our own and the patch set (qemu_cm3), applied to the port's pristine files."""
    port = tree / "ports" / s["port"]
    if s.get("board_dir"):
        dest = port / "boards" / s["base_board"]
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(BOARDS / board / s["board_dir"], dest, ignore=shutil.ignore_patterns("*.patch"))
    for rel in s.get("patches", ()):
        patch = BOARDS / board / rel
        for f in re.findall(r"^\+\+\+ b/(\S+)", patch.read_text(), re.M):
            orig = tree / (f + ".cellmqtt-orig")
            if orig.exists():  # patched by an earlier build: back to the pristine file first
                shutil.copy2(orig, tree / f)
            else:
                shutil.copy2(tree / f, orig)
        _log(quiet, board, "applying %s" % patch.relative_to(ROOT))
        p = subprocess.run(["patch", "-p1", "--forward", "--no-backup-if-mismatch", "-i", str(patch)], cwd=tree,
                           capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise BuildError("%s does not apply to %s:\n%s%s" % (patch.name, tree, p.stdout, p.stderr))


def _make(board, tree, subdir, args, jobs, logf):
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env["GIT_CEILING_DIRECTORIES"] = str(tree.parent)  # makeversionhdr: not our repository's git
    cmd = ["make", "-C", str(tree / subdir), "-j%d" % jobs, "PYTHON=" + sys.executable] + args
    logf.write(("$ " + " ".join(cmd) + "\n").encode())
    logf.flush()
    return subprocess.run(cmd, check=False, stdout=logf, stderr=subprocess.STDOUT, env=env).returncode


def sizes(elf):
    """Flash and static RAM of an image (arm-none-eabi-size), and what the frozen content takes (linker map)."""
    p = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise BuildError("arm-none-eabi-size %s: %s" % (elf, p.stderr.strip()))
    sec = {}
    for line in p.stdout.splitlines():
        f = line.split()
        if len(f) >= 3 and f[1].isdigit():
            sec[f[0]] = int(f[1])
    p = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True, check=False)
    text, data, bss = (int(x) for x in p.stdout.splitlines()[1].split()[:3])
    frozen = frozen_bytes(Path(elf).with_suffix(".map"))
    return {"flash_bytes": text + data, "ram_static_bytes": data + bss, "text": text, "data": data, "bss": bss,
            "frozen_bytes": frozen, "sections": sec}


def frozen_bytes(mapf):
    """Bytes the image's frozen content (frozen_content.o) takes, from the linker map: its input sections in the
    image's loaded output sections (not the discarded ones, not debug information)."""
    if not mapf.exists():
        return 0
    text = mapf.read_text(errors="replace")
    text = text[text.find("Linker script and memory map"):]
    out, total, pending = None, 0, None
    for line in text.splitlines():
        m = re.match(r"^(\.\S+)", line)
        if m:
            out = m.group(1)
        if out is None or out.startswith((".debug", ".comment", ".ARM.attributes", ".stab")):
            continue
        # " .rodata.x  0xADDR  0xSIZE  .../frozen_content.o", or the section name alone on the line before
        m = re.match(r"^ (\.\S+)?\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+)$", line)
        if m and m.group(4).endswith("frozen_content.o") and (m.group(1) or pending):
            if int(m.group(2), 16):  # an address of 0: not placed
                total += int(m.group(3), 16)
        pending = re.match(r"^ \.\S+$", line)
    return total


def build(board, mpy_dir=None, jobs=2, force=False, quiet=False):
    """Build (or reuse) the board's image; return its firmware.json record (with "dir" and "elf")."""
    s = spec(board)
    out = OUT / board
    out.mkdir(parents=True, exist_ok=True)
    recf = out / "firmware.json"
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        d = digest(board, mpy_dir)
        try:
            rec = json.loads(recf.read_text())
        except (OSError, ValueError):
            rec = {}
        if not force and rec.get("digest") == d and (out / "firmware.elf").exists():
            _log(quiet, board, "up to date (%s)" % (out / "firmware.elf"))
            if check_tools() is None:
                rec.update(sizes(out / "firmware.elf"))  # read again: the figures are the image's, not the record's
            return dict(rec, dir=str(out), elf=str(out / "firmware.elf"))
        why = check_tools()
        if why:
            raise BuildError("no ARM toolchain: " + why + " (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)")
        t0 = time.monotonic()
        _log(quiet, board, "[1/5] source: %s" % (("MPY_DIR=" + str(mpy_dir)) if mpy_dir else
                                                 "MicroPython %s tarball + ../shared/vendor" % fu.MP_VERSION))
        tree = _shadow_tree(board, s, out, mpy_dir, quiet) if mpy_dir else _tarball_tree(board, s, out, quiet)
        _log(quiet, board, "[2/5] board layer: %s %s" % (s["port"], s["base_board"]))
        _board_layer(board, s, tree, quiet)
        # the build folders of the pinned tree and of MPY_DIR apart: make goes by timestamps, and objects of one
        # tree must never count as up to date for the other
        sfx = "-mpy-dir" if mpy_dir else ""
        logpath = out / ("build%s.log" % sfx)
        bdir = out / ("build" + sfx)
        with open(logpath, "wb") as logf:
            _log(quiet, board, "[3/5] mpy-cross (log: %s)" % logpath)
            mpyx = out / ("mpy-cross" + sfx)
            if _make(board, tree, "mpy-cross", ["BUILD=" + str(mpyx)], jobs, logf) != 0:
                raise BuildError("mpy-cross did not build:\n" + fu._tail(logpath))
            _log(quiet, board, "[4/5] ports/%s BOARD=%s with boards/%s/manifest.py frozen" % (
                s["port"], s["base_board"], board))
            # frozen_content.c lists the qstrs the C code lacks: made again with this build's qstrs, never reused
            (bdir / "frozen_content.c").unlink(missing_ok=True)
            args = _make_args(board, s, tree, bdir) + ["MICROPY_MPYCROSS=" + str(mpyx / "mpy-cross"),
                                                      "MICROPY_MPYCROSS_DEPENDENCY=" + str(mpyx / "mpy-cross")]
            if _make(board, tree, "ports/" + s["port"], args, jobs, logf) != 0:
                raise BuildError("ports/%s did not build:\n%s" % (s["port"], fu._tail(logpath)))
        _log(quiet, board, "[5/5] image")
        made = []
        # the stm32 port writes firmware0.bin (flash sector 0, the vectors) and firmware1.bin (from 0x08020000):
        # one .bin of the whole range would also overwrite the internal filesystem's sectors in between
        for name in ("firmware.elf", "firmware.dfu", "firmware.hex", "firmware.bin", "firmware0.bin", "firmware1.bin",
                     "firmware.map"):
            src = bdir / name
            if src.exists():
                shutil.copy2(src, out / name)
                made.append(name)
        if "firmware.elf" not in made:
            raise BuildError("ports/%s made no firmware.elf in %s" % (s["port"], bdir))
        rec = {"board": board, "port": s["port"], "base_board": s["base_board"], "digest": d,
               "micropython": str(mpy_dir) if mpy_dir else fu.MP_VERSION, "files": made,
               "build_s": round(time.monotonic() - t0, 1)}
        rec.update(sizes(out / "firmware.elf"))
        recf.write_text(json.dumps(rec, indent=1))
        _log(quiet, board, "built in %.0f s" % rec["build_s"])
    return dict(rec, dir=str(out), elf=str(out / "firmware.elf"))


def report(rec):
    return ("%s: %s (%s %s): flash %d bytes (%.1f KB: text %d + data %d), static RAM %d bytes (data %d + bss %d), "
            "frozen content %d bytes (%.1f KB)" % (
                rec["board"], rec["dir"], rec["port"], rec["base_board"], rec["flash_bytes"],
                rec["flash_bytes"] / 1024, rec["text"], rec["data"], rec["ram_static_bytes"], rec["data"], rec["bss"],
                rec["frozen_bytes"], rec["frozen_bytes"] / 1024))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.firmware", description=__doc__.splitlines()[0])
    ap.add_argument("board", nargs="?", help="a board with boards/<board>/firmware.json (%s)" % ", ".join(boards()))
    ap.add_argument("--mpy-dir", help="your own MicroPython tree (with its submodules) instead of the pinned tarball")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="make -j (default 2)")
    ap.add_argument("--force", action="store_true", help="run make even when the image is up to date")
    ap.add_argument("--quiet", "-q", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the image's record as JSON")
    a = ap.parse_args(argv)
    if not a.board:
        ap.error("which board? one of: " + ", ".join(boards()))
    try:
        rec = build(a.board, a.mpy_dir or None, a.jobs, a.force, a.quiet)
    except BuildError as e:
        print("firmware %s: %s" % (a.board, e), file=sys.stderr)
        return 1
    print(json.dumps(rec, indent=1) if a.json else report(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
