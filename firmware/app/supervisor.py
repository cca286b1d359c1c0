# The application: a supervisor state machine that brings the device online and keeps it there, plus the
# tasks that sample telemetry into the outbox, publish it, and answer cloud commands.
#
#   power -> sim -> registered -> pdp/time -> certificates -> connect -> subscribe -> running
#
# Every failure returns to the state that can fix it, after an exponential back-off with jitter; connects are
# also rate-limited (EnOS blocks a device for 5 minutes after 4 connects in 2 minutes). Credentials are
# computed anew for every connect and every subscription is renewed after every reconnect.
import asyncio
import json
import random

from cellmqtt.compat import ticks_ms, ticks_diff
from cellmqtt.at_engine import AtError
from cellmqtt.transport import (MqttError, ConnectRefused, TlsError, NetworkError, LinkLost, SubscribeRefused,
                                PayloadError, MqttTimeout)
from cellmqtt.quectel import ModemError, ModemNotResponding, SimError, RegistrationError, PdpError, CertUploadError
from cellmqtt.certs import CertError
from cellmqtt.cloudsign import CloudError, CloudMessageError

from app.outbox import Outbox
from app.commands import Registry
from app.telemetry import READERS
from app import config as _config

POWER = "power"
SIM = "sim"
REG = "registered"
PDP = "pdp"
CERTS = "certificates"
CONNECT = "connect"
SUBSCRIBE = "subscribe"
RUNNING = "running"
_ORDER = (POWER, SIM, REG, PDP, CERTS, CONNECT, SUBSCRIBE, RUNNING)

VERSION = "1.0.0"

if hasattr(asyncio, "sleep_ms"):
    _sleep_ms = asyncio.sleep_ms
else:
    def _sleep_ms(ms):
        return asyncio.sleep(ms / 1000)
# (connects, window s): EnOS blocks after 4 in 2 minutes -- stay at 3; others get a sane cap too
RATE = {"enos": (3, 120), "huawei": (6, 60), "mqtt": (10, 60)}


def make_modem(cfg, board, log, pipe=None, transcript=None, state_dir="."):
    kind = cfg["modem"]["type"]
    if kind == "bg96":
        from cellmqtt.bg96 import Bg96 as cls
    else:
        from cellmqtt.bc660k import Bc660k as cls
    return cls(board, cfg, pipe, transcript, log, state_dir)


def make_profile(cfg):
    c = cfg["cloud"]
    name = c["profile"]
    if name == "huawei":
        from cellmqtt.huawei import Huawei
        h = c["huawei"]
        return Huawei(h["device_id"], h["secret"], h["id_type"], h["api"], h["codec"], h["service_id"])
    if name == "enos":
        from cellmqtt.enos import EnOS
        e = c["enos"]
        return EnOS(e["product_key"], e["device_key"], e["device_secret"], e["product_secret"], e["client_id"],
                    e["signmethod"], e["upper"])
    from app.plain import Plain
    p = c["mqtt"]
    return Plain(p["client_id"], p["username"], p["password"], p["telemetry_topic"], p["command_topic"])


class _NoSleep:
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


_NO_SLEEP = _NoSleep()


