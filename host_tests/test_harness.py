"""The MicroPython bridge must report failures faithfully: message, traceback, hangs, crashes."""

import conftest


def _write(tmp_path, body):
    p = tmp_path / "test_probe.py"
    p.write_text(body)
    return p


def test_failure_carries_message_and_traceback(tmp_path):
    p = _write(tmp_path, "def helper(x):\n    assert x == 2, 'x was %d' % x\n\ndef test_f():\n    helper(1)\n")
    ok, out, error = conftest.run_micropython_test(p, "test_f", {})
    assert not ok
    assert "x was 1" in error
    assert 'line 2, in helper' in out and "line 5, in test_f" in out


def test_pass_and_arguments(tmp_path):
    p = _write(tmp_path, "import sys\ndef test_f(a, b):\n    assert sys.implementation.name == 'micropython'\n"
                         "    assert a == {'k': [1, 2]} and b == 'x'\n")
    ok, out, error = conftest.run_micropython_test(p, "test_f", {"a": {"k": [1, 2]}, "b": "x"})
    assert ok, (out, error)


def test_async_failure(tmp_path):
    p = _write(tmp_path, "import asyncio\nasync def test_f():\n    await asyncio.sleep(0)\n    raise ValueError('boom')\n")
    ok, out, error = conftest.run_micropython_test(p, "test_f", {})
    assert not ok and "boom" in error and "ValueError" in out


def test_hang_is_a_timeout(tmp_path):
    p = _write(tmp_path, "import time\ndef test_f():\n    time.sleep(30)\n")
    ok, out, error = conftest.run_micropython_test(p, "test_f", {}, timeout=1)
    assert not ok and "timed out" in error


def test_crash_without_result_line(tmp_path):
    p = _write(tmp_path, "import sys\ndef test_f():\n    sys.exit(3)\n")
    ok, out, error = conftest.run_micropython_test(p, "test_f", {})
    assert not ok and "no result line" in error


def test_heapsize_is_enforced(tmp_path):
    p = _write(tmp_path, "def test_f():\n    b = bytearray(200 * 1024)\n")
    ok, out, error = conftest.run_micropython_test(p, "test_f", {}, heapsize="64k")
    assert not ok and "MemoryError" in error
    ok, out, error = conftest.run_micropython_test(p, "test_f", {}, heapsize="1024k")
    assert ok, error


def test_both_ports_have_distinct_node_ids():
    # Under xdist, items with equal node ids are deduplicated: a [micropython] twin would silently not run.
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist",
                        "host_tests/mpy/test_harness_selfcheck.py"], cwd=str(conftest.ROOT), capture_output=True, text=True)
    ids = [line for line in p.stdout.splitlines() if "::" in line]
    assert len(ids) == 6 and len(set(ids)) == 6, ids
    assert sum(i.endswith("[micropython]") for i in ids) == 3
