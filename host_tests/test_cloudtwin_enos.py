"""The cloud twin as Envision EnOS (embedded amqtt broker), driven by a paho-mqtt device.

Credentials come from the tests' own fixtures_twin.enos_credentials (checked against clouds.md vectors in
test_cloudtwin_credentials.py), never from the twin's or the firmware's code.
"""

import hashlib
import hmac
import json

import pytest
from fixtures_twin import enos_credentials

from tools.cloudtwin.control import TwinControlError

PK_DYN, PS_DYN = "pkDyn", "productSecretDyn"
PK_STATIC = "pkStatic"
DK_STATIC, DS_STATIC = "dkStatic", "deviceSecretStatic"
DK_NEW = "dkNew"  # dynamic, not activated yet
DK_OTHER, DS_OTHER = "dkOther", "deviceSecretOther"  # dynamic, already activated
DEVICES = {
    "model": {"measurepoints": {"temp": "float", "t": "int"}},
    "products": [{"product_key": PK_DYN, "product_secret": PS_DYN, "dynamic": True},
                 {"product_key": PK_STATIC, "product_secret": "staticProductSecret", "dynamic": False}],
    "devices": [{"product_key": PK_STATIC, "device_key": DK_STATIC, "device_secret": DS_STATIC},
                {"product_key": PK_DYN, "device_key": DK_NEW},
                {"product_key": PK_DYN, "device_key": DK_OTHER, "device_secret": DS_OTHER}],
}


def sys_topic(pk, dk, rel):
    return "/sys/%s/%s/%s" % (pk, dk, rel)


def post(msg_id, temp=1.02, method="thing.measurepoint.post"):
    return {"id": msg_id, "version": "1.1", "method": method,
            "params": {"measurepoints": {"temp": temp}, "time": 1700000000000}}


@pytest.fixture
def twin(start_twin):
    return start_twin("enos", DEVICES, activation_delay=0.05)


def login(twin, dk=DK_STATIC, pk=PK_STATIC, secret=DS_STATIC, securemode=2, keepalive=120, **kw):
    cid, user, pw = enos_credentials(dk, pk, secret, securemode=securemode, **kw)
    d = twin.device(cid, user, pw, keepalive=keepalive)
    return d, d.connect()


@pytest.mark.parametrize("signmethod,upper", [("sha256", True), ("sha256", False), ("sha1", True), ("md5", False),
                                              ("hmacsha256", True), ("hmacsha1", False)])
def test_static_device_accepted_with_each_signmethod(twin, signmethod, upper):
    assert login(twin, signmethod=signmethod, upper=upper, timestamp="1548753362502")[1] == 0
    entry = twin.control.connections()[-1]
    assert (entry["accepted"], entry["securemode"], entry["signmethod"]) == (True, 2, signmethod)
    assert entry["username"] == "%s&%s" % (DK_STATIC, PK_STATIC)
    assert DS_STATIC not in json.dumps(twin.control.connections())


def _hmac_sha1_password(dk, pk, secret, ts="1700000000000"):
    content = "clientId%sdeviceKey%sproductKey%stimestamp%s" % (dk, dk, pk, ts)
    return hmac.new(secret.encode(), (content + secret).encode(), hashlib.sha1).hexdigest().upper()


