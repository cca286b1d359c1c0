# qemu_cm3 bench entry (`make bench`, tools/bench/mcu.py seeds it as /main.py): the firmware as firmware/main.py
# runs it, instrumented. Prints, for the host to parse:
#   BENCH_BASELINE <heap bytes in use after start-up, after a collection>
#   BENCH_CYCLE <samples> <bytes allocated since boot (not the probe's)> <heap in use> <UART reads> <AT commands>
#               <largest free block, -1: not probed> <heap in use after a collection>
# at every telemetry cycle (which then collects: the live heap is measured, the peak is the in-use figure). UART reads count the AT engine's reads of the modem UART (each wake-up of the
# reader that found bytes); AT commands count the command lines sent. bench.json (on the flash, written by
# the host) may set "rxidle" (the UART's quiet-line coalescing in ms; 0: off), "collect" (collect at every
# cycle), "largest_free" (probe the largest free block at every cycle), "headroom" (bytes left free above the
# baseline, the rest pinned), "gc_threshold".
import gc
import json

import board
import micropython
from cellmqtt.at_engine import StreamPipe

try:
    with open("bench.json") as f:
        _opts = json.load(f)
except OSError:
    _opts = {}

if "gc_threshold" in _opts:
    gc.threshold(_opts["gc_threshold"])

_stats = [0, 0, 0]  # UART reads, AT commands, bytes the largest-free-block probe allocated


class _CountingPipe(StreamPipe):
    async def readinto(self, buf):
        n = await self._s.readinto(buf)
        if n:
            _stats[0] += 1
        return n

    def send(self, data):
        if data[:2] == b"AT":
            _stats[1] += 1
        self._u.write(data)


class _BenchBoard(board.Board):
    if "rxidle" in _opts:
        UART_KW = (("rxbuf", 4096), ("rxidle", _opts["rxidle"]))

    def pipe(self):
        return _CountingPipe(self.uart())


board.Board = _BenchBoard  # app.main builds board.Board(cfg)


def _largest_free():
    # the largest free heap block in bytes: a MemoryError waits where it is smaller than what is asked for (what
    # the probe allocates is counted apart, so that the cycle's own allocation can be told from it)
    t0 = micropython.mem_total()
    lo, hi = 0, gc.mem_free()
    while hi - lo > 16:
        mid = (lo + hi) // 2
        try:
            b = bytearray(mid)
            del b
            lo = mid
        except MemoryError:
            hi = mid
    _stats[2] += micropython.mem_total() - t0
    return lo


def _prepare(app):
    gc.collect()
    print("BENCH_BASELINE %d" % gc.mem_alloc())
    headroom = _opts.get("headroom")
    if headroom:  # pin all of the heap but that many bytes above the baseline (the peak the firmware needs)
        app.ballast = []
        size = 1024
        while size >= 16 and gc.mem_free() > headroom + size + 64:
            try:
                app.ballast.append(bytearray(size))
            except MemoryError:
                size //= 2
    tm = app.telemetry
    def cycle():
        total = micropython.mem_total() - _stats[2]
        used = gc.mem_alloc()  # live objects and garbage not yet collected
        if _opts.get("collect"):
            gc.collect()
        live = gc.mem_alloc()
        lf = _largest_free() if _opts.get("largest_free") else -1
        print("BENCH_CYCLE %d %d %d %d %d %d %d" % (tm.samples, total, used, _stats[0], _stats[1], lf, live))

    tm.bench = cycle


from app.main import run  # noqa: E402

run(prepare=_prepare)
