"""The clouds' CONNECT credential rules, written for the twin from shared/reference/clouds.md (sections 1.1, 2.1).

Independent of the firmware on purpose: nothing here imports ``lib/``, so a bug in the device's credential code
cannot be mirrored by the twin that is supposed to catch it. Pure functions over str; no I/O, no clock reads
(the caller passes the twin's time in).

Every check returns a ``Refusal`` (CONNACK code + reason) or ``None``. Reasons never contain a secret or a
password: they say *which* rule failed, not the values that would let someone recompute a credential.
"""

import datetime
import hashlib
import hmac
import re

# MQTT 3.1.1 CONNACK return codes (section 3.2.2.3)
ACCEPTED = 0
IDENTIFIER_REJECTED = 2
SERVER_UNAVAILABLE = 3
BAD_CREDENTIALS = 4
NOT_AUTHORIZED = 5


class Refusal:
    """Why a CONNECT is refused: ``code`` goes into the CONNACK, ``reason`` into the twin's connection log."""

    __slots__ = ("code", "reason")

    def __init__(self, code, reason):
        self.code = code
        self.reason = reason

    def __repr__(self):
        return "Refusal(%d, %r)" % (self.code, self.reason)


# ---- Huawei (clouds.md 1.1) ------------------------------------------------------------------------------

HUAWEI_KEEPALIVE = (30, 1200)  # clouds.md 1.4; Huawei answers 0x02 for a keep-alive it does not accept
_HOUR_RE = re.compile(r"^[0-9]{10}$")


class HuaweiClientId:
    __slots__ = ("device_id", "hour", "id_type", "sig_type")

    def __init__(self, device_id, id_type, sig_type, hour):
        self.device_id = device_id
        self.id_type = id_type
        self.sig_type = sig_type
        self.hour = hour


def parse_huawei_client_id(client_id, id_types=("0",)):
    """``{id}_{idType}_{sigType}_{YYYYMMDDHH}`` -> HuaweiClientId, or a Refusal (code 2).

    The device id may itself contain ``_`` (e.g. ``6203cc94c7fb24029b110408_88888888``), so the three fixed
    fields are split off from the right. ``id_types``: what the platform accepts -- legacy "0" (deviceId) and
    "2" (nodeId) (legacy "MQTT Connection Authentication Through CONNECT Messages", iot_06_3009; "1" is the
    product-secret mode, not emulated); IoTDA "0" only ("fixed at 0", iot_06_v5_3009).
    """
    parts = client_id.rsplit("_", 3)
    if len(parts) != 4 or not parts[0]:
        return Refusal(IDENTIFIER_REJECTED, "client id is not {id}_{idType}_{sigType}_{YYYYMMDDHH}")
    device_id, id_type, sig_type, hour = parts
    if id_type not in id_types:
        return Refusal(IDENTIFIER_REJECTED, "idType %r not accepted (only %s)" % (id_type, ", ".join(id_types)))
    if sig_type not in ("0", "1"):
        return Refusal(IDENTIFIER_REJECTED, "sigType %r is not 0 or 1" % sig_type)
    if not _HOUR_RE.match(hour):
        return Refusal(IDENTIFIER_REJECTED, "timestamp %r is not 10 digits YYYYMMDDHH" % hour)
    return HuaweiClientId(device_id, id_type, int(sig_type), hour)


def huawei_password(secret, hour):
    """Lower-case hex HMAC-SHA256 with key = the YYYYMMDDHH string, message = the device secret."""
    return hmac.new(hour.encode(), secret.encode(), hashlib.sha256).hexdigest()


def huawei_hour_start(hour):
    """'2023111422' -> aware UTC datetime of that hour, or None if it is not a real hour."""
    try:
        return datetime.datetime.strptime(hour, "%Y%m%d%H").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def huawei_hour_of(now):
    """The UTC YYYYMMDDHH string of an aware datetime."""
    return now.astimezone(datetime.UTC).strftime("%Y%m%d%H")


def check_huawei_hour(hour, now, tolerance_s):
    """sigType 1: the client id's hour must be the twin's UTC hour ("checks whether the message timestamp is
    consistent with the platform time", iot_06_v5_3009), give or take ``tolerance_s`` at each edge (0 by
    default: no source documents a tolerance).

    Accepted when ``start - tolerance <= now < start + 1 h + tolerance``.
    """
    start = huawei_hour_start(hour)
    if start is None:
        return Refusal(IDENTIFIER_REJECTED, "timestamp %r is not a valid UTC hour" % hour)
    tol = datetime.timedelta(seconds=tolerance_s)
    if not (start - tol <= now < start + datetime.timedelta(hours=1) + tol):
        return Refusal(BAD_CREDENTIALS, "sigType 1 hour %s is not the twin's UTC hour %s (tolerance %ds)"
                       % (hour, huawei_hour_of(now), tolerance_s))
    return None


