# Telemetry readers: each returns a flat dict of readings; the pipeline merges them into one sample.
#   demo    a simulated sensor (temperature random walk) for the unix port and the demo
#   signal  the modem's signal and cell (AT commands: read every telemetry.health_every samples)
#   uptime  seconds since the application started
#   outbox  samples waiting and dropped
# A reader is fn(app) -> dict, or an async one when it must wait; a board adds its sensors with
# Board.readers() -> {name: fn}. Plain functions cost no coroutine per sample. READERS maps a name to
# (fn, uses the modem): a reader that uses the modem runs only while online, with the module held awake.
import random

from cellmqtt.compat import ticks_diff, ticks_ms


def demo(app):
    app.demo_value = round(app.demo_value + random.uniform(-0.2, 0.2), 2)
    return {"temperature": app.demo_value}


async def signal(app):
    tm = app.telemetry
    if tm.samples % app.cfg["telemetry"]["health_every"]:
        return tm.last_signal
    s = await app.modem.signal()
    tm.last_signal = s
    return s


def uptime(app):
    return {"uptime": ticks_diff(ticks_ms(), app.started) // 1000}


def outbox(app):
    tm = app.telemetry
    return {"outbox": tm.waiting(), "dropped": tm.dropped()}


READERS = {"demo": (demo, False), "signal": (signal, True), "uptime": (uptime, False), "outbox": (outbox, False)}
