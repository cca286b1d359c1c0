"""Property tests and fuzzing of lib/cellmqtt/mqtt_codec.py (CPython, hypothesis).

* round trips: whatever the encoders accept decodes back to the same fields, in any fragmentation;
* cross-checks: our client-side encoders produce the same bytes as paho-mqtt's packet builders (captured
  before they reach a socket); our broker-side encoders the same bytes as amqtt's packet classes; and our
  decoder reads paho's and amqtt's bytes back to the fields they were built from;
* fuzzing: random bytes, truncations and bit flips of valid streams raise nothing but MqttProtocolError, and
  the outcome never depends on how the bytes were cut.
"""

import itertools
import struct

import paho.mqtt.client as paho
import pytest
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.pingresp import PingRespPacket
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.suback import SubackPacket
from amqtt.mqtt.unsuback import UnsubackPacket
from cellmqtt import mqtt_codec as codec
from cellmqtt.mqtt_codec import MqttProtocolError, PacketReader
from cellmqtt.transport import PayloadError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text MQTT allows in strings: no U+0000, no surrogates (1.5.3).
_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
level = st.text(_chars.filter(lambda c: c not in "/+#"), max_size=8)


@st.composite
def topic_names(draw):
    t = "/".join(draw(st.lists(level, min_size=1, max_size=5)))
    if not t:
        t = draw(st.sampled_from(["/", "a", "é"]))
    return t


@st.composite
def topic_filters(draw):
    levels = draw(st.lists(st.one_of(level, st.just("+")), min_size=1, max_size=5))
    if draw(st.booleans()):
        levels.append("#")
    f = "/".join(levels)
    return f or "#"


def cuts_of(draw, n):
    return sorted(set(draw(st.lists(st.integers(0, n), max_size=8))))


def feed(data, cuts=(), server=False, max_packet=1 << 20):
    r = PacketReader(max_packet, server)
    pts = [0] + list(cuts) + [len(data)]
    out = []
    for a, b in itertools.pairwise(pts):
        out += list(r.feed(data[a:b]))
    return out, r


def fields(p):
    return {k: v for k, v in vars(p).items()}


# ---- round trips ----------------------------------------------------------------------------------------

@SETTINGS
@given(topic=topic_names(), payload=st.binary(max_size=3000), qos=st.integers(0, 2), retain=st.booleans(),
       dup=st.booleans(), pid=st.integers(1, 65535), data=st.data())
def test_publish_round_trip_any_fragmentation(topic, payload, qos, retain, dup, pid, data):
    dup = dup and qos > 0
    pkt = bytes(codec.publish(topic, payload, qos, retain, dup, pid if qos else 0))
    for server in (False, True):
        ps, r = feed(pkt, cuts_of(data.draw, len(pkt)), server)
        assert len(ps) == 1 and r.pending() == 0
        p = ps[0]
        assert (p.type, p.topic, p.payload, p.qos, p.retain, p.dup, p.pid) == (
            codec.PUBLISH, topic, payload, qos, retain, dup, pid if qos else 0)


@SETTINGS
@given(cid=st.text(_chars, max_size=30), user=st.one_of(st.none(), st.text(_chars, max_size=30)),
       pw=st.binary(max_size=40), keepalive=st.integers(0, 65535), clean=st.booleans(),
       will=st.one_of(st.none(), st.tuples(topic_names(), st.binary(max_size=50), st.integers(0, 2), st.booleans())),
       data=st.data())
def test_connect_round_trip(cid, user, pw, keepalive, clean, will, data):
    clean = clean or not cid
    password = pw if user is not None else None
    wt, wp, wq, wr = will or (None, b"", 0, False)
    pkt = bytes(codec.connect(cid, user, password, keepalive, clean, wt, wp, wq, wr))
    (p,), _ = feed(pkt, cuts_of(data.draw, len(pkt)), server=True)
    assert (p.client_id, p.username, p.password, p.keepalive, p.clean) == (cid, user, password, keepalive, clean)
    if will:
        assert (p.will_topic, p.will_payload, p.will_qos, p.will_retain) == (wt, wp, wq, wr)
    else:
        assert (p.will_topic, p.will_qos, p.will_retain) == (None, 0, False)


