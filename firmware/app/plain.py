# The "mqtt" cloud profile: any MQTT broker, no cloud rules. Same methods as cellmqtt.huawei / cellmqtt.enos.
#   telemetry:  <telemetry_topic>  {"id": <sample id>, "t": <unix s>, "d": {readings}}
#   commands:   <command_topic>    {"id": <any>, "cmd": "<name>", "params": {...}}
#   replies:    <command_topic>/reply  {"id": <same>, "code": 0|1, "data": {...}}
import json

from cellmqtt.cloudsign import BAD_FIELD, BAD_JSON, TOO_LARGE, UNKNOWN, CloudMessageError, Command, is_cut, scan_id
from cellmqtt.settings import REQ, at_safe

CONFIG = {"cloud": {"mqtt": {"client_id": REQ, "username": str, "password": str, "telemetry_topic": str,
                             "command_topic": str}}}


class Plain:
    CONFIG = CONFIG
    SECRETS = ("cloud.mqtt.password",)
    OK = 0
    FAIL = 1
    TELEMETRY_QOS = 1
    REPLY_QOS = 1
    SUBSCRIBE_REQUIRED = True
    RATE = (10, 60)  # (connects, window s): a sane cap for any broker

    @classmethod
    def from_config(cls, cfg, binary=None):
        at_safe(cfg, ("cloud.mqtt.client_id", "cloud.mqtt.username", "cloud.mqtt.password",
                      "cloud.mqtt.telemetry_topic", "cloud.mqtt.command_topic"))  # they go into AT commands
        p = cfg["cloud"]["mqtt"]
        return cls(p["client_id"], p["username"], p["password"], p["telemetry_topic"], p["command_topic"])

    def __init__(self, client_id, username=None, password=None, telemetry_topic=None, command_topic=None,
                 max_payload=2048):
        self.client_id = client_id
        self.username = username
        self.password = password
        self.up = telemetry_topic or "devices/%s/telemetry" % client_id
        self.down = command_topic or "devices/%s/commands" % client_id
        self.max_payload = max_payload

    def credentials(self, unix_s, clock_trusted=False):
        return self.client_id, self.username, self.password

    def activation_pending(self):
        return False

    def telemetry_topic(self):
        return self.up

    def subscriptions(self):
        return [(self.down, 1)]

    def telemetry(self, data, unix_s=None, sample_id=None, service_id=None):
        return self.up, json.dumps({"id": sample_id, "t": unix_s, "d": data}).encode()

    def parse(self, topic, payload):
        reply = self.down + "/reply"
        if topic != self.down:
            raise CloudMessageError(UNKNOWN, "not a command topic")
        if len(payload) > self.max_payload or is_cut(payload):
            mid = scan_id(payload, b"id")  # still answered when its id can be read
            raise CloudMessageError(TOO_LARGE, "command larger than %d bytes" % self.max_payload, self.FAIL, mid,
                                    reply if mid is not None else None)
        try:
            d = json.loads(payload)
        except ValueError:
            raise CloudMessageError(BAD_JSON, "command is not JSON", self.FAIL) from None
        if not isinstance(d, dict) or not isinstance(d.get("cmd"), str):
            raise CloudMessageError(BAD_FIELD, "command needs a \"cmd\" string", self.FAIL,
                                    d.get("id") if isinstance(d, dict) else None, reply)
        params = d.get("params", {})
        if not isinstance(params, dict):
            raise CloudMessageError(BAD_FIELD, "\"params\" must be an object", self.FAIL, d.get("id"), reply)
        return Command("command", d.get("id"), d["cmd"], params, reply)

    def reply(self, cmd, code=None, body=None):
        d = {"id": cmd.id, "code": self.OK if code is None else code}
        if body is not None:
            d["data"] = body
        return cmd.reply_topic, json.dumps(d).encode()

    def failure(self, cmd, why, unknown=False):
        return self.reply(cmd, self.FAIL, {"error": why})

    def error_reply(self, exc):
        if exc.reply_topic is None:
            return None
        return exc.reply_topic, json.dumps({"id": exc.msg_id, "code": self.FAIL, "error": exc.reason}).encode()
