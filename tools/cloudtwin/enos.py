"""Envision EnOS for the twin (clouds.md 2.1 - 2.4).

CONNECT: client id ``{cid}|securemode=2|3,signmethod=...,timestamp=...|``, username ``{dk}&{pk}``, password =
hex(HASH(clientId{cid}deviceKey{dk}productKey{pk}timestamp{ts} + secret)), secret = deviceSecret (securemode 2)
or productSecret (securemode 3, only for a dynamic device that is not activated yet).
Refusal codes: malformed client id or keep-alive outside 60..300 s -> 2; malformed username or wrong
signature -> 4; unknown device, securemode 3 for a static or already activated device, securemode 2 for a
device without a secret -> 5; connect rate limit (more than 4 connects in 2 minutes: blocked 5 minutes) -> 3.

Dynamic activation: after CONNACK of a securemode-3 connect the twin pushes ``thing.activate.info`` with a
fresh deviceSecret on ``/ext/session/{pk}/{dk}/thing/activate/info`` (no SUBSCRIBE needed) and from the
moment it is sent accepts only securemode 2 with that secret.

Downstream: measure-point set/get and service invocation on ``/sys/{pk}/{dk}/thing/service/...``, pushed
without a SUBSCRIBE; replies come back on the request topic + ``_reply``. Upstream: measure-point post
(sample id = the envelope ``id``; ``time`` in ms, missing = server time), batch post, events; each answered on
its ``_reply`` topic, and only to a device subscribed to that topic (enos-device-sdk-java MqttConnection: "broker
thinks that we are not interested in the response and won't send it to us"). Measure points are checked
against the product model: one the model lacks (or of the wrong type) fails the whole post with 1204.
"""

import json
import secrets
import string

from .core import Twin, TwinError, excerpt, filter_within, json_payload
from .credentials import (
    ENOS_KEEPALIVE,
    NOT_AUTHORIZED,
    SERVER_UNAVAILABLE,
    Refusal,
    check_enos_password,
    check_keepalive,
    parse_enos_client_id,
    parse_enos_username,
)
from .model import check_enos_points

RATE_MAX = 4  # connects allowed within RATE_WINDOW_S (clouds.md 2.4)
RATE_WINDOW_S = 120
RATE_BLOCK_S = 300
ID_CHARS = string.ascii_letters + string.digits

# reply codes (clouds.md 2.3)
OK = 200
FORMAT_ERROR = 1220
EMPTY_PAYLOAD = 1251
METHOD_MISMATCH = 1260
NOT_IN_MODEL = 1204  # a measure point or event the model lacks (EnOS Node SDK integration tests, research notes)


def sys_prefix(device):
    return "/sys/%s/%s/" % (device.product_key, device.device_key)


def session_prefix(device):
    return "/ext/session/%s/%s/" % (device.product_key, device.device_key)


def activation_topic(device):
    return session_prefix(device) + "thing/activate/info"


def random_id(n):
    return "".join(secrets.choice(ID_CHARS) for _ in range(n))


