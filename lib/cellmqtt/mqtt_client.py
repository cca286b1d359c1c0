# MqttClient: our own small MQTT 3.1.1 client over any ModemSocket (the modem's TLS socket: BC660K-GL or BG96
# QSSLOPEN), implementing the Transport interface of cellmqtt.transport. asyncio, on MicroPython and CPython.
#
#   c = MqttClient(driver.tls_socket(...))
#   c.on_message(cb)                          # cb(topic: str, payload: bytes), from the socket's reader
#   await c.connect(host, port, client_id, username, password, keepalive=120)
#   await c.subscribe("cmd/#", 1); await c.publish("up", b"...", 1)
#   reason = await c.wait_lost(); await c.disconnect()
#
# One session at a time. RAM: one rx and one tx buffer of max_packet bytes, allocated here; every packet is
# encoded into the tx buffer under the send lock, so nothing is allocated per publish but the packet's
# memoryview. Bounded: at most max_inflight acknowledged requests (QoS 1 PUBLISH, SUBSCRIBE, UNSUBSCRIBE) at
# once, further callers wait; at most _ACK_RING incoming QoS 1 messages waiting for their PUBACK.
import asyncio

from cellmqtt import mqtt_codec as codec
from cellmqtt.compat import const, sleep_ms, ticks_diff, ticks_ms
from cellmqtt.mqtt_codec import MqttProtocolError
from cellmqtt.transport import (
    LinkLost,
    MqttError,
    MqttTimeout,
    PayloadError,
    SubscribeRefused,
    connack_error,
)

_IDLE = const(0)
_CONNECTING = const(1)
_UP = const(2)

# Incoming QoS 1 messages waiting for their PUBACK. They go out batched, so this fills only if the broker
# sends more than this many in a burst (one BC660K URC carries up to 1400 bytes) or the modem stalls.
_ACK_RING = const(64)
_PING_TIMEOUT_MAX = const(30)  # s: cap of the default PINGRESP wait



class _Waiter:
    # One request waiting for its answer (CONNACK, SUBACK, UNSUBACK, PUBACK; or the end of a session).
    def __init__(self, kind):
        self.kind = kind
        self.ev = asyncio.Event()
        self.result = None
        self.err = None


