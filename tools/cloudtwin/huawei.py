"""Huawei OceanConnect legacy interface for the twin (clouds.md 1.1, 1.2, 1.4; docs/cloudtwin.md).

CONNECT: client id ``{id}_{idType}_{sigType}_{YYYYMMDDHH}`` with idType 0 (``{id}`` = the platform device id) or
2 (the node id), username ``{id}``, password lower-hex HMAC-SHA256(key=YYYYMMDDHH, msg=secret); sigType 1 also
checks the hour against the twin's clock (exactly, unless a tolerance is given).
Refusal codes (IoTDA's table, iot_06_v5_3009; the legacy pages give none): malformed client id or keep-alive
outside 30..1200 s -> 2; unknown device -> 5; wrong username, password or sigType-1 hour -> 4.

Topics, under the id the device logged in with (legacy "Topic Definition", iot_06_3008): a device publishes
only to ``/huawei/v1/devices/{id}/data/json|binary`` and subscribes only to its own
``/huawei/v1/devices/{id}/command/json|binary`` (or ``.../command/+`` / ``.../command/#``). Commands
(``cloudReq`` with a fresh ``mid``) go out on ``.../command/json`` (or, encoded by the codec plug-in,
``.../command/binary``) once the device has subscribed; ``deviceRsp`` comes back on the data topic.
Telemetry is ``deviceReq`` with the sample id in ``identifier`` (a tolerated extra), checked against the
product model: a report that does not fit is not stored, and nothing goes back to the device.
"""

from . import codec_plugin
from .core import Twin, TwinError, excerpt, json_payload
from .credentials import (
    BAD_CREDENTIALS,
    HUAWEI_KEEPALIVE,
    NOT_AUTHORIZED,
    Refusal,
    check_huawei_hour,
    check_huawei_password,
    check_keepalive,
    parse_huawei_client_id,
)
from .model import check_huawei_service

PREFIX = "/huawei/v1/devices/"
MID_MAX = 65535


def data_topics(device_id):
    return (PREFIX + device_id + "/data/json", PREFIX + device_id + "/data/binary")


def command_topics(device_id):
    return (PREFIX + device_id + "/command/json", PREFIX + device_id + "/command/binary")


