# Benchmark of lib/cellmqtt/mqtt_codec.py: PUBLISH encode/decode throughput and heap bytes allocated per
# PUBLISH. Runs on the MicroPython unix port (the numbers that matter) and on CPython (allocation is then
# reported as n/a):
#
#     .venv/bin/micropython tools/bench_mqtt_codec.py [payload_bytes ...]      (default: 16 256 1024 3000)
#     .venv/bin/micropython -X heapsize=64k tools/bench_mqtt_codec.py 256
#
# Prints one line per payload size: encode/decode packets per second and MB/s, and bytes allocated per
# encode (into a preallocated buffer, as MqttClient does; and into a fresh one) and per decode
# (micropython.mem_total() deltas, measurement overhead subtracted); then the same as one
# `BENCH {json}` line per size, the format tools/bench/__main__.py (`make bench`) collects.
import json
import sys

_here = __file__.rpartition("/")[0] or "."
sys.path.insert(0, _here + "/../lib")

from cellmqtt import mqtt_codec as codec
from cellmqtt.compat import ticks_diff, ticks_ms

try:
    import micropython

    _mem_total = micropython.mem_total
except (ImportError, AttributeError):  # CPython: no allocation counter
    _mem_total = None

TOPIC = "$oc/devices/6203cc94c7fb24029b110408_88888888/sys/properties/report"


def allocated(fn, reps=20):
    """Bytes allocated per call of fn, averaged over reps, minus what the measuring itself costs."""
    if _mem_total is None:
        return None
    import gc

    gc.collect()
    a = _mem_total()
    b = _mem_total()
    overhead = b - a
    a = _mem_total()
    for _ in range(reps):
        fn()
    return (_mem_total() - a - overhead) // reps


def rate(fn, ms=400):
    n = 0
    t0 = ticks_ms()
    while True:
        for _ in range(20):
            fn()
        n += 20
        dt = ticks_diff(ticks_ms(), t0)
        if dt >= ms:
            return n * 1000 / dt


def bench(size):
    payload = bytes((i * 31) & 0xFF for i in range(size))
    buf = bytearray(codec.DEFAULT_MAX_PACKET if size < 3800 else size + 256)
    pkt = bytes(codec.publish(TOPIC, payload, 1, False, False, 1234))
    reader = codec.PacketReader(max(codec.DEFAULT_MAX_PACKET, len(pkt)))

    def enc_buf():
        codec.publish(TOPIC, payload, 1, False, False, 1234, buf)

    def enc_new():
        codec.publish(TOPIC, payload, 1, False, False, 1234)

    def dec():
        for _ in reader.feed(pkt):
            pass

    e = rate(enc_buf)
    d = rate(dec)
    mb = len(pkt) / 1e6
    ab, an, ad = allocated(enc_buf), allocated(enc_new), allocated(dec)

    def fmt(v):
        return "n/a" if v is None else "%d B" % v

    print("payload %5d B (packet %5d B): encode %7.0f/s %6.2f MB/s  decode %7.0f/s %6.2f MB/s  "
          "alloc: encode into buffer %s, encode new %s, decode %s"
          % (size, len(pkt), e, e * mb, d, d * mb, fmt(ab), fmt(an), fmt(ad)))
    return {"name": "mqtt_codec_publish_%d" % size, "payload": size, "packet": len(pkt),
            "encode_per_s": int(e), "decode_per_s": int(d), "encode_mb_s": round(e * mb, 2),
            "decode_mb_s": round(d * mb, 2), "alloc_encode_into_buffer": ab, "alloc_encode_new": an,
            "alloc_decode": ad, "alloc_decode_beyond_payload": None if ad is None else ad - size}


def main(argv):
    sizes = [int(a) for a in argv] or [16, 256, 1024, 3000]
    print("mqtt_codec benchmark on %s %s, topic %d B, QoS 1"
          % (sys.implementation.name, ".".join(str(v) for v in sys.implementation.version[:3]), len(TOPIC)))
    results = [bench(s) for s in sizes]
    for r in results:
        print("BENCH " + json.dumps(r))


main(sys.argv[1:])
