# The supervisor: the state machine that brings the device online and keeps it there (bring-up and recovery).
#
#   power -> sim -> registered -> pdp -> certificates -> connect -> subscribe -> running
#
# Every failure returns to the state that can fix it, after an exponential back-off with jitter; connects are
# also rate-limited as the cloud profile asks (profile.RATE). Credentials are computed anew for every connect
# and every subscription is renewed after every reconnect. It sees modem errors and transport errors only.
import asyncio
import os
import random

from cellmqtt import modem as md
from cellmqtt.certs import CertError
from cellmqtt.cloudsign import CloudError
from cellmqtt.compat import sleep_ms, ticks_diff, ticks_ms
from cellmqtt.transport import (
    MODULE,
    NETWORK,
    ConnectRefused,
    LinkLost,
    MqttError,
    MqttTimeout,
    NetworkError,
    SubscribeRefused,
    TlsError,
)
from micropython import const

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
CONNECT = _CONNECT  # the state a reconnect starts from (the dispatcher's activation asks for it)
_LAYER_STATE = {MODULE: _POWER, NETWORK: _PDP}  # what a lost session's layer needs; else connect again


class Supervisor:
    def __init__(self, app):
        self.app = app
        self.state = _POWER
        self.online = asyncio.Event()
        self.clock_known = asyncio.Event()  # set once the module clock was read and can be trusted
        self._trouble = asyncio.Event()
        self._reason = None  # (error, state that fixes it) of the trouble
        self._loss_state = None
        self._reset_seen = False
        self.failures = self.net_failures = self.reconnects = 0
        self.connects = []
        self.last_error = None
        self.task = None  # its app.tasks record: busy while a bring-up step runs, idle while waiting
        self.reboot_requested = False
        self.activation_lost = False
        app.modem.listen(self._on_modem_event)

    # ---- signals from elsewhere (the AT reader, the dispatcher) -------------------------------------------

    def _on_modem_event(self, kind, value):
        self.app.log.info("modem event %s %s", kind, value)
        if kind == md.RESET and self.state != _POWER:
            self._reset_seen = True  # whatever state we are in: the module lost its settings, start over
            self.trouble(md.ModemNotResponding("the modem restarted"), _POWER)
        elif kind == md.PDP and self.state >= _CONNECT:
            self.trouble(md.PdpError("PDP context deactivated by the network"), _PDP)

    def trouble(self, err, state=None):
        """Something broke: go back to ``state`` (default: what the error's layer needs; a module that does not
        answer: power; else connect again). Several signs of one event -- a reset prints "pdpdeact", then RDY,
        and closes the MQTT client -- the one that needs the earliest state wins."""
        if state is None:
            state = _POWER if isinstance(err, md.ModemNotResponding) else \
                _LAYER_STATE.get(getattr(err, "layer", None), _CONNECT)
        if self._reason is None or state < self._reason[1]:
            self._reason = (err, state)
        self._trouble.set()

    def request_reboot(self):
        self.reboot_requested = True
        self._trouble.set()  # wakes the supervisor, which reboots once the reply has gone out

    def name(self):
        return STATES[self.state]

    # ---- the state machine ---------------------------------------------------------------------------------

    async def run(self, task):
        """The state machine, for ever (app.tasks keeps it: a bug in a step costs one round, not the device)."""
        self.task = task
        app = self.app
        m = app.modem
        cfg = app.cfg
        log = app.log
        while True:
            task.busy()  # a step stuck past the watchdog's limit lets the hardware reset the MCU
            if self._reset_seen:
                self._reset_seen = False
                log.warn("the modem restarted: starting over")
                self.state = _POWER
            st = self.state
            try:
                if st == _POWER:
                    self.online.clear()
                    await m.start()
                    log.info("modem ready (%s)", cfg["modem"]["type"])
                elif st == _SIM:
                    await m.check_sim()
                    await m.configure_radio()
                    await m.configure_power()
                elif st == _REG:
                    stat = await m.wait_registered()
                    log.info("registered on the network (%s, cell %s)", "roaming" if stat == 5 else "home",
                             "/".join(m.cell) if m.cell else "?")
                elif st == _PDP:
                    ip = await m.pdp_up()
                    t = await m.sync_clock()
                    log.info("network up: ip %s, clock %d (%s)", ip, t, "trusted" if m.time_trusted else "untrusted")
                    if m.time_trusted:
                        self.clock_known.set()
                elif st == _CERTS:
                    if cfg["tls"]["enabled"]:
                        n = await m.provision_certs()
                        log.info("certificates: %d bytes sent to the modem%s", n, "" if n else " (unchanged)")
                        await m.configure_ssl()
                elif st == _CONNECT:
                    await self._connect()
                    log.info("MQTT connected over %s (%s transport)", "TLS" if cfg["tls"]["enabled"] else "TCP",
                             cfg["mqtt"]["transport"])
                elif st == _SUBSCRIBE:
                    if app.profile.activation_pending():
                        self.state = await self._activating()
                        continue
                    await self._subscribe()
                    task.beat()
                    self.failures = self.net_failures = 0
                    self.online.set()
                    log.info("running")
                    # the publisher first (its exchange starts while the module is still held awake): the queued
                    # samples go out before the module may sleep, not after a sleep/wake round trip
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
                log.warn("%s failed: %s; %s in %.1f s", STATES[st], self.last_error, STATES[nxt], d)
                self.state = nxt
                task.idle()  # a back-off (up to backoff.max_s) is waiting, not hanging
                await asyncio.sleep(d)

    async def _watch(self):
        # Wait for trouble (a lost link, a modem event, a reboot request) while the session lasts; returns the
        # (error, state that fixes it).
        self._trouble.clear()
        self._reason = None
        lost = asyncio.create_task(self._watch_lost(self.app.transport))
        try:
            while not self._trouble.is_set():
                self.task.idle()  # running: waiting on events is the normal state (the watchdog feeds)
                await self._trouble.wait()
                self.task.busy()
                if self.reboot_requested:
                    await asyncio.sleep(1)  # let the reply go out
                    self.app.log.warn("rebooting on command")
                    self.app.board.reboot()
        finally:
            lost.cancel()
        return self._reason

    async def _running(self):
        err, state = await self._watch()
        self.online.clear()
        self.reconnects += 1
        if state == _CONNECT:
            try:
                await self.app.transport.disconnect()
            except MqttError as e:
                self.app.log.debug("disconnect: %s", e)
        self._loss_state = state
        raise err  # a lost link is a failure like any other: the state that fixes it, after the back-off

    async def _activating(self):
        # Dynamic activation: the cloud pushes the device secret right after CONNACK. Send nothing meanwhile
        # (no SUBSCRIBE, no telemetry): a module that drops URCs while it sends (BC660K-GL data mode) would lose
        # the only copy, and the cloud already switched to the new secret.
        app = self.app
        app.log.info("waiting for the activation message")
        try:
            err, state = await asyncio.wait_for(self._watch(), 60)
        except asyncio.TimeoutError:
            raise MqttTimeout("no activation message within 60 s") from None
        await app.transport.disconnect()
        if not app.profile.activation_pending():  # activated: reconnect with the new secret at once
            app.log.info("reconnecting with the device secret")
            return _CONNECT
        self._loss_state = state
        raise err

    async def _watch_lost(self, t):
        self.trouble(await t.wait_lost())

    def _after_failure(self, st, e):
        m = self.app.modem
        if isinstance(e, md.ModemNotResponding):
            return _POWER
        if isinstance(e, md.CommandFailed):
            return _POWER if st <= _SIM or self.failures >= 3 else st
        if isinstance(e, md.SimError):
            return _SIM
        if isinstance(e, md.RegistrationError):
            return _REG
        if isinstance(e, (CertError, md.CertUploadError)):
            return _CERTS
        if isinstance(e, md.ModemError):
            return _PDP if m.registered else _REG
        if isinstance(e, LinkLost) and e.layer in _LAYER_STATE:
            return _LAYER_STATE[e.layer]
        if isinstance(e, TlsError):
            return _PDP  # re-read the clock and reconfigure TLS before trying again
        if isinstance(e, NetworkError):
            self.net_failures += 1
            return _REG if not m.registered else _PDP if self.net_failures >= 3 else _CONNECT
        if isinstance(e, (MqttError, CloudError)):
            return _CONNECT
        self.app.log.error("unexpected %s in %s: %s", type(e).__name__, STATES[st], e)
        return _POWER

    async def _connect(self):
        app = self.app
        q = app.cfg["mqtt"]
        t = app.transport
        profile = app.profile
        # the connect-rate gate: at most n connects per window (the cloud's rule), one per second
        n, window = profile.RATE
        while True:
            now = ticks_ms()
            self.connects = [c for c in self.connects if ticks_diff(now, c) < window * 1000]
            if len(self.connects) >= n:
                wait = window * 1000 - ticks_diff(now, self.connects[0]) + 100
            else:
                wait = 1100 - ticks_diff(now, self.connects[-1]) if self.connects else 0
            if wait <= 0:
                break
            app.log.info("connect rate limit: waiting %d ms", wait)
            self.task.idle()
            await sleep_ms(wait)
            self.task.busy()
        cid, user, pw = profile.credentials(app.modem.now(), app.modem.time_trusted)  # fresh for every connect
        if pw:
            app.log.add_secret(pw)
        app.log.info("connecting to %s:%d as %s", q["host"], q["port"], cid)
        try:
            await t.connect(q["host"], q["port"], cid, user, pw, q["keepalive"], q["clean"])
        except ConnectRefused as e:
            if e.credentials() and profile.activation_pending() and self._activation_mark() is not None:
                # An activation session was accepted before, and its secret never reached flash (a reset in the
                # window): the cloud has switched to a secret this device does not have. Only the console can fix
                # it; say so, and do not hammer the cloud (the longest back-off).
                self.activation_lost = True
                self.failures = 16
                raise MqttError("activation lost: an activation session was accepted (%s) but its device secret "
                                "never reached flash; reset the device's activation in the cloud console, or put its "
                                "device secret into secrets.json" % self._activation_mark(), e.code) from None
            raise
        finally:
            if t.sent_connect:  # only CONNECTs the broker saw count against its limit
                self.connects.append(ticks_ms())
        if profile.activation_pending():
            self._write_activation_mark(app.modem.now())

    # The activation mark (<state_dir>/activation): written when an activation session is accepted, removed
    # once the pushed secret is on flash (app.dispatcher). Found at a refused activation connect, it tells a
    # lost activation from a misconfigured one.

    def _mark_path(self):
        return self.app.cfg["state_dir"] + "/activation"

    def _activation_mark(self):
        try:
            with open(self._mark_path()) as f:
                return f.read(40).strip() or "?"
        except (OSError, ValueError):
            return None

    def _write_activation_mark(self, unix_s):
        try:
            with open(self._mark_path(), "w") as f:
                f.write("session accepted at unix time %d" % unix_s)
        except OSError as e:
            self.app.log.warn("activation mark not written: %s", e)

    def clear_activation_mark(self):
        try:
            os.remove(self._mark_path())
        except OSError:
            pass

    async def _subscribe(self):
        app = self.app
        for topic, qos in app.profile.subscriptions():
            try:
                await app.transport.subscribe(topic, qos)
            except SubscribeRefused as e:
                if app.profile.SUBSCRIBE_REQUIRED:
                    raise
                app.log.warn("subscription refused (the cloud pushes anyway): %s", e)
