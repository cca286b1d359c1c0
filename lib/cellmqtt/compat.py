# Small shims so lib/ runs unchanged on MicroPython and CPython: millisecond ticks.
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
