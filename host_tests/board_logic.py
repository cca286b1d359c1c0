# The MCU board files' own logic on the MicroPython unix port, against fake `machine`, `esp32` and `pyb` modules
# (the hardware below the board layer). Run by host_tests/test_boards_packaging.py as
#     micropython host_tests/board_logic.py <board>
# with MICROPYPATH = a copy of what the board's manifest freezes, laid out as on the device (/ and /lib).
# Prints one line "RESULT <json>": {scenario: {...observations...} or {"error": repr}} for the test to check.
import asyncio
import json
import sys
from time import ticks_diff, ticks_ms

EVENTS = []  # (what, pin or name, value, ms since T0)
T0 = ticks_ms()


def now():
    return ticks_diff(ticks_ms(), T0)


class FakeModule:
    pass


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 5
    PULL_DOWN = 6
    status = None  # callable() -> level read on the STATUS pin

    def __init__(self, pin_id, mode=-1, pull=None, value=None):
        self.id = pin_id
        self.v = value
        EVENTS.append(("init", pin_id, [mode, pull, value], now()))

    def value(self, v=None):
        if v is None:
            return Pin.status() if Pin.status else 0
        self.v = v
        EVENTS.append(("set", self.id, v, now()))


class UART:
    RTS = 1
    CTS = 2
    made = []  # noqa: RUF012  (the fake records into its class)

    def __init__(self, uart_id, **kw):
        UART.made.append([uart_id, kw])

    def ioctl(self, *a):  # asyncio's poller asks; never ready
        return 0


class WDT:
    made = []  # noqa: RUF012  (the fake records into its class)
    feeds = []  # noqa: RUF012

    def __init__(self, timeout):
        WDT.made.append(timeout)

    def feed(self):
        WDT.feeds.append(now())


class ADC:
    ATTN_11DB = 3

    def __init__(self, pin, atten=None):
        self.atten = atten

    def read_uv(self):
        return 1900000


machine = FakeModule()
machine.Pin, machine.UART, machine.WDT, machine.ADC = Pin, UART, WDT, ADC
machine.resets = 0


def _reset():
    machine.resets += 1


machine.reset = _reset
sys.modules["machine"] = machine

esp32 = FakeModule()
esp32.raw_temperature = lambda: 122  # degrees F
sys.modules["esp32"] = esp32


class ADCAll:
    def __init__(self, bits, mask):
        pass

    def read_core_temp(self):
        return 36.64

    def read_vref(self):
        return 3.297


pyb = FakeModule()
pyb.ADCAll = ADCAll
sys.modules["pyb"] = pyb


def cfg_for(b, **over):
    from app import config

    raw = {"board": b.NAME, "modem": {"type": b.MODEM, "baud": 115200},
           "mqtt": {"host": "iot.example.com"}, "cloud": {"profile": "huawei", "huawei": {"device_id": "d1", "secret": "s3cret"}}}
    for k, v in over.items():
        node = raw
        parts = k.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return config.validate(raw)


def start(b, **over):
    """What the app's start-up does before it builds the parts: validate the configuration (which refuses what
    the firmware does not contain), check it is for this board, then build the board."""
    from app.main import check_board

    cfg = cfg_for(b, **over)
    check_board(cfg, b)
    return b(cfg)


def pin_events(pin_id, since=0):
    return [[e[2], e[3]] for e in EVENTS if e[1] == pin_id and e[0] == "set" and e[3] >= since]


def pulses(pin_id, active, since=0):
    """[(start ms, width ms)] of the active phases of an output pin."""
    out = []
    start = None
    for v, t in pin_events(pin_id, since):
        if v == active and start is None:
            start = t
        elif v != active and start is not None:
            out.append([start, t - start])
            start = None
    return out


