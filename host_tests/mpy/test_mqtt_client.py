# MqttClient against a scripted broker behind an in-memory ModemSocket (the layer below the client), on both
# MicroPython and CPython: connect/refusals/timeouts, subscribe, publish QoS 0/1, PUBACK matching, in-flight
# limit, keep-alive, incoming QoS 1, fragmentation, link loss and disconnect.
import asyncio

from cellmqtt import mqtt_codec as codec
from cellmqtt.compat import ticks_diff, ticks_ms
from cellmqtt.mqtt_client import MqttClient
from cellmqtt.mqtt_codec import MqttProtocolError, PacketReader
from cellmqtt.transport import (
    ConnectRefused,
    DnsError,
    LinkLost,
    MqttError,
    MqttTimeout,
    NetworkError,
    PayloadError,
    SubscribeRefused,
    Truncated,
)

TIMEOUT = 60


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


class FakeBroker:
    """A ModemSocket whose far end is a scripted broker. It decodes what the client sends with the codec's
    broker-side reader and answers through on_data, from its own task (like a driver's reader), in
    fragments chosen by `split`: None = whole answers, int k = k-byte chunks, "random" = random cuts."""

    max_send = 1024

    def __init__(self, connack=0, split=None, auto_puback=True, auto_pingresp=True, suback=None):
        self.connack = connack  # None: never answer CONNECT; "ping": answer it with a PINGRESP
        self.split = split
        self.auto_puback = auto_puback
        self.auto_pingresp = auto_pingresp
        self.suback = suback  # None: grant what was asked; "none": never answer; list: these codes
        self.after_connack = b""  # bytes sent in the same chunk right behind the CONNACK
        # Like a BC660K-GL in data mode: a send takes send_ms, and bytes arriving meanwhile are dropped.
        self.lossy = False
        self.send_ms = 0
        self.rtt_ms = 0  # answers leave the broker this long after the request arrived
        self.sending = False
        self.dropped = 0
        self.rx = PacketReader(65536, server=True)
        self.got = []  # every packet the client sent, decoded
        self.times = []  # ticks_ms when each arrived
        self.sends = 0
        self.opened = []
        self.closes = 0
        self.is_open = False
        self.open_error = None
        self.send_error = None
        self.held = []  # QoS 1 PUBLISH packet ids not acknowledged yet (auto_puback False)
        self.rng = XorShift(12345)
        self._data_cb = None
        self._close_cb = None
        self._out = bytearray()
        self._out_ev = asyncio.Event()
        self._pump = None

    # -- ModemSocket --
    def on_data(self, cb):
        self._data_cb = cb

    def on_close(self, cb):
        self._close_cb = cb

    async def open(self, host, port):
        self.opened.append((host, port))
        await asyncio.sleep(0)
        if self.open_error is not None:
            raise self.open_error
        self.is_open = True
        self.rx.reset()
        self._out = bytearray()
        if self._pump is None:
            self._pump = asyncio.create_task(self._pump_loop())

    async def send(self, data, secret=False):
        if not self.is_open:
            raise NetworkError("socket is not open")
        if self.send_error is not None:
            raise self.send_error
        self.sends += 1
        data = bytes(data)
        self.sending = True
        try:
            await asyncio.sleep(self.send_ms / 1000)  # a real send yields while the modem takes the bytes
        finally:
            self.sending = False
        for p in self.rx.feed(data):
            self.got.append(p)
            self.times.append(ticks_ms())
            self._answer(p)

    async def close(self):
        self.closes += 1
        self.is_open = False

    # -- the scripted broker --
    def _answer(self, p):
        t = p.type
        if t == codec.CONNECT:
            if self.connack == "ping":
                self.reply(codec.PINGRESP_PACKET)
            elif self.connack is not None:
                self.reply(bytes(codec.connack(self.connack)) + self.after_connack)
        elif t == codec.SUBSCRIBE:
            if self.suback == "none":
                return
            codes = self.suback if self.suback is not None else [q for _, q in p.filters]
            self.reply(codec.suback(p.pid, codes))
        elif t == codec.UNSUBSCRIBE:
            self.reply(codec.ack(codec.UNSUBACK, p.pid))
        elif t == codec.PUBLISH and p.qos == 1:
            if self.auto_puback:
                self.reply(codec.puback(p.pid))
            else:
                self.held.append(p.pid)
        elif t == codec.PINGREQ and self.auto_pingresp:
            self.reply(codec.PINGRESP_PACKET)

    def reply(self, data):
        """Queue bytes for the client; one pump keeps the stream in order."""
        self._out += data
        self._out_ev.set()

    def release(self, pid):
        self.held.remove(pid)
        self.reply(codec.puback(pid))

    def peer_close(self, err=None):
        self.is_open = False
        self._close_cb(err or LinkLost("closed by peer"))

    def sent(self, ptype):
        return [p for p in self.got if p.type == ptype]

    async def _pump_loop(self):
        while True:
            await self._out_ev.wait()
            self._out_ev.clear()
            if self.rtt_ms:
                await asyncio.sleep(self.rtt_ms / 1000)
            while self._out:
                n = len(self._out)
                if self.split == "random":
                    n = 1 + self.rng.below(n)
                elif self.split:
                    n = min(n, self.split)
                chunk = bytes(self._out[:n])
                self._out = self._out[n:]
                if self.lossy and self.sending:
                    self.dropped += len(chunk)
                elif self.is_open:
                    self._data_cb(chunk)
                await asyncio.sleep(0)


