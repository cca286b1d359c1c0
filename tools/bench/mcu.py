"""Benchmarks of the firmware on the emulated Cortex-M3 (issue 16; the qemu_cm3 image, boards/qemu_cm3):

* heap: in use after start-up (a collection first), the peak the firmware needs above it (the scenario, a
  modem reset included, re-run with all of the heap pinned but N KB above the baseline: the least N that
  completes), bytes allocated per
  telemetry cycle in steady state, how much of it is garbage for the collector and how much stays (the live
  heap after a collection, cycle to cycle: a leak when > 0), and the smallest "largest free block" seen -- the
  image's own 64 KB heap, 32-bit objects, bytecode frozen in flash;
* UART reads per AT reply: the AT engine's reads of UART1 per command sent, with the board's rxidle
  coalescing (10 ms) and without it (rxidle=0);
* flash: each board image's size from the linker (tools/firmware.py: text + data, and the frozen content's
  bytes from the map) next to the .mpy total of its manifest (tools/frozen_size.py).

The image runs boards/qemu_cm3/bench_main.py (frozen; the seeded /main.py imports it) against the modem
emulator and the cloud twin (tools.demo.Rig). Prints BENCH {json} lines (`make bench`); when the toolchain or
QEMU is missing, ``unavailable`` says why and the numbers are None.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.demo import ROOT, Rig


def start_qemu(rig, elf, opts=None):
    """Boot the image with the rig's flash (plus bench.json) and UART1 on the rig's modem pty."""
    (rig.flash / "main.py").write_text("import bench_main  # boards/qemu_cm3/bench_main.py, frozen\n")
    (rig.flash / "bench.json").write_text(json.dumps(opts or {}))
    rig.fwlog = rig.logs / ("qemu-%s.log" % rig.tag)
    rig.fwlog.write_text("")
    rig._out = open(rig.fwlog, "ab")
    cmd = [sys.executable, "-m", "tools.qemu_cm3", "--image", str(elf), "--flash", str(rig.flash), "--port",
           str(rig.port), "--seed-file", str(rig.logs / "seed.bin")]
    rig.fw = subprocess.Popen(cmd, cwd=str(ROOT), stdin=subprocess.DEVNULL, stdout=rig._out, stderr=subprocess.STDOUT)
    return rig.fw


def cycles(text):
    """BENCH_CYCLE lines as tuples: (samples, allocated since boot, heap in use, UART reads, AT commands,
    largest free block)."""
    return [tuple(int(x) for x in ln.split()[1:]) for ln in text.splitlines() if ln.startswith("BENCH_CYCLE")]


def run_scenario(rig, elf, opts=None, samples=12, faults=(), timeout=90):
    """The demo scenario on the image: samples, a command and its reply, more samples, then each fault and the
    samples after it. Returns the firmware log's text."""
    start_qemu(rig, elf, opts)
    try:
        base = rig.samples()
        rig.wait("samples", lambda: rig.samples() >= base + 3, timeout)
        cid = rig.ctl.command(rig.device, service_id="Config", cmd="status", paras={})
        rig.wait("the reply", lambda: (rig.ctl.command_record(cid) or {}).get("reply"), timeout)
        rig.wait("more samples", lambda: rig.samples() >= base + samples, timeout)
        for f in faults:
            n = rig.samples()
            rig.modem_control({"cmd": "fault", "do": f})
            rig.wait("samples after %s" % f["action"], lambda n=n: rig.samples() >= n + 3, timeout)
    finally:
        rig.stop_firmware()
        rig._out.close()
    return rig.fwlog.read_text(errors="replace")


