"""Command line of the cloud twin.

    python -m tools.cloudtwin --cloud huawei|enos --certs DIR --devices FILE [--control PATH]
        [--tls-port N] [--plain-port N] [--require-client-cert] [--broker amqtt|mosquitto]
        [--clock host|fixed:ISO] [--rate-limit on|off] [--hour-tolerance S] [--keepalive-factor F]
        [--activation-delay S] [--mosquitto PATH] [-v]

Prints ``READY tls=<port> plain=<port> control=<path>`` on stdout once both listeners and the control socket
accept connections, then runs until SIGTERM/SIGINT. Configuration errors exit with status 2 and one line on
stderr saying what is wrong.
"""

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile

from .clock import ClockSpecError, TwinClock
from .control import ControlServer
from .core import StartError
from .registry import DevicesFileError, load


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m tools.cloudtwin",
                                 description="Local stand-in for Huawei OceanConnect and Envision EnOS MQTT.")
    ap.add_argument("--cloud", required=True, choices=("huawei", "iotda", "enos", "mqtt"),
                    help="which cloud's rules: Huawei legacy OceanConnect, Huawei IoTDA, EnOS, or a plain broker")
    ap.add_argument("--certs", required=True, help="directory with ca.pem, server.pem, server.key (tools.pki)")
    ap.add_argument("--devices", required=True, help="JSON device registry (see docs/cloudtwin.md)")
    ap.add_argument("--control", help="unix socket path for the control socket (default: a fresh temp path)")
    ap.add_argument("--tls-port", type=int, default=0, help="TLS listener port (default: a free port)")
    ap.add_argument("--plain-port", type=int, default=0, help="plain TCP listener port (default: a free port)")
    ap.add_argument("--require-client-cert", action="store_true",
                    help="mutual TLS: refuse TLS clients without a certificate issued by ca.pem")
    ap.add_argument("--broker", choices=("amqtt", "mosquitto"), default="amqtt",
                    help="embedded amqtt (default; the twin enforces every rule) or a mosquitto process")
    ap.add_argument("--clock", default="host", help="'host' (UTC now) or 'fixed:2023-11-14T22:13:20Z'")
    ap.add_argument("--rate-limit", choices=("on", "off"), default="on",
                    help="EnOS connect rate limit: on = refuse with CONNACK 3 when exceeded; off = only record")
    ap.add_argument("--hour-tolerance", type=float, default=0.0,
                    help="Huawei sigType 1: seconds a client id's hour may be off at each edge (default 0: the "
                         "platform compares the hour)")
    ap.add_argument("--keepalive-factor", type=float, default=1.5,
                    help="drop a device silent for keep-alive x this (default 1.5, as the clouds do)")
    ap.add_argument("--activation-delay", type=float, default=0.2,
                    help="EnOS: seconds between CONNACK and the activation push (default 0.2)")
    ap.add_argument("--mosquitto", help="mosquitto binary for --broker mosquitto (default: search PATH, /usr/sbin)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every connect, close and violation")
    return ap


def make_twin(a):
    clock = TwinClock(a.clock)
    devices = load(a.devices, a.cloud)
    if a.keepalive_factor <= 0:
        raise StartError("--keepalive-factor must be > 0")
    common = {"rate_limit": a.rate_limit == "on", "keepalive_factor": a.keepalive_factor}
    if a.cloud == "huawei":
        from .huawei import HuaweiTwin

        return HuaweiTwin(devices, clock, hour_tolerance_s=a.hour_tolerance, **common)
    if a.cloud == "iotda":
        from .iotda import IotdaTwin

        return IotdaTwin(devices, clock, hour_tolerance_s=a.hour_tolerance, **common)
    if a.cloud == "mqtt":
        from .plain import PlainTwin

        return PlainTwin(devices, clock, **common)
    from .enos import EnosTwin

    return EnosTwin(devices, clock, activation_delay_s=a.activation_delay, **common)


def make_backend(a, twin):
    for name in ("ca.pem", "server.pem", "server.key"):
        if not os.path.isfile(os.path.join(a.certs, name)):
            raise StartError("--certs %s has no %s (make one with: python -m tools.pki DIR)" % (a.certs, name))
    if a.broker == "mosquitto":
        if twin.cloud not in ("huawei", "enos"):
            raise StartError("--broker mosquitto has the Huawei legacy and EnOS rules only; use amqtt for %s"
                             % twin.cloud)
        from .mosquitto_backend import MosquittoBackend

        return MosquittoBackend(twin, a.certs, a.tls_port, a.plain_port, a.require_client_cert, a.mosquitto)
    from .amqtt_backend import AmqttBackend

    return AmqttBackend(twin, a.certs, a.tls_port, a.plain_port, a.require_client_cert)


async def serve(a, twin, backend, control_path):
    twin.loop = asyncio.get_running_loop()
    try:
        await backend.start()
    except OSError as e:
        raise StartError("broker failed to start: %s" % e) from None
    control = ControlServer(twin, control_path, {"tls_port": backend.tls_port, "plain_port": backend.plain_port,
                                                 "control": control_path})
    await control.start()
    print("READY tls=%d plain=%d control=%s" % (backend.tls_port, backend.plain_port, control_path), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        twin.loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await control.stop()
    await backend.stop()


def main(argv=None):
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # amqtt's own logs stay quiet: at debug level it would print whole packets
    logging.getLogger("amqtt").setLevel(logging.WARNING if a.verbose else logging.CRITICAL)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    control_path = a.control or os.path.join(tempfile.gettempdir(), "cloudtwin-%d.sock" % os.getpid())
    try:
        twin = make_twin(a)
        backend = make_backend(a, twin)
        asyncio.run(serve(a, twin, backend, control_path))
    except (DevicesFileError, ClockSpecError, StartError) as e:
        print("cloudtwin: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
