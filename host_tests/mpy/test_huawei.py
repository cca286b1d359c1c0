# Huawei profile and the shared crypto/time core (lib/cellmqtt/huawei.py, cloudsign.py) on both ports:
# clouds.md vectors H1-H3, RFC 4231 HMAC vectors, UTC civil time, legacy and IoTDA topics/envelopes, and
# every malformed-message path ending in a typed error (plus an error reply where the protocol has one).
import json

from cellmqtt import cloudsign as cs
from cellmqtt import huawei
from cellmqtt.cloudsign import CloudMessageError, CloudValueError, Command
from cellmqtt.huawei import Huawei

H_ID = "6203cc94c7fb24029b110408_88888888"
H_SECRET = "123456789"
H1_PASSWORD = "5888ea6f4631ce76d621f452e8823507c36dd68a61f6e08518c8935e280c3c72"
H2_PASSWORD = "e8bd5664f3a3030ce5b44309d1a2bbd2cb6bea628fd2a9a858aec2cbd4de6a69"
H3_SWAPPED = "4535d6c9bbbbf620cc4f52227d54fc9e04719fa793ae12dff47a6fc46c3ca100"
CMD_TOPIC = "/huawei/v1/devices/" + H_ID + "/command/json"
DATA_TOPIC = "/huawei/v1/devices/" + H_ID + "/data/json"
OC = "$oc/devices/" + H_ID + "/sys/"