@SETTINGS
@given(pid=st.integers(1, 65535), filters=st.lists(st.tuples(topic_filters(), st.integers(0, 2)), min_size=1,
                                                     max_size=6), data=st.data())
def test_subscribe_unsubscribe_round_trip(pid, filters, data):
    pkt = bytes(codec.subscribe(pid, filters)) + bytes(codec.unsubscribe(pid, [f for f, _ in filters]))
    (s, u), _ = feed(pkt, cuts_of(data.draw, len(pkt)), server=True)
    assert (s.type, s.pid, s.filters) == (codec.SUBSCRIBE, pid, filters)
    assert (u.type, u.pid, u.filters) == (codec.UNSUBSCRIBE, pid, [f for f, _ in filters])


@SETTINGS
@given(rl=st.integers(0, 268435455))
def test_remaining_length_matches_spec_algorithm(rl):
    # The encoding algorithm of 2.2.3, written out independently.
    out, x = bytearray(), rl
    while True:
        d, x = x % 128, x // 128
        out.append(d | (0x80 if x > 0 else 0))
        if x == 0:
            break
    assert codec.encode_length(rl) == bytes(out)
    # and the reader parses it back (reported in its too-large message when it exceeds the limit)
    r = PacketReader(16)
    hdr = b"\x90" + bytes(out)  # SUBACK: a PUBLISH that large would be delivered cut, not refused
    if rl == 0:
        assert [p.type for p in r.feed(b"\xd0" + bytes(out))] == [codec.PINGRESP]
    elif rl + len(hdr) <= 16:
        assert list(r.feed(hdr)) == [] and r.pending() == len(hdr)
    else:
        with pytest.raises(MqttProtocolError, match=r"\(remaining length %d\)" % rl):
            list(r.feed(hdr))


# ---- cross-checks with paho-mqtt (client side) and amqtt (broker side) ---------------------------------

class _NoSocket:
    def close(self):
        pass


def paho_capture(cid="", clean=True):
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv311, clean_session=clean)
    out = []
    # paho builds each packet completely, then queues it for its socket: take it from there.
    c._packet_queue = lambda command, packet, mid, qos, info=None: out.append(bytes(packet)) or 0
    c._sock = _NoSocket()  # paho only checks that a socket exists (and closes it when collected)
    return c, out


@SETTINGS
@given(topic=topic_names(), payload=st.binary(max_size=500), qos=st.integers(0, 2), retain=st.booleans(),
       dup=st.booleans(), pid=st.integers(1, 65535))
def test_publish_bytes_equal_paho(topic, payload, qos, retain, dup, pid):
    dup = dup and qos > 0
    c, out = paho_capture()
    c._send_publish(pid if qos else 0, topic.encode(), payload, qos, retain, dup)
    assert bytes(codec.publish(topic, payload, qos, retain, dup, pid if qos else 0)) == out[0]


@SETTINGS
@given(cid=st.text(_chars, min_size=1, max_size=30), user=st.one_of(st.none(), st.text(_chars, max_size=20)),
       pw=st.one_of(st.none(), st.binary(max_size=20)), keepalive=st.integers(0, 65535), clean=st.booleans(),
       will=st.one_of(st.none(), st.tuples(topic_names(), st.binary(max_size=30), st.integers(0, 2), st.booleans())))
def test_connect_bytes_equal_paho_and_decode(cid, user, pw, keepalive, clean, will):
    if user is None:
        pw = None
    c, out = paho_capture(cid, clean)
    if user is not None:
        c.username_pw_set(user, pw)
    if will:
        c.will_set(will[0], will[1], will[2], will[3])
    c._send_connect(keepalive)
    wt, wp, wq, wr = will or (None, b"", 0, False)
    ours = bytes(codec.connect(cid, user, pw, keepalive, clean, wt, wp, wq, wr))
    assert ours == out[0]
    (p,), _ = feed(out[0], server=True)
    assert (p.client_id, p.username, p.password, p.keepalive, p.clean) == (cid, user, pw, keepalive, clean)


