# Long-lived tasks under one keeper: a task that raises is caught, logged (type and message; the logger
# redacts secrets and escapes control characters), counted and started again after a back-off (1, 2, 4 ...
# 60 s), so a bug or a full filesystem costs one cycle, never the task. A task returning is a failure too.
#
# Each task says when it is working (busy) and when it waits for something that may take long (idle: the
# network, the next interval, a command); progress (beat) marks a completed unit of work. A task is healthy
# while it is idle, or busy for less than its limit, and has not failed _CRASH_LOOP times in a row without
# progress. The hardware watchdog is fed only while every task is healthy (App.watchdog), so a task stuck
# in a step or crashing in a loop ends in a reset, and a blocked event loop too.
import asyncio

from cellmqtt.compat import const, ticks_diff, ticks_ms

_CRASH_LOOP = const(5)  # failures in a row without progress: unhealthy (the watchdog then resets the MCU)
_BACKOFF_MAX = const(60)


class Task:
    def __init__(self, name, fn, limit_s):
        self.name = name
        self.fn = fn  # async fn(task): runs until cancelled; raising or returning is a failure
        self.limit = limit_s * 1000
        self.since = ticks_ms()  # busy since (None: idle)
        self.restarts = 0
        self.fails = 0  # failures since the last beat
        self.last_error = None
        self.last_beat = None
        self.beats = 0
        self.restarting = False
        self.task = None  # the asyncio task (a sampler's set_interval wakes it)

    def busy(self):
        self.since = ticks_ms()

    def idle(self):
        self.since = None

    def beat(self):
        """One unit of work done (a sample stored, a publish acknowledged, a command answered)."""
        self.beats += 1
        self.fails = 0
        self.last_beat = ticks_ms()

    def health(self, now=None):
        """"ok", "restarting", "crash loop" or "stuck" (busy past its limit)."""
        if self.fails >= _CRASH_LOOP:
            return "crash loop"
        if self.restarting:
            return "restarting"
        if self.since is not None and ticks_diff(now if now is not None else ticks_ms(), self.since) > self.limit:
            return "stuck"
        return "ok"


class Tasks:
    def __init__(self, log):
        self.log = log
        self.all = []
        self.restarts = 0
        self.last_failure = None  # "<task>: <type>: <message>" of the last failure

    def add(self, name, fn, limit_s):
        t = Task(name, fn, limit_s)
        self.all.append(t)
        return t

    def start(self, name, fn, limit_s):
        """Run fn(task) under the keeper as its own asyncio task; returns the Task."""
        t = self.add(name, fn, limit_s)
        t.task = asyncio.create_task(self.keep(t))
        return t

    async def keep(self, t):
        """Run t.fn(t) for ever: restarted after every failure. Only cancellation (and BaseExceptions such as
        SystemExit, a reboot) end it. Also awaited directly, for the task that must end the program."""
        delay = 1
        while True:
            t.restarting = False
            t.busy()
            try:
                await t.fn(t)
                err = "returned"
            except Exception as e:  # noqa: BLE001 -- the point of the keeper; CancelledError is a BaseException
                err = "%s: %s" % (type(e).__name__, e)
            t.idle()
            t.restarting = True
            t.restarts += 1
            t.fails += 1
            t.last_error = err
            self.restarts += 1
            self.last_failure = "%s: %s" % (t.name, err)
            if t.fails == 1:
                delay = 1
            self.log.error("task %s failed (%s); restarting in %d s", t.name, err, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    def healthy(self):
        now = ticks_ms()
        for t in self.all:
            h = t.health(now)
            if h != "ok" and h != "restarting":
                return False
        return True

    def status(self):
        now = ticks_ms()
        return {t.name: t.health(now) for t in self.all}

    def cancel(self):
        for t in self.all:
            if t.task is not None:
                t.task.cancel()