def heap_figures(text):
    lines = text.splitlines()
    base = next((int(ln.split()[1]) for ln in lines if ln.startswith("BENCH_BASELINE")), None)
    cyc = cycles(text)
    res = {"baseline_after_start": base, "cycles": len(cyc), "peak_above_baseline": None, "alloc_per_cycle": None,
           "garbage_per_cycle": None, "retained_per_cycle": None, "uart_reads_per_at_reply": None,
           "uart_reads_per_at_reply_whole_run": None}
    if base is None or len(cyc) < 6:
        return res
    steady = cyc[3:]  # after the connect and the first publishes
    n = len(steady) - 1
    res["peak_above_baseline"] = max(c[2] for c in cyc) - base
    res["alloc_per_cycle"] = round((steady[-1][1] - steady[0][1]) / n)
    res["retained_per_cycle"] = round((steady[-1][6] - steady[0][6]) / n)  # live heap growth: a leak if > 0
    res["garbage_per_cycle"] = res["alloc_per_cycle"] - max(res["retained_per_cycle"], 0)
    reads, cmds = steady[-1][3] - steady[0][3], steady[-1][4] - steady[0][4]
    res["uart_reads_per_at_reply"] = round(reads / cmds, 1) if cmds else None
    last = cyc[-1]
    res["uart_reads_per_at_reply_whole_run"] = round(last[3] / last[4], 1) if last[4] else None
    lf = [c[5] for c in cyc if c[5] >= 0]
    if lf:
        res["largest_free_min"] = min(lf)
    return res


def completes(rig, elf, opts):
    """Whether the scenario (samples, a command, a modem reset, more samples) completes without a MemoryError."""
    try:
        text = run_scenario(rig, elf, opts, samples=8, faults=[{"action": "reset", "mode": "crash"}], timeout=40)
    except SystemExit:
        return False
    return "MemoryError" not in text


def peak_need(rig, elf, step=1024):
    """The heap the running firmware needs above its post-start baseline: the scenario re-run with all of the
    64 KB heap pinned but N bytes above the baseline, N bisected (1 KB steps) to the least that completes."""
    lo, hi = 0, 24 * 1024
    if not completes(rig, elf, {"headroom": hi}):
        return None
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if completes(rig, elf, {"headroom": mid}):
            hi = mid
        else:
            lo = mid
    return hi


def flash_figures():
    """Per board with an image: the linker's figures (building it when needed) and the .mpy total."""
    from tools import firmware, frozen_size

    out = {}
    for board in firmware.boards():
        r = {"board": board}
        try:
            rec = firmware.build(board, quiet=True)
            r.update({k: rec[k] for k in ("flash_bytes", "ram_static_bytes", "frozen_bytes", "base_board")})
        except firmware.BuildError as e:
            r["unavailable"] = str(e).splitlines()[0][:300]
        try:
            r["total_mpy"] = frozen_size.measure(board)["total_mpy"]
        except Exception as e:  # noqa: BLE001 -- reported, not fatal
            r["total_mpy_error"] = str(e)[:200]
        out[board] = r
    return out


def main():
    from tools import firmware

    res = {"name": "mcu_qemu_cm3", "unavailable": None}
    why = firmware.check_tools() or (None if shutil.which("qemu-system-arm") else "qemu-system-arm not installed")
    for board, r in flash_figures().items():
        print("BENCH " + json.dumps(dict(r, name="mcu_image_" + board)))
    if why:
        res["unavailable"] = why
        print("BENCH " + json.dumps(res))
        return
    try:
        elf = firmware.build("qemu_cm3", quiet=True)["elf"]
    except firmware.BuildError as e:
        res["unavailable"] = str(e).splitlines()[0]
        print("BENCH " + json.dumps(res))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-mcu-"))
    rig = Rig(work, "huawei", "bg96", fresh=True, quiet=True, interval=1, board="qemu_cm3")
    try:
        t0 = time.monotonic()
        text = run_scenario(rig, elf, {"largest_free": True, "collect": True}, samples=14)
        res.update(heap_figures(text))
        res["scenario_s"] = round(time.monotonic() - t0, 1)
        res["peak_above_baseline"] = peak_need(rig, elf)
        text0 = run_scenario(rig, elf, {"rxidle": 0, "collect": True}, samples=14)
        h0 = heap_figures(text0)
        res["uart_reads_per_at_reply_no_rxidle"] = h0["uart_reads_per_at_reply"]
        res["uart_reads_per_at_reply_whole_run_no_rxidle"] = h0["uart_reads_per_at_reply_whole_run"]
        res["heap_size"] = 65536
    except SystemExit as e:
        res["failed"] = str(e)
    finally:
        rig.stop()
        if os.environ.get("BENCH_KEEP") is None:
            shutil.rmtree(work, ignore_errors=True)
    print("BENCH " + json.dumps(res))


if __name__ == "__main__":
    main()