def check_huawei_password(secret, hour, password):
    if password is None or password == "":
        return Refusal(BAD_CREDENTIALS, "no password")
    if not hmac.compare_digest(huawei_password(secret, hour), password):
        return Refusal(BAD_CREDENTIALS, "password is not lower-hex HMAC-SHA256(key=timestamp, msg=secret)")
    return None


# ---- EnOS (clouds.md 2.1) --------------------------------------------------------------------------------

ENOS_KEEPALIVE = (60, 300)  # clouds.md 2.4
ENOS_CID_MAX = 64
# signmethod strings the platform accepts, mapped to the plain hash behind them (the "hmac" names are aliases)
ENOS_SIGNMETHODS = {"sha256": "sha256", "hmacsha256": "sha256", "sha1": "sha1", "hmacsha1": "sha1", "md5": "md5"}


class EnosClientId:
    __slots__ = ("cid", "securemode", "signmethod", "timestamp")

    def __init__(self, cid, securemode, signmethod, timestamp):
        self.cid = cid
        self.securemode = securemode
        self.signmethod = signmethod
        self.timestamp = timestamp


def parse_enos_client_id(client_id):
    """``{cid}|securemode=2|3,signmethod=...,timestamp=...|`` -> EnosClientId, or a Refusal (code 2).

    Strict on what the SDKs all agree on: no spaces, exactly the three parameters (any order), a trailing
    ``|``, a cid of 1..64 characters.
    """
    if " " in client_id:
        return Refusal(IDENTIFIER_REJECTED, "client id contains a space")
    cid, bar, rest = client_id.partition("|")
    if not bar or not rest.endswith("|") or "|" in rest[:-1]:
        return Refusal(IDENTIFIER_REJECTED, "client id is not {cid}|params|")
    if not cid or len(cid) > ENOS_CID_MAX:
        return Refusal(IDENTIFIER_REJECTED, "cid must be 1..%d characters" % ENOS_CID_MAX)
    params = {}
    for item in rest[:-1].split(","):
        name, eq, value = item.partition("=")
        if not eq or not name or not value or name in params:
            return Refusal(IDENTIFIER_REJECTED, "client id parameter %r is not name=value" % item)
        params[name] = value
    if set(params) != {"securemode", "signmethod", "timestamp"}:
        return Refusal(IDENTIFIER_REJECTED, "client id parameters must be securemode, signmethod, timestamp; got %s"
                       % ",".join(sorted(params)))
    if params["securemode"] not in ("2", "3"):
        return Refusal(IDENTIFIER_REJECTED, "securemode %r is not 2 or 3" % params["securemode"])
    if params["signmethod"] not in ENOS_SIGNMETHODS:
        return Refusal(IDENTIFIER_REJECTED, "signmethod %r not accepted" % params["signmethod"])
    return EnosClientId(cid, int(params["securemode"]), params["signmethod"], params["timestamp"])


def parse_enos_username(username):
    """``{deviceKey}&{productKey}`` -> (dk, pk), or a Refusal (code 4)."""
    if not username:
        return Refusal(BAD_CREDENTIALS, "no username")
    parts = username.split("&")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return Refusal(BAD_CREDENTIALS, "username is not {deviceKey}&{productKey}")
    return parts[0], parts[1]


def enos_sign_content(cid, device_key, product_key, timestamp):
    """The signed text: parameter names sorted (byte order), each followed by its value, no separators."""
    fields = {"clientId": cid, "deviceKey": device_key, "productKey": product_key, "timestamp": timestamp}
    return "".join(name + fields[name] for name in sorted(fields))


def enos_password(cid, device_key, product_key, timestamp, secret, signmethod):
    """Upper-case hex of the plain hash (no HMAC key) of content + secret."""
    algo = ENOS_SIGNMETHODS[signmethod]
    text = enos_sign_content(cid, device_key, product_key, timestamp) + secret
    return hashlib.new(algo, text.encode()).hexdigest().upper()


def check_enos_password(parsed, device_key, product_key, secret, password, secret_name):
    if password is None or password == "":
        return Refusal(BAD_CREDENTIALS, "no password")
    want = enos_password(parsed.cid, device_key, product_key, parsed.timestamp, secret, parsed.signmethod)
    # either hex case is accepted (clouds.md 2.1: SDKs differ, the server evidently takes both)
    if not hmac.compare_digest(want, password.upper()):
        return Refusal(BAD_CREDENTIALS, "password is not hex %s(content + %s) for securemode %d"
                       % (ENOS_SIGNMETHODS[parsed.signmethod], secret_name, parsed.securemode))
    return None


def check_keepalive(keepalive, bounds, cloud):
    if keepalive is None:
        return None  # not known (a refusal mosquitto logged without details)
    lo, hi = bounds
    if not lo <= keepalive <= hi:
        return Refusal(IDENTIFIER_REJECTED, "keep-alive %ds outside %s's %d..%d s" % (keepalive, cloud, lo, hi))
    return None
