# AT command engine: one never-cancelled reader owns the modem stream; commands are serialised by a lock.
#
# The engine knows bytes, framing and matching, nothing about which modem or which cloud:
# - lines are framed on LF (CR stripped); finals OK / ERROR / +CME ERROR / +CMS ERROR / SEND OK / SEND FAIL;
# - information lines go to the pending command when they start with its prefix;
# - URCs (by registered prefix) are dispatched at any moment: before the echo, between echo and OK, between
#   the lines of a response, while a two-phase result is pending; unknown lines are counted, kept (last few)
#   and reported, never dropped silently; a final that belongs to no command (a late reply) is reported too;
# - data modes: the "> " prompt (no newline) and CONNECT, then exactly N bytes or a Ctrl-Z terminated block,
#   an optional gate delay after the prompt (BC660K-GL ~500 ms), optional 'A' acknowledgements per 1 KB;
# - length-delimited records (URCs or responses whose payload may hold CR/LF/quotes), via frame functions;
# - after a timeout the next command first re-synchronises (a command whose information line is mandatory),
#   so a late reply cannot be taken as the next command's answer;
# - a wake hook runs before a command after an idle period (modules that lose the first byte after sleep);
# - secrets given with a command never reach the transcript, the log hook or an exception message.
#
# Timeouts bound the *wait* for an answer, never the read: the reader is never cancelled, so no byte is lost.
import asyncio

from cellmqtt.compat import const, sleep_ms, ticks_add, ticks_diff, ticks_ms

_LF = const(10)
_CR = const(13)
_GT = const(62)  # '>'
_PLUS = const(43)  # '+'

# What a command is waiting for (Pending.state)
_S_ANSWER = const(0)
_S_PROMPT = const(1)
_S_ACK = const(2)
_S_DONE = const(3)

# Finals
_F_OK = const(1)
_F_ERROR = const(2)
_F_CME = const(3)
_F_CMS = const(4)
_F_SEND_OK = const(5)
_F_SEND_FAIL = const(6)

CTRL_Z = b"\x1a"
ESC = b"\x1b"
_FORBIDDEN = b'"\r\n\x1a\x1b\x00'
_KEEP_UNKNOWN = const(8)
_ECHO_MIN = const(16)  # bytes that must match before input is taken for the echo of a data block


class AtError(Exception):
    """Base of every engine error. ``cmd``: the command (secrets redacted); ``code``/``text``: the modem's reason."""

    def __init__(self, msg, cmd=None, code=None, text=None):
        super().__init__(msg)
        self.cmd = cmd
        self.code = code
        self.text = text


class AtCommandError(AtError):
    """The modem answered ERROR (or a +CME/+CMS error, see subclasses)."""


class CmeError(AtCommandError):
    """+CME ERROR: ``code`` is the number (numeric mode) or None; ``text`` the words (text mode) or None."""


class CmsError(AtCommandError):
    """+CMS ERROR."""


class SendFailed(AtCommandError):
    """SEND FAIL after a data block."""


class AtTimeout(AtError):
    """No answer within the command's time limit."""


class AtClosed(AtError):
    """The stream closed (or the engine was closed); no further command can run."""


def quote(value, what="argument"):
    """Return ``value`` as a quoted AT string argument (bytes), refusing characters that would break the
    command or switch the modem's mode: '"', CR, LF, Ctrl-Z, Esc, NUL. The error names ``what``, never the
    value (it may be a secret)."""
    if isinstance(value, str):
        value = value.encode()
    for c in _FORBIDDEN:
        if value.find(bytes((c,))) >= 0:
            raise ValueError("%s contains a character not allowed in an AT string (%r)" % (what, chr(c)))
    return b'"' + value + b'"'


def fields(line, start=0):
    """Split an AT parameter list (bytes) on commas outside double quotes; quotes are removed.

    ``fields(b'+QMTRECV: 0,1,"a/b","x,y"', 10)`` -> [b'0', b'1', b'a/b', b'x,y']. Use it on lines whose
    payload cannot contain quotes; length-delimited payloads are cut out by the caller."""
    out = []
    i = start
    n = len(line)
    while i < n and line[i] == 32:
        i += 1
    while i <= n:
        if i < n and line[i] == 34:  # '"'
            j = line.find(b'"', i + 1)
            if j < 0:
                j = n
            out.append(line[i + 1:j])
            i = line.find(b",", j)
            if i < 0:
                break
            i += 1
        else:
            j = line.find(b",", i)
            if j < 0:
                out.append(line[i:].strip())
                break
            out.append(line[i:j].strip())
            i = j + 1
    return out


def args(line):
    """The parameters of an information line or URC: ``args(b'+QMTOPEN: 0,-1') == [b'0', b'-1']``."""
    return fields(line, line.find(b":") + 1)


def to_int(b, default=-1):
    """``int(b)``, or ``default`` when b is not a number (a field the module left empty or garbled)."""
    try:
        return int(b)
    except ValueError:
        return default