async def settle(n=20):
    for _ in range(n):
        await asyncio.sleep(0)


async def until(cond, ms=2000):
    t0 = ticks_ms()
    while not cond():
        assert ticks_diff(ticks_ms(), t0) < ms, "condition not met within %d ms" % ms
        await asyncio.sleep(0.005)


async def up(broker=None, keepalive=0, **kw):
    b = broker or FakeBroker()
    c = MqttClient(b, **kw)
    await asyncio.wait_for(c.connect("broker.example", 8883, "dev-1", "user", "s3cret-pw", keepalive), 5)
    return b, c


async def raises(exc, aw, ms=3000):
    try:
        await asyncio.wait_for(aw, ms / 1000)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)


# ---- connect --------------------------------------------------------------------------------------------

async def test_connect_sends_connect_and_session_is_up():
    b = FakeBroker()
    c = MqttClient(b)
    assert not c.is_connected()
    await asyncio.wait_for(c.connect("broker.example", 8883, "dev-1", "user", "s3cret-pw", 90, False), 5)
    assert c.is_connected()
    assert b.opened == [("broker.example", 8883)]
    p = b.got[0]
    assert p.type == codec.CONNECT
    assert (p.client_id, p.username, p.password, p.keepalive, p.clean) == ("dev-1", "user", b"s3cret-pw", 90, False)
    assert p.will_topic is None
    assert b"s3cret-pw" not in bytes(c._tx), "the password stayed in the tx buffer"
    await c.disconnect()


async def test_connect_with_will():
    b = FakeBroker()
    c = MqttClient(b)
    await c.connect("h", 1, "d", will=("dev/d/status", b"offline", 1, True))
    p = b.got[0]
    assert (p.will_topic, p.will_payload, p.will_qos, p.will_retain) == ("dev/d/status", b"offline", 1, True)
    assert p.username is None and p.password is None
    await c.disconnect()


async def test_connect_refused_with_each_connack_code():
    for code in (1, 2, 3, 4, 5):
        b = FakeBroker(connack=code)
        c = MqttClient(b)
        e = await raises(ConnectRefused, c.connect("h", 8883, "dev", "user", "s3cret-pw"))
        assert e.code == code, (e.code, code)
        assert e.credentials() == (code in (4, 5))
        assert "s3cret" not in str(e)
        assert not c.is_connected()
        assert b.closes == 1


async def test_connack_timeout_closes_socket_and_client_can_retry():
    b = FakeBroker(connack=None)
    c = MqttClient(b, connect_timeout=0.2)
    t0 = ticks_ms()
    await raises(MqttTimeout, c.connect("h", 1, "dev"))
    dt = ticks_diff(ticks_ms(), t0)
    assert 150 <= dt < 1500, dt
    assert b.closes == 1 and not c.is_connected()
    b.connack = 0
    await asyncio.wait_for(c.connect("h", 1, "dev"), 5)
    assert c.is_connected()
    await c.disconnect()


