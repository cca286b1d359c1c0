# MQTT 3.1.1 packet codec: pure, I/O-free. Encoders for what a device sends (CONNECT, SUBSCRIBE, UNSUBSCRIBE,
# PUBLISH, PUBACK, PINGREQ, DISCONNECT; the broker-side ones are cheap and serve tests) and PacketReader, an
# incremental decoder for a byte stream that arrives in arbitrary fragments (one +QSSLURC "recv" at a time).
# Section numbers refer to the OASIS MQTT 3.1.1 specification. Anything malformed coming in raises
# MqttProtocolError; anything that cannot be sent raises PayloadError. Nothing else escapes.
#
#   pkt = publish("a/b", b"\x00data", qos=1, pid=7)          # -> bytearray (or a memoryview into buf=...)
#   r = PacketReader(max_packet=4096)
#   for p in r.feed(chunk):                                  # iterate fully: a packet per completed frame
#       p.type, p.pid, p.topic, p.payload, p.qos ...
from cellmqtt.compat import const
from cellmqtt.transport import MqttError, PayloadError, Truncated

# Control packet types (2.2.1).
CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
PUBREC = const(5)
PUBREL = const(6)
PUBCOMP = const(7)
SUBSCRIBE = const(8)
SUBACK = const(9)
UNSUBSCRIBE = const(10)
UNSUBACK = const(11)
PINGREQ = const(12)
PINGRESP = const(13)
DISCONNECT = const(14)

# Which types may flow in each direction, as bit masks over the type number.
_TO_CLIENT = const(0x2AFC)  # CONNACK PUBLISH PUBACK PUBREC PUBREL PUBCOMP SUBACK UNSUBACK PINGRESP
_TO_SERVER = const(0x55FA)  # CONNECT PUBLISH PUBACK PUBREC PUBREL PUBCOMP SUBSCRIBE UNSUBSCRIBE PINGREQ DISCONNECT
# Types whose fixed-header flags must be 0b0010 (2.2.2); all others except PUBLISH must be 0.
_FLAGS_2 = const(0x0540)  # PUBREL SUBSCRIBE UNSUBSCRIBE

_MAX_REMAINING = const(268435455)  # 4-byte varint (2.2.3)
DEFAULT_MAX_PACKET = const(4096)  # sized for an MCU; the client's rx and tx buffers are this big

SUBACK_FAILURE = const(0x80)

PINGREQ_PACKET = b"\xc0\x00"
PINGRESP_PACKET = b"\xd0\x00"
DISCONNECT_PACKET = b"\xe0\x00"

_S_TYPE = const(0)  # PacketReader states: waiting for the first header byte,
_S_LEN = const(1)   # in the remaining-length varint,
_S_BODY = const(2)  # collecting the body,
_S_SKIP = const(3)  # dropping the tail of a PUBLISH larger than the buffer (delivered cut, as a Truncated).


class MqttProtocolError(MqttError):
    """The peer sent bytes that are not valid MQTT 3.1.1 (section 4.8: close the connection)."""


# ---- validation shared by both directions: return a reason, the caller raises its own type ----------------

def _utf8_problem(b, i, end):
    # Well-formed UTF-8 per 1.5.3: no overlongs, no surrogates (MQTT-1.5.3-1), nothing above U+10FFFF,
    # no U+0000 (MQTT-1.5.3-2). MicroPython's own decoder accepts all of these, so check by hand.
    while i < end:
        c = b[i]
        i += 1
        if c < 0x80:
            if c == 0:
                return "contains U+0000"
            continue
        if c < 0xC2 or c > 0xF4:
            return "is not valid UTF-8"
        lo = 0x80
        hi = 0xBF
        if c < 0xE0:
            n = 1
        elif c < 0xF0:
            n = 2
            if c == 0xE0:
                lo = 0xA0  # overlong
            elif c == 0xED:
                hi = 0x9F  # surrogates
        else:
            n = 3
            if c == 0xF0:
                lo = 0x90  # overlong
            elif c == 0xF4:
                hi = 0x8F  # above U+10FFFF
        if i + n > end:
            return "is not valid UTF-8"
        c = b[i]
        if c < lo or c > hi:
            return "is not valid UTF-8"
        for k in range(i + 1, i + n):
            if b[k] & 0xC0 != 0x80:
                return "is not valid UTF-8"
        i += n
    return None