@pytest.mark.parametrize("case,code,words", [
    ("wrong device secret", 4, "deviceSecret"),
    ("real HMAC instead of a plain hash", 4, "deviceSecret"),
    ("no password", 4, "no password"),
    ("unknown device", 5, "not registered"),
    ("device key under another product", 5, "not registered"),
    ("username without &", 4, "username"),
    ("securemode 3 on a static product", 5, "not enabled for dynamic"),
    ("securemode 2 before activation", 5, "not activated"),
    ("securemode 3 after activation", 5, "already activated"),
    ("securemode 3 with a wrong product secret", 4, "productSecret"),
    ("space in the client id", 2, "space"),
    ("unknown signmethod", 2, "signmethod"),
    ("keep-alive 59 s", 2, "keep-alive"),
    ("keep-alive 301 s", 2, "keep-alive"),
])
def test_refusals_carry_the_proper_connack_code(twin, case, code, words):
    dk, pk, secret, ka = DK_STATIC, PK_STATIC, DS_STATIC, 120
    cid, user, pw = enos_credentials(dk, pk, secret)
    if case == "wrong device secret":
        pw = enos_credentials(dk, pk, "nope")[2]
    elif case == "real HMAC instead of a plain hash":
        pw = _hmac_sha1_password(dk, pk, secret)
        cid = enos_credentials(dk, pk, secret, signmethod="hmacsha1")[0]
    elif case == "no password":
        pw = None
    elif case == "unknown device":
        cid, user, pw = enos_credentials("ghost", pk, secret)
    elif case == "device key under another product":
        cid, user, pw = enos_credentials(dk, PK_DYN, secret)
    elif case == "username without &":
        user = dk + pk
    elif case == "securemode 3 on a static product":
        cid, user, pw = enos_credentials(dk, pk, "staticProductSecret", securemode=3)
    elif case == "securemode 2 before activation":
        cid, user, pw = enos_credentials(DK_NEW, PK_DYN, "anything", securemode=2)
    elif case == "securemode 3 after activation":
        cid, user, pw = enos_credentials(DK_OTHER, PK_DYN, PS_DYN, securemode=3)
    elif case == "securemode 3 with a wrong product secret":
        cid, user, pw = enos_credentials(DK_NEW, PK_DYN, "wrongProductSecret", securemode=3)
    elif case == "space in the client id":
        cid = cid.replace(",signmethod", ", signmethod")
    elif case == "unknown signmethod":
        cid = cid.replace("signmethod=sha256", "signmethod=sha384")
    elif case == "keep-alive 59 s":
        ka = 59
    elif case == "keep-alive 301 s":
        ka = 301
    d = twin.device(cid, user, pw, keepalive=ka)
    assert d.connect() == code
    entry = twin.control.connections()[-1]
    assert (entry["accepted"], entry["code"]) == (False, code)
    assert words in entry["reason"]
    for s in (DS_STATIC, PS_DYN, "staticProductSecret"):
        assert s not in entry["reason"]


def test_dynamic_activation_end_to_end(twin):
    d, rc = login(twin, DK_NEW, PK_DYN, PS_DYN, securemode=3)
    assert rc == 0
    # pushed without any SUBSCRIBE (clouds.md 2.2)
    info_topic = "/ext/session/%s/%s/thing/activate/info" % (PK_DYN, DK_NEW)
    msg = d.wait_json(topic=info_topic)[1]
    assert msg["method"] == "thing.activate.info" and msg["version"] == "1.0"
    params = msg["params"]
    assert (params["productKey"], params["deviceKey"]) == (PK_DYN, DK_NEW)
    new_secret = params["deviceSecret"]
    assert len(new_secret) >= 16 and new_secret != PS_DYN and params["assetId"]
    d.publish(info_topic + "_reply", {"id": msg["id"], "code": 200}, qos=0)
    act = twin.control.wait_for(lambda: [a for a in twin.control.activations() if a["reply"]])[0]
    assert (act["device"], act["device_secret"], act["reply"]["code"]) == (DK_NEW, new_secret, 200)
    d.close()
    # from now on: only securemode 2 with the new secret
    ok, rc = login(twin, DK_NEW, PK_DYN, new_secret, securemode=2)
    assert rc == 0
    ok.close()
    assert login(twin, DK_NEW, PK_DYN, PS_DYN, securemode=3)[1] == 5
    assert login(twin, DK_NEW, PK_DYN, PS_DYN, securemode=2)[1] == 4
    described = {x["device"]: x for x in twin.control.request("devices")["devices"]}
    assert described[DK_NEW]["activated"] and described[DK_NEW]["activated_by_twin"]
    assert "device_secret" not in json.dumps(described)
    # a test can put the device back to "not activated"; the next activation issues another secret
    twin.control.reset()  # 4 connects so far: clear the rate-limit window too
    twin.control.deactivate(DK_NEW)
    again, rc = login(twin, DK_NEW, PK_DYN, PS_DYN, securemode=3)
    assert rc == 0
    assert again.wait_json(topic=info_topic)[1]["params"]["deviceSecret"] != new_secret
    with pytest.raises(TwinControlError, match="static"):
        twin.control.deactivate(DK_STATIC)


