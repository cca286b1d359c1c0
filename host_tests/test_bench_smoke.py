"""The benchmarks must keep running and parse their streams correctly (their numbers are reported by `make bench`,
not asserted here: timing belongs in benchmarks, not tests)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_at_parse_bench_parses_every_line():
    mp = str(Path(sys.executable).with_name("micropython"))
    p = subprocess.run([mp, "tools/bench/at_parse.py"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.split("BENCH ", 1)[1])
    assert res["unknown"] == 0 and res["late"] == 0
    assert res["urcs"] == 900 and res["lines"] == 4200


def test_outbox_and_mqtt_codec_benches_run():
    mp = str(Path(sys.executable).with_name("micropython"))
    for script, heap in (("tools/bench/outbox.py", "64k"), ("tools/bench_mqtt_codec.py", None)):
        cmd = [mp] + (["-X", "heapsize=" + heap] if heap else []) + [script]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, (script, p.stderr)
        assert "BENCH {" in p.stdout, script


def test_bench_table_checks_goals_per_result():
    from tools.bench.__main__ import markdown, table, traffic

    phase = {"at_commands": 19, "uart_bytes_to_modem": 700, "uart_bytes_from_modem": 300, "cert_bytes": 0}
    results = [
        {"name": "e2e_commands_bg96", "warm_commands": 19, "reconnect_commands": 5, "warm_cert_bytes": 0,
         "cold": dict(phase, cert_bytes=1204), "warm": phase, "reconnect": phase},
        {"name": "e2e_heap_bg96", "frozen32_runs_in_64k": False, "frozen32_baseline_after_start": 33000},
        {"name": "frozen_size_stm32_bc660k", "board": "stm32_bc660k", "total_mpy": 40000},
    ]
    rows = {r[0]: r[1:] for r in table(results)}
    assert rows["AT commands, warm start to first acked publish (bg96)"] == ("19", "<= 20", "met")
    assert rows["AT commands, reconnect after +QMTSTAT to the next acked publish (bg96)"][2] == "MISSED"
    assert rows["demo completes in -X heapsize=64k, firmware frozen (32-bit port)"] == ("no", "== yes", "MISSED")
    assert rows["heap in use after start-up, frozen (32-bit port, 64k heap)"] == ("33000", "", "")
    assert rows["frozen .mpy bytes, STM32 + BC660K-GL board"] == ("40000", "<= 49152", "met")
    assert "frozen .mpy bytes, ESP32 + BG96 board" not in rows  # a result only meets its own board's goal
    assert markdown(table(results)).count("\n") == len(rows) + 2
    assert "| bg96 | power-up, certificates to send | 19 | 700 | 300 | 1204 |" in traffic(results)