@SETTINGS
@given(pid=st.integers(1, 65535), filters=st.lists(st.tuples(topic_filters(), st.integers(0, 2)), min_size=1,
                                                     max_size=5))
def test_subscribe_unsubscribe_bytes_equal_paho(pid, filters):
    c, out = paho_capture()
    c._last_mid = pid - 1  # paho numbers its own packets
    c._send_subscribe(False, [(f.encode(), q) for f, q in filters])
    c._last_mid = pid - 1
    c._send_unsubscribe(False, [f.encode() for f, _ in filters])
    assert bytes(codec.subscribe(pid, filters)) == out[0]
    assert bytes(codec.unsubscribe(pid, [f for f, _ in filters])) == out[1]


def test_simple_packets_equal_paho():
    c, out = paho_capture()
    c._send_pingreq()
    c._send_puback(0x1234)
    c._send_disconnect()
    assert out == [codec.PINGREQ_PACKET, bytes(codec.puback(0x1234)), codec.DISCONNECT_PACKET]


@SETTINGS
@given(topic=topic_names(), payload=st.binary(max_size=500), qos=st.integers(0, 2), retain=st.booleans(),
       dup=st.booleans(), pid=st.integers(1, 65535), data=st.data())
def test_amqtt_publish_decodes_and_equals_ours(topic, payload, qos, retain, dup, pid, data):
    dup = dup and qos > 0
    theirs = bytes(PublishPacket.build(topic, payload, pid if qos else None, dup, qos, retain).to_bytes())
    assert theirs == bytes(codec.publish(topic, payload, qos, retain, dup, pid if qos else 0))
    (p,), _ = feed(theirs, cuts_of(data.draw, len(theirs)))
    assert (p.topic, p.payload, p.qos, p.retain, p.dup, p.pid) == (topic, payload, qos, retain, dup,
                                                                   pid if qos else 0)


@SETTINGS
@given(pid=st.integers(1, 65535), codes=st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=8),
       code=st.integers(0, 5), sp=st.booleans())
def test_amqtt_broker_packets_decode_and_equal_ours(pid, codes, code, sp):
    sp = sp and code == 0
    stream = (bytes(ConnackPacket.build(1 if sp else 0, code).to_bytes())
              + bytes(SubackPacket.build(pid, codes).to_bytes())
              + bytes(UnsubackPacket.build(pid).to_bytes())
              + bytes(PubackPacket.build(pid).to_bytes())
              + bytes(PingRespPacket.build().to_bytes()))
    ours = (bytes(codec.connack(code, sp)) + bytes(codec.suback(pid, codes)) + bytes(codec.ack(codec.UNSUBACK, pid))
            + bytes(codec.puback(pid)) + codec.PINGRESP_PACKET)
    assert stream == ours
    ps, _ = feed(stream, range(1, len(stream)))
    assert [p.type for p in ps] == [codec.CONNACK, codec.SUBACK, codec.UNSUBACK, codec.PUBACK, codec.PINGRESP]
    assert (ps[0].code, ps[0].session_present) == (code, sp)
    assert (ps[1].pid, list(ps[1].codes)) == (pid, codes)
    assert ps[2].pid == ps[3].pid == pid


# ---- fuzzing --------------------------------------------------------------------------------------------

def outcome(data, cuts, server, max_packet=512):
    r = PacketReader(max_packet, server)
    pts = [0] + list(cuts) + [len(data)]
    got = []
    try:
        for a, b in itertools.pairwise(pts):
            for p in r.feed(data[a:b]):
                got.append(fields(p))
    except MqttProtocolError as e:  # the only exception allowed
        return got, str(e)
    return got, None


