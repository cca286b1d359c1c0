"""Huawei Cloud IoTDA (the ``$oc/devices/{device_id}/sys/...`` interface) for the twin, written from Huawei's
public IoTDA documentation and device SDKs (docs/cloudtwin.md "IoTDA" cites each rule), independent of lib/.

CONNECT (iot_06_v5_3009 "Device Connection Authentication"): client id ``{device_id}_0_{signType}_{YYYYMMDDHH}``
(the id type is "fixed at 0"), username = the device id, password lower-hex HMAC-SHA256(key = the hour, message
= the secret); sign type 1 also compares the hour with the platform's UTC hour. CONNACK: 2 malformed client id
or keep-alive outside 30..1200 s ("the heartbeat interval does not meet platform requirements"), 4 bad
username/password (also a stale sign-type-1 hour), 5 not authorised (an unknown device: inferred).

Upstream:
* ``sys/properties/report``: ``{"services":[{"service_id","properties":{...},"event_time"?}]}`` (iot_06_v5_3010);
  event_time ``yyyyMMdd'T'HHmmss'Z'`` or ``yyyy-MM-dd'T'HH:mm:ss.SSS'Z'``, missing or malformed -> the platform's
  receive time; properties are checked against the product model, and what does not fit is not stored --
  there is no response topic, so nothing goes back to the device (iot_01_0326). At most 64 KB.
* ``sys/commands/response/request_id={id}``: ``{"result_code"?, "response_name"?, "paras"?}``; no result_code
  means success (iot_06_v5_3014; huaweicloud-iot-device-sdk-java CommandRsp). A request unanswered after 20 s
  is a timeout (iot_06_v5_0038), a later answer is ignored.
* ``sys/properties/set/response/request_id=``: ``{"result_code"?, "result_desc"?}`` (iot_06_v5_3008);
  ``sys/properties/get/response/request_id=``: ``{"services":[...]}`` (iot_06_v5_3011).
* ``sys/messages/up`` (anything, iot_06_v5_3016), ``sys/events/up`` (services with event_type; the device-side
  time sync: ``$time_sync`` / ``time_sync_request`` with ``device_send_time`` -> ``events/down``
  ``time_sync_response`` with ``device_send_time``, ``server_recv_time``, ``server_send_time`` in ms,
  iot_06_v5_3040 / iot_06_v5_3041).

Downstream system topics are implicitly subscribed at QoS 0; a device that subscribes gets them at its QoS
(huaweicloud-iot-device-sdk-c README, "implicit subscription"). QoS 2, will and retain are not supported
(iot_04_0010 "Limitations"): such a PUBLISH closes the connection (inferred: no source says what happens).
"""

import datetime
import json
import re
import secrets

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

