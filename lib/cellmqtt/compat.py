# Small shims so lib/ runs unchanged on MicroPython and CPython: const(), millisecond ticks, sleep_ms().
# The one place these live: every module imports them from here. (Importing this loads no asyncio: the
# synchronous modules -- outbox, certificates, cloud maths -- use it too.)
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


try:
    from time import ticks_add, ticks_diff, ticks_ms  # MicroPython
except ImportError:  # CPython
    import time as _time

    _PERIOD = 1 << 30  # the same wrap-around arithmetic as MicroPython

    def ticks_ms():
        return int(_time.monotonic() * 1000) & (_PERIOD - 1)

    def ticks_add(t, delta):
        return (t + delta) & (_PERIOD - 1)

    def ticks_diff(a, b):
        d = (a - b) & (_PERIOD - 1)
        return d - _PERIOD if d & (_PERIOD >> 1) else d


def sleep_ms(ms):
    """asyncio.sleep_ms on MicroPython (no float, no allocation for the argument); asyncio.sleep on CPython."""
    import asyncio  # a lookup in sys.modules once asyncio is loaded

    f = getattr(asyncio, "sleep_ms", None)
    return f(ms) if f is not None else asyncio.sleep(ms / 1000)
