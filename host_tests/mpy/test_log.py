# Tests of the firmware logger (firmware/app/log.py) on both ports: threshold and lazy formatting, secret
# redaction (also inside formatted arguments), the rotating file, and that no failure ever reaches the caller.
import os

from app import log as logmod
from app.log import DEBUG, ERROR, INFO, WARN, Logger


class Console:
    def __init__(self):
        self.lines = []

    def write(self, s):
        assert s.endswith("\n")
        self.lines.append(s[:-1])


class BrokenConsole:
    def write(self, s):
        raise OSError(5)


class Counted:
    def __init__(self):
        self.n = 0

    def __str__(self):
        self.n += 1
        return "counted"


class Explodes:
    def __str__(self):
        raise RuntimeError("boom")


def clock():
    return 1234


def new(**kw):
    con = Console()
    kw.setdefault("clock", clock)
    return Logger(console=con, **kw), con


def rd(path):
    with open(path, "rb") as f:
        return f.read().decode()


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def test_threshold_and_lazy_formatting():
    lg, con = new(level="INFO")
    arg = Counted()
    lg.debug("hidden %s", arg)
    assert con.lines == [] and arg.n == 0  # below the threshold: the argument is never formatted
    lg.info("shown %s %d", arg, 7)
    lg.warn("w")
    lg.error("e %r", b"\x01")
    lg.log(WARN, "via log %s", "x")
    assert arg.n == 1
    assert con.lines == ["1234 INFO shown counted 7", "1234 WARN w", "1234 ERROR e b'\\x01'", "1234 WARN via log x"]
    lg.configure(level=ERROR, console=con, clock=clock)
    lg.warn("dropped")
    lg.error("kept")
    assert con.lines[-1] == "1234 ERROR kept" and len(con.lines) == 5
    lg.configure(level=DEBUG, console=con, clock=clock)
    lg.debug("d")
    assert con.lines[-1] == "1234 DEBUG d"
    lg.info("100%")  # no arguments: the text is not %-formatted at all
    assert con.lines[-1] == "1234 INFO 100%"


def test_bad_level_and_sizes_are_refused():
    for kw in ({"level": "LOUD"}, {"level": 15}, {"flush_level": "x"}, {"max_bytes": 10}, {"keep": -1}):
        try:
            Logger(console=None, **kw)
        except ValueError as e:
            assert "log:" in str(e)
        else:
            raise AssertionError("accepted %r" % (kw,))
    assert Logger(level="warn", console=None).level == WARN
    assert Logger(level=INFO, console=None).level == INFO


def test_secrets_are_redacted_everywhere(tmp_path_str):
    path = tmp_path_str + "/app.log"
    lg, con = new(path=path)
    lg.add_secret("hunter2")
    lg.add_secret("s3cr3t")
    lg.add_secret(b"s3cr3t-key")  # contains the one above: the longer one must be replaced first
    lg.add_secret("")  # ignored: would redact everything
    lg.add_secret(1234)  # e.g. a PIN given as a number -- this also hides the clock value 1234 (safe side)
    lg.info("password hunter2 in the format")
    lg.info("arg %s", "user:hunter2@host")
    lg.info("bytes %s", b"key=s3cr3t-key;")
    lg.info("short %s", "s3cr3t")
    lg.error("failed: %s", ValueError("auth with hunter2 refused"))
    lg.info("list %r", ["hunter2", 1])
    lg.info("pin %d", 1234)
    lg.close()
    for line in con.lines + rd(path).splitlines():
        for s in ("hunter2", "s3cr3t", "1234"):
            assert s not in line, line
    assert con.lines[0] == "*** INFO password *** in the format"
    assert con.lines[1] == "*** INFO arg user:***@host"
    assert con.lines[2] == "*** INFO bytes b'key=***;'"
    assert con.lines[3] == "*** INFO short ***"
    assert con.lines[6] == "*** INFO pin ***"
    assert rd(path).splitlines() == con.lines


def test_one_line_per_record():
    lg, con = new()
    lg.info("multi %s", "line\nforged 1234 ERROR x\r")
    assert con.lines == ["1234 INFO multi line\\nforged 1234 ERROR x\\r"]


def test_format_errors_and_bad_arguments_never_raise():
    lg, con = new()
    lg.info("%d items", "not-a-number")
    lg.info("%s %s", "only-one")
    lg.info("%s", Explodes())
    assert lg.errors == 3
    assert len(con.lines) == 3
    assert con.lines[0].startswith("1234 INFO %d items <log format error")
    lg.info("still %s", "working")
    assert con.lines[-1] == "1234 INFO still working"


