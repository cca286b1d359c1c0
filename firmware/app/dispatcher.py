# The dispatcher: cloud messages from the transport (queued by the AT reader, never blocking it), parsed by
# the cloud profile, run by the command registry, answered through the profile's reply; dynamic activation
# (the cloud pushing the device secret) is stored before anything else happens.
#
# Nothing is dropped in silence: a message too large for the transport's buffer gets the cloud's "too large"
# error reply (its id read from its first bytes); one that arrives while _QUEUE messages wait gets a "busy"
# error reply, queued compactly (reply topic, id, kind, code: tens of bytes) up to _BACKLOG_BYTES; only past
# that, or when no id can be read, is a message dropped -- counted (status "commands_dropped") and logged.
import asyncio

from cellmqtt import cloudsign as cs
from cellmqtt.cloudsign import CloudError, CloudMessageError
from cellmqtt.compat import const
from cellmqtt.transport import LinkLost, MqttError

from app import config
from app.commands import OK, UNKNOWN, Registry
from app.supervisor import CONNECT

_QUEUE = const(8)  # commands waiting at most (RAM)
_BACKLOG_BYTES = const(8192)  # "busy" replies owed at most (approximate RAM)


def _cost(owed, e):
    # approximate RAM of one owed entry: a 5-tuple, and its reply topic unless it is shared with the entry before
    # (Huawei legacy answers every command on the same data topic object)
    if e is None:
        return 0
    t = e.reply_topic
    return 32 if owed and owed[-1][0] is t else 32 + len(t)


class Dispatcher:
    def __init__(self, app):
        self.app = app
        self.registry = Registry()
        self._inbox = []
        self._owed = []  # [(reply topic, msg id, kind, code, RAM cost)] "busy" replies not sent yet
        self._owed_bytes = 0
        self.dropped = self.busy = 0
        self._ev = asyncio.Event()

    def on_message(self, topic, payload):
        # from the AT reader: queue only (bounded), never block it
        if len(self._inbox) < _QUEUE:
            self._inbox.append((topic, payload))
            self._ev.set()
            return
        e = cs.refused(self.app.profile, topic, payload, cs.BUSY, "device busy: command queue full")
        cost = _cost(self._owed, e)
        if e is None or self._owed_bytes + cost > _BACKLOG_BYTES:
            self.dropped += 1
            if self.dropped == 1 or not self.dropped % 32:
                self.app.log.warn("command queue full: message on %s dropped (%d so far)", topic, self.dropped)
            return
        self._owed.append((e.reply_topic, e.msg_id, e.kind, e.code, cost))
        self._owed_bytes += cost
        self.busy += 1
        self._ev.set()

    async def run(self, task):
        while True:
            if self._owed:
                task.busy()
                topic, msg_id, kind, code, cost = self._owed.pop(0)
                self._owed_bytes -= cost
                p = self.app.profile
                r = p.error_reply(CloudMessageError(cs.BUSY, "device busy: command queue full", code, msg_id, topic,
                                                    kind))
                await self._send(r, p.REPLY_QOS, topic)
                continue
            if not self._inbox:
                task.idle()
                self._ev.clear()
                await self._ev.wait()
                continue
            task.busy()
            topic, payload = self._inbox.pop(0)
            try:
                await self.handle(topic, payload)
            except MqttError as e:
                self.app.log.warn("reply to %s not sent: %s", topic, e)
            task.beat()

    async def _send(self, r, qos, topic):
        if r:
            try:
                await self._reply(r, qos)
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
        app.log.add_secret(cmd.secret)
        config.save_secret(app.secrets_path, key, cmd.secret)  # on flash before the reply
        app.supervisor.clear_activation_mark()
        app.log.info("activated: device secret stored")
        try:
            await self._reply(app.profile.reply(cmd), 0)
        except MqttError as e:
            app.log.warn("activation reply not sent: %s", e)
        app.profile = app.profile.with_secret(cmd.secret)
        config.set_key(app.cfg, key, cmd.secret)
        app.supervisor.trouble(LinkLost("reconnecting with the new device secret"), CONNECT)
