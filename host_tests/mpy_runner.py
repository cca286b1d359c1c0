# Runs one test function on the MicroPython unix port (also works under CPython) and reports the result.
#
# Started by host_tests/conftest.py as:
#     micropython host_tests/mpy_runner.py <test module path> <function name>
# with MPTEST_ARGS (JSON object: the pytest fixture values the function asks for) and MPTEST_PATH
# (":"-separated import roots) in the environment. Prints the test's own output, then one line
#     \x1eMPTEST <json>
# with {"status": "pass"} or {"status": "fail", "error": "<repr>"} after the traceback.
import json
import os
import sys


def _path_setup():
    roots = os.getenv("MPTEST_PATH") or ""
    for p in reversed(roots.split(":")):
        if p and p not in sys.path:
            sys.path.insert(0, p)


def _report(status, error=None):
    d = {"status": status}
    if error is not None:
        d["error"] = error
    sys.stdout.write("\x1eMPTEST " + json.dumps(d) + "\n")


def _print_exc(e):
    if hasattr(sys, "print_exception"):
        sys.print_exception(e)  # MicroPython
    else:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__)


def main():
    _path_setup()
    path, fname = sys.argv[1], sys.argv[2]
    d, _, base = path.rpartition("/")
    if d and d not in sys.path:
        sys.path.insert(0, d)
    modname = base[:-3] if base.endswith(".py") else base
    kwargs = json.loads(os.getenv("MPTEST_ARGS") or "{}")
    try:
        mod = __import__(modname)
        fn = getattr(mod, fname)
        r = fn(**kwargs)
        if hasattr(r, "send"):  # an async test: a coroutine/generator
            import asyncio

            r = asyncio.run(r)
    except Exception as e:  # report every failure as a test result, never as a runner crash
        _print_exc(e)
        _report("fail", repr(e))
        sys.exit(1)
    _report("pass")


main()
