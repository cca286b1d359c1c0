# The MQTT 3.1.1 codec on both ports: encoders against byte vectors worked out by hand from the OASIS spec,
# the incremental decoder fed in every split, malformed input -> only MqttProtocolError, and a portable
# xorshift fuzz with truncation and bit flips.
from cellmqtt import mqtt_codec as codec
from cellmqtt.mqtt_codec import MqttProtocolError, PacketReader
from cellmqtt.transport import MqttError, PayloadError, Truncated

TIMEOUT = 120


class XorShift:
    def __init__(self, seed):
        self.s = seed or 1

    def next(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def below(self, n):
        return self.next() % n

    def bytes(self, n):
        return bytes(self.next() & 0xFF for _ in range(n))


def expect(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s not raised by %s%r" % (exc.__name__, fn.__name__, args))


def summary(p):
    pl = ("cut", p.payload.head, p.payload.size) if isinstance(p.payload, Truncated) else p.payload
    s = (p.type, p.flags, p.pid, p.topic, pl, p.qos, p.retain, p.dup, p.code, p.session_present, p.codes,
         p.filters)
    if p.type == codec.CONNECT:
        s += (p.client_id, p.username, p.password, p.keepalive, p.clean, p.will_topic, p.will_payload, p.will_qos,
              p.will_retain)
    return s


def decode_all(data, splits=None, server=False, max_packet=4096):
    """Feed data cut at `splits` (offsets); return ([summaries], error message or None)."""
    r = PacketReader(max_packet, server)
    out = []
    cuts = [0] + list(splits or []) + [len(data)]
    try:
        for k in range(len(cuts) - 1):
            for p in r.feed(data[cuts[k]:cuts[k + 1]]):
                out.append(summary(p))
    except MqttProtocolError as e:
        return out, str(e)
    return out, None


def h(s):
    # hex with spaces -> bytes (MicroPython has no bytes.fromhex with spaces in older versions)
    import binascii
    return binascii.unhexlify(s.replace(" ", ""))


# ---- encoders: hand-computed vectors -------------------------------------------------------------------

def test_connect_minimal():
    # 3.1: fixed 0x10, rl 13; "MQTT" level 4; flags 0x02 clean; keepalive 60; client id "a"
    assert bytes(codec.connect("a", keepalive=60)) == h("10 0d 0004 4d515454 04 02 003c 0001 61")


def test_connect_all_fields():
    # flags: user 0x80 | password 0x40 | will retain 0x20 | will QoS 1 0x08 | will 0x04 = 0xec, clean 0
    pkt = codec.connect("cid", "u", b"p\x00", 0x1234, False, "w", b"bye", 1, True)
    assert bytes(pkt) == h("10 1e 0004 4d515454 04 ec 1234 0003 636964 0001 77 0003 627965 0001 75 0002 7000")


def test_connect_flags_spec_example():
    # Spec 3.1.2.10 example: flags 0xCE = user, password, will QoS 1, will flag, clean; keepalive 10
    pkt = codec.connect("", "u", "p", 10, True, "t", b"", 1, False)
    assert bytes(pkt)[9] == 0xCE
    assert bytes(pkt)[10:12] == b"\x00\x0a"
    # will QoS 2 alone: 0x10 | 0x04 | clean 0x02
    assert bytes(codec.connect("x", will_topic="t", will_qos=2))[9] == 0x16
    # user without password
    assert bytes(codec.connect("x", "u", clean=False))[9] == 0x80


def test_publish_vectors():
    assert bytes(codec.publish("a/b", b"hi")) == h("30 07 0003 612f62 6869")
    assert bytes(codec.publish("a/b", b"hi", 1, True, False, 10)) == h("33 09 0003 612f62 000a 6869")
    assert bytes(codec.publish("a/b", b"hi", 1, False, True, 0xFFFF)) == h("3a 09 0003 612f62 ffff 6869")
    assert bytes(codec.publish("a/b", b"", 2, False, False, 1)) == h("34 07 0003 612f62 0001")
    assert bytes(codec.publish("é", b"\x00\x1a\x1b")) == h("30 07 0002 c3a9 001a1b")
    assert bytes(codec.publish("t", "s")) == h("30 04 0001 74 73")  # str payload goes as UTF-8


def test_subscribe_unsubscribe_vectors():
    # packet id 10, "a/b" QoS 1, "c/d" QoS 2: rl = 2 + 6 + 6
    assert bytes(codec.subscribe(10, [("a/b", 1), ("c/d", 2)])) == h("82 0e 000a 0003 612f62 01 0003 632f64 02")
    assert bytes(codec.subscribe(1, [("a/+", 1), ("#", 0)])) == h("82 0c 0001 0003 612f2b 01 0001 23 00")
    assert bytes(codec.unsubscribe(10, ["a/b", "c/d"])) == h("a2 0c 000a 0003 612f62 0003 632f64")


def test_small_packet_vectors():
    assert bytes(codec.puback(0x1234)) == h("40 02 1234")
    assert bytes(codec.ack(codec.PUBREC, 1)) == h("50 02 0001")
    assert bytes(codec.ack(codec.PUBREL, 1)) == h("62 02 0001")  # PUBREL flags 0010
    assert bytes(codec.ack(codec.PUBCOMP, 1)) == h("70 02 0001")
    assert bytes(codec.ack(codec.UNSUBACK, 2)) == h("b0 02 0002")
    assert codec.PINGREQ_PACKET == h("c0 00")
    assert codec.PINGRESP_PACKET == h("d0 00")
    assert codec.DISCONNECT_PACKET == h("e0 00")
    assert bytes(codec.connack(0)) == h("20 02 00 00")
    assert bytes(codec.connack(0, True)) == h("20 02 01 00")
    assert bytes(codec.connack(5)) == h("20 02 00 05")
    assert bytes(codec.suback(10, [0, 1, 0x80])) == h("90 05 000a 00 01 80")


def test_remaining_length_edge_values():
    # Table 2.4 of the spec
    table = [(0, "00"), (127, "7f"), (128, "8001"), (16383, "ff7f"), (16384, "808001"), (2097151, "ffff7f"),
             (2097152, "80808001"), (268435455, "ffffff7f")]
    for n, enc in table:
        assert codec.encode_length(n) == h(enc), n
    expect(PayloadError, codec.encode_length, 268435456)
    expect(PayloadError, codec.encode_length, -1)


def test_remaining_length_in_real_packets():
    # PUBLISH "t": rl = 2 + 1 + payload
    for rl, hdr in ((127, "307f"), (128, "308001"), (16383, "30ff7f"), (16384, "30808001")):
        pkt = bytes(codec.publish("t", bytes(rl - 3)))
        assert pkt[:len(hdr) // 2] == h(hdr), rl
        assert len(pkt) == len(hdr) // 2 + rl
        got, err = decode_all(pkt, max_packet=len(pkt))
        assert err is None and got[0][4] == bytes(rl - 3)
    empty = bytes(codec.publish("t", b""))
    assert empty == h("30 03 0001 74")


def test_remaining_length_decoding_and_overflow():
    # The reader parses the varint before refusing a body it cannot hold: the message names the value.
    for hdr, n in (("ffff7f", 2097151), ("80808001", 2097152), ("ffffff7f", 268435455), ("808001", 16384)):
        got, err = decode_all(h("90" + hdr))
        assert got == [] and err is not None and ("remaining length %d" % n) in err, (hdr, err)
    got, err = decode_all(h("30 ffffffff01"))
    assert err is not None and "longer than 4 bytes" in err
    got, err = decode_all(h("30 80808080 00"))
    assert err is not None and "longer than 4 bytes" in err
    # the limit counts the whole packet: 4096 bytes fit exactly, 4097 do not
    ok = bytes(codec.publish("t", bytes(4096 - 3 - 3)))
    assert len(ok) == 4096 and decode_all(ok)[1] is None
    got, err = decode_all(bytes(codec.publish("t", bytes(4096 - 3 - 2))))  # one byte over: delivered cut
    assert err is None and got[0][4] == ("cut", bytes(4096 - 3 - 3), 4096 - 3 - 2)  # bound - header - topic


def test_encoders_write_into_a_given_buffer():
    buf = bytearray(64)
    mv = codec.publish("a/b", b"hi", 1, False, False, 10, buf)
    assert bytes(mv) == bytes(codec.publish("a/b", b"hi", 1, False, False, 10))
    assert bytes(codec.subscribe(3, [("x", 1)], buf)) == bytes(codec.subscribe(3, [("x", 1)]))
    assert bytes(codec.connect("c", "u", "p", buf=buf)) == bytes(codec.connect("c", "u", "p"))
    e = expect(PayloadError, codec.publish, "a", bytes(100), buf=buf)
    assert "64" in str(e)


def test_encoder_rejects_what_cannot_be_sent():
    for t in ("a/+", "+", "a/#", "#", "", "a\x00b", b"\xff", b"\xc0\x80", b"\xed\xa0\x80"):
        expect(PayloadError, codec.publish, t, b"x")
    expect(PayloadError, codec.publish, "t" * 65536, b"")
    expect(PayloadError, codec.publish, "t", b"x", 0, False, False, 5)  # pid on QoS 0
    expect(PayloadError, codec.publish, "t", b"x", 0, False, True)  # DUP on QoS 0
    expect(PayloadError, codec.publish, "t", b"x", 1, False, False, 0)
    expect(PayloadError, codec.publish, "t", b"x", 1, False, False, 65536)
    expect(PayloadError, codec.publish, "t", b"x", 3, False, False, 1)
    expect(PayloadError, codec.publish, "t", 42)
    expect(PayloadError, codec.publish, None, b"")
    for f in ("a/#/b", "a#", "a+/b", "a/+b", "", "\x00"):
        expect(PayloadError, codec.subscribe, 1, [(f, 0)])
    for f in ("a/#", "#", "+", "+/+/#", "a/+/c", "/", "//"):
        codec.subscribe(1, [(f, 0)])  # valid filters
    expect(PayloadError, codec.subscribe, 1, [])
    expect(PayloadError, codec.subscribe, 1, [("a", 3)])
    expect(PayloadError, codec.subscribe, 0, [("a", 0)])
    expect(PayloadError, codec.unsubscribe, 1, [])
    expect(PayloadError, codec.connect, "x" * 65536)
    expect(PayloadError, codec.connect, "a", None, "pw")
    expect(PayloadError, codec.connect, "", clean=False)
    expect(PayloadError, codec.connect, "a", keepalive=-1)
    expect(PayloadError, codec.connect, "a", will_topic="w/#")
    expect(PayloadError, codec.connect, "a", will_topic="w", will_qos=3)
    expect(PayloadError, codec.connect, b"\xff")
    e = expect(PayloadError, codec.connect, "a", "u", b"TOPSECRET" * 8000)
    assert "TOPSECRET" not in str(e), "the password leaked into an error message"
    expect(PayloadError, codec.ack, codec.PUBLISH, 1)
    expect(PayloadError, codec.connack, 6)
    expect(PayloadError, codec.suback, 1, [3])
    assert issubclass(MqttProtocolError, MqttError)


# ---- decoder --------------------------------------------------------------------------------------------

def client_stream():
    """Broker -> client packets and what each must decode to (type, flags, pid, topic, payload, qos, retain,
    dup, code, session_present, codes, filters)."""
    big = bytes(range(256)) * 2
    return [
        (h("20 02 00 00"), (codec.CONNACK, 0, 0, None, None, 0, False, False, 0, False, None, None)),
        (h("20 02 01 00"), (codec.CONNACK, 0, 0, None, None, 0, False, False, 0, True, None, None)),
        (h("20 02 00 04"), (codec.CONNACK, 0, 0, None, None, 0, False, False, 4, False, None, None)),
        (h("90 05 000a 00 01 80"), (codec.SUBACK, 0, 10, None, None, 0, False, False, 0, False, b"\x00\x01\x80",
                                    None)),
        (h("b0 02 0102"), (codec.UNSUBACK, 0, 0x102, None, None, 0, False, False, 0, False, None, None)),
        (h("40 02 ffff"), (codec.PUBACK, 0, 0xFFFF, None, None, 0, False, False, 0, False, None, None)),
        (h("50 02 0001"), (codec.PUBREC, 0, 1, None, None, 0, False, False, 0, False, None, None)),
        (h("62 02 0002"), (codec.PUBREL, 2, 2, None, None, 0, False, False, 0, False, None, None)),
        (h("70 02 0003"), (codec.PUBCOMP, 0, 3, None, None, 0, False, False, 0, False, None, None)),
        (h("d0 00"), (codec.PINGRESP, 0, 0, None, None, 0, False, False, 0, False, None, None)),
        (h("30 07 0003 612f62 6869"), (codec.PUBLISH, 0, 0, "a/b", b"hi", 0, False, False, 0, False, None, None)),
        (h("3b 09 0003 612f62 000a 001a"), (codec.PUBLISH, 0xB, 10, "a/b", b"\x00\x1a", 1, True, True, 0, False,
                                            None, None)),
        (h("34 07 0003 612f62 0007"), (codec.PUBLISH, 4, 7, "a/b", b"", 2, False, False, 0, False, None, None)),
        (h("31 0b 0009 f09f9880 2fe282ac2f"), (codec.PUBLISH, 1, 0, "\U0001f600/\u20ac/", b"", 0, True, False, 0,
                                                False, None, None)),
        (h("30 8304 0001 74") + big, (codec.PUBLISH, 0, 0, "t", big, 0, False, False, 0, False, None, None)),
    ]


def test_decode_each_packet_whole():
    for data, want in client_stream():
        got, err = decode_all(data)
        assert err is None, (data, err)
        assert got == [want], (got, want)


def test_decode_every_split():
    vectors = client_stream()
    stream = b"".join(d for d, _ in vectors)
    want = [w for _, w in vectors]
    assert decode_all(stream) == (want, None)  # many packets in one chunk
    assert decode_all(stream, range(1, len(stream))) == (want, None)  # one byte at a time
    for cut in range(1, len(stream)):  # every two-piece split
        assert decode_all(stream, [cut]) == (want, None), cut
    rng = XorShift(7)
    for _ in range(200):  # random fragmentations
        cuts = sorted({rng.below(len(stream)) for _ in range(rng.below(12))})
        assert decode_all(stream, cuts) == (want, None), cuts


def test_truncated_stream_keeps_partial_packet_and_loses_nothing():
    vectors = client_stream()
    stream = b"".join(d for d, _ in vectors)
    ends = []
    n = 0
    for d, _ in vectors:
        n += len(d)
        ends.append(n)
    for cut in range(len(stream) + 1):
        r = PacketReader()
        first = [summary(p) for p in r.feed(stream[:cut])]
        complete = len([e for e in ends if e <= cut])
        assert first == [w for _, w in vectors[:complete]], cut
        assert r.pending() == cut - (ends[complete - 1] if complete else 0), cut
        rest = [summary(p) for p in r.feed(stream[cut:])]
        assert first + rest == [w for _, w in vectors], cut
        assert r.pending() == 0


def test_decode_broker_side_packets():
    stream = (bytes(codec.connect("dev-1", "user", b"\x00pw", 300, False, "will/t", b"gone", 2, True))
              + bytes(codec.connect("", keepalive=0))
              + bytes(codec.subscribe(5, [("a/+", 1), ("#", 0)]))
              + bytes(codec.unsubscribe(6, ["a/+"]))
              + bytes(codec.publish("up", b"x", 1, False, False, 9))
              + bytes(codec.puback(9)) + codec.PINGREQ_PACKET + codec.DISCONNECT_PACKET)
    for splits in ([], range(1, len(stream))):
        r = PacketReader(server=True)
        cuts = [0] + list(splits) + [len(stream)]
        ps = []
        for k in range(len(cuts) - 1):
            ps += list(r.feed(stream[cuts[k]:cuts[k + 1]]))
        assert [p.type for p in ps] == [codec.CONNECT, codec.CONNECT, codec.SUBSCRIBE, codec.UNSUBSCRIBE,
                                        codec.PUBLISH, codec.PUBACK, codec.PINGREQ, codec.DISCONNECT]
        c = ps[0]
        assert (c.client_id, c.username, c.password, c.keepalive, c.clean) == ("dev-1", "user", b"\x00pw", 300, False)
        assert (c.will_topic, c.will_payload, c.will_qos, c.will_retain) == ("will/t", b"gone", 2, True)
        c = ps[1]
        assert (c.client_id, c.username, c.password, c.keepalive, c.clean, c.will_topic) == ("", None, None, 0, True,
                                                                                             None)
        assert (ps[2].pid, ps[2].filters) == (5, [("a/+", 1), ("#", 0)])
        assert (ps[3].pid, ps[3].filters) == (6, ["a/+"])
        assert (ps[4].topic, ps[4].pid, ps[4].payload) == ("up", 9, b"x")


MALFORMED_TO_CLIENT = [
    ("00 00", "reserved"), ("f0 00", "reserved"), ("10 00", "not allowed"), ("80 00", "not allowed"),
    ("c0 00", "not allowed"), ("e0 00", "not allowed"),
    ("21 02 0000", "flags"), ("20 03 000000", "not 2"), ("20 01 00", "not 2"), ("20 02 0200", "reserved flags"),
    ("20 02 0006", "reserved"), ("20 02 0105", "session present"),
    ("36 05 0001 61 0001", "QoS 3"), ("38 03 0001 61", "DUP"),
    ("30 03 0005 61", "past the end"), ("30 01 00", "past the end"), ("30 00", "past the end"),
    ("30 02 0000", "empty"), ("30 03 0001 2b", "wildcard"), ("30 05 0003 612f23", "wildcard"),
    ("30 03 0001 00", "U+0000"), ("30 03 0001 ff", "UTF-8"), ("30 03 0001 80", "UTF-8"),
    ("30 04 0002 c080", "UTF-8"), ("30 05 0003 eda080", "UTF-8"), ("30 06 0004 f4908080", "UTF-8"),
    ("30 04 0002 e282", "UTF-8"), ("30 05 0003 e08080", "UTF-8"), ("30 06 0004 f0808080", "UTF-8"),
    ("30 04 0002 c328", "UTF-8"), ("30 03 0001 f5", "UTF-8"), ("30 04 0002 c1bf", "UTF-8"),
    ("32 03 0001 61", "past the end"), ("32 04 0001 61 00", "past the end"), ("32 05 0001 61 0000", "packet id 0"),
    ("40 02 0000", "packet id 0"), ("40 03 000100", "not 2"), ("40 01 00", "not 2"), ("41 02 0001", "flags"),
    ("60 02 0001", "flags"), ("52 02 0001", "flags"), ("b0 03 000100", "not 2"), ("b0 02 0000", "packet id 0"),
    ("90 02 0001", "without return codes"), ("90 03 0001 03", "reserved"), ("90 03 0001 81", "reserved"),
    ("90 03 0000 00", "packet id 0"), ("92 03 0001 00", "flags"), ("90 01 00", "past the end"),
    ("d0 01 00", "not 0"), ("d1 00", "flags"),
    ("30 ffffffff01", "longer than 4"), ("90 808001", "exceeds"),
]

MALFORMED_TO_SERVER = [
    ("10 0c 0006 4d5149736470 03 02 003c", "protocol"),  # MQIsdp / 3.1
    ("10 0d 0004 4d515454 03 02 003c 0001 61", "protocol"),  # level 3
    ("10 0d 0004 4d515454 04 03 003c 0001 61", "reserved flag"),
    ("10 0d 0004 4d515454 04 42 003c 0001 61", "password flag"),
    ("10 0d 0004 4d515454 04 1e 003c 0001 61", "will"),  # will QoS 3
    ("10 0d 0004 4d515454 04 0a 003c 0001 61", "will"),  # will QoS without will flag
    ("10 0e 0004 4d515454 04 02 003c 0001 61 00", "after its payload"),
    ("10 0c 0004 4d515454 04 02 003c 0001", "past the end"),
    ("10 07 0004 4d515454 04", "past the end"),
    ("10 0d 0004 4d515454 04 02 003c 0001 ff", "UTF-8"),
    ("80 06 0001 0001 61 00", "flags"), ("82 06 0001 0001 61 03", "QoS"), ("82 06 0001 0001 61 81", "QoS"),
    ("82 02 0001", "without topic filters"), ("82 05 0001 0001 61", "without QoS"),
    ("82 08 0001 0003 612362 00", "wildcard"), ("82 07 0001 0003 612f62", "without QoS"),
    ("82 07 0001 0002 612b 00", "wildcard"), ("82 06 0001 0001 00 00", "U+0000"),
    ("a2 02 0001", "without topic filters"), ("a0 05 0001 0001 61", "flags"),
    ("c0 01 00", "not 0"), ("e0 01 00", "not 0"), ("e1 00", "flags"),
    ("20 02 0000", "not allowed"), ("90 03 0001 00", "not allowed"), ("d0 00", "not allowed"),
]


def test_a_publish_larger_than_the_buffer_is_delivered_cut_and_the_stream_goes_on():
    # its head (topic, packet id, first payload bytes) and real size; the tail is skipped, the next packet decoded
    big = bytes(codec.publish("cmd/x", b'{"id":7,' + b"x" * 5000 + b"}", 1, pid=9))
    nxt = h("d0 00")
    for splits in ([], range(1, len(big) + 2, 97), range(1, len(big) + 2)):
        got, err = decode_all(big + nxt, splits, max_packet=512)
        assert err is None and len(got) == 2 and got[1][0] == codec.PINGRESP, (splits, err)
        t, _, pid, topic, pl = got[0][:5]
        assert (t, pid, topic) == (codec.PUBLISH, 9, "cmd/x")
        assert pl[0] == "cut" and pl[2] == 5009 and pl[1] == (b'{"id":7,' + b"x" * 5000)[:len(pl[1])]
        assert len(pl[1]) == 512 - 3 - 2 - 5 - 2  # packet bound minus fixed header, topic, packet id
    # any other packet type that large is still a protocol error
    got, err = decode_all(h("90 808001"), max_packet=512)
    assert got == [] and "exceeds" in err


def test_malformed_input_raises_only_protocol_error():
    for cases, server in ((MALFORMED_TO_CLIENT, False), (MALFORMED_TO_SERVER, True)):
        for hx, why in cases:
            data = h(hx)
            for splits in ([], range(1, len(data))):
                got, err = decode_all(data, splits, server)
                assert got == [] and err is not None, (hx, got)
                assert why in err, (hx, why, err)


def test_good_packets_before_a_bad_one_are_delivered():
    data = h("d0 00") + h("40 02 0001") + h("30 03 0001 2b") + h("d0 00")
    got, err = decode_all(data)
    assert [g[0] for g in got] == [codec.PINGRESP, codec.PUBACK] and "wildcard" in err
    got2, err2 = decode_all(data, range(1, len(data)))
    assert (got2, err2) == (got, err)


def test_error_is_sticky_until_reset():
    r = PacketReader()
    e1 = expect(MqttProtocolError, lambda: list(r.feed(h("f0 00"))))
    e2 = expect(MqttProtocolError, lambda: list(r.feed(h("d0 00"))))
    assert e1 is e2
    r.reset()
    assert [p.type for p in r.feed(h("d0 00"))] == [codec.PINGRESP]


def test_reader_rejects_non_bytes():
    r = PacketReader()
    expect(MqttProtocolError, lambda: list(r.feed(12345)))


def test_connect_protocol_error_carries_connack_code_1():
    r = PacketReader(server=True)
    e = expect(MqttProtocolError, lambda: list(r.feed(h("10 0d 0004 4d515454 03 02 003c 0001 61"))))
    assert e.code == 1


# ---- RAM: no allocation that grows with the payload, beyond the one copy a decoded payload needs ---------

def allocated(fn):
    """Bytes allocated while fn runs: micropython.mem_total() on MicroPython, tracemalloc's peak on CPython."""
    import gc

    try:
        from micropython import mem_total
    except ImportError:
        mem_total = None
    best = None
    for _ in range(3):  # the least of three: a GC cycle or a cache can only add
        gc.collect()
        if mem_total is not None:
            a = mem_total()
            fn()
            n = mem_total() - a
        else:
            import tracemalloc

            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            fn()
            n = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
        best = n if best is None else min(best, n)
    return best


def test_encode_into_buffer_allocates_nothing_per_payload_byte():
    buf = bytearray(4096)
    small, big = bytes(100), bytes(3000)
    a = allocated(lambda: codec.publish("dev/1/up", small, 1, False, False, 7, buf))
    b = allocated(lambda: codec.publish("dev/1/up", big, 1, False, False, 7, buf))
    assert b - a < 500, (a, b)  # a copy would be >= 2900; CPython's ints above 256 are objects: a few dozen B


def test_decode_copies_the_payload_once():
    def run(size):
        pkt = bytes(codec.publish("dev/1/down", bytes(size), 1, False, False, 7))
        r = PacketReader(4096)

        def dec():
            for p in r.feed(pkt):
                assert len(p.payload) == size
        return allocated(dec)

    a, b = run(100), run(3000)
    # a second copy would add another 2900; CPython's tracemalloc peak also sees what other threads (xdist's
    # I/O thread) allocate meanwhile, hence its wider margin
    import sys
    assert 2900 <= b - a < 2900 + (400 if sys.implementation.name == "micropython" else 1200), (a, b)


# ---- portable fuzz --------------------------------------------------------------------------------------

def _valid_stream(rng, server):
    out = b""
    for _ in range(1 + rng.below(4)):
        k = rng.below(6)
        if k == 0:
            out += bytes(codec.publish("t/%d" % rng.below(100), rng.bytes(rng.below(40)), 0, rng.below(2) == 1))
        elif k == 1:
            out += bytes(codec.publish("é/%d" % rng.below(9), rng.bytes(rng.below(300)), 1, rng.below(2) == 1,
                                       rng.below(2) == 1, 1 + rng.below(65535)))
        elif k == 2:
            out += bytes(codec.puback(1 + rng.below(65535)))
        elif server:
            out += bytes((codec.connect("c%d" % k, "u", b"p", rng.below(999), True, "w", b"x", 1, False),
                          codec.subscribe(1 + rng.below(9), [("a/+", 1), ("#", 0)]), codec.PINGREQ_PACKET)[k - 3])
        else:
            out += bytes((codec.connack(rng.below(6)), codec.suback(1 + rng.below(9), [0, 1, 0x80]),
                          codec.PINGRESP_PACKET)[k - 3])
    return out


def _mutate(rng, data):
    b = bytearray(data)
    k = rng.below(5)
    if k == 0 and b:  # bit flips
        for _ in range(1 + rng.below(3)):
            i = rng.below(len(b))
            b[i] ^= 1 << rng.below(8)
    elif k == 1:  # truncation
        b = b[:rng.below(len(b) + 1)]
    elif k == 2:  # random byte inserted
        i = rng.below(len(b) + 1)
        b = b[:i] + bytes([rng.below(256)]) + b[i:]
    elif k == 3 and b:  # byte removed
        i = rng.below(len(b))
        b = b[:i] + b[i + 1:]
    else:  # random junk
        b = bytearray(rng.bytes(rng.below(48)))
    return bytes(b)


def _fuzz(seed, rounds, server):
    rng = XorShift(seed)
    errors = 0
    for n in range(rounds):
        data = _mutate(rng, _valid_stream(rng, server))
        cuts = sorted({rng.below(len(data) + 1) for _ in range(rng.below(6))})
        try:
            whole = decode_all(data, None, server, 256)
            split = decode_all(data, cuts, server, 256)
            single = decode_all(data, range(1, len(data)), server, 256)
        except MqttProtocolError:
            raise AssertionError("decode_all lets protocol errors through?")
        except Exception as e:  # noqa: BLE001 -- anything else is a bug in the reader: report the input
            raise AssertionError("round %d: %r on input %s" % (n, e, data.hex() if hasattr(data, "hex") else data))
        assert whole == split == single, (n, data, whole, split, single)
        for s in whole[0]:
            if s[0] == codec.PUBLISH:
                assert isinstance(s[3], str) and s[5] in (0, 1, 2)
                assert isinstance(s[4], bytes) or (s[4][0] == "cut" and isinstance(s[4][1], bytes) and s[4][2] > len(s[4][1]))
        errors += whole[1] is not None
    return errors


def test_fuzz_to_client_only_protocol_errors_and_split_independent():
    errors = _fuzz(2024, 4000, False)
    assert 500 < errors < 4000, errors  # the mutations do hit the validation paths, and not only them


def test_fuzz_to_server_only_protocol_errors_and_split_independent():
    errors = _fuzz(99, 3000, True)
    assert 400 < errors < 3000, errors
