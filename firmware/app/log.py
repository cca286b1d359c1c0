# Logging for the firmware: levels with a threshold, lazy %-formatting, registered secrets replaced by ***
# in every line, output to the console and optionally to a size-rotated file on flash. A log call never
# raises: a failing console or filesystem is counted (errors, file_errors) and logging goes on.
#
#   from app import log
#   log.configure(level="INFO", path="/log/app.log", max_bytes=16384, keep=2)
#   log.add_secret(device_secret)
#   log.info("published %d bytes to %s", n, topic)
import os
import sys
import time

DEBUG = 10
INFO = 20
WARN = 30
ERROR = 40
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARN: "WARN", ERROR: "ERROR"}


def _level(v):
    if isinstance(v, str):
        for k, name in _NAMES.items():
            if name == v.upper():
                return k
    elif v in _NAMES:
        return v
    raise ValueError("log: unknown level %r (DEBUG, INFO, WARN, ERROR)" % (v,))


def _escape(line):
    # Control characters (CR, LF, ESC, ... DEL) become \r, \n, \xNN: a cloud payload cannot forge a log line
    # or drive the terminal that shows the log. The usual line has none and is returned as it is.
    for c in line:
        if c < " " or c == "\x7f":
            break
    else:
        return line
    out = []
    for c in line:
        if c == "\r":
            out.append("\\r")
        elif c == "\n":
            out.append("\\n")
        elif c < " " or c == "\x7f":
            out.append("\\x%02x" % ord(c))
        else:
            out.append(c)
    return "".join(out)


class Logger:
    def __init__(self, **kw):
        self._secrets = []
        self._f = None
        self._failing = False
        self.errors = self.file_errors = self.rotations = 0
        self.configure(**kw)

    def configure(self, level=INFO, console=True, path=None, max_bytes=16384, keep=2, flush_level=WARN,
                  clock=time.time):
        """Set the threshold and outputs. console: True (stdout), a stream, or None/False."""
        if max_bytes < 64 or keep < 0:
            raise ValueError("log: need max_bytes >= 64 and keep >= 0")
        self.level = _level(level)
        self._flush = _level(flush_level)
        self._out = sys.stdout if console is True else console or None
        self.close()
        self._path = path
        self._max = max_bytes
        self._keep = keep
        self._clock = clock

    def add_secret(self, s):
        """Replace s (str or bytes) by *** in every line from now on."""
        s = bytes(s).decode() if isinstance(s, (bytes, bytearray)) else str(s)
        if s and s not in self._secrets:
            self._secrets.append(s)
            self._secrets.sort(key=len, reverse=True)  # longest first: a secret containing another one

    def debug(self, fmt, *args):
        if DEBUG >= self.level:
            self._emit(DEBUG, fmt, args)

    def info(self, fmt, *args):
        if INFO >= self.level:
            self._emit(INFO, fmt, args)

    def warn(self, fmt, *args):
        if WARN >= self.level:
            self._emit(WARN, fmt, args)

    def error(self, fmt, *args):
        if ERROR >= self.level:
            self._emit(ERROR, fmt, args)

    def log(self, level, fmt, *args):
        if level >= self.level:
            self._emit(level, fmt, args)

    def _emit(self, level, fmt, args):
        try:
            try:
                msg = fmt % args if args else str(fmt)
            except Exception as e:  # noqa: BLE001 -- a bad format string must not take the caller down
                self.errors += 1
                msg = "%s <log format error: %s>" % (fmt, e)
            line = "%d %s %s" % (self._clock(), _NAMES.get(level, level), msg)
            for s in self._secrets:
                if s in line:
                    line = line.replace(s, "***")
            line = _escape(line) + "\n"  # one record per line; no terminal control sequence from a payload
        except Exception:  # noqa: BLE001 -- e.g. an argument whose __str__ raises: count it, never raise
            self.errors += 1
            return
        if self._out:
            try:
                self._out.write(line)
            except Exception:  # noqa: BLE001 -- a broken console: counted; the file still gets the line
                self.errors += 1
        if self._path:
            self._file(line.encode(), level >= self._flush)

    def _file(self, data, flush):
        try:
            f = self._f
            if f is None:
                f = self._f = open(self._path, "ab")  # noqa: SIM115 -- kept open across calls
                self._size = os.stat(self._path)[6]
            if self._size and self._size + len(data) > self._max:
                self._rotate()
                f = self._f = open(self._path, "ab")  # noqa: SIM115
                self._size = 0
            f.write(data)
            self._size += len(data)
            if flush:
                f.flush()
            self._failing = False
        except Exception as e:  # noqa: BLE001 -- a full or failing filesystem: counted, said once
            self.file_errors += 1
            self.close()  # retried (reopened) on the next line
            if not self._failing and self._out:
                try:
                    self._out.write("log: file %s failed: %r\n" % (self._path, e))
                except Exception:  # noqa: BLE001 -- the console is broken too; both failures are counted
                    self.errors += 1
            self._failing = True

    def _rotate(self):
        # app.log -> app.log.1 -> ... -> app.log.<keep>; each step is one atomic rename, so a power cut leaves
        # whole files (at worst one name missing from the chain), never a half-moved one.
        self._f.close()
        self._f = None
        p = self._path
        for i in range(self._keep, 0, -1):
            src = p if i == 1 else "%s.%d" % (p, i - 1)
            try:
                os.stat(src)
            except OSError:
                continue  # that generation does not exist yet
            os.rename(src, "%s.%d" % (p, i))
        if not self._keep:
            os.remove(p)
        self.rotations += 1

    def flush(self):
        if self._f:
            try:
                self._f.flush()
            except OSError:
                self.file_errors += 1
                self.close()

    def close(self):
        f, self._f = self._f, None
        if f:
            try:
                f.close()
            except OSError:  # a close that flushes onto a full filesystem: already counted by the write
                self.file_errors += 1


# The application's logger; `from app import log; log.info(...)`.
root = Logger()
configure = root.configure
add_secret = root.add_secret
debug = root.debug
info = root.info
warn = root.warn
error = root.error
flush = root.flush
