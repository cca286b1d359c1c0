"""The firmware application end to end: firmware/main.py on the MicroPython unix port -> pty -> emulated modem
-> real TLS -> cloud twin. Cold start to running, commands, fault classes with back-off, restarts, safe mode."""

import datetime
import json
import subprocess
import time

import pytest
from e2e import MICROPYPATH, MICROPYTHON, ROOT


def _t(iso):
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def contiguous(samples):
    ids = sorted(int(s) for s in samples)
    return ids == list(range(ids[0], ids[0] + len(ids))), ids


def test_cold_start_to_running_and_commands_huawei_bg96(mkdev):
    d = mkdev(cloud="huawei", modem="bg96", interval=2)
    d.start()
    tel = d.wait_samples(2)
    assert tel["duplicates"] == 0 and not tel["bad"] and not tel["missing_id"], tel
    conns = d.connections()
    assert conns[0]["accepted"] and conns[0]["tls"] and conns[0]["sig_type"] == 1, conns
    tc = d.twin.control
    # status
    st = tc.command(d.device, service_id="Config", cmd="status", paras={})
    rec = tc.wait_reply(st, 10)
    assert rec["reply"]["errcode"] == 0 and rec["reply"]["body"]["state"] == "running", rec
    # change the interval: samples then arrive faster
    iv = tc.command(d.device, service_id="Config", cmd="set_interval", paras={"value": 1})
    assert tc.wait_reply(iv, 10)["reply"]["errcode"] == 0
    n0 = d.telemetry()["unique"]
    time.sleep(4.5)
    assert d.telemetry()["unique"] - n0 >= 3
    # an unknown command gets an error reply; a malformed value too
    for cmd, paras in (("selfdestruct", {}), ("set_interval", {"value": "soon"})):
        r = tc.command(d.device, service_id="Config", cmd=cmd, paras=paras)
        rep = tc.wait_reply(r, 10)["reply"]
        assert rep["errcode"] == 1 and rep["body"]["error"], rep
    log = d.fw.log_text()
    assert "certificates: 1204 bytes" in log or "certificates:" in log
    assert "s3cret-huawei-device" not in log  # the secret never reaches the log


def test_reboot_command_exits_for_a_restart(mkdev):
    d = mkdev(cloud="huawei", modem="bg96")
    d.start()
    d.wait_samples(1)
    r = d.twin.control.command(d.device, service_id="Config", cmd="reboot", paras={})
    assert d.twin.control.wait_reply(r, 10)["reply"]["errcode"] == 0
    assert d.fw.wait(15) == 75  # EX_TEMPFAIL: the service manager (or make run) starts it again


@pytest.mark.parametrize("fault, expect", [
    ({"action": "qmtstat", "client": 0, "code": 1}, "QMTSTAT 1"),
    ({"action": "qmtstat", "client": 0, "code": 2}, "QMTSTAT 2"),
    ({"action": "reset", "mode": "crash"}, "the modem restarted: starting over"),
    ({"action": "pdp_lost"}, "PDP"),
    ({"action": "registration_lost", "stat": 2, "recover_s": 2, "drop_links": True}, "QMTSTAT 2"),
])
def test_fault_returns_to_running_after_backoff_without_losing_samples(mkdev, fault, expect):
    d = mkdev(cloud="huawei", modem="bg96", interval=1)
    d.start()
    d.wait_samples(3)
    d.fault(fault)
    d.twin.control.wait_for(lambda: len(d.connections()) >= 2, 30, what="a reconnect")
    tel = d.wait_samples(d.telemetry()["unique"] + 3)
    ok, ids = contiguous(tel["samples"])
    assert ok, ("samples lost", ids)
    c = d.connections()
    assert c[-1]["accepted"]
    gap = _t(c[1]["time"]) - _t(c[0]["disconnected"])
    assert 0.7 <= gap <= 4 * 1.25 + 10, gap  # backoff.min_s=1, max_s=4, jitter 0.25 (+ bring-up time)
    assert expect in d.fw.log_text()


