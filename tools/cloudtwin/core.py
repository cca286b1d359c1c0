"""The cloud twin's state, independent of which broker carries the MQTT traffic.

A backend (``amqtt_backend`` or ``mosquitto_backend``) reports what happens on the wire -- a CONNECT, a
SUBSCRIBE, a PUBLISH, a closed connection -- and the twin decides and records: accept or refuse with which
CONNACK code, whether a topic is the device's own, what a payload means (telemetry sample, command reply,
activation reply), what to send back. Cloud specifics live in the subclasses ``huawei.HuaweiTwin`` and
``enos.EnosTwin``; everything here is shared.

Everything runs on one asyncio loop; backends that have threads (paho, a log reader) hop onto it first.
The twin never writes a password or a secret to its log.
"""

import collections
import json
import logging

from .clock import iso
from .credentials import ACCEPTED

log = logging.getLogger("cloudtwin")

# A downstream message a device did not acknowledge within this time is marked failed.
ACK_TIMEOUT_S = 10


class TwinError(Exception):
    """A control request the twin cannot honour (unknown device, bad command spec, ...)."""


class StartError(Exception):
    """The twin cannot start: missing certificate files, no mosquitto, a port in use."""


class ConnectInfo:
    """What a backend saw of one CONNECT. ``password`` is only held long enough to check it."""

    __slots__ = (
        "clean_session",
        "client_cert",
        "client_id",
        "keepalive",
        "password",
        "peer",
        "tls",
        "username",
        "will",
    )

    def __init__(self, client_id, username, password, keepalive, clean_session=True, will=False, tls=False,
                 client_cert=None, peer=None):
        self.client_id = client_id
        self.username = username
        self.password = password
        self.keepalive = keepalive
        self.clean_session = clean_session
        self.will = will
        self.tls = tls
        self.client_cert = client_cert
        self.peer = peer


class Link:
    """One accepted device connection, from CONNACK to close."""

    def __init__(self, twin, seq, device, info, entry, securemode=None):
        self.twin = twin
        self.seq = seq
        self.device = device
        self.client_id = info.client_id
        self.keepalive = info.keepalive
        self.securemode = securemode
        self.entry = entry  # its connection-log record, updated on close
        self.subs = {}  # topic filter -> granted QoS
        self.ready = False  # the backend can deliver to it
        self.closed = False
        self.close_reason = None  # set by whoever ends it (takeover, keep-alive, control)
        self.pending = []  # link-bound downstream (activation) waiting for a subscription
        self.handle = None  # backend's own object (amqtt handler, mosquitto client id)

    def subscribed_to(self, topic):
        return any(topic_matches(f, topic) for f in self.subs)

    def sub_qos(self, topic):
        return max((q for f, q in self.subs.items() if topic_matches(f, topic)), default=None)


def topic_matches(flt, topic):
    """MQTT 3.1.1 topic filter match (section 4.7)."""
    if flt == topic:
        return True
    fl = flt.split("/")
    tl = topic.split("/")
    for i, level in enumerate(fl):
        if level == "#":
            return True
        if i >= len(tl) or (level != "+" and level != tl[i]):
            return False
    return len(fl) == len(tl)


def filter_within(flt, prefix_levels):
    """True if every topic ``flt`` can match lies under the literal level prefix (no wildcard inside it)."""
    fl = flt.split("/")
    if len(fl) <= len(prefix_levels):
        return False
    return fl[: len(prefix_levels)] == prefix_levels


class Telemetry:
    """Per-device upstream counters: the end-to-end tests count samples by id, duplicates only where QoS 1 allows."""

    def __init__(self):
        self.messages = 0
        self.samples = []  # unique sample ids in order of first arrival
        self.seen = set()
        self.duplicate_ids = []
        self.missing_id = 0
        self.bad = []
        self.events = []
        self.binary = 0
        self.dup_flag = 0  # PUBLISHes that arrived with DUP=1 (amqtt only; mosquitto does not pass it on)
        self.recent = []  # the last RECENT samples' readings, for people watching (the demo) and debugging
        self.rejected = []  # reports the cloud took but refused (the product model): never counted as delivered

    RECENT = 20

    def sample(self, sample_id, dup_flag, data=None):
        self.messages += 1
        if data is not None:
            self.recent.append({"sample_id": sample_id, "data": data})
            del self.recent[:-self.RECENT]
        if dup_flag:
            self.dup_flag += 1
        if sample_id is None:
            self.missing_id += 1
            return False
        key = sample_id if isinstance(sample_id, str) else repr(sample_id)
        if key in self.seen:
            self.duplicate_ids.append(sample_id)
            return False
        self.seen.add(key)
        self.samples.append(sample_id)
        return True

    def reject(self, now, topic, sample_id, why, code=None):
        self.messages += 1
        self.rejected.append({"time": now, "topic": topic, "sample_id": sample_id, "why": why, "code": code})

    def report(self):
        return {"messages": self.messages, "samples": list(self.samples), "unique": len(self.samples),
                "rejected": list(self.rejected),
                "duplicates": len(self.duplicate_ids), "duplicate_ids": list(self.duplicate_ids),
                "missing_id": self.missing_id, "bad": list(self.bad), "events": list(self.events),
                "binary": self.binary, "dup_flag": self.dup_flag, "recent": list(self.recent)}


