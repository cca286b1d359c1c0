"""A local MQTT 3.1.1 broker (amqtt) with TLS, for tests and the demo. No root, no system package.

    python -m tools.broker --certs DIR [--port 0] [--plain-port 0] [--users FILE] [--require-client-cert]

``--certs DIR`` holds server.pem/server.key/ca.pem as written by ``tools.pki``. ``--ciphers`` sets the TLS 1.2
suites (default: ECDHE suites plus the RSA AES-CBC-SHA suites a BC660K-GL needs). Prints one line
``READY tls=<port> plain=<port>`` on stdout when both listeners accept connections, then runs until
SIGTERM/SIGINT. ``--users FILE`` (JSON ``{"user": "password"}``) turns on username/password checking; a
wrong password is refused with CONNACK 4 (bad user name or password), an unknown user with 5.

The cloud twin (tools/cloudtwin) builds on ``BrokerRunner`` with per-cloud authentication plugins.
"""

import argparse
import asyncio
import json
import logging
import signal
import socket
import ssl
import sys
from dataclasses import dataclass

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.events import BrokerEvents
from amqtt.mqtt.protocol import broker_handler
from amqtt.plugins.base import BaseAuthPlugin

# TLS 1.2 suites offered: the modern ECDHE ones first, plus the two RSA key-exchange AES-CBC-SHA suites that
# the BC660K-GL is limited to (seed 004) -- as the IoT platforms that serve such modules do. Python's server
# default has only the first kind, which a BC660K-GL cannot use (its handshake fails: +QSSLOPEN ... -5).
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:ECDHE+AES:AES128-SHA:AES256-SHA:!aNULL:!eNULL"

# CONNACK return codes (MQTT 3.1.1, 3.2.2.3)
CONNACK_BAD_CREDENTIALS = 4
CONNACK_NOT_AUTHORIZED = 5


def _patch_connack_codes():
    """amqtt answers every refused login with CONNACK 5. Let auth plugins choose the code.

    A plugin sets ``session.connack_refusal = 4`` (or another 3.1.1 code) before returning False.
    Checked by host_tests/test_broker.py so an amqtt upgrade that changes this breaks loudly.
    """
    cls = broker_handler.BrokerProtocolHandler
    if getattr(cls, "_cellmqtt_patched", False):
        return
    ConnackPacket = broker_handler.ConnackPacket

    async def mqtt_connack_authorize(self, authorize):
        code = 0 if authorize else getattr(self.session, "connack_refusal", CONNACK_NOT_AUTHORIZED)
        await self._send_packet(ConnackPacket.build(self.session.parent, code))

    cls.mqtt_connack_authorize = mqtt_connack_authorize
    cls._cellmqtt_patched = True


_patch_connack_codes()


class UserPasswordAuth(BaseAuthPlugin):
    """Plain username/password table from the broker config (``users``)."""

    @dataclass
    class Config:
        users: dict = None

    async def authenticate(self, *, session):
        users = self.config.users or {}
        if session.username not in users:
            session.connack_refusal = CONNACK_NOT_AUTHORIZED
            return False
        if users[session.username] != session.password:
            session.connack_refusal = CONNACK_BAD_CREDENTIALS
            return False
        return True


class AllowAll(BaseAuthPlugin):
    @dataclass
    class Config:
        pass

    async def authenticate(self, *, session):
        return True


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CloudBroker(Broker):
    """amqtt's broker, but a device may publish on the topic prefixes a cloud reserves for itself (Huawei IoTDA's
    ``$oc/devices/...``): MQTT 3.1.1 4.7.2 leaves ``$`` topics to the server's own use, and IoTDA's server uses
    them for its device interface, where amqtt refuses every ``$`` topic and closes the connection."""

    dollar_prefixes = ("$oc/",)

    async def _handle_message_delivery(self, client_session, handler, wait_deliver):
        msg = wait_deliver.result()
        if msg is None or not msg.topic or not msg.topic.startswith(self.dollar_prefixes) or \
                "#" in msg.topic or "+" in msg.topic:
            return await super()._handle_message_delivery(client_session, handler, wait_deliver)
        await self.plugins_manager.fire_event(BrokerEvents.MESSAGE_RECEIVED, client_id=client_session.client_id,
                                              message=msg)
        if await self._topic_filtering(client_session, topic=msg.topic, action=Action.PUBLISH):
            await self.plugins_manager.fire_event(BrokerEvents.MESSAGE_BROADCAST, client_id=client_session.client_id,
                                                  message=msg)
            await self._broadcast_message(client_session, msg.topic, msg.data)
        return True


class BrokerRunner:
    """Owns an amqtt Broker with a TLS listener and a plain listener on 127.0.0.1."""

    def __init__(self, certs, tls_port=0, plain_port=0, plugins=None, require_client_cert=False,
                 ciphers=DEFAULT_CIPHERS):
        self.certs = certs
        self.ciphers = ciphers
        self.tls_port = tls_port or free_port()
        self.plain_port = plain_port or free_port()
        self.require_client_cert = require_client_cert
        self.plugins = plugins or {"tools.broker.AllowAll": {}}
        self.broker = None

    def config(self):
        return {
            "listeners": {
                "default": {"type": "tcp", "bind": "127.0.0.1:%d" % self.plain_port},
                "tls": {
                    "type": "tcp",
                    "bind": "127.0.0.1:%d" % self.tls_port,
                    "ssl": True,
                    "certfile": "%s/server.pem" % self.certs,
                    "keyfile": "%s/server.key" % self.certs,
                    "cafile": "%s/ca.pem" % self.certs,
                },
            },
            "plugins": self.plugins,
        }

    async def start(self):
        orig = Broker._create_ssl_context
        require, ciphers = self.require_client_cert, self.ciphers

        def make_ctx(listener):
            ctx = orig(listener)
            if ciphers:
                ctx.set_ciphers(ciphers)
            if require:
                ctx.verify_mode = ssl.CERT_REQUIRED
            return ctx

        Broker._create_ssl_context = staticmethod(make_ctx)  # this process runs one broker
        self.broker = CloudBroker(self.config())
        await self.broker.start()

    async def stop(self):
        if self.broker is not None:
            await self.broker.shutdown()


async def _serve(runner):
    await runner.start()
    print("READY tls=%d plain=%d" % (runner.tls_port, runner.plain_port), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.broker", description=__doc__.splitlines()[0])
    ap.add_argument("--certs", required=True, help="directory with server.pem, server.key, ca.pem (tools.pki)")
    ap.add_argument("--port", type=int, default=0, help="TLS port (default: a free port)")
    ap.add_argument("--plain-port", type=int, default=0, help="plain TCP port (default: a free port)")
    ap.add_argument("--users", help="JSON file {user: password}; enables password checking")
    ap.add_argument("--require-client-cert", action="store_true", help="mutual TLS: refuse clients without a certificate from ca.pem")
    ap.add_argument("--ciphers", default=DEFAULT_CIPHERS,
                    help="OpenSSL cipher list of the TLS listener (TLS 1.2); default: ECDHE suites plus AES128-SHA and "
                         "AES256-SHA for the BC660K-GL")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.CRITICAL, stream=sys.stderr)
    plugins = None
    if a.users:
        with open(a.users) as f:
            plugins = {"tools.broker.UserPasswordAuth": {"users": json.load(f)}}
    runner = BrokerRunner(a.certs, a.port, a.plain_port, plugins, a.require_client_cert, a.ciphers)
    asyncio.run(_serve(runner))


if __name__ == "__main__":
    main()
