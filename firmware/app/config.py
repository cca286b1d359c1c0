# Configuration: one JSON file on flash (config.json) plus an optional secrets file (secrets.json) with the
# same shape, merged over it. Each component declares the keys it reads (cellmqtt.settings): the app's own keys
# are below, the modem driver's, the transport's and the cloud profile's are composed in by validate(), so
# every key has its default in one place. Unknown keys, wrong types and out-of-range values are refused with a
# ConfigError that names the key (never its value: it may be a secret). Every key: README "Configuration".
import json

from cellmqtt.cloudsign import CloudError
from cellmqtt.settings import REQ, ConfigError, check, compose, get  # noqa: F401 -- ConfigError, get: re-exported

from app.wiring import PROFILE_NAMES, parts

# The app's own keys (the supervisor, the telemetry pipeline, the board's UART, the logger)
CONFIG = {
    "board": "unix",
    "modem": {"type": "bg96", "port": str, "baud": (115200, 9600, 921600)},
    "mqtt": {"host": REQ, "port": (8883, 1, 65535), "transport": ("native", "socket"), "keepalive": (120, 30, 1200),
             "clean": True, "qos": (1, 0, 1)},
    "cloud": {"profile": PROFILE_NAMES},
    "telemetry": {"interval_s": (60, 1, 86400), "readings": ["demo", "signal", "uptime", "outbox"],
                  "health_every": (1, 1, 1000)},
    "outbox": {"dir": "outbox", "max_bytes": (32768, 1024, 4194304), "max_records": (500, 1, 2000)},
    "backoff": {"min_s": (5, 1, 3600), "max_s": (900, 1, 86400), "jitter": (0.25, 0.0, 1.0)},
    "log": {"level": ("info", "debug", "warn", "error"), "file": str, "file_max": (8192, 1024, 1048576),
            "file_keep": (2, 0, 10)},
    "watchdog_s": (300, 0, 3600),
    "state_dir": "state",
}


def schema(raw):
    """The schema of a raw configuration: the app's keys and those of the modem driver, the transport and
    the cloud profile it selects. (Other clouds' sections are passed through unchecked.)"""
    drv, tr, sock, prof = parts(raw)
    decls = [CONFIG, drv.CONFIG, tr.CONFIG if sock is None else sock.CONFIG, prof.CONFIG]
    return compose(*decls)


def _merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def validate(raw):
    """The complete configuration (defaults filled in) from a parsed config dict, or ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError("(top)", "must be an object")
    drv, tr, sock, prof = parts(raw)
    cloud = raw.get("cloud")
    others = {k: v for k, v in cloud.items() if k != "profile" and k not in prof.CONFIG["cloud"]} \
        if isinstance(cloud, dict) else {}
    if others:  # the sections of clouds not in use: kept as they are
        raw = dict(raw, cloud={k: v for k, v in cloud.items() if k not in others})
    cfg = check(schema(raw), raw)
    cfg["cloud"].update(others)
    if cfg["backoff"]["min_s"] > cfg["backoff"]["max_s"]:
        raise ConfigError("backoff.min_s", "must not exceed backoff.max_s")
    drv.check_config(cfg)
    if sock is not None:
        sock.check_config(cfg)
    # the profile's own checks (secrets present, hashes available, ids usable); a binary codec is supplied
    # at build time (app.wiring): a stand-in here
    try:
        prof.from_config(cfg, _NoCodec())
    except CloudError as e:
        raise ConfigError("cloud." + cfg["cloud"]["profile"], str(e)) from None
    return cfg


class _NoCodec:
    pass


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
    """The secret values in a config (the keys the driver and the profile declare secret), for the logger's
    redaction."""
    drv, _, _, prof = parts(cfg)
    out = []
    for key in drv.SECRETS + prof.SECRETS:
        v = get(cfg, key)
        if v:
            out.append(v)
    return out


def set_key(d, key, value):
    """Set a dotted key in a (config) dict, creating the sections on the way."""
    node = d
    names = key.split(".")
    for p in names[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[names[-1]] = value


def save_secret(secrets_path, key, value):
    """Set one dotted key in the secrets file atomically (temporary file + rename): a power cut leaves the old
    or the new file, never a torn one. Used to persist the device secret a dynamic activation delivers."""
    import os

    d = _read_json(secrets_path, False)
    set_key(d, key, value)
    tmp = secrets_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(d, f)
    os.rename(tmp, secrets_path)