def test_activation_is_not_committed_when_the_link_dies_first(start_twin):
    twin = start_twin("enos", DEVICES, activation_delay=1.0)
    d, rc = login(twin, DK_NEW, PK_DYN, PS_DYN, securemode=3)
    assert rc == 0
    d.close()  # gone before the push
    import time

    time.sleep(1.3)
    assert twin.control.activations() == []
    assert login(twin, DK_NEW, PK_DYN, PS_DYN, securemode=3)[1] == 0  # still activatable


def test_rate_limit_blocks_the_fifth_connect_for_five_minutes(start_twin):
    twin = start_twin("enos", DEVICES, clock="fixed:2024-03-01T12:00:00Z")
    for _ in range(4):
        d, rc = login(twin)
        assert rc == 0
        d.close()
    assert login(twin)[1] == 3  # fifth within 2 minutes
    assert login(twin, DK_OTHER, PK_DYN, DS_OTHER)[1] == 0  # per device
    twin.control.clock(advance=299)
    assert login(twin)[1] == 3  # still blocked, even with good credentials
    twin.control.clock(advance=2)
    assert login(twin)[1] == 0
    rate = twin.control.violations()["rate"]
    assert [r["kind"] for r in rate] == ["too many connects", "connect while blocked"]
    assert rate[0]["connects_in_window"] == 5 and all(r["enforced"] for r in rate)
    refused = [c for c in twin.control.connections(DK_STATIC) if not c["accepted"]]
    assert [c["code"] for c in refused] == [3, 3] and "rate limit" in refused[0]["reason"]


def test_rate_limit_off_accepts_but_records(start_twin):
    twin = start_twin("enos", DEVICES, rate_limit=False, clock="fixed:2024-03-01T12:00:00Z")
    for _ in range(6):
        d, rc = login(twin)
        assert rc == 0
        d.close()
    rate = twin.control.violations()["rate"]
    assert [(r["connects_in_window"], r["enforced"]) for r in rate] == [(5, False), (6, False)]
    twin.control.clock(advance=121)  # the window slides
    assert login(twin)[1] == 0
    assert len(twin.control.violations()["rate"]) == 2


def test_commands_are_pushed_without_subscribe_and_replies_matched(twin):
    d, _ = login(twin)
    set_topic = sys_topic(PK_STATIC, DK_STATIC, "thing/service/measurepoint/set")
    get_topic = sys_topic(PK_STATIC, DK_STATIC, "thing/service/measurepoint/get")
    svc_topic = sys_topic(PK_STATIC, DK_STATIC, "thing/service/reboot")
    id_set = twin.control.command(DK_STATIC, kind="measurepoint_set", params={"temperature": 30.5})
    _, msg, qos = d.wait_json(topic=set_topic)
    assert msg == {"id": id_set, "version": "1.0", "method": "thing.service.measurepoint.set",
                   "params": {"temperature": 30.5}} and qos == 1
    id_get = twin.control.command(DK_STATIC, kind="measurepoint_get", params=["temperature"])
    assert d.wait_json(topic=get_topic)[1]["method"] == "thing.service.measurepoint.get"
    id_svc = twin.control.command(DK_STATIC, kind="service", service_id="reboot", params={"delay": 1}, qos=0)
    _, msg, qos = d.wait_json(topic=svc_topic)
    assert (msg["method"], msg["params"], qos) == ("thing.service.reboot", {"delay": 1}, 0)
    assert len({id_set, id_get, id_svc}) == 3
    d.publish(set_topic + "_reply", {"id": id_set, "code": 200, "data": {}}, qos=0)
    d.publish(get_topic + "_reply", {"id": id_get, "code": 200, "data": {"temperature": 30.5}}, qos=0)
    d.publish(set_topic + "_reply", {"id": id_svc, "code": 500, "message": "busy"}, qos=0)  # wrong topic
    d.publish(svc_topic + "_reply", {"id": "no-such-id", "code": 200}, qos=0)
    assert twin.control.wait_reply(id_set)["reply"]["code"] == 200
    assert twin.control.wait_reply(id_get)["reply"]["data"] == {"temperature": 30.5}
    svc = twin.control.wait_reply(id_svc)
    assert svc["reply"]["code"] == 500 and svc["reply_topic_mismatch"] is True
    assert twin.control.wait_for(twin.control.replies)[0]["id"] == "no-such-id"


