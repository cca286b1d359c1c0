# The application: its parts wired together -- the supervisor (bring-up and recovery), the telemetry pipeline
# (sampler, outbox, publisher) and the dispatcher (commands, replies, activation) -- and the small surface the
# command handlers and readers use (status, set_interval, request_reboot). Built by app.main from what
# app.wiring made (the modem driver, the transport, the cloud profile).
import asyncio

from cellmqtt.compat import ticks_diff, ticks_ms

from app import config
from app.dispatcher import Dispatcher
from app.supervisor import Supervisor
from app.telemetry import Telemetry

VERSION = "1.0.0"


class App:
    def __init__(self, cfg, board, log, modem, transport, profile, secrets_path="secrets.json"):
        self.cfg = cfg
        self.board = board
        self.log = log
        self.modem = modem
        self.transport = transport
        self.profile = profile
        self.secrets_path = secrets_path
        for s in config.secrets(cfg):
            log.add_secret(s)
        self.started = ticks_ms()
        self.demo_value = 21.0  # the demo reader's simulated temperature
        self.supervisor = Supervisor(self)
        self.telemetry = Telemetry(self)
        self.dispatcher = Dispatcher(self)
        transport.on_message(self.dispatcher.on_message)

    # ---- what command handlers use -------------------------------------------------------------------------

    def status(self):
        s = self.supervisor
        tm = self.telemetry
        return {"state": s.name(), "version": VERSION, "uptime": ticks_diff(ticks_ms(), self.started) // 1000,
                "interval": tm.interval, "outbox": len(tm.outbox), "dropped": tm.outbox.dropped,
                "published": tm.published, "rejected": tm.rejected, "reconnects": s.reconnects, "resets": self.modem.resets,
                "last_error": s.last_error, "signal": tm.last_signal}

    def set_interval(self, s):
        self.telemetry.set_interval(s)

    def request_reboot(self):
        self.supervisor.request_reboot()

    # ---- watchdog and run ------------------------------------------------------------------------------------

    async def watchdog(self, timeout_s):
        wdt = self.board.watchdog(timeout_s * 1000) if timeout_s else None
        sup = self.supervisor
        while wdt is not None:
            # fed while the event loop runs (this task) and the supervisor is either running or making progress:
            # a blocked loop or a bring-up step stuck past the timeout lets the hardware reset the MCU
            if sup.heartbeat is None or ticks_diff(ticks_ms(), sup.heartbeat) < timeout_s * 1000:
                wdt.feed()
            await asyncio.sleep(timeout_s / 4)

    async def run(self):
        cfg = self.cfg
        self.log.info("cellmqtt app %s: modem %s, cloud %s", VERSION, cfg["modem"]["type"], cfg["cloud"]["profile"])
        tm = self.telemetry
        tasks = [asyncio.create_task(f) for f in (tm.sampler(), tm.publisher(), self.dispatcher.run(),
                                                   self.watchdog(cfg["watchdog_s"]))]
        tm._task = tasks[0]
        try:
            await self.supervisor.run()
        finally:
            for t in tasks:
                t.cancel()