class EnosTwin(Twin):
    cloud = "enos"
    needs_subscription = False

    def __init__(self, devices, clock, activation_delay_s=0.2, **kw):
        self.activation_delay_s = activation_delay_s
        self._id = 0
        super().__init__(devices, clock, **kw)

    def reset_rate_state(self):
        self.rate_history = {}  # device name -> [connect timestamps within the window]
        self.blocked_until = {}  # device name -> timestamp

    # ---- connects --------------------------------------------------------------------------------------

    def check_connect(self, info, now, check_password=True):
        extra = {}
        user = parse_enos_username(info.username)
        device = None
        if not isinstance(user, Refusal):
            dk, pk = user
            device = self.devices.get(dk)
            if device is not None and device.product_key != pk:
                device = None
        parsed = parse_enos_client_id(info.client_id or "")
        if isinstance(parsed, Refusal):
            return parsed, device, extra
        extra["securemode"] = parsed.securemode
        extra["signmethod"] = parsed.signmethod
        bad = check_keepalive(info.keepalive, ENOS_KEEPALIVE, "EnOS")
        if bad:
            return bad, device, extra
        if isinstance(user, Refusal):
            return user, None, extra
        if device is None:
            return Refusal(NOT_AUTHORIZED, "device %s of product %s is not registered" % user), None, extra
        if parsed.securemode == 2:
            if device.device_secret is None:
                return Refusal(NOT_AUTHORIZED, "device is not activated: securemode 2 needs a deviceSecret "
                               "(activate with securemode 3 first)"), device, extra
            if check_password:
                bad = check_enos_password(parsed, device.device_key, device.product_key, device.device_secret,
                                          info.password, "deviceSecret")
                if bad:
                    return bad, device, extra
            return None, device, extra
        if not device.product.dynamic:
            return Refusal(NOT_AUTHORIZED, "securemode 3 but product %s is not enabled for dynamic activation"
                           % device.product_key), device, extra
        if check_password:
            bad = check_enos_password(parsed, device.device_key, device.product_key, device.product.product_secret,
                                      info.password, "productSecret")
            if bad:
                return bad, device, extra
        if device.device_secret is not None:
            return Refusal(NOT_AUTHORIZED, "device is already activated: the productSecret no longer logs in; "
                           "use securemode 2 with the deviceSecret"), device, extra
        return None, device, extra

    def rate_check(self, device, now, enforce):
        t = now.timestamp()
        name = device.name
        until = self.blocked_until.get(name)
        if until is not None and t < until:
            self.violations["rate"].append({"time": self.now_iso(), "device": name, "kind": "connect while blocked",
                                            "blocked_for_s": round(until - t, 3), "enforced": enforce})
            return Refusal(SERVER_UNAVAILABLE, "connect rate limit: device blocked for %.0f more s" % (until - t))
        recent = [x for x in self.rate_history.get(name, []) if t - x < RATE_WINDOW_S]
        recent.append(t)
        self.rate_history[name] = recent
        if len(recent) <= RATE_MAX:
            return None
        self.violations["rate"].append({"time": self.now_iso(), "device": name, "kind": "too many connects",
                                        "connects_in_window": len(recent), "window_s": RATE_WINDOW_S,
                                        "enforced": enforce and self.rate_limit})
        if not (enforce and self.rate_limit):
            return None
        self.blocked_until[name] = t + RATE_BLOCK_S
        return Refusal(SERVER_UNAVAILABLE, "connect rate limit: %d connects within %d s; blocked for %d s"
                       % (len(recent), RATE_WINDOW_S, RATE_BLOCK_S))

    # ---- activation ------------------------------------------------------------------------------------

    def on_ready(self, link):
        if link.securemode == 3:
            self.loop.call_later(self.activation_delay_s, self._activate, link)

    def _activate(self, link):
        if link.closed:
            return
        device = link.device
        if device.device_secret is not None:
            return  # another connection activated it meanwhile
        msg_id = self.next_id()
        topic = activation_topic(device)
        rec = {"id": msg_id, "device": device.name, "product_key": device.product_key,
               "device_key": device.device_key, "asset_id": random_id(8), "device_secret": random_id(20),
               "client_id": link.client_id, "link": link.seq, "time": None, "sent": False, "acked": None,
               "reply": None, "replied_at": None}
        payload = json.dumps({"id": msg_id, "version": "1.0", "method": "thing.activate.info",
                              "params": {"assetId": rec["asset_id"], "productKey": device.product_key,
                                         "deviceKey": device.device_key, "deviceSecret": rec["device_secret"]}},
                             separators=(",", ":")).encode()

        def send():
            # The secret takes effect the moment it goes out, not on the reply: the C SDK never replies.
            device.device_secret = rec["device_secret"]
            device.activated_by_twin = True
            rec["time"] = self.now_iso()
            rec["sent"] = True
            self.activations.append(rec)

            def done(err):
                rec["acked"] = err is None
                if err is not None:
                    rec["error"] = err

            return done

        # with mosquitto (no push to an unsubscribed device) this waits for the device's SUBSCRIBE
        self.send_when_subscribed(link, topic, payload, 1, send)

    def deactivate(self, name):
        device = self.device(name)
        if not device.product.dynamic:
            raise TwinError("device %s belongs to a static product" % name)
        device.device_secret = None
        device.activated_by_twin = False

    # ---- topics ----------------------------------------------------------------------------------------

    def may_publish(self, link, topic):
        return topic.startswith((sys_prefix(link.device), session_prefix(link.device)))

    def may_subscribe(self, link, flt):
        return (filter_within(flt, sys_prefix(link.device).split("/")[:-1])
                or filter_within(flt, session_prefix(link.device).split("/")[:-1]))

    # ---- upstream --------------------------------------------------------------------------------------

    def message(self, link, topic, payload, qos=None, retain=False, dup=False):
        device = link.device
        tele = self.telemetry[device.name]
        if topic.startswith(session_prefix(device)):
            rel = topic[len(session_prefix(device)):]
            if rel == "thing/activate/info_reply":
                return self._activation_reply(link, topic, payload)
            return self._unhandled(tele, topic, payload, "no upstream function on this /ext/session topic")
        rel = topic[len(sys_prefix(device)):]
        if rel.startswith("thing/service/") and rel.endswith("_reply"):
            return self._command_reply(link, tele, topic, payload)
        if rel == "thing/measurepoint/post":
            return self._request(link, tele, topic, payload, "thing.measurepoint.post", self._post, dup)
        if rel == "thing/measurepoint/post/batch":
            return self._request(link, tele, topic, payload, "thing.measurepoint.post.batch", self._post_batch, dup)
        parts = rel.split("/")
        if len(parts) == 4 and parts[0] == "thing" and parts[1] == "event" and parts[3] == "post":
            return self._request(link, tele, topic, payload, "thing.event.%s.post" % parts[2], self._event, dup)
        return self._unhandled(tele, topic, payload, "no upstream function on this topic")

    def _unhandled(self, tele, topic, payload, why):
        tele.bad.append({"time": self.now_iso(), "topic": topic, "why": why, "payload": excerpt(payload)})

    def _request(self, link, tele, topic, payload, method, handler, dup):
        """Validate the request envelope, run ``handler``, answer on topic + ``_reply``."""
        reply_topic = topic + "_reply"
        if not payload:
            tele.bad.append({"time": self.now_iso(), "topic": topic, "why": "empty payload", "payload": ""})
            return self._reply(link, reply_topic, None, EMPTY_PAYLOAD, "empty payload")
        obj, why = json_payload(payload)
        req_id = obj.get("id") if obj else None
        if obj is None or not isinstance(req_id, (str, int)) or isinstance(req_id, bool) or "params" not in obj:
            why = why or "request needs id (string) and params"
            tele.bad.append({"time": self.now_iso(), "topic": topic, "why": why, "payload": excerpt(payload)})
            return self._reply(link, reply_topic, req_id, FORMAT_ERROR, why)
        if obj.get("method") != method:
            why = "method %r does not match topic (expected %r)" % (obj.get("method"), method)
            tele.bad.append({"time": self.now_iso(), "topic": topic, "why": why, "payload": excerpt(payload)})
            return self._reply(link, reply_topic, req_id, METHOD_MISMATCH, why)
        why = handler(link, tele, obj, dup)
        if isinstance(why, tuple):  # refused by the product model: the whole request fails, first error wins
            code, why = why
            tele.reject(self.now_iso(), topic, str(req_id), why, code)
            return self._reply(link, reply_topic, req_id, code, why)
        if why:
            tele.bad.append({"time": self.now_iso(), "topic": topic, "why": why, "payload": excerpt(payload)})
            return self._reply(link, reply_topic, req_id, FORMAT_ERROR, why)
        return self._reply(link, reply_topic, req_id, OK, None)

    def _post(self, link, tele, obj, dup):
        params = obj["params"]
        if not isinstance(params, dict) or not isinstance(params.get("measurepoints"), dict):
            return "params needs a measurepoints object"
        t = params.get("time")
        if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t < 10 ** 11):
            return "time must be Unix milliseconds (an integer)"  # seconds would be 1970
        why = check_enos_points(link.device.model, params["measurepoints"])
        if why:
            return NOT_IN_MODEL, why
        tele.sample(obj["id"], dup, params["measurepoints"])
        return None

    def _post_batch(self, link, tele, obj, dup):
        params = obj["params"]
        if not isinstance(params, list) or not params or not all(
                isinstance(p, dict) and isinstance(p.get("measurepoints"), dict) for p in params):
            return "params must be a non-empty list of {measurepoints: {...}, time: ms}"
        for p in params:
            why = check_enos_points(link.device.model, p["measurepoints"])
            if why:
                return NOT_IN_MODEL, why
        tele.sample(obj["id"], dup)
        return None

    def _event(self, link, tele, obj, dup):
        if not isinstance(obj["params"], dict):
            return "event params must be an object"
        tele.events.append({"time": self.now_iso(), "id": obj["id"], "method": obj["method"], "params": obj["params"]})
        return None

    def _reply(self, link, topic, req_id, code, message):
        body = {"id": req_id, "code": code, "data": {}}
        if message:
            body["message"] = message
        self.reply_to(link, topic, json.dumps(body, separators=(",", ":")).encode())

    def _command_reply(self, link, tele, topic, payload):
        obj, why = json_payload(payload)
        if obj is None or "id" not in obj or not isinstance(obj.get("code"), int):
            tele.bad.append({"time": self.now_iso(), "topic": topic, "payload": excerpt(payload),
                             "why": why or "reply needs id and an integer code"})
            return
        reply = {"id": obj["id"], "code": obj["code"], "data": obj.get("data"), "message": obj.get("message")}
        rec = self.command_reply(link, str(obj["id"]), reply, topic)
        if rec is not None and rec["topic"] + "_reply" != topic:
            rec["reply_topic_mismatch"] = True

    def _activation_reply(self, link, topic, payload):
        obj, why = json_payload(payload)
        rid = str(obj.get("id")) if obj else None
        for rec in reversed(self.activations):
            if rec["device"] == link.device.name and rec["id"] == rid:
                rec["reply"] = obj
                rec["replied_at"] = self.now_iso()
                return
        self.unmatched_replies.append({"time": self.now_iso(), "device": link.device.name, "id": rid,
                                       "topic": topic, "reply": obj if obj is not None else why})

    # ---- downstream ------------------------------------------------------------------------------------

    def next_id(self):
        self._id += 1
        return str(self._id)

    def command(self, spec):
        """{"device", "kind": measurepoint_set|measurepoint_get|service, "params", "service_id", "qos", "queue"}."""
        device = self.device(spec.get("device"))
        kind = spec.get("kind")
        params = spec.get("params")
        qos = spec.get("qos", 1)
        if qos not in (0, 1):
            raise TwinError("qos must be 0 or 1")
        if kind == "measurepoint_set":
            if not isinstance(params, dict) or not params:
                raise TwinError("measurepoint_set needs params: {point: value, ...}")
            rel, method = "thing/service/measurepoint/set", "thing.service.measurepoint.set"
        elif kind == "measurepoint_get":
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                raise TwinError("measurepoint_get needs params: [point name, ...]")
            rel, method = "thing/service/measurepoint/get", "thing.service.measurepoint.get"
        elif kind == "service":
            sid = spec.get("service_id")
            if not isinstance(sid, str) or not sid or any(c in sid for c in "/+#. "):
                raise TwinError("service needs a service_id without / + # . or spaces")
            if sid == "measurepoint":
                raise TwinError("service_id 'measurepoint' is reserved for measurepoint_set/get")
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise TwinError("service params must be an object")
            rel, method = "thing/service/" + sid, "thing.service." + sid
        else:
            raise TwinError("kind must be measurepoint_set, measurepoint_get or service")
        cmd_id = self.next_id()
        request = {"id": cmd_id, "version": "1.0", "method": method, "params": params}
        return self.add_command(device, kind, sys_prefix(device) + rel, request, qos, cmd_id,
                                queue=spec.get("queue", True))

