"""pytest fixtures for the cloud twin (imported by conftest.py), and what tests need to talk to it.

* ``start_twin(cloud, devices, **opts)`` -- fixture factory: runs ``python -m tools.cloudtwin`` and returns a
  ``RunningTwin`` with ``.info`` (JSON-able: host, tls_port, plain_port, ca, control), ``.control``
  (``TwinControl``) and ``.stop()``; every twin is stopped at teardown. Options: ``broker`` ("amqtt" |
  "mosquitto"), ``clock`` ("host" | "fixed:ISO"), ``rate_limit`` (bool or "on"/"off"),
  ``require_client_cert``, ``keepalive_factor``, ``hour_tolerance``, ``activation_delay``.
* ``requires_mosquitto`` -- skip marker for tests that need the mosquitto binary.
* ``MqttDevice`` -- a paho-mqtt device stand-in with blocking connect/subscribe/publish/wait_message.
* ``huawei_credentials`` / ``enos_credentials`` -- the clouds' CONNECT fields computed here, from
  shared/reference/clouds.md, independently of both the firmware (lib/) and the twin (tools/cloudtwin):
  a test that passes only proves something if the two sides were not written from the same code.
"""

import datetime
import hashlib
import hmac
import json
import os
import queue
import shutil
import tempfile
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from services import Service, python_module

from tools.cloudtwin.control import TwinControl
from tools.cloudtwin.mosquitto_backend import find_mosquitto

__all__ = [
    "MqttDevice",
    "RunningTwin",
    "enos_credentials",
    "huawei_credentials",
    "requires_mosquitto",
    "start_twin",
    "utc_hour",
]

requires_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed (CI installs it)")


# ---- credentials, independent code -----------------------------------------------------------------------

def utc_hour(when=None):
    """The UTC hour as Huawei's YYYYMMDDHH (now, or an aware datetime / Unix seconds)."""
    if when is None:
        when = datetime.datetime.now(datetime.UTC)
    elif isinstance(when, (int, float)):
        when = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return when.astimezone(datetime.UTC).strftime("%Y%m%d%H")


def huawei_credentials(device_id, secret, hour, sig_type=0, id_type=0):
    """clouds.md 1.1 -> (client_id, username, password)."""
    client_id = "%s_%d_%d_%s" % (device_id, id_type, sig_type, hour)
    password = hmac.new(hour.encode("ascii"), secret.encode("utf-8"), hashlib.sha256).hexdigest()
    return client_id, device_id, password


_HASHES = {"sha256": hashlib.sha256, "hmacsha256": hashlib.sha256, "sha1": hashlib.sha1, "hmacsha1": hashlib.sha1,
           "md5": hashlib.md5}


def enos_credentials(device_key, product_key, secret, securemode=2, signmethod="sha256", timestamp="1700000000000",
                     cid=None, upper=True):
    """clouds.md 2.1 -> (client_id, username, password).

    The content order is written out as clouds.md states it (clientId, deviceKey, productKey, timestamp),
    not sorted at run time as the twin and the firmware do: a different derivation of the same rule.
    """
    cid = device_key if cid is None else cid
    content = "clientId" + cid + "deviceKey" + device_key + "productKey" + product_key + "timestamp" + timestamp
    digest = _HASHES[signmethod]((content + secret).encode("utf-8")).hexdigest()
    client_id = "%s|securemode=%d,signmethod=%s,timestamp=%s|" % (cid, securemode, signmethod, timestamp)
    return client_id, "%s&%s" % (device_key, product_key), digest.upper() if upper else digest.lower()


# ---- a device stand-in -----------------------------------------------------------------------------------

# paho reports MQTT 3.1.1 CONNACK codes as MQTT 5 reason codes; map them back to 3.1.1's 0..5
_V5_TO_311 = {0: 0, 132: 1, 133: 2, 136: 3, 134: 4, 135: 5}


