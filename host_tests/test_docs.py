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


def declarations():
    """Every configuration declaration the firmware can compose: the app's, each driver's, each transport's
    (native dialects and TLS sockets) and each cloud profile's (app.wiring.PROFILES)."""
    import importlib

    from app import config, wiring

    out = [config.CONFIG]
    for f in sorted((ROOT / "lib" / "cellmqtt").glob("*.py")):
        if re.search(r"^Driver = ", f.read_text(), re.M):
            drv = importlib.import_module("cellmqtt." + f.stem).Driver
            out += [drv.CONFIG, drv.NATIVE.CONFIG]
            if drv.SOCKET:
                out.append(getattr(importlib.import_module(drv.SOCKET[0]), drv.SOCKET[1]).CONFIG)
    for module, name in wiring.PROFILES.values():
        out.append(getattr(importlib.import_module(module), name).CONFIG)
    return out


def test_every_config_key_is_documented():
    keys = sorted({k for d in declarations() for layer in (d if isinstance(d, tuple) else (d,)) for k in _keys(layer)})
    assert len(keys) > 60
    missing = [k for k in keys if "`%s`" % k not in README]
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