def raises(exc_type, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc_type as e:
        return e
    raise AssertionError("%s not raised by %s%r" % (exc_type.__name__, getattr(fn, "__name__", fn), args))


def cloud_req(mid=2016, **fields):
    msg = {"msgType": "cloudReq", "serviceId": "Switch", "cmd": "SET", "paras": {"on": 1}, "mid": mid}
    for k, v in fields.items():
        if v is None:
            del msg[k]
        else:
            msg[k] = v
    return json.dumps(msg).encode()


# ---- credentials and clouds.md vectors --------------------------------------------------------------------


def test_h1_published_vector():
    client_id, username, password = huawei.credentials(H_ID, H_SECRET, "2999010100", 0)
    assert client_id == H_ID + "_0_0_2999010100"
    assert username == H_ID
    assert password == H1_PASSWORD


def test_h2_utc_hour_from_unix_time_with_sig_type_1():
    p = Huawei(H_ID, H_SECRET)
    client_id, username, password = p.credentials(1700000000, clock_trusted=True)
    assert client_id == H_ID + "_0_1_2023111422"
    assert username == H_ID
    assert password == H2_PASSWORD
    # a UTC+8 local hour (2023111506) gives 1c05cd54...: the library must not be using it
    wrong = cs.hexstr(cs.hmac_sha256(b"2023111506", H_SECRET.encode()))
    assert wrong.startswith("1c05cd54") and password != wrong


def test_h3_key_and_message_are_not_swapped():
    swapped = cs.hexstr(cs.hmac_sha256(H_SECRET.encode(), b"2999010100"))
    assert swapped == H3_SWAPPED  # the HMAC computes the negative vector only when asked the wrong way round
    assert huawei.credentials(H_ID, H_SECRET, "2999010100")[2] != H3_SWAPPED


def test_secret_may_be_bytes():
    assert huawei.credentials(H_ID, H_SECRET.encode(), "2999010100")[2] == H1_PASSWORD
    assert huawei.credentials(H_ID, bytearray(H_SECRET.encode()), "2999010100")[2] == H1_PASSWORD


RFC4231 = [  # (key, data, HMAC-SHA256) test cases 1, 2, 3, 4, 6, 7 of RFC 4231
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (b"\xaa" * 131, (b"This is a test using a larger than block-size key and a larger than block-size data. The "
                     b"key needs to be hashed before being used by the HMAC algorithm."),
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]


def test_hmac_rfc4231_vectors_both_implementations():
    for key, data, expected in RFC4231:
        assert cs.hexstr(cs.hmac_sha256_hashlib(key, data)) == expected, expected
        assert cs.hexstr(cs.hmac_sha256(key, data)) == expected, expected


def test_hmac_module_is_preferred_when_present():
    try:
        import hmac  # noqa: F401

        expected = "hmac"
    except ImportError:  # the MicroPython unix port has none: the hashlib-only HMAC must be the one in use
        expected = "hashlib"
    assert cs.HMAC_IMPL == expected


def test_hex_case():
    assert cs.hexstr(b"\xab\x01") == "ab01"
    assert cs.hexstr(b"\xab\x01", upper=True) == "AB01"


def test_credentials_compute_the_hour_once_and_use_it_in_both_fields():
    p = Huawei(H_ID, H_SECRET)
    for unix_s in (1700002799, 1700002800):  # 22:59:59 and 23:00:00 UTC
        client_id, _, password = p.credentials(unix_s)
        hour = client_id.rpartition("_")[2]
        assert hour == cs.utc_hour(unix_s)
        assert password == cs.hexstr(cs.hmac_sha256(hour.encode(), H_SECRET.encode()))
    assert p.credentials(1700002799)[0].endswith("_2023111422")
    assert p.credentials(1700002800)[0].endswith("_2023111423")


def test_sig_type_follows_clock_trust():
    p = Huawei(H_ID, H_SECRET)
    assert p.credentials(1700000000, False)[0] == H_ID + "_0_0_2023111422"
    assert p.credentials(1700000000)[0] == H_ID + "_0_0_2023111422"
    assert p.credentials(1700000000, True)[0] == H_ID + "_0_1_2023111422"
    # the HMAC does not depend on sigType
    assert p.credentials(1700000000, True)[2] == p.credentials(1700000000, False)[2] == H2_PASSWORD


def test_id_type_2_node_id():
    p = Huawei("861234567890123", H_SECRET, id_type=2)
    assert p.credentials(1700000000)[0] == "861234567890123_2_0_2023111422"
    assert huawei.credentials(H_ID, H_SECRET, "2999010100", 1, 2)[0] == H_ID + "_2_1_2999010100"


def test_bad_configuration_is_refused():
    for bad_id in ("", "a b", 'a"b', "a/b", "a+b", "a#b", "x" * 129, 123, None, "caf\u00e9", "a\r\nb"):
        raises(CloudValueError, Huawei, bad_id, H_SECRET)
    for bad_secret in ("", None, 5, b""):
        raises(CloudValueError, Huawei, H_ID, bad_secret)
    for id_type in (1, 3, "0", -1):
        raises(CloudValueError, Huawei, H_ID, H_SECRET, id_type=id_type)
    raises(CloudValueError, Huawei, H_ID, H_SECRET, api="mqtt5")
    raises(CloudValueError, Huawei, H_ID, H_SECRET, id_type=2, api="iotda")
    raises(CloudValueError, Huawei, H_ID, H_SECRET, codec="xml")
    raises(CloudValueError, Huawei, H_ID, H_SECRET, api="iotda", codec="binary", binary=Codec())
    raises(CloudValueError, Huawei, H_ID, H_SECRET, codec="binary")  # binary without the product's codec
    raises(CloudValueError, Huawei, H_ID, H_SECRET, max_payload=10)
    raises(CloudValueError, Huawei, H_ID, H_SECRET, service_id="a/b")
    # topics are limited to 128 bytes: /huawei/v1/devices/{id}/command/binary leaves 94 for the id
    assert Huawei("d" * 94, H_SECRET).subscriptions()
    raises(CloudValueError, Huawei, "d" * 95, H_SECRET)
    assert Huawei("d" * 94, H_SECRET, api="iotda").subscriptions()
    raises(CloudValueError, Huawei, "d" * 95, H_SECRET, api="iotda")


def test_bad_hour_and_sig_type_are_refused():
    for hour in ("2023111424", "2023023000", "2023130100", "2023000100", "202311142", "20231114221",
                 "2023111a22", 2023111422, None, "\uff12" + "023111422"):
        raises(CloudValueError, huawei.credentials, H_ID, H_SECRET, hour)
    for sig in (2, -1, "1", True):
        raises(CloudValueError, huawei.credentials, H_ID, H_SECRET, "2999010100", sig)
    assert huawei.credentials(H_ID, H_SECRET, "2024022923")[0].endswith("2024022923")  # leap day is fine


def test_secret_never_in_repr_or_error():
    secret = "Zx9-very-secret-Q7"
    p = Huawei(H_ID, secret)
    assert secret not in repr(p) and secret not in str(p)
    for args in ((H_ID, secret, "99"), ("a b", secret, "2999010100"), (H_ID, secret, "2999010100", 7)):
        e = raises(CloudValueError, huawei.credentials, *args)
        assert secret not in str(e) and secret not in repr(e)


# ---- UTC civil time ---------------------------------------------------------------------------------------

DATES = [  # (unix seconds, YYYYMMDDHH, yyyyMMddTHHmmssZ)
    (0, "1970010100", "19700101T000000Z"),
    (1532454980, "2018072417", "20180724T175620Z"),  # Huawei docs example
    (1482148160, "2016121911", "20161219T114920Z"),  # clouds.md eventTime example
    (951782400, "2000022900", "20000229T000000Z"),  # leap day of a 400-year century
    (4107542400, "2100030100", "21000301T000000Z"),  # 2100 is not a leap year
    (946684799, "1999123123", "19991231T235959Z"),
    (1709208000, "2024022912", "20240229T120000Z"),
    (253402300799, "9999123123", "99991231T235959Z"),
]


def test_utc_hour_and_stamp_known_dates():
    for unix_s, hour, stamp in DATES:
        assert cs.utc_hour(unix_s) == hour, unix_s
        assert cs.utc_stamp(unix_s) == stamp, unix_s


def test_unix_from_civil_inverts_civil():
    for unix_s, _, _ in DATES:
        assert cs.unix_from_civil(*cs.civil(unix_s)) == unix_s
    for bad in ((2023, 2, 29), (2100, 2, 29), (2023, 13, 1), (2023, 4, 31), (1969, 12, 31), (2023, 1, 1, 24),
                (2023, 1, 1, 0, 60), (2023, 1, 1, 0, 0, 60)):
        raises(CloudValueError, cs.unix_from_civil, *bad)
    assert cs.unix_from_civil(2000, 2, 29) == 951782400


def test_time_out_of_range_or_wrong_type():
    for bad in (-1, 253402300800, "1700000000", None, float("nan"), float("inf"), True, [1]):
        raises(CloudValueError, cs.utc_hour, bad)
    raises(CloudValueError, Huawei(H_ID, H_SECRET).credentials, -5)


def test_float_time_is_truncated_to_the_second():
    assert cs.utc_stamp(1700000000.9) == cs.utc_stamp(1700000000)


# ---- legacy topics and messages ---------------------------------------------------------------------------


def test_legacy_subscriptions():
    assert Huawei(H_ID, H_SECRET).subscriptions() == [(CMD_TOPIC, 1)]
    assert Huawei(H_ID, H_SECRET, codec="binary", binary=Codec()).subscriptions() == [
        ("/huawei/v1/devices/" + H_ID + "/command/binary", 1)]
    assert Huawei.SUBSCRIBE_REQUIRED is True


def test_legacy_telemetry_envelope():
    p = Huawei(H_ID, H_SECRET, service_id="Battery")
    topic, payload = p.telemetry({"level": 87, "volt": 3.71}, unix_s=1482148160, sample_id=42)
    assert topic == DATA_TOPIC
    assert type(payload) is bytes
    assert json.loads(payload) == {"msgType": "deviceReq", "identifier": "42", "data": [
        {"serviceId": "Battery", "serviceData": {"level": 87, "volt": 3.71}, "eventTime": "20161219T114920Z"}]}
    topic, payload = p.telemetry({"level": 1}, service_id="Other")
    assert json.loads(payload) == {"msgType": "deviceReq",
                                   "data": [{"serviceId": "Other", "serviceData": {"level": 1}}]}
    assert json.loads(p.telemetry({"a": "x"}, sample_id="s-7")[1])["identifier"] == "s-7"


def test_telemetry_bad_input_is_refused():
    p = Huawei(H_ID, H_SECRET, service_id="S")
    for data in ({}, [], None, "x", {"a": float("nan")}, {"a": float("inf")}, {"a": b"x"}, {1: 2},
                 {"a": {"b": [float("-inf")]}}, {"a": object()}):
        raises(CloudValueError, p.telemetry, data)
    raises(CloudValueError, Huawei(H_ID, H_SECRET).telemetry, {"a": 1})  # no service id anywhere
    raises(CloudValueError, p.telemetry, {"a": 1}, service_id="a/b")
    raises(CloudValueError, p.telemetry, {"a": 1}, sample_id='a"b')
    raises(CloudValueError, p.telemetry, {"a": 1}, sample_id=-1)
    raises(CloudValueError, p.telemetry, {"a": 1}, unix_s=-1)
    deep = {"a": 1}
    for _ in range(20):
        deep = {"n": deep}
    raises(CloudValueError, p.telemetry, deep)


def test_legacy_parse_command_and_reply():
    p = Huawei(H_ID, H_SECRET)
    cmd = p.parse(CMD_TOPIC, cloud_req())
    assert type(cmd) is Command
    assert (cmd.kind, cmd.id, cmd.service, cmd.name, cmd.params) == ("command", 2016, "Switch", "SET", {"on": 1})
    assert cmd.reply_topic == DATA_TOPIC  # deviceRsp goes on the data topic
    topic, payload = p.reply(cmd)
    assert topic == DATA_TOPIC
    assert json.loads(payload) == {"msgType": "deviceRsp", "mid": 2016, "errcode": 0}
    topic, payload = p.reply(cmd, Huawei.FAIL, {"reason": "busy"})
    assert json.loads(payload) == {"msgType": "deviceRsp", "mid": 2016, "errcode": 1, "body": {"reason": "busy"}}
    raises(CloudValueError, p.reply, cmd, 2)
    raises(CloudValueError, p.reply, cmd, "0")
    raises(CloudValueError, p.reply, cmd, 0, [1])
    raises(CloudValueError, p.reply, cmd, 0, {"x": float("nan")})
    raises(CloudValueError, p.reply, "not a command")


def test_legacy_parse_tolerates_extras_and_missing_paras():
    p = Huawei(H_ID, H_SECRET)
    cmd = p.parse(CMD_TOPIC.encode(), cloud_req(mid=1, paras=None, identifier="9", hasMore=0))
    assert cmd.id == 1 and cmd.params == {}
    assert p.parse(CMD_TOPIC, cloud_req(mid=65535).decode()).id == 65535  # str payload accepted too
    assert p.parse(CMD_TOPIC, bytearray(cloud_req(mid=5))).id == 5


def big_req(mid_first, n=3000):
    filler = '"paras":{"blob":"' + "a" * n + '"}'
    if mid_first:
        return ('{"mid":12,"msgType":"cloudReq","serviceId":"S","cmd":"C",' + filler + "}").encode()
    return ('{"msgType":"cloudReq","serviceId":"S","cmd":"C",' + filler + ',"mid":12}').encode()


MALFORMED = [  # (payload, fault, mid an error reply must echo or None when none can be sent)
    (b'{"msgType":"cloudReq","serviceId":"S","cmd":"C","mid":7,"paras":{"a":', cs.BAD_JSON, 7),
    (b"not json", cs.BAD_JSON, None),
    (b"", cs.EMPTY, None),
    (b'\xff\xfe{"mid":5,"cmd":"\xc3"}', cs.NOT_UTF8, 5),
    (b"[1,2]", cs.BAD_JSON, None),
    (b"null", cs.BAD_JSON, None),
    (b'{"paras":{"mid":5},"cmd":', cs.BAD_JSON, None),  # only a nested mid: must not be taken for the real one
    (b'{"mid":"7",', cs.BAD_JSON, None),
    (b'{"mid":7.5,', cs.BAD_JSON, None),
    (b'{"mid":70000,', cs.BAD_JSON, None),
    (b'{"mid":7', cs.BAD_JSON, None),  # cut off inside the number: it may have had more digits
    (cloud_req(mid=None), cs.BAD_FIELD, None),
    (cloud_req(mid=65536), cs.BAD_FIELD, None),
    (cloud_req(mid="7"), cs.BAD_FIELD, None),
    (cloud_req(mid=True), cs.BAD_FIELD, None),
    (cloud_req(mid=7.0), cs.BAD_FIELD, None),
    (cloud_req(mid=9, msgType="deviceReq"), cs.BAD_FIELD, 9),
    (cloud_req(mid=9, msgType=None), cs.BAD_FIELD, 9),
    (cloud_req(mid=9, serviceId=None), cs.BAD_FIELD, 9),
    (cloud_req(mid=9, serviceId=""), cs.BAD_FIELD, 9),
    (cloud_req(mid=9, cmd=5), cs.BAD_FIELD, 9),
    (cloud_req(mid=9, cmd="x" * 65), cs.BAD_FIELD, 9),
    (cloud_req(mid=9, paras=[1]), cs.BAD_FIELD, 9),
    (big_req(True), cs.TOO_LARGE, 12),
    (big_req(False), cs.TOO_LARGE, 12),  # the cloud's own order (mid last), within the 8 KB scanned
    (big_req(False, 9000), cs.TOO_LARGE, None),  # mid beyond the bytes scanned: no reply rather than a guess
]


def test_legacy_malformed_commands_give_typed_error_and_reply_when_mid_known():
    p = Huawei(H_ID, H_SECRET)
    for payload, fault, mid in MALFORMED:
        e = raises(CloudMessageError, p.parse, CMD_TOPIC, payload)
        assert e.fault == fault, (payload[:40], e.fault)
        assert e.kind == "command"
        r = p.error_reply(e)
        if mid is None:
            assert r is None and e.reply_topic is None, payload[:40]
        else:
            assert e.msg_id == mid and e.code == 1
            assert r[0] == DATA_TOPIC
            assert json.loads(r[1]) == {"msgType": "deviceRsp", "mid": mid, "errcode": 1}, payload[:40]


def test_max_payload_is_configurable():
    payload = cloud_req(mid=3, paras={"x": "y" * 200})
    assert Huawei(H_ID, H_SECRET).parse(CMD_TOPIC, payload).id == 3
    e = raises(CloudMessageError, Huawei(H_ID, H_SECRET, max_payload=128).parse, CMD_TOPIC, payload)
    assert e.fault == cs.TOO_LARGE


def test_foreign_unknown_and_bad_topics():
    p = Huawei("dev", H_SECRET)
    for topic, fault in (("/huawei/v1/devices/other/command/json", cs.FOREIGN),
                         ("/huawei/v1/devices/dev2/command/json", cs.FOREIGN),  # prefix of our id is not ours
                         ("/huawei/v1/devices/dev/data/json", cs.UNKNOWN),
                         ("/huawei/v1/devices/dev/command/jsonx", cs.UNKNOWN),
                         ("x", cs.UNKNOWN), ("", cs.UNKNOWN),
                         (b"/huawei/v1/devices/dev/command/\xff", cs.NOT_UTF8),
                         (None, cs.BAD_FIELD), (5, cs.BAD_FIELD)):
        e = raises(CloudMessageError, p.parse, topic, cloud_req())
        assert e.fault == fault, topic
        assert p.error_reply(e) is None
    e = raises(CloudMessageError, p.parse, "/huawei/v1/devices/dev/command/json", 12345)
    assert e.fault == cs.BAD_FIELD


class Codec:
    """A product's payload codec, as a board supplies it (app/codec.py is the demo's): what the profile asks of it."""

    def encode_sample(self, data, unix_s, sample_id):
        return b"S%d:%d" % (sample_id or 0, unix_s or 0)

    def decode_command(self, b):
        if b[:1] != b"C":
            raise ValueError("not a command", b[1] if len(b) > 1 else None)
        return b[1], "set_interval", {"value": b[2]}

    def encode_reply(self, mid, code, body):
        return b"R%d%d" % (mid, code)


def test_binary_codec():
    p = Huawei(H_ID, H_SECRET, codec="binary", binary=Codec())
    topic, payload = p.telemetry({"t": 1}, 1700000000, 7)
    assert topic == "/huawei/v1/devices/" + H_ID + "/data/binary" and payload == b"S7:1700000000"
    cmd = p.parse("/huawei/v1/devices/" + H_ID + "/command/binary", b"C\x05\x09")
    assert (cmd.kind, cmd.job, cmd.id, cmd.name, cmd.params) == ("binary", cs.RUN, 5, "set_interval", {"value": 9})
    assert p.reply(cmd, body={"interval": 9}) == ("/huawei/v1/devices/" + H_ID + "/data/binary", b"R50")
    assert p.failure(cmd, "nope") == ("/huawei/v1/devices/" + H_ID + "/data/binary", b"R51")
    e = raises(CloudMessageError, p.parse, "/huawei/v1/devices/" + H_ID + "/command/binary", b"X\x06")
    assert e.msg_id == 6 and p.error_reply(e)[0].endswith("/data/binary")  # the codec read the mid: answered
    e = raises(CloudMessageError, p.parse, "/huawei/v1/devices/" + H_ID + "/command/binary", b"")
    assert e.fault == cs.EMPTY and p.error_reply(e) is None
    e = raises(CloudMessageError, p.parse, "/huawei/v1/devices/" + H_ID + "/command/binary", bytes(3000))
    assert e.fault == cs.TOO_LARGE


def test_legacy_mid_0_is_answered_echoing_it():
    # the platform issues 1..65535 (legacy "Delivering Commands"); a 0 is still answered, with the mid it came with
    p = Huawei(H_ID, H_SECRET)
    cmd = p.parse(CMD_TOPIC, cloud_req(mid=0))
    assert json.loads(p.reply(cmd)[1]) == {"msgType": "deviceRsp", "mid": 0, "errcode": 0}


def test_time_is_left_out_when_unknown():
    p = Huawei(H_ID, H_SECRET, service_id="S")
    assert "eventTime" not in p.telemetry({"a": 1}, None, 3)[1].decode()
    p = Huawei(H_ID, H_SECRET, api="iotda", service_id="S", seq_property="seq")
    assert json.loads(p.telemetry({"a": 1}, None, 3)[1]) == {"services": [{"service_id": "S",
                                                                           "properties": {"a": 1, "seq": 3}}]}


# ---- IoTDA ------------------------------------------------------------------------------------------------


def test_iotda_subscriptions_and_report():
    p = Huawei(H_ID, H_SECRET, api="iotda", service_id="Battery")
    assert p.subscriptions() == [(OC + "commands/#", 1), (OC + "properties/set/#", 1), (OC + "properties/get/#", 1),
                                 (OC + "messages/down", 1)]
    topic, payload = p.telemetry({"level": 87}, unix_s=1482148160)
    assert topic == OC + "properties/report"
    assert json.loads(payload) == {"services": [
        {"service_id": "Battery", "properties": {"level": 87}, "event_time": "20161219T114920Z"}]}
    assert json.loads(p.telemetry({"level": 1})[1]) == {"services": [{"service_id": "Battery",
                                                                       "properties": {"level": 1}}]}
    # the sample number goes into the product model's property seq_property (none: not sent)
    assert "seq" not in p.telemetry({"level": 1}, sample_id=1)[1].decode()
    p3 = Huawei(H_ID, H_SECRET, api="iotda", service_id="Battery", seq_property="seq")
    assert json.loads(p3.telemetry({"level": 1}, sample_id=1)[1])["services"][0]["properties"] == {"level": 1, "seq": 1}
    # IoTDA uses the same CONNECT scheme
    assert p.credentials(1700000000, True) == (H_ID + "_0_1_2023111422", H_ID, H2_PASSWORD)


def test_iotda_command_and_response():
    p = Huawei(H_ID, H_SECRET, api="iotda")
    body = {"object_device_id": H_ID, "service_id": "Relay", "command_name": "reboot", "paras": {"delay": 5}}
    cmd = p.parse(OC + "commands/request_id=4f1e-77", json.dumps(body).encode())
    assert (cmd.kind, cmd.id, cmd.service, cmd.name, cmd.params) == ("command", "4f1e-77", "Relay", "reboot",
                                                                     {"delay": 5})
    assert cmd.reply_topic == OC + "commands/response/request_id=4f1e-77"
    topic, payload = p.reply(cmd, 0, {"took_ms": 12})
    assert topic == cmd.reply_topic
    assert json.loads(payload) == {"result_code": 0, "response_name": "reboot", "paras": {"took_ms": 12}}
    assert json.loads(p.reply(cmd)[1]) == {"result_code": 0, "response_name": "reboot"}
    # minimal command: only paras
    cmd = p.parse(OC + "commands/request_id=1", b'{"paras":{}}')
    assert cmd.name is None and cmd.service is None and cmd.params == {}


def test_iotda_properties_set_and_get():
    p = Huawei(H_ID, H_SECRET, api="iotda")
    services = [{"service_id": "Light", "properties": {"lum": 50}}, {"service_id": "Fan", "properties": {"rpm": 9}}]
    cmd = p.parse(OC + "properties/set/request_id=r1", json.dumps({"services": services}).encode())
    assert cmd.kind == "properties_set" and cmd.job == cs.SET and cmd.params == {"lum": 50, "rpm": 9}
    topic, payload = p.reply(cmd)
    assert topic == OC + "properties/set/response/request_id=r1"
    assert json.loads(payload) == {"result_code": 0, "result_desc": "success"}
    assert json.loads(p.reply(cmd, 1, "read-only")[1]) == {"result_code": 1, "result_desc": "read-only"}
    raises(CloudValueError, p.reply, cmd, 0, {"lum": 50})
    cmd = p.parse(OC + "properties/get/request_id=r2", b'{"object_device_id":"' + H_ID.encode() +
                  b'","service_id":"Light"}')
    assert cmd.kind == "properties_get" and cmd.service == "Light"
    topic, payload = p.reply(cmd, body={"lum": 50})
    assert topic == OC + "properties/get/response/request_id=r2"
    assert json.loads(payload) == {"services": [{"service_id": "Light", "properties": {"lum": 50}}]}
    cmd = p.parse(OC + "properties/get/request_id=r3", b"{}")
    p2 = Huawei(H_ID, H_SECRET, api="iotda", service_id="Telemetry")  # no service named: the profile's own
    assert json.loads(p2.reply(cmd, 0, {"lum": 50})[1]) == {"services": [{"service_id": "Telemetry",
                                                                           "properties": {"lum": 50}}]}
    assert json.loads(p.reply(cmd, 0, services)[1]) == {"services": services}
    assert p.failure(cmd, "x") is None  # a get has no error form: not answered
    set_cmd = p.parse(OC + "properties/set/request_id=r4", json.dumps({"services": services}).encode())
    assert json.loads(p.failure(set_cmd, "not writable: rpm")[1]) == {"result_code": 1,
                                                                       "result_desc": "not writable: rpm"}


def test_iotda_messages_and_events_take_no_reply():
    p = Huawei(H_ID, H_SECRET, api="iotda")
    cmd = p.parse(OC + "messages/down", b'{"object_device_id":"x","name":"hello","id":"m1","content":{"a":1}}')
    assert (cmd.kind, cmd.id, cmd.name, cmd.params, cmd.reply_topic) == ("message", "m1", "hello", {"a": 1}, None)
    raises(CloudValueError, p.reply, cmd)
    cmd = p.parse(OC + "events/down", b'{"services":[{"service_id":"$ota","event_type":"version_query"}]}')
    assert cmd.kind == "event" and cmd.params[0]["service_id"] == "$ota" and cmd.reply_topic is None
    for topic, payload in ((OC + "messages/down", b"plain text"), (OC + "events/down", b'{"services":5}'),
                           (OC + "messages/down", b'{"name":7}')):
        e = raises(CloudMessageError, p.parse, topic, payload)
        assert p.error_reply(e) is None


def test_iotda_malformed_requests():
    p = Huawei(H_ID, H_SECRET, api="iotda")
    cmd_topic = OC + "commands/request_id=77"
    cases = [  # (topic, payload, fault, error reply payload or None)
        (cmd_topic, b'{"paras":', cs.BAD_JSON, {"result_code": 1}),
        (cmd_topic, b"", cs.EMPTY, {"result_code": 1}),
        (cmd_topic, b"\xc3\x28", cs.NOT_UTF8, {"result_code": 1}),
        (cmd_topic, b'{"paras":{"x":"' + b"y" * 3000 + b'"}}', cs.TOO_LARGE, {"result_code": 1}),
        (cmd_topic, b'{"paras":[1]}', cs.BAD_FIELD, {"result_code": 1}),
        (cmd_topic, b'{"paras":{},"command_name":5}', cs.BAD_FIELD, {"result_code": 1}),
        (cmd_topic, b'{"paras":{},"service_id":""}', cs.BAD_FIELD, {"result_code": 1}),
        (cmd_topic, b'{"paras":{},"object_device_id":"someone-else"}', cs.BAD_FIELD, {"result_code": 1}),
        (OC + "properties/set/request_id=9", b'{"services":[]}', cs.BAD_FIELD,
         {"result_code": 1, "result_desc": "services missing or not a non-empty list"}),
        (OC + "properties/set/request_id=9", b'{"services":[{"service_id":"a","properties":1}]}', cs.BAD_FIELD,
         {"result_code": 1, "result_desc": "each service needs a service_id and a properties object"}),
        (OC + "properties/get/request_id=9", b"{", cs.BAD_JSON, None),  # a get response has no error form
        (OC + 'commands/request_id=a"b', b'{"paras":{}}', cs.BAD_FIELD, None),  # unsafe id: cannot answer
        (OC + "commands/request_id=", b'{"paras":{}}', cs.BAD_FIELD, None),
        (OC + "commands/request_id=a/b", b'{"paras":{}}', cs.BAD_FIELD, None),
        (OC + "commands/response/request_id=1", b'{"result_code":0}', cs.UNKNOWN, None),  # our own echo
        (OC + "commands", b'{"paras":{}}', cs.UNKNOWN, None),
        ("$oc/devices/other/sys/commands/request_id=1", b'{"paras":{}}', cs.FOREIGN, None),
    ]
    for topic, payload, fault, reply in cases:
        e = raises(CloudMessageError, p.parse, topic, payload)
        assert e.fault == fault, (topic, payload[:30], e.fault)
        r = p.error_reply(e)
        if reply is None:
            assert r is None, topic
        else:
            assert r[0] == topic.replace("/request_id=", "/response/request_id="), r[0]
            assert json.loads(r[1]) == reply, r[1]


def test_error_reply_ignores_other_exceptions():
    p = Huawei(H_ID, H_SECRET)
    assert p.error_reply(ValueError("x")) is None
    assert p.error_reply(CloudValueError("x")) is None


def test_repr_of_command_shows_no_params():
    cmd = Huawei(H_ID, H_SECRET).parse(CMD_TOPIC, cloud_req(paras={"pin": "4711-secret"}))
    assert "4711-secret" not in repr(cmd)
    assert "command" in repr(cmd) and "2016" in repr(cmd)
