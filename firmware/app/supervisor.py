# The application: a supervisor state machine that brings the device online and keeps it there, plus the
# tasks that sample telemetry into the outbox, publish it, and answer cloud commands.
#
#   power -> sim -> registered -> pdp -> certificates -> connect -> subscribe -> running
#
# Every failure returns to the state that can fix it, after an exponential back-off with jitter; connects are
# also rate-limited (EnOS blocks a device for 5 minutes after 4 connects in 2 minutes). Credentials are
# computed anew for every connect and every subscription is renewed after every reconnect.
import asyncio
import random

from cellmqtt.at_engine import AtError
from cellmqtt.certs import CertError
from cellmqtt.cloudsign import CloudError, CloudMessageError
from cellmqtt.compat import ticks_diff, ticks_ms
from cellmqtt.quectel import CertUploadError, ModemError, ModemNotResponding, PdpError, RegistrationError, SimError
from cellmqtt.transport import LinkLost, MqttError, MqttTimeout, NetworkError, PayloadError, SubscribeRefused, TlsError
from micropython import const

from app import config as _config
from app.commands import Registry
from app.outbox import Outbox
from app.telemetry import READERS, signal

# The states, in bring-up order: a lower number is an earlier state (the one a worse failure goes back to).
_POWER = const(0)
_SIM = const(1)
_REG = const(2)
_PDP = const(3)
_CERTS = const(4)
_CONNECT = const(5)
_SUBSCRIBE = const(6)
_RUNNING = const(7)
STATES = ("power", "sim", "registered", "pdp", "certificates", "connect", "subscribe", "running")

VERSION = "1.0.0"

if hasattr(asyncio, "sleep_ms"):
    _sleep_ms = asyncio.sleep_ms
else:
    def _sleep_ms(ms):
        return asyncio.sleep(ms / 1000)
# (connects, window s): EnOS blocks after 4 in 2 minutes -- stay at 3; others get a sane cap too
RATE = {"enos": (3, 120), "huawei": (6, 60), "mqtt": (10, 60)}


