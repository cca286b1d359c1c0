"""python -m tools.explain: timelines of the real module captures (host_tests/data/explain/, copied from the
project's reference digest with their sources), of the firmware's own transcripts and logs from failing runs
against the emulator and the cloud twin (bad password, expired CA, registration denied) and from a good one;
each names the right cause. The HTML page is rendered in headless Chromium and checked (DOM and pixels)."""

import datetime
import json
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from tools import explain

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "host_tests" / "data" / "explain"


def run(*args):
    p = subprocess.run([sys.executable, "-m", "tools.explain"] + [str(a) for a in args], cwd=str(ROOT),
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def steps(a, name):
    return [s for s in a.steps if s.name == name]


# ---- the real captures ----------------------------------------------------------------------------------------

def test_t1_bg96_reboot_takes_six_seconds_and_the_pdpdeact_belongs_to_it():
    a = explain.analyse(DATA / "t1_bg96_reboot.txt")
    assert a.kind == "serial monitor capture"
    reset = [s for s in steps(a, "power-up") if any("AT+CFUN=1,1" in d for d in s.detail)]
    assert len(reset) == 1
    took = reset[0].end - reset[0].start
    assert 5800 <= took <= 6000, took  # 17:13:30.563 .. RDY at 17:13:36.489
    text = " ".join(reset[0].detail)
    assert "POWERED DOWN" in text and "pdpdeact" in text and "RDY" in text
    assert not a.losses and a.diagnosis() is None
    assert steps(a, "SIM")[0].status == explain.OK


def test_t2_bg95_tls_failure_is_an_open_failure_with_the_uploads_and_the_insecure_setting():
    a = explain.analyse(DATA / "t2_bg95_tls_fail.txt")
    cert = steps(a, "certificates")[0]
    text = " ".join(cert.detail)
    for name, size, ck in (("cacert.pem", 1189, "2d13"), ("client.pem", 1221, "21c"), ("user_key.pem", 1680, "57")):
        assert "uploaded %s: %d bytes stored, checksum %s" % (name, size, ck) in text
    assert "IP 10.160.151.51" in " ".join(steps(a, "PDP")[0].detail)
    assert any("ignorelocaltime 1" in d for s in steps(a, "TLS/MQTT settings") for d in s.detail)
    op = steps(a, "open")[0]
    assert op.status == explain.FAIL and "+QMTOPEN -1: failed to open the network connection" in op.detail[0]
    head, checks = a.diagnosis()
    assert "+QMTOPEN -1" in head and any("mqtt.host and mqtt.port" in c for c in checks)
    rc, out = run(DATA / "t2_bg95_tls_fail.txt")
    assert rc == 1 and "Most likely cause:" in out and "no times in the file" in out


def test_t4_codes_in_words():
    rc, out = run(DATA / "t4_bg770a_bench.txt")
    assert "+CME ERROR: 515: busy" in out
    assert 'AT+CPIN="***" -> +CME ERROR: 3: operation not allowed' in out and '"0000"' not in out and "no PIN was pending" in out
    assert "ATBOGUS -> ERROR: refused: an unknown command" in out
    assert rc == 0 and "no unresolved failure" in out  # a bench poking at commands: nothing failed that mattered


def test_t6_certificate_push_that_stored_nothing():
    a = explain.analyse(DATA / "t6_bc66_cert_push.txt")
    cert = steps(a, "certificates")[0]
    assert cert.status == explain.FAIL and cert.kind == "cert_upload"
    assert any("0 bytes stored" in d for d in cert.detail)
    assert any("PEM as command-mode input" in d for d in cert.detail)
    head, checks = a.diagnosis()
    assert "did not reach the module intact" in head and any("Ctrl-Z after it" in c for c in checks)


def test_t7_socket_exchange_and_t8_interleaved_boot():
    a = explain.analyse(DATA / "t7_bc660_socket_hex.txt")
    assert steps(a, "open")[0].status == explain.OK and "+QIOPEN 0: opened" in steps(a, "open")[0].detail[0]
    assert steps(a, "publishes")[0].count == 1 and a.received == 1
    b = explain.analyse(DATA / "t8_eg25_boot.txt")
    assert steps(b, "power-up")[0].status == explain.OK and steps(b, "SIM")[0].status == explain.OK


def test_reject_cause_of_a_denied_registration_in_27007_form(tmp_path):
    # constructed in the 3GPP TS 27.007 +CEREG=3 form (no public capture of one was found): <n>,<stat>,<tac>,
    # <ci>,<AcT>,<cause_type>,<reject_cause>
    f = tmp_path / "denied.txt"
    f.write_text("0 > AT+CEREG=3\n5 < OK\n6 > AT+CEREG?\n8 < +CEREG: 3,3,\"1A2B\",\"01A2B3C4\",8,0,15\n9 < OK\n")
    a = explain.analyse(f)
    reg = steps(a, "registration")[0]
    assert reg.status == explain.FAIL and reg.info["cause"] == 15
    head, checks = a.diagnosis()
    assert "reject cause 15, no suitable cells in tracking area" in head
    assert not any("AT+CEER" in c for c in checks)  # the cause is known: no need to ask for it


def test_reject_cause_reported_by_the_emulated_bc660k(start_modemsim, tmp_path):
    """The emulator's registration_lost fault with a cause: +CEREG=3 (3GPP TS 27.007 10.1.22) carries the EMM
    reject cause; the emulator's own transcript is read and the cause named."""
    from fixtures_modemsim import AtPort

    tr = tmp_path / "modem-transcript.txt"
    sim = start_modemsim("bc660k", transcript=str(tr), faults=[
        {"when": {"event": "registered"}, "do": {"action": "registration_lost", "stat": 3, "recover_s": -1,
                                                  "cause": 11}}])
    p = AtPort(sim.info["port"])
    try:
        p.wait_boot()
        assert b"OK" in p.cmd("AT+QSCLK=0")
        assert b"OK" in p.cmd("AT+CEREG=3")
        deadline = time.monotonic() + 10
        while b"+CEREG: 3,3,,,,0,11" not in p.cmd("AT+CEREG?"):
            assert time.monotonic() < deadline, "no denied registration"
            time.sleep(0.2)
    finally:
        p.close()
    time.sleep(0.2)
    a = explain.analyse(tr)
    assert a.kind == "emulator transcript"
    reg = [s for s in steps(a, "registration") if s.status == explain.FAIL][-1]
    assert reg.info["cause"] == 11
    head, _ = a.diagnosis()
    assert "reject cause 11, PLMN not allowed" in head


def test_the_emulators_transcript_of_a_good_run_reads_like_the_firmwares(runs):
    tr = runs["good"][0]
    sim = next(tr.parent.glob("modem-transcript-*.txt"))
    a, b = explain.analyse(tr), explain.analyse(sim)
    assert b.kind == "emulator transcript" and b.diagnosis() is None
    ok = lambda x: [s.name for s in x.steps if s.status == explain.OK and s.name != "publishes"]  # noqa: E731
    assert ok(a)[:9] == ok(b)[:9], (ok(a), ok(b))


def test_secrets_in_a_capture_never_reach_the_output(tmp_path):
    # a capture from a real module holds the credentials in clear (the firmware's own transcripts redact them)
    f = tmp_path / "capture.txt"
    f.write_text('AT+CPIN="8642"\n+CME ERROR: 16\nAT+QICSGP=1,1,"apn","user","apn-Pass-77",1\nERROR\n'
                 'AT+QMTOPEN=0,"broker.example",8883\nOK\n+QMTOPEN: 0,0\n'
                 'AT+QMTCONN=0,"dev-1","dev-1","Mqtt-Pass-99"\nAT+QMTCONN=0,"dev-1","dev-1","Mqtt-Pass-99"\n'
                 '+CME ERROR: 8503\n')
    page = tmp_path / "page.html"
    rc, out = run(f, "--html", page)
    text = out + page.read_text()
    for secret in ("8642", "apn-Pass-77", "Mqtt-Pass-99"):
        assert secret not in text, secret
    assert '+CME ERROR: 16: incorrect password (PIN)' in out and "AT+CPIN=\"***\"" in out
    assert "+CME ERROR: 8503: MQTT: link layer error" in out and '"dev-1","***"' in out


def test_unknown_input_says_so(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("# nothing here\n")
    rc, out = run(f)
    assert rc == 0 and "nothing recognisable" in out
    rc, out = run(tmp_path / "missing.txt")
    assert rc == 2 and "missing.txt" in out


# ---- runs of the real firmware against the emulator and the twin ----------------------------------------------

WRONG_SECRET = "wrong-secret-4711"


def _expired_ca_pki(work):
    from tools import pki

    d = work / "pki"
    d.mkdir(parents=True)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    day = datetime.timedelta(days=1)
    ca_key, ca = pki._ca("cellmqtt expired root CA", now - 400 * day, now - 2 * day)  # expired two days ago
    srv_key, srv = pki._leaf(ca_key, ca, "localhost", now - day, now + 30 * day,
                             server_hosts=["localhost", "127.0.0.1", "iot.test"])
    cli_key, cli = pki._leaf(ca_key, ca, "device-0001", now - day, now + 30 * day)
    for name, obj in (("ca.pem", ca), ("server.pem", srv), ("client.pem", cli), ("other-ca.pem", ca)):
        pki._write_cert(d / name, obj)
    for name, key in (("ca.key", ca_key), ("server.key", srv_key), ("client.key", cli_key)):
        pki._write_key(d / name, key)


def firmware_run(work, kind, modem="bg96"):
    """Run the firmware until it failed twice (or, for "good", published 3 samples); return (transcript, log)."""
    from tools.demo import Rig

    work = Path(work)
    if kind == "expired":
        _expired_ca_pki(work)
    rig = Rig(work, "huawei", modem, quiet=True)
    try:
        if kind == "badpass":
            (rig.flash / "secrets.json").write_text(json.dumps({"cloud": {"huawei": {"secret": WRONG_SECRET}}}))
        elif kind == "denied":
            rig.stop_modem()
            rig.start_modem("--faults", json.dumps([{"when": {"event": "registered"},
                                                     "do": {"action": "registration_lost", "stat": 3,
                                                            "recover_s": -1}}]))
        tr = rig.logs / "at.txt"
        rig.start_firmware(args=["--transcript", str(tr)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            log = rig.fwlog.read_text(errors="replace")
            if kind == "good" and rig.samples() >= 3:
                break
            if kind != "good" and log.count(" failed: ") >= 2:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the run did not reach its end: %s" % rig.fwlog.read_text()[-2000:])
        return tr, rig.fwlog
    finally:
        rig.stop()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for kind in ("badpass", "expired", "denied", "good"):
        out[kind] = firmware_run(tmp_path_factory.mktemp(kind), kind)
    return out


def test_bad_password_names_the_refused_connect(runs):
    for f in runs["badpass"]:
        rc, out = run(f)
        assert rc == 1, out
        assert "Most likely cause: The broker refused the MQTT CONNECT: CONNACK 4, refused: bad user name or " \
               "password" in out, out
        assert "The device secret in secrets.json" in out
        assert WRONG_SECRET not in out  # the secret never reaches an output (transcript and log redact it)
    a = explain.analyse(runs["badpass"][0])
    assert [s.status for s in steps(a, "open")][:2] == [explain.OK, explain.OK]
    assert all(s.status == explain.FAIL for s in steps(a, "CONNECT")) and len(steps(a, "CONNECT")) >= 2
    assert any("+QMTSTAT 3" in s.detail[0] for s in a.losses)


def test_expired_ca_names_the_certificate(runs):
    tr, log = runs["expired"]
    a = explain.analyse(tr)
    assert steps(a, "open")[0].status == explain.FAIL
    diag = steps(a, "TLS diagnosis")[0]
    assert diag.status == explain.OK and diag.kind == "diag_tls_ok"  # the server is reachable
    head, checks = a.diagnosis()
    assert "TLS handshake failed although the server is reachable" in head
    assert any("within their dates" in c for c in checks) and any("looks right" in c for c in checks)
    rc, out = run(log)
    assert rc == 1 and "TLS handshake failed although the server is reachable" in out


def test_registration_denied_names_the_network_refusal(runs):
    for f in runs["denied"]:
        rc, out = run(f)
        assert rc == 1
        assert "Most likely cause: The network refused the registration (+CEREG stat 3)" in out, out
        assert "AT+CEER" in out  # the firmware's +CEREG=2 carries no reject cause: the tool says how to get it
    a = explain.analyse(runs["denied"][0])
    assert len(steps(a, "registration")) >= 2  # each retry after the back-off is an attempt of its own
    assert not steps(a, "PDP")


def test_a_good_run_has_every_step_and_no_cause(runs):
    tr, log = runs["good"]
    a = explain.analyse(tr)
    names = [s.name for s in a.steps if s.status == explain.OK]
    for n in ("power-up", "SIM", "registration", "PDP", "clock", "certificates", "open", "CONNECT", "subscriptions",
              "publishes"):
        assert n in names, (n, names)
    pub = steps(a, "publishes")[0]
    assert pub.count >= 3 and any("acknowledged" in d and "ms on average" in d for d in pub.detail)
    assert a.diagnosis() is None
    order = [CHAIN_INDEX[s.name] for s in a.steps if s.name in CHAIN_INDEX]
    assert order.index(CHAIN_INDEX["CONNECT"]) > order.index(CHAIN_INDEX["registration"])
    rc, out = run(tr, log)
    assert rc == 0 and out.count("Result: no unresolved failure") == 2


CHAIN_INDEX = {n: i for i, n in enumerate(explain.CHAIN)}


# ---- the HTML page in a real browser -------------------------------------------------------------------------

def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    pytest.skip("chromium is not installed (Debian package chromium; .ci/run installs it)")


def _browser(*args):
    exe = _chromium()
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"] + list(args),
                          capture_output=True, text=True, timeout=90)


def _png_pixels(path):
    """(width, height, rows of RGB tuples) of a PNG (8-bit RGB/RGBA, non-interlaced), decoded here."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), (depth, ctype)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(w)])
        prev = line
    return w, h, rows


def test_html_page_is_self_contained_and_renders(runs, tmp_path):
    page = tmp_path / "timeline.html"
    rc, out = run("--html", page, runs["badpass"][0])
    assert rc == 1 and "HTML timeline written to" in out
    html = page.read_text()
    assert "<script" not in html and "<link" not in html and not re.search(r"(src|href)=", html)
    assert WRONG_SECRET not in html
    a = explain.analyse(runs["badpass"][0])
    dom = _browser("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    d = dom.stdout
    assert d.count('<tr class="step">') == len(a.steps)
    assert len(re.findall(r'<rect class="bar"', d)) == len(a.steps)  # one bar per step in the chart
    assert 'id="cause"' in d and "CONNACK 4" in d
    shot = tmp_path / "shot.png"
    p = _browser("--window-size=1000,900", "--screenshot=%s" % shot, page.as_uri())
    assert p.returncode == 0 and shot.exists(), p.stderr[-2000:]
    w, h, rows = _png_pixels(shot)
    colours = {px for row in rows[::3] for px in row[::3]}
    near = lambda c, ref: all(abs(x - y) <= 12 for x, y in zip(c, ref))  # noqa: E731
    assert any(near(c, (0xc0, 0x39, 0x2b)) for c in colours), "no red (failed) bar on the page"
    assert any(near(c, (0x2e, 0x8b, 0x57)) for c in colours), "no green (ok) bar on the page"