def test_command_to_an_offline_device_waits_for_its_connect(twin):
    cmd = twin.control.command(DK_STATIC, kind="service", service_id="ping")
    assert twin.control.command_record(cmd)["status"] == "queued"
    d, _ = login(twin)
    assert d.wait_json(topic=sys_topic(PK_STATIC, DK_STATIC, "thing/service/ping"))[1]["id"] == cmd
    with pytest.raises(TwinControlError, match="measurepoint_set needs"):
        twin.control.command(DK_STATIC, kind="measurepoint_set", params=[])
    with pytest.raises(TwinControlError, match="service_id"):
        twin.control.command(DK_STATIC, kind="service", service_id="a/b")
    with pytest.raises(TwinControlError, match="kind must be"):
        twin.control.command(DK_STATIC, kind="reboot")


def test_post_reply_goes_only_to_a_device_subscribed_to_it(twin):
    # enos-device-sdk-java MqttConnection: without the subscription "broker thinks that we are not interested in
    # the response and won't send it to us"
    d, _ = login(twin)
    post_topic = sys_topic(PK_STATIC, DK_STATIC, "thing/measurepoint/post")
    d.publish(post_topic, post("1"))
    twin.control.wait_samples(DK_STATIC, 1)
    d.no_message(0.3)  # taken, but no reply
    assert d.subscribe(post_topic + "_reply") == [1]
    d.publish(post_topic, post("2"))
    assert d.wait_json(topic=post_topic + "_reply")[1] == {"id": "2", "code": 200, "data": {}}


def test_a_post_outside_the_product_model_fails_whole_with_1204(twin):
    d, _ = login(twin)
    post_topic = sys_topic(PK_STATIC, DK_STATIC, "thing/measurepoint/post")
    d.subscribe(post_topic + "_reply", post_topic + "/batch_reply")
    d.publish(post_topic, {"id": "9", "version": "1.0", "method": "thing.measurepoint.post",
                           "params": {"measurepoints": {"temp": 1.5, "humidity": 40}}})
    reply = d.wait_json(topic=post_topic + "_reply")[1]
    assert reply["id"] == "9" and reply["code"] == 1204 and "humidity" in reply["message"]
    d.publish(post_topic, post("10", temp="warm"))  # the model says float
    assert d.wait_json(topic=post_topic + "_reply")[1]["code"] == 1204
    batch = {"id": "b9", "version": "1.0", "method": "thing.measurepoint.post.batch",
             "params": [{"measurepoints": {"temp": 1}}, {"measurepoints": {"nope": 2}}]}
    d.publish(post_topic + "/batch", batch)
    assert d.wait_json(topic=post_topic + "/batch_reply")[1]["code"] == 1204  # the whole batch fails
    d.publish(post_topic, {"id": "11", "version": "1.0", "method": "thing.measurepoint.post",
                           "params": {"measurepoints": {"temp": 1.5}, "time": 1700000000}})  # seconds, not ms
    assert d.wait_json(topic=post_topic + "_reply")[1]["code"] == 1220
    t = twin.control.telemetry(DK_STATIC)
    assert t["samples"] == [] and [r["sample_id"] for r in t["rejected"]] == ["9", "10", "b9"]
    assert all(r["code"] == 1204 for r in t["rejected"])


