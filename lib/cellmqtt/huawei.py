# Huawei cloud profile: CONNECT credentials, topics and JSON envelopes of OceanConnect (legacy /huawei/v1/...)
# and IoTDA ($oc/...). Pure functions over str/bytes; the caller passes the time (from the modem clock).
# Facts: shared/reference/clouds.md section 1.
from cellmqtt import cloudsign as cs
from cellmqtt.cloudsign import CloudMessageError, CloudValueError, Command
from cellmqtt.settings import REQ

_ID_MAX = 128  # device ids (IoTDA allows 128); the 128-byte topic limit is checked as well
_NAME_MAX = 64  # serviceId / cmd / command_name / request_id
_TOPIC_MAX = 128  # Huawei's limit on topic length (clouds.md 1.4)
_LEGACY = "legacy"
_IOTDA = "iotda"

# The keys this profile reads (README "Configuration"); its section of the config is cloud.huawei.
CONFIG = {"cloud": {"huawei": {"device_id": REQ, "secret": REQ, "id_type": (0, 0, 2), "api": ("legacy", "iotda"),
                               "codec": ("json", "binary"), "service_id": "Telemetry",
                               "sig_type": ("auto", "0", "1"), "seq_property": "seq"}}}
SECRETS = ("cloud.huawei.secret",)

# Command kinds parse() returns.
COMMAND = "command"  # legacy cloudReq, or IoTDA sys/commands
BINARY = "binary"  # legacy command/binary: raw bytes for the product's codec plug-in
PROPERTIES_SET = "properties_set"  # IoTDA
PROPERTIES_GET = "properties_get"  # IoTDA
MESSAGE = "message"  # IoTDA messages/down (no reply)
EVENT = "event"  # IoTDA events/down (no reply)
_JOBS = {PROPERTIES_SET: cs.SET, PROPERTIES_GET: cs.GET}


def credentials(device_id, secret, hour, sig_type=0, id_type=0):
    """(client_id, username, password) for one CONNECT.

    hour: 'YYYYMMDDHH' of the UTC hour -- computed once by the caller and used both in the client id and as
    the HMAC key. sig_type 1 makes the platform check that hour against its clock: only with a trusted clock.
    secret: str or bytes. password = lower-case hex HMAC-SHA256(key=hour, message=secret)."""
    cs.check_token(device_id, "device_id", _ID_MAX)
    key = cs.secret_bytes(secret, "secret")
    if not cs.is_digits(hour) or len(hour) != 10:
        raise CloudValueError("hour must be 10 digits YYYYMMDDHH (UTC)")
    try:
        cs.unix_from_civil(int(hour[:4]), int(hour[4:6]), int(hour[6:8]), int(hour[8:]))
    except CloudValueError:
        raise CloudValueError("hour YYYYMMDDHH names an impossible date or hour") from None
    if sig_type not in (0, 1) or type(sig_type) is not int:
        raise CloudValueError("sig_type must be 0 (hour not checked) or 1 (hour checked)")
    _check_id_type(id_type)
    return "%s_%d_%d_%s" % (device_id, id_type, sig_type, hour), device_id, cs.hexstr(cs.hmac_sha256(hour.encode(), key))


def _check_id_type(id_type):
    if type(id_type) is not int or id_type not in (0, 2):
        # 1 is the legacy product-secret mode, whose password scheme no source documents: refuse, don't guess
        raise CloudValueError("id_type must be 0 (platform device id) or 2 (node id)")


def _name_ok(v):
    return type(v) is str and 0 < len(v) <= _NAME_MAX


def _valid_mid(mid):
    # the platform issues 1..65535 (legacy "Delivering Commands"); 0 is answered too, echoing what came
    return type(mid) is int and 0 <= mid <= 65535