async def test_socket_open_error_propagates_unchanged():
    b = FakeBroker()
    b.open_error = DnsError("cannot resolve broker.example", 565)
    c = MqttClient(b)
    e = await raises(DnsError, c.connect("broker.example", 8883, "dev"))
    assert e.code == 565
    assert not c.is_connected()
    b.open_error = None
    await c.connect("broker.example", 8883, "dev")
    assert c.is_connected()
    await c.disconnect()


async def test_bad_connect_arguments_fail_before_any_network():
    b = FakeBroker()
    c = MqttClient(b)
    await raises(PayloadError, c.connect("h", 1, "dev", None, "pw"))  # password without user (MQTT-3.1.2-22)
    await raises(PayloadError, c.connect("h", 1, "x" * 65536))
    await raises(PayloadError, c.connect("h", 1, "", clean=False))
    await raises(PayloadError, c.connect("h", 1, "dev", keepalive=70000))
    await raises(PayloadError, c.connect("h", 1, "dev", will=("bad/#", b"", 0, False)))
    e = await raises(PayloadError, c.connect("h", 1, "dev", "user", "p" * 70000))
    assert "ppp" not in str(e)
    assert b.opened == []
    assert not c.is_connected()


async def test_messages_right_behind_the_connack_are_delivered():
    # A persistent session's queue or a cloud's push (EnOS activation) can share a chunk with the CONNACK.
    b = FakeBroker()
    b.after_connack = bytes(codec.publish("/ext/session/pk/dk/thing/activate/info", b"{}", 1, pid=9)) + \
        bytes(codec.publish("q0", b"x", 0))
    c = MqttClient(b)
    seen = []
    c.on_message(lambda t, p: seen.append(t))
    await asyncio.wait_for(c.connect("h", 1, "dev"), 5)
    assert c.is_connected()
    await until(lambda: len(b.sent(codec.PUBACK)) == 1)
    assert seen == ["/ext/session/pk/dk/thing/activate/info", "q0"]
    assert b.sent(codec.PUBACK)[0].pid == 9
    await c.disconnect()


async def test_session_ended_right_after_connack_fails_connect():
    b = FakeBroker()
    b.after_connack = b"\xf0\x00"  # garbage behind an accepting CONNACK
    c = MqttClient(b)
    await raises(LinkLost, c.connect("h", 1, "dev"))
    assert not c.is_connected()
    assert isinstance(await asyncio.wait_for(c.wait_lost(), 1), MqttProtocolError)


async def test_first_packet_other_than_connack_is_a_protocol_error():
    b = FakeBroker(connack="ping")
    c = MqttClient(b)
    await raises(MqttProtocolError, c.connect("h", 1, "dev"))
    assert not c.is_connected() and b.closes == 1


async def test_connect_twice_is_refused():
    b, c = await up()
    await raises(MqttError, c.connect("h", 1, "dev"))
    assert c.is_connected() and len(b.opened) == 1
    await c.disconnect()


# ---- subscribe / unsubscribe ----------------------------------------------------------------------------

async def test_subscribe_returns_granted_qos():
    b, c = await up()
    assert await c.subscribe("cmd/+/req", 1) == 1
    assert await c.subscribe([("a/#", 0), ("b", 1)]) == [0, 1]
    subs = b.sent(codec.SUBSCRIBE)
    assert subs[0].filters == [("cmd/+/req", 1)]
    assert subs[1].filters == [("a/#", 0), ("b", 1)]
    assert subs[0].pid != subs[1].pid
    b.suback = [0]  # downgraded by the broker: allowed
    assert await c.subscribe("c", 1) == 0
    await c.disconnect()


async def test_subscribe_refused_raises_and_session_stays_up():
    b, c = await up(FakeBroker(suback=[0x80]))
    e = await raises(SubscribeRefused, c.subscribe("forbidden/topic", 1))
    assert e.code == 0x80 and "forbidden/topic" in str(e)
    assert c.is_connected()
    b.suback = [1, 0x80]
    await raises(SubscribeRefused, c.subscribe([("ok", 1), ("no", 1)]))
    await c.disconnect()


