# Envision EnOS cloud profile: CONNECT credentials (securemode 2 and 3), dynamic activation, measure-point /
# event topics and the request/reply envelopes. Pure functions over str/bytes; the caller passes the time.
# Facts: shared/reference/clouds.md section 2.
from cellmqtt import cloudsign as cs
from cellmqtt.cloudsign import CloudMessageError, CloudValueError, Command
from cellmqtt.settings import REQ

_CID_MAX = 64  # the client id before the first '|' (EnOS docs)
_KEY_MAX = 128
_NAME_MAX = 64  # service / event identifiers, message ids
# '&' separates the keys in the user name; '|' ',' '=' are client-id syntax; the rest is topic/AT safety.
_KEY_UNSAFE = b'"/+#&|,='
_CID_UNSAFE = b'"|'
_SECRET_MIN = 6
_SECRET_MAX = 128
_SECRET_UNSAFE = b"\"'\\"  # quotes and backslash: the secret is persisted in config files and must stay plain

SIGN_METHODS = ("sha256", "sha1")

# The keys this profile reads (README "Configuration"); its section of the config is cloud.enos.
CONFIG = {"cloud": {"enos": {"product_key": REQ, "device_key": REQ, "device_secret": str, "product_secret": str,
                             "client_id": str, "signmethod": SIGN_METHODS, "upper": True}}}
SECRETS = ("cloud.enos.device_secret", "cloud.enos.product_secret")

# Reply codes (clouds.md 2.3).
OK = 200
FORMAT_ERROR = 1220
EMPTY_PAYLOAD = 1251
METHOD_MISMATCH = 1260
TOO_LARGE = 1008
NO_PERMISSION = 1009
UNKNOWN_COMMAND = 1101  # no handler for the command (enos-device-sdk-java ResponseCode COMMAND_HANDLER_NOT_REGISTERED)
HANDLER_FAILED = 1102  # the handler failed (COMMAND_HANDLER_EXECUTION_FAILED); user codes are >= 2000
_CODES = {cs.TOO_LARGE: TOO_LARGE, cs.EMPTY: EMPTY_PAYLOAD, cs.NOT_UTF8: FORMAT_ERROR, cs.BAD_JSON: FORMAT_ERROR,
          cs.BAD_FIELD: FORMAT_ERROR, cs.MISMATCH: METHOD_MISMATCH, cs.FOREIGN: NO_PERMISSION}

# Command kinds parse() returns.
ACTIVATE = "activate"
MEASUREPOINT_SET = "measurepoint_set"
MEASUREPOINT_GET = "measurepoint_get"
SERVICE = "service"
REPLY = "reply"  # the cloud's _reply to one of our posts (code in Command.code); takes no reply
_JOBS = {ACTIVATE: cs.ACTIVATE, MEASUREPOINT_SET: cs.SET, MEASUREPOINT_GET: cs.GET}


def check_signmethod(signmethod):
    """The normalised sign method name, or CloudValueError."""
    m = signmethod.lower() if type(signmethod) is str else None
    if m in SIGN_METHODS:
        return m
    if m in ("hmacsha256", "hmacsha1"):
        # seed 002's "hmacsha1" is the same plain hash under another name; no HMAC is involved
        raise CloudValueError("signmethod '%s' is an alias: use '%s' (EnOS signs with a plain hash, not an HMAC)"
                              % (m, m[4:]))
    raise CloudValueError("signmethod must be 'sha256' or 'sha1'")