RESPONSE_TIMEOUT_S = 20  # commands and property sets (iot_06_v5_0038, iot_06_v5_0035)
REPORT_MAX = 64 * 1024  # bytes of one property report (iot_01_0326)
_EVENT_TIME = (re.compile(r"^\d{8}T\d{6}Z$"), re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"))
SAMPLE_PROPERTY = "seq"  # the property the twin de-duplicates reports by (the firmware's cloud.huawei.seq_property)


def oc(device_id):
    return "$oc/devices/%s/" % device_id


class IotdaTwin(Twin):
    cloud = "iotda"
    needs_subscription = False  # system topics are implicitly subscribed (at QoS 0)

    def __init__(self, devices, clock, hour_tolerance_s=0, **kw):
        super().__init__(devices, clock, **kw)
        self.hour_tolerance_s = hour_tolerance_s

    # ---- connects --------------------------------------------------------------------------------------

    def check_connect(self, info, now, check_password=True):
        extra = {}
        parsed = parse_huawei_client_id(info.client_id or "", ("0",))
        if isinstance(parsed, Refusal):
            return parsed, self.devices.get(info.username or ""), extra
        extra["sig_type"] = parsed.sig_type
        device = self.devices.get(parsed.device_id)
        bad = check_keepalive(info.keepalive, HUAWEI_KEEPALIVE, "IoTDA")
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
        return None, device, extra

    # ---- topics ----------------------------------------------------------------------------------------

    def may_publish(self, link, topic):
        base = oc(link.device.device_id)
        if not topic.startswith(base):
            return False
        rel = topic[len(base):]
        return (rel in ("sys/properties/report", "sys/messages/up", "sys/events/up") or rel.startswith("user/")
                or any(rel.startswith("sys/%s/response/request_id=" % k) for k in ("commands", "properties/set",
                                                                                    "properties/get")))

    def may_subscribe(self, link, flt):
        base = oc(link.device.device_id)
        return flt.startswith(base + "sys/") or flt.startswith(base + "user/")

    def send_on(self, link, topic, payload, qos, done=None):
        # implicit subscription: QoS 0 unless the device subscribed, then at most its granted QoS
        sub = link.sub_qos(topic)
        self.backend.send(link, topic, payload, min(qos, sub if sub is not None else 0), done)

    def protocol_check(self, link, topic, qos, retain):
        super().protocol_check(link, topic, qos, retain)
        if qos == 2 or retain:
            self.backend.kick(link, "IoTDA supports no QoS 2 and no retained messages")

    # ---- upstream --------------------------------------------------------------------------------------

    def message(self, link, topic, payload, qos=None, retain=False, dup=False):
        device = link.device
        tele = self.telemetry[device.name]
        rel = topic[len(oc(device.device_id)):]
        if rel == "sys/properties/report":
            return self._report(link, tele, topic, payload, dup)
        if rel == "sys/events/up":
            return self._events(link, tele, topic, payload)
        if rel == "sys/messages/up" or rel.startswith("user/"):
            tele.events.append({"time": self.now_iso(), "topic": topic, "payload": excerpt(payload)})
            return
        for kind in ("commands", "properties/set", "properties/get"):
            pre = "sys/%s/response/request_id=" % kind
            if rel.startswith(pre):
                return self._response(link, tele, topic, payload, kind, rel[len(pre):])
        tele.bad.append({"time": self.now_iso(), "topic": topic, "why": "no upstream function on this topic",
                         "payload": excerpt(payload)})

    def _report(self, link, tele, topic, payload, dup):
        if len(payload) > REPORT_MAX:
            return tele.reject(self.now_iso(), topic, None, "property report over 64 KB")
        obj, why = json_payload(payload)
        services = obj.get("services") if obj else None
        if not isinstance(services, list) or not services or not all(
                isinstance(s, dict) and isinstance(s.get("service_id"), str) and isinstance(s.get("properties"), dict)
                for s in services):
            tele.bad.append({"time": self.now_iso(), "topic": topic, "payload": excerpt(payload),
                             "why": why or "report needs services: [{service_id: str, properties: {...}}, ...]"})
            return
        sample_id = None
        for s in services:
            props = s["properties"]
            why = check_huawei_service(link.device.model, s["service_id"], props)
            if why:  # not stored, nothing to the device
                return tele.reject(self.now_iso(), topic, props.get(SAMPLE_PROPERTY), why)
            if SAMPLE_PROPERTY in props:
                sample_id = props[SAMPLE_PROPERTY]
            et = s.get("event_time")
            if et is not None and not (isinstance(et, str) and any(p.match(et) for p in _EVENT_TIME)):
                # the platform takes its receive time instead: recorded, not refused
                tele.events.append({"time": self.now_iso(), "topic": topic, "event_time_replaced": et})
        tele.sample(None if sample_id is None else str(sample_id), dup, services[0]["properties"])

    def _events(self, link, tele, topic, payload):
        obj, why = json_payload(payload)
        services = obj.get("services") if obj else None
        if not isinstance(services, list) or not services:
            tele.bad.append({"time": self.now_iso(), "topic": topic, "payload": excerpt(payload),
                             "why": why or "events need services: [{service_id, event_type, paras}]"})
            return
        for s in services:
            tele.events.append({"time": self.now_iso(), "topic": topic, "event": s})
            if isinstance(s, dict) and s.get("service_id") == "$time_sync" and \
                    s.get("event_type") == "time_sync_request":
                sent = (s.get("paras") or {}).get("device_send_time")
                if not isinstance(sent, int):
                    tele.bad.append({"time": self.now_iso(), "topic": topic, "payload": excerpt(payload),
                                     "why": "time_sync_request needs paras.device_send_time (ms)"})
                    continue
                now_ms = int(self.clock.now().timestamp() * 1000)
                down = {"object_device_id": link.device.device_id, "services": [{
                    "service_id": "$time_sync", "event_type": "time_sync_response", "event_time": _stamp(self.clock.now()),
                    "paras": {"device_send_time": sent, "server_recv_time": now_ms, "server_send_time": now_ms}}]}
                self.send_on(link, oc(link.device.device_id) + "sys/events/down",
                             json.dumps(down, separators=(",", ":")).encode(), 0)

    def _response(self, link, tele, topic, payload, kind, request_id):
        obj, why = json_payload(payload)
        if obj is None:
            tele.bad.append({"time": self.now_iso(), "topic": topic, "payload": excerpt(payload), "why": why})
            return
        rc = obj.get("result_code", 0)  # absent: success
        if not isinstance(rc, int) or isinstance(rc, bool):
            tele.bad.append({"time": self.now_iso(), "topic": topic, "payload": excerpt(payload),
                             "why": "result_code must be an integer"})
            return
        if kind == "properties/get" and not isinstance(obj.get("services"), list):
            tele.bad.append({"time": self.now_iso(), "topic": topic, "payload": excerpt(payload),
                             "why": "a properties/get response needs services: [...]"})
            return
        reply = dict(obj, result_code=rc)
        rec = self.commands.get(request_id)
        if rec is not None and rec["status"] == "timeout":  # too late: the platform already gave up
            self.unmatched_replies.append({"time": self.now_iso(), "device": link.device.name, "id": request_id,
                                           "topic": topic, "reply": reply, "late": True})
            return
        rec = self.command_reply(link, request_id, reply, topic)
        if rec is not None and rec["kind"] != kind.replace("/", "_").replace("commands", "command"):
            rec["reply_topic_mismatch"] = True

    # ---- downstream ------------------------------------------------------------------------------------

    def command(self, spec):
        """{"device", "kind": command|properties_set|properties_get|message, ...}: command (service_id?,
        command_name?, paras), properties_set (services: [{service_id, properties}]), properties_get
        (service_id?), message (content); "qos" (default 1: delivered at QoS 1 only to a subscriber)."""
        device = self.device(spec.get("device"))
        kind = spec.get("kind", "command")
        qos = spec.get("qos", 1)
        if qos not in (0, 1):
            raise TwinError("qos must be 0 or 1 (IoTDA has no QoS 2)")
        base = oc(device.device_id) + "sys/"
        request_id = secrets.token_hex(8)
        if kind == "command":
            paras = spec.get("paras", {})
            if not isinstance(paras, dict):
                raise TwinError("paras must be an object")
            req = {"object_device_id": device.device_id, "paras": paras}
            for k in ("service_id", "command_name"):
                if spec.get(k) is not None:
                    req[k] = spec[k]
            topic = base + "commands/request_id=" + request_id
        elif kind == "properties_set":
            services = spec.get("services")
            if not isinstance(services, list) or not services:
                raise TwinError("properties_set needs services: [{service_id, properties}]")
            req = {"object_device_id": device.device_id, "services": services}
            topic = base + "properties/set/request_id=" + request_id
        elif kind == "properties_get":
            req = {"object_device_id": device.device_id}
            if spec.get("service_id") is not None:
                req["service_id"] = spec["service_id"]
            topic = base + "properties/get/request_id=" + request_id
        elif kind == "message":
            req = {"object_device_id": device.device_id, "content": spec.get("content")}
            topic = base + "messages/down"
        else:
            raise TwinError("kind must be command, properties_set, properties_get or message")
        rec = self.add_command(device, kind, topic, req, qos, request_id, queue=spec.get("queue", True))
        if kind != "message":
            self.loop.call_later(RESPONSE_TIMEOUT_S, self._timeout, rec)
        return rec

    def _timeout(self, rec):
        if rec["reply"] is None and rec["status"] in ("queued", "sent"):
            rec["status"] = "timeout"


def _stamp(now):
    return now.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