def first(lines):
    """The parameters of a command's first information line, or () when it printed none."""
    return args(lines[0]) if lines else ()


def redact(data, secrets):
    """``data`` with every occurrence of each secret replaced by ``***`` (bytes in, bytes out)."""
    for s in secrets:
        if s:
            data = data.replace(s, b"***")
    return data


def _text(b):
    try:
        return b.decode()
    except UnicodeError:
        return repr(b)


def _find_copy(buf, mv, sub, start, end):
    # For MCU builds whose bytearray has no find(): search a copy of the window (allocates per read).
    i = bytes(mv[start:end]).find(sub)
    return i + start if i >= 0 else -1


def _find_fast(buf, mv, sub, start, end):
    return buf.find(sub, start, end)


_find = _find_fast if hasattr(bytearray, "find") else _find_copy


def _at(buf, r, w, prefix):
    # buf[r:] starts with prefix? (-1: not enough bytes to tell). No allocation.
    n = min(len(prefix), w - r)
    for i in range(n):
        if buf[r + i] != prefix[i]:
            return 0
    return 1 if n == len(prefix) else -1


_FR_LINE = const(1)
_FR_QUOTED = const(2)


def frame_line_then_bytes(count_field):
    """Frame spec for '<header>\r\n<N raw bytes>' records (BG96 push-mode ``+QSSLURC: "recv",<id>,<len>``,
    ``+QSSLRECV: <len>``): the byte count is field ``count_field`` of the header line."""
    return (_FR_LINE, count_field, 1, False)


def frame_quoted_len(len_field, scale=1, partial=False):
    """Frame spec for '<prefix> a,b,...,<len>,"<len raw bytes>"' records on one line (``+QMTRECV`` with
    length, BC660K-GL ``+QSSLURC: "recv",0,0,<len>,"<data>"``). Field ``len_field`` (0-based, after the prefix)
    is the length; if that field is not a number followed by ',"', the record is an ordinary line.
    ``scale``: characters per counted byte (2 for hex data formats). ``partial``: a URC record larger than the
    receive buffer is handed over cut to the buffer's size (the handler sees fewer bytes than the length says:
    a message it can still refuse by name) instead of being discarded unseen."""
    return (_FR_QUOTED, len_field, scale, partial)


_MAX_HEADER = const(320)  # the longest header a framed record may have before its payload
_CUT_TAIL = const(64)  # bytes kept from the end of a record too large for the buffer


class StreamPipe:
    """The engine's byte pipe over a MicroPython stream (machine.UART with timeout=0). A tty needs more care
    (boards/unix/board.py TtyPipe)."""

    def __init__(self, stream):
        self._u = stream
        self._s = asyncio.StreamReader(stream)

    async def readinto(self, buf):
        return await self._s.readinto(buf)

    def send(self, data):
        # short commands: UART.write queues into the TX ring at once (no coroutine on the hot path)
        self._u.write(data)

    async def write(self, data):
        self._s.write(data)
        await self._s.drain()

    def close(self):
        self._s.close()


# A Cmd spec is a tuple (small in RAM: every driver declares a few dozen): these are its fields.
_C_PREFIX = const(0)
_C_TIMEOUT = const(1)
_C_FLAGS = const(2)
_C_GATE = const(3)
_C_ACK = const(4)
_C_DATA_MS = const(5)
_C_FRAME = const(6)
_C_RETRY = const(7)
_C_RESULT_MS = const(8)
_NEED_INFO = const(1)
_CTRLZ = const(2)
_CONNECT = const(4)
_SECRET_DATA = const(8)


def Cmd(prefix=None, timeout_ms=300, need_info=False, ctrlz=False, connect=False, gate_ms=0, ack=0,  # noqa: N802
        data_ms=None, frame=None, secret_data=False, retry=0, result_ms=15000):
    """How one kind of AT command runs: declared once (at import, or per client when a prefix names the
    client) and passed with every call, ``await at.cmd(b"AT+CSQ", CSQ)``. A call site then names only the
    line, the spec and the data.

    prefix      information lines start with this (b"+CSQ:"); b"" takes every line no URC claims; None: none
    timeout_ms  the wait for the final answer (for a data command: for the prompt)
    need_info   an OK before the first information line is a late reply, not this command's answer
    ctrlz       the data block is followed by Ctrl-Z (it must then hold neither Ctrl-Z nor Esc)
    connect     the data mode opens with CONNECT instead of the "> " prompt
    gate_ms     wait this long after the prompt before sending data (BC660K-GL needs ~500 ms)
    ack         send data in blocks of this size, waiting for the module's 'A' after each (QFUPL ack mode)
    data_ms     the wait for the final answer after the data block (default: timeout_ms)
    frame       frame spec for information lines that carry raw bytes (see frame_line_then_bytes)
    secret_data the data block's content never reaches the transcript (a private key)
    retry       resend this many times when the module stayed completely silent (a lost first byte)
    result_ms   cmd_result(): the wait for the result line
    """
    return (prefix, timeout_ms, (_NEED_INFO if need_info else 0) | (_CTRLZ if ctrlz else 0) |
            (_CONNECT if connect else 0) | (_SECRET_DATA if secret_data else 0), gate_ms, ack,
            data_ms or timeout_ms, frame, retry, result_ms)


