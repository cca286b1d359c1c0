# The application: its parts wired together -- the supervisor (bring-up and recovery), the telemetry pipeline
# (sampler, outbox, publisher) and the dispatcher (commands, replies, activation) -- and the small surface the
# command handlers and readers use (status, set_interval, request_reboot). Built by app.main from what
# app.wiring made (the modem driver, the transport, the cloud profile).
import asyncio
import gc

from cellmqtt.compat import ticks_diff, ticks_ms

from app import config
from app.dispatcher import Dispatcher
from app.supervisor import Supervisor
from app.tasks import Tasks
from app.telemetry import Telemetry

VERSION = "1.0.0"


def _heap():
    # bytes of heap in use after a collection (a leak shows as growth between status replies); None on CPython
    gc.collect()
    used = getattr(gc, "mem_alloc", None)
    return used() if used else None


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
        self.tasks = Tasks(log)
        self.supervisor = Supervisor(self)
        self.telemetry = Telemetry(self)
        self.dispatcher = Dispatcher(self)
        transport.on_message(self.dispatcher.on_message)

    # ---- what command handlers use -------------------------------------------------------------------------

    def status(self):
        s = self.supervisor
        tm = self.telemetry
        return {"state": s.name(), "version": VERSION, "uptime": ticks_diff(ticks_ms(), self.started) // 1000,
                "interval": tm.interval, "outbox": tm.waiting(), "dropped": tm.dropped(),
                "published": tm.published, "rejected": tm.rejected, "reconnects": s.reconnects, "resets": self.modem.resets,
                "last_error": s.last_error, "signal": tm.last_signal, "tasks": self.tasks.status(),
                "task_restarts": self.tasks.restarts, "task_failure": self.tasks.last_failure,
                "stored": tm.stored_status(), "commands_dropped": self.dispatcher.dropped, "heap": _heap()}

    def set_interval(self, s):
        self.telemetry.set_interval(s)

    def request_reboot(self):
        self.supervisor.request_reboot()

    # ---- watchdog and run ------------------------------------------------------------------------------------

    async def watchdog(self, timeout_s):
        # Fed while the event loop runs (this task) and every long-lived task is healthy (app.tasks): idle, or
        # busy for less than the limit, and not crashing in a loop. A blocked loop, a step stuck past the
        # timeout or a task that keeps failing lets the hardware reset the MCU.
        wdt = self.board.watchdog(timeout_s * 1000) if timeout_s else None
        tasks = self.tasks
        while wdt is not None:
            if tasks.healthy():
                wdt.feed()
            await asyncio.sleep(timeout_s / 4)

    async def run(self):
        cfg = self.cfg
        self.log.info("cellmqtt app %s: modem %s, cloud %s", VERSION, cfg["modem"]["type"], cfg["cloud"]["profile"])
        tm = self.telemetry
        limit = cfg["watchdog_s"] or 300  # how long one step may take before its task counts as stuck
        ts = self.tasks
        sup = ts.add("supervisor", self.supervisor.run, limit)
        tm.task = ts.start("sampler", tm.sampler, limit)
        ts.start("publisher", tm.publisher, limit)
        ts.start("dispatcher", self.dispatcher.run, limit)
        wd = asyncio.create_task(self.watchdog(cfg["watchdog_s"]))
        try:
            await ts.keep(sup)  # in this task: a reboot (SystemExit on the unix port) ends the program
        finally:
            ts.cancel()
            wd.cancel()