# tls_fail also fails the driver's diagnostic handshake: 6 failed handshakes = 3 failed connects
@pytest.mark.parametrize("fault", [{"action": "tls_fail", "count": 6}, {"action": "broker_refuse", "code": 5, "count": 3}])
def test_repeated_failures_back_off_exponentially(mkdev, fault):
    d = mkdev(cloud="huawei", modem="bg96", interval=1)
    d.start()
    d.wait_samples(1)
    d.fault(fault)
    d.fault({"action": "qmtstat", "client": 0, "code": 1})
    tel = d.wait_samples(d.telemetry()["unique"] + 2, timeout=60)
    log = d.fw.log_text()
    waits = [float(x.split(" in ")[1].split(" s")[0]) for x in log.splitlines() if " failed: " in x and " in " in x]
    assert len(waits) >= 4, log[-3000:]
    assert all(0.7 <= w <= 4 * 1.25 for w in waits), waits  # min_s=1 doubling to max_s=4, jitter 25 %
    assert max(waits) > 2.5  # it did grow
    assert contiguous(tel["samples"])[0]
    if fault["action"] == "broker_refuse":
        assert "ConnectRefused" in log and "not authorised (CONNACK 5)" in log
    else:
        assert "TLS" in log


def test_samples_survive_a_kill_and_restart(mkdev):
    d = mkdev(cloud="huawei", modem="bg96", interval=1)
    d.start()
    d.wait_samples(3)
    d.fw.kill()  # SIGKILL: no clean shutdown; the modem keeps its MQTT client open
    time.sleep(2)
    d.start()
    tel = d.wait_samples(d.telemetry()["unique"] + 3)
    ok, ids = contiguous(tel["samples"])
    assert ok, ids
    assert "certificates: 0 bytes sent to the modem (unchanged)" in d.fw.log_text()


def test_bad_config_is_named_and_safe_mode(tmp_path):
    flash = tmp_path
    cases = [
        ({"mqtt": {"host": "h", "port": "8883"}, "cloud": {"profile": "mqtt", "mqtt": {"client_id": "c"}}}, "mqtt.port"),
        ({"mqtt": {"host": "h"}, "cloud": {"profile": "huawei", "huawei": {"device_id": "d"}}}, "cloud.huawei.secret"),
        ({"mqtt": {"host": "h"}, "modme": {}}, "modme"),
    ]
    for cfg, key in cases:
        (flash / "config.json").write_text(json.dumps(cfg))
        p = subprocess.run([MICROPYTHON, str(ROOT / "firmware" / "main.py"), "--port", "/dev/null"], cwd=str(flash),
                           env={"MICROPYPATH": MICROPYPATH}, capture_output=True, text=True, timeout=20)
        assert p.returncode == 2, p.stdout + p.stderr
        assert "SAFE MODE" in p.stdout and ("config " + key) in p.stdout, p.stdout
        assert "Traceback" not in p.stdout + p.stderr
    (flash / "config.json").write_text("{broken")
    p = subprocess.run([MICROPYTHON, str(ROOT / "firmware" / "main.py")], cwd=str(flash),
                       env={"MICROPYPATH": MICROPYPATH}, capture_output=True, text=True, timeout=20)
    assert p.returncode == 2 and "not valid JSON" in p.stdout


def test_huawei_sig_type_from_the_config_overrides_the_clock(mkdev):
    # cloud.huawei.sig_type "0": the hour is sent unchecked (sigType 0) although the modem clock is trusted
    d = mkdev(cloud="huawei", modem="bg96", interval=1)
    cfg = json.loads((d.flash / "config.json").read_text())
    cfg["cloud"]["huawei"]["sig_type"] = "0"
    d.write_config(cfg)
    d.start()
    d.wait_samples(1)
    c = d.connections()[0]
    assert c["accepted"] and c["sig_type"] == 0, c
    assert "network up:" in d.fw.log_text() and "(trusted)" in d.fw.log_text()