async def test_suback_granting_more_than_asked_is_a_protocol_error():
    _, c = await up(FakeBroker(suback=[1]))
    await raises(MqttProtocolError, c.subscribe("a", 0))
    assert isinstance(await c.wait_lost(), MqttProtocolError)


async def test_suback_with_wrong_code_count_is_a_protocol_error():
    _, c = await up(FakeBroker(suback=[0, 0]))
    await raises(MqttProtocolError, c.subscribe("a", 0))
    assert not c.is_connected()


async def test_bad_filters_and_qos2_rejected_before_sending():
    b, c = await up()
    for f in ("a/#/b", "a+", "", "a/\x00"):
        await raises(PayloadError, c.subscribe(f, 0))
    await raises(PayloadError, c.subscribe("a", 2))
    assert b.sent(codec.SUBSCRIBE) == []
    assert c.is_connected()
    await c.disconnect()


async def test_suback_timeout_breaks_session():
    b, c = await up(FakeBroker(suback="none"), ack_timeout=0.2)
    await raises(MqttTimeout, c.subscribe("a", 1))
    reason = await asyncio.wait_for(c.wait_lost(), 2)
    assert isinstance(reason, LinkLost) and "SUBACK" in str(reason)
    await settle()
    assert b.closes == 1


async def test_unsubscribe_waits_for_unsuback():
    b, c = await up()
    await c.unsubscribe("a/b")
    await c.unsubscribe(["c", "d/#"])
    u = b.sent(codec.UNSUBSCRIBE)
    assert [p.filters for p in u] == [["a/b"], ["c", "d/#"]]
    await c.disconnect()


# ---- publish --------------------------------------------------------------------------------------------

async def test_publish_qos0_and_qos1_on_the_wire():
    b, c = await up()
    payload = b"\x00\x1a\x1b\r\n\"x\",\xff"
    await c.publish("dev/up", payload, 0)
    await c.publish("dev/up", payload, 1, retain=True)
    await c.publish("dev/up", "text é", 1)
    pubs = b.sent(codec.PUBLISH)
    assert [(p.topic, p.payload, p.qos, p.retain, p.dup) for p in pubs] == [
        ("dev/up", payload, 0, False, False), ("dev/up", payload, 1, True, False),
        ("dev/up", "text é".encode(), 1, False, False)]
    assert pubs[0].pid == 0 and pubs[1].pid != 0 and pubs[2].pid not in (0, pubs[1].pid)
    await c.disconnect()


async def test_puback_matched_by_packet_id_out_of_order():
    b, c = await up(FakeBroker(auto_puback=False))
    done = []

    async def pub(i):
        await c.publish("t", b"%d" % i, 1)
        done.append(i)

    tasks = [asyncio.create_task(pub(i)) for i in range(3)]
    await until(lambda: len(b.held) == 3)
    pids = list(b.held)
    assert len(set(pids)) == 3 and 0 not in pids
    payload_of = {p.pid: int(p.payload) for p in b.sent(codec.PUBLISH)}
    for pid in reversed(pids):
        b.release(pid)
        await until(lambda: len(done) == 3 - len(b.held))
        assert done[-1] == payload_of[pid], (done, pid)
    for t in tasks:
        await t
    assert c.is_connected()
    await c.disconnect()


async def test_inflight_limit_makes_further_publishers_wait():
    b, c = await up(FakeBroker(auto_puback=False), max_inflight=5)
    tasks = [asyncio.create_task(c.publish("t", b"%d" % i, 1)) for i in range(8)]
    await until(lambda: len(b.held) == 5)
    await settle(50)
    assert len(b.sent(codec.PUBLISH)) == 5, "more than max_inflight PUBLISH in flight"
    b.release(b.held[0])
    await until(lambda: len(b.sent(codec.PUBLISH)) == 6)
    await settle(50)
    assert len(b.held) == 5
    b.auto_puback = True
    for pid in list(b.held):
        b.release(pid)
    await until(lambda: all(t.done() for t in tasks))
    for t in tasks:
        await t
    assert len(b.sent(codec.PUBLISH)) == 8
    await c.disconnect()


