# Configuration: one JSON file on flash (config.json) plus an optional secrets file (secrets.json) with the
# same shape, merged over it. Every key has a default here; unknown keys, wrong types and out-of-range values
# are refused with a ConfigError that names the key (never its value: it may be a secret).
import json

# Schema: a default value gives the type (bool, int, float, str, list); a tuple is a choice (first = default;
# None first: optional, default None); a type object is an optional value of that type (default None); REQ marks
# a required string; a dict is a nested section. Every key is documented in README.md ("Configuration").
REQ = "<required>"
SCHEMA = {
    "board": "unix",
    "modem": {
        "type": ("bg96", "bc660k"),
        "port": str,  # unix port: the tty of the modem (or the emulator's pty)
        "baud": 115200,
        "pin": str,
        "apn": "",
        "apn_user": "",
        "apn_pass": "",
        "apn_auth": 0,
        "pdp_cid": 1,
        "scan": (None, "auto", "lte", "gsm"),
        "rat": (None, "m1", "nb1", "m1+nb1"),
        "bands": dict,
        "register_timeout_s": 180,
        "ntp_server": "pool.ntp.org",
        "ntp_port": 123,
        "cmee": 1,
        "sleep": True,
        "wake_idle_ms": 1000,
        "psm": dict,
        "edrx": str,
    },
    "tls": {
        "enabled": True,
        "dir": "certs",
        "ca": "ca.pem",
        "cert": str,
        "key": str,
        "seclevel": int,
        "version": 3,
        "ciphers": "0xFFFF",
        "ignore_time": False,
        "negotiate_s": int,
        "ctx": 1,
        "dataformat": [0, 1],
    },
    "mqtt": {
        "host": REQ,
        "port": 8883,
        "transport": ("native", "socket"),
        "client": 0,
        "socket": 1,
        "keepalive": 120,
        "clean": True,
        "qos": 1,
        "pkt_timeout_s": int,
        "retries": int,
        "inline": True,
    },
    "cloud": {
        "profile": ("huawei", "enos", "mqtt"),
        "huawei": {"device_id": str, "secret": str, "id_type": 0, "api": ("legacy", "iotda"), "codec": ("json", "binary"),
                   "service_id": "Telemetry", "sig_type": ("auto", "0", "1")},
        "enos": {"product_key": str, "device_key": str, "device_secret": str, "product_secret": str, "client_id": str,
                 "signmethod": ("sha256", "sha1"), "upper": True},
        "mqtt": {"client_id": str, "username": str, "password": str, "telemetry_topic": str, "command_topic": str},
    },
    "telemetry": {"interval_s": 60, "readings": ["demo", "signal", "uptime", "outbox"], "health_every": 1},
    "outbox": {"dir": "outbox", "max_bytes": 32768, "max_records": 500},
    "backoff": {"min_s": 5, "max_s": 900, "jitter": 0.25},
    "log": {"level": ("info", "debug", "warn", "error"), "file": str, "file_max": 8192, "file_keep": 2},
    "watchdog_s": 300,
    "state_dir": "state",
}

# (key, low, high) for numbers that must stay in range
RANGES = (
    ("modem.baud", 9600, 921600), ("modem.apn_auth", 0, 3), ("modem.pdp_cid", 0, 16), ("modem.cmee", 1, 2),
    ("modem.register_timeout_s", 10, 3600), ("modem.ntp_port", 1, 65535), ("modem.wake_idle_ms", 0, 60000),
    ("tls.seclevel", 0, 2), ("tls.version", 0, 4), ("tls.negotiate_s", 10, 300), ("tls.ctx", 0, 5),
    ("mqtt.port", 1, 65535), ("mqtt.client", 0, 5), ("mqtt.socket", 0, 11), ("mqtt.keepalive", 30, 1200),
    ("mqtt.qos", 0, 1), ("mqtt.pkt_timeout_s", 1, 60), ("mqtt.retries", 0, 10),
    ("telemetry.interval_s", 1, 86400), ("telemetry.health_every", 1, 1000),
    ("outbox.max_bytes", 1024, 4194304), ("outbox.max_records", 1, 2000),
    ("backoff.min_s", 1, 3600), ("backoff.max_s", 1, 86400), ("backoff.jitter", 0, 1),
    ("log.file_max", 1024, 1048576), ("log.file_keep", 0, 10), ("watchdog_s", 0, 3600),
    ("cloud.huawei.id_type", 0, 2),
)
# What each cloud profile needs (besides the always-required keys)
NEEDS = {"huawei": ("device_id", "secret"), "enos": ("product_key", "device_key"), "mqtt": ("client_id",)}
SECRET_KEYS = ("modem.pin", "modem.apn_pass", "cloud.huawei.secret", "cloud.enos.device_secret",
               "cloud.enos.product_secret", "cloud.mqtt.password")


