"""The README documents every configuration key, every make target and every option a user types."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT / "lib")]


def _keys(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _keys(v, prefix + k + ".")
        else:
            yield prefix + k


def test_every_config_key_is_documented():
    from app.config import SCHEMA

    missing = [k for k in _keys(SCHEMA) if "`%s`" % k not in README]
    assert not missing, "config keys missing from README.md: %s" % missing


def test_every_make_target_is_documented():
    phony = re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    missing = [t for t in phony if t != "all" and "make %s" % t not in README]
    assert not missing, missing


@pytest.mark.parametrize("module", ["tools.modemsim", "tools.cloudtwin", "tools.demo", "tools.pki", "tools.broker"])
def test_every_cli_option_is_documented(module):
    p = subprocess.run([sys.executable, "-m", module, "--help"], cwd=str(ROOT), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    opts = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", p.stdout)) - {"--help"}
    doc = README + (ROOT / "docs" / (module.split(".")[1] + ".md")).read_text() if (
        ROOT / "docs" / (module.split(".")[1] + ".md")).exists() else README
    missing = sorted(o for o in opts if o not in doc)
    assert not missing, "%s options missing from the docs: %s" % (module, missing)