async def test_packet_ids_wrap_skip_zero_and_ids_in_flight():
    b, c = await up(FakeBroker(auto_puback=False))
    c._pid = 65533  # internal counter, set to reach the wrap quickly
    held = asyncio.create_task(c.publish("t", b"a", 1))  # gets 65534 and stays in flight
    await until(lambda: len(b.held) == 1)
    assert b.held == [65534]
    b.auto_puback = True
    await c.publish("t", b"b", 1)  # 65535
    await c.publish("t", b"c", 1)  # wraps to 1, never 0
    c._pid = 65533
    await c.publish("t", b"d", 1)  # 65534 is still in flight: skipped
    assert [p.pid for p in b.sent(codec.PUBLISH)] == [65534, 65535, 1, 65535]
    b.release(65534)
    await asyncio.wait_for(held, 2)
    await c.disconnect()


async def test_unexpected_puback_is_a_protocol_error():
    b, c = await up()
    b.reply(codec.puback(77))
    reason = await asyncio.wait_for(c.wait_lost(), 2)
    assert isinstance(reason, MqttProtocolError) and "77" in str(reason)
    assert not c.is_connected()


async def test_ack_of_the_wrong_kind_is_a_protocol_error():
    b, c = await up(FakeBroker(auto_puback=False))
    pub = asyncio.create_task(c.publish("t", b"x", 1))
    await until(lambda: len(b.held) == 1)
    b.reply(codec.suback(b.held[0], [1]))  # a SUBACK for the packet id of a PUBLISH
    await raises(LinkLost, pub)
    reason = await asyncio.wait_for(c.wait_lost(), 1)
    assert isinstance(reason, MqttProtocolError) and str(b.held[0]) in str(reason)


async def test_puback_timeout_raises_and_breaks_session():
    b, c = await up(FakeBroker(auto_puback=False), ack_timeout=0.3)
    t0 = ticks_ms()
    first = asyncio.create_task(c.publish("t", b"1", 1))
    await until(lambda: len(b.held) == 1)
    other = asyncio.create_task(c.publish("t", b"2", 1))  # its own timeout would come later
    await until(lambda: len(b.held) == 2)
    await raises(MqttTimeout, first)
    assert ticks_diff(ticks_ms(), t0) < 1500
    e = await raises(LinkLost, other)  # failed by the first one's timeout, not after its own
    assert "PUBACK" in str(e)
    reason = await asyncio.wait_for(c.wait_lost(), 1)
    assert isinstance(reason, LinkLost) and "PUBACK" in str(reason)
    await settle()
    assert b.closes == 1
    await raises(LinkLost, c.publish("t", b"3", 0))


async def test_bad_topic_and_payload_rejected_session_intact():
    b, c = await up(max_packet=1024)
    for t in ("a/+", "a/#", "", "x\x00y"):
        await raises(PayloadError, c.publish(t, b"p", 1))
    await raises(PayloadError, c.publish("t", b"x" * (c.max_payload + 1), 0))
    await raises(PayloadError, c.publish("t", 12345, 0))
    await raises(PayloadError, c.publish("t", b"p", 2))
    await c.publish("t" * 256, b"x" * c.max_payload, 1)  # the advertised limit holds with the longest topic
    await raises(PayloadError, c.publish("t" * 300, b"x" * c.max_payload, 1))
    assert len(b.sent(codec.PUBLISH)) == 1
    assert c.is_connected()
    await c.disconnect()


async def test_publish_when_not_connected_raises_link_lost():
    c = MqttClient(FakeBroker())
    await raises(LinkLost, c.publish("t", b"p", 0))
    await raises(LinkLost, c.publish("t", b"p", 1))
    await raises(LinkLost, c.subscribe("t", 1))


async def test_send_failure_ends_session_with_that_error():
    b, c = await up()
    b.send_error = NetworkError("QSSLSEND failed", -2)
    e = await raises(NetworkError, c.publish("t", b"p", 1))
    assert e.code == -2
    assert await asyncio.wait_for(c.wait_lost(), 1) is e
    assert not c.is_connected()


# ---- half duplex (modems that drop received data while sending) -----------------------------------------

def lossy_broker():
    b = FakeBroker()
    b.lossy = True
    b.send_ms = 60
    b.rtt_ms = 20
    return b


