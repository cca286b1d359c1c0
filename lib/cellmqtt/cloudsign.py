# Shared core of the cloud profiles (huawei.py, enos.py): typed errors, HMAC-SHA256 and plain hashes on
# whatever hashlib the build has, UTC civil time from Unix seconds, input checks, JSON in/out and the Command
# every profile's parse() returns. Pure: no I/O and no clock reads -- the caller passes the time.
import binascii
import hashlib
import json

from cellmqtt import timeutil as _tu
from cellmqtt.compat import const

try:  # CPython's hmac, or micropython-lib's `require("hmac")` when the firmware ships it
    import hmac as _hmac

    if not hasattr(_hmac, "new"):
        _hmac = None
except ImportError:  # the bare MicroPython ports: HMAC is built below on hashlib.sha256
    _hmac = None

# Which HMAC implementation this build uses ("hmac" or "hashlib"), for diagnostics and tests.
HMAC_IMPL = "hmac" if _hmac else "hashlib"

_BLOCK = const(64)  # SHA-256 block size in bytes (RFC 2104 B); MicroPython hash objects lack .block_size
# Unix time of 10000-01-01T00:00:00Z: the Huawei hour string has a four-digit year.
_UNIX_MAX = 253402300800
DEFAULT_MAX_PAYLOAD = const(2048)  # refuse larger downstream messages before parsing (RAM on the MCU)
_SCAN = const(8192)  # bytes searched for a message id when the JSON cannot be parsed (all a receive buffer holds)
_MAX_DEPTH = const(16)  # nesting accepted in telemetry values (our own recursion stays bounded)


class CloudError(Exception):
    """Base of every cloud-profile error. Messages never contain a secret or a password."""


class CloudValueError(CloudError):
    """A configuration value or call argument is unusable (names the key and why, never the value of a secret)."""


class HashUnavailable(CloudError):
    """The hash a credential needs is not built into this firmware (e.g. SHA-1 on an STM32 build without SSL)."""

    def __init__(self, name):
        super().__init__("hash '%s' is not available on this build (hashlib has no %s)" % (name, name))
        self.name = name


# Why a downstream message was refused (CloudMessageError.fault); each profile maps these to its reply codes.
TOO_LARGE = "too_large"
EMPTY = "empty"
NOT_UTF8 = "not_utf8"
BAD_JSON = "bad_json"
BAD_FIELD = "bad_field"
MISMATCH = "mismatch"  # method does not fit the topic
FOREIGN = "foreign"  # topic of another device
UNKNOWN = "unknown"  # topic this profile does not handle
BUSY = "busy"  # the device cannot take it now (its command queue is full)



class CloudMessageError(CloudError):
    """A downstream message was refused. ``fault`` says why (constants above), ``code`` is the protocol's reply
    code for it (None when the protocol has none), ``msg_id`` the id/mid/request_id recovered from the message
    (None when none could be), ``reply_topic`` where an error reply goes (None when none may be sent) and ``kind``
    the kind of command it would have been. Pass it to the profile's error_reply()."""

    def __init__(self, fault, reason, code=None, msg_id=None, reply_topic=None, kind=None):
        super().__init__(reason)
        self.fault = fault
        self.reason = reason
        self.code = code
        self.msg_id = msg_id
        self.reply_topic = reply_topic
        self.kind = kind


# What the app is to do with a parsed downstream message (Command.job): the same for every cloud.
RUN = "run"  # run the command handler named Command.name, reply with its result
SET = "set"  # set the values in Command.params, reply
GET = "get"  # read the values named in Command.params (all when empty), reply with them
ACTIVATE = "activate"  # store Command.secret as the device secret, reply, reconnect with it
NOTE = "note"  # nothing to do or answer (acks of our own uploads, messages, events)


class Command:
    """One parsed downstream message.

    kind         what it is ("command", "activate", "measurepoint_set", ...; see the profile's docs)
    job          what the app does with it: RUN, SET, GET, ACTIVATE or NOTE (default: RUN when it takes a
                 reply, else NOTE)
    id           the message id to echo (Huawei legacy mid: int; IoTDA request_id and EnOS id: as sent)
    name         command / method / service name
    service      Huawei service id (None elsewhere)
    params       the parameters (dict, list, or bytes for Huawei binary commands)
    reply_topic  where reply() publishes, or None when the message takes no reply
    code         reply code of an upstream-ack ("reply" kind), else None
    secret       the new device secret of an EnOS "activate", else None (never shown by repr)
    """

    def __init__(self, kind, msg_id, name, params, reply_topic, service=None, job=None):
        self.kind = kind
        self.job = job or (RUN if reply_topic is not None else NOTE)
        self.id = msg_id
        self.name = name
        self.params = params
        self.reply_topic = reply_topic
        self.service = service
        self.code = self.secret = None

    def __repr__(self):
        return "<Command %s id=%r name=%r>" % (self.kind, self.id, self.name)


