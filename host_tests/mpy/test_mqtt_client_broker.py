# MqttClient against the real amqtt broker over real TLS (the `broker` fixture), on MicroPython and CPython:
# connect, subscribe, publish QoS 0/1, receive our own messages (binary, 0x00/0x1A/0x1B, several TLS records),
# keep-alive pings answered by the broker, unsubscribe, two clients, disconnect. The socket is
# tls_socket_adapter.TlsSocket standing in for the modem's QSSLOPEN socket.
import asyncio

from cellmqtt import mqtt_codec as codec
from cellmqtt.compat import ticks_diff, ticks_ms
from cellmqtt.mqtt_client import MqttClient
from cellmqtt.transport import LinkLost, SubscribeRefused
from tls_socket_adapter import TlsSocket

TIMEOUT = 90


class Inbox:
    def __init__(self, client):
        self.items = []
        self.ev = asyncio.Event()
        client.on_message(self.put)

    def put(self, topic, payload):
        self.items.append((topic, payload))
        self.ev.set()

    async def wait(self, n, s=10):
        t0 = ticks_ms()
        while len(self.items) < n:
            assert ticks_diff(ticks_ms(), t0) < s * 1000, "got %d of %d messages: %r" % (len(self.items), n,
                                                                                        self.items)
            self.ev.clear()
            try:
                await asyncio.wait_for(self.ev.wait(), 0.5)
            except asyncio.TimeoutError:  # noqa: UP041 -- MicroPython has no builtin TimeoutError
                pass
        return self.items


async def connected(broker, cid, keepalive=60, **kw):
    sock = TlsSocket(broker["ca"])
    c = MqttClient(sock, **kw)
    await asyncio.wait_for(c.connect(broker["host"], broker["tls_port"], cid, "user", "pw", keepalive), 20)
    return sock, c


async def test_publish_subscribe_receive_own_messages(broker):
    sock, c = await connected(broker, "dev-roundtrip")
    inbox = Inbox(c)
    assert c.is_connected()
    assert await c.subscribe("dev/rt/#", 1) == 1
    assert await c.subscribe([("other/a", 0), ("other/b", 1)]) == [0, 1]
    binary = bytes(range(256)) + b"\x00\x1a\x1b\x00\x1a\x1b"
    big = bytes((i * 7) & 0xFF for i in range(3000))  # several max_send pieces and TLS records
    await c.publish("dev/rt/q0", binary, 0)
    await c.publish("dev/rt/q1", b"\x1a", 1)
    await c.publish("dev/rt/big", big, 1)
    await c.publish("dev/rt/empty", b"", 1)
    got = await inbox.wait(4)
    assert sorted(got) == sorted([("dev/rt/q0", binary), ("dev/rt/q1", b"\x1a"), ("dev/rt/big", big),
                                  ("dev/rt/empty", b"")])
    # The broker delivered the QoS 1 ones with QoS 1: we must have PUBACKed them (4-byte 0x40 packets).
    acks = [s for s in sock.sent if s[:1] == b"\x40"]
    assert acks, "no PUBACK went to the broker"
    await c.unsubscribe("dev/rt/#")
    await c.publish("dev/rt/after", b"not for us", 1)
    await c.publish("other/b", b"still subscribed", 1)
    await inbox.wait(5)
    await asyncio.sleep(0.3)
    assert inbox.items[4] == ("other/b", b"still subscribed") and len(inbox.items) == 5
    await c.disconnect()
    assert not c.is_connected()
    reason = await asyncio.wait_for(c.wait_lost(), 2)
    assert isinstance(reason, LinkLost)
    await c.disconnect()  # idempotent


async def test_two_clients_qos1_between_them(broker):
    _, rx = await connected(broker, "dev-rx")
    _, tx = await connected(broker, "dev-tx")
    inbox = Inbox(rx)
    await rx.subscribe("cmd/dev-rx/#", 1)
    for i in range(10):
        await tx.publish("cmd/dev-rx/%d" % i, b"\x00cmd\x1b%d" % i, 1)
    got = await inbox.wait(10)
    assert got == [("cmd/dev-rx/%d" % i, b"\x00cmd\x1b%d" % i) for i in range(10)]
    await tx.disconnect()
    await rx.disconnect()


async def test_keepalive_pings_are_answered_by_the_broker(broker):
    sock, c = await connected(broker, "dev-ping", keepalive=1, ping_timeout=1)
    t0 = ticks_ms()
    lost = asyncio.create_task(c.wait_lost())
    await asyncio.sleep(2.6)  # idle: a ping every ~750 ms; an unanswered one would end the session by now
    assert not lost.done(), "session lost: %r" % (lost.result() if lost.done() else None)
    pings = [s for s in sock.sent if s == codec.PINGREQ_PACKET]
    assert len(pings) >= 2, "only %d PINGREQ in %d ms" % (len(pings), ticks_diff(ticks_ms(), t0))
    assert c.is_connected()
    inbox = Inbox(c)
    await c.subscribe("p", 1)
    await c.publish("p", b"alive", 1)
    assert await inbox.wait(1) == [("p", b"alive")]
    await c.disconnect()
    await asyncio.wait_for(lost, 2)


async def test_subscribe_to_invalid_filter_never_reaches_broker_and_session_stays(broker):
    from cellmqtt.transport import PayloadError

    _, c = await connected(broker, "dev-bad")
    try:
        await c.subscribe("a/#/b", 1)
        raise AssertionError("invalid filter accepted")
    except PayloadError:
        pass
    except SubscribeRefused:
        raise AssertionError("the invalid filter was sent to the broker")
    inbox = Inbox(c)
    await c.subscribe("ok/#", 0)
    await c.publish("ok/1", b"x", 0)
    assert await inbox.wait(1) == [("ok/1", b"x")]
    await c.disconnect()


async def test_broker_closing_the_socket_is_link_lost(broker):
    # A second CONNECT on the same connection is a protocol violation the broker answers by closing the
    # network connection (MQTT-3.1.0-2). Written straight to the socket, past the client. (amqtt 0.12.1 does
    # not drop an older session when a client id connects twice, MQTT-3.1.4-2, so that cannot be used.)
    sock, c = await connected(broker, "dev-close")
    lost = asyncio.create_task(c.wait_lost())
    await asyncio.sleep(0.1)
    t0 = ticks_ms()
    await sock.send(bytes(codec.connect("dev-close")))
    reason = await asyncio.wait_for(lost, 10)
    assert isinstance(reason, LinkLost) and "closed by peer" in str(reason), reason
    assert ticks_diff(ticks_ms(), t0) < 3000
    assert not c.is_connected()
    try:
        await c.publish("x", b"y", 1)
        raise AssertionError("publish on a lost session did not raise")
    except LinkLost:
        pass
    await c.disconnect()
    # and the client connects again on the same socket object
    await c.connect(broker["host"], broker["tls_port"], "dev-close", keepalive=30)
    inbox = Inbox(c)
    await c.subscribe("again", 1)
    await c.publish("again", b"\x00", 1)
    assert await inbox.wait(1) == [("again", b"\x00")]
    await c.disconnect()