def test_telemetry_replies_and_duplicate_counting(twin):
    d, _ = login(twin)
    post_topic = sys_topic(PK_STATIC, DK_STATIC, "thing/measurepoint/post")
    event_topic = sys_topic(PK_STATIC, DK_STATIC, "thing/event/alarm/post")
    d.subscribe(post_topic + "_reply", post_topic + "/batch_reply", event_topic + "_reply")
    for sid in ("1", "2", "2", "3"):
        d.publish(post_topic, post(sid))
        t, reply, _ = d.wait_json(topic=post_topic + "_reply")
        assert reply == {"id": sid, "code": 200, "data": {}}
    d.publish(post_topic, b"{broken")
    assert d.wait_json(topic=post_topic + "_reply")[1]["code"] == 1220
    d.publish(post_topic, post("4", method="thing.event.alarm.post"))
    assert d.wait_json(topic=post_topic + "_reply")[1]["code"] == 1260
    d.publish(post_topic, b"")
    assert d.wait_json(topic=post_topic + "_reply")[1]["code"] == 1251
    batch = {"id": "b1", "version": "1.0", "method": "thing.measurepoint.post.batch",
             "params": [{"measurepoints": {"temp": 1}, "time": 1}, {"measurepoints": {"temp": 2}, "time": 2}]}
    d.publish(post_topic + "/batch", batch)
    assert d.wait_json(topic=post_topic + "/batch_reply")[1]["code"] == 200
    d.publish(event_topic, {"id": "e1", "version": "1.0", "method": "thing.event.alarm.post", "params": {"lvl": 2}})
    assert d.wait_json(topic=event_topic + "_reply")[1] == {"id": "e1", "code": 200, "data": {}}
    t = twin.control.telemetry(DK_STATIC)
    assert t["samples"] == ["1", "2", "3", "b1"]
    assert (t["duplicates"], t["duplicate_ids"], t["messages"]) == (1, ["2"], 5)
    assert [e["id"] for e in t["events"]] == ["e1"]
    assert [b["why"][:8] for b in t["bad"]] == ["not JSON", "method '", "empty pa"]


def test_topic_permissions_and_no_echo(twin):
    d, _ = login(twin)
    o, _ = login(twin, DK_OTHER, PK_DYN, DS_OTHER)
    granted = d.subscribe(sys_topic(PK_DYN, DK_OTHER, "#"), "/sys/+/%s/#" % DK_STATIC, "#",
                          sys_topic(PK_STATIC, DK_STATIC, "#"), "/ext/session/%s/%s/#" % (PK_STATIC, DK_STATIC))
    assert granted == [128, 128, 128, 1, 1]
    d.publish(sys_topic(PK_DYN, DK_OTHER, "thing/measurepoint/post"), post("forged"))
    d.publish("/ext/session/%s/%s/thing/activate/info_reply" % (PK_DYN, DK_OTHER), {"id": "1", "code": 200})
    d.publish(sys_topic(PK_STATIC, DK_STATIC, "thing/measurepoint/post"), post("own"))
    # subscribed to its own '#': gets the twin's reply, never its own publish echoed back
    t, msg, _ = d.wait_json()
    assert t.endswith("/post_reply") and msg["id"] == "own"
    d.no_message(0.3)
    o.no_message(0.1)
    v = twin.control.violations()["topic"]
    assert [(x["action"], x["topic"]) for x in v] == [
        ("subscribe", sys_topic(PK_DYN, DK_OTHER, "#")), ("subscribe", "/sys/+/%s/#" % DK_STATIC),
        ("subscribe", "#"), ("publish", sys_topic(PK_DYN, DK_OTHER, "thing/measurepoint/post")),
        ("publish", "/ext/session/%s/%s/thing/activate/info_reply" % (PK_DYN, DK_OTHER))]
    assert DK_OTHER not in twin.control.telemetry()