async def test_lossy_socket_loses_acks_without_half_duplex():
    # The control for the next test: the scripted loss is real, so half duplex has something to prevent.
    b, c = await up(lossy_broker(), ack_timeout=0.5, half_duplex=False)
    tasks = [asyncio.create_task(c.publish("t", b"%d" % i, 1)) for i in range(3)]
    failed = 0
    for t in tasks:
        try:
            await t
        except MqttError:
            failed += 1
    assert failed and b.dropped, (failed, b.dropped)


async def test_half_duplex_waits_for_each_answer_before_sending_again():
    b = lossy_broker()
    b.half_duplex = True  # the socket asks for it (MqttClient reads the attribute)
    b, c = await up(b, keepalive=1, ack_timeout=2)
    seen = []
    c.on_message(lambda t, p: seen.append(p))
    tasks = [asyncio.create_task(c.publish("t", b"%d" % i, 1)) for i in range(3)]
    tasks.append(asyncio.create_task(c.subscribe("s", 1)))
    for t in tasks:
        await asyncio.wait_for(t, 5)
    assert b.dropped == 0
    # Ping while idle: the PINGRESP must not be lost to a send either.
    await asyncio.sleep(1.2)
    assert len(b.sent(codec.PINGREQ)) >= 1 and c.is_connected() and b.dropped == 0
    await c.disconnect()


async def test_half_duplex_holds_sends_until_pingresp():
    b = lossy_broker()
    b.send_ms = 400  # a send that spans the PINGRESP's arrival would lose it
    b.rtt_ms = 200
    b, c = await up(b, keepalive=1, half_duplex=True)
    await until(lambda: len(b.sent(codec.PINGREQ)) == 1, 3000)
    await c.publish("t", b"right behind the ping", 0)  # must wait for the PINGRESP
    await asyncio.sleep(1.0)  # past the ping timeout (1 s after the PINGREQ)
    assert b.dropped == 0 and c.is_connected()
    await c.disconnect()


# ---- keep-alive -----------------------------------------------------------------------------------------

async def test_pingreq_after_three_quarters_of_keepalive_when_idle():
    b, c = await up(keepalive=2)
    t0 = ticks_ms()
    await until(lambda: len(b.sent(codec.PINGREQ)) >= 1, 4000)
    first = b.times[b.got.index(b.sent(codec.PINGREQ)[0])]
    dt = ticks_diff(first, t0)
    assert 1350 <= dt <= 1850, "first PINGREQ after %d ms, want ~1500 (3/4 of 2 s)" % dt
    await settle()
    assert c.is_connected()  # the PINGRESP was taken as the answer
    await asyncio.sleep(0.3)
    assert c.is_connected() and len(b.sent(codec.PINGREQ)) == 1, "pinged again right after the answer"
    await c.disconnect()


async def test_traffic_postpones_the_ping():
    b, c = await up(keepalive=1)
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < 1600:
        await c.publish("t", b"x", 1)  # sends and receives every 200 ms
        await asyncio.sleep(0.2)
    assert b.sent(codec.PINGREQ) == []
    await c.disconnect()


async def test_missing_pingresp_means_link_lost():
    b, c = await up(FakeBroker(auto_pingresp=False), keepalive=1, ping_timeout=0.4)
    t0 = ticks_ms()
    reason = await asyncio.wait_for(c.wait_lost(), 3)
    dt = ticks_diff(ticks_ms(), t0)
    assert isinstance(reason, LinkLost) and "PINGREQ" in str(reason)
    assert 1000 <= dt <= 2000, dt  # 750 ms idle + 400 ms without an answer
    await settle()
    assert b.closes == 1 and len(b.sent(codec.PINGREQ)) == 1


async def test_keepalive_zero_never_pings():
    b, c = await up(keepalive=0)
    await asyncio.sleep(0.3)
    assert b.sent(codec.PINGREQ) == []
    await c.disconnect()


# ---- incoming messages ----------------------------------------------------------------------------------