def run(board_name):
    import board as bm
    import board_base

    res = {}

    def scenario(name, fn):
        EVENTS.clear()
        try:
            r = fn()
            if hasattr(r, "send"):
                r = asyncio.run(r)
            res[name] = r
        except Exception as e:  # noqa: BLE001  (every scenario reports, none stops the others)
            res[name] = {"error": "%s: %s" % (type(e).__name__, e), "key": getattr(e, "key", None)}

    B = bm.Board

    def init():
        b = B(cfg_for(B))
        return {"events": [list(e[:3]) for e in EVENTS], "uarts": len(UART.made), "status": b.status(),
                "name": B.NAME, "modem": B.MODEM, "module_name": bm.NAME, "module_modem": bm.MODEM}

    scenario("init", init)

    async def power_on():
        b = B(cfg_for(B))
        b.SETTLE_MS = 50  # boards without STATUS wait this long instead (scaled down)
        if not B.PWRKEY:
            return {"did": await b.power_on()}
        pk, act = B.PWRKEY
        t_start = now()

        def status():
            p = pulses(pk, act, t_start)
            return 1 if p and now() - (p[0][0] + p[0][1]) >= 300 else 0  # up 300 ms after the pulse

        Pin.status = status
        did = await b.power_on()
        Pin.status = None
        return {"did": did, "pulses": pulses(pk, act, t_start), "done_at": now() - t_start,
                "other_sets": [e[1] for e in EVENTS if e[0] == "set" and e[1] != pk]}

    scenario("power_on", power_on)

    async def power_on_no_status():
        b = B(cfg_for(B))
        b.ON_TIMEOUT_MS = 400
        b.SETTLE_MS = 50
        Pin.status = lambda: 0
        t = now()
        try:
            await b.power_on()
            return {"raised": None, "after": now() - t}
        except Exception as e:  # noqa: BLE001  (what was raised is the observation)
            return {"raised": type(e).__name__, "msg": str(e), "after": now() - t}
        finally:
            Pin.status = None

    scenario("power_on_no_status", power_on_no_status)

    async def power_off():
        b = B(cfg_for(B))
        b.SETTLE_MS = 50
        if not B.PWRKEY:
            return {"did": await b.power_off()}
        pk, act = B.PWRKEY
        t_start = now()

        def status():
            p = pulses(pk, act, t_start)
            return 0 if p and now() - (p[0][0] + p[0][1]) >= 200 else 1  # down 200 ms after the pulse

        Pin.status = status
        did = await b.power_off()
        Pin.status = None
        return {"did": did, "pulses": pulses(pk, act, t_start)}

    scenario("power_off", power_off)

    async def reset():
        b = B(cfg_for(B))
        if not B.RESET:
            return {"did": await b.reset()}
        pin, act = B.RESET
        t = now()
        did = await b.reset()
        return {"did": did, "pulses": pulses(pin, act, t), "pwrkey_sets": len(pin_events(B.PWRKEY[0], t))}

    scenario("reset", reset)

    def status_levels():
        b = B(cfg_for(B))
        out = []
        for level in (0, 1):
            Pin.status = lambda v=level: v
            out.append(b.status())
        Pin.status = None
        return out

    scenario("status_levels", status_levels)

    def uart():
        UART.made.clear()
        b = B(cfg_for(B, **{"modem.baud": 921600}))
        p = b.pipe()
        return {"made": [[m[0], dict(m[1])] for m in UART.made], "pipe": type(p).__name__}

    scenario("uart", uart)

    def uart_flow():
        if not hasattr(bm, "RTS"):
            return {"skip": "board has no RTS/CTS setting"}
        UART.made.clear()
        bm.RTS, bm.CTS = 18, 19
        try:
            B(cfg_for(B)).uart()
        finally:
            bm.RTS = bm.CTS = None
        return {"made": [[m[0], dict(m[1])] for m in UART.made]}

    scenario("uart_flow", uart_flow)

    def wdt_direct():
        WDT.made.clear()
        b = B(cfg_for(B))
        w = b.watchdog(20000)
        return {"made": list(WDT.made), "type": type(w).__name__}

    scenario("wdt_direct", wdt_direct)

    async def wdt_long():
        # the app's timeout beyond the hardware's: fed in software while the app feeds, then let lapse
        WDT.made.clear()
        WDT.feeds.clear()
        b = B(cfg_for(B))
        b.WDT_MAX_MS = 200  # scaled down: 200 ms hardware, 600 ms app timeout
        t = now()
        w = b.watchdog(600)
        for _ in range(4):  # the app feeds for 400 ms ...
            await asyncio.sleep_ms(100)
            w.feed()
        await asyncio.sleep_ms(1200)  # ... then hangs
        feeds = [f - t for f in WDT.feeds]
        return {"made": list(WDT.made), "type": type(w).__name__, "feeds": feeds}

    scenario("wdt_long", wdt_long)

    def refusals():
        out = {}
        cases = {"board": {"board": "other_board"},
                 "modem": {"modem.type": "bc660k" if B.MODEM == "bg96" else "bg96"},
                 "socket": {"mqtt.transport": "socket"},
                 "plain": {"cloud.profile": "mqtt", "cloud.mqtt.client_id": "c1"},
                 "enos": {"cloud.profile": "enos", "cloud.enos.product_key": "p", "cloud.enos.device_key": "d",
                          "cloud.enos.device_secret": "s3cret"},
                 "huawei": {}}
        for name, over in cases.items():
            try:
                start(B, **over)
                out[name] = None
            except Exception as e:  # noqa: BLE001  (what was raised is the observation)
                out[name] = [type(e).__name__, getattr(e, "key", None), str(e)]
        return out

    scenario("refusals", refusals)

    def sha1_missing():
        from cellmqtt import cloudsign

        real = sys.modules.get("hashlib")
        fake = FakeModule()
        fake.sha256 = __import__("hashlib").sha256
        sys.modules["hashlib"] = fake
        cloudsign.hashlib = fake  # the profile core imported the port's hashlib already
        try:
            start(B, **{"cloud.profile": "enos", "cloud.enos.product_key": "p", "cloud.enos.device_key": "d",
                        "cloud.enos.device_secret": "s3cret", "cloud.enos.signmethod": "sha1"})
            return None
        except Exception as e:  # noqa: BLE001  (what was raised is the observation)
            return [type(e).__name__, getattr(e, "key", None)]
        finally:
            cloudsign.hashlib = real
            if real is None:
                del sys.modules["hashlib"]
            else:
                sys.modules["hashlib"] = real

    scenario("sha1_missing", sha1_missing)

    def safe_mode():
        # the whole start-up path: a config for the other modem puts the firmware in safe mode, not a crash
        from app.main import run as app_run

        with open("config.json", "w") as f:
            json.dump({"board": B.NAME, "modem": {"type": "bc660k" if B.MODEM == "bg96" else "bg96"},
                       "mqtt": {"host": "h"}, "cloud": {"profile": "huawei", "huawei": {"device_id": "d",
                                                                                          "secret": "x"}}}, f)
        r = app_run("config.json", "secrets.json")
        return [type(r).__name__, getattr(r, "key", None)]

    scenario("safe_mode", safe_mode)

    async def readers():
        b = B(cfg_for(B))
        out = {}
        for name, fn in b.readers().items():
            out[name] = await fn(None)
        return out

    scenario("readers", readers)

    def reboot():
        n = machine.resets
        B(cfg_for(B)).reboot()
        return machine.resets - n

    scenario("reboot", reboot)

    res["constants"] = {"PWRKEY": B.PWRKEY, "RESET": B.RESET, "STATUS": B.STATUS, "PWRKEY_ON_MS": B.PWRKEY_ON_MS,
                        "PWRKEY_OFF_MS": B.PWRKEY_OFF_MS, "RESET_MS": B.RESET_MS, "WDT_MAX_MS": B.WDT_MAX_MS,
                        "UART_ID": B.UART_ID, "UART_KW": B.UART_KW, "base": board_base.__name__}
    print("RESULT " + json.dumps(res))


run(sys.argv[1])