PLAIN = Cmd()  # a command answered by OK within 300 ms, no information line expected
PROBE = Cmd(None, 700)  # "AT" while waiting for a module to answer at all


class _Pending:
    # The command in progress. One record per engine, reused: commands are serialised. The fields the reader
    # looks at for every line are copied from the spec; the rest are read from it where the command runs.
    def __init__(self):
        self.ev = asyncio.Event()
        self.deadline = None
        self.expired = False
        self.reset(None, PLAIN, None, ())

    def reset(self, cmd, spec, block, secrets):
        self.cmd = cmd
        self.spec = spec
        self.block = block
        self.prefix = spec[_C_PREFIX]
        self.need_info = spec[_C_FLAGS] & _NEED_INFO
        self.frame = spec[_C_FRAME]
        self.connect = spec[_C_FLAGS] & _CONNECT
        self.secrets = secrets
        self.lines = None  # created at the first information line
        self.echo = True  # the echo of this command may still come (URCs can precede it)
        self.state = _S_ANSWER
        self.final = 0
        self.final_line = None
        self.data = None
        self.rx_any = False
        self.ev.clear()


def _keep(p, line):
    # information lines: the first is kept bare (most commands have exactly one), a list from the second on
    if p.lines is None:
        p.lines = line
    elif type(p.lines) is bytes:
        p.lines = [p.lines, line]
    else:
        p.lines.append(line)


class _Waiter:
    def __init__(self, prefix):
        self.prefix = prefix
        self.line = None
        self.error = None
        self.deadline = None
        self.expired = False
        self.ev = asyncio.Event()


