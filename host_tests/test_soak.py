"""The chaos soak's short version (make soak runs it for 30 minutes per modem): the firmware against the
emulator (output chunked at random) and the twin for a minute per modem with a fault every ~5 s of every
class, then the verdict: zero lost, tasks alive, heap flat, commands answered, no secret in any file."""

import json
import subprocess
import sys

import pytest

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("modem,seed", [("bg96", 11), ("bc660k", 12)])
def test_a_minute_of_chaos_loses_nothing(modem, seed, tmp_path):
    r = subprocess.run([sys.executable, "-m", "tools.soak", "--modem", modem, "--minutes", "1", "--every", "5",
                        "--seed", str(seed), "--json", "--workdir", str(tmp_path / "soak")],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=280)
    line = [x for x in r.stdout.splitlines() if x.startswith("SOAK ")]
    assert line, r.stdout[-2000:] + r.stderr[-2000:]
    v = json.loads(line[0][5:])
    assert v["ok"] and r.returncode == 0, v
    assert v["faults"] >= 6 and v["samples"] >= 15, v  # the run did what it says
    assert v["lost"] == 0 and v["secret_hits"] == [] and set(v["tasks"].values()) == {"ok"}, v
