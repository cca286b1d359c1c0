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
