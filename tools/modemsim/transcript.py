"""The transcript: every byte both ways on the emulated UART, timestamped, with secrets redacted.

One record per line of the file::

    <ms since start> <dir> "<bytes, escaped>"[ <note>]

``dir`` is ``RX`` (host -> module), ``TX`` (module -> host), ``RX!`` (bytes the module dropped: asleep,
booting, prompt gate, a fault; the note says why) or ``EV`` (an emulator event, plain text, no quotes).
Printable ASCII is written as is except ``\\`` and ``"``; CR, LF, TAB as ``\\r \\n \\t``; everything else as
``\\xNN``. A redacted secret is replaced by ``[REDACTED]`` (data that itself contains that text would look
the same; the emulator writes the marker only in place of a secret).

Redaction is semantic, not a regex over the raw stream: the engine knows what every byte is (a command
line, file data, an MQTT payload, raw socket data) and hands the transcript *segments*: ``bytes`` to write
escaped, or the ``REDACTED`` sentinel. RX records are written when the module reads the bytes (so the
engine knows their meaning) and carry the time they arrived; an RX record stamped earlier than the TX
record above it means the module was busy when the bytes came in. What is redacted:

* the user name and password fields of ``AT+QMTCONN`` (and of ``AT+QICSGP``), in the command and its echo;
* the body of every PEM private key (between ``-----BEGIN ... PRIVATE KEY-----`` and ``-----END``) in UFS
  uploads/downloads and BC660K-GL certificate pushes, also when a key arrives split over many reads;
* JSON string values of ``"deviceSecret"`` and ``"productSecret"`` in MQTT payloads and raw socket data,
  both directions, in text or hex data format;
* the user name and password fields of MQTT CONNECT packets sent through raw TLS sockets (``QSSLSEND``).
"""

import re
import time

REDACTED = object()  # sentinel segment

# Tolerant on the dashes: a marker that lost a byte (a dropped or corrupted byte) must still be seen.
_PEM_BEGIN = re.compile(rb"-*BEGIN ([A-Z0-9 ]*)PRIVATE KEY-*")
_PEM_END = b"-----END"  # searched literally; a damaged END only redacts more
_JSON_SECRET = re.compile(rb'"(?:deviceSecret|productSecret)"\s*:\s*"')
_MQTT_MAGIC = re.compile(rb"\x00\x04MQTT|\x00\x06MQIsdp")


def _json_secret_spans(data):
    spans = []
    for m in _JSON_SECRET.finditer(data):
        i = m.end()
        while i < len(data):
            c = data[i]
            if c == 0x5C:  # backslash escape inside the JSON string: skip the escaped char
                i += 2
                continue
            if c == 0x22:
                break
            i += 1
        spans.append((m.end(), min(i, len(data))))
    return spans


def _pem_key_spans(data):
    spans = []
    for m in _PEM_BEGIN.finditer(data):
        end = data.find(_PEM_END, m.end())
        spans.append((m.end(), end if end >= 0 else len(data)))
    return spans