def _text_problem(b, i, end, kind, ascii):
    # b[i:end] as a string (kind 0), topic name (1: non-empty, MQTT-4.7.3-1; no wildcards, MQTT-3.3.2-2) or
    # topic filter (2: '+' a whole level, '#' the whole last level, 4.7.1). b is bytes or bytearray: find()
    # scans in C without allocating. ascii: the caller knows every byte is < 0x80, so the per-byte UTF-8
    # walk (slow in Python) is needed only for the rare non-ASCII text.
    if b.find(b"\x00", i, end) >= 0:
        return "contains U+0000"
    if not ascii:
        why = _utf8_problem(b, i, end)
        if why:
            return why
    if kind:
        if i >= end:
            return "is empty"
        if b.find(b"+", i, end) >= 0 or b.find(b"#", i, end) >= 0:
            if kind == 1:
                return "contains a wildcard"
            return _wild_problem(b, i, end)
    return None


def _wild_problem(b, i, end):
    for k in range(i, end):
        c = b[k]
        if c == 0x23 or c == 0x2B:  # '#', '+'
            if k > i and b[k - 1] != 0x2F:  # must start a level
                return "has a misplaced wildcard"
            if c == 0x23:
                if k != end - 1:
                    return "has '#' before the last level"
            elif k != end - 1 and b[k + 1] != 0x2F:
                return "has a misplaced wildcard"
    return None


# ---- encoders -------------------------------------------------------------------------------------------

_BYTES = (bytes, bytearray, memoryview)  # built once: a tuple in a call would be allocated every time


def _as_bytes(v, what):
    if isinstance(v, str):
        try:
            return v.encode("utf-8")
        except UnicodeError:  # CPython: lone surrogates
            raise PayloadError(what + " is not valid UTF-8")
    if isinstance(v, _BYTES):
        return v
    raise PayloadError("%s must be str or bytes, not %s" % (what, type(v).__name__))


def _field(v, what, kind):
    # A length-prefixed field (1.5.3): at most 65535 bytes. kind None: binary; 0 string; 1 topic; 2 filter.
    # `what` never carries the value, so a password cannot leak into a message.
    b = _as_bytes(v, what)
    if len(b) > 65535:
        raise PayloadError("%s is %d bytes, more than 65535" % (what, len(b)))
    if kind is not None:
        if isinstance(b, memoryview):
            b = bytes(b)
        # A str whose UTF-8 form is as long as it is was pure ASCII.
        why = _text_problem(b, 0, len(b), kind, isinstance(v, str) and len(b) == len(v))
        if why:
            if kind:
                raise PayloadError("%s %r %s" % (what, bytes(b[:64]), why))
            raise PayloadError(what + " " + why)
    return b


def _topic(v, wild):
    return _field(v, "topic filter" if wild else "topic", 2 if wild else 1)


def check_topic(topic, wild=False):
    """A topic name (or filter, wild=True) as bytes ready to send; PayloadError if it cannot be sent."""
    return _topic(topic, wild)


def _pid_ok(pid):
    if not isinstance(pid, int) or pid < 1 or pid > 65535:
        raise PayloadError("packet id %r is not in 1..65535" % (pid,))


def _qos_ok(qos, what):
    if qos not in (0, 1, 2):
        raise PayloadError("%s QoS %r is not 0, 1 or 2" % (what, qos))


def _put_len(out, i, rl):
    # Remaining length (2.2.3): 7 bits per byte, low group first, top bit = "more follows".
    while True:
        d = rl & 0x7F
        rl >>= 7
        if not rl:
            out[i] = d
            return i + 1
        out[i] = d | 0x80
        i += 1