def credentials(client_id, device_key, product_key, timestamp, secret, securemode=2, signmethod="sha256",
                upper=True):
    """(client_id, username, password) for one CONNECT.

    timestamp: Unix ms (int or digit string), the same text in the client id and the signed content.
    secret: the deviceSecret (securemode 2) or productSecret (securemode 3), str or bytes.
    password = hex(HASH(content + secret)) -- a plain hash, no HMAC -- where content is the four parameter
    names sorted by name, each followed by its value. Upper-case hex unless upper=False."""
    cid = cs.check_token(client_id, "client_id", _CID_MAX, _CID_UNSAFE)
    dk = cs.check_token(device_key, "device_key", _KEY_MAX, _KEY_UNSAFE)
    pk = cs.check_token(product_key, "product_key", _KEY_MAX, _KEY_UNSAFE)
    if type(timestamp) is int and timestamp >= 0:
        ts = str(timestamp)
    elif cs.is_digits(timestamp) and len(timestamp) <= 19:
        ts = timestamp
    else:
        raise CloudValueError("timestamp must be Unix milliseconds (digits)")
    key = cs.secret_bytes(secret, "secret")
    if type(securemode) is not int or securemode not in (2, 3):
        raise CloudValueError("securemode must be 2 (device secret) or 3 (product secret)")
    method = check_signmethod(signmethod)
    h = cs.hash_fn(method)()
    # hashed piecewise, in the order of the sorted parameter names: the content string is never built in RAM
    for v in (b"clientId", cid, b"deviceKey", dk, b"productKey", pk, b"timestamp", ts):
        h.update(v if type(v) is bytes else v.encode())
    h.update(key)
    client = "%s|securemode=%d,signmethod=%s,timestamp=%s|" % (cid, securemode, method, ts)
    return client, dk + "&" + pk, cs.hexstr(h.digest(), upper)


def check_device_secret(secret):
    """A device secret delivered by activation (or read back from storage) as str, or CloudValueError:
    printable ASCII, 6..128 characters, no space, quotes, backslash, CR or LF."""
    if type(secret) in (bytes, bytearray):
        try:
            secret = str(bytes(secret), "ascii")
        except UnicodeError:
            secret = None  # not ASCII: refused below without chaining the bytes onto the error
        if secret is None:
            raise CloudValueError("device secret is not ASCII")
    cs.check_token(secret, "device secret", _SECRET_MAX, _SECRET_UNSAFE)
    if len(secret) < _SECRET_MIN:
        raise CloudValueError("device secret is shorter than %d characters" % _SECRET_MIN)
    return secret


def _id_ok(v):
    return (type(v) is str and 0 < len(v) <= _NAME_MAX) or (type(v) is int and v >= 0)


