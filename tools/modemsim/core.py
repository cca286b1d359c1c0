"""The engine of one emulated module: UART framing, command dispatch, data modes, URCs, power, sleep, faults.

Everything runs on one asyncio loop (network connects run in worker threads and report back to it):

* **RX intake** reads the pty master as bytes arrive. It drops what a real module would never see: bytes
  while the module is off or booting (no answer before ``RDY``), the byte that wakes a sleeping BC660K-GL,
  bytes inside the 500 ms gate after a BC660K ``>`` prompt, and bytes a ``drop_first_byte`` fault eats.
  The rest goes into the RX buffer with its arrival time.
* **The processor** is one task that reads the RX buffer like the module's AT parser: it echoes what it
  consumes (ATE1), assembles a line up to CR, runs the command(s) on it one after another, and only then
  reads on; so a host that does not wait for the final result sees its next command answered late, as on
  hardware. Handlers that need payload bytes (``>`` / ``CONNECT``) read them from the same buffer.
* **Output** goes through one queue and one writer, so a response written byte-by-byte (``slow_output``)
  or late (``late_reply``) keeps its bytes together and later output queues behind it.
* **URCs** are written as they happen, which puts them wherever they fall: between a command's echo and its
  ``OK``, between response lines, or in the middle of another exchange. While the host is typing payload
  after ``>`` they are held until the response is complete (BG96) or lost (BC660K-GL).

Response shape (quectel-bg96.md section 1): information lines ``\\r\\n<l1>\\r\\n<l2>\\r\\n``, final result
``\\r\\nOK\\r\\n`` (a few test forms use a compact ``OK\\r\\n``), URCs ``\\r\\n<urc>\\r\\n``, prompt
``\\r\\n> ``.
"""

import asyncio
import datetime
import random
import re
import sys
import time
from collections import defaultdict, deque
from typing import ClassVar

from . import faults as faultlib
from .transcript import REDACTED, PemStream, redact, redact_hex, redact_line

CR, LF, BS, CTRL_Z, ESC, DEL = 0x0D, 0x0A, 0x08, 0x1A, 0x1B, 0x7F
MAX_LINE = 4096  # longer command lines are cut (the module's buffer is smaller; nobody sends that much)
CTRLZ_CAP = 65536  # payload bytes buffered while waiting for Ctrl-Z before giving up
UTC = datetime.UTC


class AtError(Exception):
    """Plain ERROR: unknown command, syntax error."""