def _start(buf, first, rl):
    # Allocate the packet once at its final size (or use the caller's buffer); write the fixed header.
    if rl > _MAX_REMAINING:
        raise PayloadError("packet body of %d bytes is over the MQTT limit of %d" % (rl, _MAX_REMAINING))
    total = rl + (2 if rl < 128 else 3 if rl < 16384 else 4 if rl < 2097152 else 5)
    if buf is None:
        out = bytearray(total)
    elif len(buf) < total:
        raise PayloadError("packet of %d bytes does not fit the %d-byte buffer" % (total, len(buf)))
    else:
        out = buf
    out[0] = first
    return out, _put_len(out, 1, rl), total


def _end(out, buf, total):
    return out if buf is None else memoryview(out)[:total]


def _put16(out, i, v):
    out[i] = v >> 8
    out[i + 1] = v & 0xFF
    return i + 2


def _putf(out, i, b):
    n = len(b)
    out[i] = n >> 8
    out[i + 1] = n & 0xFF
    out[i + 2:i + 2 + n] = b
    return i + 2 + n


def encode_length(n):
    """The remaining-length varint for n (2.2.3) as bytes; PayloadError outside 0..268435455."""
    if not isinstance(n, int) or n < 0 or n > _MAX_REMAINING:
        raise PayloadError("remaining length %r is not in 0..%d" % (n, _MAX_REMAINING))
    out = bytearray(4)
    return bytes(out[:_put_len(out, 0, n)])


def connect(client_id, username=None, password=None, keepalive=120, clean=True,
            will_topic=None, will_payload=b"", will_qos=0, will_retain=False, buf=None):
    """CONNECT (3.1). Strings may be str or UTF-8 bytes; the password may be any bytes."""
    cid = _field(client_id, "client id", 0)
    if not cid and not clean:
        raise PayloadError("an empty client id needs clean session (MQTT-3.1.3-7)")
    if not isinstance(keepalive, int) or keepalive < 0 or keepalive > 65535:
        raise PayloadError("keepalive %r is not in 0..65535 s" % (keepalive,))
    flags = 0x02 if clean else 0
    rl = 10 + 2 + len(cid)
    if will_topic is not None:
        wt = _topic(will_topic, False)
        wp = _field(will_payload, "will message", None)
        _qos_ok(will_qos, "will")
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        rl += 4 + len(wt) + len(wp)
    if username is not None:
        user = _field(username, "user name", 0)
        flags |= 0x80
        rl += 2 + len(user)
    if password is not None:
        if username is None:
            raise PayloadError("a password needs a user name in MQTT 3.1.1 (MQTT-3.1.2-22)")
        pw = _field(password, "password", None)
        flags |= 0x40
        rl += 2 + len(pw)
    out, i, total = _start(buf, 0x10, rl)
    i = _putf(out, i, b"MQTT")
    out[i] = 4  # protocol level 3.1.1
    out[i + 1] = flags
    i = _put16(out, i + 2, keepalive)
    i = _putf(out, i, cid)
    if flags & 0x04:
        i = _putf(out, i, wt)
        i = _putf(out, i, wp)
    if flags & 0x80:
        i = _putf(out, i, user)
    if flags & 0x40:
        _putf(out, i, pw)
    return _end(out, buf, total)


def publish(topic, payload, qos=0, retain=False, dup=False, pid=0, buf=None):
    """PUBLISH (3.3). payload: bytes-like (str is sent as UTF-8). pid only for QoS > 0."""
    t = _topic(topic, False)
    p = _as_bytes(payload, "payload")
    _qos_ok(qos, "PUBLISH")
    if qos:
        _pid_ok(pid)
    elif pid or dup:
        raise PayloadError("a QoS 0 PUBLISH has no packet id and no DUP flag (MQTT-3.3.1-2)")
    rl = 2 + len(t) + (2 if qos else 0) + len(p)
    out, i, total = _start(buf, 0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0), rl)
    i = _putf(out, i, t)
    if qos:
        i = _put16(out, i, pid)
    memoryview(out)[i:total] = p  # through a memoryview: CPython's bytearray slice assignment copies p first
    return _end(out, buf, total)