class EnOS:
    """A device's view of EnOS.

    product_key, device_key  the device's triple without the secret
    device_secret            securemode 2 (static); wins when both secrets are given
    product_secret           securemode 3 (dynamic activation of a not-yet-activated device)
    client_id                text before the first '|' of the MQTT client id (default: device_key)
    signmethod               "sha256" (default) or "sha1"; checked against this build's hashlib at once
    upper                    upper-case hex password (default; the SDKs differ, the server takes both)
    max_payload              downstream messages longer than this are refused (reply code 1008)
    Secrets are never shown by repr() or in an error.
    """

    CONFIG = CONFIG
    SECRETS = SECRETS
    OK = OK
    FAIL = HANDLER_FAILED  # reply code of a failed command (the SDKs' handler-failure code)
    TELEMETRY_QOS = 1
    REPLY_QOS = 0  # replies to cloud requests go at QoS 0 (clouds.md 2.3)
    SUBSCRIBE_REQUIRED = False  # downstream topics are pushed; a refused SUBACK is not fatal
    ACTIVATED_KEY = "cloud.enos.device_secret"  # the config key activation stores the device secret under
    RATE = (3, 120)  # EnOS blocks a device for 5 minutes after 4 connects in 2 minutes (clouds.md 2.4)

    @classmethod
    def from_config(cls, cfg, binary=None):
        from cellmqtt.settings import ConfigError

        e = cfg["cloud"]["enos"]
        if not e["device_secret"] and not e["product_secret"]:
            raise ConfigError("cloud.enos.device_secret", "or cloud.enos.product_secret is required")
        try:
            cs.hash_fn(e["signmethod"])
        except cs.HashUnavailable as x:  # ports built without SSL (most STM32 boards) have SHA-256 only
            raise ConfigError("cloud.enos.signmethod", "%s; use sha256" % x) from None
        return cls(e["product_key"], e["device_key"], e["device_secret"], e["product_secret"], e["client_id"],
                   e["signmethod"], e["upper"])

    def __init__(self, product_key, device_key, device_secret=None, product_secret=None, client_id=None,
                 signmethod="sha256", upper=True, max_payload=cs.DEFAULT_MAX_PAYLOAD):
        self.product_key = cs.check_token(product_key, "product_key", _KEY_MAX, _KEY_UNSAFE)
        self.device_key = cs.check_token(device_key, "device_key", _KEY_MAX, _KEY_UNSAFE)
        self.client_id = cs.check_token(device_key if client_id is None else client_id, "client_id", _CID_MAX,
                                        _CID_UNSAFE)
        self.signmethod = check_signmethod(signmethod)
        cs.hash_fn(self.signmethod)  # a build without this hash fails now, not at the first connect
        self.upper = bool(upper)
        if device_secret is not None:
            self._secret = cs.secret_bytes(device_secret, "device_secret")
            self.securemode = 2
        elif product_secret is not None:
            self._secret = cs.secret_bytes(product_secret, "product_secret")
            self.securemode = 3
        else:
            raise CloudValueError("EnOS needs device_secret (securemode 2) or product_secret (securemode 3)")
        if type(max_payload) is not int or max_payload < 64:
            raise CloudValueError("max_payload must be an int >= 64")
        self.max_payload = max_payload
        self._seq = 0
        self._sys = "/sys/" + product_key + "/" + device_key + "/thing/"
        self._ext = "/ext/session/" + product_key + "/" + device_key + "/"
        self._activate = self._ext + "thing/activate/info"
        self._post_topic = self._sys + "measurepoint/post"

    def __repr__(self):
        return "<EnOS product_key=%s device_key=%s securemode=%d signmethod=%s>" % (
            self.product_key, self.device_key, self.securemode, self.signmethod)

    def with_secret(self, device_secret):
        """A securemode-2 profile of the same device using the secret activation delivered (validated)."""
        return EnOS(self.product_key, self.device_key, check_device_secret(device_secret), None, self.client_id,
                    self.signmethod, self.upper, self.max_payload)

    def activation_pending(self):
        """True while the device connects with the product secret (securemode 3): the cloud is about to push
        its device secret, and the device sends nothing meanwhile."""
        return self.securemode == 3

    def telemetry_topic(self):
        return self._post_topic

    # ---- connect ----

    def credentials(self, unix_s, clock_trusted=False):
        """(client_id, username, password) for a CONNECT now; timestamp = unix_s * 1000. EnOS does not check
        the timestamp's freshness, so clock_trusted changes nothing (kept for the same call as Huawei)."""
        return credentials(self.client_id, self.device_key, self.product_key, cs.check_unix(unix_s) * 1000,
                           self._secret, self.securemode, self.signmethod, self.upper)

    def subscriptions(self):
        """[(topic, qos)]: the measure-point set/get topics and, in securemode 3, the activation topic. EnOS
        pushes these (and service invocations) without a SUBSCRIBE too: a refused SUBACK is not fatal."""
        # post_reply: the broker sends the cloud's verdict on our posts only to a device subscribed to it
        # (enos-device-sdk-java MqttConnection): a post refused by the model is then seen, not lost silently
        subs = [(self._sys + "service/measurepoint/set", 1), (self._sys + "service/measurepoint/get", 1),
                (self._post_topic + "_reply", 1)]
        if self.securemode == 3:
            subs.append((self._activate, 1))
        return subs

    # ---- upstream ----

    def _post(self, what, method, sample_id, params):
        # (topic, payload) of a post: topic <thing>/<what>, envelope {"id", "version", "method", "params"}
        if sample_id is None:
            self._seq = (self._seq + 1) & 0x3FFFFFFF
            msg_id = str(self._seq)
        else:
            msg_id = cs.check_sample_id(sample_id)
        return self._sys + what, cs.dump({"id": msg_id, "version": "1.0", "method": method, "params": params})

    def _points(self, data, unix_s, what="measurepoints"):
        if type(data) is not dict or not data:
            raise CloudValueError(what + " must be a non-empty dict")
        cs.check_readings(data)
        params = {what: data}
        if unix_s is not None:
            params["time"] = cs.check_unix(unix_s) * 1000
        return params

    def telemetry(self, data, unix_s=None, sample_id=None, service_id=None):
        """(topic, payload) of a measure-point post. data: {point id: value}; unix_s: sample time (sent as
        ms; omitted -> server time); sample_id: the envelope "id" (default: a counter)."""
        if service_id is not None:
            raise CloudValueError("EnOS measure-point posts have no service id")
        return self._post("measurepoint/post", "thing.measurepoint.post", sample_id, self._points(data, unix_s))

    def telemetry_batch(self, samples, sample_id=None):
        """(topic, payload) posting several samples at once: samples = [(data, unix_s or None), ...]."""
        if type(samples) not in (list, tuple) or not samples:
            raise CloudValueError("samples must be a non-empty list of (data, unix_s)")
        params = []
        for s in samples:
            if type(s) not in (list, tuple) or len(s) != 2:
                raise CloudValueError("each sample must be (data, unix_s)")
            params.append(self._points(s[0], s[1]))
        return self._post("measurepoint/post/batch", "thing.measurepoint.post.batch", sample_id, params)

    def event(self, event_id, data, unix_s=None, sample_id=None):
        """(topic, payload) of an event post: data = {output id: value}."""
        cs.check_token(event_id, "event_id", _NAME_MAX)
        return self._post("event/" + event_id + "/post", "thing.event." + event_id + ".post", sample_id,
                          self._points(data, unix_s, "events"))

    # ---- downstream ----

    def parse(self, topic, payload):
        """The Command in a received message, or CloudMessageError (never another exception).

        Dispatch order: activation, measurepoint/set, measurepoint/get, replies to our posts, then the generic
        thing/service/{id} -- the measure-point topics also match the generic pattern and must win."""
        topic, payload = cs.received(topic, payload)
        if topic == self._activate:
            if self.securemode != 3:
                # a device with its secret (static, or activated already) never takes another: refused, unanswered
                raise CloudMessageError(cs.BAD_FIELD, "activation push to a device that is not activating "
                                        "(securemode 2): refused, its device secret kept", kind=ACTIVATE)
            return self._request_in(ACTIVATE, topic, payload, "thing.activate.info", None)
        if topic.startswith(self._sys):
            rest = topic[len(self._sys):]
            if rest == "service/measurepoint/set":
                return self._request_in(MEASUREPOINT_SET, topic, payload, "thing.service.measurepoint.set", None)
            if rest == "service/measurepoint/get":
                return self._request_in(MEASUREPOINT_GET, topic, payload, "thing.service.measurepoint.get", None)
            if rest.endswith("_reply"):
                return self._ack(rest[:-6], payload)
            if rest.startswith("service/"):
                sid = rest[8:]
                try:
                    cs.check_token(sid, "service id", _NAME_MAX)
                except CloudValueError:
                    sid = None  # raised below, outside the handler
                if sid is None:
                    raise CloudMessageError(cs.BAD_FIELD, "service id in the topic is empty, too long or unsafe",
                                            kind=SERVICE)
                return self._request_in(SERVICE, topic, payload, "thing.service." + sid, sid)
        elif topic.startswith("/sys/") or (topic.startswith("/ext/session/") and not topic.startswith(self._ext)):
            # another device's topic: refused, and never answered (we may not publish there)
            raise CloudMessageError(cs.FOREIGN, "topic of another device", NO_PERMISSION)
        raise CloudMessageError(cs.UNKNOWN, "topic not handled by this profile")

    def _request_in(self, kind, topic, payload, method, name):
        reply_topic = topic + "_reply"
        try:
            obj = cs.load_json(payload, self.max_payload)
        except CloudMessageError as e:
            err = e
            msg_id = cs.scan_id(payload, b"id") if err.fault != cs.EMPTY else None
            ok = _id_ok(msg_id)
            err.code = _CODES[err.fault]
            err.msg_id = msg_id if ok else None
            err.reply_topic = reply_topic if ok else None
            err.kind = kind
            raise err
        msg_id = obj.get("id")
        if not _id_ok(msg_id):
            raise CloudMessageError(cs.BAD_FIELD, "id missing, or not a short str or a non-negative int",
                                    FORMAT_ERROR, kind=kind)
        m = obj.get("method")
        params = obj.get("params")
        fault = cs.BAD_FIELD
        why = secret = None
        if m is not None and m != method:
            fault = cs.MISMATCH
            why = "method does not match the topic"
        elif kind == ACTIVATE:
            if type(params) is not dict:
                why = "params is not an object"
            elif params.get("productKey", self.product_key) != self.product_key or \
                    params.get("deviceKey", self.device_key) != self.device_key:
                why = "activation names another device"
            else:
                secret = params.get("deviceSecret")
                try:
                    check_device_secret(secret)
                except CloudValueError as e:
                    why = e.args[0]  # our own fixed text: never contains the secret
                params = {k: params[k] for k in params if k != "deviceSecret"}
        elif kind == MEASUREPOINT_GET:
            if params is None:
                params = []  # no names: all points
            if type(params) is not list:
                why = "params is not a list of point names"
            else:
                for p in params:
                    if type(p) is not str or not p:
                        why = "params is not a list of point names"
        elif kind == MEASUREPOINT_SET and (params is None or params == {}):
            fault = cs.EMPTY
            why = "no measure points to set"
        else:
            if params is None:
                params = {}
            if type(params) is not dict:
                why = "params is not an object"
        if why:
            raise CloudMessageError(fault, why, _CODES[fault], msg_id, reply_topic, kind)
        cmd = Command(kind, msg_id, method if name is None else name, params, reply_topic, None, _JOBS.get(kind))
        cmd.secret = secret
        return cmd

    def _ack(self, name, payload):
        try:
            obj = cs.load_json(payload, self.max_payload)
        except CloudMessageError as e:
            e.kind = REPLY  # a reply is never answered: no code, no reply topic
            raise
        code = obj.get("code")
        if type(code) is not int:
            raise CloudMessageError(cs.BAD_FIELD, "reply has no int code", kind=REPLY)
        msg_id = obj.get("id")
        cmd = Command(REPLY, msg_id if _id_ok(msg_id) else None, name, obj.get("data"), None)
        cmd.code = code
        return cmd

    # ---- replies ----

    def reply(self, cmd, code=None, body=None):
        """(topic, payload) answering `cmd` on its topic + "_reply" (publish at REPLY_QOS).
        code: 200 (default) or another EnOS code; body: the reply's "data" -- measurepoint_get: {point: value},
        service: {output: value}; none for activate."""
        code = cs.reply_code(cmd, code, OK)
        msg = {"id": cmd.id, "code": code}
        if cmd.kind == ACTIVATE:
            if body is not None:
                raise CloudValueError("an activation reply carries no body")
        else:
            if body is None:
                body = {}
            if type(body) is not dict:
                raise CloudValueError("body must be a dict")
            cs.check_data(body, "body")
            msg["data"] = body
        return cmd.reply_topic, cs.dump(msg)

    def failure(self, cmd, why, unknown=False):
        """(topic, payload) saying `cmd` failed: 1101 when no handler knows it, 1102 when its handler failed
        (the SDKs' codes), with ``why`` as the message."""
        msg = {"id": cmd.id, "code": UNKNOWN_COMMAND if unknown else HANDLER_FAILED, "message": why}
        if cmd.kind != ACTIVATE:
            msg["data"] = {}
        return cmd.reply_topic, cs.dump(msg)

    def error_reply(self, exc):
        """(topic, payload) of the error reply to a refused message, or None when the message's id could not
        be recovered or the topic may not be answered (another device's, unknown, or a _reply)."""
        if type(exc) is not CloudMessageError or exc.reply_topic is None:
            return None
        return exc.reply_topic, cs.dump({"id": exc.msg_id, "code": exc.code, "message": exc.reason})