def make_modem(cfg, board, log, pipe=None, transcript=None, state_dir="."):
    if cfg["modem"]["type"] == "bg96":
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
    # modem.awake() for a module that does not sleep
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
        self.modem = m = modem or make_modem(cfg, board, log.debug, state_dir=cfg["state_dir"])
        m.on_event = self._on_modem_event
        self.awake = m.awake if hasattr(m, "awake") else self._no_sleep
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
        self.state = _POWER
        self.t = None
        self.online = asyncio.Event()
        self._trouble = asyncio.Event()
        self._reason = None  # (error, state that fixes it) of the trouble
        self._sampler_task = None
        self._resample = False
        self._wake_pub = asyncio.Event()
        self._inbox = []
        self._inbox_ev = asyncio.Event()
        self.failures = self.net_failures = self.reconnects = self.samples = self.published = 0
        self.connects = []
        self.last_error = None
        self.last_sample = {}
        self.last_signal = {}
        self.started = self.heartbeat = ticks_ms()
        self.reboot_requested = False
        self._loss_state = None
        self._reset_seen = False
        self.bench = None  # `make bench`: called at every telemetry cycle

    # ---- helpers -----------------------------------------------------------------------------------------

    def _no_sleep(self):
        return _NO_SLEEP

    def now(self):
        return self.modem.now()

    def status(self):
        return {"state": STATES[self.state], "version": VERSION, "uptime": ticks_diff(ticks_ms(), self.started) // 1000,
                "interval": self.interval, "outbox": len(self.outbox), "dropped": self.outbox.dropped,
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
        if kind == "reset" and self.state != _POWER:
            self._reset_seen = True  # whatever state we are in: the module lost its settings, start over
            self._trouble_set(ModemNotResponding("the modem restarted"), _POWER)
        elif kind == "pdp" and self.state >= _CONNECT:
            self._trouble_set(PdpError("PDP context deactivated by the network"), _PDP)

    def _trouble_set(self, err, state):
        # several signs of one event (a reset prints "pdpdeact", then RDY, and closes the MQTT client): the one
        # that needs the earliest state wins
        if self._reason is None or state < self._reason[1]:
            self._reason = (err, state)
        self._trouble.set()

    # ---- the supervisor ------------------------------------------------------------------------------------

    async def supervise(self):
        m = self.modem
        cfg = self.cfg
        while True:
            self.heartbeat = ticks_ms()
            if self._reset_seen:
                self._reset_seen = False
                self.log.warn("the modem restarted: starting over")
                self.state = _POWER
            st = self.state
            try:
                if st == _POWER:
                    self.online.clear()
                    await m.start()
                    self.log.info("modem ready (%s)", cfg["modem"]["type"])
                elif st == _SIM:
                    await m.check_sim()
                    if hasattr(m, "configure_radio"):
                        await m.configure_radio()
                    if hasattr(m, "configure_power"):
                        await m.configure_power()
                elif st == _REG:
                    stat = await m.wait_registered()
                    self.log.info("registered on the network (%s, cell %s)", "roaming" if stat == 5 else "home",
                                  "/".join(m.cell) if m.cell else "?")
                elif st == _PDP:
                    ip = await m.pdp_up()
                    t = await m.sync_clock()
                    self.log.info("network up: ip %s, clock %d (%s)", ip, t, "trusted" if m.time_trusted else "untrusted")
                elif st == _CERTS:
                    if cfg["tls"]["enabled"]:
                        n = await m.provision_certs()
                        self.log.info("certificates: %d bytes sent to the modem%s", n, "" if n else " (unchanged)")
                        await m.configure_ssl()
                elif st == _CONNECT:
                    await self._connect()
                    self.log.info("MQTT connected over %s (%s transport)", "TLS" if cfg["tls"]["enabled"] else "TCP",
                                  cfg["mqtt"]["transport"])
                elif st == _SUBSCRIBE:
                    if getattr(self.profile, "securemode", 2) == 3:
                        self.state = await self._activating()
                        continue
                    await self._subscribe()
                    self.failures = self.net_failures = 0
                    self.online.set()
                    self._wake_pub.set()
                    self.log.info("running")
                    if hasattr(m, "allow_sleep"):
                        # the publisher first (its exchange starts while the module is still held awake): the
                        # queued samples go out before the module may sleep, not after a sleep/wake round trip
                        await asyncio.sleep(0)
                        await m.allow_sleep()
                else:
                    await self._running()
                self.state = st + 1
            except Exception as e:  # every failure goes back to the state that can fix it, after a back-off
                nxt = self._loss_state if st >= _SUBSCRIBE and self._loss_state is not None else self._after_failure(st, e)
                self._loss_state = None
                self.last_error = "%s: %s" % (type(e).__name__, e)
                self.failures += 1
                self.online.clear()
                b = cfg["backoff"]
                d = min(b["max_s"], b["min_s"] * (1 << min(self.failures, 16))) * (1 + random.uniform(-1, 1) * b["jitter"])
                self.log.warn("%s failed: %s; %s in %.1f s", STATES[st], self.last_error, STATES[nxt], d)
                self.state = nxt
                await asyncio.sleep(d)

    async def _watch(self):
        # Wait for trouble (a lost link, a modem event, a reboot request) while the session lasts; returns the
        # (error, state that fixes it).
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
        return self._reason

    async def _running(self):
        err, state = await self._watch()
        self.online.clear()
        self.reconnects += 1
        if state == _CONNECT and self.t is not None:
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
        self.log.info("waiting for the activation message")
        try:
            err, state = await asyncio.wait_for(self._watch(), 60)
        except asyncio.TimeoutError:
            raise MqttTimeout("no activation message within 60 s") from None
        await self.t.disconnect()
        if self.profile.securemode == 2:  # activated: reconnect with the new secret at once
            self.log.info("reconnecting with the device secret")
            return _CONNECT
        self._loss_state = state
        raise err

    async def _watch_lost(self, t):
        err = await t.wait_lost()
        # +QMTSTAT 2 (PINGREQ failed): the data path is broken -- re-activate PDP (quectel-bg96.md 6)
        self._trouble_set(err, _PDP if getattr(err, "code", None) == 2 else _CONNECT)

    def _after_failure(self, st, e):
        m = self.modem
        if isinstance(e, (ModemNotResponding, AtError)):
            return _POWER if isinstance(e, ModemNotResponding) or st <= _SIM or self.failures >= 3 else st
        if isinstance(e, SimError):
            return _SIM
        if isinstance(e, RegistrationError):
            return _REG
        if isinstance(e, (CertError, CertUploadError)):
            return _CERTS
        if isinstance(e, ModemError):
            return _PDP if m.registered else _REG
        if isinstance(e, TlsError):
            return _PDP  # re-read the clock and reconfigure TLS before trying again
        if isinstance(e, NetworkError):
            self.net_failures += 1
            return _REG if not m.registered else _PDP if self.net_failures >= 3 else _CONNECT
        if isinstance(e, (MqttError, CloudError)):
            return _CONNECT
        self.log.error("unexpected %s in %s: %s", type(e).__name__, STATES[st], e)
        return _POWER

    async def _connect(self):
        q = self.cfg["mqtt"]
        self.t = t = self.modem.mqtt()
        t.on_message(self._on_message)
        # the connect-rate gate: at most n connects per window, one per second
        n, window = RATE.get(self.cfg["cloud"]["profile"], (6, 60))
        while True:
            now = ticks_ms()
            self.connects = [c for c in self.connects if ticks_diff(now, c) < window * 1000]
            if len(self.connects) >= n:
                wait = window * 1000 - ticks_diff(now, self.connects[0]) + 100
            else:
                wait = 1100 - ticks_diff(now, self.connects[-1]) if self.connects else 0
            if wait <= 0:
                break
            self.log.info("connect rate limit: waiting %d ms", wait)
            await _sleep_ms(wait)
        trusted = self.modem.time_trusted
        sig = self.cfg["cloud"]["huawei"]["sig_type"]  # Huawei: "auto" follows the clock; "0"/"1" force it
        if sig != "auto":
            trusted = sig == "1"
        cid, user, pw = self.profile.credentials(self.now(), trusted)  # fresh for every connect
        if pw:
            self.log.add_secret(pw)
        self.log.info("connecting to %s:%d as %s", q["host"], q["port"], cid)
        try:
            await t.connect(q["host"], q["port"], cid, user, pw, q["keepalive"], q["clean"])
        finally:
            if getattr(t, "sent_connect", True):  # only CONNECTs the broker saw count against its limit
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
                if fn is signal:  # the modem: only while online, and awake
                    if self.online.is_set():
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
            except (MqttError, AtError) as e:
                self.log.warn("publish of sample %d failed: %s", sid, e)
                self.online.clear()  # the supervisor sees the lost link and reconnects
                await asyncio.sleep(1)
                continue
            else:
                self.published += 1
            self.outbox.ack(sid)

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
        else:
            if cmd.kind == "activate":
                return await self._activate(cmd)
            if cmd.reply_topic is None:
                return  # acks of our own uploads, messages without a reply
            ok, body = self.registry.run(self, cmd)
            self.log.info("command %s: %s", cmd.name, "done" if ok else body)
            r = p.reply(cmd, None, body or None) if ok else p.reply(cmd, getattr(p, "FAIL", 1260), {"error": body})
        if r:
            await self._reply(r, p.REPLY_QOS)

    async def _reply(self, r, qos):
        async with self.awake():
            await self.t.publish(r[0], r[1], qos)

    async def _activate(self, cmd):
        # EnOS dynamic activation: persist the device secret atomically first (a power cut must never leave the
        # device without it), answer, then reconnect with securemode 2 (clouds.md 2.2).
        _config.save_secret(self.secrets_path, "cloud.enos.device_secret", cmd.secret)
        self.log.add_secret(cmd.secret)
        self.log.info("activated: device secret stored")
        try:
            await self._reply(self.profile.reply(cmd), 0)
        except (MqttError, AtError) as e:
            self.log.warn("activation reply not sent: %s", e)
        self.profile = self.profile.with_secret(cmd.secret)
        self.cfg["cloud"]["enos"]["device_secret"] = cmd.secret
        self._trouble_set(LinkLost("reconnecting with the new device secret"), _CONNECT)

    # ---- watchdog and run ------------------------------------------------------------------------------------

    async def watchdog(self, timeout_s):
        wdt = self.board.watchdog(timeout_s * 1000) if timeout_s else None
        while wdt is not None:
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
