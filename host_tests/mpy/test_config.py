# Firmware configuration: defaults, named errors for every kind of bad value, secrets merge and persistence.
import json
import os

from app import config
from app.config import ConfigError

BASE = {"mqtt": {"host": "broker.test"}, "cloud": {"profile": "huawei", "huawei": {"device_id": "d1", "secret": "s"}}}


def _copy(d):
    return json.loads(json.dumps(d))


def _err(raw):
    try:
        config.validate(raw)
    except ConfigError as e:
        return e.key, str(e)
    raise AssertionError("no ConfigError for %r" % raw)


def test_defaults_filled_in():
    cfg = config.validate(_copy(BASE))
    assert cfg["modem"]["type"] == "bg96" and cfg["mqtt"]["port"] == 8883 and cfg["mqtt"]["transport"] == "native"
    assert cfg["tls"]["enabled"] is True and cfg["tls"]["ca"] == "ca.pem" and cfg["tls"]["cert"] is None
    assert cfg["telemetry"]["interval_s"] == 60 and cfg["backoff"]["max_s"] == 900
    assert cfg["cloud"]["huawei"]["api"] == "legacy"


def test_every_error_names_the_key():
    cases = [
        ({"mqtt": {"host": ""}}, "mqtt.host"),
        ({"mqtt": {"host": "h", "hots": 1}}, "mqtt.hots"),
        ({"mqtt": {"host": "h", "port": "8883"}}, "mqtt.port"),
        ({"mqtt": {"host": "h", "port": 70000}}, "mqtt.port"),
        ({"mqtt": {"host": "h", "keepalive": 10}}, "mqtt.keepalive"),
        ({"mqtt": {"host": "h", "clean": 1}}, "mqtt.clean"),
        ({"modem": {"type": "sim800"}}, "modem.type"),
        ({"modem": {"baud": True}}, "modem.baud"),
        ({"modem": {"scan": "5g"}}, "modem.scan"),
        ({"tls": {"cert": "c.pem"}}, "tls.key"),
        ({"tls": {"dataformat": [0, 2]}}, "tls.dataformat"),
        ({"cloud": {"profile": "huawei", "huawei": {"device_id": "d"}}}, "cloud.huawei.secret"),
        ({"cloud": {"profile": "enos", "enos": {"product_key": "p", "device_key": "d"}}}, "cloud.enos.device_secret"),
        ({"backoff": {"min_s": 100, "max_s": 10}}, "backoff.min_s"),
        ({"telemetry": "60"}, "telemetry"),
    ]
    for change, key in cases:
        raw = _copy(BASE)
        for k, v in change.items():
            if isinstance(v, dict) and isinstance(raw.get(k), dict):
                raw[k].update(v)
            else:
                raw[k] = v
        got, msg = _err(raw)
        assert got == key, (change, got, key)
        assert msg.startswith("config " + key)


def test_secret_values_never_in_errors():
    raw = _copy(BASE)
    raw["modem"] = {"pin": 1234}
    key, msg = _err(raw)
    assert key == "modem.pin" and "1234" not in msg


def test_load_merges_secrets_and_persists_atomically(tmp_path_str):
    c = tmp_path_str + "/config.json"
    s = tmp_path_str + "/secrets.json"
    raw = _copy(BASE)
    del raw["cloud"]["huawei"]["secret"]
    with open(c, "w") as f:
        json.dump(raw, f)
    try:
        config.load(c, s)
        assert False, "the secret is missing"
    except ConfigError as e:
        assert e.key == "cloud.huawei.secret"
    config.save_secret(s, "cloud.huawei.secret", "x9")
    cfg = config.load(c, s)
    assert cfg["cloud"]["huawei"]["secret"] == "x9" and config.secrets(cfg) == ["x9"]
    assert "secrets.json.tmp" not in os.listdir(tmp_path_str)


def test_interrupted_secret_write_rolls_forward_or_back(tmp_path_str):
    c = tmp_path_str + "/config.json"
    s = tmp_path_str + "/secrets.json"
    raw = _copy(BASE)
    raw["cloud"] = {"profile": "enos", "enos": {"product_key": "p", "device_key": "d", "product_secret": "ps"}}
    with open(c, "w") as f:
        json.dump(raw, f)
    # power cut after the temporary file was complete, before the rename: the new secret wins
    with open(s + ".tmp", "w") as f:
        json.dump({"cloud": {"enos": {"device_secret": "fresh"}}}, f)
    cfg = config.load(c, s)
    assert cfg["cloud"]["enos"]["device_secret"] == "fresh"
    # power cut in the middle of writing the temporary file: it is dropped, the old secrets stay
    with open(s + ".tmp", "w") as f:
        f.write('{"cloud": {"enos": {"device_sec')
    cfg = config.load(c, s)
    assert cfg["cloud"]["enos"]["device_secret"] == "fresh"
    assert "secrets.json.tmp" not in os.listdir(tmp_path_str)


def test_unreadable_or_broken_config_file(tmp_path_str):
    try:
        config.load(tmp_path_str + "/nope.json", None)
        assert False
    except ConfigError as e:
        assert "is missing" in str(e)
    p = tmp_path_str + "/bad.json"
    with open(p, "w") as f:
        f.write("{not json")
    try:
        config.load(p, None)
        assert False
    except ConfigError as e:
        assert "not valid JSON" in str(e)