def _mqtt_connect_spans(data):
    """Spans of the user name and password of MQTT CONNECT packets found in raw bytes.

    The fixed header (0x10 + remaining length) sits right before the protocol name; when it can't be
    parsed or the packet is cut short, everything after the variable header is redacted (safe side).
    """
    spans = []
    for m in _MQTT_MAGIC.finditer(data):
        p = m.start()
        remlen = None
        for k in range(1, 5):  # remaining length is a 1..4 byte varint before the protocol name
            if p - k - 1 < 0:
                break
            if data[p - k - 1] != 0x10:
                continue
            value, mult, ok = 0, 1, True
            for j in range(k):
                b = data[p - k + j]
                value += (b & 0x7F) * mult
                mult *= 128
                if (b & 0x80) == 0 and j != k - 1:
                    ok = False
                    break
            if ok and (data[p - 1] & 0x80) == 0:
                remlen = value
                break
        vh_end = m.end() + 4  # level, flags, keep-alive (2)
        if vh_end > len(data):
            spans.append((m.end(), len(data)))
            continue
        flags = data[m.end() + 1]
        end = p + remlen if remlen is not None else len(data)
        pos = vh_end
        fields = ["client"]
        if flags & 0x04:
            fields += ["wtopic", "wmsg"]
        if flags & 0x80:
            fields.append("user")
        if flags & 0x40:
            fields.append("pass")
        cut = False
        for name in fields:
            if pos + 2 > min(end, len(data)):
                cut = True
                break
            n = (data[pos] << 8) | data[pos + 1]
            start, stop = pos + 2, pos + 2 + n
            if stop > len(data):
                cut = True
                if name in ("user", "pass"):
                    spans.append((start, len(data)))
                break
            if name in ("user", "pass"):
                spans.append((start, stop))
            pos = stop
        if cut and not any(s[0] >= vh_end for s in spans):
            spans.append((vh_end, min(end, len(data))))
    return spans


def secret_spans(data):
    """(start, end) spans of secrets in a complete unit of bytes (payload, cert, socket data)."""
    data = bytes(data)
    spans = _pem_key_spans(data) + _json_secret_spans(data) + _mqtt_connect_spans(data)
    return _merge(spans)


def _merge(spans):
    out = []
    for s, e in sorted(spans):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def apply_spans(data, spans):
    """bytes + spans -> segments."""
    segs, pos = [], 0
    for s, e in spans:
        if s > pos:
            segs.append(bytes(data[pos:s]))
        segs.append(REDACTED)
        pos = e
    if pos < len(data):
        segs.append(bytes(data[pos:]))
    return segs


def redact(data):
    """Segments for a complete unit of data (payload, certificate, raw socket data)."""
    return apply_spans(data, secret_spans(data))


def redact_hex(hextext):
    """Segments for hex text (hex data format): secrets found in the decoded bytes, cut in the hex."""
    raw = bytes(hextext)
    try:
        decoded = bytes.fromhex(raw.decode("ascii"))
    except ValueError:
        return [raw]  # not valid hex: the module rejects it anyway, nothing was decoded
    return apply_spans(raw, [(s * 2, e * 2) for s, e in secret_spans(decoded)])


# AT commands that carry credentials, and which parameters (0 = first after "=") to redact.
_CRED_CMDS = (
    (re.compile(rb"AT\+QMTCONN=", re.IGNORECASE), (2, 3)),  # <id>,"<clientid>","<user>","<pass>"
    (re.compile(rb"AT\+QICSGP=", re.IGNORECASE), (3, 4)),  # <cid>,<type>,"<apn>","<user>","<pass>",<auth>
    (re.compile(rb'AT\+QMTCFG="aliauth"', re.IGNORECASE), (4,)),  # "aliauth",<id>,"<pk>","<dn>","<secret>"
)


def _field_spans(line, eq, field_indexes):
    """Spans of the contents of some comma-separated parameters after position ``eq`` (quote-aware)."""
    spans, idx, i, inq, start = [], 0, eq + 1, False, eq + 1
    n = len(line)
    while i <= n:
        c = line[i] if i < n else None
        if c == 0x22:
            inq = not inq
        elif c is None or (not inq and c in (0x2C, 0x0D, 0x0A, 0x3B)) or (inq and c in (0x0D, 0x0A)):
            if idx in field_indexes and i > start:
                s, e = start, i
                if line[s:s + 1] == b'"':
                    s += 1
                if e - 1 >= s and line[e - 1:e] == b'"' and not (inq and c is None):
                    e -= 1
                spans.append((s, e))
            if c is None or c in (0x0D, 0x0A, 0x3B):
                return spans  # end of this command
            idx += 1
            start = i + 1
        i += 1
    return spans


def line_spans(data):
    """Spans of credentials in command-mode bytes (one or more lines, possibly partial)."""
    data = bytes(data)
    spans = []
    for rx, fields in _CRED_CMDS:
        for m in rx.finditer(data):
            eq = data.index(b"=", m.start())
            spans += _field_spans(data, eq, fields)
    return spans


