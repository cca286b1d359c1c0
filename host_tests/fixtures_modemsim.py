"""pytest fixtures for the modem emulator (tools/modemsim), star-imported by conftest.py.

* ``start_modemsim(profile, **options)`` -> a factory; each call starts ``python -m tools.modemsim`` and
  returns a ``Modemsim`` with ``.info`` (JSON-able: {"profile", "port", "control", "transcript",
  "state_dir"}), ``.control(obj) -> reply``, ``.transcript_text()``, ``.stop()``; all are stopped at teardown.
  Options: resolve (list of NAME=HOST[:PORT] rules), time, latency, settings ({key: seconds} -> --set),
  faults (list/dict -> inline JSON, or a path), firmware, state_dir, sim, roaming, no_nitz, tz, chunking (seed),
  wakeup_rxd (0/1), psm_shipped,
  check_hostname, tls_ciphers, extra_args (list).
* ``bg96`` / ``bc660k`` -> the ``.info`` dict of an emulator (fast latencies) whose --resolve maps
  ``broker.test`` port 8883 to the ``broker`` fixture's TLS port and port 1883 to its plain port.
  These are what MicroPython-side driver tests take as arguments.

``AtPort`` (not a fixture) is a small raw-pty client for CPython tests: send a line, read until a final
result, expect a pattern.
"""

import json
import os
import re
import select
import shutil
import socket
import tempfile
import time

import pytest
from services import Service, python_module

__all__ = ["bc660k", "bg96", "start_modemsim"]

FINAL = re.compile(rb"(?:^|\r\n)(OK|ERROR|\+CME ERROR: [^\r\n]*|SEND OK|SEND FAIL)\r\n")