# ---- hashes -------------------------------------------------------------------------------------------------


def hash_fn(name):
    """The hashlib constructor called `name`, or HashUnavailable naming it."""
    fn = getattr(hashlib, name, None)
    if fn is None:
        raise HashUnavailable(name)
    return fn


def hmac_sha256_hashlib(key, msg):
    """HMAC-SHA256 (RFC 2104) built on hashlib.sha256 alone: works on builds without the hmac module."""
    sha256 = hash_fn("sha256")
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    pad = bytearray(_BLOCK)  # one buffer, XORed in place for the inner then the outer pad
    pad[: len(key)] = key
    for x in (0x36, 0x36 ^ 0x5C):
        for i in range(_BLOCK):
            pad[i] ^= x
        h = sha256(pad)
        h.update(msg)
        msg = h.digest()
    return msg


def hmac_sha256(key, msg):
    """HMAC-SHA256 digest (bytes): the hmac module when the build has one, else hmac_sha256_hashlib()."""
    if _hmac:
        return _hmac.new(key, msg, hash_fn("sha256")).digest()
    return hmac_sha256_hashlib(key, msg)


def hexstr(digest, upper=False):
    """Hex text of a digest, lower case unless `upper`."""
    s = binascii.hexlify(digest).decode()
    return s.upper() if upper else s


# ---- time: Unix seconds -> UTC civil time, independent of the port's epoch and of time.gmtime -------------


def check_unix(unix_s):
    """Unix seconds as an int in 1970..9999, or CloudValueError. Floats are truncated (use ints on an MCU:
    a single-precision float cannot hold today's time to the second)."""
    if type(unix_s) is float:
        if unix_s - unix_s != 0.0:  # nan or inf
            raise CloudValueError("unix time must be finite")
        unix_s = int(unix_s)
    if type(unix_s) is not int:
        raise CloudValueError("unix time must be an int (seconds since 1970-01-01 UTC)")
    if not 0 <= unix_s < _UNIX_MAX:
        raise CloudValueError("unix time out of range 1970..9999")
    return unix_s


def civil(unix_s):
    """(year, month, day, hour, minute, second) in UTC for Unix seconds (timeutil.civil, range-checked)."""
    return _tu.civil(check_unix(unix_s))


def unix_from_civil(year, month, day, hour=0, minute=0, second=0):
    """Unix seconds of a UTC civil time (the inverse of civil()); CloudValueError for impossible dates."""
    try:
        return _tu.unix_from_civil(year, month, day, hour, minute, second)
    except ValueError as e:
        raise CloudValueError(str(e)) from None


def is_digits(s):
    """True for a non-empty str of ASCII digits only (str.isdigit also takes other scripts' digits)."""
    if type(s) is not str or not s:
        return False
    for c in s:
        if not "0" <= c <= "9":
            return False
    return True


def utc_hour(unix_s):
    """'YYYYMMDDHH' of the UTC hour (the Huawei client id / HMAC key)."""
    return "%04d%02d%02d%02d" % civil(unix_s)[:4]


def utc_stamp(unix_s):
    """Huawei event time 'yyyyMMddTHHmmssZ' (UTC)."""
    return "%04d%02d%02dT%02d%02d%02dZ" % civil(unix_s)


# ---- input checks -----------------------------------------------------------------------------------------

# Never allowed in a name that goes into a topic, client id or AT command: quote (ends an AT string), and the
# MQTT separator and wildcards. Control characters, space and non-ASCII are refused by the range check.
TOPIC_UNSAFE = b'"/+#'


def check_token(value, what, max_len, forbidden=TOPIC_UNSAFE):
    """`value` if it is a str of 1..max_len printable ASCII characters without any of `forbidden`."""
    if type(value) is not str:
        raise CloudValueError(what + " must be a str")
    b = _utf8(value)
    if b is None:
        raise CloudValueError(what + " is not encodable text")
    if not 0 < len(b) <= max_len:
        raise CloudValueError("%s must be 1..%d characters" % (what, max_len))
    for i in range(len(b)):
        c = b[i]
        if c < 0x21 or c > 0x7E or c in forbidden:
            # the position, not the text: the value may be a secret
            raise CloudValueError("%s has a forbidden character at index %d" % (what, i))
    return value


def _utf8(s):
    # CPython refuses lone surrogates (JSON "\ud800" makes one); None instead of a UnicodeError that would
    # carry the whole text -- possibly a secret -- in its .object
    try:
        return s.encode()
    except UnicodeError:
        return None


