"""examples/: every configuration loads through the firmware's own loader (app.config.load: the schema every
driver, transport and profile declares) with the secrets template beside it, on CPython and on the MicroPython
unix port; the deploy tool's board checks accept it for its board (or refuse it where the README says so); the
ports, TLS settings and files the README table states are the ones in the files."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples"
README = (EX / "README.md").read_text()
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT / "lib")]
CONFIGS = sorted(p.name for p in EX.glob("*.json") if not p.name.startswith("secrets"))


def secrets_for(name):
    return EX / ("secrets-enos-dynamic.json" if name.startswith("enos-dynamic") else "secrets.json")


def load(name, secrets=True):
    from app import config

    config.notes.clear()
    return config.load(str(EX / name), str(secrets_for(name)) if secrets else None)


def test_there_is_an_example_per_cloud_and_modem():
    for cloud in ("huawei-legacy", "iotda", "enos-static", "enos-static-tls", "enos-dynamic", "mqtt"):
        for modem in ("bg96", "bc660k"):
            assert "%s-%s.json" % (cloud, modem) in CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
def test_example_loads_through_the_firmware_config(name):
    cfg = load(name)
    modem = name.rsplit("-", 1)[1][:-5]
    assert cfg["modem"]["type"] == modem
    assert cfg["board"] == {"bg96": "esp32_bg96", "bc660k": "stm32_bc660k"}[modem]
    profile = cfg["cloud"]["profile"]
    port, tls = cfg["mqtt"]["port"], cfg["tls"]
    if name.startswith(("huawei", "iotda")):
        assert profile == "huawei" and port == 8883 and tls["enabled"] and tls["ca"]
        assert cfg["cloud"]["huawei"]["api"] == ("iotda" if name.startswith("iotda") else "legacy")
    elif name.startswith("enos"):
        assert profile == "enos" and 60 <= cfg["mqtt"]["keepalive"] <= 300  # EnOS keep-alive bounds
        if port == 11883:  # plain TCP: no TLS at all
            assert not tls["enabled"]
        else:  # 18883: TLS with a device certificate (two-way)
            assert port == 18883 and tls["enabled"] and tls["cert"] and tls["key"] and tls["seclevel"] == 2
        dynamic = name.startswith("enos-dynamic")
        assert bool(cfg["cloud"]["enos"]["product_secret"]) == dynamic
        assert bool(cfg["cloud"]["enos"]["device_secret"]) != dynamic
        assert cfg["cloud"]["enos"]["signmethod"] == "sha256"  # the STM32 build has SHA-256 only
    else:
        assert profile == "mqtt" and cfg["cloud"]["mqtt"]["password"]
    # the README's table row for this file names the same port
    row = [ln for ln in README.splitlines() if "`%s`" % name in ln and ln.startswith("|")]
    assert row and "**%d**" % port in row[0] or (profile == "mqtt" and "8883" in row[0]), (name, row)


@pytest.mark.parametrize("name", [n for n in CONFIGS if not n.startswith("mqtt")])
def test_example_needs_its_secret_and_holds_none(name):
    """Without the secrets file the firmware refuses the example naming the missing key (so no secret hides in a
    config.json); with it, every secret the config declares comes from the secrets file."""
    from app import config

    with pytest.raises(config.ConfigError) as e:
        load(name, secrets=False)
    assert e.value.key in ("cloud.huawei.secret", "cloud.enos.device_secret", "cloud.huawei", "cloud.enos")
    cfg = load(name)
    sec = json.loads(secrets_for(name).read_text())
    flat = json.dumps(sec)
    assert config.secrets(cfg) and all(v in flat for v in config.secrets(cfg))
    raw = (EX / name).read_text()
    assert not any(v in raw for v in config.secrets(cfg))


def test_a_comment_key_is_refused_so_the_comments_live_in_the_readme():
    from app import config

    raw = json.loads((EX / "iotda-bg96.json").read_text())
    raw["_comment"] = "hello"
    config._merge(raw, json.loads((EX / "secrets.json").read_text()))
    with pytest.raises(config.ConfigError) as e:
        config.validate(raw)
    assert e.value.key == "_comment"


def test_readme_describes_every_file_and_names_only_files_that_exist():
    names = set(re.findall(r"`([\w.-]+\.json)`", README))
    files = {p.name for p in EX.glob("*.json")}
    assert files <= names, files - names
    assert {n for n in names if n not in ("config.json", "secrets.json")} <= files | {"config.json"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    from tools import pki

    d = tmp_path_factory.mktemp("pki")
    keys = pki.generate(d / "pki")
    out = d / "certs"
    out.mkdir()
    for name in ("huawei-ca.pem", "enos-ca.pem", "broker-ca.pem"):
        shutil.copy(keys["ca_pem"], out / name)
    shutil.copy(keys["client_pem"], out / "enos-device.pem")
    shutil.copy(keys["client_key"], out / "enos-device.key")
    return out


@pytest.mark.parametrize("name", CONFIGS)
def test_deploy_accepts_the_example_for_its_board(name, certs):
    """tools.deploy checks a config as the board will (schema, board, modem, what its frozen firmware holds) and
    the certificates it names as PEM. The boards' manifests freeze Huawei and EnOS only: a plain-MQTT example is
    refused by name, as the README says."""
    from tools import deploy

    board = "esp32_bg96" if name.endswith("-bg96.json") else "stm32_bc660k"
    args = (board, str(EX / name), str(secrets_for(name)), str(certs), "py", None, "/dev/ttyUSB0", False, True)
    if name.startswith("mqtt"):
        with pytest.raises(deploy.DeployError) as e:
            deploy.plan(*args)
        assert "cloud.profile is mqtt" in str(e.value) and "app/plain.py" in str(e.value)
        assert "frozen" in README and "plain MQTT" in README
        return
    argv, notes = deploy.plan(*args)
    line = " ".join(argv)
    assert ":config.json" in line and ":secrets.json" in line and ":main.py" in line
    cfg = load(name)
    if cfg["tls"]["enabled"]:
        for key in ("ca", "cert", "key"):
            if cfg["tls"][key]:
                assert "certs/" in line and cfg["tls"][key] in line
    secret_values = json.loads(secrets_for(name).read_text())
    assert "REPLACE-WITH-THE" not in line and "REPLACE-WITH-THE" not in json.dumps(notes), secret_values


def test_every_example_loads_on_the_micropython_unix_port(tmp_path):
    """The same loader, on the interpreter the device runs (one process for all examples)."""
    mp = Path(sys.executable).with_name("micropython")
    if not mp.exists():
        pytest.skip("no micropython in the venv (make venv)")
    script = tmp_path / "load_all.py"
    pairs = [(str(EX / n), str(secrets_for(n))) for n in CONFIGS]
    script.write_text("from app import config\n"
                      "for c, s in %r:\n"
                      "    cfg = config.load(c, s)\n"
                      "    print('OK', c.split('/')[-1], cfg['cloud']['profile'], cfg['mqtt']['port'])\n" % (pairs,))
    env = dict(os.environ, MICROPYPATH=".frozen:" + ":".join(str(ROOT / p) for p in ("lib", "firmware", "boards/unix")))
    p = subprocess.run([str(mp), str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    got = [ln.split()[1] for ln in p.stdout.splitlines() if ln.startswith("OK ")]
    assert got == CONFIGS