class ConfigError(ValueError):
    """A bad configuration value; ``key`` is its dotted name (e.g. "mqtt.port")."""

    def __init__(self, key, why):
        super().__init__("config %s: %s" % (key, why))
        self.key = key


def _merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def _check(schema, given, path):
    out = {}
    if not isinstance(given, dict):
        raise ConfigError(path[:-1] or "(top)", "must be an object")
    for k in given:
        if k not in schema:
            raise ConfigError(path + k, "unknown key")
    for k, spec in schema.items():
        key = path + k
        v = given.get(k)
        if isinstance(spec, dict):
            out[k] = _check(spec, {} if v is None else v, key + ".")
            continue
        if v is None:
            if spec is REQ:
                raise ConfigError(key, "is required")
            out[k] = spec[0] if isinstance(spec, tuple) else (None if isinstance(spec, type) else spec)
            continue
        if isinstance(spec, tuple):
            if v not in spec:
                raise ConfigError(key, "must be one of " + ", ".join(x for x in spec if x))
        else:
            want = spec if isinstance(spec, type) else (str if spec is REQ else type(spec))
            ok = isinstance(v, want) and (want is bool or not isinstance(v, bool))
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                ok = True
            if not ok:
                raise ConfigError(key, "must be " + _type_name(want))
            if want is str and not v and spec is REQ:
                raise ConfigError(key, "is required")
        out[k] = v
    return out


def _type_name(t):
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(t, "valid")


def get(cfg, key):
    v = cfg
    for part in key.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return v


def validate(raw):
    """The complete configuration (defaults filled in) from a parsed config dict, or ConfigError."""
    cfg = _check(SCHEMA, raw, "")
    for key, lo, hi in RANGES:
        v = get(cfg, key)
        if v is not None and not lo <= v <= hi:
            raise ConfigError(key, "must be between %s and %s" % (lo, hi))
    prof = cfg["cloud"]["profile"]
    for k in NEEDS[prof]:
        if not get(cfg, "cloud.%s.%s" % (prof, k)):
            raise ConfigError("cloud.%s.%s" % (prof, k), "is required for the %s profile" % prof)
    if prof == "enos":
        e = cfg["cloud"]["enos"]
        if not e["device_secret"] and not e["product_secret"]:
            raise ConfigError("cloud.enos.device_secret", "or cloud.enos.product_secret is required")
    t = cfg["tls"]
    if t["enabled"] and (t["cert"] is None) != (t["key"] is None):
        raise ConfigError("tls.key" if t["key"] is None else "tls.cert", "a client certificate needs both tls.cert and tls.key")
    df = t["dataformat"]
    if len(df) != 2 or df[0] not in (0, 1) or df[1] not in (0, 1):
        raise ConfigError("tls.dataformat", "must be [send, recv] with 0 (text) or 1 (hex)")
    if cfg["backoff"]["min_s"] > cfg["backoff"]["max_s"]:
        raise ConfigError("backoff.min_s", "must not exceed backoff.max_s")
    if cfg["modem"]["type"] == "bc660k":
        cfg["modem"]["pdp_cid"] = 0
    return cfg


def _read_json(path, required):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        if required:
            raise ConfigError(path, "cannot be read") from None
        return {}
    try:
        d = json.loads(text)
    except ValueError:
        raise ConfigError(path, "is not valid JSON") from None
    if not isinstance(d, dict):
        raise ConfigError(path, "must hold a JSON object")
    return d


def _roll_forward(secrets_path):
    # A power cut between writing secrets.json.tmp and renaming it: a complete temporary file holds the newer
    # secrets (an EnOS device secret the cloud already switched to) -- finish the rename; a torn one is dropped.
    import os

    tmp = secrets_path + ".tmp"
    try:
        d = _read_json(tmp, True)
    except ConfigError:
        try:
            os.remove(tmp)
        except OSError:
            pass
        return
    if d:
        os.rename(tmp, secrets_path)


def load(path="config.json", secrets_path="secrets.json"):
    """Read, merge and validate the configuration files; returns the config dict or raises ConfigError."""
    if secrets_path:
        _roll_forward(secrets_path)
    raw = _read_json(path, True)
    sec = _read_json(secrets_path, False) if secrets_path else {}
    _merge(raw, sec)
    return validate(raw)


def secrets(cfg):
    """The secret values in a config, for the logger's redaction."""
    out = []
    for key in SECRET_KEYS:
        v = get(cfg, key)
        if v:
            out.append(v)
    return out


def save_secret(secrets_path, key, value):
    """Set one dotted key in the secrets file atomically (temporary file + rename): a power cut leaves the old
    or the new file, never a torn one. Used to persist the EnOS device secret received at activation."""
    import os

    d = _read_json(secrets_path, False)
    node = d
    parts = key.split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value
    tmp = secrets_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(d, f)
    os.rename(tmp, secrets_path)
