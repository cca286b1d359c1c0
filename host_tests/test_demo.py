"""`make demo` on a fresh work directory, twice: the narrated scenario succeeds, and the second run finds the
certificates already in the (emulated) module and uploads nothing."""

import subprocess
import sys

from services import ROOT


def _demo(work, *args):
    return subprocess.run([sys.executable, "-m", "tools.demo", "--workdir", str(work)] + list(args), cwd=str(ROOT),
                          capture_output=True, text=True, timeout=240)


def test_demo_twice_then_certificate_upload_is_skipped(tmp_path):
    p = _demo(tmp_path, "--fresh")
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    for words in ("Registered on the cellular network", "Uploaded the CA certificate", "TLS handshake done",
                  "Telemetry arrived at the cloud twin", "Cloud sends the command 'status'", "Reply came back: state=running",
                  "0 missing, 0 duplicates"):
        assert words in out, (words, out)
    p = _demo(tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "nothing uploaded (skipped)" in p.stdout and "Uploaded the CA" not in p.stdout


def test_demo_enos_dynamic_on_bc660k(tmp_path):
    p = _demo(tmp_path, "--fresh", "--cloud", "enos-dynamic", "--modem", "bc660k")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Received the device secret" in p.stdout and "securemode=2" in p.stdout