def secret_bytes(value, what, max_len=256):
    """A configured secret as bytes (str is UTF-8 encoded); CloudValueError without ever quoting it."""
    t = type(value)
    if t is str:
        value = _utf8(value)
        if value is None:
            raise CloudValueError(what + " is not encodable text")
    elif t is bytearray or t is bytes:
        value = bytes(value)
    else:
        raise CloudValueError(what + " must be str or bytes")
    if not 0 < len(value) <= max_len:
        raise CloudValueError("%s must be 1..%d bytes" % (what, max_len))
    return value


def check_readings(data):
    """check_data() for a telemetry dict; flat str -> number/str/bool readings are checked in one loop (a
    recursive call per value costs a heap-allocated frame on MicroPython, every sample)."""
    for k in data:
        if type(k) is not str:
            raise CloudValueError("data has a key that is not a str")
        v = data[k]
        t = type(v)
        if t is float:
            if v - v != 0.0:
                raise CloudValueError("data holds a NaN or infinite number")
        elif not (t is int or t is str or t is bool or v is None):
            check_data(v, "data", 1)


def check_data(value, what="data", depth=0):
    """Refuse what json.dumps would turn into invalid JSON or cannot encode: NaN/inf (CPython writes NaN,
    MicroPython nan), non-str keys (MicroPython writes them unquoted), bytes and other objects."""
    t = type(value)
    if value is None or t is str or t is int or t is bool:
        return
    if t is float:
        if value - value != 0.0:
            raise CloudValueError(what + " holds a NaN or infinite number")
        return
    if depth >= _MAX_DEPTH:
        raise CloudValueError(what + " is nested too deeply")
    if t is dict:
        for k in value:
            if type(k) is not str:
                raise CloudValueError(what + " has a key that is not a str")
            check_data(value[k], what, depth + 1)
    elif t is list or t is tuple:
        for v in value:
            check_data(v, what, depth + 1)
    else:
        raise CloudValueError("%s holds a %s, which JSON cannot carry" % (what, t.__name__))


def check_sample_id(sample_id):
    """A telemetry sample id as a str (ints are converted): the cloud twin de-duplicates by it."""
    if type(sample_id) is int and sample_id >= 0:
        return str(sample_id)
    return check_token(sample_id, "sample_id", 64, b'"\\')


def reply_code(cmd, code, default):
    """The checked reply code for answering `cmd` (`default` when None): CloudValueError when `cmd` takes no
    reply or the code is not an int."""
    if type(cmd) is not Command or cmd.reply_topic is None:
        raise CloudValueError("this message takes no reply")
    if code is None:
        return default
    if type(code) is not int:
        raise CloudValueError("code must be an int")
    return code


def dump(obj):
    """Compact JSON bytes of a message we built (inputs already checked)."""
    return json.dumps(obj, separators=(",", ":")).encode()


# ---- downstream messages ----------------------------------------------------------------------------------


def received(topic, payload):
    """A received message as (topic str, payload sliceable into bytes): bytes topics must be UTF-8, a str
    payload is encoded once."""
    t = type(topic)
    if t is not str:
        if t not in (bytes, bytearray, memoryview):
            raise CloudMessageError(BAD_FIELD, "topic must be str or bytes")
        try:
            topic = str(bytes(topic), "utf-8")
        except UnicodeError:
            topic = None  # raised below, outside the handler, so the topic bytes are not chained onto the error
        if topic is None:
            raise CloudMessageError(NOT_UTF8, "topic is not UTF-8")
    t = type(payload)
    if t is str:
        payload = _utf8(payload)
        if payload is None:
            raise CloudMessageError(NOT_UTF8, "payload is not encodable text")
    elif t not in (bytes, bytearray, memoryview) and not is_cut(payload):
        raise CloudMessageError(BAD_FIELD, "payload must be bytes")
    return topic, payload


def is_cut(payload):
    """A payload the transport delivered cut (a transport.Truncated: .head, len() the real size), never parsed:
    refused as TOO_LARGE, answered by the id in its head."""
    return type(payload) not in (bytes, bytearray, memoryview, str) and hasattr(payload, "head")


def load_json(payload, limit):
    """The JSON object in `payload` (bytes), refusing -- before any parsing -- payloads over `limit` bytes.
    Raises CloudMessageError with fault TOO_LARGE, EMPTY, NOT_UTF8 or BAD_JSON; never anything else."""
    n = len(payload)
    if n > limit or is_cut(payload):
        raise CloudMessageError(TOO_LARGE, "payload of %d bytes exceeds the limit of %d" % (n, limit))
    if not n:
        raise CloudMessageError(EMPTY, "payload is empty")
    text = obj = None
    try:
        text = str(bytes(payload), "utf-8")
    except UnicodeError:
        pass  # the error is raised outside the handler: the payload may carry a secret and must not be chained
    if text is None:
        raise CloudMessageError(NOT_UTF8, "payload is not UTF-8")
    fault = "payload is not a JSON object"
    try:
        obj = json.loads(text)
    except ValueError:
        fault = "payload is not valid JSON"
    except RuntimeError:  # CPython's RecursionError on absurd nesting
        fault = "payload JSON is nested too deeply"
    if type(obj) is not dict:
        raise CloudMessageError(BAD_JSON, fault)
    return obj


