"""End-to-end matrix: {BG96, BC660K-GL} x {native MQTT, our MQTT over the module's TLS socket} x {Huawei, EnOS
static, EnOS dynamic activation}, all over TLS, plus mutual TLS; then the firmware issue's faults injected
mid-run with zero samples lost and duplicates only where QoS 1 allows (the twin counts them by sample id).

Each run is the real firmware (MicroPython unix port) -> pty -> emulated modem -> real TLS -> cloud twin; the
matrix runs with the emulator's output cut in random pieces (--chunking, seeded per run).
"""

import json

import pytest
from e2e import ENOS_DK

MODEMS = ("bg96", "bc660k")
TRANSPORTS = ("native", "socket")
CLOUDS = ("huawei", "enos", "enos-dynamic")


def contiguous(samples):
    ids = sorted(int(s) for s in samples)
    return ids == list(range(ids[0], ids[0] + len(ids))), ids


def command_round_trip(d, quiet=False):
    """Commands down, replies up. quiet: send each command right after a sample arrived, while the device is
    not sending -- the BC660K-GL drops what arrives over its TLS socket during a send (quectel-bc660k.md 1)."""
    tc = d.twin.control
    real = tc.command

    def command(*a, **k):
        if quiet:
            d.wait_samples(d.telemetry()["unique"] + 1)
        return real(*a, **k)

    tc = type("T", (), {"command": staticmethod(command), "wait_reply": staticmethod(tc.wait_reply)})
    if d.cloud == "huawei":
        cid = tc.command(d.device, service_id="Config", cmd="status", paras={})
        rep = tc.wait_reply(cid, 15)["reply"]
        assert rep["errcode"] == 0 and rep["body"]["state"] == "running", rep
        cid = tc.command(d.device, service_id="Config", cmd="nonsense", paras={})
        assert tc.wait_reply(cid, 15)["reply"]["errcode"] == 1
    else:
        cid = tc.command(d.device, kind="service", service_id="status", params={})
        rep = tc.wait_reply(cid, 15)["reply"]
        assert rep["code"] == 200 and rep["data"]["state"] == "running", rep
        iv = 4 if quiet else 2
        cid = tc.command(d.device, kind="measurepoint_set", params={"interval": iv})
        assert tc.wait_reply(cid, 15)["reply"]["code"] == 200
        cid = tc.command(d.device, kind="measurepoint_get", params=["interval"])
        rep = tc.wait_reply(cid, 15)["reply"]
        assert rep["code"] == 200 and rep["data"] == {"interval": iv}, rep


@pytest.mark.parametrize("modem", MODEMS)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", CLOUDS)
def test_matrix(mkdev, modem, transport, mode):
    half_duplex = modem == "bc660k" and transport == "socket"
    # the emulator writes its output in random pieces with random gaps (--chunking), as a UART and a USB bridge
    # hand bytes over: no run of the matrix sees whole lines
    seed = MODEMS.index(modem) * 100 + TRANSPORTS.index(transport) * 10 + CLOUDS.index(mode)
    d = mkdev(cloud="huawei" if mode == "huawei" else "enos", modem=modem, transport=transport,
              dynamic=mode == "enos-dynamic", interval=4 if half_duplex else 1, sim_opts={"chunking": seed})
    d.start()
    tel = d.wait_samples(2, timeout=60)
    if mode == "enos-dynamic":  # activation, then the reconnect with the new secret, before any command
        d.twin.control.wait_for(lambda: [c["securemode"] for c in d.connections() if c["accepted"]][:2] == [3, 2],
                                30, what="activation and reconnect")
        tel = d.wait_samples(tel["unique"] + 1)
    command_round_trip(d, quiet=half_duplex)
    tel = d.wait_samples(tel["unique"] + 2)
    ok, ids = contiguous(tel["samples"])
    assert ok and tel["duplicates"] == 0 and not tel["bad"] and not tel["missing_id"], (ids, tel)
    conns = d.connections()
    assert all(c["tls"] for c in conns)
    if mode == "enos-dynamic":
        act = d.twin.control.activations()
        assert len(act) == 1 and act[0]["device_key"] == ENOS_DK and act[0]["reply"]
        stored = json.loads((d.flash / "secrets.json").read_text())["cloud"]["enos"]
        assert stored["device_secret"] == act[0]["device_secret"]  # persisted, as issued
        assert [c["securemode"] for c in conns if c["accepted"]][:2] == [3, 2]
        # a restart uses the stored secret (the product secret no longer works for this device)
        d.fw.kill()
        d.start()
        n = d.telemetry()["unique"]
        d.wait_samples(n + 1)
        last = d.connections()[-1]
        assert last["accepted"] and last["securemode"] == 2
        assert len(d.twin.control.activations()) == 1
    assert d.twin.control.violations()["topic"] == []
    assert d.twin.control.violations()["rate"] == []


