"""pytest fixtures for the driver tests: emulator variants wired to brokers (imported by conftest.py).

Each returns the emulator's JSON-able ``.info`` (what MicroPython-side tests take as arguments), with
``broker.test`` resolving to the broker in question (port 8883 -> its TLS port, 1883 -> its plain port).
"""

import json
import os

import pytest
from services import Service, python_module


def _rules(b):
    return ["broker.test:8883=127.0.0.1:%d" % b["tls_port"], "broker.test:1883=127.0.0.1:%d" % b["plain_port"],
            "iot.test:8883=127.0.0.1:%d" % b["tls_port"]]  # iot.test: the name the server certificate carries


def _broker(pki, tmp_path, name, *extra):
    svc = Service(python_module("tools.broker", "--certs", os.path.dirname(pki["ca_pem"]), *extra), "READY",
                  tmp_path / (name + ".log"))
    f = svc.fields()
    return svc, {"host": "127.0.0.1", "tls_port": int(f["tls"]), "plain_port": int(f["plain"])}


@pytest.fixture
def auth_broker(pki, tmp_path):
    """A TLS broker that accepts only user "dev-1" with password "s3cret-pw" (else CONNACK 4/5)."""
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"dev-1": "s3cret-pw"}))
    svc, info = _broker(pki, tmp_path, "auth-broker", "--users", users)
    yield info
    svc.stop()


@pytest.fixture
def mtls_broker(pki, tmp_path):
    """A TLS broker that requires a client certificate from the test CA."""
    svc, info = _broker(pki, tmp_path, "mtls-broker", "--require-client-cert")
    yield info
    svc.stop()


def _variant(profile, **opts):
    @pytest.fixture
    def fx(broker, start_modemsim):  # the broker first: it then stops after the emulator
        return start_modemsim(profile, resolve=_rules(broker), **opts).info

    return fx


bg96_later = _variant("bg96", firmware="later")
bg96_a07 = _variant("bg96", firmware="BG96MAR02A07M1G")
bg96_nofixed = _variant("bg96", settings={"pub_fixed_refused": 1})
bg96_silent_open = _variant("bg96", settings={"qmtopen_silent": 1})
bg95 = _variant("bg95")
bg770a = _variant("bg95", firmware="BG770AGLAAR01A05")
bg95_echo = _variant("bg95", settings={"echo_fixed": 1})
bg96_pin = _variant("bg96", sim="pin:1234")
bg96_nosim = _variant("bg96", sim="absent")
bg96_nonitz = _variant("bg96", no_nitz=True)


@pytest.fixture
def bg96_auth(auth_broker, start_modemsim):
    return start_modemsim("bg96", resolve=_rules(auth_broker)).info


@pytest.fixture
def bg96_mtls(mtls_broker, start_modemsim):
    return start_modemsim("bg96", resolve=_rules(mtls_broker)).info


@pytest.fixture
def bc660k_mtls(mtls_broker, start_modemsim):
    return start_modemsim("bc660k", resolve=_rules(mtls_broker)).info
bg96_noreg = _variant("bg96", settings={"reg": 300})  # registration would take 5 minutes
bc660k_nonitz = _variant("bc660k", no_nitz=True)
bc660k_9600 = _variant("bc660k", settings={"uart_bps": 9600})  # a slow line: a PEM outlasts the prompt gate
