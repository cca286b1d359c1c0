"""`make lint` stays clean: the ruff rules in ruff.toml (pyflakes, import order, bugbear) over all the code."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    ruff = str(Path(sys.executable).with_name("ruff"))
    p = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", "lib", "firmware", "boards", "tools",
                        "host_tests"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