@settings(max_examples=1500, deadline=None)
@given(data=st.binary(max_size=600), server=st.booleans(), d=st.data())
def test_random_bytes_only_protocol_errors(data, server, d):
    whole = outcome(data, (), server)
    assert outcome(data, cuts_of(d.draw, len(data)), server) == whole
    assert outcome(data, range(1, len(data)), server) == whole


def valid_client_stream():
    return st.lists(st.one_of(
        st.builds(lambda t, p, q, r, i: bytes(codec.publish(t, p, q, r, False, i if q else 0)),
                  topic_names(), st.binary(max_size=200), st.integers(0, 2), st.booleans(), st.integers(1, 65535)),
        st.builds(lambda c, s: bytes(codec.connack(c, s and c == 0)), st.integers(0, 5), st.booleans()),
        st.builds(lambda i, c: bytes(codec.suback(i, c)), st.integers(1, 65535),
                  st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=4)),
        st.builds(lambda t, i: bytes(codec.ack(t, i)),
                  st.sampled_from([codec.PUBACK, codec.PUBREC, codec.PUBREL, codec.PUBCOMP, codec.UNSUBACK]),
                  st.integers(1, 65535)),
        st.just(codec.PINGRESP_PACKET)), min_size=1, max_size=6).map(b"".join)


@settings(max_examples=800, deadline=None)
@given(stream=valid_client_stream(), d=st.data())
def test_valid_stream_truncated_never_errors(stream, d):
    cut = d.draw(st.integers(0, len(stream)))
    got, err = outcome(stream[:cut], cuts_of(d.draw, cut), False, 4096)
    assert err is None
    full, err = outcome(stream, (), False, 4096)
    assert err is None and got == full[:len(got)]


@settings(max_examples=1000, deadline=None)
@given(stream=valid_client_stream(), d=st.data())
def test_mutated_stream_only_protocol_errors(stream, d):
    b = bytearray(stream)
    for _ in range(d.draw(st.integers(1, 4))):
        op = d.draw(st.integers(0, 3))
        if op == 0 and b:
            i = d.draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << d.draw(st.integers(0, 7))
        elif op == 1:
            b = b[:d.draw(st.integers(0, len(b)))]
        elif op == 2:
            i = d.draw(st.integers(0, len(b)))
            b[i:i] = bytes([d.draw(st.integers(0, 255))])
        elif b:
            i = d.draw(st.integers(0, len(b) - 1))
            del b[i]
    data = bytes(b)
    whole = outcome(data, (), False)
    assert outcome(data, cuts_of(d.draw, len(data)), False) == whole


@settings(max_examples=300, deadline=None)
@given(topic=st.one_of(st.text(max_size=20), st.binary(max_size=20)), payload=st.one_of(st.binary(max_size=20),
                                                                                        st.text(max_size=5)),
       qos=st.integers(-1, 3), pid=st.integers(-1, 70000))
def test_encoder_raises_only_payload_error(topic, payload, qos, pid):
    # Arbitrary arguments (lone surrogates, wildcards, NUL, bad QoS/pid) give PayloadError or a packet that
    # decodes to what was asked.
    try:
        pkt = bytes(codec.publish(topic, payload, qos, False, False, pid))
    except PayloadError:
        return
    (p,), _ = feed(pkt)
    assert p.pid == pid and p.qos == qos
    assert p.topic == (topic if isinstance(topic, str) else topic.decode("utf-8"))
    assert p.payload == (payload.encode() if isinstance(payload, str) else payload)


def test_struct_written_vector_matches():
    # One more independent construction: CONNECT built with struct from the spec's field layout.
    body = struct.pack("!H4sBBH", 4, b"MQTT", 4, 0xC2, 30) + struct.pack("!H", 3) + b"dev" + \
        struct.pack("!H", 4) + b"user" + struct.pack("!H", 2) + b"pw"
    assert bytes(codec.connect("dev", "user", "pw", 30)) == bytes([0x10, len(body)]) + body