class App:
    def __init__(self, cfg, board, log, modem=None, secrets_path="secrets.json"):
        self.cfg = cfg
        self.board = board
        self.log = log
        self.secrets_path = secrets_path
        for s in _config.secrets(cfg):
            log.add_secret(s)
        self.modem = modem or make_modem(cfg, board, log.debug, state_dir=cfg["state_dir"])
        self.modem.on_event = self._on_modem_event
        self._sleepy = hasattr(self.modem, "awake")
        self.profile = make_profile(cfg)
        self._topic = self.profile.telemetry({"x": 0}, None, 0)[0]  # the telemetry topic (fixed per device)
        ob = cfg["outbox"]
        self.outbox = Outbox(ob["dir"], ob["max_bytes"], ob["max_records"])
        self.registry = Registry()
        self.readers = []
        extra = board.readers() if hasattr(board, "readers") else {}
        for name in cfg["telemetry"]["readings"]:
            fn = READERS.get(name) or extra.get(name)
            if fn is None:
                raise _config.ConfigError("telemetry.readings", "unknown reading %s" % name)
            self.readers.append(fn)
        self.interval = cfg["telemetry"]["interval_s"]
        self.state = POWER
        self.t = None
        self.online = asyncio.Event()
        self._trouble = asyncio.Event()
        self._reason = None
        self._sampler_task = None
        self._resample = False
        self._wake_pub = asyncio.Event()
        self._inbox = []
        self._inbox_ev = asyncio.Event()
        self.failures = 0
        self.net_failures = 0
        self.connects = []
        self.reconnects = 0
        self.samples = 0
        self.published = 0
        self.commands_done = 0
        self.last_error = None
        self.last_sample = {}
        self.last_signal = {}
        self.started = ticks_ms()
        self.heartbeat = ticks_ms()
        self.reboot_requested = False
        self.activations = 0
        self._loss_state = None
        self._reset_seen = False
        self.bench = None  # `make bench`: called at every telemetry cycle

    # ---- helpers -----------------------------------------------------------------------------------------

    def awake(self):
        return self.modem.awake() if self._sleepy else _NO_SLEEP

    def now(self):
        return self.modem.now()

    def status(self):
        st = self.outbox.stats()
        return {"state": self.state, "version": VERSION, "uptime": ticks_diff(ticks_ms(), self.started) // 1000,
                "interval": self.interval, "outbox": len(self.outbox), "dropped": st.get("dropped", 0),
                "published": self.published, "reconnects": self.reconnects, "resets": self.modem.resets,
                "last_error": self.last_error, "signal": self.last_signal}

    def request_reboot(self):
        self.reboot_requested = True
        self._trouble.set()  # wakes the supervisor, which reboots once the reply has gone out

    def set_interval(self, s):
        self.interval = s
        if self._sampler_task is not None and not self._resample:
            self._resample = True
            self._sampler_task.cancel()

    def _on_modem_event(self, kind, value):
        self.log.info("modem event %s %s", kind, value)
        if kind == "reset" and self.state != POWER:
            self._reset_seen = True  # whatever state we are in: the module lost its settings, start over
            self._trouble_set(ModemNotResponding("the modem restarted"), POWER)
        elif kind == "pdp" and self.state in (CONNECT, SUBSCRIBE, RUNNING):
            self._trouble_set(PdpError("PDP context deactivated by the network"), PDP)

    def _trouble_set(self, err, state):
        # several signs of one event (a reset prints "pdpdeact", then RDY, and closes the MQTT client): the one
        # that needs the earliest state wins
        if self._reason is None or _ORDER.index(state) < _ORDER.index(self._reason[1]):
            self._reason = (err, state)
        self._trouble.set()

    def _delay(self):
        b = self.cfg["backoff"]
        d = min(b["max_s"], b["min_s"] * (1 << min(self.failures, 16)))
        j = b["jitter"]
        return max(0.0, d * (1 + random.uniform(-j, j)))

    # ---- the supervisor ------------------------------------------------------------------------------------

    async def supervise(self):
        m = self.modem
        while True:
            self.heartbeat = ticks_ms()
            if self._reset_seen:
                self._reset_seen = False
                self.log.warn("the modem restarted: starting over")
                self.state = POWER
            st = self.state
            try:
                if st == POWER:
                    self._set_offline()
                    await m.start()
                    self.log.info("modem ready (%s)", self.cfg["modem"]["type"])
                    nxt = SIM
                elif st == SIM:
                    await m.check_sim()
                    if hasattr(m, "configure_radio"):
                        await m.configure_radio()
                    if hasattr(m, "configure_power"):
                        await m.configure_power()
                    nxt = REG
                elif st == REG:
                    stat = await m.wait_registered()
                    self.log.info("registered on the network (%s, cell %s)", "roaming" if stat == 5 else "home",
                                  "/".join(m.cell) if m.cell else "?")
                    nxt = PDP
                elif st == PDP:
                    ip = await m.pdp_up()
                    t = await m.sync_clock()
                    self.log.info("network up: ip %s, clock %d (%s)", ip, t, "trusted" if m.time_trusted else "untrusted")
                    nxt = CERTS
                elif st == CERTS:
                    if self.cfg["tls"]["enabled"]:
                        n = await m.provision_certs()
                        self.log.info("certificates: %d bytes sent to the modem%s", n, "" if n else " (unchanged)")
                        await m.configure_ssl()
                    nxt = CONNECT
                elif st == CONNECT:
                    await self._connect()
                    self.log.info("MQTT connected over %s (%s transport)", "TLS" if self.cfg["tls"]["enabled"] else "TCP",
                                  self.cfg["mqtt"]["transport"])
                    nxt = SUBSCRIBE
                elif st == SUBSCRIBE:
                    if getattr(self.profile, "securemode", 2) == 3:
                        nxt = await self._activating()
                        self.state = nxt
                        continue
                    await self._subscribe()
                    if hasattr(m, "allow_sleep"):
                        await m.allow_sleep()
                    self.failures = 0
                    self.net_failures = 0
                    self.online.set()
                    self._wake_pub.set()
                    self.log.info("running")
                    nxt = RUNNING
                else:
                    nxt = await self._running()
                self.state = nxt
            except Exception as e:  # every failure goes back to the state that can fix it, after a back-off
                nxt = self._loss_state if st in (RUNNING, SUBSCRIBE) and self._loss_state else self._after_failure(st, e)
                self._loss_state = None
                self.last_error = "%s: %s" % (type(e).__name__, e)
                self.failures += 1
                self._set_offline()
                d = self._delay()
                self.log.warn("%s failed: %s; %s in %.1f s", st, self.last_error, nxt, d)
                self.state = nxt
                await asyncio.sleep(d)

    def _set_offline(self):
        self.online.clear()

    async def _running(self):
        self._trouble.clear()
        self._reason = None
        lost = asyncio.create_task(self._watch_lost(self.t))
        try:
            while not self._trouble.is_set():
                self.heartbeat = None  # running: waiting on events is the normal state (the watchdog feeds)
                await self._trouble.wait()
                self.heartbeat = ticks_ms()
                if self.reboot_requested:
                    await asyncio.sleep(1)  # let the reply go out
                    self.log.warn("rebooting on command")
                    self.board.reboot()
        finally:
            lost.cancel()
        err, state = self._reason
        self._set_offline()
        self.reconnects += 1
        if state == CONNECT and self.t is not None:
            try:
                await self.t.disconnect()
            except (MqttError, AtError) as e:
                self.log.debug("disconnect: %s", e)
        self._loss_state = state
        raise err  # a lost link is a failure like any other: the state that fixes it, after the back-off

    async def _activating(self):
        # EnOS dynamic activation: the cloud pushes the device secret right after CONNACK, unsubscribed. Send
        # nothing meanwhile (no SUBSCRIBE, no telemetry): a module that drops URCs while it sends (BC660K-GL
        # data mode) would lose the only copy, and the cloud already switched to the new secret.
        self._trouble.clear()
        self._reason = None
        self.log.info("waiting for the activation message")
        lost = asyncio.create_task(self._watch_lost(self.t))
        try:
            await asyncio.wait_for(self._trouble.wait(), 60)
        except asyncio.TimeoutError:
            raise MqttTimeout("no activation message within 60 s") from None
        finally:
            lost.cancel()
        err, state = self._reason
        if self.t is not None:
            await self.t.disconnect()
        if getattr(self.profile, "securemode", 2) == 2:  # activated: reconnect with the new secret at once
            self.log.info("reconnecting with the device secret")
            return CONNECT
        self._loss_state = state
        raise err

    async def _watch_lost(self, t):
        err = await t.wait_lost()
        # +QMTSTAT 2 (PINGREQ failed): the data path is broken -- re-activate PDP (quectel-bg96.md 6)
        self._trouble_set(err, PDP if getattr(err, "code", None) == 2 else CONNECT)

    def _after_failure(self, st, e):
        m = self.modem
        if isinstance(e, (ModemNotResponding, AtError)) and not isinstance(e, MqttError):
            if isinstance(e, ModemNotResponding) or st in (POWER, SIM):
                return POWER
            return st if self.failures < 3 else POWER
        if isinstance(e, SimError):
            return SIM
        if isinstance(e, RegistrationError):
            return REG
        if isinstance(e, (PdpError, ModemError)) and not isinstance(e, CertUploadError):
            return REG if not m.registered else PDP
        if isinstance(e, (CertError, CertUploadError)):
            return CERTS
        if isinstance(e, TlsError):
            return PDP  # re-read the clock and reconfigure TLS before trying again
        if isinstance(e, NetworkError):
            self.net_failures += 1
            if not m.registered:
                return REG
            return PDP if self.net_failures >= 3 else CONNECT
        if isinstance(e, (MqttError, CloudError)):
            return CONNECT
        self.log.error("unexpected %s in %s: %s", type(e).__name__, st, e)
        return POWER

    async def _rate_gate(self):
        n, window = RATE.get(self.cfg["cloud"]["profile"], (6, 60))
        while True:
            now = ticks_ms()
            self.connects = [t for t in self.connects if ticks_diff(now, t) < window * 1000]
            wait = 0
            if len(self.connects) >= n:
                wait = window * 1000 - ticks_diff(now, self.connects[0]) + 100
            elif self.connects:
                wait = 1100 - ticks_diff(now, self.connects[-1])  # at most one connect per second
            if wait <= 0:
                break
            self.log.info("connect rate limit: waiting %d ms", wait)
            await asyncio.sleep(wait / 1000)

    async def _connect(self):
        q = self.cfg["mqtt"]
        self.t = self.modem.mqtt()
        self.t.on_message(self._on_message)
        await self._rate_gate()
        cid, user, pw = self.profile.credentials(self.now(), self.modem.time_trusted)  # fresh for every connect
        if pw:
            self.log.add_secret(pw)
        self.log.info("connecting to %s:%d as %s", q["host"], q["port"], cid)
        try:
            await self.t.connect(q["host"], q["port"], cid, user, pw, q["keepalive"], q["clean"])
        finally:
            if getattr(self.t, "sent_connect", True):  # only CONNECTs the broker saw count against its limit
                self.connects.append(ticks_ms())

    async def _subscribe(self):
        for topic, qos in self.profile.subscriptions():
            try:
                await self.t.subscribe(topic, qos)
            except SubscribeRefused as e:
                if self.profile.SUBSCRIBE_REQUIRED:
                    raise
                self.log.warn("subscription refused (the cloud pushes anyway): %s", e)

    # ---- telemetry -----------------------------------------------------------------------------------------

    async def sampler(self):
        """Every interval: read the sensors and store the sample in the outbox before anything is sent."""
        while True:
            self.heartbeat = ticks_ms()
            if self.bench is not None:
                self.bench()
            await self.sample()
            try:
                await _sleep_ms(self.interval * 1000)  # no allocation (asyncio.wait_for costs ~2 KB a call)
            except asyncio.CancelledError:
                if not self._resample:
                    raise
                self._resample = False  # set_interval: sample now and go on with the new interval

    async def sample(self):
        data = {}
        for fn in self.readers:
            try:
                if fn is READERS.get("signal"):
                    if not self.online.is_set():
                        continue
                    async with self.awake():
                        data.update(await fn(self))
                else:
                    r = fn(self)
                    data.update(await r if hasattr(r, "send") else r)
            except (AtError, MqttError, ModemError, OSError) as e:
                self.log.warn("reading failed: %s", e)
        if not data:
            return None
        self.last_sample = data
        self.samples += 1
        # the cloud-ready message goes into the outbox: nothing to rebuild when it is sent (or sent again)
        sid = self.outbox.next_sid()
        try:
            self._topic, payload = self.profile.telemetry(data, self.now(), sid)
        except CloudError as e:
            self.log.error("sample refused by the cloud profile: %s", e)
            return None
        self.outbox.append(payload)
        self._wake_pub.set()
        return sid

    async def publisher(self):
        """Send the outbox oldest first; a sample leaves the outbox only once the broker acknowledged it."""
        qos = self.cfg["mqtt"]["qos"]
        while True:
            await self.online.wait()
            head = self.outbox.peek(1)
            if not head:
                self._wake_pub.clear()
                await self._wake_pub.wait()
                continue
            sid, payload = head[0]
            try:
                async with self.awake():
                    await self.t.publish(self._topic, payload, qos)
            except PayloadError as e:
                self.log.error("sample %d refused by the transport (%s): dropped", sid, e)
                self.outbox.ack(sid)
                continue
            except (MqttError, AtError) as e:
                self.log.warn("publish of sample %d failed: %s", sid, e)
                self.online.clear()  # the supervisor sees the lost link and reconnects
                await asyncio.sleep(1)
                continue
            self.outbox.ack(sid)
            self.published += 1

    # ---- commands ------------------------------------------------------------------------------------------

    def _on_message(self, topic, payload):
        # from the AT reader: queue only (bounded), never block it
        if len(self._inbox) >= 8:
            self.log.warn("command queue full: message on %s dropped", topic)
            return
        self._inbox.append((topic, payload))
        self._inbox_ev.set()

    async def commander(self):
        while True:
            if not self._inbox:
                self._inbox_ev.clear()
                await self._inbox_ev.wait()
                continue
            topic, payload = self._inbox.pop(0)
            try:
                await self.handle(topic, payload)
            except (MqttError, AtError) as e:
                self.log.warn("reply to %s not sent: %s", topic, e)

    async def handle(self, topic, payload):
        p = self.profile
        try:
            cmd = p.parse(topic, payload)
        except CloudMessageError as e:
            self.log.warn("command refused (%s): %s", e.fault, e)
            r = p.error_reply(e)
            if r:
                await self._reply(r, p.REPLY_QOS)
            return
        if cmd.kind == "activate":
            await self._activate(cmd)
            return
        if cmd.reply_topic is None:
            return  # acks of our own uploads, messages without a reply
        ok, body = self.registry.run(self, cmd)
        self.commands_done += 1
        self.log.info("command %s: %s", cmd.name, "done" if ok else body)
        if ok:
            r = p.reply(cmd, None, body if body else None)
        else:
            r = p.reply(cmd, getattr(p, "FAIL", 1260), {"error": body})
        await self._reply(r, p.REPLY_QOS)

    async def _reply(self, r, qos):
        async with self.awake():
            await self.t.publish(r[0], r[1], qos)

    async def _activate(self, cmd):
        # EnOS dynamic activation: persist the device secret atomically first (a power cut must never leave the
        # device without it), answer, then reconnect with securemode 2 (clouds.md 2.2).
        _config.save_secret(self.secrets_path, "cloud.enos.device_secret", cmd.secret)
        self.log.add_secret(cmd.secret)
        self.activations += 1
        self.log.info("activated: device secret stored")
        try:
            await self._reply(self.profile.reply(cmd), 0)
        except (MqttError, AtError) as e:
            self.log.warn("activation reply not sent: %s", e)
        self.profile = self.profile.with_secret(cmd.secret)
        self.cfg["cloud"]["enos"]["device_secret"] = cmd.secret
        self._trouble_set(LinkLost("reconnecting with the new device secret"), CONNECT)

    # ---- watchdog and run ------------------------------------------------------------------------------------

    async def watchdog(self, timeout_s):
        wdt = self.board.watchdog(timeout_s * 1000) if timeout_s else None
        if wdt is None:
            return
        while True:
            # fed while the event loop runs (this task) and the supervisor is either running or making progress:
            # a blocked loop or a bring-up step stuck past the timeout lets the hardware reset the MCU
            if self.heartbeat is None or ticks_diff(ticks_ms(), self.heartbeat) < timeout_s * 1000:
                wdt.feed()
            await asyncio.sleep(timeout_s / 4)

    async def run(self):
        self.log.info("cellmqtt app %s: modem %s, cloud %s", VERSION, self.cfg["modem"]["type"], self.cfg["cloud"]["profile"])
        tasks = [asyncio.create_task(f) for f in (self.sampler(), self.publisher(), self.commander(),
                                                   self.watchdog(self.cfg["watchdog_s"]))]
        self._sampler_task = tasks[0]
        try:
            await self.supervise()
        finally:
            for t in tasks:
                t.cancel()