@pytest.mark.parametrize("modem, cloud", [("bg96", "huawei"), ("bc660k", "enos")])
def test_mutual_tls(mkdev, modem, cloud):
    d = mkdev(cloud=cloud, modem=modem, mtls=True, interval=1)
    d.start()
    d.wait_samples(2, timeout=60)
    c = d.connections()[0]
    assert c["accepted"] and c["client_cert"] == "device-0001"


FAULTS = [
    {"action": "qmtstat", "client": 0, "code": 1},
    {"action": "pdp_lost"},
    {"action": "registration_lost", "stat": 2, "recover_s": 2, "drop_links": True},
    {"action": "reset", "mode": "crash"},
    {"action": "qmtstat", "client": 0, "code": 2},
    {"action": "tls_fail", "count": 2},
    {"action": "broker_refuse", "code": 3, "count": 1},
]


@pytest.mark.parametrize("modem", MODEMS)
def test_faults_mid_run_lose_no_sample(mkdev, modem):
    d = mkdev(cloud="huawei", modem=modem, interval=1)
    d.start()
    d.wait_samples(3, timeout=60)
    for fault in FAULTS:
        before = len(d.connections())
        d.fault(fault)
        if fault["action"] in ("tls_fail", "broker_refuse"):  # they bite on the next connect: make one happen
            d.fault({"action": "qmtstat", "client": 0, "code": 1})
        d.twin.control.wait_for(lambda b=before: any(c["accepted"] for c in d.connections()[b:]), 60,
                                what="reconnect after %s" % fault["action"])
        d.wait_samples(d.telemetry()["unique"] + 2, timeout=60)
    tel = d.telemetry()
    ok, ids = contiguous(tel["samples"])
    assert ok, ("a sample was lost", ids)
    # QoS 1 may repeat a sample whose PUBACK was lost with the link: at most one per link loss
    assert tel["duplicates"] <= len(FAULTS), tel["duplicate_ids"]
    log = d.fw.log_text()
    assert "the modem restarted: starting over" in log


def test_enos_faults_respect_the_connect_rate_limit(mkdev):
    d = mkdev(cloud="enos", modem="bg96", interval=1, twin_opts={"rate_limit": "on"})
    d.start()
    d.wait_samples(2, timeout=60)
    for _ in range(3):  # the 4th connect within 2 minutes would be refused (and block the device for 5)
        before = len(d.connections())
        d.fault({"action": "qmtstat", "client": 0, "code": 1})
        d.twin.control.wait_for(lambda b=before: len(d.connections()) > b, 200, what="reconnect")
    v = d.twin.control.violations()["rate"]
    assert v == [], v
    conns = d.connections()
    assert all(c["accepted"] for c in conns), conns
    assert "connect rate limit: waiting" in d.fw.log_text()


@pytest.mark.parametrize("firmware, cloud, transport", [("BG95M3LAR02A03", "huawei", "native"),
                                                          ("BG770AGLAAR01A05", "enos", "socket")])
def test_bg95_family_end_to_end(mkdev, firmware, cloud, transport):
    # the third modem: its driver module and emulator profile, nothing in the app. The server certificate names
    # iot.test, and the BG95 family checks the host name (checkhost) and sends SNI.
    d = mkdev(cloud=cloud, modem="bg95", transport=transport, interval=1, sim_opts={"firmware": firmware})
    d.start()
    tel = d.wait_samples(2, timeout=60)
    command_round_trip(d)
    d.fault({"action": "qmtstat", "client": 0, "code": 1} if transport == "native" else
            {"action": "ssl_closed", "client": 1})
    d.twin.control.wait_for(lambda: len(d.connections()) >= 2, 30, what="a reconnect")
    tel = d.wait_samples(tel["unique"] + 3, timeout=60)
    ok, ids = contiguous(tel["samples"])
    assert ok and not tel["bad"], (ids, tel)
    assert all(c["tls"] for c in d.connections())
    st = d.sim.control({"cmd": "ssl"})
    assert st["ok"] and any(c.get("checkhost") == 1 and c.get("sni") == 1 for c in st["ssl"].values()), st