class Huawei:
    """A device's view of Huawei OceanConnect (api="legacy") or IoTDA (api="iotda").

    device_id    platform device id (legacy: the id from registration; IoTDA: usually {product_id}_{node_id})
    secret       device secret (str or bytes); never shown by repr() or an error
    id_type      0 = platform device id, 2 = node id (legacy only)
    api          "legacy" (/huawei/v1/devices/...) or "iotda" ($oc/devices/...)
    codec        legacy only: "json" (default) or "binary" (the product has a codec plug-in)
    service_id   default service id of telemetry()
    max_payload  downstream messages longer than this are refused before parsing
    """

    CONFIG = CONFIG
    SECRETS = SECRETS
    OK = 0  # reply code of success (legacy errcode / IoTDA result_code)
    FAIL = 1  # reply code of a failed command
    TELEMETRY_QOS = 1  # Huawei has no QoS 2
    REPLY_QOS = 1
    SUBSCRIBE_REQUIRED = True  # commands are delivered only after the device subscribed
    RATE = (6, 60)  # (connects, window s) the connect-rate gate allows (a sane cap; no documented limit)

    @classmethod
    def from_config(cls, cfg, binary=None):
        """The profile a validated configuration describes; ``binary``: the payload codec of a product with
        a binary codec plug-in (the board's or the app's), needed when cloud.huawei.codec is "binary"."""
        h = cfg["cloud"]["huawei"]
        return cls(h["device_id"], h["secret"], h["id_type"], h["api"], h["codec"], h["service_id"],
                   sig_type=h["sig_type"], seq_property=h["seq_property"] or None, binary=binary)

    def __init__(self, device_id, secret, id_type=0, api=_LEGACY, codec="json", service_id=None,
                 max_payload=cs.DEFAULT_MAX_PAYLOAD, sig_type="auto", seq_property=None, binary=None):
        self.device_id = cs.check_token(device_id, "device_id", _ID_MAX)
        self._secret = cs.secret_bytes(secret, "secret")
        _check_id_type(id_type)
        legacy = api == _LEGACY
        if not legacy and api != _IOTDA:
            raise CloudValueError("api must be 'legacy' or 'iotda'")
        if id_type and not legacy:
            raise CloudValueError("IoTDA always uses id_type 0")
        if codec != "json" and (codec != "binary" or not legacy):
            raise CloudValueError("codec must be 'json' or (legacy only) 'binary'")
        if service_id is not None:
            cs.check_token(service_id, "service_id", _NAME_MAX)
        if type(max_payload) is not int or max_payload < 64:
            raise CloudValueError("max_payload must be an int >= 64")
        if sig_type not in ("auto", "0", "1"):
            raise CloudValueError("sig_type must be 'auto', '0' or '1'")
        if codec == "binary" and binary is None:
            raise CloudValueError("codec binary needs the payload codec of the product (see docs/clouds.md)")
        if seq_property is not None:
            cs.check_token(seq_property, "seq_property", _NAME_MAX)
        self.binary = binary
        self.seq_property = seq_property
        self.sig_type = sig_type
        self.id_type = id_type
        self.api = api
        self.codec = codec
        self.service_id = service_id
        self.max_payload = max_payload
        if legacy:
            base = "/huawei/v1/devices/" + device_id
            self._data_json = base + "/data/json"
            self._data_bin = base + "/data/binary"
            self._data = self._data_bin if codec == "binary" else self._data_json
            self._cmd_json = base + "/command/json"
            longest = self._cmd_bin = base + "/command/binary"
        else:
            self._oc = "$oc/devices/" + device_id + "/sys/"
            longest = self._report = self._oc + "properties/report"
        if len(longest) > _TOPIC_MAX:
            raise CloudValueError("device_id too long: its topics would exceed %d bytes" % _TOPIC_MAX)

    def __repr__(self):
        return "<Huawei %s device_id=%s id_type=%d>" % (self.api, self.device_id, self.id_type)

    # ---- connect ----

    def credentials(self, unix_s, clock_trusted=False):
        """(client_id, username, password) for a CONNECT now. unix_s: the current Unix time in seconds (int);
        clock_trusted: True only when that time came from the network/NTP. sigType follows it ("auto"), or
        the sig_type the profile was given ("0": the hour is not checked, "1": it is)."""
        sig = self.sig_type
        trusted = clock_trusted if sig == "auto" else sig == "1"
        return credentials(self.device_id, self._secret, cs.utc_hour(unix_s), 1 if trusted else 0, self.id_type)

    def activation_pending(self):
        """Huawei devices are registered with their secret: there is no activation to wait for."""
        return False

    def telemetry_topic(self):
        """The topic every telemetry() message goes to."""
        return self._data if self.api == _LEGACY else self._report

    def subscriptions(self):
        """[(topic, qos)] to subscribe after every CONNECT (clean session)."""
        if self.api == _LEGACY:
            return [(self._cmd_bin if self.codec == "binary" else self._cmd_json, 1)]
        oc = self._oc
        return [(oc + "commands/#", 1), (oc + "properties/set/#", 1), (oc + "properties/get/#", 1),
                (oc + "messages/down", 1)]

    # ---- upstream ----

    def telemetry(self, data, unix_s=None, sample_id=None, service_id=None):
        """(topic, payload) reporting `data` (a dict of values) for one service.

        unix_s: time of the sample (eventTime / event_time), omitted when None: the platform then stamps its
        receive time (a time it cannot trust is never sent). sample_id: the sample's number, which the cloud
        and the twin de-duplicate by -- legacy JSON: the top-level "identifier"; IoTDA: the property
        ``seq_property`` (it must be in the product model); binary: inside the codec's bytes."""
        if self.codec == "binary":
            return self._data, self.binary.encode_sample(data, unix_s, sample_id)
        sid = self.service_id if service_id is None else service_id
        if sid is None:
            raise CloudValueError("telemetry needs a service_id (argument or constructor)")
        if sid is not self.service_id:  # the constructor's was checked once already
            cs.check_token(sid, "service_id", _NAME_MAX)
        if type(data) is not dict or not data:
            raise CloudValueError("data must be a non-empty dict")
        cs.check_readings(data)
        if self.api == _LEGACY:
            item = {"serviceId": sid, "serviceData": data}
            if unix_s is not None:
                item["eventTime"] = cs.utc_stamp(unix_s)
            msg = {"msgType": "deviceReq", "data": [item]}
            if sample_id is not None:
                msg["identifier"] = cs.check_sample_id(sample_id)
            return self._data, cs.dump(msg)
        if sample_id is not None and self.seq_property is not None:
            data = dict(data)
            data[self.seq_property] = sample_id
        item = {"service_id": sid, "properties": data}
        if unix_s is not None:
            item["event_time"] = cs.utc_stamp(unix_s)
        return self._report, cs.dump({"services": [item]})

    # ---- downstream ----

    def parse(self, topic, payload):
        """The Command in a received message, or CloudMessageError (never another exception)."""
        topic, payload = cs.received(topic, payload)
        if self.api == _LEGACY:
            if topic == self._cmd_json:
                return self._cloud_req(payload)
            if topic == self._cmd_bin:
                if len(payload) > self.max_payload or cs.is_cut(payload):
                    raise CloudMessageError(cs.TOO_LARGE, "binary command exceeds max_payload", kind=BINARY)
                if not payload:
                    raise CloudMessageError(cs.EMPTY, "binary command is empty", kind=BINARY)
                if self.binary is None:
                    raise CloudMessageError(cs.BAD_FIELD, "binary command, but no payload codec", kind=BINARY)
                try:
                    mid, name, params = self.binary.decode_command(bytes(payload))
                except ValueError as e:  # the codec says why; its mid when it could read one
                    mid = e.args[1] if len(e.args) > 1 else None
                    raise CloudMessageError(cs.BAD_FIELD, "binary command: %s" % e.args[0], self.FAIL, mid,
                                            self._data_bin if mid is not None else None, BINARY) from None
                return Command(BINARY, mid, name, params, self._data_bin, None, cs.RUN)
            root = "/huawei/v1/devices/"
        else:
            oc = self._oc
            if topic.startswith(oc):
                rest = topic[len(oc):]
                for base, kind in (("commands", COMMAND), ("properties/set", PROPERTIES_SET),
                                   ("properties/get", PROPERTIES_GET)):
                    n = len(base)
                    if rest.startswith(base) and rest[n : n + 12] == "/request_id=":
                        return self._iotda_req(kind, rest[n + 12 :], base, payload)
                if rest == "messages/down":
                    return self._iotda_down(MESSAGE, payload)
                if rest == "events/down":
                    return self._iotda_down(EVENT, payload)
            root = "$oc/devices/"
        if topic.startswith(root) and not topic.startswith(root + self.device_id + "/"):
            raise CloudMessageError(cs.FOREIGN, "topic of another device")
        raise CloudMessageError(cs.UNKNOWN, "topic not handled by this profile")

    def _load(self, payload, kind, reply_topic, msg_id):
        """JSON object of a request, or CloudMessageError carrying what an error reply needs. msg_id: the id
        when the topic carries it (IoTDA), else None and the legacy mid is recovered from the raw bytes."""
        try:
            return cs.load_json(payload, self.max_payload)
        except CloudMessageError as e:
            err = e
        if reply_topic is not None and msg_id is None:
            msg_id = cs.scan_id(payload, b"mid")
            if not _valid_mid(msg_id):
                msg_id = reply_topic = None
        err.msg_id = msg_id
        err.reply_topic = reply_topic
        err.code = self.FAIL if reply_topic is not None else None
        err.kind = kind
        raise err

    def _cloud_req(self, payload):
        data_topic = self._data_json  # deviceRsp goes on the data topic, not a command topic
        obj = self._load(payload, COMMAND, data_topic, None)
        mid = obj.get("mid")
        if not _valid_mid(mid):
            raise CloudMessageError(cs.BAD_FIELD, "mid missing or not an int 0..65535", kind=COMMAND)
        service = obj.get("serviceId")
        name = obj.get("cmd")
        paras = obj.get("paras", {})
        why = None
        if obj.get("msgType") != "cloudReq":
            why = "msgType is not cloudReq"
        elif not _name_ok(service):
            why = "serviceId missing or not a short str"
        elif not _name_ok(name):
            why = "cmd missing or not a short str"
        elif type(paras) is not dict:
            why = "paras is not an object"
        if why:
            raise CloudMessageError(cs.BAD_FIELD, why, self.FAIL, mid, data_topic, COMMAND)
        return Command(COMMAND, mid, name, paras, data_topic, service)

    def _iotda_req(self, kind, request_id, base, payload):
        # request_id goes into the response topic (and so into an AT command): it must be topic-safe
        try:
            cs.check_token(request_id, "request_id", _NAME_MAX)
        except CloudValueError:
            request_id = None  # raised below, outside the handler
        if request_id is None:
            raise CloudMessageError(cs.BAD_FIELD, "request_id in the topic is empty, too long or unsafe", kind=kind)
        reply_topic = self._oc + base + "/response/request_id=" + request_id
        # a properties/get response has no error form: a refused get is not answered
        err_topic = None if kind == PROPERTIES_GET else reply_topic
        obj = self._load(payload, kind, err_topic, request_id)
        target = obj.get("object_device_id")
        service = obj.get("service_id")
        params = obj.get("paras", {})
        name = obj.get("command_name")
        why = None
        if target is not None and target != self.device_id:
            why = "addressed to another device (gateway sub-devices are not supported)"
        elif service is not None and not _name_ok(service):
            why = "service_id is not a short str"
        elif kind == COMMAND:
            if name is not None and not _name_ok(name):
                why = "command_name is not a short str"
            elif type(params) is not dict:
                why = "paras is not an object"
        elif kind == PROPERTIES_SET:
            params = obj.get("services")
            if type(params) is not list or not params:
                why = "services missing or not a non-empty list"
            else:
                flat = {}  # the values to set, whatever service declares them (the app's settable values)
                for s in params:
                    if type(s) is not dict or not _name_ok(s.get("service_id")) or type(s.get("properties")) is not dict:
                        why = "each service needs a service_id and a properties object"
                        break
                    flat.update(s["properties"])
                params = flat
            name = service = None
        else:
            params = {}
            name = None
        if why:
            raise CloudMessageError(cs.BAD_FIELD, why, self.FAIL if err_topic else None, request_id, err_topic, kind)
        return Command(kind, request_id, name, params, reply_topic, service, _JOBS.get(kind))

    def _iotda_down(self, kind, payload):
        obj = self._load(payload, kind, None, None)
        if kind == MESSAGE:
            name = obj.get("name")
            msg_id = obj.get("id")
            if (name is not None and not _name_ok(name)) or (msg_id is not None and not _name_ok(msg_id)):
                raise CloudMessageError(cs.BAD_FIELD, "name or id is not a short str", kind=kind)
            return Command(MESSAGE, msg_id, name, obj.get("content"), None)
        services = obj.get("services")
        if type(services) is not list:
            raise CloudMessageError(cs.BAD_FIELD, "services missing or not a list", kind=kind)
        return Command(EVENT, None, None, services, None)

    # ---- replies ----

    def reply(self, cmd, code=None, body=None):
        """(topic, payload) answering `cmd`. code: OK (default) or FAIL (legacy errcode 0/1; IoTDA any int).
        body: legacy/IoTDA command: dict of response parameters; properties_get: dict of property values (of
        the service the request named, else this profile's service) or the full list of services;
        properties_set: optional str description; binary: a dict the payload codec encodes."""
        code = cs.reply_code(cmd, code, self.OK)
        kind = cmd.kind
        if body is not None:
            cs.check_data(body, "body")
        if kind == BINARY:
            return cmd.reply_topic, self.binary.encode_reply(cmd.id, code, body)
        if kind == PROPERTIES_SET:
            if body is not None and type(body) is not str:
                raise CloudValueError("properties_set: body is the result description, a str")
            msg = {"result_code": code, "result_desc": body if body is not None else
                   ("success" if code == 0 else "failure")}
        elif kind == PROPERTIES_GET:
            if type(body) is list:
                services = body
            elif type(body) is dict:
                services = [{"service_id": cmd.service or self.service_id, "properties": body}]
            else:
                raise CloudValueError("properties_get: body must be a dict of values or a list of services")
            msg = {"services": services}
        else:  # a command: legacy deviceRsp or IoTDA command response
            if body is not None and type(body) is not dict:
                raise CloudValueError("body must be a dict")
            if self.api == _LEGACY:
                if code not in (0, 1):
                    raise CloudValueError("legacy errcode must be 0 (success) or 1 (failure)")
                msg = {"msgType": "deviceRsp", "mid": cmd.id, "errcode": code}
                if body is not None:
                    msg["body"] = body
            else:
                msg = {"result_code": code}
                if cmd.name is not None:
                    msg["response_name"] = cmd.name
                if body is not None:
                    msg["paras"] = body
        return cmd.reply_topic, cs.dump(msg)

    def failure(self, cmd, why, unknown=False):
        """(topic, payload) saying `cmd` failed (``why``: a short text for the cloud console), or None when the
        protocol has no failure reply for it (a properties/get). Huawei has one failure code for an unknown
        command and a failed one."""
        if cmd.kind == PROPERTIES_GET:
            return None  # a properties/get response has no error form: not answered
        if cmd.kind == PROPERTIES_SET:
            return self.reply(cmd, self.FAIL, why)
        return self.reply(cmd, self.FAIL, {"error": why})

    def error_reply(self, exc):
        """(topic, payload) of the protocol's failure reply to a refused message, or None when the protocol has
        none or the message's id could not be recovered."""
        if type(exc) is not CloudMessageError or exc.reply_topic is None:
            return None
        if exc.kind == BINARY:
            return exc.reply_topic, self.binary.encode_reply(exc.msg_id, self.FAIL, None)
        if self.api == _LEGACY:
            msg = {"msgType": "deviceRsp", "mid": exc.msg_id, "errcode": self.FAIL}
        else:
            msg = {"result_code": self.FAIL}
            if exc.kind == PROPERTIES_SET:
                msg["result_desc"] = exc.reason
        return exc.reply_topic, cs.dump(msg)
