"""`make demo` on a fresh work directory, twice: the narrated scenario succeeds, and the second run finds the
certificates already in the (emulated) module and uploads nothing."""

import re
import subprocess
import sys
import time
from pathlib import Path

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
    # every demo ends by naming its transcript and log and the command that explains them
    m = re.search(r"^  python -m tools\.explain (\S+) (\S+) \[--html timeline\.html\]$", out, re.M)
    assert m and "Wrote the AT transcript %s and the firmware log %s" % m.groups() in out, out[-800:]
    assert Path(m.group(1)).read_text().count(" > AT") > 10 and "INFO running" in Path(m.group(2)).read_text()
    p = _demo(tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "nothing uploaded (skipped)" in p.stdout and "Uploaded the CA" not in p.stdout


def test_demo_enos_dynamic_on_bc660k(tmp_path):
    p = _demo(tmp_path, "--fresh", "--cloud", "enos-dynamic", "--modem", "bc660k")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Received the device secret" in p.stdout and "securemode=2" in p.stdout
    # the module takes the APN only at start-up: the one reboot after setting it is told as intended
    assert "restarted the module once, on purpose" in p.stdout and "[warn] the modem restarted" not in p.stdout


def test_demo_outage_loses_no_sample(tmp_path):
    """make demo SCENARIO=outage: network loss, modem crash, MCU power cut; exit 0 with every sample delivered,
    and the transcript it names explains as a timeline with those losses."""
    t0 = time.monotonic()
    p = _demo(tmp_path, "--fresh", "--scenario", "outage")
    took = time.monotonic() - t0
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    for words in ("Network lost for 8 s", "Network back: reconnected; the outbox held up to",
                  "Modem crash", "The modem restarted (RDY without being asked)", "Recovered from the modem reset",
                  "Power cut of the MCU", "The MCU boots again", "0 lost"):
        assert words in out, (words, out)
    depth = int(re.search(r"the outbox held up to (\d+) samples", out).group(1))
    assert depth >= 2, out  # 8 s without network at a 2 s interval: samples waited in the outbox
    ids = re.search(r"every sample arrived, ids (\d+)\.\.(\d+), 0 lost, each", out)
    assert ids and int(ids.group(2)) - int(ids.group(1)) >= 8, out
    assert took < 90, took
    tr, log = re.search(r"python -m tools\.explain (\S+) (\S+)", out).groups()
    e = subprocess.run([sys.executable, "-m", "tools.explain", tr, log], cwd=str(ROOT), capture_output=True,
                       text=True, timeout=60)
    assert e.returncode == 0, e.stdout
    for words in ("the host (MCU) started again", "the module restarted (RDY)", "+QMTSTAT 2", "recovered: connected "
                  "again", "Result: no unresolved failure; reached publishes"):
        assert words in e.stdout, (words, e.stdout[-3000:])
    # a failed activation is reported with the module's own code (+QIGETERROR: 561,...), all of it
    # (the BG96 cannot activate its PDP context while the cell is gone: the firmware says so with the code)
    text = Path(log).read_text()
    codes = re.findall(r"PDP context 1 could not be activated \(AT\+QIACT=1: ERROR; (\d+),open PDP context failed", text)
    assert codes and set(codes) == {"561"}, text[-3000:]


def test_narration_of_the_bc660k_apn_reboot_and_of_a_crash():
    from tools.demo import narrate

    ctx = {}
    lines = ["1 INFO modem event reset 1", "2 INFO modem ready (bc660k)", "3 INFO modem event reset 2",
             "4 WARN the modem restarted: starting over"]
    said = [narrate(ln, "BC660K-GL", ctx) for ln in lines]
    assert "on purpose" in said[3] and said[2] is None
    narrate("5 INFO running", "BC660K-GL", ctx)
    said = [narrate(ln, "BC660K-GL", ctx) for ln in ("6 INFO modem event reset 3", "7 WARN the modem restarted: x")]
    assert "on purpose" not in said[1] and "starts over from power-up" in said[1]
    assert "on purpose" not in narrate("4 WARN the modem restarted: starting over", "BG96", {"reset": True})


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
