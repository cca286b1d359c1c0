"""The twin on the embedded amqtt broker (tools/broker.py): the twin decides every CONNECT, SUBSCRIBE, PUBLISH.

``TwinPlugin`` is an amqtt auth + topic plugin that hands each event to the twin (core.Twin). Downstream
messages are written straight to the device's connection (``handler.mqtt_publish``), not through amqtt's
subscription table: that is how the clouds push to a device that never subscribed (EnOS), and it keeps amqtt
from echoing a device's own publishes back to it.

Patches (process-local, amqtt 0.12.1 is pinned; host_tests/test_cloudtwin_*.py fail loudly if they stop
fitting): ``BrokerProtocolHandler.stop`` tells the twin a connection ended and why,
``handle_disconnect`` notes a clean DISCONNECT, ``handle_read_timeout`` drops a device that stayed silent for
``keepalive x factor`` seconds (clouds.md 1.4: 1.5 x keep-alive) -- amqtt on its own never drops anyone.
"""

import asyncio
import logging
from dataclasses import dataclass

from amqtt.contexts import Action
from amqtt.errors import BrokerError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from tools.broker import BrokerRunner

from .core import ACK_TIMEOUT_S, ConnectInfo, StartError

log = logging.getLogger("cloudtwin.amqtt")

_TWINS = {}  # plugin config key -> Twin (amqtt builds plugins from a config dict, so they look the twin up)


def _patch_handler():
    cls = BrokerProtocolHandler
    if getattr(cls, "_cloudtwin_patched", False):
        return
    orig_stop = cls.stop
    orig_disconnect = cls.handle_disconnect

    async def stop(self):
        try:
            await orig_stop(self)
        finally:
            link = getattr(self, "twin_link", None)
            if link is not None:
                link.twin.link_closed(link, getattr(self, "twin_end", "connection lost without DISCONNECT"))

    async def handle_disconnect(self, disconnect):
        if disconnect is not None and getattr(self, "twin_link", None) is not None:
            self.twin_end = "client sent DISCONNECT"
        await orig_disconnect(self, disconnect)

    def handle_read_timeout(self):
        link = getattr(self, "twin_link", None)
        if link is None or getattr(self, "twin_end", None):
            return
        self.twin_end = "keep-alive timeout: no packet for %.1f s" % (self.session.keep_alive,)
        asyncio.ensure_future(self.handle_connection_closed())

    cls.stop = stop
    cls.handle_disconnect = handle_disconnect
    cls.handle_read_timeout = handle_read_timeout
    cls._cloudtwin_patched = True


_patch_handler()


