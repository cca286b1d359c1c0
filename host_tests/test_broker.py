"""The local broker the tests and the cloud twin stand on: TLS, CONNACK codes, mutual TLS."""

import json
import os
import ssl
import threading

import paho.mqtt.client as mqtt
import pytest
from services import Service, python_module


def _connect(port, ca, user=None, password=None, cert=None, key=None, wait=10):
    got = {}
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t1", protocol=mqtt.MQTTv311)
    c.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    if user:
        c.username_pw_set(user, password)

    def on_connect(client, userdata, flags, reason, props):
        got["rc"] = {0: 0, 134: 4, 135: 5}.get(reason.value, reason.value)  # paho maps 3.1.1 codes to v5 reasons
        done.set()

    c.on_connect = on_connect
    c.connect("localhost", port, 30)
    c.loop_start()
    done.wait(wait)
    c.disconnect()
    c.loop_stop()
    return got.get("rc")


@pytest.fixture
def pw_broker(pki, tmp_path):
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"dev": "s3cret"}))
    svc = Service(python_module("tools.broker", "--certs", os.path.dirname(pki["ca_pem"]), "--users", users),
                  "READY", tmp_path / "b.log")
    yield int(svc.fields()["tls"])
    svc.stop()


def test_tls_publish_subscribe_round_trip(broker):
    got, done = [], threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rt", protocol=mqtt.MQTTv311)
    c.tls_set(ca_certs=broker["ca"])
    c.on_message = lambda cl, ud, m: (got.append((m.topic, m.payload)), done.set())
    c.connect("localhost", broker["tls_port"], 30)
    c.loop_start()
    c.subscribe("a/b", 1)
    c.publish("a/b", b"\x00\x1a\x1bpayload", qos=1).wait_for_publish(5)
    assert done.wait(5)
    c.loop_stop()
    assert got == [("a/b", b"\x00\x1a\x1bpayload")]


def test_connack_codes_for_refused_logins(pw_broker, pki):
    assert _connect(pw_broker, pki["ca_pem"], "dev", "s3cret") == 0
    assert _connect(pw_broker, pki["ca_pem"], "dev", "wrong") == 4
    assert _connect(pw_broker, pki["ca_pem"], "nobody", "x") == 5


def test_server_not_trusted_by_other_ca(broker, pki):
    with pytest.raises(ssl.SSLCertVerificationError):
        _connect(broker["tls_port"], pki["other-ca_pem"])


def test_mutual_tls_requires_client_certificate(pki, tmp_path):
    svc = Service(python_module("tools.broker", "--certs", os.path.dirname(pki["ca_pem"]), "--require-client-cert"),
                  "READY", tmp_path / "b.log")
    try:
        port = int(svc.fields()["tls"])
        assert _connect(port, pki["ca_pem"], cert=pki["client_pem"], key=pki["client_key"]) == 0
        try:
            rc = _connect(port, pki["ca_pem"], wait=3)  # no client certificate
        except (ssl.SSLError, OSError) as e:
            rc = e
        assert rc != 0, "a client without a certificate was accepted"
    finally:
        svc.stop()