class AtEngine:
    """The AT engine. ``pipe``: an object with ``async readinto(mv) -> n`` (0 = closed) and ``async write(b)``.

    ``rxbuf``: receive buffer size; the longest line or framed record that can be handled whole.
    ``transcript``: a Transcript or None. ``log``: callable(str) for engine events (unknown lines, late
    replies, handler errors) or None. ``resync``: (command, info prefix) sent after a timeout.
    """

    def __init__(self, pipe, rxbuf=2048, transcript=None, log=None, resync=(b"AT+CMEE?", b"+CMEE:")):
        self._pipe = pipe
        self._buf = bytearray(rxbuf)
        self._mv = memoryview(self._buf)
        self._r = 0
        self._w = 0
        self._skip = 0  # bytes of an oversized record still to discard
        self._cut = None  # a partial-frame URC record's head, handed over once its tail has gone by
        self.cut_tail = b""  # while its handler runs: the last bytes of that record (an id the sender put last)
        self._skip_line = False  # discarding an overlong line up to its LF
        self._urcs = []  # [(prefix, handler, frame)]
        self._frames = []  # [(prefix, frame)] subset with a frame function, checked at record start
        self._waiters = []
        self._spare = []
        self._proc = self._processor()
        next(self._proc)
        self._pending = None
        self._p = _Pending()
        self._busy = False  # a command holds the engine (a flag and an Event: no allocation when free)
        self._free = asyncio.Event()
        self._timed = []  # objects with a deadline the clock task watches (the pending command, waiters)
        self._tick = asyncio.Event()
        self._clock_task = None
        self._sleep_until = None
        self._rearm = False
        self._task = None
        self.closed = None  # the AtClosed error once the stream has closed
        self.transcript = transcript
        self.log = log
        self._resync_cmd = resync[0]
        self._resync = Cmd(resync[1], 1000, need_info=True)
        self._desync = False
        self.echo = None  # True once an echo was seen; drivers set False after ATE0
        self.wake = None  # async fn(engine) run before a command after wake_idle_ms of silence
        self.wake_idle_ms = 0
        self._last_io = ticks_ms()
        self.unknown = []  # last few unknown lines (bytes)
        self.unknown_count = 0
        self.late_count = 0
        self.echoed = 0  # data blocks (or lines of them) the module echoed back: dropped
        self._prompt_space = False
        self._echo = None  # the data block just sent: the module may echo it back, byte for byte
        self._echo_i = 0
        self.lines_count = 0
        self.errors = 0  # URC handler exceptions
        self.on_unknown = None  # callable(line) for lines nobody claimed

    # ---- registration ------------------------------------------------------------------------------------

    def urc(self, prefix, handler, frame=None):
        """Call ``handler(record: bytes)`` for every unsolicited line starting with ``prefix``. With ``frame``
        (see frame_quoted_len / frame_line_then_bytes) the record is cut by length and may hold CR/LF."""
        self._urcs.append((prefix, handler, frame))
        if frame is not None:
            self._frames.append((prefix, frame))

    def start(self):
        """Start the reader and clock tasks (needs a running event loop; cmd() calls it when needed)."""
        if self._task is None and self.closed is None:
            self._task = asyncio.create_task(self._reader())
            self._clock_task = asyncio.create_task(self._clock())

    def close(self):
        """Shut the engine down: the only time the reader is cancelled. Pending and later commands get AtClosed;
        the pipe is closed when it can be."""
        if self.closed is None:
            self._close("engine closed")
        if self._task is not None:
            self._task.cancel()
            self._clock_task.cancel()
            self._task = None
        if hasattr(self._pipe, "close"):
            try:
                self._pipe.close()
            except OSError as e:
                self._report("closing the pipe: %r" % e)

    # ---- the reader --------------------------------------------------------------------------------------

    async def _reader(self):
        mv = self._mv
        size = len(self._buf)
        while True:
            if self._w == size:
                if self._r:
                    self._compact()
                else:
                    self._overflow()
            try:
                n = await self._pipe.readinto(mv[self._w:])
            except OSError as e:
                self._close("stream error: %r" % e)
                return
            if not n:
                hup = getattr(self._pipe, "hangup", None)
                if hup is not None and not hup():
                    continue  # an empty read after a spurious wake-up, not the end of the stream
                self._close("stream closed")
                return
            self._w += n
            self._last_io = ticks_ms()
            if self._pending is not None:
                self._pending.rx_any = True
            try:
                self._proc.send(None)
            except Exception as e:  # a bug in framing must not kill the reader: report, drop the buffer
                self._report("reader error %r; %d buffered bytes dropped" % (e, self._w - self._r))
                self._r = self._w = 0
                self._proc = self._processor()
                next(self._proc)

    def _overflow(self):
        # The buffer is full of one unfinished line: report it and discard up to its end.
        self._report("line longer than %d bytes discarded" % len(self._buf))
        if self.transcript:
            self.transcript.rx(bytes(self._mv[self._r:self._r + 64]) + b"...")
        self.unknown_count += 1
        self._r = self._w = 0
        self._skip_line = True

    def _processor(self):
        # Frames and dispatches everything buffered between _r and _w, then yields until the next read.
        # One long-lived generator, resumed with send(): MicroPython heap-allocates the frame of any larger
        # function *per call*, so the per-line work is inline here and calls only small helpers.
        buf = self._buf
        mv = self._mv
        while True:
            yield
            while True:
                r = self._r
                w = self._w
                if r >= w:
                    self._r = self._w = 0
                    break
                if self._skip:
                    k = min(self._skip, w - r)
                    if self._cut is not None:  # keep the record's last bytes (rare path: allocation is fine)
                        self.cut_tail = (self.cut_tail + bytes(mv[r:r + k]))[-_CUT_TAIL:]
                    self._skip -= k
                    self._r = r + k
                    if not self._skip and self._cut is not None:
                        self._hand_cut()
                    continue
                if self._skip_line:
                    nl = _find(buf, mv, b"\n", r, w)
                    if nl < 0:
                        self._r = self._w = 0
                        break
                    self._skip_line = False
                    self._r = nl + 1
                    continue
                p = self._pending
                e = self._echo
                if e is not None and p is not None and p.state == _S_ANSWER and (
                        self._echo_i or (buf[r] != _CR and buf[r] != _LF) or buf[r] == e[0]):
                    # The module may echo the data block it was given (whatever ATE says): consume exactly those
                    # bytes, in order, before any framing -- a payload holding "\r\nOK\r\n" is not an answer.
                    i = self._echo_i
                    k = 0
                    while r + k < w and i + k < len(e) and buf[r + k] == e[i + k]:
                        k += 1
                    if i == 0 and k < len(e) and k < _ECHO_MIN:
                        if r + k < w:  # differs early: no echo this time
                            self._echo = None
                        else:
                            break  # too few bytes to tell yet
                    elif k:
                        self._r = r + k
                        self._echo_i = i + k
                        self.echoed += 1 if i == 0 else 0
                        if self._echo_i == len(e):
                            self._echo = None
                            if self.transcript:
                                self.transcript.rx(b"<echo: %d bytes>" % len(e) if p.spec[_C_FLAGS] & _SECRET_DATA
                                                   else redact(bytes(e), p.secrets))
                        continue
                    else:
                        self._echo = None
                c = buf[r]
                if c == _CR or c == _LF or c == 0 or c == 0xFF:  # framing, and NUL/0xFF glitches from (re)boot
                    self._r = r + 1
                    continue
                if self._prompt_space:  # the space of a "> " prompt that arrived in a later read
                    self._prompt_space = False
                    if c == 32:
                        self._r = r + 1
                        continue
                if p is not None:
                    if p.state == _S_PROMPT and c == _GT and not p.connect:
                        self._r = r + 2 if r + 1 < w and buf[r + 1] == 32 else r + 1
                        self._prompt_space = r + 1 >= w  # a UART may split "> ": the space is the prompt's
                        if self.transcript:
                            self.transcript.rx(b"> ")
                        p.state = _S_ANSWER
                        p.ev.set()
                        continue
                    if p.state == _S_ACK and c == 65:  # 'A': 1 KB received (QFUPL ack mode)
                        self._r = r + 1
                        p.state = _S_ANSWER
                        p.ev.set()
                        continue
                line = None
                if c == _PLUS and (self._frames or (p is not None and p.frame is not None)):
                    # a record a frame function may cut by length (its payload may hold CR/LF)
                    total = 0
                    frame = None
                    urc = False
                    if p is not None and p.frame is not None:
                        m = _at(buf, r, w, p.prefix)
                        if m < 0:
                            break
                        if m:
                            frame = p.frame
                            plen = len(p.prefix)
                    if frame is None:
                        for prefix, f in self._frames:
                            m = _at(buf, r, w, prefix)
                            if m < 0:
                                break
                            if m:
                                frame = f
                                plen = len(prefix)
                                urc = True
                                break
                        if m < 0:
                            break  # need more bytes to tell
                    if frame is not None:
                        # header: skip `field` comma-separated fields (quoted ones whole), read the number
                        kind, field, scale, partial = frame
                        limit = min(w, r + _MAX_HEADER)
                        nl = _find(buf, mv, b"\n", r, limit)
                        i = r + plen
                        while field and i < limit:
                            while i < limit and buf[i] == 32:
                                i += 1
                            if i < limit and buf[i] == 34:
                                i = _find(buf, mv, b'"', i + 1, limit)
                                if i < 0:
                                    break
                            i = _find(buf, mv, b",", i, limit)
                            if i < 0 or 0 <= nl < i:
                                break
                            i += 1
                            field -= 1
                        if field:
                            total = 0 if nl >= 0 or limit - r >= _MAX_HEADER else -1  # no such field: a line
                        else:
                            while i < limit and buf[i] == 32:
                                i += 1
                            j = i
                            n = 0
                            while j < w and 48 <= buf[j] <= 57:
                                n = n * 10 + buf[j] - 48
                                j += 1
                            if kind == _FR_QUOTED:
                                if j + 1 >= w:
                                    total = -1
                                elif j == i or buf[j] != 44 or buf[j + 1] != 34:
                                    total = 0
                                else:  # + the closing quote; the CRLF after it is skipped as framing
                                    total = j + 2 - r + n * scale + 1
                            elif nl < 0:
                                total = -1 if limit - r < _MAX_HEADER else 0
                            elif j == i or _find(buf, mv, b",", j, nl) >= 0:
                                total = 0
                            else:
                                total = nl + 1 - r + n
                        if total < 0:
                            break
                        if total > len(buf) and not (partial and urc):
                            self._report("record of %d bytes is larger than the %d-byte buffer; discarded" % (total, len(buf)))
                            self.unknown_count += 1
                            self._skip = total
                            continue
                        if total > len(buf):  # partial: handed over once the buffer is full, the rest skipped
                            if w < len(buf):
                                break  # (the reader moves the record to the front when the buffer fills)
                            self._report("record of %d bytes is larger than the %d-byte buffer; cut" % (total, len(buf)))
                            self._cut = bytes(mv[r:w])  # handed over with its tail, once the rest has gone by
                            self.cut_tail = b""
                            self._skip = total - (w - r)
                            self._r = w
                            self.lines_count += 1
                            continue
                        elif total and w - r < total:
                            break
                        elif total:
                            self._r = r + total
                            line = bytes(mv[r:r + total])
                            self.lines_count += 1
                if line is None:
                    nl = _find(buf, mv, b"\n", r, w)
                    if nl < 0:
                        break
                    e = nl
                    while e > r and buf[e - 1] == _CR:
                        e -= 1
                    self._r = nl + 1
                    self.lines_count += 1
                    n = e - r
                    # bare finals are recognised in place, without allocating
                    final = 0
                    if c == 79 and n == 2 and buf[r + 1] == 75:  # OK
                        final = _F_OK
                    elif c == 69 and n == 5 and buf[r + 1] == 82 and buf[r + 4] == 82:  # ERROR
                        final = _F_ERROR
                    elif c == 83 and (n == 7 or n == 9) and buf[r + 1] == 69 and buf[r + 4] == 32:  # SEND OK/FAIL
                        final = _F_SEND_OK if n == 7 else _F_SEND_FAIL
                    if final:
                        if self.transcript:
                            self.transcript.rx(bytes(mv[r:e]))
                        self._final(p, final, None)
                        continue
                    if p is not None and p.echo:
                        k = len(p.cmd)
                        if n == k - 1 and mv[r:e] == p.cmd[1:]:  # a sleeping module lost the first byte
                            p.echo = False
                            if self.transcript:
                                self.transcript.rx(redact(p.cmd[1:], p.secrets))
                            continue
                        if (n == k or (n > k and buf[r + k] == _CR)) and mv[r:r + k] == p.cmd:
                            p.echo = n > k  # glued echoes (a repeated probe): the rest may be this echo again
                            self.echo = True
                            if self.transcript:
                                self.transcript.rx(redact(p.cmd, p.secrets))
                            if n > k:
                                self._r = r + k  # the rest up to the LF is framed again as a line
                            continue
                    line = bytes(mv[r:e])
                # ---- a line or framed record that is not a bare final ----
                if p is not None and p.data is not None and line in p.data:
                    # the module echoing the data block (the BC660K-GL shows a pushed certificate whatever ATE
                    # says): dropped and counted; a secret block's echo never reaches the transcript
                    self.echoed += 1
                    if self.transcript:
                        self.transcript.rx(b"<echo: %d bytes>" % len(line) if p.spec[_C_FLAGS] & _SECRET_DATA
                                           else redact(line, p.secrets))
                    continue
                if self.transcript:
                    self.transcript.rx(redact(line, p.secrets) if p is not None else line)
                if c == _PLUS and (line.startswith(b"+CME ERROR:") or line.startswith(b"+CMS ERROR:")):
                    self._final(p, _F_CME if line[3] == 69 else _F_CMS, line)
                    continue
                if p is not None:
                    if p.state == _S_PROMPT and p.connect and line.startswith(b"CONNECT"):
                        p.state = _S_ANSWER
                        p.ev.set()
                        continue
                    if p.prefix and line.startswith(p.prefix):
                        _keep(p, line)
                        continue
                claimed = False
                for wt in self._waiters:
                    if wt.line is None and line.startswith(wt.prefix):
                        wt.line = line
                        wt.ev.set()
                        claimed = True
                        break
                if not claimed:
                    for prefix, handler, _ in self._urcs:
                        if line.startswith(prefix):
                            claimed = True
                            try:
                                handler(line)
                            except Exception as ex:  # a handler bug must not stop the reader
                                self.errors += 1
                                self._report("URC handler for %s failed: %r" % (_text(prefix), ex))
                            break
                if not claimed:
                    if p is not None and p.prefix == b"":
                        _keep(p, line)
                    else:
                        self._unknown(line)
            # keep the unfinished tail; move it to the front when that is a cheap non-overlapping copy
            if self._r and self._w - self._r <= self._r:
                self._compact()

    def _hand_cut(self):
        # the head of a partial-frame URC record, to its handler; cut_tail holds the record's last bytes meanwhile
        line, self._cut = self._cut, None
        if self.transcript:
            self.transcript.rx(line[:64] + b"... <cut>")
        for prefix, handler, _ in self._urcs:
            if line.startswith(prefix):
                try:
                    handler(line)
                except Exception as ex:  # a handler bug must not stop the reader
                    self.errors += 1
                    self._report("URC handler for %s failed: %r" % (_text(prefix), ex))
                break
        self.cut_tail = b""

    def _compact(self):
        r = self._r
        n = self._w - r
        if n <= r:
            self._mv[0:n] = self._mv[r:r + n]
        else:
            self._buf[0:n] = bytes(self._mv[r:r + n])  # overlapping move: through a temporary (rare)
        self._r = 0
        self._w = n

    def _final(self, p, kind, line):
        if p is None or p.state == _S_DONE:
            self.late_count += 1
            self._report("late reply with no command waiting: %s" % (_text(line) if line else ("OK", "ERROR", "", "", "SEND OK", "SEND FAIL")[kind - 1]))
            return
        if kind == _F_OK and (p.state != _S_ANSWER or (p.need_info and p.lines is None)):
            # A data command answers its prompt (or an error) first, and a command with a mandatory
            # information line prints it before OK: this OK belongs to an earlier command.
            self.late_count += 1
            self._report("OK before %s: taken as a late reply" % ("the prompt" if p.state != _S_ANSWER else _text(p.prefix)))
            return
        p.final = kind
        p.final_line = line
        p.state = _S_DONE
        p.ev.set()

    def _unknown(self, line):
        self.unknown_count += 1
        self.unknown.append(line)
        if len(self.unknown) > _KEEP_UNKNOWN:
            self.unknown.pop(0)
        if self.on_unknown is not None:
            try:
                self.on_unknown(line)
            except Exception as e:
                self.errors += 1
                self._report("on_unknown failed: %r" % e)
        else:
            self._report("unknown line: %s" % _text(line[:80]))

    def unclaimed(self, line):
        """Count, keep and report a line no handler could use (a URC handler's malformed record)."""
        self._unknown(line)

    def report(self, msg):
        """An engine or driver event for the transcript and the log hook."""
        self._report(msg)

    def _report(self, msg):
        if self.transcript:
            self.transcript.note(msg)
        if self.log is not None:
            self.log(msg)

    def _close(self, why):
        self.closed = AtClosed("AT stream closed: " + why)
        self._report(why)
        p = self._pending
        if p is not None:
            p.state = _S_DONE
            p.ev.set()
        for w in self._waiters:
            w.error = self.closed
            w.ev.set()
        self._free.set()

    # ---- deadlines: one long-lived clock task instead of asyncio.wait_for (which allocates ~1.3 KB a call) ----

    async def _clock(self):
        while True:
            now = ticks_ms()
            nearest = None
            for t in self._timed:
                if t.deadline is None:
                    continue
                d = ticks_diff(t.deadline, now)
                if d <= 0:
                    t.deadline = None
                    t.expired = True
                    t.ev.set()
                elif nearest is None or d < nearest:
                    nearest = d
            try:
                if nearest is None:
                    self._sleep_until = None
                    self._tick.clear()
                    await self._tick.wait()
                else:
                    self._sleep_until = ticks_add(now, nearest)
                    await sleep_ms(nearest)
            except asyncio.CancelledError:
                if not self._rearm:
                    raise  # shutdown: close(), or the event loop ending
                self._rearm = False  # an earlier deadline was armed: look again

    def _arm(self, t, ms):
        t.expired = False
        t.deadline = ticks_add(ticks_ms(), ms)
        if t not in self._timed:
            self._timed.append(t)
        if self._sleep_until is None:
            self._tick.set()
        elif ticks_diff(t.deadline, self._sleep_until) < 0 and self._clock_task is not None and not self._rearm:
            self._rearm = True
            self._clock_task.cancel()  # wake the clock: this deadline comes before the one it sleeps for

    async def _wait(self, p, timeout_ms):
        # True when p.ev was set in time, False when its deadline passed first
        if not p.ev.is_set():
            self._arm(p, timeout_ms)
            await p.ev.wait()
            p.deadline = None
        p.ev.clear()
        return not p.expired

    # ---- commands ----------------------------------------------------------------------------------------

    async def cmd(self, command, spec=PLAIN, data=None, secrets=()):
        """Send ``command`` (bytes, no CR) as ``spec`` says (a Cmd) and return its information lines (a list).

        data        a data-mode block sent after the "> " prompt (or CONNECT with ``spec.connect``): exactly
                    these bytes, followed by Ctrl-Z when ``spec.ctrlz``.
        secrets     byte strings to redact from the transcript, the log and errors.
        Raises AtCommandError/CmeError/CmsError/SendFailed with the modem's reason, AtTimeout, AtClosed.
        """
        if spec[_C_FLAGS] & _CTRLZ and data is not None and (data.find(CTRL_Z) >= 0 or data.find(ESC) >= 0):
            raise ValueError("data holds Ctrl-Z or Esc: it cannot be sent in the Ctrl-Z form")
        if self.closed:
            raise self.closed
        self.start()
        while self._busy:  # serialise: wait until the command in progress is done
            self._free.clear()
            await self._free.wait()
            if self.closed:
                raise self.closed
        self._busy = True
        try:
            if self.wake is not None and self.wake_idle_ms and ticks_diff(ticks_ms(), self._last_io) >= self.wake_idle_ms:
                await self.wake(self)
            if self._desync:
                await self._resync_locked()
            p = self._p
            retry = spec[_C_RETRY]
            while True:
                p.reset(command, spec, data, secrets)
                await self._run(p)
                if p.final or p.rx_any or retry <= 0 or self.closed:
                    break
                retry -= 1
                self._report("no answer at all to %s: retrying" % _text(redact(command, secrets)))
                if self.wake is not None:
                    await self.wake(self)
            return self._result(p, command, secrets, spec[_C_TIMEOUT])
        finally:
            self._busy = False
            self._free.set()

    async def raw_cmd(self, command, spec=PROBE):
        """cmd() for a wake hook or a probe: no wake, no resync, and a timeout does not mark the link out of
        step. Call only while holding the engine (from ``wake``) or when no other task can send."""
        if self.closed:
            raise self.closed
        self.start()
        p = self._p
        p.reset(command, spec, None, ())
        await self._run(p)
        return self._result(p, command, (), spec[_C_TIMEOUT], mark=False)

    async def _resync_locked(self):
        cmd = self._resync_cmd
        p = self._p
        for _ in range(3):
            p.reset(cmd, self._resync, None, ())
            await self._run(p)
            if p.final == _F_OK:
                self._desync = False
                return
            if self.closed:
                raise self.closed
        raise AtTimeout("modem out of step: no answer to %s" % _text(cmd), _text(cmd))

    async def _run(self, p):
        # p: the pending record, reset and set up by the caller (one argument: a small coroutine frame)
        command = p.cmd
        secrets = p.secrets
        spec = p.spec
        timeout_ms = spec[_C_TIMEOUT]
        data = p.block
        ctrlz = spec[_C_FLAGS] & _CTRLZ
        if data is not None:
            p.state = _S_PROMPT
        self._pending = p
        try:
            if self.transcript:
                self.transcript.tx(redact(command + b"\r", secrets))
            self._last_io = ticks_ms()
            send = getattr(self._pipe, "send", None)
            if send is not None and len(command) < 256:
                send(command)  # short commands: written at once, no coroutine per write
                send(b"\r")
            else:
                await self._pipe.write(command + b"\r")
            if data is not None:
                if not p.ev.is_set():  # wait for the prompt (inline: no coroutine per wait)
                    self._arm(p, timeout_ms)
                    await p.ev.wait()
                    p.deadline = None
                p.ev.clear()
                if p.expired or p.final:
                    return  # timed out, or an error instead of the prompt
                if spec[_C_GATE]:
                    await sleep_ms(spec[_C_GATE])
                p.data = data
                self._echo = data or None
                self._echo_i = 0
                await self._send_data(p, data, ctrlz, spec[_C_ACK], spec[_C_FLAGS] & _SECRET_DATA, spec[_C_DATA_MS])
                if p.final:
                    return
                if not p.ev.is_set():
                    self._arm(p, spec[_C_DATA_MS])
                    await p.ev.wait()
                    p.deadline = None
                p.ev.clear()
                if p.expired and ctrlz:
                    # The module is still in data mode (it lost the block or its Ctrl-Z): Esc cancels, so the
                    # next command is not swallowed as data.
                    self._report("no answer after the data block: sending Esc")
                    if self.transcript:
                        self.transcript.tx(ESC)
                    self._last_io = ticks_ms()
                    await self._pipe.write(ESC)
            elif not p.ev.is_set():
                self._arm(p, timeout_ms)
                await p.ev.wait()
                p.deadline = None
        finally:
            self._pending = None
            self._echo = None
            p.state = _S_DONE
            p.deadline = None

    async def _send_data(self, p, data, ctrlz, ack, secret, timeout_ms):
        if self.transcript:
            self.transcript.tx(b"<%d bytes, secret>" % len(data) if secret else redact(data, p.secrets))
        self._last_io = ticks_ms()
        send = getattr(self._pipe, "send", None)
        if ack:
            mv = memoryview(data)
            for i in range(0, len(data), ack):
                if i:
                    p.state = _S_ACK
                    if not await self._wait(p, timeout_ms) or p.final:
                        return
                await self._pipe.write(mv[i:i + ack])
        elif send is not None and len(data) <= 2048:
            send(data)  # a telemetry-sized block: one write, no coroutine
        else:
            await self._pipe.write(data)
        if ctrlz:
            if send is not None:
                send(CTRL_Z)
            else:
                await self._pipe.write(CTRL_Z)

    def _result(self, p, command, secrets, timeout_ms, mark=True):
        if p.final == _F_OK or p.final == _F_SEND_OK:
            lines = p.lines
            return [] if lines is None else ([lines] if type(lines) is bytes else lines)
        shown = _text(redact(command, secrets))
        if self.closed and not p.final:
            raise AtClosed("%s: %s" % (shown, self.closed), shown)
        if not p.final:
            if mark:
                self._desync = True
            raise AtTimeout("%s: no answer in %d ms" % (shown, timeout_ms), shown)
        line = p.final_line
        if p.final == _F_ERROR:
            raise AtCommandError("%s: ERROR" % shown, shown)
        if p.final == _F_SEND_FAIL:
            raise SendFailed("%s: SEND FAIL" % shown, shown)
        arg = redact(line[11:].strip(), secrets)
        code = text = None
        try:
            code = int(arg)
        except ValueError:
            text = _text(arg)
        cls = CmeError if p.final == _F_CME else CmsError
        raise cls("%s: %s" % (shown, _text(redact(line, secrets))), shown, code, text)

    # ---- two-phase commands and URC waits ----------------------------------------------------------------

    def expect(self, prefix):
        """Register a one-shot wait for the next unsolicited line starting with ``prefix`` (before sending the
        command that causes it, so it cannot be missed). Await it with ``wait(w, timeout_ms)``."""
        if self._spare:  # waiters are reused: a two-phase command every telemetry cycle allocates none
            w = self._spare.pop()
            w.prefix = prefix
            w.line = w.error = None
            w.expired = False
            w.ev.clear()
        else:
            w = _Waiter(prefix)
        self._waiters.append(w)
        return w

    async def wait(self, w, timeout_ms):
        try:
            if w.line is None and w.error is None:
                self._arm(w, timeout_ms)
                await w.ev.wait()
                if w.line is None and w.error is None:
                    raise AtTimeout("no %s within %d ms" % (_text(w.prefix), timeout_ms))
            if w.error is not None:
                raise w.error
            return w.line
        finally:
            self.cancel(w)

    def cancel(self, w):
        if w in self._waiters:
            self._waiters.remove(w)
            if len(self._spare) < 8:
                self._spare.append(w)
        w.deadline = None

    async def cmd_result(self, command, spec, result_prefix, data=None, secrets=()):
        """A two-phase command: OK now, the result later as a line starting with ``result_prefix`` (e.g.
        ``+QMTOPEN: 0,``) within ``spec.result_ms``. Returns (information lines, result line). The command
        lock is released while the result is awaited, so other commands can run meanwhile."""
        w = self.expect(result_prefix)
        try:
            lines = await self.cmd(command, spec, data, secrets)
        except BaseException:
            self.cancel(w)
            raise
        return lines, await self.wait(w, spec[_C_RESULT_MS])

    async def wait_urc(self, prefix, timeout_ms):
        """Wait for the next unsolicited line starting with ``prefix`` (e.g. b"RDY")."""
        return await self.wait(self.expect(prefix), timeout_ms)