async def test_incoming_qos1_delivered_then_acked_and_qos0_not_acked():
    b, c = await up()
    seen = []
    c.on_message(lambda t, p: seen.append((t, p, len(b.sent(codec.PUBACK)))))
    b.reply(codec.publish("cmd/1", b"\x00\x1a\x1b{}", 1, pid=300))
    b.reply(codec.publish("cmd/2", b"zero", 0))
    await until(lambda: len(seen) == 2 and len(b.sent(codec.PUBACK)) == 1)
    assert seen == [("cmd/1", b"\x00\x1a\x1b{}", 0), ("cmd/2", b"zero", 0)]  # acked only after the callback
    assert b.sent(codec.PUBACK)[0].pid == 300
    await settle(30)
    assert len(b.sent(codec.PUBACK)) == 1
    await c.disconnect()


async def test_burst_of_incoming_qos1_is_acked_in_few_writes():
    b, c = await up()
    seen = []
    c.on_message(lambda t, p: seen.append(p))
    burst = b""
    for i in range(12):
        burst += bytes(codec.publish("cmd", b"m%d" % i, 1, pid=1000 + i))
    sends0 = b.sends
    b.reply(burst)
    await until(lambda: len(b.sent(codec.PUBACK)) == 12)
    assert seen == [b"m%d" % i for i in range(12)]
    assert [p.pid for p in b.sent(codec.PUBACK)] == list(range(1000, 1012))
    assert b.sends - sends0 <= 3, "PUBACKs were not batched"
    await c.disconnect()


async def test_ack_queue_is_bounded():
    b, c = await up()
    burst = b"".join(bytes(codec.publish("c", b"", 1, pid=1 + i)) for i in range(64))
    b.reply(burst)  # 64 in one chunk: all queued, all acked
    await until(lambda: len(b.sent(codec.PUBACK)) == 64)
    assert c.is_connected()
    b.reply(burst + bytes(codec.publish("c", b"", 1, pid=65)))  # 65 before the acker can run: bounded
    reason = await asyncio.wait_for(c.wait_lost(), 2)
    assert isinstance(reason, MqttProtocolError) and "64" in str(reason)


async def test_callback_exception_ends_session_without_ack():
    b, c = await up()

    def bad(t, p):
        raise ValueError("app bug")

    c.on_message(bad)
    b.reply(codec.publish("cmd", b"x", 1, pid=5))
    reason = await asyncio.wait_for(c.wait_lost(), 2)
    assert type(reason) is MqttError and "ValueError" in str(reason)
    assert b.sent(codec.PUBACK) == []


async def test_incoming_qos2_is_a_protocol_error():
    b, c = await up()
    b.reply(codec.publish("cmd", b"x", 2, pid=5))
    assert isinstance(await asyncio.wait_for(c.wait_lost(), 2), MqttProtocolError)


async def test_oversized_incoming_publish_is_delivered_cut_and_the_session_goes_on():
    b, c = await up(max_packet=512)
    got = []
    c.on_message(lambda t, p: got.append((t, p)))
    b.reply(bytes(codec.publish("cmd", b"x" * 600, 1, pid=5)) + bytes(codec.publish("cmd", b"small", 0)))
    await until(lambda: len(got) == 2)
    (t1, p1), second = got
    assert t1 == "cmd" and isinstance(p1, Truncated) and len(p1) == 600 and p1.head == b"x" * (512 - 3 - 2 - 3 - 2)
    assert second == ("cmd", b"small") and c.is_connected()
    await until(lambda: b.sent(codec.PUBACK))  # acknowledged: the broker does not redeliver it


# ---- fragmentation --------------------------------------------------------------------------------------

async def _full_flow(split):
    b = FakeBroker(split=split)
    b, c = await up(b)
    seen = []
    c.on_message(lambda t, p: seen.append((t, p)))
    assert await c.subscribe([("cmd/#", 1), ("cfg", 0)]) == [1, 0]
    for i in range(5):
        await c.publish("up", b"\x1a" * (i * 150), 1)
    msgs = b""
    for i in range(6):
        msgs += bytes(codec.publish("cmd/%d" % i, b"\x00" * (i * 200), i & 1, pid=(i + 1) if i & 1 else 0))
    b.reply(msgs)
    await until(lambda: len(seen) == 6 and len(b.sent(codec.PUBACK)) == 3)
    assert seen == [("cmd/%d" % i, b"\x00" * (i * 200)) for i in range(6)]
    await c.unsubscribe("cmd/#")
    assert c.is_connected()
    await c.disconnect()


