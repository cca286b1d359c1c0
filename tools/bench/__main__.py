"""`make bench`: run every benchmark on the MicroPython unix port in one go and print a table.

Each benchmark is a MicroPython script in tools/bench/ printing ``BENCH {json}`` lines; the results are also
written to build/bench.json and the table to build/bench.md (`python -m tools.bench --markdown` prints the
last run's table again). Ratios are measured within one run (the machine is noisy), and goals are
checked and shown as met / MISSED.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))

# (script, heap size or None, [(metric, goal, "<=" or ">=", description)])
BENCHES = [
    ("tools/bench/at_parse.py", None, [
        ("parse_over_wire", 1 / 20, "<=", "AT parse time / wire time at 921600 baud"),
        ("alloc_beyond_line", 64, "<=", "bytes allocated per parsed line beyond the line itself"),
    ]),
    ("tools/bench_mqtt_codec.py", None, []),
    ("tools/bench/outbox.py", "64k", [("cycle_alloc", 1024, "<=", "outbox bytes allocated per append+peek+ack")]),
    # CPython harnesses that run the whole firmware on the unix port against the emulator and the twin
    ("py:tools.bench.e2e", None, [
        ("warm_commands", 20, "<=", "AT commands, warm start to first acked publish"),
        ("reconnect_commands", 4, "<=", "AT commands, reconnect after +QMTSTAT to the next acked publish"),
        ("warm_cert_bytes", 0, "<=", "certificate bytes sent on a warm start"),
        ("runs_in_64k", True, "==", "demo completes in -X heapsize=64k, .mpy bytecode in the heap (64-bit port)"),
        ("peak_above_baseline", 16384, "<=", "peak heap above the post-start baseline, .mpy (64-bit port)"),
        ("frozen_runs_in_64k", True, "==", "demo completes in -X heapsize=64k, firmware frozen (64-bit port)"),
        ("frozen_peak_above_baseline", 16384, "<=", "peak heap above the post-start baseline, frozen (64-bit; 128k heap if 64k fails)"),
        ("frozen32_runs_in_64k", True, "==", "demo completes in -X heapsize=64k, firmware frozen (32-bit port)"),
        ("frozen32_baseline_after_start", None, "", "heap in use after start-up, frozen (32-bit port, 64k heap)"),
        ("frozen32_peak_above_baseline", 16384, "<=", "peak heap above the post-start baseline, frozen (32-bit)"),
        ("alloc_per_cycle", 1024, "<=", "bytes allocated per telemetry cycle, steady state (64-bit port)"),
        ("frozen32_alloc_per_cycle", 1024, "<=", "bytes allocated per telemetry cycle, frozen (32-bit port)"),
    ]),
    # the firmware frozen into the qemu_cm3 image on QEMU's Cortex-M3 (64 KB heap), and each board image's flash
    ("py:tools.bench.mcu", None, [
        ("baseline_after_start", None, "", "heap in use after start-up, qemu_cm3 image (64 KB heap)"),
        ("peak_above_baseline", 16384, "<=", "peak heap in use above the post-start baseline, qemu_cm3"),
        ("alloc_per_cycle", 1024, "<=", "bytes allocated per telemetry cycle, qemu_cm3"),
        ("garbage_per_cycle", None, "", "garbage per telemetry cycle (allocated, then collected), qemu_cm3"),
        ("retained_per_cycle", 0, "<=", "live heap growth per telemetry cycle (a leak when > 0), qemu_cm3"),
        ("largest_free_min", 4096, ">=", "smallest largest-free-block seen at a telemetry cycle, qemu_cm3"),
        ("uart_reads_per_at_reply", None, "", "UART reads per AT command, steady state, rxidle 10 ms, qemu_cm3"),
        ("uart_reads_per_at_reply_no_rxidle", None, "", "UART reads per AT command, steady state, no rxidle, qemu_cm3"),
        ("flash_bytes", None, "", "image flash bytes (linker: text + data)"),
        ("frozen_bytes", None, "", "frozen content bytes in the image (linker map)"),
        ("total_mpy", None, "", "frozen .mpy bytes of the board's manifest (tools/frozen_size)"),
        ("ram_static_bytes", None, "", "static RAM bytes of the image (data + bss)"),
    ]),
    # what each MCU board's manifest freezes, compiled with its own mpy-cross options (tools/frozen_size.py)
    ("size:esp32_bg96", None, [("total_mpy", 48 * 1024, "<=", "frozen .mpy bytes, ESP32 + BG96 board")]),
    ("size:stm32_bc660k", None, [("total_mpy", 48 * 1024, "<=", "frozen .mpy bytes, STM32 + BC660K-GL board")]),
]


def run(script, heap):
    if script.startswith("size:"):
        from tools.frozen_size import measure

        res = measure(script[5:])
        return [{k: v for k, v in res.items() if k != "files"}]
    if script.startswith("py:"):
        cmd = [sys.executable, "-m", script[3:]]
    else:
        cmd = [MICROPYTHON] + (["-X", "heapsize=" + heap] if heap else []) + [script]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    results = [json.loads(line[6:]) for line in p.stdout.splitlines() if line.startswith("BENCH ")]
    if p.returncode != 0 or not results:
        raise SystemExit("benchmark %s failed (exit %d):\n%s%s" % (script, p.returncode, p.stdout, p.stderr))
    return results


def fmt(v):
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "%.4g" % v
    return str(v)


def _script_of(name):
    # results of a run before "_bench" was recorded
    if name.startswith("frozen_size_"):
        return "size:" + name[12:]
    if name.startswith("e2e_"):
        return "py:tools.bench.e2e"
    if name.startswith("mcu_"):
        return "py:tools.bench.mcu"
    return {"at_parse": "tools/bench/at_parse.py", "outbox": "tools/bench/outbox.py"}.get(name)


def table(results):
    """(measure, value, goal, met/MISSED) rows of the results that have a goal (or are shown for context)."""
    goals = {}
    for script, _heap, g in BENCHES:
        goals[script] = g
    rows = []
    for res in results:
        for g in goals.get(res.get("_bench") or _script_of(res["name"]), ()):
            metric, goal, op, desc = g
            if res.get(metric) is None:
                continue
            v = res[metric]
            if res["name"].startswith("e2e_commands_"):  # one result per modem
                desc = "%s (%s)" % (desc.split(" (")[0], res["name"][13:])
            if res["name"].startswith("mcu_image_"):  # one result per board image
                desc = "%s, %s" % (desc, res["name"][10:])
            if goal is None:  # reported for context, no goal
                rows.append((desc, fmt(v), "", ""))
                continue
            ok = v <= goal if op == "<=" else v >= goal if op == ">=" else v == goal
            rows.append((desc, fmt(v), "%s %s" % (op, fmt(goal)), "met" if ok else "MISSED"))
    return rows


def markdown(rows):
    out = ["| measure | value | goal | |", "| --- | ---: | ---: | --- |"]
    out += ["| %s | %s | %s | %s |" % r for r in rows]
    return "\n".join(out) + "\n"


def traffic(results):
    """Markdown: AT commands and UART bytes per modem, cold / warm / reconnect."""
    out = ["| modem | from | AT commands | UART bytes to modem | from modem | certificate bytes |",
           "| --- | --- | ---: | ---: | ---: | ---: |"]
    phases = (("cold", "power-up, certificates to send"), ("warm", "power-up, certificates in the module"),
              ("reconnect", "+QMTSTAT, reconnect"))
    for res in results:
        if res["name"].startswith("e2e_commands_"):
            for key, label in phases:
                c = res[key]
                out.append("| %s | %s | %d | %d | %d | %d |" % (res["name"][13:], label, c["at_commands"],
                           c["uart_bytes_to_modem"], c["uart_bytes_from_modem"], c["cert_bytes"]))
    return "\n".join(out) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = ROOT / "build"
    if argv[:1] == ["--markdown"]:  # the table of the last run (build/bench.json), for the README
        results = json.loads((out / "bench.json").read_text())
        print(markdown(table(results)) + "\n" + traffic(results), end="")
        return
    all_results = []
    for script, heap, _goals in BENCHES:
        for res in run(script, heap):
            res["_bench"] = script
            all_results.append(res)
            print("%s: %s" % (res["name"], ", ".join("%s=%s" % (k, fmt(v)) for k, v in res.items()
                                                    if k not in ("name", "_bench"))))
    rows = table(all_results)
    out.mkdir(exist_ok=True)
    (out / "bench.json").write_text(json.dumps(all_results, indent=1))
    (out / "bench.md").write_text(markdown(rows) + "\n" + traffic(all_results))
    w = max(len(r[0]) for r in rows)
    print()
    print("%-*s  %12s  %12s  %s" % (w, "measure", "value", "goal", ""))
    for r in rows:
        print("%-*s  %12s  %12s  %s" % (w, r[0], r[1], r[2], r[3]))


if __name__ == "__main__":
    main()