class MqttDevice:
    """One MQTT 3.1.1 client playing a device. Never reconnects on its own (that would skew connect counts)."""

    def __init__(self, port, client_id, username=None, password=None, ca=None, cert=None, key=None, keepalive=120,
                 clean=True, host="localhost"):
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.messages = queue.Queue()
        self.rc = None
        self._connack = threading.Event()
        self._closed = threading.Event()
        self._suback = {}
        self.close_reason = None
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                        clean_session=clean, reconnect_on_failure=False)
        if ca is not None:
            c.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
        if username is not None:
            c.username_pw_set(username, password)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = lambda cl, ud, m: self.messages.put((m.topic, bytes(m.payload), m.qos))
        self.client = c

    def _on_connect(self, client, userdata, flags, reason, props):
        self.rc = _V5_TO_311.get(reason.value, reason.value)
        if self.rc != 0:
            client.disconnect()  # stops paho's loop from retrying a refused login
        self._connack.set()

    def _on_disconnect(self, client, userdata, flags, reason, props):
        self.close_reason = reason
        self._closed.set()
        self._connack.set()

    def _on_subscribe(self, client, userdata, mid, reasons, props):
        self._suback[mid] = [r.value for r in reasons]

    def connect(self, timeout=5.0):
        """-> the CONNACK code (0 accepted, 1..5 refused). Raises ConnectionError if the link died first."""
        self.client.connect(self.host, self.port, self.keepalive)
        self.client.loop_start()
        if not self._connack.wait(timeout):
            raise TimeoutError("no CONNACK within %.1f s" % timeout)
        if self.rc is None:
            raise ConnectionError("connection closed before CONNACK (%s)" % self.close_reason)
        return self.rc

    def subscribe(self, *filters, qos=1, timeout=5.0):
        """-> granted QoS per filter (128 = refused)."""
        rc, mid = self.client.subscribe([(f, qos) for f in filters])
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError("subscribe failed: %s" % mqtt.error_string(rc))
        deadline = time.monotonic() + timeout
        while mid not in self._suback:
            if time.monotonic() > deadline:
                raise TimeoutError("no SUBACK within %.1f s" % timeout)
            time.sleep(0.01)
        return self._suback.pop(mid)

    def publish(self, topic, payload, qos=1, retain=False, timeout=5.0):
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload).encode()
        info = self.client.publish(topic, payload, qos, retain)
        if qos:
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise TimeoutError("no PUBACK for %s within %.1f s" % (topic, timeout))
        return info

    def wait_message(self, timeout=5.0, topic=None):
        """-> (topic, payload bytes, qos) of the next message (on ``topic`` if given), or TimeoutError.

        Messages on other topics stay queued for the next call.
        """
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no message%s within %.1f s" % (" on " + topic if topic else "", timeout))
                try:
                    got = self.messages.get(timeout=remaining)
                except queue.Empty:
                    continue
                if topic is None or got[0] == topic:
                    return got
                skipped.append(got)
        finally:
            for got in skipped:
                self.messages.put(got)

    def wait_json(self, timeout=5.0, topic=None):
        t, payload, qos = self.wait_message(timeout, topic)
        return t, json.loads(payload), qos

    def no_message(self, wait=0.3):
        try:
            got = self.messages.get(timeout=wait)
        except queue.Empty:
            return True
        raise AssertionError("unexpected message %r" % (got,))

    def wait_closed(self, timeout=5.0):
        return self._closed.wait(timeout)

    def is_connected(self):
        return self.client.is_connected()

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


# ---- the twin process ------------------------------------------------------------------------------------

class RunningTwin:
    def __init__(self, service, control_dir, ca):
        self.service = service
        self.control_dir = control_dir
        f = service.fields()
        self.info = {"host": "127.0.0.1", "tls_port": int(f["tls"]), "plain_port": int(f["plain"]), "ca": ca,
                     "control": f["control"]}
        self.control = TwinControl(f["control"])
        self.devices = []

    def device(self, client_id, username=None, password=None, tls=True, **kw):
        """A MqttDevice aimed at this twin (TLS with the test CA unless tls=False); closed at teardown."""
        port = self.info["tls_port"] if tls else self.info["plain_port"]
        d = MqttDevice(port, client_id, username, password, ca=self.info["ca"] if tls else None, **kw)
        self.devices.append(d)
        return d

    def log_text(self):
        return self.service.log_path.read_text(errors="replace")

    def stop(self):
        for d in self.devices:
            try:
                d.close()
            except (OSError, RuntimeError):
                pass  # already gone; nothing to clean up
        self.devices = []
        self.service.stop()
        shutil.rmtree(self.control_dir, ignore_errors=True)


@pytest.fixture
def start_twin(pki, tmp_path):
    """Factory: start_twin("huawei", {"devices": [...]}, broker="amqtt", ...) -> RunningTwin."""
    twins = []

    def start(cloud, devices, broker="amqtt", clock=None, rate_limit=None, require_client_cert=False,
              keepalive_factor=None, hour_tolerance=None, activation_delay=None, timeout=20):
        n = len(twins)
        dev_path = tmp_path / ("twin%d-devices.json" % n)
        dev_path.write_text(json.dumps(devices))
        # a unix socket path must stay under ~108 bytes; pytest's tmp paths can be longer
        control_dir = tempfile.mkdtemp(prefix="ct-")
        args = ["--cloud", cloud, "--certs", os.path.dirname(pki["ca_pem"]), "--devices", dev_path,
                "--control", os.path.join(control_dir, "control.sock"), "--broker", broker, "-v"]
        if clock is not None:
            args += ["--clock", clock]
        if rate_limit is not None:
            args += ["--rate-limit", rate_limit if isinstance(rate_limit, str) else ("on" if rate_limit else "off")]
        if require_client_cert:
            args.append("--require-client-cert")
        if keepalive_factor is not None:
            args += ["--keepalive-factor", keepalive_factor]
        if hour_tolerance is not None:
            args += ["--hour-tolerance", hour_tolerance]
        if activation_delay is not None:
            args += ["--activation-delay", activation_delay]
        try:
            svc = Service(python_module("tools.cloudtwin", *args), "READY", tmp_path / ("twin%d.log" % n),
                          timeout=timeout)
        except Exception:
            shutil.rmtree(control_dir, ignore_errors=True)
            raise
        twin = RunningTwin(svc, control_dir, pki["ca_pem"])
        twins.append(twin)
        return twin

    yield start
    for t in twins:
        t.stop()