class MqttClient:
    """MQTT 3.1.1 over a ModemSocket. Timeouts in seconds.

    max_packet      largest packet sent or received (rx and tx buffers); default 4096
    max_inflight    QoS 1 publishes + subscribes + unsubscribes awaiting their ack at once; default 5
    connect_timeout wait for CONNACK after the socket is open; default 30
    ack_timeout     wait for PUBACK / SUBACK / UNSUBACK; on expiry the session is broken; default 30
    ping_timeout    wait for an answer to PINGREQ; default min(keepalive, 30)
    max_topic       topic length max_payload is computed for; default 256
    half_duplex     after a packet that expects an answer (PUBLISH QoS 1, SUBSCRIBE, UNSUBSCRIBE, PINGREQ),
                    send nothing else until the answer came. For modems that drop received data while a send
                    is in progress (BC660K-GL: URCs are lost in data mode). Default: the socket's
                    `half_duplex` attribute if it has one, else False.
    """

    def __init__(self, sock, max_packet=codec.DEFAULT_MAX_PACKET, max_inflight=5, connect_timeout=30,
                 ack_timeout=30, ping_timeout=None, max_topic=256, half_duplex=None):
        if max_inflight < 1:
            raise MqttError("max_inflight must be at least 1")
        if max_packet < max_topic + 16:
            raise MqttError("max_packet %d leaves no room for a payload after a %d-byte topic"
                               % (max_packet, max_topic))
        self._sock = sock
        self.sent_connect = False  # did the broker see the last CONNECT (transport.py)
        self._reader = codec.PacketReader(max_packet)
        self._tx = bytearray(max_packet)
        self._ackbuf = bytearray(4 * _ACK_RING)
        self._ackmv = memoryview(self._ackbuf)
        self._acks = [0] * _ACK_RING  # ring of packet ids to PUBACK
        self._ack_head = 0
        self._ack_n = 0
        # The largest payload publish() takes with a topic of up to max_topic bytes:
        # fixed header 5 + topic length 2 + topic + packet id 2.
        self.max_payload = max_packet - 9 - max_topic
        self._max_inflight = max_inflight
        self._connect_timeout = connect_timeout
        self._ack_timeout = ack_timeout
        self._ping_timeout = ping_timeout
        self._half = bool(getattr(sock, "half_duplex", False) if half_duplex is None else half_duplex)
        self._pong = asyncio.Event()  # set when an outstanding PINGREQ was answered (half duplex waits on it)
        self._cb = None
        self._lock = asyncio.Lock()  # one packet at a time on the socket; guards self._tx
        self._state = _IDLE
        self._gen = 0  # session number: slot releases from an older session do not count
        self._waiters = {}  # packet id -> _Waiter, at most max_inflight entries
        self._inflight = 0
        self._slot_ev = asyncio.Event()
        self._ack_ev = asyncio.Event()
        self._connack = None
        self._lost = _Waiter(0)  # set when an established session ends; result = the reason
        self._pid = 0
        self._last_tx = self._last_rx = ticks_ms()
        self._ping_at = None  # ticks when an unanswered PINGREQ went out
        self._tasks = []
        self._closer = None
        self._bye = False  # disconnect() under way: a close now is ours, not the peer's
        self.close_error = None  # an error the socket's close() raised, kept for diagnosis

    # ---- Transport interface -------------------------------------------------------------------------

    def on_message(self, cb):
        self._cb = cb

    def is_connected(self):
        return self._state == _UP

    async def connect(self, host, port, client_id, username=None, password=None, keepalive=120, clean=True,
                      will=None):
        """Open the socket, send CONNECT, wait for CONNACK. will: (topic, payload, qos, retain) or None.
        Raises ConnectRefused (CONNACK code), MqttTimeout, PayloadError, or the socket's NetworkError."""
        await self._await_close()  # the last session's socket close must not land on this one
        if will is None:
            will = (None, b"", 0, False)
        elif not isinstance(will, (tuple, list)) or len(will) != 4:
            raise PayloadError("will must be (topic, payload, qos, retain)")
        wt, wp, wq, wr = will
        # The lock first: a send left over from the last session may still be using the socket and the tx
        # buffer. Nobody else sends while CONNECTING: their _check_up() fails.
        async with self._lock:
            if self._state != _IDLE:
                raise MqttError("connect() while a session is open or opening")
            # Encode first: bad arguments fail before any network traffic.
            pkt = codec.connect(client_id, username, password, keepalive, clean, wt, wp, wq, wr, self._tx)
            n = len(pkt)
            self._gen += 1
            self._state = _CONNECTING
            self._reader.reset()
            self._waiters = {}
            self._inflight = 0
            self._ack_n = 0
            self._ping_at = None
            self._closer = None
            self._bye = False
            self._connack = w = _Waiter(codec.CONNACK)
            if self._lost.ev.is_set():
                self._lost = _Waiter(0)
            sent = False
            try:
                self._sock.on_data(self._on_data)
                self._sock.on_close(self._on_close)
                self.sent_connect = False
                await self._sock.open(host, port)
                if self._state != _CONNECTING:  # the socket reported closed during open
                    raise LinkLost("socket closed while opening")
                self.sent_connect = True  # the broker sees this attempt (clouds rate-limit CONNECTs)
                await self._write(pkt, True)  # it carries the password: never in a transcript
                sent = True
            finally:
                self._wipe(n)  # the CONNECT carried the password
                if not sent:
                    self._end(LinkLost("connect failed"))
                    await self._await_close()
        ok = False
        try:
            code = await self._wait(w, self._connect_timeout, "CONNACK", None)
            if code:
                raise connack_error(code)
            if self._state != _UP:  # accepted, then ended by what came right behind the CONNACK
                raise LinkLost("session ended right after CONNACK: %s" % (self._lost.result,))
            ok = True
        finally:
            if not ok:
                self._end(LinkLost("connect failed"))
                await self._await_close()
        self._last_tx = self._last_rx = ticks_ms()
        self._tasks = [asyncio.create_task(self._acker(self._gen))]
        if keepalive:
            pt = self._ping_timeout
            if pt is None:
                pt = min(keepalive, _PING_TIMEOUT_MAX)
            self._tasks.append(asyncio.create_task(self._keepalive(keepalive * 750, int(pt * 1000))))

    async def subscribe(self, topic, qos=0):
        """Subscribe one filter (-> granted QoS) or a list of (filter, qos) (-> list of granted QoS).
        Raises SubscribeRefused if the broker answers 0x80 for any of them."""
        many = not isinstance(topic, (str, bytes))
        filters = topic if many else ((topic, qos),)
        for f in filters:
            if not isinstance(f, (tuple, list)) or len(f) != 2:
                raise PayloadError("subscribe() takes a filter and a QoS, or a list of (filter, QoS) pairs")
            if f[1] not in (0, 1):
                raise PayloadError("subscribe QoS %r not supported (0 or 1)" % (f[1],))
        p = await self._request(codec.SUBACK, filters)
        codes = p.codes
        if len(codes) != len(filters):
            raise self._broken(MqttProtocolError("SUBACK has %d return codes for %d filters"
                                                 % (len(codes), len(filters))))
        refused = []
        for k in range(len(codes)):
            if codes[k] == codec.SUBACK_FAILURE:
                refused.append(filters[k][0])
            elif codes[k] > filters[k][1]:
                raise self._broken(MqttProtocolError("SUBACK granted QoS %d above the %d requested"
                                                     % (codes[k], filters[k][1])))
        if refused:
            raise SubscribeRefused("broker refused the subscription to %r" % (refused,), codec.SUBACK_FAILURE)
        return list(codes) if many else codes[0]

    async def unsubscribe(self, topic):
        """Unsubscribe one filter or a list of filters; returns when the broker sent UNSUBACK."""
        await self._request(codec.UNSUBACK, (topic,) if isinstance(topic, (str, bytes)) else topic)

    async def publish(self, topic, payload, qos=0, retain=False):
        """QoS 0: returns once sent. QoS 1: returns once PUBACKed; MqttTimeout after ack_timeout (the
        session is then broken). PayloadError for a bad topic/payload, before anything is sent."""
        if qos not in (0, 1):
            raise PayloadError("publish QoS %r not supported (0 or 1)" % (qos,))
        try:
            size = len(payload)
        except TypeError:
            raise PayloadError("payload must be bytes or str, not %s" % type(payload).__name__)
        if size > self.max_payload:
            raise PayloadError("payload of %d bytes is over max_payload %d" % (size, self.max_payload))
        if qos == 0:
            self._check_up()  # fail fast rather than queue for the lock while (re)connecting
            async with self._lock:
                self._check_up()
                pkt = codec.publish(topic, payload, 0, retain, False, 0, self._tx)
                await self._write(pkt)
            return
        # Check the topic before taking a slot: a bad one must not cost a wait for a slot. (The str itself is
        # encoded again below: a str topic takes the fast ASCII check, its bytes would take the slow one.)
        codec.check_topic(topic)
        await self._request(codec.PUBACK, None, topic, payload, retain)

    async def wait_lost(self):
        """Wait for the established session to end; returns the MqttError that ended it (LinkLost for a
        closed socket, a ping timeout, a missing ack or disconnect(); MqttProtocolError for bad bytes)."""
        w = self._lost
        await w.ev.wait()
        return w.result

    async def disconnect(self):
        """Send DISCONNECT (if the session is up) and close the socket. Never raises for a closed link."""
        if self._state == _UP:
            self._bye = True
            try:
                async with self._lock:
                    if self._state == _UP:
                        await self._write(codec.DISCONNECT_PACKET)
            except MqttError:
                pass  # the link was already gone; _write made that the session's end reason
        self._end(LinkLost("disconnected by the client"))
        await self._await_close()

    # ---- requests and their waiters ------------------------------------------------------------------

    async def _request(self, kind, filters, topic=None, payload=None, retain=False):
        # A packet that takes a packet id and waits for its ack (kind): take an in-flight slot, send, wait.
        await self._take_slot()
        gen = self._gen  # no await since the slot was taken: this is the slot's session
        waiters = self._waiters
        pid = 0
        try:
            pid = self._new_pid()
            w = waiters[pid] = _Waiter(kind)
            async with self._lock:
                self._check_up()
                if kind == codec.PUBACK:
                    what = "PUBACK"
                    pkt = codec.publish(topic, payload, 1, retain, False, pid, self._tx)
                elif kind == codec.SUBACK:
                    what = "SUBACK"
                    pkt = codec.subscribe(pid, filters, self._tx)
                else:
                    what = "UNSUBACK"
                    pkt = codec.unsubscribe(pid, filters, self._tx)
                await self._write(pkt)
                if self._half:  # keep the socket quiet until the answer is in
                    return await self._wait(w, self._ack_timeout, what, pid)
            return await self._wait(w, self._ack_timeout, what, pid)
        finally:
            if pid:
                waiters.pop(pid, None)
            if gen == self._gen:
                self._inflight -= 1
                self._slot_ev.set()

    async def _take_slot(self):
        while True:
            self._check_up()
            if self._inflight < self._max_inflight:
                self._inflight += 1
                return
            # No await between the check and clear(): a release cannot slip in between.
            self._slot_ev.clear()
            await self._slot_ev.wait()

    def _new_pid(self):
        # 1..65535, wrapping, never 0 (MQTT-2.3.1-1), never one still awaiting its ack.
        while True:
            self._pid = self._pid % 65535 + 1
            if self._pid not in self._waiters:
                return self._pid

    async def _wait(self, w, timeout, what, pid):
        try:
            await asyncio.wait_for(w.ev.wait(), timeout)
        except asyncio.TimeoutError:  # noqa: UP041 -- MicroPython has no builtin TimeoutError
            if w.err is not None:  # the session ended in the same instant
                raise w.err
            where = "" if pid is None else " for packet id %d" % pid
            self._end(LinkLost("no %s%s within %s s" % (what, where, timeout)))
            raise MqttTimeout("no %s%s within %s s; session closed" % (what, where, timeout))
        if w.err is not None:
            raise w.err
        return w.result

    def _check_up(self):
        if self._state != _UP:
            reason = self._lost.result
            raise LinkLost("not connected" if reason is None else "not connected (%s)" % reason)

    def _broken(self, err):
        # The broker answered nonsense to a request: end the session, hand the error to the caller.
        self._end(err)
        return err

    # ---- socket side ---------------------------------------------------------------------------------

    async def _write(self, data, secret=False):
        # Caller holds self._lock. A failed or cancelled send leaves a partial packet on the stream: the
        # session cannot continue after that. secret: the packet carries a credential (the socket keeps it out
        # of every transcript).
        try:
            await self._sock.send(data, secret)
        except MqttError as e:
            self._end(e)
            raise
        except asyncio.CancelledError:
            self._end(LinkLost("send cancelled mid-packet"))
            raise
        self._last_tx = ticks_ms()

    def _wipe(self, n):
        tx = self._tx
        for i in range(n):
            tx[i] = 0

    def _on_data(self, data):
        # Called by the socket's reader; must not block and must not raise into it.
        if self._state == _IDLE:
            return  # bytes of a session already ended: nobody to deliver them to
        try:
            for p in self._reader.feed(data):
                self._handle(p)
                if self._state == _IDLE:
                    return
        except MqttError as e:
            self._end(e)

    def _on_close(self, err):
        if self._bye:  # the broker closes the socket when it gets our DISCONNECT (MQTT-3.14.4-1)
            err = LinkLost("disconnected by the client")
        self._end(err if isinstance(err, MqttError) else LinkLost("socket closed: %r" % (err,)))

    def _handle(self, p):
        self._last_rx = ticks_ms()
        if self._ping_at is not None:
            self._ping_at = None  # any packet proves the link is alive
            self._pong.set()
        t = p.type
        if self._state == _CONNECTING:
            if t != codec.CONNACK:
                raise MqttProtocolError("packet type %d before CONNACK (MQTT-3.2.0-1)" % t)
            if p.code == 0:
                # Up now, not when connect() resumes: packets right behind the CONNACK (a persistent session's
                # queue, a cloud's unsolicited push) belong to the session. Their PUBACKs wait in the ring.
                self._state = _UP
            w = self._connack
            w.result = p.code
            w.ev.set()
            return
        if t == codec.PUBLISH:
            if p.qos == 2:
                raise MqttProtocolError("QoS 2 PUBLISH, but this client never subscribes with QoS 2")
            if p.qos and self._ack_n >= _ACK_RING:
                raise MqttProtocolError("more than %d QoS 1 messages waiting for PUBACK" % _ACK_RING)
            cb = self._cb
            if cb is not None:
                try:
                    cb(p.topic, p.payload)
                # An app bug must not kill the socket's reader: it ends the session instead, visibly.
                except Exception as e:  # noqa: BLE001
                    raise MqttError("on_message callback raised %r on topic %s; message not acknowledged"
                                    % (e, p.topic))
            if p.qos:
                self._acks[(self._ack_head + self._ack_n) % _ACK_RING] = p.pid
                self._ack_n += 1
                self._ack_ev.set()
            return
        if t == codec.PINGRESP:
            return
        if t == codec.PUBACK or t == codec.SUBACK or t == codec.UNSUBACK:
            w = self._waiters.get(p.pid)
            if w is None or w.kind != t:
                raise MqttProtocolError("packet type %d for packet id %d, which is not awaiting one" % (t, p.pid))
            w.result = p
            w.ev.set()
            return
        raise MqttProtocolError("unexpected packet type %d" % t)  # CONNACK again, or a QoS 2 flow

    def _end(self, reason):
        # End the session (idempotent): fail every waiter promptly, stop the tasks, close the socket.
        if self._state == _IDLE:
            return
        was_up = self._state == _UP
        self._state = _IDLE
        msg = "session ended: %s" % reason
        ws = list(self._waiters.values())
        if self._connack is not None:
            ws.append(self._connack)
        for w in ws:
            if not w.ev.is_set():
                w.err = reason if w is self._connack else LinkLost(msg, getattr(reason, "code", None))
                w.ev.set()
        self._slot_ev.set()  # wake callers waiting for a slot; they see _IDLE and raise
        me = asyncio.current_task()
        for t in self._tasks:
            if t is not me:
                t.cancel()
        self._tasks = []
        if was_up:
            self._lost.result = reason
            self._lost.ev.set()
        self._closer = asyncio.create_task(self._close_sock())

    async def _close_sock(self):
        try:
            await self._sock.close()
        except MqttError as e:
            self.close_error = e  # the session already has its end reason; keep this one for diagnosis

    async def _await_close(self):
        c = self._closer
        if c is not None:
            await c

    # ---- background tasks of an established session --------------------------------------------------

    async def _acker(self, gen):
        # Sends the PUBACKs queued by _handle, batched into one socket write.
        while True:
            await self._ack_ev.wait()
            self._ack_ev.clear()
            while self._ack_n and gen == self._gen:
                try:
                    async with self._lock:
                        if self._state != _UP:
                            return
                        n = 0
                        while self._ack_n:
                            codec.puback(self._acks[self._ack_head], self._ackmv[n:n + 4])
                            self._ack_head = (self._ack_head + 1) % _ACK_RING
                            self._ack_n -= 1
                            n += 4
                        await self._write(self._ackmv[:n])
                except MqttError:
                    return  # _write ended the session with this error

    async def _keepalive(self, interval_ms, timeout_ms):
        # PINGREQ once nothing was sent or received for 3/4 of the keepalive (the broker allows 1.5x, the
        # modem adds latency); the session is lost if nothing at all comes back within timeout_ms.
        while True:
            now = ticks_ms()
            if self._ping_at is not None:
                left = timeout_ms - ticks_diff(now, self._ping_at)
                if left <= 0:
                    self._end(LinkLost("no answer to PINGREQ within %d ms" % timeout_ms))
                    return
            else:
                idle = max(ticks_diff(now, self._last_tx), ticks_diff(now, self._last_rx))
                left = interval_ms - idle
                if left <= 0:
                    try:
                        async with self._lock:
                            if self._state != _UP:
                                return
                            # Before the write: an answer may arrive while the send is still awaited.
                            self._ping_at = ticks_ms()
                            self._pong.clear()
                            await self._write(codec.PINGREQ_PACKET)
                            if self._half:
                                try:
                                    await asyncio.wait_for(self._pong.wait(), timeout_ms / 1000)
                                except asyncio.TimeoutError:  # noqa: UP041 -- no builtin TimeoutError in MicroPython
                                    pass  # the check at the top of the loop ends the session
                    except MqttError:
                        return  # _write ended the session with this error
                    continue
            await sleep_ms(left)