class HuaweiTwin(Twin):
    cloud = "huawei"
    needs_subscription = True

    ID_TYPES = ("0", "2")

    def __init__(self, devices, clock, hour_tolerance_s=0, **kw):
        super().__init__(devices, clock, **kw)
        self.hour_tolerance_s = hour_tolerance_s
        self._mid = 0
        self._by_node = {d.node_id: d for d in devices.values() if getattr(d, "node_id", None)}

    def lookup(self, parsed):
        return self._by_node.get(parsed.device_id) if parsed.id_type == "2" else self.devices.get(parsed.device_id)

    def check_connect(self, info, now, check_password=True):
        extra = {}
        parsed = parse_huawei_client_id(info.client_id or "", self.ID_TYPES)
        if isinstance(parsed, Refusal):
            # the username is the device id, so the log still says whose attempt it was
            return parsed, self.devices.get(info.username or ""), extra
        extra["sig_type"] = parsed.sig_type
        extra["id_type"] = int(parsed.id_type)
        device = self.lookup(parsed)
        bad = check_keepalive(info.keepalive, HUAWEI_KEEPALIVE, "Huawei")
        if bad:
            return bad, device, extra
        if device is None:
            return Refusal(NOT_AUTHORIZED, "device %r is not registered" % parsed.device_id), None, extra
        if info.username != parsed.device_id:
            return Refusal(BAD_CREDENTIALS, "username is not the device id of the client id"), device, extra
        if check_password:
            bad = check_huawei_password(device.secret, parsed.hour, info.password)
            if bad:
                return bad, device, extra
        if parsed.sig_type == 1:
            bad = check_huawei_hour(parsed.hour, now, self.hour_tolerance_s)
            if bad:
                return bad, device, extra
        extra["login_id"] = parsed.device_id
        return None, device, extra

    @staticmethod
    def login_id(link):
        # the topics carry the id the device logged in with: its device id, or its node id (idType 2)
        return link.entry.get("login_id") or link.device.device_id

    # ---- topics ----------------------------------------------------------------------------------------

    def may_publish(self, link, topic):
        return topic in data_topics(self.login_id(link))

    def may_subscribe(self, link, flt):
        base = PREFIX + self.login_id(link) + "/command/"
        return flt in command_topics(self.login_id(link)) or flt in (base + "+", base + "#")

    # ---- upstream --------------------------------------------------------------------------------------

    def message(self, link, topic, payload, qos=None, retain=False, dup=False):
        tele = self.telemetry[link.device.name]
        if topic.endswith("/data/binary"):
            return self._binary(link, tele, topic, payload, dup)
        obj, why = json_payload(payload)
        if obj is None:
            tele.bad.append({"time": self.now_iso(), "topic": topic, "why": why, "payload": excerpt(payload)})
            return
        kind = obj.get("msgType")
        if kind == "deviceReq":
            data = obj.get("data")
            if not isinstance(data, list) or not data or not all(
                    isinstance(d, dict) and isinstance(d.get("serviceId"), str) and isinstance(d.get("serviceData"), dict)
                    for d in data):
                tele.bad.append({"time": self.now_iso(), "topic": topic, "payload": excerpt(payload),
                                 "why": "deviceReq needs data: [{serviceId: str, serviceData: {...}}, ...]"})
                return
            for d in data:
                why = check_huawei_service(link.device.model, d["serviceId"], d["serviceData"])
                if why:  # not stored; the platform says nothing to the device (docs/cloudtwin.md)
                    return tele.reject(self.now_iso(), topic, obj.get("identifier"), why)
            tele.sample(obj.get("identifier"), dup, data[0]["serviceData"])
        elif kind == "deviceRsp":
            mid = obj.get("mid")
            errcode = obj.get("errcode")
            if not isinstance(mid, int) or not 1 <= mid <= MID_MAX or not isinstance(errcode, int):
                tele.bad.append({"time": self.now_iso(), "topic": topic, "payload": excerpt(payload),
                                 "why": "deviceRsp needs an integer mid 1..65535 and an integer errcode"})
                return
            reply = {"mid": mid, "errcode": errcode, "body": obj.get("body")}
            self.command_reply(link, mid, reply, topic)
        else:
            tele.bad.append({"time": self.now_iso(), "topic": topic, "payload": excerpt(payload),
                             "why": "msgType %r is neither deviceReq nor deviceRsp" % (kind,)})

    def _binary(self, link, tele, topic, payload, dup):
        # the product's codec plug-in decodes the bytes into the model's JSON (docs/clouds.md "Binary codec")
        tele.binary += 1
        try:
            kind, ident, t, body = codec_plugin.decode(bytes(payload))
        except codec_plugin.DecodeError as e:
            return tele.reject(self.now_iso(), topic, None, "codec plug-in: %s" % e)
        if kind == "reply":
            return self.command_reply(link, ident, {"mid": ident, "errcode": t, "body": body}, topic)
        why = check_huawei_service(link.device.model, codec_plugin.SERVICE, body)
        if why:
            return tele.reject(self.now_iso(), topic, ident, why)
        tele.sample(str(ident), dup, body)

    # ---- downstream ------------------------------------------------------------------------------------

    def next_mid(self):
        self._mid = self._mid % MID_MAX + 1
        return self._mid

    def command(self, spec):
        """{"device", "service_id", "cmd", "paras": {...}, "qos": 1, "queue": true} -> command record."""
        device = self.device(spec.get("device"))
        service_id = spec.get("service_id")
        cmd = spec.get("cmd")
        paras = spec.get("paras", {})
        qos = spec.get("qos", 1)
        if not isinstance(service_id, str) or not service_id or not isinstance(cmd, str) or not cmd:
            raise TwinError("a Huawei command needs service_id and cmd (non-empty strings)")
        if not isinstance(paras, dict):
            raise TwinError("paras must be an object")
        if qos not in (0, 1):
            raise TwinError("qos must be 0 or 1")
        mid = self.next_mid()
        # a mid still waiting for its reply is not reused: the device could not tell the two apart
        while mid in self.commands and self.commands[mid]["status"] in ("queued", "sent"):
            mid = self.next_mid()
        self.commands.pop(mid, None)
        request = {"msgType": "cloudReq", "serviceId": service_id, "cmd": cmd, "paras": paras, "mid": mid}
        link = self.current_link(device.name)
        login = self.login_id(link) if link else (device.node_id if spec.get("node_id") else device.device_id)
        if spec.get("binary"):  # a product with a codec plug-in: the command goes out as its bytes
            try:
                request = codec_plugin.encode_command(mid, cmd, paras)
            except ValueError as e:
                raise TwinError(str(e)) from None
            return self.add_command(device, "binary", command_topics(login)[1], request, qos, mid,
                                    queue=spec.get("queue", True))
        raw = spec.get("raw")  # the test's own bytes in place of the JSON ("{mid}" replaced): hostile payloads
        if raw is not None:
            if not isinstance(raw, str):
                raise TwinError("raw must be a str (latin-1)")
            request = raw.replace("{mid}", str(mid)).encode("latin-1")
        return self.add_command(device, "cloudReq", command_topics(login)[0], request, qos, mid,
                                queue=spec.get("queue", True))