def test_broken_console_never_raises_and_file_still_gets_lines(tmp_path_str):
    path = tmp_path_str + "/app.log"
    lg = Logger(console=BrokenConsole(), path=path, clock=clock)
    lg.info("a")
    lg.error("b")
    assert lg.errors == 2
    lg.close()
    assert rd(path) == "1234 INFO a\n1234 ERROR b\n"


def test_rotating_file(tmp_path_str):
    path = tmp_path_str + "/logs/app.log"
    os.mkdir(tmp_path_str + "/logs")
    lg, con = new(path=path, max_bytes=200, keep=2)
    for i in range(60):
        lg.info("line %02d %s", i, "x" * 10)  # 30 bytes a line
    lg.close()
    files = [path + ".2", path + ".1", path]
    assert not exists(path + ".3")
    texts = [rd(p) for p in files]
    assert all(0 < len(t) <= 200 for t in texts), [len(t) for t in texts]
    lines = "".join(texts).splitlines()
    per = 200 // (len(con.lines[0]) + 1)  # whole lines per file
    # the newest lines, in order, none lost inside the kept generations
    assert lines == con.lines[-len(lines):]
    assert lg.rotations == (60 - 1) // per and len(lines) == 2 * per + 60 - lg.rotations * per
    assert lg.file_errors == 0
    # reopening appends to the current file and keeps its size in mind
    lg2, _ = new(path=path, max_bytes=200, keep=2)
    lg2.info("after reopen")
    lg2.close()
    assert rd(path).endswith("1234 INFO after reopen\n") and len(rd(path)) <= 200


def test_rotation_with_keep_0_and_a_line_longer_than_the_limit(tmp_path_str):
    path = tmp_path_str + "/app.log"
    lg, _ = new(path=path, max_bytes=64, keep=0)
    for i in range(10):
        lg.info("n%d", i)
    lg.info("y" * 100)
    lg.info("z")
    lg.close()
    assert not exists(path + ".1")
    assert rd(path) == "1234 INFO z\n"
    assert lg.rotations >= 2 and lg.file_errors == 0


def test_missing_directory_is_counted_and_the_console_keeps_going(tmp_path_str):
    path = tmp_path_str + "/no/such/dir/app.log"
    lg, con = new(path=path)
    for i in range(5):
        lg.info("n%d", i)
    assert lg.file_errors == 5
    notices = [ln for ln in con.lines if ln.startswith("log: file")]
    assert len(notices) == 1 and path in notices[0]  # said once per failure streak, not on every line
    assert [ln for ln in con.lines if "INFO" in ln] == ["1234 INFO n%d" % i for i in range(5)]
    os.mkdir(tmp_path_str + "/no")
    os.mkdir(tmp_path_str + "/no/such")
    os.mkdir(tmp_path_str + "/no/such/dir")
    lg.info("recovered")  # the file is retried and works again
    lg.close()
    assert rd(path) == "1234 INFO recovered\n" and lg.file_errors == 5


def test_full_filesystem_never_raises():
    # /dev/full: every write fails with ENOSPC, like a full flash filesystem
    assert exists("/dev/full")
    lg, con = new(path="/dev/full", flush_level=DEBUG)
    for i in range(3):
        lg.info("n%d", i)
    assert lg.file_errors >= 3
    assert [ln for ln in con.lines if "INFO" in ln] == ["1234 INFO n0", "1234 INFO n1", "1234 INFO n2"]
    assert len([ln for ln in con.lines if ln.startswith("log: file /dev/full failed")]) == 1
    lg.close()


def test_warnings_reach_the_file_at_once(tmp_path_str):
    path = tmp_path_str + "/app.log"
    lg, _ = new(path=path)
    lg.info("buffered maybe")
    lg.warn("flushed")
    assert rd(path) == "1234 INFO buffered maybe\n1234 WARN flushed\n"
    lg.close()


def test_module_level_logger(tmp_path_str):
    con = Console()
    try:
        logmod.configure(level="DEBUG", console=con, clock=clock, path=tmp_path_str + "/m.log")
        logmod.add_secret("topsecret")
        logmod.debug("d %s", "topsecret")
        logmod.info("i")
        logmod.warn("w")
        logmod.error("e")
        logmod.flush()
        assert con.lines == ["1234 DEBUG d ***", "1234 INFO i", "1234 WARN w", "1234 ERROR e"]
        assert rd(tmp_path_str + "/m.log").splitlines() == con.lines
    finally:
        logmod.configure()  # back to the defaults (console, INFO, no file) for other tests in this process