class Twin:
    """Shared state and bookkeeping; a cloud subclass supplies the rules."""

    cloud = None
    needs_subscription = True  # downstream only to a subscribed device (Huawei); EnOS pushes

    def __init__(self, devices, clock, rate_limit=True, keepalive_factor=1.5):
        self.devices = devices
        self.clock = clock
        self.rate_limit = rate_limit
        self.keepalive_factor = keepalive_factor
        self.backend = None
        self.loop = None
        self._seq = 0
        self.links = {}  # device name -> [Link], oldest first
        self.queue = collections.defaultdict(list)  # device name -> [command record] waiting for a deliverable link
        self.reset()

    # ---- records ---------------------------------------------------------------------------------------

    def reset(self):
        """Clear every counter and log (the device registry and activation state stay)."""
        self.connections = []
        self.telemetry = collections.defaultdict(Telemetry)
        self.commands = collections.OrderedDict()
        self.unmatched_replies = []
        self.activations = []
        self.violations = {"topic": [], "rate": [], "protocol": []}
        self.reset_rate_state()
        for recs in self.queue.values():
            for rec in recs:
                rec["status"] = "dropped"
        self.queue.clear()

    def reset_rate_state(self):
        pass

    def now_iso(self):
        return iso(self.clock.now())

    def next_seq(self):
        self._seq += 1
        return self._seq

    def violation(self, kind, link=None, **fields):
        rec = {"time": self.now_iso(), "device": link.device.name if link and link.device else None,
               "client_id": link.client_id if link else None}
        rec.update(fields)
        self.violations[kind].append(rec)
        log.warning("violation %s: %s", kind, rec)
        return rec

    def device(self, name):
        d = self.devices.get(name)
        if d is None:
            raise TwinError("unknown device %r" % name)
        return d

    # ---- connects --------------------------------------------------------------------------------------

    def check_connect(self, info, now, check_password=True):
        """Cloud rules: -> (Refusal or None, device or None, extra log fields)."""
        raise NotImplementedError

    def attempt(self, info, broker_code=None):
        """A CONNECT arrived. Returns (code, link or None).

        ``broker_code`` is None when the twin decides (amqtt). With mosquitto the broker already decided
        (password file) and the twin only observes: it records its own verdict next to mosquitto's.
        """
        now = self.clock.now()
        observed = broker_code is not None
        entry = {"seq": self.next_seq(), "time": iso(now), "backend": self.backend.name if self.backend else None,
                 "tls": info.tls, "client_cert": info.client_cert, "peer": info.peer, "client_id": info.client_id,
                 "username": info.username, "password_given": bool(info.password), "keepalive": info.keepalive,
                 "clean_session": info.clean_session, "will": info.will, "device": None}
        if observed and info.client_id is None:
            # mosquitto logs a refused CONNECT without client id or username: nothing for the rules to judge
            refusal, device, extra = None, None, {}
        else:
            refusal, device, extra = self.check_connect(info, now, check_password=not observed)
        entry.update(extra)
        if device is not None:
            entry["device"] = device.name
            # Every CONNECT naming a known device counts, whatever else is wrong with it; a block outranks
            # any other reason (the cloud answers a blocked device before looking at its signature).
            blocked = self.rate_check(device, now, enforce=not observed)
            if blocked is not None:
                refusal = blocked
        if observed:
            code = broker_code
            entry["enforced_by"] = "mosquitto"
            if info.client_id is None:
                entry["twin_check"] = "not known: mosquitto logs no client id or username for a refused CONNECT"
            else:
                entry["twin_check"] = ("ok" if refusal is None
                                       else "would refuse %d: %s" % (refusal.code, refusal.reason))
            reason = "accepted by mosquitto" if code == 0 else "refused by mosquitto (password file)"
        else:
            code = ACCEPTED if refusal is None else refusal.code
            entry["enforced_by"] = "twin"
            reason = "ok" if refusal is None else refusal.reason
        entry["accepted"] = code == ACCEPTED
        entry["code"] = code
        entry["reason"] = reason
        self.connections.append(entry)
        log.info("CONNECT %r user %r -> %d (%s)", info.client_id, info.username, code, reason)
        if code != ACCEPTED or device is None:
            return code, None
        link = Link(self, entry["seq"], device, info, entry, extra.get("securemode"))
        return code, link

    def rate_check(self, device, now, enforce):
        """EnOS counts connects per device; Huawei has no documented connect limit."""
        return

    def link_ready(self, link):
        """CONNACK 0 went out and the backend can deliver to ``link``: take over, flush what waited."""
        link.ready = True
        links = self.links.setdefault(link.device.name, [])
        for old in list(links):
            reason = "taken over by connection #%d" % link.seq
            if not old.closed and self.backend.kick(old, reason):
                old.close_reason = reason
                log.info("device %s: connection #%d taken over by #%d", link.device.name, old.seq, link.seq)
        links.append(link)
        self.on_ready(link)
        self.flush(link.device.name)

    def on_ready(self, link):
        pass

    def link_closed(self, link, reason):
        if link.closed:
            return
        link.closed = True
        link.ready = False
        reason = link.close_reason or reason
        link.entry["disconnected"] = self.now_iso()
        link.entry["disconnect_reason"] = reason
        links = self.links.get(link.device.name, [])
        if link in links:
            links.remove(link)
        log.info("device %s: connection #%d closed (%s)", link.device.name, link.seq, reason)

    def current_link(self, device_name):
        for link in reversed(self.links.get(device_name, [])):
            if link.ready and not link.closed:
                return link
        return None

    # ---- topics ----------------------------------------------------------------------------------------

    def may_publish(self, link, topic):
        raise NotImplementedError

    def may_subscribe(self, link, flt):
        raise NotImplementedError

    def check_publish(self, link, topic, enforced=True):
        ok = self.may_publish(link, topic)
        if not ok:
            self.violation("topic", link, action="publish", topic=topic, enforced=enforced)
        return ok

    def protocol_check(self, link, topic, qos, retain):
        if qos == 2:
            self.violation("protocol", link, what="PUBLISH with QoS 2 (the clouds support 0 and 1)", topic=topic)
        if retain:
            self.violation("protocol", link, what="PUBLISH with retain (the clouds keep no retained messages)",
                           topic=topic)

    def check_subscribe(self, link, flt, enforced=True):
        ok = self.may_subscribe(link, flt)
        if not ok:
            self.violation("topic", link, action="subscribe", topic=flt, enforced=enforced)
        return ok

    def subscribed(self, link, flt, qos):
        link.subs[flt] = min(qos, 1)
        if link.pending:
            waiting, link.pending = link.pending, []
            for item in waiting:
                self.send_when_subscribed(link, *item)
        self.flush(link.device.name)

    def unsubscribed(self, link, flt):
        link.subs.pop(flt, None)

    # ---- downstream ------------------------------------------------------------------------------------

    def deliverable(self, link, topic):
        if link is None or not link.ready or link.closed:
            return False
        if link.subscribed_to(topic):
            return True
        return not self.needs_subscription and self.backend.can_push

    def send_on(self, link, topic, payload, qos, done=None):
        """Hand one message to the backend for ``link``; ``done(error or None)`` is called once it is acked."""
        if self.needs_subscription or not self.backend.can_push:
            sub_qos = link.sub_qos(topic)
            if sub_qos is not None:
                qos = min(qos, sub_qos)
        self.backend.send(link, topic, payload, qos, done)

    def send_when_subscribed(self, link, topic, payload, qos, starter=None):
        """Link-bound message (activation): now if the device can get it, else at its next SUBSCRIBE.

        ``starter()`` runs the moment the message really goes out and returns its ``done`` callback.
        """
        if self.deliverable(link, topic):
            self.send_on(link, topic, payload, qos, starter() if starter else None)
        else:
            link.pending.append((topic, payload, qos, starter))

    def reply_to(self, link, topic, payload):
        """An answer to an upstream request: QoS 0, only to a device subscribed to it (EnOS: "broker thinks that
        we are not interested in the response and won't send it", enos-device-sdk-java MqttConnection)."""
        if link.ready and not link.closed and link.subscribed_to(topic):
            self.send_on(link, topic, payload, 0)

    def add_command(self, device, kind, topic, request, qos, cmd_id, queue=True):
        raw = None
        if isinstance(request, (bytes, bytearray)):  # a codec plug-in's bytes: shown as hex
            raw, request = bytes(request), {"binary": bytes(request).hex()}
        rec = {"id": cmd_id, "device": device.name, "kind": kind, "topic": topic, "request": request, "qos": qos,
               "created": self.now_iso(), "status": "queued", "sent_at": None, "acked": None, "error": None,
               "reply": None, "replied_at": None}
        link = self.current_link(device.name)
        if not self.deliverable(link, topic) and not queue:
            raise TwinError("device %s is not connected and subscribed to %s" % (device.name, topic))
        if raw is not None:
            rec["_payload"] = raw
        self.commands[cmd_id] = rec
        self.queue[device.name].append(rec)
        self.flush(device.name)
        return rec

    def flush(self, device_name):
        waiting = self.queue.get(device_name)
        if not waiting:
            return
        link = self.current_link(device_name)
        keep = []
        for rec in waiting:
            if self.deliverable(link, rec["topic"]):
                self._send_command(link, rec)
            else:
                keep.append(rec)
        self.queue[device_name] = keep

    def _send_command(self, link, rec):
        rec["status"] = "sent"
        rec["sent_at"] = self.now_iso()
        rec["link"] = link.seq

        def done(err):
            if err is None:
                rec["acked"] = True
            else:
                rec["acked"] = False
                rec["error"] = err
                if rec["status"] == "sent":
                    rec["status"] = "failed"

        payload = rec.get("_payload") or json.dumps(rec["request"], separators=(",", ":")).encode()
        self.send_on(link, rec["topic"], payload, rec["qos"], done)

    def command_reply(self, link, cmd_id, reply, topic):
        rec = self.commands.get(cmd_id)
        if rec is None or rec["device"] != link.device.name:
            self.unmatched_replies.append({"time": self.now_iso(), "device": link.device.name, "id": cmd_id,
                                           "topic": topic, "reply": reply})
            return None
        if rec["reply"] is not None:
            rec.setdefault("extra_replies", []).append(reply)
            return rec
        rec["reply"] = reply
        rec["replied_at"] = self.now_iso()
        rec["status"] = "replied"
        rec["reply_topic"] = topic
        return rec

    # ---- control queries -------------------------------------------------------------------------------

    def report_telemetry(self, device=None):
        if device is not None:
            self.device(device)
            return self.telemetry[device].report()
        return {name: self.telemetry[name].report() for name in self.devices if name in self.telemetry}

    def report_commands(self, device=None):
        return [{k: v for k, v in r.items() if k[0] != "_"} for r in self.commands.values()
                if device is None or r["device"] == device]

    def report_connections(self, device=None):
        return [dict(e) for e in self.connections if device is None or e["device"] == device]

    def disconnect(self, device_name, reason="disconnected by the twin's control socket"):
        self.device(device_name)
        n = 0
        for link in list(self.links.get(device_name, [])):
            if not link.closed and self.backend.kick(link, reason):
                link.close_reason = reason
                n += 1
        return n

    def push(self, spec):
        """Control op "push": raw bytes (``payload``, latin-1 text) on ``topic`` to the device's current link."""
        device = self.device(spec.get("device"))
        topic, payload, qos = spec.get("topic"), spec.get("payload"), spec.get("qos", 0)
        if not isinstance(topic, str) or not topic or not isinstance(payload, str) or qos not in (0, 1):
            raise TwinError("push needs topic (str), payload (str, latin-1) and qos 0 or 1")
        link = self.current_link(device.name)
        if link is None or link.closed or not link.ready:
            raise TwinError("device %s is not connected" % device.name)
        self.send_on(link, topic, payload.encode("latin-1"), qos)
        return {"sent": True}

    def status(self):
        return {"cloud": self.cloud, "backend": self.backend.name if self.backend else None, "time": self.now_iso(),
                "clock": self.clock.spec, "rate_limit": self.rate_limit,
                "connected": sorted(n for n, ls in self.links.items() if any(not x.closed for x in ls)),
                "devices": [d.describe() for d in self.devices.values()]}

    def clock_changed(self):
        """The control socket moved the clock: a backend with time-dependent state (mosquitto) catches up."""
        hook = getattr(self.backend, "clock_changed", None)
        if hook is not None:
            hook()

    def command(self, spec):
        raise NotImplementedError

    def new_secret(self):
        raise TwinError("only EnOS issues device secrets")


def json_payload(payload):
    """bytes -> (object, None) or (None, why it is not a JSON object)."""
    if not payload:
        return None, "empty payload"
    try:
        obj = json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return None, "not JSON: %s" % e
    if not isinstance(obj, dict):
        return None, "JSON is not an object"
    return obj, None


def excerpt(payload, n=200):
    return bytes(payload[:n]).decode("utf-8", "replace")
