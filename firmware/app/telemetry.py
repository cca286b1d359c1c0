# Telemetry readers: each returns a flat dict of readings; the app merges them into one sample.
#   demo    a simulated sensor (temperature random walk) for the unix port and the demo
#   signal  the modem's signal and cell (AT commands: read every telemetry.health_every samples)
#   uptime  seconds since the application started
#   outbox  samples waiting and dropped
# A reader is fn(app) -> dict, or an async one when it must wait (the modem); a board adds its sensors with
# Board.readers() -> {name: fn}. Plain functions cost no coroutine per sample.
import random

from cellmqtt.compat import ticks_diff, ticks_ms


def demo(app):
    app._demo = round(getattr(app, "_demo", 21.0) + random.uniform(-0.2, 0.2), 2)
    return {"temperature": app._demo}


async def signal(app):
    if app.samples % app.cfg["telemetry"]["health_every"]:
        return app.last_signal
    s = await app.modem.signal()
    app.last_signal = s
    return s


def uptime(app):
    return {"uptime": ticks_diff(ticks_ms(), app.started) // 1000}


def outbox(app):
    st = app.outbox.stats()
    return {"outbox": len(app.outbox), "dropped": st.get("dropped", 0)}


READERS = {"demo": demo, "signal": signal, "uptime": uptime, "outbox": outbox}