def redact_line(data):
    """Segments for command-mode bytes: credential fields and any payload secrets redacted."""
    data = bytes(data)
    return apply_spans(data, _merge(line_spans(data) + secret_spans(data)))


class PemStream:
    """PEM private-key redaction over a stream of chunks (UFS uploads can be fed in many reads).

    Holds back just enough bytes to recognise a marker split across chunks; ``feed(chunk)`` returns
    segments safe to write now, ``finish()`` the rest.
    """

    _HOLD = 64  # longer than any BEGIN marker we look for

    def __init__(self):
        self.buf = b""
        self.inside = False
        self.marked = False

    def feed(self, data, final=False):
        self.buf += bytes(data)
        out = []
        while True:
            if not self.inside:
                m = _PEM_BEGIN.search(self.buf)
                if m:
                    out.append(self.buf[:m.end()])
                    self.buf = self.buf[m.end():]
                    self.inside, self.marked = True, False
                    continue
                keep = 0 if final else min(len(self.buf), self._HOLD)
                cut = len(self.buf) - keep
                if cut > 0:
                    out.append(self.buf[:cut])
                    self.buf = self.buf[cut:]
                return out
            idx = self.buf.find(_PEM_END)
            if idx >= 0:
                if not self.marked:
                    out.append(REDACTED)
                self.buf = self.buf[idx:]
                self.inside = False
                # Emit the END marker now so the next search can't re-find a BEGIN inside held bytes.
                out.append(self.buf[:len(_PEM_END)])
                self.buf = self.buf[len(_PEM_END):]
                continue
            keep = 0 if final else min(len(self.buf), len(_PEM_END) - 1)
            if len(self.buf) - keep > 0 or final:
                if not self.marked:
                    out.append(REDACTED)
                    self.marked = True
                self.buf = self.buf[len(self.buf) - keep:]
            return out

    def finish(self):
        return self.feed(b"", final=True)


def escape(segments):
    parts = []
    for seg in segments:
        if seg is REDACTED:
            parts.append("[REDACTED]")
            continue
        for b in seg:
            if b == 0x0D:
                parts.append("\\r")
            elif b == 0x0A:
                parts.append("\\n")
            elif b == 0x09:
                parts.append("\\t")
            elif b == 0x5C:
                parts.append("\\\\")
            elif b == 0x22:
                parts.append('\\"')
            elif 0x20 <= b < 0x7F:
                parts.append(chr(b))
            else:
                parts.append("\\x%02x" % b)
    return "".join(parts)


class Transcript:
    def __init__(self, path, t0=None, header=""):
        self.t0 = t0 if t0 is not None else time.monotonic()
        # open for the emulator's whole life, line-buffered so a reader sees records at once
        self.f = open(path, "w", buffering=1, encoding="ascii") if path else None  # noqa: SIM115
        if self.f and header:
            self.f.write("# " + header + "\n")

    def _ms(self, t):
        return round((t - self.t0) * 1000)

    def _write(self, t, tag, segments, note=None):
        if self.f is None:
            return
        if isinstance(segments, (bytes, bytearray)):
            segments = [bytes(segments)]
        if not segments:
            return
        line = '%9d %-3s "%s"' % (self._ms(t), tag, escape(segments))
        if note:
            line += " " + note
        self.f.write(line + "\n")

    def rx(self, t, segments):
        self._write(t, "RX", segments)

    def rx_dropped(self, t, segments, why):
        self._write(t, "RX!", segments, "dropped: " + why)

    def tx(self, t, segments):
        self._write(t, "TX", segments)

    def event(self, text, t=None):
        if self.f is None:
            return
        self.f.write("%9d EV  %s\n" % (self._ms(t if t is not None else time.monotonic()), text))

    def close(self):
        if self.f:
            self.f.close()
            self.f = None
