# Benchmark (MicroPython unix port): the durable outbox (firmware/app/outbox.py) in steady state.
# Prints one line: BENCH {json} with
#   append_alloc / ack_alloc / peek_alloc  bytes allocated per append, ack and peek(1) of one 100-byte sample
#                                          (micropython.mem_total() deltas, averaged over a steady-state run)
#   cycle_alloc                            the three together: the outbox's share of a telemetry cycle
#   appends_per_s, cycle_us                durable appends per second and one append+peek+ack (each write is
#                                          flushed, which fsyncs on the unix port: this measures the disk)
#   index_bytes_per_record                 heap held per queued sample by the in-RAM index
#   open_ms_full                           opening (recovering) a full log: max_bytes = 32 KB, half of it
#                                          queued samples, the rest acknowledged ones not yet compacted away
# Run by `make bench` (tools/bench/__main__.py) or directly: micropython -X heapsize=64k tools/bench/outbox.py
import gc
import json
import os
import sys
import time

import micropython

sys.path.insert(0, "firmware")
sys.path.insert(0, "lib")
from app.outbox import Outbox

PAYLOAD = b'{"t":1732270000,"temp":21.5,"hum":40.2,"bat":3.71,"rssi":-71,"seq":12345,"pad":"xxxxxxxxxxxxxxx"}'
N = 200


def rmtree(d):
    for name in os.listdir(d):
        os.remove(d + "/" + name)
    os.rmdir(d)


def main():
    d = (os.getenv("TMPDIR") or "/tmp") + "/outbox-bench-%d" % time.ticks_us()
    ob = Outbox(d, max_bytes=32768, max_records=500)
    try:
        for _ in range(20):  # warm-up: first-call allocations, list capacity, a compaction or two
            ob.ack(ob.peek(1)[0][0]) if len(ob) > 3 else None
            ob.append(PAYLOAD)
        a_alloc = k_alloc = p_alloc = 0
        t0 = time.ticks_us()
        for _ in range(N):
            m0 = micropython.mem_total()
            ob.append(PAYLOAD)
            m1 = micropython.mem_total()
            sid, _ = ob.peek(1)[0]
            m2 = micropython.mem_total()
            ob.ack(sid)
            m3 = micropython.mem_total()
            a_alloc += m1 - m0
            p_alloc += m2 - m1
            k_alloc += m3 - m2
        cycle_us = time.ticks_diff(time.ticks_us(), t0) / N
        t0 = time.ticks_us()
        for _ in range(N):
            ob.append(PAYLOAD)
            ob.ack(ob.peek(1)[0][0]) if len(ob) > 3 else None
        t_app = time.ticks_diff(time.ticks_us(), t0)
        # RAM held per queued sample (the index), then the recovery time of an outbox that is full
        for s, _ in ob.peek(len(ob)):
            ob.ack(s)
        gc.collect()
        h0 = gc.mem_alloc()
        n = 0
        while ob.stats()["live_bytes"] + 12 + len(PAYLOAD) <= 32768 // 2 - 36:
            ob.append(PAYLOAD)
            n += 1
        gc.collect()
        per_rec = (gc.mem_alloc() - h0) / n
        while ob.stats()["bytes"] + 2 * (24 + len(PAYLOAD)) <= 32768:  # fill the rest with acked samples
            ob.ack(ob.peek(1)[0][0])
            ob.append(PAYLOAD)
        stats = ob.stats()
        ob.close()
        t0 = time.ticks_us()
        ob = Outbox(d, max_bytes=32768, max_records=500)
        open_ms = time.ticks_diff(time.ticks_us(), t0) / 1000
        assert len(ob) == n and ob.stats()["corrupt"] == 0
        ob.close()
    finally:
        ob.close()
        rmtree(d)
    print("BENCH " + json.dumps({
        "name": "outbox",
        "payload_bytes": len(PAYLOAD),
        "append_alloc": a_alloc / N,
        "peek_alloc": p_alloc / N,
        "ack_alloc": k_alloc / N,
        "cycle_alloc": (a_alloc + p_alloc + k_alloc) / N,
        "cycle_us": cycle_us,
        "appends_per_s": N * 1000000 / t_app,
        "index_bytes_per_record": per_rec,
        "queued_at_open": n,
        "log_bytes_at_open": stats["bytes"],
        "open_ms_full": open_ms,
    }))


main()
