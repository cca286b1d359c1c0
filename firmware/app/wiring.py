# The start-up wiring: which classes the configuration selects, the schema they declare together, and
# building them bottom-up -- the AT engine on the board's UART, the modem driver, the MQTT transport, the cloud
# profile. The one place that knows how names in the config map to code (docs/architecture.md):
#   modem.type X      -> module cellmqtt.X, its class Driver (bg96, bg95, bc660k, ...)
#   mqtt.transport    -> "native": the driver's NATIVE class; "socket": cellmqtt.mqtt_client over the driver's
#                        SOCKET (module, class)
#   cloud.profile     -> PROFILES below (the only place that names the clouds)
# A configuration that needs code this firmware does not contain is a ConfigError naming the key.
import sys

from cellmqtt.settings import ConfigError

PROFILES = {"huawei": ("cellmqtt.huawei", "Huawei"), "enos": ("cellmqtt.enos", "EnOS"), "mqtt": ("app.plain", "Plain")}
PROFILE_NAMES = ("huawei", "enos", "mqtt")  # the first is the default


def _load(module, name, key, value):
    try:
        __import__(module)
    except ImportError as e:
        if module.rsplit(".", 1)[-1] not in str(e):
            raise  # a module that is there but fails to import: a real error, not a missing option
        raise ConfigError(key, "%s needs %s, which this firmware does not contain" % (value, module)) from None
    return getattr(sys.modules[module], name)


def driver_class(raw):
    """The driver class modem.type names (raw: the config as read, before validation)."""
    m = raw.get("modem") if isinstance(raw, dict) else None
    t = (m or {}).get("type", "bg96") if isinstance(m, dict) else "bg96"
    if not isinstance(t, str) or not t or not all(c.isalpha() or c.isdigit() or c == "_" for c in t):
        raise ConfigError("modem.type", "must name a modem driver (bg96, bg95, bc660k)")
    return _load("cellmqtt." + t, "Driver", "modem.type", t)


def transport_classes(raw, drv):
    """(transport class, socket class or None) that mqtt.transport selects for driver ``drv``."""
    q = raw.get("mqtt") if isinstance(raw, dict) else None
    kind = q.get("transport", "native") if isinstance(q, dict) else "native"
    if kind == "native":
        return drv.NATIVE, None
    if kind == "socket" and drv.SOCKET:
        client = _load("cellmqtt.mqtt_client", "MqttClient", "mqtt.transport", kind)
        return client, _load(drv.SOCKET[0], drv.SOCKET[1], "mqtt.transport", kind)
    raise ConfigError("mqtt.transport", "must be native or socket")


def profile_class(raw):
    c = raw.get("cloud") if isinstance(raw, dict) else None
    name = c.get("profile", PROFILE_NAMES[0]) if isinstance(c, dict) else PROFILE_NAMES[0]
    if name not in PROFILES:
        raise ConfigError("cloud.profile", "must be one of " + ", ".join(PROFILE_NAMES))
    return _load(PROFILES[name][0], PROFILES[name][1], "cloud.profile", name)


def parts(raw):
    """The classes a raw configuration selects: (driver, transport, socket or None, profile)."""
    drv = driver_class(raw)
    tr, sock = transport_classes(raw, drv)
    return drv, tr, sock, profile_class(raw)


def build(cfg, board, log, transcript=None):
    """(modem, transport, profile) for a validated configuration, built bottom-up: the engine on the board's
    UART, the driver on the engine, the transport on the driver; the profile is pure."""
    from cellmqtt.at_engine import AtEngine
    from cellmqtt.cloudsign import CloudError

    drv, tr, sock, prof = parts(cfg)
    binary = None
    if cfg["cloud"]["profile"] == "huawei" and cfg["cloud"]["huawei"]["codec"] == "binary":
        binary = board.codec()  # the board's payload codec, else the demo's fixed layout (app/codec.py)
        if binary is None:
            from app.codec import DemoCodec

            binary = DemoCodec()
    try:
        profile = prof.from_config(cfg, binary)
    except CloudError as e:  # a value the profile cannot use (a bad device id, a missing hash...)
        raise ConfigError("cloud." + cfg["cloud"]["profile"], str(e)) from None
    at = AtEngine(board.pipe(), drv.RXBUF, transcript, log.debug)
    modem = drv(at, board, cfg, log.debug, cfg["state_dir"])
    transport = tr(modem, cfg) if sock is None else tr(sock(modem, cfg))
    return modem, transport, profile
