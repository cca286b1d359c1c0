# The firmware (firmware/main.py, same arguments) on a flash that can fill up: while the file named by the
# environment variable FSFULL exists, every write to a file the outbox or the telemetry pipeline opened fails
# with ENOSPC, as on a full LittleFS; remove the file and the space is back. A fake below the layer under test
# (the filesystem under the app), never in its place: the app's own code runs unchanged.
import builtins
import os

FLAG = os.getenv("FSFULL")


def _full():
    try:
        os.stat(FLAG)
        return True
    except OSError:
        return False


class _File:
    def __init__(self, f):
        self._f = f

    def write(self, b):
        if _full():
            raise OSError(28, "ENOSPC")
        return self._f.write(b)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self._f.close()


def _open(path, mode="r", *a, **kw):
    f = builtins.open(path, mode, *a, **kw)
    return _File(f) if ("w" in mode or "a" in mode or "+" in mode) else f


import app.outbox  # noqa: E402
import app.telemetry  # noqa: E402

app.outbox.open = _open  # module globals shadow the builtin: only these modules' files fill up
app.telemetry.open = _open

import main  # noqa: E402,F401 -- firmware/main.py: runs the firmware with this process's arguments
