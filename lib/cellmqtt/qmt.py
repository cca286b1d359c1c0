# The module's own MQTT client (Quectel AT+QMT*) as a Transport (transport.py): open, connect, subscribe,
# publish with QoS, incoming messages, a lost session. Every engine error becomes a transport error here.
# Each driver subclasses NativeMqtt for its QMTCFG dialect, publish forms and limits (Bg96Mqtt in bg96.py,
# Bc660kMqtt in bc660k.py). Facts: reference/quectel-bg96.md section 6, quectel-bc660k.md section 4.
import asyncio

from cellmqtt import modem as md
from cellmqtt.at_engine import AtClosed, AtError, AtTimeout, Cmd, args, frame_quoted_len, quote, to_int
from cellmqtt.settings import section
from cellmqtt.transport import (
    MODULE,
    NETWORK,
    SESSION,
    DnsError,
    LinkLost,
    MqttError,
    MqttTimeout,
    NetworkError,
    PayloadError,
    SubscribeRefused,
    Truncated,
    connack_error,
)

# What the native transport reads; a dialect may narrow a range (README "Configuration").
CONFIG = {"mqtt": {"client": (0, 0, 5), "pkt_timeout_s": (None, 1, 60), "retries": (None, 0, 10)}}

STAT_TEXT = ("", "closed by the peer", "PINGREQ failed", "CONNECT failed", "CONNACK timeout",
             "disconnected", "repeated send failures", "link not alive")
# +QMTOPEN results 1..5 (the rest: could not open)
_OPEN_TEXT = ("the module refused the open parameters", "MQTT client still in use", "PDP context not activated",
              "cannot resolve the host", "network disconnected while opening")
_ACT = Cmd(None, 5000)  # an action command: OK at once, its result later as a URC
_CFG = Cmd()


class ModuleRefused(MqttError):
    """The module answered an MQTT command with ERROR / +CME ERROR (``code``: the module's code or None)."""


def nth_int(line, n):
    """The n-th parameter of b"+QMTPUB: 0,5,0" as an int, parsed in place (no list, no slices): -1 if absent."""
    i = line.find(b":") + 1
    while n:
        i = line.find(b",", i) + 1
        if not i:
            return -1
        n -= 1
    while i < len(line) and line[i] == 32:
        i += 1
    neg = i < len(line) and line[i] == 45
    if neg:
        i += 1
    v = -1
    while i < len(line) and 48 <= line[i] <= 57:
        v = (0 if v < 0 else v * 10) + line[i] - 48
        i += 1
    return -v if neg and v >= 0 else v


