# EnOS profile (lib/cellmqtt/enos.py) on both ports: clouds.md vectors E1-E5, securemode 2/3 and sign methods,
# a build without SHA-1, dynamic activation, the downstream dispatch order, reply codes, and every
# malformed-message path ending in a typed error (plus an error reply where the id is known).
import json

from cellmqtt import cloudsign as cs
from cellmqtt import enos
from cellmqtt.cloudsign import (
    CloudMessageError,
    CloudValueError,
    Command,
    HashUnavailable,
)
from cellmqtt.enos import EnOS

E1 = ("123456", "test", "654321", 1548753362502)
E1_SHA256 = "B99032D49C706F7B27B22AB5CD2DD3C56A31E1BCBBC83BA0A2A6BB3272FBB166"
E1_SHA1 = "53D00561032C47B8555B768A08FDE176A6F0D267"
E2 = ("123", "test", "123", 1524448722000)
E5_HMAC_SHA1 = "4ED8173DEEEE6E8117757E087F3EB448D8ABE78C"
SYS = "/sys/pk1/dk1/thing/"
ACT = "/ext/session/pk1/dk1/thing/activate/info"
NEW_SECRET = "Qm7vR2xT9kLp4Wz8"


def raises(exc_type, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc_type as e:
        return e
    raise AssertionError("%s not raised by %s%r" % (exc_type.__name__, getattr(fn, "__name__", fn), args))


def request(msg_id="1", method=None, params=None, drop=()):
    msg = {"id": msg_id, "version": "1.0", "method": method, "params": params}
    for k in drop:
        del msg[k]
    return json.dumps(msg).encode()


def activation(secret=NEW_SECRET, msg_id="1", **over):
    params = {"assetId": "12344", "productKey": "pk1", "deviceKey": "dk1", "deviceSecret": secret}
    for k, v in over.items():
        if v is None:
            del params[k]
        else:
            params[k] = v
    return request(msg_id, "thing.activate.info", params)


# ---- credentials and clouds.md vectors --------------------------------------------------------------------


def test_e1_doc_example_sha256_upper_and_lower():
    client_id, username, password = enos.credentials(*E1, secret="abcdefg")
    assert client_id == "123456|securemode=2,signmethod=sha256,timestamp=1548753362502|"
    assert " " not in client_id
    assert username == "test&654321"
    assert password == E1_SHA256
    assert enos.credentials(*E1, secret="abcdefg", upper=False)[2] == E1_SHA256.lower()


def test_e1_sha1():
    client_id, _, password = enos.credentials(*E1, secret="abcdefg", signmethod="sha1")
    assert client_id == "123456|securemode=2,signmethod=sha1,timestamp=1548753362502|"
    assert password == E1_SHA1


def test_e1_content_is_the_documented_string():
    # docs: toUpperCase(sha256(clientId123456deviceKeytestproductKey654321timestamp1548753362502abcdefg))
    content = b"clientId123456deviceKeytestproductKey654321timestamp1548753362502abcdefg"
    assert cs.hexstr(cs.hash_fn("sha256")(content).digest(), True) == E1_SHA256


def test_e2_dynamic_product_secret():
    client_id, username, password = enos.credentials(*E2, secret="abcdefg", securemode=3)
    assert client_id == "123|securemode=3,signmethod=sha256,timestamp=1524448722000|"
    assert username == "test&123"
    assert password == "A4F9AD91051E3CA89440E0157029DD358C3A2C556D3C543B9FD5A38484785AC9"


def test_e3_e4_sha1_vectors():
    assert enos.credentials(*E2, secret="deviceSecretxxx", securemode=3, signmethod="sha1")[2] == \
        "DCF3F4B8D77D78B6598BDCC65A0A65C8BB3C1B08"
    assert enos.credentials(*E2, secret="aaabbbcc123", securemode=3, signmethod="sha1")[2] == \
        "97AA97335D6EC3D7E1F9E3119501E399CC0B4125"


def test_e5_is_not_an_hmac():
    for method in ("sha1", "hmacsha1", "SHA1"):
        try:
            password = enos.credentials(*E1, secret="abcdefg", signmethod=method)[2]
        except CloudValueError:
            continue  # the alias is refused: nothing is produced
        assert password.upper() != E5_HMAC_SHA1
    assert enos.credentials(*E1, secret="abcdefg", signmethod="sha1")[2] == E1_SHA1


def test_timestamp_as_int_or_digits_and_secret_as_bytes():
    assert enos.credentials("123456", "test", "654321", "1548753362502", b"abcdefg")[2] == E1_SHA256
    for ts in (-1, "-1", "", "12a", 1.5, None, "1" * 20, "\uff11\uff12"):
        raises(CloudValueError, enos.credentials, "c", "d", "p", ts, "s")


def test_bad_keys_and_modes_are_refused():
    good = ("c", "d", "p", 1, "s")
    for i, bad in ((0, "a|b"), (0, 'a"b'), (0, "x" * 65), (0, ""), (1, "a&b"), (1, "a/b"), (1, "a,b"), (2, "a=b"),
                   (2, "a b"), (2, None), (4, ""), (4, None)):
        args = list(good)
        args[i] = bad
        raises(CloudValueError, enos.credentials, *args)
    for mode in (1, 4, "2", None):
        raises(CloudValueError, enos.credentials, *good, securemode=mode)


def test_signmethod_names():
    assert enos.credentials(*E1, secret="abcdefg", signmethod="SHA256")[2] == E1_SHA256
    for alias in ("hmacsha1", "hmacsha256"):
        e = raises(CloudValueError, enos.credentials, *E1, secret="abcdefg", signmethod=alias)
        assert "plain hash" in str(e) and alias[4:] in str(e)
    for bad in ("md5", "sha512", "", None, 256):
        raises(CloudValueError, EnOS, "pk1", "dk1", "s", signmethod=bad)


class _HashlibWithoutSha1:
    """hashlib of an STM32 build without SSL: SHA-256 only (a fake below the layer under test)."""

    def __init__(self, real):
        self.sha256 = real.sha256


def test_missing_hash_is_a_clear_error():
    real = cs.hashlib
    cs.hashlib = _HashlibWithoutSha1(real)
    try:
        e = raises(HashUnavailable, EnOS, "pk1", "dk1", device_secret="abcdefg", signmethod="sha1")
        assert e.name == "sha1" and "sha1" in str(e) and "not available" in str(e)
        e = raises(HashUnavailable, enos.credentials, *E1, secret="abcdefg", signmethod="sha1")
        assert "abcdefg" not in str(e)
        # SHA-256 still works on that build
        assert enos.credentials(*E1, secret="abcdefg")[2] == E1_SHA256
        assert EnOS("pk1", "dk1", device_secret="abcdefg").credentials(1)[2]
    finally:
        cs.hashlib = real
    assert enos.credentials(*E1, secret="abcdefg", signmethod="sha1")[2] == E1_SHA1


def test_profile_picks_securemode_from_the_secret_it_has():
    p = EnOS("654321", "test", device_secret="abcdefg", client_id="123456")
    assert p.securemode == 2
    client_id, username, password = p.credentials(1548753362)
    assert client_id == "123456|securemode=2,signmethod=sha256,timestamp=1548753362000|"
    assert (username, password) == enos.credentials("123456", "test", "654321", 1548753362000, "abcdefg")[1:]
    p3 = EnOS("654321", "test", product_secret="prodsecret")
    assert p3.securemode == 3
    assert p3.credentials(1548753362) == enos.credentials("test", "test", "654321", 1548753362000, "prodsecret", 3)
    assert EnOS("pk1", "dk1", device_secret="d", product_secret="p").securemode == 2
    raises(CloudValueError, EnOS, "pk1", "dk1")
    raises(CloudValueError, EnOS, "pk1", "x" * 65)  # the device key is the default client id (<= 64)
    assert EnOS("pk1", "x" * 65, "s", client_id="short").client_id == "short"
    low = EnOS("654321", "test", "abcdefg", client_id="123456", upper=False, signmethod="sha1")
    assert low.credentials(1)[2] == enos.credentials("123456", "test", "654321", 1000, "abcdefg", 2, "sha1",
                                                     False)[2]
    assert low.credentials(1)[2] == low.credentials(1)[2].lower()
    raises(CloudValueError, p.credentials, -1)
    raises(CloudValueError, EnOS, "pk1", "dk1", "s", max_payload=0)


def test_secrets_never_in_repr():
    p = EnOS("pk1", "dk1", device_secret="Dev-Secret-42", product_secret="Prod-Secret-42")
    for s in ("Dev-Secret-42", "Prod-Secret-42"):
        assert s not in repr(p) and s not in str(p)
    assert "securemode=2" in repr(p)


# ---- dynamic activation -----------------------------------------------------------------------------------


def test_activation_flow():
    p = EnOS("pk1", "dk1", product_secret="prodsecret")
    assert (ACT, 1) in p.subscriptions()
    cmd = p.parse(ACT, activation())
    assert type(cmd) is Command
    assert (cmd.kind, cmd.id, cmd.name) == ("activate", "1", "thing.activate.info")
    assert cmd.secret == NEW_SECRET
    assert cmd.params == {"assetId": "12344", "productKey": "pk1", "deviceKey": "dk1"}  # secret taken out
    assert NEW_SECRET not in repr(cmd) and NEW_SECRET not in str(cmd.params)
    topic, payload = p.reply(cmd)
    assert topic == ACT + "_reply"
    assert json.loads(payload) == {"id": "1", "code": 200}
    raises(CloudValueError, p.reply, cmd, 200, {"x": 1})
    # the app persists cmd.secret, then reconnects with securemode 2
    p2 = p.with_secret(cmd.secret)
    assert p2.securemode == 2 and p2.client_id == p.client_id and p2.signmethod == p.signmethod
    assert p2.credentials(1700000000) == enos.credentials("dk1", "dk1", "pk1", 1700000000000, NEW_SECRET, 2)
    assert (ACT, 1) not in p2.subscriptions()
    assert NEW_SECRET not in repr(p2)
    assert p.with_secret(NEW_SECRET.encode()).credentials(5) == p2.credentials(5)  # as read back from storage


BAD_SECRETS = ["", "abc", 'Zq"7Yx9W', "Zq'7Yx9W", "Zq\\7Yx9W", "Zq\r\n7Yx9W", "Zq 7Yx9W", "Z" * 129, "s\u00e9cretZq7",
               "Zq\x007Yx9W", 12345678, None, ["Zq7Yx9W1"], {"a": 1}]


def test_activation_with_an_invalid_secret_is_refused_with_a_reply():
    p = EnOS("pk1", "dk1", product_secret="prodsecret")
    for secret in BAD_SECRETS:
        payload = activation(secret, msg_id="41") if secret is not None else activation(msg_id="41", deviceSecret=None)
        e = raises(CloudMessageError, p.parse, ACT, payload)
        assert (e.fault, e.code, e.kind, e.msg_id) == (cs.BAD_FIELD, 1220, "activate", "41"), repr(secret)
        topic, body = p.error_reply(e)
        assert topic == ACT + "_reply"
        reply = json.loads(body)
        assert reply["id"] == "41" and reply["code"] == 1220 and reply["message"]
        if type(secret) is str and len(secret) > 3:
            for text in (str(e), repr(e), repr(e.args), body.decode()):
                assert secret not in text, repr(secret)
        raises(CloudValueError, p.with_secret, secret)


def test_activation_malformed():
    p = EnOS("pk1", "dk1", product_secret="prodsecret")
    cases = [  # (payload, fault, code, error reply id or None)
        (activation(productKey="pk2"), cs.BAD_FIELD, 1220, "1"),
        (activation(deviceKey="dk2"), cs.BAD_FIELD, 1220, "1"),
        (request("3", "thing.activate.infoX", {"deviceSecret": NEW_SECRET}), cs.MISMATCH, 1260, "3"),
        (request("3", "thing.activate.info", [1]), cs.BAD_FIELD, 1220, "3"),
        (request("3", "thing.activate.info", None), cs.BAD_FIELD, 1220, "3"),
        (request(None, "thing.activate.info", {"deviceSecret": NEW_SECRET}), cs.BAD_FIELD, 1220, None),
        (b'{"id":"8","params":{"deviceSecret":"' + NEW_SECRET.encode() + b'"', cs.BAD_JSON, 1220, "8"),
        (b"", cs.EMPTY, 1251, None),
    ]
    for payload, fault, code, rid in cases:
        e = raises(CloudMessageError, p.parse, ACT, payload)
        assert (e.fault, e.code) == (fault, code), payload[:50]
        assert NEW_SECRET not in str(e)
        r = p.error_reply(e)
        if rid is None:
            assert r is None
        else:
            assert json.loads(r[1])["id"] == rid and json.loads(r[1])["code"] == code
    # missing params keys other than the secret are fine
    assert p.parse(ACT, activation(productKey=None, deviceKey=None, assetId=None)).secret == NEW_SECRET
    # another device's activation topic is refused and never answered
    e = raises(CloudMessageError, p.parse, "/ext/session/pk1/dk2/thing/activate/info", activation())
    assert (e.fault, e.code) == (cs.FOREIGN, 1009) and p.error_reply(e) is None
    # seed 002's pre-2019 spelling "activated" is not the activation topic
    e = raises(CloudMessageError, p.parse, "/ext/session/pk1/dk1/thing/activated/info", activation())
    assert e.fault == cs.UNKNOWN and p.error_reply(e) is None


# ---- downstream dispatch and replies ----------------------------------------------------------------------


def test_dispatch_order_keeps_measurepoint_set_get_apart_from_services():
    p = EnOS("pk1", "dk1", "devsecret")
    cmd = p.parse(SYS + "service/measurepoint/set", request("11", "thing.service.measurepoint.set", {"temp": 30.5}))
    assert (cmd.kind, cmd.id, cmd.name, cmd.params) == ("measurepoint_set", "11", "thing.service.measurepoint.set",
                                                        {"temp": 30.5})
    assert cmd.reply_topic == SYS + "service/measurepoint/set_reply"
    cmd = p.parse(SYS + "service/measurepoint/get", request("12", "thing.service.measurepoint.get", ["temp"]))
    assert (cmd.kind, cmd.params) == ("measurepoint_get", ["temp"])
    assert cmd.reply_topic == SYS + "service/measurepoint/get_reply"
    cmd = p.parse(SYS + "service/reboot", request("13", "thing.service.reboot", {"delay": 3}))
    assert (cmd.kind, cmd.name, cmd.params) == ("service", "reboot", {"delay": 3})
    assert cmd.reply_topic == SYS + "service/reboot_reply"
    # a service whose id merely starts like a measure-point topic is still a service
    cmd = p.parse(SYS + "service/measurepoint", request("14", "thing.service.measurepoint"))
    assert (cmd.kind, cmd.name, cmd.params) == ("service", "measurepoint", {})
    # method may be omitted; version 1.1 (the SDKs') is fine
    cmd = p.parse(SYS + "service/measurepoint/set", b'{"id":"15","version":"1.1","params":{"a":1}}')
    assert cmd.kind == "measurepoint_set"
    assert p.parse(SYS + "service/measurepoint/get", b'{"id":"16"}').params == []  # no names: all points
    assert p.parse(SYS + "service/x", b'{"id":17}').id == 17  # numeric ids are echoed as sent


def test_replies():
    p = EnOS("pk1", "dk1", "devsecret")
    cmd = p.parse(SYS + "service/measurepoint/get", request("12", "thing.service.measurepoint.get", ["temp"]))
    topic, payload = p.reply(cmd, body={"temp": 21.5})
    assert topic == SYS + "service/measurepoint/get_reply"
    assert json.loads(payload) == {"id": "12", "code": 200, "data": {"temp": 21.5}}
    cmd = p.parse(SYS + "service/measurepoint/set", request("11", None, {"temp": 30.5}, drop=("method",)))
    assert json.loads(p.reply(cmd)[1]) == {"id": "11", "code": 200, "data": {}}
    assert json.loads(p.reply(cmd, enos.METHOD_MISMATCH)[1])["code"] == 1260
    raises(CloudValueError, p.reply, cmd, "200")
    raises(CloudValueError, p.reply, cmd, 200, [1])
    raises(CloudValueError, p.reply, cmd, 200, {"a": float("nan")})
    raises(CloudValueError, p.reply, None)
    assert EnOS.REPLY_QOS == 0 and EnOS.TELEMETRY_QOS == 1 and EnOS.OK == 200


def test_malformed_requests_and_reply_codes():
    p = EnOS("pk1", "dk1", "devsecret")
    set_t = SYS + "service/measurepoint/set"
    big = b'{"id":"20","method":"thing.service.measurepoint.set","params":{"blob":"' + b"x" * 3000 + b'"}}'
    cases = [  # (topic, payload, fault, code, id of the error reply or None)
        (set_t, b"", cs.EMPTY, 1251, None),
        (set_t, request("21", "thing.service.measurepoint.set", {}), cs.EMPTY, 1251, "21"),
        (set_t, request("21", "thing.service.measurepoint.set", None), cs.EMPTY, 1251, "21"),
        (set_t, request("22", "thing.service.measurepoint.set", [1]), cs.BAD_FIELD, 1220, "22"),
        (set_t, request("23", "thing.service.reboot", {"a": 1}), cs.MISMATCH, 1260, "23"),
        (set_t, request("23", "thing.service.measurepoint.get", {"a": 1}), cs.MISMATCH, 1260, "23"),
        (set_t, big, cs.TOO_LARGE, 1008, "20"),
        (set_t, b'{"id":"24","params":{"a":', cs.BAD_JSON, 1220, "24"),
        (set_t, b'{"id":"25","params":{"a":"\xff"}}', cs.NOT_UTF8, 1220, "25"),
        (set_t, b'{"id":25,"params":', cs.BAD_JSON, 1220, 25),
        (set_t, b'{"params":{"id":"26"},"x":', cs.BAD_JSON, 1220, None),  # nested id only
        (set_t, b'{"id":"a\\"b","params":', cs.BAD_JSON, 1220, None),  # escaped id: not recovered
        (set_t, b'"just a string"', cs.BAD_JSON, 1220, None),
        (set_t, b"[]", cs.BAD_JSON, 1220, None),
        (set_t, request(None, None, {"a": 1}), cs.BAD_FIELD, 1220, None),
        (set_t, request("", None, {"a": 1}), cs.BAD_FIELD, 1220, None),
        (set_t, request("x" * 65, None, {"a": 1}), cs.BAD_FIELD, 1220, None),
        (set_t, request(True, None, {"a": 1}), cs.BAD_FIELD, 1220, None),
        (set_t, request(-1, None, {"a": 1}), cs.BAD_FIELD, 1220, None),
        (set_t, request({"a": 1}, None, {"a": 1}), cs.BAD_FIELD, 1220, None),
        (SYS + "service/measurepoint/get", request("27", None, {"temp": 1}), cs.BAD_FIELD, 1220, "27"),
        (SYS + "service/measurepoint/get", request("27", None, ["temp", 5]), cs.BAD_FIELD, 1220, "27"),
        (SYS + "service/measurepoint/get", request("27", None, [""]), cs.BAD_FIELD, 1220, "27"),
        (SYS + "service/reboot", request("28", None, [1]), cs.BAD_FIELD, 1220, "28"),
        (SYS + "service/reboot", request("28", None, "x"), cs.BAD_FIELD, 1220, "28"),
        (SYS + "service/", request("29", None, {}), cs.BAD_FIELD, None, None),  # no service id
        (SYS + "service/a+b", request("29", None, {}), cs.BAD_FIELD, None, None),
        (SYS + "service/a/b", request("29", None, {}), cs.BAD_FIELD, None, None),
        (SYS + "foo", request("30", None, {}), cs.UNKNOWN, None, None),
        ("/sys/pk2/dk1/thing/service/measurepoint/set", request("31", None, {"a": 1}), cs.FOREIGN, 1009, None),
        ("/sys/pk1/dk11/thing/service/measurepoint/set", request("31", None, {"a": 1}), cs.FOREIGN, 1009, None),
        ("/other/topic", request("32", None, {}), cs.UNKNOWN, None, None),
        (b"/sys/pk1/dk1/thing/service/\xfe", request("33", None, {}), cs.NOT_UTF8, None, None),
    ]
    for topic, payload, fault, code, rid in cases:
        e = raises(CloudMessageError, p.parse, topic, payload)
        assert (e.fault, e.code) == (fault, code), (topic, payload[:40], e.fault, e.code)
        r = p.error_reply(e)
        if rid is None:
            assert r is None, (topic, payload[:40])
        else:
            assert r[0] == (topic if type(topic) is str else topic.decode()) + "_reply"
            reply = json.loads(r[1])
            assert reply["id"] == rid and reply["code"] == code and reply["message"] == e.reason, reply
    e = raises(CloudMessageError, EnOS("pk1", "dk1", "s", max_payload=100).parse, set_t,
               request("40", None, {"a": "b" * 100}))
    assert (e.fault, e.code, e.msg_id) == (cs.TOO_LARGE, 1008, "40")


def test_cloud_replies_to_our_posts():
    p = EnOS("pk1", "dk1", "devsecret")
    cmd = p.parse(SYS + "measurepoint/post_reply", b'{"id":"5","code":200,"data":{}}')
    assert (cmd.kind, cmd.id, cmd.code, cmd.name, cmd.reply_topic) == ("reply", "5", 200, "measurepoint/post", None)
    raises(CloudValueError, p.reply, cmd)
    cmd = p.parse(SYS + "event/alarm/post_reply", b'{"id":"6","code":1204,"message":"Model validate failed"}')
    assert (cmd.code, cmd.name) == (1204, "event/alarm/post")
    for payload in (b'{"id":"5"}', b'{"id":"5","code":"200"}', b"{", b""):
        e = raises(CloudMessageError, p.parse, SYS + "measurepoint/post_reply", payload)
        assert e.kind == "reply" and p.error_reply(e) is None  # a reply is never answered


# ---- upstream ---------------------------------------------------------------------------------------------


def test_subscriptions():
    p = EnOS("pk1", "dk1", "devsecret")
    # post_reply too: the broker answers a post only to a device subscribed to the reply (docs/clouds.md)
    assert p.subscriptions() == [(SYS + "service/measurepoint/set", 1), (SYS + "service/measurepoint/get", 1),
                                 (SYS + "measurepoint/post_reply", 1)]
    assert EnOS.SUBSCRIBE_REQUIRED is False


def test_measurepoint_post():
    p = EnOS("pk1", "dk1", "devsecret")
    topic, payload = p.telemetry({"temp": 1.02, "on": True}, unix_s=1700000000, sample_id="s-1")
    assert topic == SYS + "measurepoint/post"
    assert type(payload) is bytes
    assert json.loads(payload) == {"id": "s-1", "version": "1.0", "method": "thing.measurepoint.post",
                                   "params": {"measurepoints": {"temp": 1.02, "on": True}, "time": 1700000000000}}
    assert json.loads(p.telemetry({"temp": 1}, sample_id=7)[1])["id"] == "7"
    ids = [json.loads(p.telemetry({"temp": 1})[1])["id"] for _ in range(3)]
    assert len(set(ids)) == 3  # a fresh id per message when the app gives none
    assert "time" not in json.loads(p.telemetry({"temp": 1})[1])["params"]  # server time
    for bad in ({}, None, [1], {"t": float("nan")}, {1: 1}, {"t": b"x"}):
        raises(CloudValueError, p.telemetry, bad)
    raises(CloudValueError, p.telemetry, {"t": 1}, service_id="S")
    raises(CloudValueError, p.telemetry, {"t": 1}, sample_id="a b")
    raises(CloudValueError, p.telemetry, {"t": 1}, unix_s="now")


def test_batch_and_event():
    p = EnOS("pk1", "dk1", "devsecret")
    topic, payload = p.telemetry_batch([({"temp": 1}, 1700000000), ({"temp": 2}, None)], sample_id="b1")
    assert topic == SYS + "measurepoint/post/batch"
    assert json.loads(payload) == {"id": "b1", "version": "1.0", "method": "thing.measurepoint.post.batch",
                                   "params": [{"measurepoints": {"temp": 1}, "time": 1700000000000},
                                              {"measurepoints": {"temp": 2}}]}
    for bad in ([], None, [({"t": 1},)], [({}, None)], [{"t": 1}]):
        raises(CloudValueError, p.telemetry_batch, bad)
    topic, payload = p.event("overheat", {"temp": 99.5}, 1700000000, "e1")
    assert topic == SYS + "event/overheat/post"
    assert json.loads(payload) == {"id": "e1", "version": "1.0", "method": "thing.event.overheat.post",
                                   "params": {"events": {"temp": 99.5}, "time": 1700000000000}}
    for bad_id in ("", "a/b", "a+b", "#", 'a"', None):
        raises(CloudValueError, p.event, bad_id, {"temp": 1})