def _peer_cn(ssl_object):
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    for rdn in (cert or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return value
    return None


class TwinPlugin(BaseAuthPlugin, BaseTopicPlugin):
    """Authentication, topic permission and message hooks of the twin inside amqtt."""

    @dataclass
    class Config:
        twin: str = ""

    def __init__(self, context):
        super().__init__(context)
        self.twin = _TWINS[self.config.twin]
        self.broker = context._broker_instance
        # client id -> the Link of its latest *accepted* CONNECT. Not amqtt's session table: amqtt replaces
        # that entry even for a refused CONNECT reusing a live client id, which would hide the live device.
        self.by_client_id = {}

    def _link_of(self, client_id):
        return self.by_client_id.get(client_id)

    async def authenticate(self, *, session):
        info = ConnectInfo(session.client_id, session.username, session.password, session.keep_alive,
                           clean_session=session.clean_session, will=bool(session.will_flag),
                           tls=session.ssl_object is not None, client_cert=_peer_cn(session.ssl_object),
                           peer="%s:%s" % (session.remote_address, session.remote_port))
        session.password = None  # checked; amqtt has no further use for it
        code, link = self.twin.attempt(info)
        if code != 0:
            session.connack_refusal = code
            return False
        session.twin_link = link
        self.by_client_id[session.client_id] = link
        if session.keep_alive > 0:
            session.keep_alive = session.keep_alive * self.twin.keepalive_factor
        return True

    async def topic_filtering(self, *, session=None, topic=None, action=None):
        link = getattr(session, "twin_link", None)
        if link is None or topic is None:
            return False
        if action == Action.PUBLISH:
            return self.twin.check_publish(link, topic)
        if action == Action.SUBSCRIBE:
            return self.twin.check_subscribe(link, topic)
        # RECEIVE: amqtt's own fan-out; the twin delivers downstream itself and devices never see each other
        return False

    async def on_broker_client_connected(self, *, client_id, client_session):
        link = getattr(client_session, "twin_link", None)
        if link is None:
            return
        session, handler = self.broker.sessions.get(client_id, (None, None))
        if session is not client_session or handler is None:
            log.warning("connection #%d (%s) vanished before it was ready", link.seq, client_id)
            self.twin.link_closed(link, "closed before CONNACK completed")
            return
        link.handle = handler
        handler.twin_link = link
        self.twin.link_ready(link)

    async def on_broker_client_subscribed(self, *, client_id, topic, qos):
        link = self._link_of(client_id)
        if link is not None and not link.closed:
            self.twin.subscribed(link, topic, qos)

    async def on_broker_client_unsubscribed(self, *, client_id, topic):
        link = self._link_of(client_id)
        if link is not None:
            self.twin.unsubscribed(link, topic)

    async def on_broker_message_broadcast(self, *, client_id, message):
        link = self._link_of(client_id)
        if link is None:
            return
        pkt = message.publish_packet
        retain = bool(pkt is not None and pkt.retain_flag)
        dup = bool(pkt is not None and pkt.dup_flag)
        self.twin.protocol_check(link, message.topic, message.qos, retain)
        if retain:
            # the clouds keep no retained messages; neither may the broker behind the twin
            self.broker.retained_messages.pop(message.topic, None)
        self.twin.message(link, message.topic, bytes(message.data or b""), message.qos, retain, dup)


class AmqttBackend:
    name = "amqtt"
    can_push = True

    def __init__(self, twin, certs, tls_port=0, plain_port=0, require_client_cert=False):
        self.twin = twin
        self.key = "twin-%d" % id(twin)
        _TWINS[self.key] = twin
        twin.backend = self
        self.runner = BrokerRunner(certs, tls_port, plain_port,
                                   plugins={"tools.cloudtwin.amqtt_backend.TwinPlugin": {"twin": self.key}},
                                   require_client_cert=require_client_cert)
        self.tls_port = self.runner.tls_port
        self.plain_port = self.runner.plain_port

    async def start(self):
        try:
            await self.runner.start()
        except BrokerError as e:
            raise StartError("amqtt broker failed to start on ports %d/%d: %s"
                             % (self.tls_port, self.plain_port, e.__cause__ or e)) from None
        # amqtt grants the requested QoS; the clouds grant at most 1 (no QoS 2, clouds.md 1.4 / 2.3)
        self.runner.broker.config.max_qos = 1

    async def stop(self):
        await self.runner.stop()
        _TWINS.pop(self.key, None)

    def send(self, link, topic, payload, qos, done=None):
        handler = link.handle

        async def run():
            err = None
            try:
                await handler.mqtt_publish(topic, payload, qos, retain=False, ack_timeout=ACK_TIMEOUT_S)
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():
                    if done is not None:
                        done("cancelled: the twin is shutting down")
                    raise
                # amqtt cancels the PUBACK waiter, not this task, when the connection closes under it
                err = "connection closed before the device acknowledged it"
            except Exception as e:  # noqa: BLE001 -- any failure is reported to the command record, not dropped
                err = "%s: %s" % (type(e).__name__, e)
            if err is not None:
                log.warning("delivery to %s on %s failed: %s", link.device.name, topic, err)
            if done is not None:
                done(err)

        asyncio.ensure_future(run())

    def kick(self, link, reason):
        handler = link.handle
        if handler is None or link.closed:
            return False
        handler.twin_end = reason
        asyncio.ensure_future(handler.handle_connection_closed())
        return True