def subscribe(pid, filters, buf=None):
    """SUBSCRIBE (3.8): filters is a sequence of (topic filter, requested QoS)."""
    _pid_ok(pid)
    if not filters:
        raise PayloadError("SUBSCRIBE needs at least one topic filter (MQTT-3.8.3-3)")
    enc = []
    rl = 2
    for f, q in filters:
        _qos_ok(q, "requested")
        b = _topic(f, True)
        enc.append(b)
        rl += 3 + len(b)
    out, i, total = _start(buf, 0x82, rl)
    i = _put16(out, i, pid)
    for k in range(len(enc)):
        i = _putf(out, i, enc[k])
        out[i] = filters[k][1]
        i += 1
    return _end(out, buf, total)


def unsubscribe(pid, filters, buf=None):
    """UNSUBSCRIBE (3.10): filters is a sequence of topic filters."""
    _pid_ok(pid)
    if not filters:
        raise PayloadError("UNSUBSCRIBE needs at least one topic filter (MQTT-3.10.3-2)")
    enc = [_topic(f, True) for f in filters]
    rl = 2
    for b in enc:
        rl += 2 + len(b)
    out, i, total = _start(buf, 0xA2, rl)
    i = _put16(out, i, pid)
    for b in enc:
        i = _putf(out, i, b)
    return _end(out, buf, total)


def ack(ptype, pid, buf=None):
    """PUBACK / PUBREC / PUBREL / PUBCOMP / UNSUBACK: the 4-byte packets that carry only a packet id."""
    if ptype not in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK):
        raise PayloadError("packet type %r is not an acknowledgement" % (ptype,))
    _pid_ok(pid)
    out, i, total = _start(buf, (ptype << 4) | (2 if ptype == PUBREL else 0), 2)
    _put16(out, i, pid)
    return _end(out, buf, total)


def puback(pid, buf=None):
    return ack(PUBACK, pid, buf)


def connack(code, session_present=False, buf=None):
    """CONNACK (3.2), broker side: used by tests and simulators."""
    if code not in (0, 1, 2, 3, 4, 5):
        raise PayloadError("CONNACK code %r is not 0..5" % (code,))
    if code and session_present:
        raise PayloadError("a refusing CONNACK has session present 0 (MQTT-3.2.2-4)")
    out, i, total = _start(buf, 0x20, 2)
    out[i] = 1 if session_present else 0
    out[i + 1] = code
    return _end(out, buf, total)


def suback(pid, codes, buf=None):
    """SUBACK (3.9), broker side: one return code (0, 1, 2 or 0x80) per filter."""
    _pid_ok(pid)
    if not codes:
        raise PayloadError("SUBACK needs at least one return code")
    for c in codes:
        if c not in (0, 1, 2, SUBACK_FAILURE):
            raise PayloadError("SUBACK return code %r is not 0, 1, 2 or 0x80" % (c,))
    out, i, total = _start(buf, 0x90, 2 + len(codes))
    i = _put16(out, i, pid)
    out[i:total] = bytes(codes)
    return _end(out, buf, total)


# ---- decoder --------------------------------------------------------------------------------------------

