"""A plain MQTT broker for the twin (``--cloud mqtt``): the firmware's "mqtt" cloud profile (firmware/app/plain.py
documents the topics and envelopes; this is written from that description). No cloud rules beyond it.

CONNECT: a registered client id (else CONNACK 2, MQTT 3.1.1 3.2.2.3 "identifier rejected"); when the devices file
gives a username, username and password must match (else 4). Topics: the device publishes on
``devices/{id}/telemetry`` (``{"id": <sample id>, "t": <unix s or null>, "d": {...}}``) and
``devices/{id}/commands/reply`` (``{"id", "code": 0|1, "data"?}``), and subscribes to ``devices/{id}/commands``
(``{"id", "cmd", "params"}``).
"""

from .core import Twin, TwinError, excerpt, json_payload
from .credentials import BAD_CREDENTIALS, IDENTIFIER_REJECTED, Refusal


class PlainTwin(Twin):
    cloud = "mqtt"
    needs_subscription = True

    def __init__(self, devices, clock, **kw):
        super().__init__(devices, clock, **kw)
        self._id = 0

    def check_connect(self, info, now, check_password=True):
        device = self.devices.get(info.client_id or "")
        if device is None:
            return Refusal(IDENTIFIER_REJECTED, "client id %r is not registered" % info.client_id), None, {}
        if device.username is not None and check_password and (
                info.username != device.username or info.password != device.password):
            return Refusal(BAD_CREDENTIALS, "username or password does not match"), device, {}
        return None, device, {}

    def may_publish(self, link, topic):
        base = "devices/%s/" % link.device.client_id
        return topic in (base + "telemetry", base + "commands/reply")

    def may_subscribe(self, link, flt):
        return flt == "devices/%s/commands" % link.device.client_id

    def message(self, link, topic, payload, qos=None, retain=False, dup=False):
        tele = self.telemetry[link.device.name]
        obj, why = json_payload(payload)
        if obj is None:
            tele.bad.append({"time": self.now_iso(), "topic": topic, "why": why, "payload": excerpt(payload)})
            return
        if topic.endswith("/telemetry"):
            if not isinstance(obj.get("d"), dict) or "id" not in obj or "t" not in obj:
                tele.bad.append({"time": self.now_iso(), "topic": topic, "payload": excerpt(payload),
                                 "why": "telemetry is {\"id\", \"t\", \"d\": {...}}"})
                return
            tele.sample(str(obj["id"]), dup, obj["d"])
            return
        if "id" not in obj or obj.get("code") not in (0, 1):
            tele.bad.append({"time": self.now_iso(), "topic": topic, "payload": excerpt(payload),
                             "why": "a reply is {\"id\", \"code\": 0|1, \"data\"?}"})
            return
        self.command_reply(link, str(obj["id"]), {"id": obj["id"], "code": obj["code"], "data": obj.get("data")},
                           topic)

    def command(self, spec):
        """{"device", "cmd", "params": {...}, "qos", "queue"}."""
        device = self.device(spec.get("device"))
        cmd, params, qos = spec.get("cmd"), spec.get("params", {}), spec.get("qos", 1)
        if not isinstance(cmd, str) or not cmd or not isinstance(params, dict) or qos not in (0, 1):
            raise TwinError("a command needs cmd (a string), params (an object), qos 0 or 1")
        self._id += 1
        cmd_id = str(self._id)
        return self.add_command(device, "command", "devices/%s/commands" % device.client_id,
                                {"id": cmd_id, "cmd": cmd, "params": params}, qos, cmd_id,
                                queue=spec.get("queue", True))