def scan_id(payload, key):
    """Recover a top-level `"key": value` from the first bytes of a message that could not be parsed (too
    large, cut off, not UTF-8), so an error reply can still name it. `key` is bytes; returns a str (quoted
    value without escapes) or an int (digits), or None. Reads at most _SCAN bytes and allocates only the value."""
    if is_cut(payload):
        v = scan_id(payload.head, key)
        return v if v is not None else _scan_last(getattr(payload, "tail", b""), key)
    n = min(len(payload), _SCAN)  # the clouds' own field order puts the id last (Huawei cloudReq "mid")
    depth = 0
    i = 0
    while i < n:
        c = payload[i]
        if c == 0x22:  # a string: find its end, skipping escaped characters
            j = i + 1
            while j < n and payload[j] != 0x22:
                j += 2 if payload[j] == 0x5C else 1
            if j >= n:
                return None
            if depth == 1 and j - i - 1 == len(key) and bytes(payload[i + 1 : j]) == key:
                k = _skip_ws(payload, j + 1, n)
                if k < n and payload[k] == 0x3A:  # ':' -- so this string was a key, not a value
                    return _scan_value(payload, _skip_ws(payload, k + 1, n), n)
            i = j
        elif c == 0x7B or c == 0x5B:
            depth += 1
        elif c == 0x7D or c == 0x5D:
            depth -= 1
        i += 1
    return None


def _scan_last(tail, key):
    # `"key": value` as the last member of the top-level object, read from the object's last bytes (all that is
    # left of a message cut by the transport): the final "}" closes the top level, so the member before it is a
    # top-level one. A plain int or a quoted string without escapes; anything else is None.
    t = bytes(tail).rstrip(b" \t\r\n")
    if not t.endswith(b"}"):
        return None
    t = t[:-1].rstrip(b" \t\r\n")
    if t.endswith(b'"'):
        i = t.rfind(b'"', 0, len(t) - 1)
        if i < 0 or b"\\" in t[i:]:
            return None
        v = _scan_value(t + b" ", i, len(t) + 1)
    else:
        i = len(t)
        while i and 48 <= t[i - 1] <= 57:
            i -= 1
        v = _scan_value(t + b" ", i, len(t) + 1) if i < len(t) else None
    rest = t[:i].rstrip(b" \t\r\n")
    if v is None or not rest.endswith(b":"):
        return None
    rest = rest[:-1].rstrip(b" \t\r\n")
    q = b'"' + key + b'"'
    if not rest.endswith(q):
        return None
    before = rest[:-len(q)].rstrip(b" \t\r\n")
    return v if before and before[-1] in b",{" else None


def _skip_ws(b, k, n):
    while k < n and b[k] in b" \t\r\n":
        k += 1
    return k


def _scan_value(b, k, n):
    if k >= n:
        return None
    if b[k] == 0x22:
        j = k + 1
        while j < n and b[j] != 0x22:
            if b[j] == 0x5C or b[j] < 0x20:
                return None
            j += 1
        if j >= n or j == k + 1:
            return None
        try:
            return str(bytes(b[k + 1 : j]), "utf-8")
        except UnicodeError:
            return None
    j = k
    while j < n and 0x30 <= b[j] <= 0x39:
        j += 1
    if j == k or j - k > 9 or j >= n or b[j] not in b" \t\r\n,}":
        return None  # no digits, absurdly long, or cut off / followed by something (e.g. 1.5) we cannot trust
    return int(bytes(b[k:j]))


class _Cut:
    # a transport.Truncated stand-in (this module does not import the transport): parsed as too large
    def __init__(self, head):
        self.head = head

    def __len__(self):
        return 1 << 30


def refused(profile, topic, payload, fault, reason):
    """The CloudMessageError for an error reply to a message that is not processed (``fault``: BUSY), built
    without parsing it: only its id is scanned from its first bytes. None when no reply can be addressed."""
    try:
        profile.parse(topic, _Cut(payload.head if is_cut(payload) else payload))
    except CloudMessageError as e:
        if e.reply_topic is None:
            return None
        e.fault = fault
        e.reason = reason
        e.args = (reason,)
        if e.code is not None:
            e.code = profile.FAIL
        return e
    return None
