# Root manifest: what a frozen firmware of this project contains (the library, the app, micropython-lib's hmac).
#
# As the whole firmware, with the board file deployed separately (tools/deploy.py --frozen):
#   make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/abs/path/to/manifest.py
# From a board manifest, choosing what that board needs (boards/*/manifest.py):
#   include("../../manifest.py", port_manifest=False, modem="bg96", transports=("native",),
#           clouds=("huawei", "enos"))
#
# Options (a str or a tuple where several are allowed):
#   modem          "bg96", "bg95" (BG95-M3/BG77/BG770A: needs the BG96 driver, frozen with it), "bc660k", or
#                  several (default all three): the drivers frozen
#   transports     "native" (the module's MQTT client, qmt.py) and/or "socket" (our MQTT client over the
#                  module's TLS socket: adds mqtt_client, mqtt_codec and each frozen driver's socket module);
#                  default both
#   clouds         "huawei", "enos", "mqtt" (plain broker, app/plain.py); default all three
#   transcript     True (default): freeze cellmqtt/at_transcript.py, the AT transcript recorder (debugging)
#   app            True (default): freeze the application package `app` as well as the library
#   port_manifest  True (default): include the port's own manifest (asyncio and the port's modules)
#   opt            mpy-cross optimisation level for our files (default 3: no asserts, no line numbers)
# A configuration that needs something not frozen is refused at start-up with a ConfigError naming the key.
# ruff: noqa: F821  (metadata, include, require, package, module, options: provided by the manifest API)
metadata(description="Cellular MQTT (Quectel BG96 / BC660K-GL) to Huawei IoTDA and Envision EnOS",
         version="0.1.0", license="MIT")

options.defaults(modem=("bg96", "bg95", "bc660k"), transports=("native", "socket"), clouds=("huawei", "enos", "mqtt"),
                 transcript=True, app=True, port_manifest=True, opt=3)


def _choice(name, allowed):
    v = getattr(options, name)
    v = (v,) if isinstance(v, str) else tuple(v)
    for x in v:
        if x not in allowed:
            raise ValueError("manifest option %s: %r is not one of %s" % (name, x, ", ".join(allowed)))
    return v


_modems = _choice("modem", ("bg96", "bg95", "bc660k"))
# the driver modules of each modem option (a family reuses its parent's) and its TLS-socket module
_DRIVERS = {"bg96": ("bg96",), "bg95": ("bg96", "bg95"), "bc660k": ("bc660k",)}
_SOCKETS = {"bg96": "bg96_socket", "bg95": "bg96_socket", "bc660k": "bc660k_socket"}
_transports = _choice("transports", ("native", "socket"))
_clouds = _choice("clouds", ("huawei", "enos", "mqtt"))

if options.port_manifest:
    include("$(PORT_DIR)/boards/manifest.py")

# hmac.new() where the port has none: cloudsign uses it for HMAC-SHA256 (and falls back to hashlib without it)
require("hmac")

# the library: the AT engine, the driver boundary and shared Quectel base, the native MQTT transport (the
# drivers' dialects subclass it), settings and the cloud-signing core are always needed
_lib = ["__init__.py", "compat.py", "transport.py", "at_engine.py", "modem.py", "settings.py", "quectel.py",
        "qmt.py", "certs.py", "timeutil.py", "cloudsign.py"]
for _m in _modems:
    _lib += [d + ".py" for d in _DRIVERS[_m] if d + ".py" not in _lib]
if "socket" in _transports:
    _lib += ["mqtt_codec.py", "mqtt_client.py"]
    for _m in _modems:
        if _SOCKETS[_m] + ".py" not in _lib:
            _lib.append(_SOCKETS[_m] + ".py")
if options.transcript:
    _lib.append("at_transcript.py")
_lib += [c + ".py" for c in _clouds if c != "mqtt"]
package("cellmqtt", files=_lib, base_path="lib", opt=options.opt)

if options.app:
    _app = ["__init__.py", "main.py", "wiring.py", "config.py", "log.py", "core.py", "supervisor.py", "tasks.py",
            "telemetry.py", "readers.py", "outbox.py", "record.py", "dispatcher.py", "commands.py", "codec.py"]
    if "mqtt" in _clouds:
        _app.append("plain.py")
    package("app", files=_app, base_path="firmware", opt=options.opt)
