"""Start and stop host-side services (broker, modem emulator, cloud twin) as processes: for the tests and the demo.

Each service prints one READY line on stdout; ``Service`` waits for it, keeps the rest of the output in a
log file next to the test's tmp dir, and terminates the process group at the end.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class ServiceError(RuntimeError):
    pass


class Service:
    def __init__(self, args, ready_prefix, log_path, timeout=20, env=None, cwd=ROOT):
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        e = dict(os.environ)
        e["PYTHONUNBUFFERED"] = "1"
        if env:
            e.update(env)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self._log, cwd=str(cwd), env=e,
                                     start_new_session=True)
        self.ready_line = self._wait_ready(ready_prefix, timeout)
        self._pump = threading.Thread(target=self._drain, daemon=True)
        self._pump.start()

    def _wait_ready(self, prefix, timeout):
        deadline = time.monotonic() + timeout
        result = {}

        def read():
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self._log.write(raw)
                self._log.flush()
                if line.startswith(prefix):
                    result["line"] = line
                    return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(max(0.0, deadline - time.monotonic()))
        if "line" not in result:
            self.stop()
            raise ServiceError("%s did not print %r within %ss; log: %s\n%s" % (
                " ".join(self.args), prefix, timeout, self.log_path, self.log_tail()))
        return result["line"]

    def _drain(self):
        for raw in self.proc.stdout:
            self._log.write(raw)
            self._log.flush()

    def fields(self):
        """READY a=1 b=x -> {"a": "1", "b": "x"}"""
        out = {}
        for tok in self.ready_line.split()[1:]:
            k, _, v = tok.partition("=")
            out[k] = v
        return out

    def log_tail(self, n=4000):
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=5):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def python_module(module, *args):
    return [sys.executable, "-m", module] + [str(a) for a in args]
