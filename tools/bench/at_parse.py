# Benchmark (MicroPython unix port): AT engine parse time vs. wire time at 921600 baud, and bytes allocated
# per parsed line. Run by `make bench` (tools/bench/__main__.py); prints one line: BENCH {json}.
#
# The stream is a recorded steady-state mix: answers to the commands the firmware sends every telemetry
# cycle (echo off, as the drivers configure it), data prompts, two-phase results and URCs, including
# length-framed +QMTRECV command messages. Each command's answer is parsed with that command pending, exactly
# as the reader sees it; bytes are delivered in 64-byte reads like a UART driver's.
import gc
import json
import sys
import time

import micropython

sys.path.insert(0, "lib")
from cellmqtt.at_engine import AtEngine, Cmd, _Pending, frame_quoted_len  # noqa: E402

_S_PROMPT = 1  # at_engine._S_PROMPT (a compile-time const there, so not importable)

DEV = b"6203cc94c7fb24029b110408_88888888"
TOPIC = b"/huawei/v1/devices/" + DEV + b"/data/json"
CMD_TOPIC = b"/huawei/v1/devices/" + DEV + b"/command/json"
CMD_JSON = b'{"msgType":"cloudReq","serviceId":"Config","cmd":"setInterval","paras":{"value":60},"mid":2016}'

CYCLE = [
    (b"AT+CSQ", b"+CSQ:", False, b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n"),
    (b"AT+QCSQ", b"+QCSQ:", False, b'\r\n+QCSQ: "CAT-M1",-63,-94,120,-11\r\n\r\nOK\r\n'),
    (b"AT+QNWINFO", b"+QNWINFO:", False, b'\r\n+QNWINFO: "CAT-M1","46011","LTE BAND 3",1650\r\n\r\nOK\r\n'),
    (b"AT+CEREG?", b"+CEREG:", False, b'\r\n+CEREG: 2,1,"1A2B","0C4D5E6F",8\r\n\r\nOK\r\n'),
    (b"AT+CCLK?", b"+CCLK:", False, b'\r\n+CCLK: "26/11/22,10:00:00+00"\r\n\r\nOK\r\n'),
    (b'AT+QMTPUB=0,17,1,0,"' + TOPIC + b'",118', None, True, b"\r\n> "),
    (None, None, False, b"\r\nOK\r\n"),
    (None, None, False, b"\r\n+QMTPUB: 0,17,0\r\n"),
    (None, None, False, b'\r\n+QMTRECV: 0,0,"' + CMD_TOPIC + b'",%d,"' % len(CMD_JSON) + CMD_JSON + b'"\r\n'),
    (None, None, False, b"\r\n+CEREG: 1\r\n"),
]
REPEAT = 300
CHUNK = 64


def build(eng):
    segs = []
    for _ in range(REPEAT):
        for cmd, prefix, prompt, out in CYCLE:
            p = None
            if cmd is not None:
                p = _Pending()
                p.reset(cmd, Cmd(prefix), None, ())
                if prompt:
                    p.state = _S_PROMPT
            segs.append((p, memoryview(out)))
    return segs


def main():
    eng = AtEngine(None, rxbuf=2048)
    counts = {"urc": 0}

    def on_urc(line):
        counts["urc"] += 1

    for pfx in (b"+QMTPUB:", b"+CEREG:", b"+QMTSTAT:", b"+QIURC:"):
        eng.urc(pfx, on_urc)
    eng.urc(b"+QMTRECV:", on_urc, frame_quoted_len(3))
    segs = build(eng)
    total_bytes = sum(len(out) for _, out in segs)
    content = 0  # bytes of the lines themselves (without CR/LF framing)
    for _, out in segs:
        for ln in bytes(out).split(b"\r\n"):
            content += len(ln.strip())
    buf = eng._buf
    mv = eng._mv

    def run():
        lines0 = eng.lines_count
        for p, out in segs:
            if p is not None:
                eng._pending = p
            o = 0
            n = len(out)
            while o < n:  # what the reader's readinto(mv[w:]) does: one memoryview slice per read
                k = min(CHUNK, n - o, len(buf) - eng._w)
                mv[eng._w:eng._w + k] = out[o:o + k]
                eng._w += k
                o += k
                eng._proc.send(None)
        return eng.lines_count - lines0

    # warm-up (first-time allocations, e.g. list growth) then the measured run
    run()
    for p, _ in segs:
        if p is not None:
            p.lines = None
            p.state = _S_PROMPT if p.cmd.startswith(b"AT+QMTPUB") else 0
    counts["urc"] = 0
    gc.collect()
    a0 = micropython.mem_total()
    t0 = time.ticks_us()
    lines = run()
    dt_us = time.ticks_diff(time.ticks_us(), t0)
    alloc = micropython.mem_total() - a0
    wire_us = total_bytes * 10 * 1000000 / 921600
    line_len = content / lines
    print("BENCH " + json.dumps({
        "name": "at_parse",
        "bytes": total_bytes,
        "lines": lines,
        "urcs": counts["urc"],
        "parse_us": dt_us,
        "wire_us_921600": int(wire_us),
        "parse_over_wire": dt_us / wire_us,
        "alloc_per_line": alloc / lines,
        "avg_line_len": line_len,
        "alloc_beyond_line": alloc / lines - line_len,
        "unknown": eng.unknown_count,
        "late": eng.late_count,
    }))


main()
