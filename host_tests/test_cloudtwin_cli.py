"""The twin's command line, control socket protocol, and secret hygiene (nothing secret in its log)."""

import json
import os
import socket
import subprocess
import sys

import pytest
from fixtures_twin import (
    enos_credentials,
    huawei_credentials,
    requires_mosquitto,
    utc_hour,
)
from services import ROOT

from tools.cloudtwin.control import TwinControl, TwinControlError

HW = {"model": {"services": {"Meter": {"temp": "decimal"}, "M": {"v": "int"}, "Switch": {"on": "int"}}}, "devices": [{"device_id": "dev1", "secret": "hw-secret-123"}]}
ENOS = {"model": {"measurepoints": {"temp": "float", "t": "int"}}, "products": [{"product_key": "pk", "product_secret": "product-secret-456", "dynamic": True}],
        "devices": [{"product_key": "pk", "device_key": "dk"}]}


def run_cli(*args, timeout=20):
    return subprocess.run([sys.executable, "-m", "tools.cloudtwin"] + [str(a) for a in args], cwd=str(ROOT),
                          capture_output=True, timeout=timeout, check=False)


def test_ready_line_and_status(start_twin, pki):
    twin = start_twin("huawei", HW)
    line = twin.service.ready_line
    assert line == "READY tls=%d plain=%d control=%s" % (twin.info["tls_port"], twin.info["plain_port"],
                                                          twin.info["control"])
    st = twin.control.status()
    assert (st["cloud"], st["backend"], st["clock"], st["rate_limit"]) == ("huawei", "amqtt", "host", True)
    assert st["tls_port"] == twin.info["tls_port"] and st["connected"] == []
    assert json.dumps(twin.info)  # JSON-able for MicroPython-side tests
    assert twin.control.ping() is True


@pytest.mark.parametrize("problem,words", [
    ("devices", "not valid JSON"),
    ("certs", "has no ca.pem"),
    ("clock", "not an ISO 8601 time"),
    ("port", "failed to start"),
    ("factor", "--keepalive-factor"),
])
def test_start_errors_exit_2_with_one_clear_line(tmp_path, pki, problem, words):
    devices = tmp_path / "d.json"
    devices.write_text(json.dumps(HW))
    certs = os.path.dirname(pki["ca_pem"])
    args = ["--cloud", "huawei", "--certs", certs, "--devices", devices, "--control", tmp_path / "c.sock"]
    busy = None
    if problem == "devices":
        devices.write_text("{")
    elif problem == "certs":
        args[3] = str(tmp_path)
    elif problem == "clock":
        args += ["--clock", "fixed:soon"]
    elif problem == "port":
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args += ["--tls-port", busy.getsockname()[1]]
    elif problem == "factor":
        args += ["--keepalive-factor", "0"]
    try:
        r = run_cli(*args)
    finally:
        if busy is not None:
            busy.close()
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert words in err and err.startswith("cloudtwin: error:")
    assert "hw-secret-123" not in err
    assert b"READY" not in r.stdout


def test_missing_mosquitto_binary_is_a_clear_error(tmp_path, pki):
    devices = tmp_path / "d.json"
    devices.write_text(json.dumps(HW))
    r = run_cli("--cloud", "huawei", "--certs", os.path.dirname(pki["ca_pem"]), "--devices", devices,
                "--control", tmp_path / "c.sock", "--broker", "mosquitto", "--mosquitto", tmp_path / "nope")
    assert r.returncode == 2 and b"is not an executable file" in r.stderr


def test_control_socket_protocol(start_twin):
    twin = start_twin("huawei", HW)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(twin.info["control"])
        f = s.makefile("rwb")
        for line, want in [(b"not json\n", "not JSON"), (b"[1]\n", "'op' string"), (b'{"op": 3}\n', "'op' string"),
                           (b'{"op": "fly"}\n', "unknown op 'fly'"), (b'{"op": "telemetry", "device": "x"}\n',
                                                                    "unknown device"),
                           (b'{"op": "clock", "advance": "1"}\n', "number of seconds"),
                           (b'{"op": "deactivate", "device": "dev1"}\n', "EnOS"),
                           (b'{"op": "commands", "id": 99}\n', "no command")]:
            f.write(line)
            f.flush()
            reply = json.loads(f.readline())
            assert reply["ok"] is False and want in reply["error"], (line, reply)
        f.write(b'{"op": "ping"}\n{"op": "ping"}\n')  # several requests on one connection
        f.flush()
        assert [json.loads(f.readline())["pong"], json.loads(f.readline())["pong"]] == [True, True]
    with pytest.raises(TwinControlError, match="control socket"):
        TwinControl(twin.info["control"] + ".missing").ping()


def _secrets_absent(text, secrets):
    return [s for s in secrets if s in text]


def test_no_secret_or_password_reaches_the_twin_log(start_twin):
    hw = start_twin("huawei", HW)
    hour = utc_hour()
    cid, user, pw = huawei_credentials("dev1", "hw-secret-123", hour)
    d = hw.device(cid, user, pw)
    assert d.connect() == 0
    bad_pw = huawei_credentials("dev1", "guess", hour)[2]
    assert hw.device(cid, user, bad_pw).connect() == 4
    en = start_twin("enos", ENOS, activation_delay=0.05)
    cid, user, epw = enos_credentials("dk", "pk", "product-secret-456", securemode=3)
    e = en.device(cid, user, epw)
    assert e.connect() == 0
    issued = e.wait_json(topic="/ext/session/pk/dk/thing/activate/info")[1]["params"]["deviceSecret"]
    e.close()
    cid, user, epw2 = enos_credentials("dk", "pk", issued)
    assert en.device(cid, user, epw2 + "00").connect() == 4
    logs = hw.log_text() + en.log_text()
    assert "CONNECT" in logs  # the log is on (-v) and did record the attempts
    assert _secrets_absent(logs, ["hw-secret-123", pw, bad_pw, "product-secret-456", epw, epw2, issued]) == []
    views = json.dumps([hw.control.connections(), en.control.connections(), en.control.violations()])
    assert _secrets_absent(views, ["hw-secret-123", pw, bad_pw, "product-secret-456", epw, epw2]) == []


@requires_mosquitto
def test_no_secret_reaches_the_log_with_mosquitto(start_twin):
    twin = start_twin("huawei", HW, broker="mosquitto", clock="fixed:2030-01-01T10:30:00Z")
    cid, user, pw = huawei_credentials("dev1", "hw-secret-123", "2030010110")
    d = twin.device(cid, user, pw)
    assert d.connect() == 0
    assert twin.control.wait_for(twin.control.connections)
    logs = twin.log_text()
    assert "mosquitto version" in logs
    assert _secrets_absent(logs, ["hw-secret-123", pw]) == []

