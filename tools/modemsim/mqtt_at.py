"""The module's MQTT client (AT+QMT*), one per client index, over a real socket with paho-mqtt.

Flow (quectel-bg96.md section 6, quectel-bc660k.md section 4): every action command answers ``OK`` (or an
error) at once and reports its result later as a URC. QMTOPEN opens TCP (and TLS when "ssl" is on for the
client) to the host:port; QMTCONN runs the MQTT CONNECT over that same socket through paho; QMTSUB/UNS/PUB
put the host's <msgid> on the wire as the packet identifier; incoming PUBLISHes become +QMTRECV with the
payload raw (not escaped); a closed link becomes +QMTSTAT.

Choices where the references are silent (documented in docs/modemsim.md):
* a refused CONNACK gives ``+QMTCONN: <id>,0,<code>`` and then ``+QMTSTAT: <id>,3`` (the broker closes the
  link after a refusal, so the client is closed); a CONNACK timeout gives ``+QMTSTAT: <id>,4``; a broker
  that drops the connection without a CONNACK (e.g. MQTT 3.1 to a 3.1.1-only broker) ``+QMTSTAT: <id>,1``;
* an OPEN not followed by CONN within ``open_idle`` seconds: the link is dropped with ``+QMTSTAT: <id>,7``
  on BC660K-GL (its documented behaviour) and ``+QMTSTAT: <id>,1`` on BG96 (the broker closing it);
* the 6th QoS>0 publish in flight is refused with ERROR;
* PUBACK not received within pkt_timeout x (retries+1): ``+QMTPUB: <id>,<msgid>,2`` (with ``,1,<n>``
  notices between when the timeout notice is on); paho does not retransmit, so retries are not resent.
"""

import ssl

from .core import AtError, ParamError
from .faults import FaultError
from .network import MqttLink, NetError, open_connection

STATE_CODES = {"open": 1, "connecting": 2, "connected": 3, "disconnecting": 4}


class MqttClient:
    def __init__(self, idx):
        self.idx = idx
        self.state = "closed"  # closed | opening | open | connecting | connected | disconnecting
        self.host = None
        self.port = None
        self.sock = None
        self.link = None
        self.token = 0  # bumped on every close, so late callbacks of an old link are ignored
        self.timers = set()
        self.pending = {}  # msgid -> (kind, timer handles)
        self.inflight = set()  # QoS>0 publish msgids awaiting their ack
        self.recv_slots = {}  # recv/mode 1: slot -> (msgid, topic, payload)
        self.refuse = None

    def describe(self):
        return {"state": self.state, "host": self.host, "port": self.port, "inflight": sorted(self.inflight)}


class _LinkHandler:
    """paho callbacks of one client, bound to the token of the link they belong to."""

    def __init__(self, modem, client, token):
        self.m, self.c, self.token = modem, client, token

    def _live(self):
        return self.c.token == self.token

    def on_connack(self, code):
        if self._live():
            self.m._mqtt_connack(self.c, code)

    def on_puback(self, mid):
        if self._live():
            self.m._mqtt_ack(self.c, mid, "pub", None)

    def on_suback(self, mid, granted):
        if self._live():
            self.m._mqtt_ack(self.c, mid, "sub", granted)

    def on_unsuback(self, mid):
        if self._live():
            self.m._mqtt_ack(self.c, mid, "uns", None)

    def on_message(self, mid, topic, payload, qos, retain):
        if self._live():
            self.m._mqtt_message(self.c, mid, topic, payload)

    def on_closed(self, why):
        if self._live():
            self.m._mqtt_link_closed(self.c, why)