class NativeMqtt:
    """The module's own MQTT client, index ``mqtt.client``, as a Transport (see transport.py).

    URCs: +QMTRECV delivers messages to ``on_message``; +QMTSTAT, a module restart or a lost PDP context (the
    driver's events) end the session -- ``wait_lost()`` returns the LinkLost error (its ``layer`` says what
    broke) and every waiting call fails at once."""

    CONFIG = CONFIG
    VERSION = 4  # QMTCFG "version" value meaning MQTT 3.1.1
    OPEN_MS = 75000
    MAX_PAYLOAD = 1548
    MAX_INFLIGHT = 5
    GATE_MS = 0
    FIXED_LEN = True  # the fixed-length QMTPUB form exists (binary-safe)
    PKT_TIMEOUT = 5  # the module's defaults after a boot: packet timeout (s) and retries
    RETRIES = 3

    def __init__(self, modem, config=None):
        self.m = modem
        self.at = at = modem.at
        q = section(config, "mqtt", self.CONFIG)
        self.id = i = q["client"]
        self.tls = bool(section(config, "tls", modem.CONFIG)["enabled"])
        self.max_payload = self.MAX_PAYLOAD
        self.pkt_timeout = q["pkt_timeout_s"] or self.PKT_TIMEOUT
        self.retries = self.RETRIES if q["retries"] is None else q["retries"]
        self.sent_connect = False
        self._on_message = None
        self._connected = False
        self._maybe_open = None  # None: unknown until the first connect (after bring-up: is the module fresh?)
        self._configured = None  # (keepalive, clean, modem resets) the QMTCFG settings were made for
        self._qtopics = {}  # topic -> quoted bytes
        self._lost = asyncio.Event()
        self._reason = None
        self._waiters = []
        self._msgid = 0
        self._inflight = 0
        self._slot = asyncio.Event()
        self._q_state = Cmd(b"+QMTCONN: %d," % i, 1000)  # AT+QMTCONN? for this client
        self._set_fixed(self.FIXED_LEN)
        self._pre_stat = b"+QMTSTAT: %d," % i
        # after the prefix (which holds the client id): msgid, "topic", then the length when there is one
        at.urc(b"+QMTRECV: %d," % i, self._on_recv, frame_quoted_len(2, partial=True))
        at.urc(self._pre_stat, self._on_stat)
        modem.listen(self._on_modem)

    def _set_fixed(self, fixed):
        # the publish command's spec follows the form the firmware takes
        self.FIXED_LEN = fixed
        self._pub = Cmd(None, 5000, ctrlz=not fixed, gate_ms=self.GATE_MS, data_ms=10000)

    def on_message(self, cb):
        self._on_message = cb

    def is_connected(self):
        return self._connected

    async def wait_lost(self):
        await self._lost.wait()
        return self._reason

    # ---- events (called from the reader)

    def _on_modem(self, kind, value):
        # (a PDP deactivation closes the session too, but the module reports that itself with +QMTSTAT)
        if kind == md.RESET:
            self._maybe_open = False  # a boot closes every client
        if kind in (md.RESET, md.DOWN, md.CLOSED):
            self._set_lost(LinkLost("the modem %s" % ("restarted" if kind == md.RESET else "powered down"
                                                       if kind == md.DOWN else "driver was closed"), 0, MODULE))

    def _on_recv(self, line):
        # +QMTRECV: <id>,<msgid>,"<topic>",[<len>,]"<payload>" -- the payload is raw, never escaped
        i = line.find(b'"')
        j = line.find(b'"', i + 1)
        if i < 0 or j < 0 or self._on_message is None:
            self.at.unclaimed(line)
            return
        k = j + 2
        if k < len(line) and 48 <= line[k] <= 57:
            c = line.find(b",", k)
            n = int(line[k:c])
            payload = line[c + 2:c + 2 + n]
            if len(payload) < n:  # larger than the receive buffer: cut (the profile refuses it by name)
                payload = Truncated(payload, n, self.at.cut_tail[:-1])  # the tail without the closing quote
        else:
            payload = line[k + 1:-1]
        self._on_message(line[i + 1:j].decode(), payload)

    def _on_stat(self, line):
        code = to_int(line[len(self._pre_stat):].strip())
        self._maybe_open = False  # +QMTSTAT: the module has already closed this client
        txt = STAT_TEXT[code] if 0 < code < len(STAT_TEXT) else "unknown reason"
        # 2: PINGREQ failed -- the data path is broken: re-activate PDP, then re-open (quectel-bg96.md 6)
        self._set_lost(LinkLost("MQTT session closed by the module: %s (+QMTSTAT %d)" % (txt, code), code,
                                NETWORK if code == 2 else SESSION))

    def _set_lost(self, err):
        if self._reason is None or self._connected:
            self._reason = err
        self._connected = False
        self._lost.set()
        for w in self._waiters:
            if w.line is None:
                w.error = err
                w.ev.set()
        self._slot.set()

    # ---- commands

    def _error(self, e):
        # an engine error as a transport error (the Transport contract): a timeout, a closed stream, a refusal
        if isinstance(e, AtTimeout):
            return MqttTimeout(str(e))
        if isinstance(e, AtClosed):
            return LinkLost(str(e), None, MODULE)
        return ModuleRefused("the module refused the MQTT command: %s" % e, e.code)

    async def _cmd(self, command, spec=_CFG):
        # a one-phase command of this transport, its engine errors converted
        try:
            return await self.at.cmd(command, spec)
        except AtError as e:
            raise self._error(e) from None

    async def _call(self, command, result_prefix, result_ms, secrets=()):
        """A two-phase QMT command whose wait also ends when the session is lost."""
        at = self.at
        w = at.expect(result_prefix)
        self._waiters.append(w)
        try:
            try:
                await at.cmd(command, _ACT, None, secrets)
            except BaseException:
                at.cancel(w)
                raise
            return await at.wait(w, result_ms)
        except AtError as e:
            raise self._error(e) from None
        finally:
            self._waiters.remove(w)

    def _op_ms(self):
        return self.pkt_timeout * (self.retries + 1) * 1000 + 5000

    def _next_id(self):
        self._msgid = self._msgid % 65535 + 1
        return self._msgid

    def _cfg_commands(self, keepalive, clean):
        # Only what differs from the module's defaults after a boot; everything when its state is unknown.
        i = self.id
        fresh = self.m.fresh
        out = [b'AT+QMTCFG="version",%d,%d' % (i, self.VERSION)]
        if self.tls or not fresh:
            out.append(self._ssl_cfg() if self.tls else b'AT+QMTCFG="ssl",%d,0' % i)
        if not fresh or keepalive != 120:
            out.append(b'AT+QMTCFG="keepalive",%d,%d' % (i, keepalive))
        if not fresh or not clean:
            out.append(b'AT+QMTCFG="session",%d,%d' % (i, 1 if clean else 0))
        if not fresh or self.pkt_timeout != self.PKT_TIMEOUT or self.retries != self.RETRIES:
            out.append(b'AT+QMTCFG="timeout",%d,%d,%d,0' % (i, self.pkt_timeout, self.retries))
        return out

    async def _close(self):
        try:
            await self._call(b"AT+QMTCLOSE=%d" % self.id, b"+QMTCLOSE: %d," % self.id, 10000)
        except MqttError as e:
            if self.m.log:
                self.m.log("QMTCLOSE %d: %s" % (self.id, e))
        self._maybe_open = False

    async def connect(self, host, port, client_id, username=None, password=None, keepalive=120, clean=True):
        """Open the network connection (TLS per the SSL context) and send CONNECT. Raises DnsError, TlsError,
        NetworkError, ConnectRefused (CONNACK code), MqttTimeout, ModuleRefused -- never leaves the client
        half-open."""
        i = self.id
        h = quote(host, "broker host")
        cmd_conn = b"AT+QMTCONN=%d,%s" % (i, quote(client_id, "client id"))
        secrets = ()
        if username is not None:
            cmd_conn += b"," + quote(username, "user name")
            if password is not None:
                pw = password.encode() if isinstance(password, str) else password
                cmd_conn += b"," + quote(pw, "password")
                secrets = (pw,)
        self._connected = False
        self._reason = None
        self._lost.clear()
        self.sent_connect = False
        if self._maybe_open is None:  # the first connect since the MCU started: a client may be left open
            self._maybe_open = not self.m.fresh
        if self._maybe_open:  # first: an open client locks its settings (BC660K-GL: +CME ERROR: 3)
            # AT+QMTCONN?, not AT+QMTOPEN?: some BGx firmware never answers QMTOPEN? on the UART (LooUQ LTEmC,
            # ltemc-mqtt.c). No answer or an error: unknown, so closed anyway (QMTCLOSE of a closed client fails,
            # harmlessly).
            try:
                lines = await self._cmd(b"AT+QMTCONN?", self._q_state)
            except MqttError:
                lines = True
            if lines:
                await self._close()
            self._maybe_open = False
        want = (keepalive, clean, self.m.resets)
        if self._configured != want:  # the settings last until the module restarts
            for c in self._cfg_commands(keepalive, clean):
                await self._cmd(c)
            self._configured = want
        self._maybe_open = True
        code = to_int(args(await self._call(b"AT+QMTOPEN=%d,%s,%d" % (i, h, port), b"+QMTOPEN: %d," % i,
                                            self.OPEN_MS))[1])
        if code:
            self._maybe_open = code == 2
            raise await self._open_error(code, host, port)
        self.sent_connect = True  # the broker sees this attempt (clouds rate-limit CONNECTs)
        try:
            f = args(await self._call(cmd_conn, b"+QMTCONN: %d," % i, self._op_ms(), secrets))
            result = to_int(f[1])
            ret = to_int(f[2]) if len(f) > 2 else 0
            if ret > 0:
                raise connack_error(ret)
            if result or ret:
                raise MqttTimeout("the broker did not acknowledge CONNECT (+QMTCONN result %d)" % result, result)
            self._connected = True
        except BaseException:
            await self._close()
            raise

    async def _open_error(self, code, host, port):
        why = _OPEN_TEXT[code - 1] if 0 < code <= len(_OPEN_TEXT) else "could not open" + (" with TLS" if self.tls else "")
        return (DnsError if code == 4 else MqttError if code == 1 else NetworkError)(
            "%s:%d: %s (+QMTOPEN %d)" % (host, port, why, code), code)

    async def subscribe(self, topic, qos=1):
        if not self._connected:
            raise self._reason or LinkLost("not connected")
        mid = self._next_id()
        while True:
            f = args(await self._call(b"AT+QMTSUB=%d,%d,%s,%d" % (self.id, mid, quote(topic, "topic"), qos),
                                      b"+QMTSUB: %d,%d," % (self.id, mid), self._op_ms()))
            result = to_int(f[2])
            if result != 1:  # 1: a retransmission notice, the final result follows
                break
        if result:
            raise MqttTimeout("SUBSCRIBE %s not acknowledged" % topic, result)
        granted = to_int(f[3]) if len(f) > 3 else qos
        if granted == 128:
            raise SubscribeRefused("the broker refused the subscription to %s" % topic, 128)
        return granted

    async def unsubscribe(self, topic):
        mid = self._next_id()
        res = await self._call(b"AT+QMTUNS=%d,%d,%s" % (self.id, mid, quote(topic, "topic")),
                               b"+QMTUNS: %d,%d," % (self.id, mid), self._op_ms())
        if nth_int(res, 2):
            raise MqttTimeout("UNSUBSCRIBE %s not acknowledged" % topic)

    async def publish(self, topic, payload, qos=1, retain=False):
        """Publish and return once the broker acknowledged it (QoS 1) or the module sent it (QoS 0)."""
        if isinstance(payload, str):
            payload = payload.encode()
        if len(payload) > self.max_payload:
            raise PayloadError("payload of %d bytes exceeds the module's %d-byte limit" % (len(payload), self.max_payload))
        fixed = self.FIXED_LEN
        if not fixed and (payload.find(b"\x1a") >= 0 or payload.find(b"\x1b") >= 0):
            raise PayloadError("payload holds Ctrl-Z/Esc and this firmware has no fixed-length QMTPUB form")
        t = self._qtopics.get(topic)
        if t is None:  # telemetry goes to the same topic every time: quote (and check) it once
            try:
                t = quote(topic, "topic")
            except ValueError as e:
                raise PayloadError(str(e)) from None
            if len(self._qtopics) >= 8:
                self._qtopics.clear()
            self._qtopics[topic] = t
        if not self._connected:
            raise self._reason or LinkLost("not connected")
        while qos and self._inflight >= self.MAX_INFLIGHT:
            self._slot.clear()
            await self._slot.wait()
            if not self._connected:
                raise self._reason or LinkLost("not connected")
        mid = self._next_id() if qos else 0
        cmd, data = self._pub_cmd(b"AT+QMTPUB=%d,%d,%d,%d,%s" % (self.id, mid, qos, 1 if retain else 0, t), payload,
                                  fixed)
        if qos:
            self._inflight += 1
        at = self.at
        pre = b"+QMTPUB: %d,%d," % (self.id, mid)
        w = at.expect(pre)
        self._waiters.append(w)
        try:
            try:
                await at.cmd(cmd, self._pub, data)
            except BaseException:
                at.cancel(w)
                raise
            res = await at.wait(w, self._op_ms())
            while nth_int(res, 2) == 1:  # retransmitting: the final result of the same message follows
                self._waiters.remove(w)
                w = at.expect(pre)
                self._waiters.append(w)
                res = await at.wait(w, self._op_ms())
            result = nth_int(res, 2)
            if result:
                raise MqttTimeout("PUBLISH to %s not acknowledged (+QMTPUB result %d)" % (topic, result), result)
        except AtError as e:
            raise self._error(e) from None
        finally:
            self._waiters.remove(w)
            if qos:
                self._inflight -= 1
                self._slot.set()

    def _pub_cmd(self, cmd, payload, fixed):
        # -> (command line, data block or None); the fixed-length form names the length
        return (cmd + b",%d" % len(payload), payload) if fixed else (cmd, payload)

    async def disconnect(self):
        """Send DISCONNECT and close the client. Never raises for an already-closed session."""
        if self._connected:
            self._connected = False
            try:
                await self._call(b"AT+QMTDISC=%d" % self.id, b"+QMTDISC: %d," % self.id, 10000)
                self._maybe_open = False
            except MqttError as e:
                if self.m.log:
                    self.m.log("QMTDISC %d: %s" % (self.id, e))
        if self._maybe_open:
            await self._close()
        if self._reason is None:
            self._reason = LinkLost("disconnected", 5)
        self._lost.set()

