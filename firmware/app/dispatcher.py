# The dispatcher: cloud messages from the transport (queued by the AT reader, never blocking it), parsed by
# the cloud profile, run by the command registry, answered through the profile's reply; dynamic activation
# (the cloud pushing the device secret) is stored before anything else happens.
import asyncio

from cellmqtt import cloudsign as cs
from cellmqtt.cloudsign import CloudError, CloudMessageError
from cellmqtt.transport import LinkLost, MqttError

from app import config
from app.commands import OK, UNKNOWN, Registry
from app.supervisor import CONNECT

_QUEUE = 8  # commands waiting at most (RAM)


class Dispatcher:
    def __init__(self, app):
        self.app = app
        self.registry = Registry()
        self._inbox = []
        self._ev = asyncio.Event()

    def on_message(self, topic, payload):
        # from the AT reader: queue only (bounded), never block it
        if len(self._inbox) >= _QUEUE:
            self.app.log.warn("command queue full: message on %s dropped", topic)
            return
        self._inbox.append((topic, payload))
        self._ev.set()

    async def run(self):
        while True:
            if not self._inbox:
                self._ev.clear()
                await self._ev.wait()
                continue
            topic, payload = self._inbox.pop(0)
            try:
                await self.handle(topic, payload)
            except MqttError as e:
                self.app.log.warn("reply to %s not sent: %s", topic, e)

    async def handle(self, topic, payload):
        app = self.app
        p = app.profile
        try:
            cmd = p.parse(topic, payload)
        except CloudMessageError as e:
            app.log.warn("command refused (%s): %s", e.fault, e)
            r = p.error_reply(e)
        else:
            if cmd.job == cs.ACTIVATE:
                return await self._activate(cmd)
            if cmd.job == cs.NOTE:
                # the cloud's verdict on one of our uploads (EnOS post_reply), messages without a reply
                if cmd.code is not None and cmd.code != p.OK:
                    app.telemetry.rejected += 1
                    app.log.warn("the cloud refused message %s (code %d): %s", cmd.id, cmd.code,
                                 cmd.params if cmd.params else "no reason given")
                return
            status, body = self.registry.run(app, cmd)
            app.log.info("command %s: %s", cmd.name, "done" if status == OK else body)
            try:
                r = p.reply(cmd, None, body or None) if status == OK else p.failure(cmd, body, status == UNKNOWN)
            except CloudError as e:  # the handler's result does not fit the cloud's reply (a NaN, a wrong type)
                app.log.warn("reply to %s cannot be built (%s): failure sent", cmd.name, e)
                r = p.failure(cmd, "the reply could not be encoded")
        if r:
            await self._reply(r, p.REPLY_QOS)

    async def _reply(self, r, qos):
        app = self.app
        async with app.modem.awake():
            await app.transport.publish(r[0], r[1], qos)

    async def _activate(self, cmd):
        # Dynamic activation: persist the device secret atomically first (a power cut must never leave the
        # device without it), answer, then reconnect with it (clouds.md 2.2).
        app = self.app
        key = app.profile.ACTIVATED_KEY  # where the profile's configuration holds the device secret
        config.save_secret(app.secrets_path, key, cmd.secret)
        app.log.add_secret(cmd.secret)
        app.log.info("activated: device secret stored")
        try:
            await self._reply(app.profile.reply(cmd), 0)
        except MqttError as e:
            app.log.warn("activation reply not sent: %s", e)
        app.profile = app.profile.with_secret(cmd.secret)
        config.set_key(app.cfg, key, cmd.secret)
        app.supervisor.trouble(LinkLost("reconnecting with the new device secret"), CONNECT)