class Packet:
    """One decoded control packet. Fields a type does not carry keep their defaults.

    CONNACK: code, session_present. PUBLISH: topic (str), payload (bytes), qos, retain, dup, pid.
    PUBACK/PUBREC/PUBREL/PUBCOMP/UNSUBACK: pid. SUBACK: pid, codes (bytes, one per filter).
    Broker side: SUBSCRIBE: pid, filters [(str, qos)]; UNSUBSCRIBE: pid, filters [str];
    CONNECT: client_id, username, password (bytes), keepalive, clean, will_topic, will_payload, will_qos,
    will_retain.
    """

    # Defaults live on the class: an instance stores only what its type sets (RAM: a small dict).
    pid = 0
    topic = None
    payload = None
    qos = 0
    retain = False
    dup = False
    code = 0
    session_present = False
    codes = None
    filters = None

    def __init__(self, ptype, flags):
        self.type = ptype
        self.flags = flags

    def __repr__(self):
        return "<Packet type=%d pid=%d topic=%r qos=%d>" % (self.type, self.pid, self.topic, self.qos)


class PacketReader:
    """Incremental decoder. feed(chunk) is a generator of complete Packets; partial frames are kept in one
    buffer of max_packet bytes allocated here, so fragments of any size (1 byte .. many packets) work.

    max_packet bounds a whole packet (fixed header included); a larger PUBLISH is delivered cut, its payload a
    transport.Truncated (the head; len() the real size) and its tail skipped, so its sender can be answered;
    any other larger packet is a protocol error. server=True decodes the client->broker direction.
    After a MqttProtocolError the stream position is unknown: every later feed() raises it again until
    reset(). Iterate each feed() to the end, or the rest of that chunk is not decoded.
    """

    def __init__(self, max_packet=DEFAULT_MAX_PACKET, server=False):
        if max_packet < 2:
            raise MqttError("max_packet %r is below the 2-byte minimum packet" % (max_packet,))
        self.max_packet = max_packet
        self._buf = bytearray(max_packet)
        self._mv = memoryview(self._buf)
        self._allowed = _TO_SERVER if server else _TO_CLIENT
        self.reset()

    def reset(self):
        self._state = _S_TYPE
        self._first = 0
        self._rl = 0
        self._shift = 0
        self._pos = 0
        self._skip = 0
        self._err = None

    def pending(self):
        """Bytes of an incomplete packet held (0 between packets)."""
        if self._state == _S_TYPE:
            return 0
        return 1 + self._shift // 7 + self._pos

    def feed(self, data):
        if self._err is not None:
            raise self._err
        try:
            src = memoryview(data)
        except TypeError:
            raise MqttProtocolError("feed() needs bytes, not %s" % type(data).__name__)
        n = len(src)
        i = 0
        while True:
            if self._state == _S_SKIP:
                k = min(self._skip, n - i)
                i += k
                self._skip -= k
                if self._skip:
                    return
                self._state = _S_TYPE
                continue
            if self._state == _S_BODY:
                k = self._rl - self._pos
                if k:
                    if i >= n:
                        return
                    k = min(k, n - i)
                    self._mv[self._pos:self._pos + k] = src[i:i + k]
                    self._pos += k
                    i += k
                    if self._pos < self._rl:
                        return
                self._state = _S_SKIP if self._skip else _S_TYPE
                try:
                    pkt = self._decode()
                except MqttProtocolError as e:
                    self._err = e
                    raise
                yield pkt
                continue
            if i >= n:
                return
            c = src[i]
            i += 1
            if self._state == _S_TYPE:
                self._first = c
                self._rl = 0
                self._shift = 0
                self._pos = 0
                why = self._header_problem(c)
                if why:
                    self._fail(why)
                self._state = _S_LEN
            else:
                self._rl |= (c & 0x7F) << self._shift
                self._shift += 7
                if c & 0x80:
                    if self._shift >= 28:
                        self._fail("remaining length is longer than 4 bytes")
                else:
                    size = 1 + self._shift // 7 + self._rl
                    self._skip = 0
                    if size > self.max_packet:
                        if self._first >> 4 != PUBLISH:
                            self._fail("packet of %d bytes (remaining length %d) exceeds the %d-byte limit"
                                       % (size, self._rl, self.max_packet))
                        # a PUBLISH: its head is kept (topic, id, the payload's first bytes) and the rest
                        # dropped; the payload is delivered as a Truncated, so the app can refuse it by name
                        keep = self.max_packet - 1 - self._shift // 7  # the whole packet's bound, as for others
                        self._skip = self._rl - keep
                        self._rl = keep
                    self._state = _S_BODY

    def _fail(self, why):
        self._err = MqttProtocolError(why)
        raise self._err

    def _header_problem(self, c):
        t = c >> 4
        f = c & 0x0F
        if not (self._allowed >> t) & 1:
            return "packet type %d is reserved or not allowed in this direction" % t
        if t == PUBLISH:
            if f & 0x06 == 0x06:
                return "PUBLISH with QoS 3 (MQTT-3.3.1-4)"
            if f & 0x08 and not f & 0x06:
                return "QoS 0 PUBLISH with DUP set (MQTT-3.3.1-2)"
            return None
        if f != (2 if (_FLAGS_2 >> t) & 1 else 0):
            return "packet type %d with reserved flags 0x%x (2.2.2)" % (t, f)
        return None

    # -- body decoders: b is the body (self._buf), n its length; every read is bounds-checked ----------

    def _u16(self, i, n, what):
        if i + 2 > n:
            raise MqttProtocolError("%s runs past the end of the packet" % what)
        return (self._buf[i] << 8) | self._buf[i + 1], i + 2

    def _bin(self, i, n, what):
        ln, i = self._u16(i, n, what)
        if i + ln > n:
            raise MqttProtocolError("%s length %d runs past the end of the packet" % (what, ln))
        return i, i + ln

    def _str(self, i, n, what, kind=0):
        # kind: 0 plain string, 1 topic name, 2 topic filter
        a, e = self._bin(i, n, what)
        return self._text(a, e, what, kind), e

    def _text(self, a, e, what, kind):
        try:
            s = str(self._mv[a:e], "utf-8")
        except UnicodeError:
            raise MqttProtocolError(what + " is not valid UTF-8")
        # MicroPython's decoder checks the structure but lets overlongs and surrogates through: those are
        # non-ASCII, so len(s) < bytes and _text_problem walks them byte by byte.
        why = _text_problem(self._buf, a, e, kind, len(s) == e - a)
        if why:
            raise MqttProtocolError(what + " " + why)
        return s

    def _pid(self, i, n, what):
        pid, i = self._u16(i, n, what + " packet id")
        if pid == 0:
            raise MqttProtocolError(what + " with packet id 0 (MQTT-2.3.1-1)")
        return pid, i

    def _decode(self):
        t = self._first >> 4
        p = Packet(t, self._first & 0x0F)
        n = self._rl
        b = self._buf
        if t == PUBLISH:
            self._publish(p, n)
        elif t in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK):
            if n != 2:
                raise MqttProtocolError("packet type %d with remaining length %d, not 2" % (t, n))
            p.pid, _ = self._pid(0, n, "acknowledgement")
        elif t == CONNACK:
            if n != 2:
                raise MqttProtocolError("CONNACK with remaining length %d, not 2" % n)
            if b[0] & 0xFE:
                raise MqttProtocolError("CONNACK reserved flags 0x%x (MQTT-3.2.2.1)" % b[0])
            p.session_present = bool(b[0])
            p.code = b[1]
            if p.code > 5:
                raise MqttProtocolError("CONNACK return code %d is reserved" % p.code)
            if p.code and p.session_present:
                raise MqttProtocolError("refusing CONNACK with session present (MQTT-3.2.2-4)")
        elif t == SUBACK:
            p.pid, i = self._pid(0, n, "SUBACK")
            if i >= n:
                raise MqttProtocolError("SUBACK without return codes")
            p.codes = bytes(self._mv[i:n])
            for c in p.codes:
                if c > 2 and c != SUBACK_FAILURE:
                    raise MqttProtocolError("SUBACK return code 0x%x is reserved (MQTT-3.9.3-2)" % c)
        elif t in (PINGREQ, PINGRESP, DISCONNECT):
            if n:
                raise MqttProtocolError("packet type %d with remaining length %d, not 0" % (t, n))
        elif t == SUBSCRIBE or t == UNSUBSCRIBE:
            p.pid, i = self._pid(0, n, "SUBSCRIBE" if t == SUBSCRIBE else "UNSUBSCRIBE")
            p.filters = []
            while i < n:
                f, i = self._str(i, n, "topic filter", 2)
                if t == SUBSCRIBE:
                    if i >= n:
                        raise MqttProtocolError("SUBSCRIBE filter without QoS byte")
                    if b[i] > 2:
                        raise MqttProtocolError("SUBSCRIBE requested QoS byte 0x%x (MQTT-3.8.3-4)" % b[i])
                    f = (f, b[i])
                    i += 1
                p.filters.append(f)
            if not p.filters:
                raise MqttProtocolError("packet type %d without topic filters" % t)
        else:  # CONNECT: the only type left in either direction mask
            self._connect(p, n)
        return p

    def _publish(self, p, n):
        # The hot path: few locals (MicroPython puts bigger frames on the heap) and no tuple returns.
        b = self._buf
        f = p.flags
        if n < 2:
            raise MqttProtocolError("PUBLISH topic runs past the end of the packet")
        i = 2 + ((b[0] << 8) | b[1])
        if i > n:
            raise MqttProtocolError("PUBLISH topic length %d runs past the end of the packet" % (i - 2))
        p.topic = self._text(2, i, "PUBLISH topic", 1)
        if f & 0x06:
            p.qos = (f >> 1) & 3
            if i + 2 > n:
                raise MqttProtocolError("PUBLISH packet id runs past the end of the packet")
            p.pid = (b[i] << 8) | b[i + 1]
            if not p.pid:
                raise MqttProtocolError("PUBLISH with packet id 0 (MQTT-2.3.1-1)")
            i += 2
        if f & 1:
            p.retain = True
        if f & 8:
            p.dup = True
        p.payload = bytes(self._mv[i:n]) if not self._skip else Truncated(bytes(self._mv[i:n]), n - i + self._skip)

    def _connect(self, p, n):
        b = self._buf
        a, e = self._bin(0, n, "protocol name")
        if bytes(self._mv[a:e]) != b"MQTT" or e >= n or b[e] != 4:
            raise MqttProtocolError("CONNECT is not protocol MQTT level 4 (3.1.1)", 1)
        if e + 1 >= n:
            raise MqttProtocolError("CONNECT flags run past the end of the packet")
        fl = b[e + 1]
        if fl & 0x01:
            raise MqttProtocolError("CONNECT reserved flag set (MQTT-3.1.2-3)")
        p.clean = bool(fl & 0x02)
        p.will_qos = (fl >> 3) & 3
        p.will_retain = bool(fl & 0x20)
        if p.will_qos == 3 or (not fl & 0x04 and fl & 0x38):
            raise MqttProtocolError("CONNECT will QoS/retain flags invalid (MQTT-3.1.2-13/14/15)")
        if fl & 0x40 and not fl & 0x80:
            raise MqttProtocolError("CONNECT password flag without user name flag (MQTT-3.1.2-22)")
        p.keepalive, i = self._u16(e + 2, n, "CONNECT keepalive")
        p.client_id, i = self._str(i, n, "client id")
        p.will_topic = p.will_payload = p.username = p.password = None
        if fl & 0x04:
            p.will_topic, i = self._str(i, n, "will topic", 1)
            a, i = self._bin(i, n, "will message")
            p.will_payload = bytes(self._mv[a:i])
        if fl & 0x80:
            p.username, i = self._str(i, n, "user name")
        if fl & 0x40:
            a, i = self._bin(i, n, "password")
            p.password = bytes(self._mv[a:i])
        if i != n:
            raise MqttProtocolError("CONNECT has %d bytes after its payload" % (n - i))