class Modemsim:
    def __init__(self, profile, tmp_path, **options):
        # Unix socket paths are limited to ~107 bytes: keep link and control under a short /tmp dir.
        self.dir = tempfile.mkdtemp(prefix="msim", dir="/tmp")
        link = os.path.join(self.dir, "tty")
        control = os.path.join(self.dir, "ctl")
        transcript = options.pop("transcript", None) or str(tmp_path / ("modemsim-%s-%s.log" % (
            profile, os.path.basename(self.dir))))
        args = ["--profile", profile, "--link", link, "--control", control, "--transcript", transcript]
        for rule in options.pop("resolve", ()):
            args += ["--resolve", rule]
        for key in ("time", "latency", "firmware", "state_dir", "sim", "tz", "tls_ciphers", "chunking", "wakeup_rxd"):
            v = options.pop(key, None)
            if v is not None:
                args += ["--" + key.replace("_", "-"), str(v)]
        for key in ("roaming", "no_nitz", "check_hostname", "psm_shipped"):
            if options.pop(key, False):
                args.append("--" + key.replace("_", "-"))
        for k, v in (options.pop("settings", None) or {}).items():
            args += ["--set", "%s=%s" % (k, v)]
        faults = options.pop("faults", None)
        if faults is not None:
            args += ["--faults", faults if isinstance(faults, str) else json.dumps(faults)]
        args += list(options.pop("extra_args", ()))
        if options:
            raise TypeError("unknown modemsim option(s): %s" % ", ".join(sorted(options)))
        self.log = tmp_path / ("modemsim-%s-%s.stderr" % (profile, os.path.basename(self.dir)))
        self.service = Service(python_module("tools.modemsim", *args), "READY", self.log)
        self.info = {"profile": profile, "port": link, "control": control, "transcript": transcript,
                     "state_dir": args[args.index("--state-dir") + 1] if "--state-dir" in args else None}

    def control(self, obj, timeout=10):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.info["control"])
            s.sendall(json.dumps(obj).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return json.loads(buf)

    def counters(self):
        return self.control({"cmd": "counters"})["counters"]

    def transcript_text(self):
        with open(self.info["transcript"], encoding="ascii") as f:
            return f.read()

    def alive(self):
        return self.service.alive()

    def stop(self):
        self.service.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def start_modemsim(tmp_path):
    started = []

    def start(profile, **options):
        m = Modemsim(profile, tmp_path, **options)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()


def _broker_rules(broker):
    return ["broker.test:8883=%s:%d" % (broker["host"], broker["tls_port"]),
            "broker.test:1883=%s:%d" % (broker["host"], broker["plain_port"])]


# ``broker`` comes first so it is set up before and torn down after the emulator: an amqtt broker stopped
# while a client is still connected can take seconds to exit.
@pytest.fixture
def bg96(broker, start_modemsim):
    """Info dict of a BG96 emulator; broker.test:8883/1883 reach the broker fixture."""
    return start_modemsim("bg96", resolve=_broker_rules(broker)).info


@pytest.fixture
def bc660k(broker, start_modemsim):
    """Info dict of a BC660K-GL emulator; broker.test:8883/1883 reach the broker fixture."""
    return start_modemsim("bc660k", resolve=_broker_rules(broker)).info


class AtPort:
    """Raw access to the emulated UART for CPython tests.

    The emulator already put the pty in raw mode; this opens it without touching termios, so bytes the
    module sent before the port was opened (boot URCs) are still there to read.
    """

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.buf = bytearray()

    def close(self):
        os.close(self.fd)

    def write(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], 1.0)
                continue
            view = view[n:]

    def _fill(self, timeout):
        r, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if r:
            try:
                self.buf += os.read(self.fd, 65536)
            except BlockingIOError:
                pass
            return True
        return False

    def read_for(self, seconds):
        """Everything that arrives within ``seconds`` (plus what was already buffered)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._fill(end - time.monotonic())
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def read_until(self, pattern, timeout=5.0):
        """Bytes up to and including the first match of ``pattern`` (bytes regex); the rest stays buffered."""
        rx = re.compile(pattern) if isinstance(pattern, bytes) else pattern
        end = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                out = bytes(self.buf[:m.end()])
                del self.buf[:m.end()]
                return out
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no %r within %.1f s; got %r" % (rx.pattern, timeout, bytes(self.buf)))
            self._fill(left)

    def expect(self, pattern, timeout=5.0):
        rx = re.compile(pattern) if isinstance(pattern, bytes) else pattern
        return rx.search(self.read_until(rx, timeout))

    def cmd(self, line, timeout=5.0):
        """Send ``line`` + CR; return the bytes up to and including the final result."""
        self.write((line if isinstance(line, bytes) else line.encode("latin-1")) + b"\r")
        return self.read_until(FINAL, timeout)

    def wait_boot(self, timeout=5.0, marker=b"RDY\r\n"):
        return self.read_until(re.escape(marker), timeout)

    def wait_registered(self, timeout=5.0):
        """Poll AT+CEREG? until registered (home or roaming)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if re.search(rb"\+CEREG: \d,[15]", self.cmd("AT+CEREG?")):
                return
            time.sleep(0.05)
        raise TimeoutError("not registered within %.1f s" % timeout)


# A broker whose TLS listener offers a chosen OpenSSL cipher list (tools.broker --ciphers), for tests of what
# happens when the module and the server share no suite.
class CipherBroker:
    """``python -m tools.broker --ciphers LIST``; ``.info`` like the broker fixture, ``.stop()``."""

    def __init__(self, pki, log_path, ciphers, require_client_cert=False):
        args = ["--certs", os.path.dirname(pki["ca_pem"]), "--ciphers", ciphers]
        if require_client_cert:
            args.append("--require-client-cert")
        self.service = Service(python_module("tools.broker", *args), "READY", log_path)
        f = self.service.fields()
        self.tls_port, self.plain_port = int(f["tls"]), int(f["plain"])
        self.info = {"host": "127.0.0.1", "tls_port": self.tls_port, "plain_port": self.plain_port,
                     "ca": pki["ca_pem"]}

    def stop(self):
        self.service.stop()