class MqttCommands:
    MQTT_CLIENTS = 6
    MQTT_MAX_PAYLOAD = 1548
    MQTT_QUERY_NAMES = True  # BG96: +QMTCFG: "keepalive",120 ; BC660K-GL: +QMTCFG: 120
    MQTT_OPEN_IDLE_CODE = 1
    MQTT_TOPIC_MAX = 65535
    MQTT_CLIENTID_MAX = 256
    MQTT_HOST_MAX = 100

    def reset_volatile(self):
        super().reset_volatile()
        self.mqtt = [MqttClient(i) for i in range(self.MQTT_CLIENTS)]
        self.mqtt_cfg = [self.mqtt_cfg_defaults() for _ in range(self.MQTT_CLIENTS)]

    def close_network(self):
        super().close_network()
        for c in getattr(self, "mqtt", ()):
            self._mqtt_teardown(c)

    # ---- errors (profile decides the shape) ----
    def mqtt_state_error(self):
        return AtError()

    # ---- helpers ----
    def _client(self, c, i=0):
        idx = c.int(i, 0, self.MQTT_CLIENTS - 1)
        return self.mqtt[idx], self.mqtt_cfg[idx]

    def _mqtt_later(self, client, delay, fn, *args):
        token = client.token

        def run():
            client.timers.discard(h)
            if client.token == token:
                fn(*args)

        h = self.later(delay, run)
        client.timers.add(h)
        return h

    def _mqtt_cancel(self, client, handles):
        for h in handles:
            client.timers.discard(h)
            self.cancel_later(h)

    def _mqtt_teardown(self, client):
        """Close everything of a client silently (no URC)."""
        client.token += 1
        self._mqtt_cancel(client, list(client.timers))
        client.pending = {}
        client.inflight = set()
        if client.link is not None:
            client.link.close()
        elif client.sock is not None:
            self._mqtt_unwatch(client)
            try:
                client.sock.close()
            except OSError:
                pass
        client.link = None
        client.sock = None
        client.state = "closed"
        client.host = client.port = None

    def mqtt_close_with(self, idx, code):
        """Close a client and report +QMTSTAT: <idx>,<code> (link loss, fault)."""
        client = self.mqtt[idx]
        if client.state == "closed":
            return False
        self._mqtt_teardown(client)
        self.counters["qmtstat"] += 1
        self.urc("+QMTSTAT: %d,%d" % (idx, code))
        return True

    def mqtt_clients_on_cid(self, cid):
        return [c for c, cfg in zip(self.mqtt, self.mqtt_cfg) if c.state != "closed" and cfg.get("pdpcid", cid) == cid]

    # ---- AT+QMTCFG ----
    def at_QMTCFG(self, c, r):
        if c.kind == "test":
            for line in self.mqtt_cfg_test_lines():
                r.info(line)
            return
        if c.kind != "write":
            raise AtError()
        item = c.item(0)
        specs = self.mqtt_cfg_spec()
        if item not in specs:
            raise AtError("unknown option")  # like T6's unsupported SSL option: plain ERROR
        spec = specs[item]
        client, cfg = self._client(c, 1)
        if c.n <= 2:  # query
            vals = self.mqtt_cfg_query(item, cfg)
            body = ",".join(vals)
            r.info('+QMTCFG: "%s",%s' % (item, body) if self.MQTT_QUERY_NAMES else "+QMTCFG: " + body)
            return
        if self.mqtt_cfg_locked(item, client):
            raise self.mqtt_state_error()
        self.mqtt_cfg_set(item, spec, c, cfg)

    def mqtt_cfg_query(self, item, cfg):
        if item == "will":
            w = cfg["will"]
            if not w:
                return ["0"]
            return ["1", str(w["qos"]), str(w["retain"]), '"%s"' % w["topic"], '"%s"' % w["msg"]]
        return [str(v) for v in cfg[item]] if isinstance(cfg[item], (list, tuple)) else [str(cfg[item])]

    def mqtt_cfg_set(self, item, spec, c, cfg):
        if item == "will":
            flag = c.int(2, 0, 1)
            if flag == 0:
                cfg["will"] = None
                return
            cfg["will"] = {"qos": c.int(3, 0, 2), "retain": c.int(4, 0, 1),
                           "topic": c.str(5, maxlen=self.MQTT_TOPIC_MAX), "msg": c.str(6, default="")}
            return
        vals = []
        for k, (lo, hi, allowed) in enumerate(spec):
            if not c.has(2 + k):
                if k == 0:
                    raise ParamError("value missing")
                vals.append(cfg[item][k] if isinstance(cfg[item], list) else None)
                continue
            v = c.int(2 + k, lo, hi)
            if allowed is not None and v not in allowed:
                raise ParamError("value not allowed")
            vals.append(v)
        cfg[item] = vals if isinstance(cfg[item], list) else vals[0]

    def mqtt_cfg_locked(self, item, client):
        return False

    # ---- AT+QMTOPEN ----
    def at_QMTOPEN(self, c, r):
        if c.kind == "test":
            r.info("+QMTOPEN: (0-%d),<host_name>,(0-65535)" % (self.MQTT_CLIENTS - 1))
            r.compact = True  # T4: no blank line before OK
            return
        if c.kind == "read":
            for cl in self.mqtt:
                if cl.state not in ("closed", "opening"):
                    r.info('+QMTOPEN: %d,"%s",%d' % (cl.idx, cl.host, cl.port))
            return
        if c.kind != "write":
            raise AtError()
        client, cfg = self._client(c, 0)
        host = c.str(1, maxlen=self.MQTT_HOST_MAX)
        port = c.int(2, 0, 65535)
        if client.state != "closed":
            self.mqtt_open_busy(client, r)
            return
        client.state = "opening"
        client.host, client.port = host, port
        self.loop.create_task(self._mqtt_open(client, cfg, host, port))

    def mqtt_open_busy(self, client, r):
        r.after.append(lambda: self.urc("+QMTOPEN: %d,2" % client.idx))

    async def _mqtt_open(self, client, cfg, host, port):
        token = client.token
        gen = self.gen
        if not self.mqtt_network_ready(cfg):
            if client.token == token:
                client.state = "closed"
                client.host = client.port = None
                self.counters["mqtt_open_failures"] += 1
                self.urc("+QMTOPEN: %d,3" % client.idx)
            return
        try:
            tls = self.mqtt_tls(cfg, host)
        except NetError as e:
            tls, pre_error = None, e
        else:
            pre_error = None
        fail = self.armed_tls.pop(0) if (self.armed_tls and tls is not None) else None
        try:
            if pre_error is not None:
                raise pre_error
            sock = await self.loop.run_in_executor(
                None, lambda: open_connection(self.resolver, host, port, tls, self.lat["net_timeout"], fail))
        except NetError as e:
            if gen != self.gen or client.token != token:
                return
            client.state = "closed"
            client.host = client.port = None
            self.counters["mqtt_open_failures"] += 1
            if e.kind.startswith("tls"):
                self.counters["tls_failures"] += 1
            self.tr.event("QMTOPEN %d failed: %s" % (client.idx, e))
            self.urc("+QMTOPEN: %d,%d" % (client.idx, self.mqtt_open_error_code(e)))
            return
        if gen != self.gen or client.token != token:
            sock.close()
            return
        if tls is not None:
            self.counters["tls_handshakes"] += 1
        client.sock = sock
        client.state = "open"
        # Until QMTCONN hands the socket to paho, watch it for the server closing it.
        sock.setblocking(False)
        self.loop.add_reader(sock, self._mqtt_open_watch, client, client.token)
        self.tr.event("QMTOPEN %d: connected to %s:%d%s" % (client.idx, host, port, " (TLS)" if tls else ""))
        self._mqtt_later(client, self.lat["open_idle"], self._mqtt_open_idle, client)
        self.urc("+QMTOPEN: %d,0" % client.idx)
        self.fire("mqtt_opened")

    def _mqtt_open_watch(self, client, token):
        sock = client.sock
        if client.token != token or sock is None:
            return
        try:
            data = sock.recv(1)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
            return  # a TLS record without application data: nothing happened yet
        except OSError:  # reset by peer, a TLS alert (ssl.SSLError is an OSError)
            data = b""
        if not data:
            self.tr.event("QMTOPEN %d: the server closed the connection before CONNECT" % client.idx)
            self.mqtt_close_with(client.idx, 1)
        # a server talking before CONNECT is broken; the byte is dropped, as the module's stack would

    def _mqtt_unwatch(self, client):
        if client.sock is not None:
            try:
                self.loop.remove_reader(client.sock)
            except (ValueError, OSError):
                pass

    def mqtt_open_error_code(self, e):
        return 4 if e.kind == "dns" else -1

    def _mqtt_open_idle(self, client):
        if client.state == "open":
            self.tr.event("QMTOPEN %d: no CONNECT within %.1f s, link dropped" % (client.idx, self.lat["open_idle"]))
            self.mqtt_close_with(client.idx, self.MQTT_OPEN_IDLE_CODE)

    # ---- AT+QMTCLOSE ----
    def at_QMTCLOSE(self, c, r):
        if c.kind == "test":
            r.info("+QMTCLOSE: (0-%d)" % (self.MQTT_CLIENTS - 1))
            return
        if c.kind != "write":
            raise AtError()
        client, _ = self._client(c, 0)
        ok = client.state != "closed"
        self._mqtt_teardown(client)
        r.after.append(lambda: self.urc("+QMTCLOSE: %d,%d" % (client.idx, 0 if ok else -1)))

    # ---- AT+QMTCONN ----
    def at_QMTCONN(self, c, r):
        if c.kind == "test":
            r.info("+QMTCONN: (0-%d),<clientID>,<username>,<password>" % (self.MQTT_CLIENTS - 1))
            return
        if c.kind == "read":
            for cl in self.mqtt:
                if cl.state in STATE_CODES:
                    r.info("+QMTCONN: %d,%d" % (cl.idx, STATE_CODES[cl.state]))
            return
        if c.kind != "write":
            raise AtError()
        client, cfg = self._client(c, 0)
        cid = c.str(1, maxlen=self.MQTT_CLIENTID_MAX)
        user = c.str(2, default=None, maxlen=256)
        password = c.str(3, default=None, maxlen=256)
        if client.state != "open":
            raise self.mqtt_state_error()
        self._mqtt_cancel(client, list(client.timers))  # the open-idle timer
        self._mqtt_unwatch(client)
        will = None
        if cfg["will"]:
            w = cfg["will"]
            will = (w["topic"], w["msg"].encode("latin-1"), w["qos"], bool(w["retain"]))
        handler = _LinkHandler(self, client, client.token)
        client.link = MqttLink(self.loop, client.sock, handler, cid, self.mqtt_v311(cfg), cfg["session"],
                               cfg["keepalive"], user, password, will)
        client.sock = None
        client.state = "connecting"
        client.refuse = self.armed_refuse.pop(0) if self.armed_refuse else None
        self.counters["mqtt_connects"] += 1
        timeout = self.mqtt_timeout_total(cfg)
        self._mqtt_later(client, timeout, self._mqtt_connack_timeout, client)
        r.after.append(lambda: self._mqtt_send_connect(client))

    def _mqtt_send_connect(self, client):
        if client.link is None:
            return  # closed (QMTCLOSE, reset) before the OK went out
        try:
            client.link.connect()
        except OSError as e:  # the server closed the socket between QMTOPEN and QMTCONN
            self.tr.event("QMTCONN %d: CONNECT could not be sent: %s" % (client.idx, e))
            self.mqtt_close_with(client.idx, 1)

    def _mqtt_connack_timeout(self, client):
        if client.state == "connecting":
            self.mqtt_close_with(client.idx, 4)

    def _mqtt_connack(self, client, code):
        if client.state != "connecting":
            return
        self._mqtt_cancel(client, list(client.timers))  # the CONNACK timer
        if code == 0 and client.refuse is not None:
            self.tr.event("QMTCONN %d: broker accepted, fault broker_refuse reports CONNACK %d" % (
                client.idx, client.refuse))
            code = client.refuse
        if code != 0:
            self.urc("+QMTCONN: %d,0,%d" % (client.idx, code))
            self.mqtt_close_with(client.idx, 3)
            return
        client.state = "connected"
        self.urc("+QMTCONN: %d,0,0" % client.idx)
        self.fire("mqtt_connected")

    def _mqtt_link_closed(self, client, why):
        if client.state == "closed":
            return
        self.tr.event("MQTT client %d link closed (%s)" % (client.idx, why))
        self.mqtt_close_with(client.idx, 2 if why == "keepalive" else 1)

    # ---- AT+QMTDISC ----
    def at_QMTDISC(self, c, r):
        if c.kind == "test":
            r.info("+QMTDISC: (0-%d)" % (self.MQTT_CLIENTS - 1))
            return
        if c.kind != "write":
            raise AtError()
        client, _ = self._client(c, 0)
        if client.state != "connected":
            r.after.append(lambda: self.urc("+QMTDISC: %d,-1" % client.idx))
            return
        link = client.link
        client.link = None
        client.state = "disconnecting"

        def done():
            link.disconnect()
            self._mqtt_teardown(client)
            self.urc("+QMTDISC: %d,0" % client.idx)

        r.after.append(done)

    # ---- AT+QMTSUB / QMTUNS ----
    def at_QMTSUB(self, c, r):
        if c.kind == "test":
            r.info("+QMTSUB: (0-%d),<msgid>,<topic>,(0-2)" % (self.MQTT_CLIENTS - 1))
            return
        if c.kind != "write":
            raise AtError()
        client, cfg = self._client(c, 0)
        msgid = c.int(1, 1, 65535)
        if c.n < 4 or c.n % 2:
            raise ParamError("topic/qos pairs")
        topics = []
        for i in range(2, c.n, 2):
            topics.append((self._topic(c.str(i, maxlen=self.MQTT_TOPIC_MAX)), c.int(i + 1, 0, 2)))
        if client.state != "connected":
            raise self.mqtt_state_error()
        self._mqtt_pending(client, cfg, msgid, "sub")
        r.after.append(lambda: client.link.subscribe(topics, msgid))

    def at_QMTUNS(self, c, r):
        if c.kind == "test":
            r.info("+QMTUNS: (0-%d),<msgid>,<topic>" % (self.MQTT_CLIENTS - 1))
            return
        if c.kind != "write":
            raise AtError()
        client, cfg = self._client(c, 0)
        msgid = c.int(1, 1, 65535)
        if c.n < 3:
            raise ParamError("topic")
        topics = [self._topic(c.str(i, maxlen=self.MQTT_TOPIC_MAX)) for i in range(2, c.n)]
        if client.state != "connected":
            raise self.mqtt_state_error()
        self._mqtt_pending(client, cfg, msgid, "uns")
        r.after.append(lambda: client.link.unsubscribe(topics, msgid))

    def _topic(self, s):
        if not s:
            raise ParamError("empty topic")
        try:
            return s.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            raise self.mqtt_param_error() from None

    def _mqtt_pending(self, client, cfg, msgid, kind):
        pkt, retries, notice = cfg["timeout"]
        hs = []
        if kind == "pub" and notice:
            for n in range(1, retries + 1):
                hs.append(self._mqtt_later(client, pkt * n, self._mqtt_notice, client, msgid, n))
        hs.append(self._mqtt_later(client, pkt * (retries + 1), self._mqtt_give_up, client, msgid))
        client.pending[msgid] = (kind, hs)

    def _mqtt_notice(self, client, msgid, n):
        if msgid in client.pending:
            kind = client.pending[msgid][0]
            name = {"pub": "QMTPUB", "sub": "QMTSUB", "uns": "QMTUNS"}[kind]
            self.urc("+%s: %d,%d,1,%d" % (name, client.idx, msgid, n))

    def _mqtt_give_up(self, client, msgid):
        if msgid in client.pending:
            kind, _ = client.pending.pop(msgid)
            client.inflight.discard(msgid)
            name = {"pub": "QMTPUB", "sub": "QMTSUB", "uns": "QMTUNS"}[kind]
            self.urc("+%s: %d,%d,2" % (name, client.idx, msgid))

    def _mqtt_ack(self, client, mid, kind, granted):
        entry = client.pending.pop(mid, None)
        if entry is None:
            return
        self._mqtt_cancel(client, entry[1])
        if kind == "pub":
            client.inflight.discard(mid)
            self.urc("+QMTPUB: %d,%d,0" % (client.idx, mid))
            self.fire("mqtt_published")
        elif kind == "sub":
            self.urc("+QMTSUB: %d,%d,0,%s" % (client.idx, mid, ",".join(str(g) for g in granted)))
            if any(g < 128 for g in granted):
                self.fire("mqtt_subscribed")
        else:
            self.urc("+QMTUNS: %d,%d,0" % (client.idx, mid))

    # ---- AT+QMTPUB ----
    async def at_QMTPUB(self, c, r):
        if c.kind == "test":
            for line in self.mqtt_pub_test_lines():
                r.info(line)
            return
        if c.kind != "write":
            raise AtError()
        client, cfg = self._client(c, 0)
        msgid = c.int(1, 0, 65535)
        qos = c.int(2, 0, 2)
        retain = c.int(3, 0, 1)
        topic = c.str(4, maxlen=self.MQTT_TOPIC_MAX)
        if "+" in topic or "#" in topic:
            raise self.mqtt_param_error()
        topic_u = self._topic(topic)
        if (qos == 0) != (msgid == 0):
            raise ParamError("msgid must be 0 exactly for QoS 0")
        form, length, inline = self.mqtt_pub_form(c)
        if client.state != "connected":
            raise self.mqtt_state_error()
        if qos and (len(client.inflight) >= 5 or msgid in client.inflight):
            self.counters["qmtpub_refused_inflight"] += 1
            raise self.mqtt_inflight_error()
        hexmode = self.mqtt_send_hex(cfg)
        if form == "inline":
            payload = inline.encode("latin-1")
        else:
            await self.prompt(r)
            if form == "len":
                want = length * 2 if hexmode else length
                payload, how = await self.read_data("QMTPUB", exact=want, idle=self.lat["data_idle"], hexmode=hexmode)
            else:
                payload, how = await self.read_data("QMTPUB", ctrlz=True, idle=self.lat["data_idle"], hexmode=hexmode)
            if how == "esc":
                return  # cancelled: OK, nothing sent
            if how == "timeout":
                raise self.mqtt_param_error()
            if how == "overflow":
                raise self.mqtt_payload_error()
            self.mqtt_echo_payload(cfg, payload, form)
        if hexmode:
            try:
                payload = bytes.fromhex(payload.decode("ascii"))
            except ValueError:
                raise self.mqtt_param_error() from None
        if len(payload) > self.mqtt_max_payload(cfg):
            raise self.mqtt_payload_error()
        if client.state != "connected":
            raise self.mqtt_state_error()
        self.counters["qmtpub"] += 1
        self.counters["qmtpub_bytes"] += len(payload)
        if qos:
            client.inflight.add(msgid)
            self._mqtt_pending(client, cfg, msgid, "pub")

        def send():
            if client.link is None:
                return
            client.link.publish(topic_u, payload, qos, bool(retain), msgid)
            if qos == 0:
                self.urc("+QMTPUB: %d,0,0" % client.idx)
                self.fire("mqtt_published")

        r.after.append(send)

    def mqtt_pub_form(self, c):
        """-> (form, length, inline): form ctrlz | len | inline."""
        if c.n == 5:
            return "ctrlz", None, None
        raise ParamError("QMTPUB form")

    def mqtt_echo_payload(self, cfg, payload, form):
        pass

    def mqtt_send_hex(self, cfg):
        return False

    def mqtt_max_payload(self, cfg):
        return self.MQTT_MAX_PAYLOAD

    def mqtt_inflight_error(self):
        return AtError()

    def mqtt_payload_error(self):
        return AtError()

    def mqtt_param_error(self):
        return AtError()

    # ---- incoming ----
    def _mqtt_message(self, client, mid, topic, payload):
        cfg = self.mqtt_cfg[client.idx]
        self.counters["qmtrecv"] += 1
        self.counters["qmtrecv_bytes"] += len(payload)
        self.mqtt_deliver(client, cfg, mid, topic, payload)
        self.fire("mqtt_received")

    def mqtt_recv_line(self, client, cfg, mid, topic, payload, with_len, hexmode=False):
        """(bytes, render) of '+QMTRECV: <id>,<msgid>,"<topic>"[,<len>],"<payload>"'."""
        from .transcript import redact, redact_hex

        head = b'+QMTRECV: %d,%d,"%s",' % (client.idx, mid, topic)
        if with_len:
            head += b"%d," % len(payload)
        body = payload.hex().encode() if hexmode else payload
        render = [head + b'"'] + (redact_hex(body) if hexmode else redact(body)) + [b'"']
        return head + b'"' + body + b'"', render

    def mqtt_deliver(self, client, cfg, mid, topic, payload):
        data, render = self.mqtt_recv_line(client, cfg, mid, topic, payload, False)
        self.urc(data, render)

    # ---- control socket ----
    def state(self):
        s = super().state()
        s["mqtt"] = {str(c.idx): c.describe() for c in self.mqtt if c.state != "closed"}
        return s

    def profile_action(self, a):
        if a["action"] == "qmtstat":
            idx = int(a["client"])
            if not 0 <= idx < self.MQTT_CLIENTS:
                raise FaultError("qmtstat: no client %d" % idx)
            self.mqtt_close_with(idx, int(a["code"]))
            return
        super().profile_action(a)

    def mqtt_timeout_total(self, cfg):
        pkt, retries, _ = cfg["timeout"]
        return pkt * (retries + 1)