class CmeError(Exception):
    """+CME ERROR: <code> (shown per AT+CMEE)."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


class ParamError(Exception):
    """A parameter is missing or out of range: each profile decides how that looks (BG96: ERROR,
    BC660K-GL: +CME ERROR: 50)."""


class _Missing:
    pass


MISSING = _Missing()


# ---------------------------------------------------------------------------------------------------------
# Command line parsing


class Cmd:
    """One command of a command line: ``name`` (upper case, no '+'), ``kind`` exec|read|test|write, args."""

    __slots__ = ("args", "kind", "name", "text")

    def __init__(self, name, kind, args, text):
        self.name = name
        self.kind = kind
        self.args = args  # list of ('s', str) quoted, ('t', str) token, or None (empty)
        self.text = text

    @property
    def n(self):
        return len(self.args)

    def has(self, i):
        return i < len(self.args) and self.args[i] is not None

    def int(self, i, lo=None, hi=None, default=MISSING):
        if not self.has(i):
            if default is MISSING:
                raise ParamError("parameter %d missing" % i)
            return default
        kind, v = self.args[i]
        if kind != "t":
            raise ParamError("parameter %d must be a number" % i)
        try:
            x = int(v, 0) if v[:2].lower() == "0x" else int(v)
        except ValueError:
            raise ParamError("parameter %d is not a number" % i) from None
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            raise ParamError("parameter %d out of range" % i)
        return x

    def str(self, i, default=MISSING, maxlen=None, quoted=False):
        if not self.has(i):
            if default is MISSING:
                raise ParamError("parameter %d missing" % i)
            return default
        kind, v = self.args[i]
        if quoted and kind != "s":
            raise ParamError("parameter %d must be quoted" % i)
        if maxlen is not None and len(v) > maxlen:
            raise ParamError("parameter %d too long" % i)
        return v

    def item(self, i=0):
        """An option name like "keepalive" (lower case; quoted or not)."""
        return self.str(i).lower()


def split_params(s):
    """'1,"a,b",,x' -> [('t','1'), ('s','a,b'), None, ('t','x')]; quotes are not escaped in AT syntax."""
    if s == "":
        return []
    args, cur, inq, quoted = [], [], False, False
    for ch in s:
        if ch == '"':
            inq = not inq
            quoted = True
            continue
        if ch == "," and not inq:
            args.append(_arg(cur, quoted))
            cur, quoted = [], False
            continue
        cur.append(ch)
    if inq:
        raise ParamError("unterminated string")
    args.append(_arg(cur, quoted))
    return args


def _arg(chars, quoted):
    v = "".join(chars)
    if quoted:
        return ("s", v)
    v = v.strip()
    return ("t", v) if v else None


_BASIC = re.compile(r"(&?[A-Z])(\d*)", re.IGNORECASE)


def parse_line(body):
    """The text after 'AT' -> list of Cmd. Raises AtError on syntax errors."""
    cmds = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c in " ;":
            i += 1
            continue
        if c in "+$%^":
            j = i + 1
            while j < n and (body[j].isalnum() or body[j] in "&_/"):
                j += 1
            name = body[i + 1:j].upper()
            if not name:
                raise AtError("empty command name")
            k, inq = j, False
            while k < n:
                if body[k] == '"':
                    inq = not inq
                elif body[k] == ";" and not inq:
                    break
                k += 1
            rest = body[j:k].rstrip()
            if rest == "":
                kind, args = "exec", []
            elif rest == "?":
                kind, args = "read", []
            elif rest == "=?":
                kind, args = "test", []
            elif rest.startswith("="):
                kind = "write"
                try:
                    args = split_params(rest[1:])
                except ParamError:
                    raise AtError("syntax") from None
            else:
                raise AtError("syntax")
            cmds.append(Cmd(name, kind, args, body[i:k]))
            i = k + 1 if k < n else k
            continue
        m = _BASIC.match(body, i)
        if not m:
            raise AtError("syntax")
        name = m.group(1).upper()
        j = m.end()
        if name == "S":  # S-register: S3=13 / S3?
            m2 = re.match(r"(\d+)(=\d+|\?)?", body[j - len(m.group(2)):])
            if not m2:
                raise AtError("syntax")
            reg = m2.group(1)
            op = m2.group(2) or ""
            j = j - len(m.group(2)) + m2.end()
            kind = "read" if op == "?" else "write"
            args = [("t", reg)] + ([("t", op[1:])] if op.startswith("=") else [])
            cmds.append(Cmd("S", kind, args, body[i:j]))
        else:
            cmds.append(Cmd(name, "exec", [("t", m.group(2))] if m.group(2) else [], body[i:j]))
        i = j
    return cmds


# ---------------------------------------------------------------------------------------------------------
# RX buffer


class RxBuffer:
    """Bytes received and not yet read by the module, with the arrival time of each chunk."""

    def __init__(self):
        self.chunks = deque()  # [bytearray, t]
        self.size = 0
        self.event = asyncio.Event()

    def put(self, data, t):
        self.chunks.append([bytearray(data), t])
        self.size += len(data)
        self.event.set()

    def clear(self):
        self.chunks.clear()
        self.size = 0

    def take(self, n, stop=None):
        """Up to n bytes from the front (stopping after the first byte in ``stop``); -> (bytes, t_first)."""
        out = bytearray()
        t0 = self.chunks[0][1] if self.chunks else time.monotonic()
        while self.chunks and len(out) < n:
            buf = self.chunks[0][0]
            want = n - len(out)
            if stop is not None:
                for idx, b in enumerate(buf[:want]):
                    if b in stop:
                        want = idx + 1
                        n = len(out) + want  # stop here
                        break
            part = buf[:want]
            out += part
            del buf[:want]
            if not buf:
                self.chunks.popleft()
        self.size -= len(out)
        if not self.size:
            self.event.clear()
        return bytes(out), t0

    async def wait(self, timeout=None):
        if self.size:
            return True
        self.event.clear()
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
            return True
        except TimeoutError:
            return False


# ---------------------------------------------------------------------------------------------------------
# Module clock


class TimeSource:
    """What the network says the time is: host clock, a fixed start that then runs, or host + offset."""

    def __init__(self, spec="host"):
        self.spec = spec or "host"
        self.t0 = time.monotonic()
        self.fixed = None
        self.offset = 0.0
        if self.spec == "host":
            pass
        elif self.spec.startswith("fixed:"):
            s = self.spec[6:]
            try:
                self.fixed = datetime.datetime.fromisoformat(s)
            except ValueError:
                raise ValueError("--time fixed:%s is not ISO 8601 (e.g. fixed:2024-05-01T12:00:00Z)" % s) from None
            if self.fixed.tzinfo is None:
                self.fixed = self.fixed.replace(tzinfo=UTC)
        elif self.spec.startswith("offset:"):
            try:
                self.offset = float(self.spec[7:])
            except ValueError:
                raise ValueError("--time offset:<+-seconds>, got %r" % self.spec) from None
        else:
            raise ValueError("--time must be host, fixed:ISO8601Z or offset:+-SECONDS")

    def now(self):
        if self.fixed is not None:
            return self.fixed + datetime.timedelta(seconds=time.monotonic() - self.t0)
        return datetime.datetime.now(UTC) + datetime.timedelta(seconds=self.offset)


class ModuleClock:
    """The module's RTC: starts at the firmware's epoch at power-on, set by NITZ, AT+CCLK or AT+QNTP."""

    def __init__(self, epoch):
        self.epoch = epoch
        self.reset()

    def reset(self):
        self.base = self.epoch
        self.base_mono = time.monotonic()
        self.tz_q = 0  # time zone in quarter hours
        self.set_by = None  # None (never set) | 'nitz' | 'cclk' | 'ntp'

    def now(self):
        return self.base + datetime.timedelta(seconds=time.monotonic() - self.base_mono)

    def set(self, utc_dt, tz_q=None, by="cclk"):
        self.base = utc_dt.astimezone(UTC)
        self.base_mono = time.monotonic()
        if tz_q is not None:
            self.tz_q = tz_q
        self.set_by = by

    def local(self):
        return self.now() + datetime.timedelta(minutes=15 * self.tz_q)

    def tz_str(self):
        return "%+03d" % self.tz_q if self.tz_q else "+00"


# ---------------------------------------------------------------------------------------------------------
# Response


class Response:
    """The output of one command line, built by handlers, written when the command finishes (or flushed
    early when a handler must show a prompt/CONNECT before reading payload)."""

    def __init__(self, modem):
        self.m = modem
        self.chunks = []  # [bytes, render-or-None]
        self.lines = 0  # info lines in the current block (first one gets the leading CRLF)
        self.final = b"OK"
        self.compact = False
        self.mods = []  # response-changing fault actions
        self.swallowed = False
        self.after = []  # callables to run once the final result has been written
        self._flushed_once = False

    def info(self, text, render=None):
        if isinstance(text, str):
            text = text.encode("latin-1")
        if self.lines == 0:
            data = b"\r\n" + text + b"\r\n"
            render = [b"\r\n"] + render + [b"\r\n"] if render is not None else None
        else:
            data = text + b"\r\n"
            render = render + [b"\r\n"] if render is not None else None
        self.chunks.append([data, render])
        self.lines += 1

    def raw(self, data, render=None):
        self.chunks.append([bytes(data), render])

    def flush(self, extra=b""):
        """Write what is pending now (before a prompt or CONNECT)."""
        if extra:
            self.chunks.append([extra, None])
        chunks, self.chunks = self.chunks, []
        self.lines = 0
        first = not self._flushed_once
        self._flushed_once = True
        self.m._write_response(chunks, self.mods, first=first, last=False)

    def finish(self):
        if self.swallowed:
            return
        if self.final is not None:
            tail = (self.final + b"\r\n") if self.compact and self.lines else (b"\r\n" + self.final + b"\r\n")
            self.chunks.append([tail, None])
        first = not self._flushed_once
        self.m._write_response(self.chunks, self.mods, first=first, last=True, after=self.after)
        self.chunks = []


# ---------------------------------------------------------------------------------------------------------
# The engine


class Modem:
    """Base class of the two profiles. Subclasses set the class attributes and add ``at_<NAME>`` handlers
    (``&`` in a name is spelled ``AMP_``), via the mixins in common.py and mqtt_at.py."""

    PROFILE = "?"
    MODEL = "?"
    DEFAULT_FIRMWARE = "?"
    LATENCY: ClassVar[dict] = {}  # {"fast": {...}, "realistic": {...}} seconds
    UNSUPPORTED = frozenset()  # mixin commands this module does not have
    URCS_LOST_IN_DATA_MODE = False
    PROMPT_GATE = False
    HAS_SLEEP = False
    CLOCK_EPOCH = datetime.datetime(1980, 1, 6, tzinfo=UTC)
    CME_TEXT: ClassVar[dict] = {}

    def __init__(self, opts, link, transcript, store, resolver, loop, rules=()):
        self.opts = opts
        self.link = link
        self.tr = transcript
        self.store = store
        self.resolver = resolver
        self.loop = loop
        self.firmware = opts.firmware or self.DEFAULT_FIRMWARE
        self.lat = dict(self.LATENCY[opts.latency])
        for k, v in (opts.settings or {}).items():
            if k not in self.lat:
                raise ValueError("--set %s: unknown setting (known: %s)" % (k, ", ".join(sorted(self.lat))))
            self.lat[k] = v
        self.t0 = time.monotonic()
        self.time_source = TimeSource(opts.time)
        self.clock = ModuleClock(self.CLOCK_EPOCH)
        self.power = "off"
        self.gen = 0
        self.timers = set()
        self.rx = RxBuffer()
        self.outq = deque()
        self.out_event = asyncio.Event()
        self.proc = None
        self.busy = False
        self.data_mode = None  # what the host is typing after a prompt: None or a label
        self.data_redact_all = False
        self.hold_urcs = False
        self.held_urcs = []
        self.asleep = False
        self.awake_at = 0.0
        self.wake_line = False
        self.gate_until = 0.0
        self.sleep_handle = None
        self.rx_last_t = 0.0
        self.uart_busy_until = 0.0  # when the emulated UART finishes receiving what was read so far
        self.plus_t = None
        self.counters = defaultdict(int)
        self.cmd_counts = defaultdict(int)
        self.rules = list(rules)
        self.pending_mods = []
        self.armed_drop = 0
        seed = getattr(opts, "chunking", None)
        self.chunker = random.Random(seed) if seed is not None else None  # --chunking: random output pieces
        self.armed_urc_drops = []  # fault drop_urc: byte strings whose next URC is lost
        self.armed_tls = []
        self.armed_refuse = []
        self.armed_corrupt = 0
        self.slow_pending = []
        self.echo = 1
        self.cmee = 1
        self._writer_task = None
        self.stopped = False
        for rule in self.rules:
            for a in rule.actions:
                if a["action"] == "sleep" and not self.HAS_SLEEP:
                    raise faultlib.FaultError("rule %s: sleep: this module has no UART sleep (BC660K-GL only)"
                                              % rule.name)

    # ---- lifecycle ----
    def start(self):
        self.loop.add_reader(self.link.master, self._on_readable)
        self._writer_task = self.loop.create_task(self._writer())
        for rule in self.rules:
            if rule.kind == "after_s":
                self.loop.call_later(rule.after_s, self._rule_timer, rule)
        self.tr.event("emulator started: profile=%s firmware=%s latency=%s" % (
            self.PROFILE, self.firmware, self.opts.latency))
        self.power_cycle("cold")

    def stop(self):
        self.stopped = True
        try:
            self.loop.remove_reader(self.link.master)
        except (ValueError, OSError):
            pass
        self._cancel_timers()
        if self.proc:
            self.proc.cancel()
        if self._writer_task:
            self._writer_task.cancel()
        self.close_network()

    def later(self, delay, fn, *args):
        """A volatile timer: cancelled when the module resets. Cancel it with ``cancel_later``."""
        gen = self.gen

        def run():
            self.timers.discard(h)
            if gen == self.gen and not self.stopped:
                fn(*args)

        h = self.loop.call_later(max(0.0, delay), run)
        self.timers.add(h)
        return h

    def cancel_later(self, h):
        h.cancel()
        self.timers.discard(h)  # a long run must not accumulate cancelled handles

    def _cancel_timers(self):
        for h in list(self.timers):
            h.cancel()
        self.timers.clear()
        if self.sleep_handle:
            self.sleep_handle.cancel()
            self.sleep_handle = None

    def now(self):
        return time.monotonic()

    # ---- power ----
    def power_cycle(self, mode):
        """mode: cold | reset | crash | wake (from PSM). Loses volatile state, boots, prints RDY."""
        had_pdp = self.active_pdp_cids() if self.power in ("on", "booting") else []
        self.gen += 1
        self._cancel_timers()
        if self.proc:
            self.proc.cancel()
            self.proc = None
        self.close_network()
        self.power = "booting"
        self.asleep = False
        self.data_mode = None
        self.hold_urcs = False
        self.held_urcs = []
        self.busy = False
        self.rx.clear()
        self.clock.reset()
        self.reset_volatile()
        self.counters["boots"] += 1
        if mode != "cold":
            self.counters["resets"] += 1
        delay = self.lat["boot"] if mode == "cold" else self.lat["reset"]
        self.tr.event("power: %s, RDY in %.2f s" % (mode, delay))
        if had_pdp and mode in ("reset", "crash"):
            self.later(delay * 0.4, self.on_reset_pdp_lost, had_pdp)
        self.later(delay, self._booted)

    def power_off(self, text=b"POWERED DOWN"):
        self.gen += 1
        self._cancel_timers()
        if self.proc:
            self.proc.cancel()
            self.proc = None
        self.close_network()
        if text:
            self.emit(b"\r\n" + text + b"\r\n")
        self.power = "off"
        self.rx.clear()
        self.tr.event("power: off")

    def _booted(self):
        self.power = "on"
        self.load_nv_settings()
        for delay, line in self.boot_urcs():
            if delay:
                self.later(delay, self.urc, line)
            else:
                self.urc(line)
        self.proc = self.loop.create_task(self._processor())
        self.after_boot()
        self.fire("boot")
        self._rearm_sleep()

    # Profile hooks
    def reset_volatile(self):
        pass

    def load_nv_settings(self):
        pass

    def boot_urcs(self):
        return [(0, b"RDY")]

    def after_boot(self):
        pass

    def active_pdp_cids(self):
        return []

    def on_reset_pdp_lost(self, cids):
        pass

    def close_network(self):
        pass

    def uart_wake_allowed(self):
        return True  # a sleeping module wakes on the UART's first byte (BC660K-GL: only with wakeupRXD 1)

    def on_uart_wake(self):
        pass

    # ---- RX intake ----
    def _on_readable(self):
        data = self.link.read()
        if not data:
            return
        now = self.now()
        self.counters["rx_bytes"] += len(data)
        if self.power != "on":
            self._drop(now, data, "module %s" % ("booting (not answered before RDY)" if self.power == "booting"
                                                 else "powered off" if self.power == "off" else "in PSM"))
            self.rx_last_t = now
            return
        i = 0
        if self.asleep and not self.uart_wake_allowed():
            self._drop(now, data, "module asleep; the UART does not wake it (wakeupRXD 0)")
            self.rx_last_t = now
            return
        if self.asleep:
            self.on_uart_wake()
            self.asleep = False
            self.awake_at = now + self.lat["wake"]
            self._drop(now, data[:1], "module asleep (this byte woke it)")
            if self.data_mode is None:
                self.wake_line = True
            i = 1
            self.fire("wake")
        while i < len(data) and self.armed_drop > 0:
            self.armed_drop -= 1
            self._drop(now, data[i:i + 1], "fault drop_first_byte")
            i += 1
        # The pty delivers a write at once; a real UART needs 10 bits per byte. Byte k of this read is
        # complete at ``start + (k+1)*per``: that, not the pty's instant, decides what the gate loses.
        per = 10.0 / self.lat["uart_bps"] if self.lat["uart_bps"] else 0.0
        start = max(now, self.uart_busy_until)
        self.uart_busy_until = start + per * len(data)
        rest = data[i:]
        if rest and start + per * (i + 1) < self.gate_until:
            lost = len(rest) if not per else min(len(rest), max(1, int((self.gate_until - start) / per) - i))
            self._drop(now, rest[:lost], "inside the %d ms gate after the > prompt" % round(
                self.lat["prompt_gate"] * 1000))
            rest = rest[lost:]
        if rest:
            if rest == b"+++" and now - self.rx_last_t >= self.lat["plus_guard"]:
                self.plus_t = now
            self.rx.put(rest, now)
        self.rx_last_t = now
        self._rearm_sleep()

    def _drop(self, t, data, why):
        self.counters["rx_dropped"] += len(data)
        if self.data_mode is not None and self.data_redact_all:
            segs = [REDACTED]
        else:
            segs = redact_line(data)
        self.tr.rx_dropped(t, segs, why)

    # ---- output ----
    def emit(self, data, render=None, byte_ms=0, log=True):
        if not data:
            return
        self.outq.append((bytes(data), render, byte_ms, log))
        self.out_event.set()
        if self.asleep:
            self.asleep = False  # the module is awake while it talks; the host's next byte is not lost
        self._rearm_sleep()

    async def _writer(self):
        while True:
            while not self.outq:
                self.out_event.clear()
                await self.out_event.wait()
            data, render, byte_ms, log = self.outq.popleft()
            if log:
                self.tr.tx(self.now(), render if render is not None else [data])
            self.counters["tx_bytes"] += len(data)
            if byte_ms:
                for b in data:
                    await self._write_all(bytes((b,)))
                    await asyncio.sleep(byte_ms / 1000.0)
            elif self.chunker is not None:
                view = memoryview(data)
                while view:
                    n = self.chunker.randint(1, 64)
                    await self._write_all(view[:n])
                    view = view[n:]
                    if view:
                        await asyncio.sleep(self.chunker.randint(0, 3) / 1000.0)
            else:
                await self._write_all(data)
            self._rearm_sleep()

    async def _write_all(self, data):
        view = memoryview(data)
        while view:
            n = self.link.write(view)
            view = view[n:]
            if not view:
                return
            # pty buffer full: nobody is reading. Wait for room; after 2 s give up on this chunk, like a
            # UART whose receiver is not listening (the bytes are lost, the module carries on).
            fut = self.loop.create_future()
            self.loop.add_writer(self.link.master, lambda f=fut: f.done() or f.set_result(True))
            try:
                await asyncio.wait_for(fut, 2.0)
            except TimeoutError:
                self.counters["tx_lost"] += len(view)
                self.tr.event("TX lost: %d bytes, pty buffer full (no reader)" % len(view))
                return
            finally:
                self.loop.remove_writer(self.link.master)

    def urc(self, text, render=None):
        """An unsolicited result: written now, held during payload input (BG96) or lost (BC660K-GL)."""
        if isinstance(text, str):
            text = text.encode("latin-1")
        if self.power not in ("on", "booting"):
            self.counters["urc_lost"] += 1
            return
        for m in self.armed_urc_drops:
            if m in text:
                self.armed_urc_drops.remove(m)
                self.counters["urc_lost"] += 1
                self.tr.event("URC lost (fault drop_urc): %s" % text.split(b":")[0].decode("latin-1", "replace"))
                return
        data = b"\r\n" + text + b"\r\n"
        render = [b"\r\n"] + render + [b"\r\n"] if render is not None else None
        if self.data_mode is not None and self.URCS_LOST_IN_DATA_MODE:
            self.counters["urc_lost"] += 1
            self.tr.event("URC lost (module in data mode): %s" % text.split(b":")[0].decode("latin-1", "replace"))
            return
        if self.data_mode is not None or self.hold_urcs:
            self.held_urcs.append((data, render))
            return
        self.counters["urcs"] += 1
        self.emit(data, render)

    def _release_urcs(self):
        held, self.held_urcs = self.held_urcs, []
        for data, render in held:
            self.counters["urcs"] += 1
            self.emit(data, render)

    def _write_response(self, chunks, mods, first, last, after=()):
        """Apply response faults and queue the chunks (or schedule them, for late_reply)."""
        byte_ms = 0
        late = None
        out = list(chunks)
        for a in mods:
            name = a["action"]
            if name == "urc":
                u = [b"\r\n" + a["line"].encode("latin-1") + b"\r\n", None]
                where = a["where"]
                if where == "after_echo" and first:
                    out.insert(0, u)
                elif where == "mid_response" and last:
                    if len(out) >= 2:
                        out.insert(1 if len(out) > 2 else len(out) - 1, u)
                    else:
                        out.insert(0, u)
                elif where in ("after_response", "now") and last:
                    out.append(u)
            elif name == "garbage":
                g = [a["data"].encode("latin-1"), None]
                if a["where"] in ("before", "now") and first:
                    out.insert(0, g)
                elif a["where"] == "after" and last:
                    out.append(g)
                elif a["where"] == "instead" and last:
                    out = [g]
            elif name == "slow_output":
                byte_ms = a["byte_ms"]
            elif name == "late_reply" and last:
                late = a["ms"] / 1000.0
        if not byte_ms and self.slow_pending:
            byte_ms = self.slow_pending[0]
            if last:
                self.slow_pending.pop(0)

        def write():
            for data, render in out:
                self.emit(data, render, byte_ms)
            if last:
                for fn in after:
                    self.loop.call_soon(fn)

        if late is not None:
            self.loop.call_later(late, write)
        else:
            write()

    # ---- processor ----
    async def _processor(self):
        while True:
            line, t0, wake = await self._read_line()
            self.busy = True
            try:
                await self._handle_line(line, t0, wake)
            finally:
                self.busy = False
                self._rearm_sleep()

    async def _read_line(self):
        buf = bytearray()
        raw = bytearray()
        t0 = None
        while True:
            if not self.rx.size:
                await self.rx.wait()
                continue
            chunk, t = self.rx.take(MAX_LINE, stop=(CR,))
            if t0 is None:
                t0 = t
            raw += chunk
            if self.echo:
                self.emit(chunk, log=False)  # logged below, once per line, redacted
            for b in chunk:
                if b == CR:
                    self.tr.rx(t0, redact_line(raw))
                    if self.echo:
                        self.tr.tx(self.now(), redact_line(raw))
                    wake, self.wake_line = self.wake_line, False
                    return bytes(buf), t0, wake
                if b in (BS, DEL):
                    if buf:
                        buf.pop()
                elif b == LF and not buf:
                    continue
                elif len(buf) < MAX_LINE:
                    buf.append(b)

    async def _sleep_until(self, t):
        d = t - self.now()
        if d > 0:
            await asyncio.sleep(d)

    async def _handle_line(self, line, t0, wake):
        text = line.strip(b" \t\n")
        if wake:
            # The byte that woke the module was lost; what is left of the line is not a command.
            await self._sleep_until(self.awake_at)
            if text:
                self.emit(b"\r\n")
            return
        if not text:
            return
        if text[:2].upper() != b"AT":
            self.counters["junk_lines"] += 1
            return
        await self._sleep_until(self.awake_at)
        self.counters["at_commands"] += 1
        self.data_redact_all = False
        resp = Response(self)
        resp.mods = [a for a in self.pending_mods if a["action"] != "no_reply"]
        if any(a["action"] == "no_reply" for a in self.pending_mods):
            resp.swallowed = True  # a no_reply armed by a timer/event/control: this command is swallowed
            self.counters["swallowed"] += 1
        self.pending_mods = []
        if resp.swallowed:
            return
        try:
            cmds = parse_line(text[2:].decode("latin-1"))
        except AtError:
            cmds = None
            resp.final = b"ERROR"
        for cmd in cmds or ():
            self.cmd_counts[cmd.name] += 1
            swallow = False
            for rule in self.rules:
                if rule.kind != "command" or rule.command != cmd.name:
                    continue
                if rule.match is not None and not rule.match.search(text.decode("latin-1")):
                    continue
                if not rule.hit():
                    continue
                self.tr.event("fault %s fired on %s" % (rule.name, cmd.name))
                self.counters["faults_fired"] += 1
                for a in rule.actions:
                    if a["action"] == "no_reply":
                        swallow = True
                    elif a["action"] == "reset" and not a["delay_ms"]:
                        swallow = True  # the module dies on this command: it is never answered
                        self.run_scripted(a)
                    elif faultlib.is_response_action(a) and not a["delay_ms"]:
                        resp.mods.append(a)
                    else:
                        self.run_scripted(a)
            if swallow:
                resp.swallowed = True
                self.counters["swallowed"] += 1
                break
            handler = self._handler(cmd.name)
            if handler is None:
                resp.final = b"ERROR"
                break
            try:
                r = handler(cmd, resp)
                if asyncio.iscoroutine(r):
                    await r
            except AtError:
                resp.final = b"ERROR"
                break
            except ParamError:
                err = self.param_error()
                resp.final = self.cme_bytes(err.code) if isinstance(err, CmeError) else b"ERROR"
                break
            except CmeError as e:
                resp.final = self.cme_bytes(e.code)
                break
        if self.lat["cmd"]:
            await asyncio.sleep(self.lat["cmd"])
        self.data_mode = None
        self.gate_until = 0.0
        resp.finish()
        self.hold_urcs = False
        self._release_urcs()

    def _handler(self, name):
        if name in self.UNSUPPORTED:
            return None
        return getattr(self, "at_" + name.replace("&", "AMP_").replace("/", "_"), None)

    def param_error(self):
        return AtError()

    def cme_bytes(self, code):
        if self.cmee == 0:
            return b"ERROR"
        if self.cmee == 2 and code in self.CME_TEXT:
            return b"+CME ERROR: " + self.CME_TEXT[code].encode()
        return b"+CME ERROR: %d" % code

    # ---- payload input (after '>' or CONNECT) ----
    async def prompt(self, resp, text=b"\r\n> ", label="payload"):
        resp.flush(text)
        self.hold_urcs = True
        if self.PROMPT_GATE:
            self.gate_until = self.now() + self.lat["prompt_gate"]
            if self.rx.size:
                # bytes that came before the prompt are even earlier than the gate: lost as well
                early, t = self.rx.take(self.rx.size)
                self.data_mode = label
                self._drop(t, early, "sent before the > prompt")
                self.data_mode = None

    async def read_data(self, label, exact=None, ctrlz=False, idle=None, max_len=None, plus_abort=False,
                        ack_every=None, log="unit", hexmode=False):
        """Read payload bytes. Returns (data, how) with how in ctrlz | esc | exact | timeout | overflow | plus.

        ``log``: 'unit' (one RX record at the end, secrets found by content), 'all' (content redacted
        entirely), or a PemStream (records per read, private keys redacted across reads).
        """
        self.data_mode = label
        self.data_redact_all = log == "all"
        buf = bytearray()
        t_first = None
        last = self.now()
        acked = 0
        how = None
        guard = self.lat["plus_guard"]
        try:
            while how is None:
                if not self.rx.size:
                    now = self.now()
                    plus_wait = plus_abort and self.plus_t is not None and buf.endswith(b"+++")
                    timeout = None if idle is None else max(0.0, last + idle - now)
                    if plus_wait:
                        rest = max(0.0, self.plus_t + guard - now)
                        timeout = rest if timeout is None else min(timeout, rest)
                    got = await self.rx.wait(timeout)
                    if not got:
                        now = self.now()
                        if plus_wait and now - self.plus_t >= guard:
                            del buf[-3:]  # "+++" with its guard times: an escape, not data
                            how = "plus"
                        elif idle is not None and now - last >= idle:
                            how = "timeout"
                    continue
                if self.plus_t is not None and buf.endswith(b"+++"):
                    self.plus_t = None  # more data followed: the "+++" was payload
                want = (exact - len(buf)) if exact is not None else MAX_LINE * 4
                if ack_every:
                    want = min(want, ack_every - (len(buf) % ack_every))
                chunk, t = self.rx.take(want, stop=(CTRL_Z, ESC) if ctrlz else None)
                if t_first is None:
                    t_first = t
                last = self.now()
                if ctrlz and chunk and chunk[-1] in (CTRL_Z, ESC):
                    how = "ctrlz" if chunk[-1] == CTRL_Z else "esc"
                    body = chunk[:-1]
                else:
                    body = chunk
                buf += body
                if isinstance(log, PemStream):
                    self.tr.rx(t, log.feed(chunk))
                if exact is not None and len(buf) >= exact:
                    how = how or "exact"
                if max_len is not None and len(buf) > max_len and how is None and not ctrlz:
                    how = "overflow"
                if ctrlz and how is None and len(buf) > CTRLZ_CAP:
                    how = "overflow"  # no Ctrl-Z in sight: stop buffering (the caller reports an error)
                if ack_every and len(buf) // ack_every > acked and how is None:
                    acked = len(buf) // ack_every
                    self.emit(b"A")
        finally:
            self.data_mode = None
        if isinstance(log, PemStream):
            self.tr.rx(t_first or self.now(), log.finish())
        elif t_first is not None:
            term = b"\x1a" if how == "ctrlz" else b"\x1b" if how == "esc" else b""
            if log == "all":
                segs = [REDACTED] + ([term] if term else [])
            elif hexmode:
                segs = redact_hex(buf) + ([term] if term else [])
            else:
                segs = redact(bytes(buf)) + ([term] if term else [])
            self.tr.rx(t_first, segs)
        return bytes(buf), how

    # ---- sleep (BC660K-GL) ----
    def sleep_enabled(self):
        return False

    def _rearm_sleep(self):
        if not self.HAS_SLEEP or self.power != "on":
            return
        if self.sleep_handle:
            self.sleep_handle.cancel()
            self.sleep_handle = None
        if self.sleep_enabled() and not self.asleep:
            self.sleep_handle = self.loop.call_later(self.lat["sleep_idle"], self._try_sleep)

    def _try_sleep(self):
        self.sleep_handle = None
        if self.power != "on" or self.asleep or not self.sleep_enabled():
            return
        if self.busy or self.rx.size or self.outq or self.data_mode is not None or self.now() < self.awake_at:
            self._rearm_sleep()
            return
        self.enter_sleep()

    def enter_sleep(self):
        self.asleep = True
        self.counters["sleeps"] += 1
        self.tr.event("module asleep: the next received byte is lost")
        self.fire("sleep")

    # ---- faults ----
    def _rule_timer(self, rule):
        rule.hit()
        self.tr.event("fault %s fired (after_s)" % rule.name)
        self.counters["faults_fired"] += 1
        for a in rule.actions:
            self.run_scripted(a)

    def fire(self, event):
        self.counters["event_" + event] += 1
        for rule in self.rules:
            if rule.kind == "event" and rule.event == event and rule.hit():
                self.tr.event("fault %s fired on event %s" % (rule.name, event))
                self.counters["faults_fired"] += 1
                for a in rule.actions:
                    self.run_scripted(a)

    def run_scripted(self, a):
        """An action from the fault script: one the state does not allow (e.g. ssl_closed with no socket)
        is reported in the transcript and on stderr instead of breaking the emulator's loop."""
        try:
            self.run_action(a)
        except faultlib.FaultError as e:
            self.counters["faults_refused"] += 1
            self.tr.event("fault action %s refused: %s" % (a["action"], e))
            print("modemsim: fault action %s refused: %s" % (a["action"], e), file=sys.stderr, flush=True)

    def run_action(self, a):
        if a["delay_ms"]:
            b = dict(a)
            b["delay_ms"] = 0
            self.loop.call_later(a["delay_ms"] / 1000.0, self.run_scripted, b)
            return
        name = a["action"]
        self.tr.event("fault action: %s" % name)
        if name == "urc":
            self.urc(a["line"])
        elif name == "garbage":
            self.emit(a["data"].encode("latin-1"))
        elif name in ("no_reply", "late_reply"):
            self.pending_mods.append(a)
        elif name == "slow_output":
            self.slow_pending += [a["byte_ms"]] * int(a["count"])
        elif name == "reset":
            if a["mode"] == "clean":
                self.clean_reset()
            else:
                self.loop.call_soon(self.power_cycle, "crash")
        elif name == "drop_first_byte":
            self.armed_drop += int(a["count"])
        elif name == "drop_urc":
            self.armed_urc_drops += [a["match"].encode("latin-1")] * int(a["count"])
        elif name == "tls_fail":
            self.armed_tls += [a["kind"]] * int(a["count"])
        elif name == "broker_refuse":
            self.armed_refuse += [int(a["code"])] * int(a["count"])
        elif name == "corrupt_upload":
            self.armed_corrupt += int(a["count"])
        elif name == "sleep":
            if not self.HAS_SLEEP:
                raise faultlib.FaultError("sleep: this module has no UART sleep (BC660K-GL only)")
            if self.power == "on":
                self.enter_sleep()
        elif name == "power_on":
            if self.power == "off":
                self.power_cycle("cold")
        else:
            self.profile_action(a)

    def clean_reset(self):
        self.emit(b"\r\nPOWERED DOWN\r\n")
        self.loop.call_soon(self.power_cycle, "reset")

    def profile_action(self, a):
        raise faultlib.FaultError("action %s is not implemented for %s" % (a["action"], self.PROFILE))

    # ---- control socket ----
    def state(self):
        return {
            "profile": self.PROFILE,
            "firmware": self.firmware,
            "power": self.power,
            "asleep": self.asleep,
            "echo": self.echo,
            "cmee": self.cmee,
            "clock": self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "clock_set_by": self.clock.set_by,
            "latency": dict(self.lat),
            "counters": self.counter_dict(),
            "faults": [r.describe() for r in self.rules],
        }

    def counter_dict(self):
        d = dict(self.counters)
        d["commands"] = dict(self.cmd_counts)
        return d
