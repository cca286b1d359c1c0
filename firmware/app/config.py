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


_MAX_FILE = 16384  # a config or secrets file larger than this is refused before it is read (RAM)


def _read_json(path, required):
    # The JSON object in a file, or ConfigError naming the file and what is wrong: missing (when required),
    # not a file, unreadable, too large, erased flash (0xFF), not UTF-8, not JSON, not an object.
    import os

    try:
        st = os.stat(path)
    except OSError:
        if required:
            raise ConfigError(path, "is missing") from None
        return {}
    if st[0] & 0o170000 != 0o100000:
        raise ConfigError(path, "is not a file")
    if st[6] > _MAX_FILE:
        raise ConfigError(path, "is too large (%d bytes; at most %d)" % (st[6], _MAX_FILE))
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        raise ConfigError(path, "cannot be read") from None
    if raw and raw.count(b"\xff") == len(raw):
        raise ConfigError(path, "is erased (all 0xFF)")
    try:
        text = raw.decode()
    except UnicodeError:
        text = None  # raised outside the handler: the bytes may hold a secret
    if text is None:
        raise ConfigError(path, "is not UTF-8")
    try:
        d = json.loads(text)
    except ValueError:
        raise ConfigError(path, "is not valid JSON") from None
    if not isinstance(d, dict):
        raise ConfigError(path, "must hold a JSON object")
    return d


notes = []  # what load() did that the log should say once it is set up (app.main logs these)


def _keys(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _keys(v, prefix + k + ".")
        else:
            yield prefix + k


def _roll_forward(raw, secrets_path, sec):
    # A power cut between writing secrets.json.tmp and renaming it: a complete temporary file holds the newer
    # secrets (an EnOS device secret the cloud already switched to) -- finish the rename, but only when it is
    # what save_secret writes: every key of secrets.json, and a configuration that validates with it. A torn
    # one is dropped; a complete but wrong one is kept aside (secrets.json.bad) and the current file used.
    import os

    tmp = secrets_path + ".tmp"
    try:
        os.stat(tmp)
    except OSError:
        return sec
    try:
        d = _read_json(tmp, True)
    except ConfigError:
        d = None
    if d is None:
        os.remove(tmp)
        notes.append("%s was torn (cut by a power loss): dropped" % tmp)
        return sec
    why = None
    have = set(_keys(d))
    if any(k not in have for k in _keys(sec)):
        why = "it lacks keys of %s" % secrets_path
    else:
        trial = json.loads(json.dumps(raw))  # a deep copy: _merge changes its base
        _merge(trial, d)
        try:
            validate(trial)
        except ConfigError as e:
            why = "the configuration would not validate with it (%s)" % e.key
    if why:
        bad = secrets_path + ".bad"
        os.rename(tmp, bad)
        notes.append("%s not rolled forward: %s; kept as %s" % (tmp, why, bad))
        return sec
    os.rename(tmp, secrets_path)
    notes.append("%s rolled forward over %s" % (tmp, secrets_path))
    return d


def load(path="config.json", secrets_path="secrets.json"):
    """Read, merge and validate the configuration files; returns the config dict or raises ConfigError."""
    raw = _read_json(path, True)
    sec = _read_json(secrets_path, False) if secrets_path else {}
    if secrets_path:
        sec = _roll_forward(raw, secrets_path, sec)
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
        f.flush()
        fsync = getattr(os, "fsync", None)  # CPython; MicroPython's flush() commits the file
        if fsync:
            fsync(f.fileno())
    os.rename(tmp, secrets_path)
    if not hasattr(os, "fsync") and hasattr(os, "sync"):  # MCU ports: the block cache written back (rename too)
        os.sync()
