"""`make demo` on a fresh work directory, twice: the narrated scenario succeeds, and the second run finds the
certificates already in the (emulated) module and uploads nothing."""

import subprocess
import sys

import pytest
from services import ROOT


def _demo(work, *args):
    return subprocess.run([sys.executable, "-m", "tools.demo", "--workdir", str(work)] + list(args), cwd=str(ROOT),
                          capture_output=True, text=True, timeout=240)


def test_demo_twice_then_certificate_upload_is_skipped(tmp_path):
    p = _demo(tmp_path, "--fresh")
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    for words in ("Registered on the cellular network", "Uploaded the CA certificate", "TLS handshake done",
                  "Telemetry accepted by the twin's product model", "Cloud sends the command 'status'",
                  "Reply came back: state=running", "0 missing, 0 duplicates, 0 rejected"):
        assert words in out, (words, out)
    p = _demo(tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "nothing uploaded (skipped)" in p.stdout and "Uploaded the CA" not in p.stdout


def test_demo_enos_dynamic_on_bc660k(tmp_path):
    p = _demo(tmp_path, "--fresh", "--cloud", "enos-dynamic", "--modem", "bc660k")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Received the device secret" in p.stdout and "securemode=2" in p.stdout


# make demo CLOUD=... MODEM=...: every cloud variant on both modems (huawei on bg96 and enos-dynamic on bc660k
# run above)
@pytest.mark.parametrize("cloud, modem", [(c, m) for c in ("huawei", "huawei-binary", "iotda", "enos", "enos-dynamic",
                                                           "mqtt") for m in ("bg96", "bc660k")
                                          if (c, m) not in (("huawei", "bg96"), ("enos-dynamic", "bc660k"))])
def test_demo_every_cloud_on_both_modems(tmp_path, cloud, modem):
    p = _demo(tmp_path, "--fresh", "--cloud", cloud, "--modem", modem)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "Telemetry accepted by the twin's product model" in out and "Device confirmed (success)" in out, out
    assert "0 missing, 0 duplicates, 0 rejected; 2 commands answered" in out, out
    if cloud == "iotda":
        assert "(a property set)" in out