async def test_broker_bytes_one_at_a_time():
    await _full_flow(1)


async def test_broker_bytes_in_random_fragments():
    await _full_flow("random")


async def test_broker_bytes_in_small_chunks():
    await _full_flow(7)


# ---- link loss and disconnect ---------------------------------------------------------------------------

async def test_socket_closed_mid_publish_fails_every_waiter_promptly():
    b, c = await up(FakeBroker(auto_puback=False, suback="none"), max_inflight=2)
    pubs = [asyncio.create_task(c.publish("t", b"%d" % i, 1)) for i in range(5)]  # 2 in flight, 3 waiting
    await until(lambda: len(b.held) == 2)
    lost = asyncio.create_task(c.wait_lost())
    await settle()
    t0 = ticks_ms()
    b.peer_close(LinkLost("+QSSLURC: \"closed\"", 0))
    for t in pubs:
        await raises(LinkLost, t, 1000)
    assert ticks_diff(ticks_ms(), t0) < 500
    reason = await asyncio.wait_for(lost, 1)
    assert isinstance(reason, LinkLost) and "closed" in str(reason)
    assert not c.is_connected()
    await raises(LinkLost, c.publish("t", b"x", 1))
    await c.disconnect()  # never raises for a closed link


async def test_broker_garbage_ends_session_with_protocol_error():
    b, c = await up(FakeBroker(auto_puback=False))
    pub = asyncio.create_task(c.publish("t", b"x", 1))
    await until(lambda: len(b.held) == 1)
    b.reply(b"\xf0\x00")  # reserved packet type 15
    await raises(LinkLost, pub)
    reason = await asyncio.wait_for(c.wait_lost(), 1)
    assert isinstance(reason, MqttProtocolError) and "15" in str(reason)
    await settle()
    assert b.closes == 1


async def test_disconnect_is_idempotent():
    c = MqttClient(FakeBroker())
    await c.disconnect()  # never connected
    b, c = await up()
    await c.disconnect()
    assert [p.type for p in b.got] == [codec.CONNECT, codec.DISCONNECT]
    assert b.closes == 1 and not c.is_connected()
    await c.disconnect()
    assert len(b.sent(codec.DISCONNECT)) == 1
    reason = await asyncio.wait_for(c.wait_lost(), 1)
    assert isinstance(reason, LinkLost) and "disconnect" in str(reason)


async def test_peer_closing_after_our_disconnect_is_still_our_disconnect():
    b, c = await up()
    real_send = b.send

    async def send_then_close(data, secret=False):
        await real_send(data)
        if bytes(data) == codec.DISCONNECT_PACKET:
            b.peer_close(LinkLost("+QSSLURC: closed"))  # the broker drops the link before send() returns

    b.send = send_then_close
    await c.disconnect()
    reason = await asyncio.wait_for(c.wait_lost(), 1)
    assert "disconnected by the client" in str(reason)


async def test_disconnect_after_peer_close_does_not_raise():
    b, c = await up()
    b.peer_close()
    await c.disconnect()
    assert b.sent(codec.DISCONNECT) == []


async def test_disconnect_when_send_fails_does_not_raise():
    b, c = await up()
    b.send_error = NetworkError("modem gone")
    await c.disconnect()
    assert not c.is_connected()
    assert str(await c.wait_lost()) == "modem gone"


async def test_reconnect_after_loss_starts_a_new_session():
    b, c = await up()
    b.peer_close()
    first = await asyncio.wait_for(c.wait_lost(), 1)
    await c.connect("h", 1, "dev")
    assert c.is_connected() and len(b.opened) == 2
    waiter = asyncio.create_task(c.wait_lost())
    await settle()
    assert not waiter.done(), "wait_lost returned the old session's reason"
    assert await c.subscribe("a", 1) == 1
    await c.publish("t", b"again", 1)
    await c.disconnect()
    second = await asyncio.wait_for(waiter, 1)
    assert second is not first and "disconnect" in str(second)
