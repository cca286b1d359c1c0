"""The cloud twin as Huawei OceanConnect (legacy MQTT, embedded amqtt broker), driven by a paho-mqtt device.

Credentials are computed by the tests' own code (fixtures_twin.huawei_credentials, checked against clouds.md
vectors in test_cloudtwin_credentials.py), never by the twin's or the firmware's.
"""

import json

import pytest
from fixtures_twin import huawei_credentials, utc_hour

from tools.cloudtwin.control import TwinControlError

DEV = "6203cc94c7fb24029b110408_88888888"  # contains '_': the client id must be split from the right
SECRET = "123456789"
OTHER = "other-device"
OTHER_SECRET = "other-secret"
DEVICES = {"model": {"services": {"Meter": {"temp": "decimal"}, "M": {"v": "int"}, "Switch": {"on": "int"}}}, "devices": [{"device_id": DEV, "secret": SECRET}, {"device_id": OTHER, "secret": OTHER_SECRET}]}


def data_topic(dev, kind="json"):
    return "/huawei/v1/devices/%s/data/%s" % (dev, kind)


def cmd_topic(dev, kind="json"):
    return "/huawei/v1/devices/%s/command/%s" % (dev, kind)


def device_req(sample_id=None, **extra):
    msg = {"msgType": "deviceReq", "data": [{"serviceId": "Meter", "serviceData": {"temp": 21.5},
                                             "eventTime": "20231114T221320Z"}]}
    if sample_id is not None:
        msg["identifier"] = sample_id
    msg.update(extra)
    return msg


@pytest.fixture
def twin(start_twin):
    return start_twin("huawei", DEVICES)


def login(twin, dev=DEV, secret=SECRET, hour=None, sig_type=0, keepalive=120, **kw):
    """-> (MqttDevice, CONNACK code)."""
    cid, user, pw = huawei_credentials(dev, secret, hour or utc_hour(), sig_type)
    d = twin.device(cid, user, pw, keepalive=keepalive, **kw)
    return d, d.connect()


def test_accepts_correct_credentials_and_logs_no_password(twin):
    d, rc = login(twin, hour="2999010100", sig_type=0)  # H1: sigType 0, the hour is not checked
    assert rc == 0
    d.close()
    d, rc = login(twin, sig_type=1)  # sigType 1 with the current UTC hour
    assert rc == 0
    conns = twin.control.connections(DEV)
    assert [(c["accepted"], c["code"], c["sig_type"], c["tls"]) for c in conns] == [(True, 0, 0, True), (True, 0, 1, True)]
    assert conns[0]["client_id"] == DEV + "_0_0_2999010100" and conns[0]["username"] == DEV
    assert conns[0]["disconnect_reason"] == "client sent DISCONNECT"
    everything = json.dumps([twin.control.connections(), twin.control.status(), twin.control.violations()])
    assert SECRET not in everything
    assert huawei_credentials(DEV, SECRET, "2999010100")[2] not in everything
    assert "password" not in " ".join(c["reason"] for c in conns)


def _h3_swapped(hour):
    import hashlib
    import hmac

    return hmac.new(SECRET.encode(), hour.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("case,code,words", [
    ("wrong password", 4, "password"),
    ("upper-case hex", 4, "password"),
    ("key and message swapped", 4, "password"),
    ("no password", 4, "no password"),
    ("unknown device", 5, "not registered"),
    ("username is not the id", 4, "username"),
    ("three-field client id", 2, "idType"),  # split from the right: "88888888" lands in idType
    ("sigType 1 in UTC+8", 4, "sigType 1 hour"),
    ("keep-alive 29 s", 2, "keep-alive"),
    ("keep-alive 1201 s", 2, "keep-alive"),
])
def test_refusals_carry_the_proper_connack_code(twin, case, code, words):
    hour = utc_hour()
    cid, user, pw = huawei_credentials(DEV, SECRET, hour)
    keepalive = 120
    if case == "wrong password":
        pw = huawei_credentials(DEV, "not-the-secret", hour)[2]
    elif case == "upper-case hex":
        pw = pw.upper()
    elif case == "key and message swapped":
        pw = _h3_swapped(hour)
    elif case == "no password":
        pw = None
    elif case == "unknown device":
        cid, user, pw = huawei_credentials("nobody", SECRET, hour)
    elif case == "username is not the id":
        user = OTHER
    elif case == "three-field client id":
        cid = "%s_0_0" % DEV
    elif case == "sigType 1 in UTC+8":
        import datetime

        local = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8))).strftime("%Y%m%d%H")
        cid, user, pw = huawei_credentials(DEV, SECRET, local, sig_type=1)
    elif case == "keep-alive 29 s":
        keepalive = 29
    elif case == "keep-alive 1201 s":
        keepalive = 1201
    d = twin.device(cid, user, pw, keepalive=keepalive)
    assert d.connect() == code
    entry = twin.control.connections()[-1]
    assert (entry["accepted"], entry["code"]) == (False, code)
    assert words in entry["reason"]
    assert SECRET not in entry["reason"] and (pw is None or pw not in json.dumps(entry))


def test_sigtype1_hour_is_the_platforms_hour_exactly(start_twin):
    # the platform "checks whether the message timestamp is consistent with the platform time" (iot_06_v5_3009):
    # the hour, exactly (no source documents a tolerance)
    twin = start_twin("huawei", DEVICES, clock="fixed:2023-11-14T22:59:59Z")
    d, rc = login(twin, hour="2023111422", sig_type=1)  # H2
    assert rc == 0
    d.close()
    twin.control.clock(advance=1)  # 23:00:00: the next hour
    assert login(twin, hour="2023111422", sig_type=1)[1] == 4
    assert login(twin, hour="2023111423", sig_type=1)[1] == 0
    assert login(twin, hour="2023111422", sig_type=0)[1] == 0  # sigType 0: the hour is not checked


def test_sigtype1_hour_tolerance_flag(start_twin):
    twin = start_twin("huawei", DEVICES, clock="fixed:2023-11-14T22:13:20Z", hour_tolerance=600)
    d, rc = login(twin, hour="2023111422", sig_type=1)  # H2
    assert rc == 0
    d.close()
    assert login(twin, hour="2023111421", sig_type=1)[1] == 4  # 73 min old: beyond the 10 min tolerance
    assert login(twin, hour="2023111421", sig_type=0)[1] == 0  # sigType 0: hour not checked
    twin.control.clock(set="2023-11-14T23:09:59Z")
    assert login(twin, hour="2023111422", sig_type=1)[1] == 0  # within tolerance after the hour
    assert login(twin, hour="2023111423", sig_type=1)[1] == 0
    twin.control.clock(advance=1)  # 23:10:00
    assert login(twin, hour="2023111422", sig_type=1)[1] == 4
    twin.control.clock(set="2023-11-14T21:50:00Z")
    assert login(twin, hour="2023111422", sig_type=1)[1] == 0  # device clock 10 min fast: still accepted
    refused = [c for c in twin.control.connections() if not c["accepted"]]
    assert len(refused) == 2 and all("not the twin's UTC hour" in c["reason"] for c in refused)


def test_commands_wait_for_subscription_and_replies_match_by_mid(twin):
    d, rc = login(twin)
    assert rc == 0
    mid1 = twin.control.command(DEV, service_id="Switch", cmd="SET", paras={"on": 1})
    assert twin.control.command_record(mid1)["status"] == "queued"
    d.no_message(0.3)  # not delivered before the device subscribed
    assert d.subscribe(cmd_topic(DEV)) == [1]
    _, msg, qos = d.wait_json(topic=cmd_topic(DEV))
    assert msg == {"msgType": "cloudReq", "serviceId": "Switch", "cmd": "SET", "paras": {"on": 1}, "mid": mid1}
    assert qos == 1
    mid2 = twin.control.command(DEV, service_id="Switch", cmd="GET", paras={})
    assert mid2 != mid1 and 1 <= mid2 <= 65535
    assert d.wait_json(topic=cmd_topic(DEV))[1]["mid"] == mid2
    assert twin.control.command_record(mid2)["status"] == "sent"
    # answers on the data topic, out of order, one with errcode 1 and a body
    d.publish(data_topic(DEV), {"msgType": "deviceRsp", "mid": mid2, "errcode": 1, "body": {"why": "busy"}})
    d.publish(data_topic(DEV), {"msgType": "deviceRsp", "mid": mid1, "errcode": 0})
    d.publish(data_topic(DEV), {"msgType": "deviceRsp", "mid": 4242, "errcode": 0})
    r1 = twin.control.wait_reply(mid1)
    r2 = twin.control.wait_reply(mid2)
    assert (r1["status"], r1["reply"]["errcode"], r1["acked"]) == ("replied", 0, True)
    assert r2["reply"] == {"mid": mid2, "errcode": 1, "body": {"why": "busy"}}
    assert twin.control.wait_for(twin.control.replies)[0]["id"] == 4242
    # replies are not telemetry
    assert twin.control.telemetry(DEV)["messages"] == 0


def test_command_errors(twin):
    with pytest.raises(TwinControlError, match="unknown device"):
        twin.control.command("ghost", service_id="S", cmd="C")
    with pytest.raises(TwinControlError, match="service_id and cmd"):
        twin.control.command(DEV, service_id="S")
    with pytest.raises(TwinControlError, match="not connected and subscribed"):
        twin.control.command(DEV, service_id="S", cmd="C", queue=False)
    assert twin.control.commands() == []


def test_telemetry_counts_samples_duplicates_and_bad_messages(twin):
    d, _ = login(twin)
    for sid in (1, 2, 2, "s-3", 1):
        d.publish(data_topic(DEV), device_req(sid))
    d.publish(data_topic(DEV), device_req())  # no identifier
    d.publish(data_topic(DEV), {"msgType": "deviceReq"})  # no data
    d.publish(data_topic(DEV), b"\xff not json")
    d.publish(data_topic(DEV), {"msgType": "somethingElse"})
    d.publish(data_topic(DEV, "binary"), b"\x01\x02")
    t = twin.control.wait_for(lambda: twin.control.telemetry(DEV), until=lambda x: x["binary"] == 1)
    assert t["samples"] == [1, 2, "s-3"]
    assert (t["unique"], t["duplicates"], t["duplicate_ids"]) == (3, 2, [2, 1])
    assert (t["messages"], t["missing_id"]) == (7, 1)
    assert len(t["bad"]) == 3 and "data" in t["bad"][0]["why"] and "not JSON" in t["bad"][1]["why"]
    # binary without a layout the codec plug-in knows: not stored, nothing to the device
    assert len(t["rejected"]) == 1 and "codec plug-in" in t["rejected"][0]["why"]
    assert OTHER not in twin.control.telemetry()


def test_topic_permissions(twin):
    d, _ = login(twin)
    o, _ = login(twin, OTHER, OTHER_SECRET)
    assert o.subscribe(cmd_topic(OTHER)) == [1]
    granted = d.subscribe(cmd_topic(OTHER), data_topic(DEV), "#", cmd_topic(DEV),
                          "/huawei/v1/devices/%s/command/+" % DEV)
    assert granted == [128, 128, 128, 1, 1]
    assert d.subscribe(cmd_topic(DEV, "binary"), qos=2) == [1]  # no QoS 2 on these clouds
    d.publish(data_topic(OTHER), device_req("forged"))
    d.publish(cmd_topic(DEV), {"msgType": "cloudReq"})
    d.publish("/elsewhere", b"x")
    d.publish(data_topic(DEV), device_req("own"))
    twin.control.wait_samples(DEV, 1)
    v = twin.control.violations()["topic"]
    assert [(x["device"], x["action"], x["topic"]) for x in v] == [
        (DEV, "subscribe", cmd_topic(OTHER)), (DEV, "subscribe", data_topic(DEV)), (DEV, "subscribe", "#"),
        (DEV, "publish", data_topic(OTHER)), (DEV, "publish", cmd_topic(DEV)), (DEV, "publish", "/elsewhere")]
    assert all(x["enforced"] for x in v)
    assert twin.control.telemetry(DEV)["samples"] == ["own"]
    assert OTHER not in twin.control.telemetry()
    # devices never see each other's traffic, nor their own echoed back
    mid = twin.control.command(OTHER, service_id="S", cmd="C")
    assert o.wait_json(topic=cmd_topic(OTHER))[1]["mid"] == mid
    d.no_message(0.3)


def test_a_new_connection_takes_the_device_over(twin):
    first, rc = login(twin, hour="2999010100")
    assert rc == 0
    second, rc = login(twin)  # same device, other hour: another client id
    assert rc == 0
    assert first.wait_closed(5)
    assert second.is_connected()
    conns = twin.control.connections(DEV)
    assert conns[0]["disconnect_reason"] == "taken over by connection #%d" % conns[1]["seq"]
    # same client id again: amqtt's own take-over path must end the old link too
    third, rc = login(twin)
    assert rc == 0
    assert second.wait_closed(5)
    assert third.subscribe(cmd_topic(DEV)) == [1]
    mid = twin.control.command(DEV, service_id="S", cmd="C")
    assert third.wait_json(topic=cmd_topic(DEV))[1]["mid"] == mid
    assert twin.control.command_record(mid)["link"] == twin.control.connections(DEV)[-1]["seq"]
    assert twin.control.status()["connected"] == [DEV]


def test_retain_and_qos2_are_recorded_as_protocol_violations(twin):
    d, _ = login(twin)
    d.publish(data_topic(DEV), device_req(1), retain=True)
    d.publish(data_topic(DEV), device_req(2), qos=2)
    twin.control.wait_samples(DEV, 2)
    whats = [v["what"] for v in twin.control.violations()["protocol"]]
    assert any("retain" in w for w in whats) and any("QoS 2" in w for w in whats)


def test_silent_device_is_dropped_after_keepalive_times_factor(start_twin):
    twin = start_twin("huawei", DEVICES, keepalive_factor=0.05)  # keep-alive 30 s -> dropped after 1.5 s silence
    talker, _ = login(twin, OTHER, OTHER_SECRET, keepalive=30)
    silent, rc = login(twin, keepalive=30)
    assert rc == 0
    for i in range(6):  # the talker sends every 0.4 s: never silent for 1.5 s
        talker.publish(data_topic(OTHER), device_req(i))
        if i == 4:
            assert silent.wait_closed(3)
        else:
            silent.wait_closed(0.4)
    assert talker.is_connected()
    entry = twin.control.connections(DEV)[-1]
    assert entry["disconnect_reason"].startswith("keep-alive timeout")


def test_control_disconnect_and_reset(twin):
    d, _ = login(twin)
    d.publish(data_topic(DEV), device_req(1))
    twin.control.wait_samples(DEV, 1)
    assert twin.control.disconnect(DEV) == 1
    assert d.wait_closed(5)
    assert twin.control.wait_for(lambda: twin.control.connections(DEV)[-1].get("disconnect_reason"))\
        == "disconnected by the twin's control socket"
    assert twin.control.disconnect(DEV) == 0
    twin.control.reset()
    assert twin.control.connections() == [] and twin.control.telemetry() == {}
    assert twin.control.violations() == {"topic": [], "rate": [], "protocol": []}
    assert login(twin)[1] == 0  # the registry survives a reset


def test_mutual_tls_requires_a_client_certificate(start_twin, pki):
    twin = start_twin("huawei", DEVICES, require_client_cert=True)
    cid, user, pw = huawei_credentials(DEV, SECRET, utc_hour())
    without = twin.device(cid, user, pw)
    with pytest.raises((ConnectionError, OSError)):
        without.connect(timeout=3)
    withcert = twin.device(cid, user, pw, cert=pki["client_pem"], key=pki["client_key"])
    assert withcert.connect() == 0
    entry = twin.control.connections()[-1]
    assert entry["client_cert"] == "device-0001" and entry["accepted"]


def test_a_refused_connect_with_a_live_client_id_leaves_the_live_device_alone(twin):
    live, rc = login(twin)
    assert rc == 0
    assert live.subscribe(cmd_topic(DEV)) == [1]
    cid, user, _ = huawei_credentials(DEV, SECRET, utc_hour())
    assert twin.device(cid, user, "0" * 64).connect() == 4  # same client id, wrong password
    live.publish(data_topic(DEV), device_req("after"))
    assert twin.control.wait_samples(DEV, 1)["samples"] == ["after"]
    mid = twin.control.command(DEV, service_id="S", cmd="C")
    assert live.wait_json(topic=cmd_topic(DEV))[1]["mid"] == mid
    assert live.is_connected()


def _mqtt_packet(first, body):
    n, rl = len(body), b""
    while True:
        n, byte = divmod(n, 128)
        rl += bytes([byte | (0x80 if n else 0)])
        if not n:
            return bytes([first]) + rl + body


def _mqtt_str(s):
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def test_a_command_never_acknowledged_is_marked_failed(twin):
    # a raw MQTT client: takes the QoS 1 PUBLISH and drops the link without PUBACK
    import socket

    cid, user, pw = huawei_credentials(DEV, SECRET, utc_hour())
    s = socket.create_connection(("127.0.0.1", twin.info["plain_port"]), timeout=5)
    try:
        s.sendall(_mqtt_packet(0x10, _mqtt_str("MQTT") + b"\x04\xc2\x00\x78" + _mqtt_str(cid) + _mqtt_str(user)
                               + _mqtt_str(pw)))
        assert s.recv(4) == b"\x20\x02\x00\x00"
        s.sendall(_mqtt_packet(0x82, b"\x00\x01" + _mqtt_str(cmd_topic(DEV)) + b"\x01"))
        assert s.recv(5) == b"\x90\x03\x00\x01\x01"
        mid = twin.control.command(DEV, service_id="S", cmd="C")
        assert s.recv(1) == b"\x32"  # PUBLISH, QoS 1
    finally:
        s.close()
    rec = twin.control.wait_for(lambda: twin.control.command_record(mid), until=lambda r: r["status"] == "failed")
    assert rec["acked"] is False and "closed before the device acknowledged" in rec["error"]
    assert twin.control.connections(DEV)[-1]["tls"] is False


def test_node_id_login_and_its_topics(start_twin):
    # legacy id type 2: the node id logs in and names the topics (legacy iot_06_3009, iot_06_3008)
    devs = dict(DEVICES, devices=[{"device_id": DEV, "secret": SECRET, "node_id": "866425030000017"}])
    twin = start_twin("huawei", devs)
    cid, user, pw = huawei_credentials("866425030000017", SECRET, utc_hour(), 0, id_type=2)
    d = twin.device(cid, user, pw)
    assert d.connect() == 0
    assert d.subscribe(cmd_topic("866425030000017")) == [1]
    assert d.subscribe(cmd_topic(DEV)) == [128]  # not the id it logged in with
    d.publish(data_topic("866425030000017"), device_req("n1"))
    assert twin.control.wait_samples(DEV, 1)["samples"] == ["n1"]
    mid = twin.control.command(DEV, service_id="Switch", cmd="SET", paras={"on": 1})
    assert d.wait_json(topic=cmd_topic("866425030000017"))[1]["mid"] == mid
    c = twin.control.connections(DEV)[0]
    assert c["id_type"] == 2 and c["accepted"]
    cid, user, pw = huawei_credentials("no-such-node", SECRET, utc_hour(), 0, id_type=2)
    assert twin.device(cid, user, pw).connect() == 5


def test_reports_outside_the_product_model_are_not_stored(twin):
    d, _ = login(twin)
    bad = {"msgType": "deviceReq", "data": [{"serviceId": "Meter", "serviceData": {"temp": 21.5, "rh": 40}}],
           "identifier": "x1"}
    d.publish(data_topic(DEV), bad)
    d.publish(data_topic(DEV), {"msgType": "deviceReq", "data": [{"serviceId": "Meter", "serviceData": {"temp": "hot"}}],
                                "identifier": "x2"})
    d.publish(data_topic(DEV), {"msgType": "deviceReq", "data": [{"serviceId": "Nope", "serviceData": {"v": 1}}],
                                "identifier": "x3"})
    d.publish(data_topic(DEV), device_req("ok"))
    t = twin.control.wait_samples(DEV, 1)
    assert t["samples"] == ["ok"] and [r["sample_id"] for r in t["rejected"]] == ["x1", "x2", "x3"]
    d.no_message(0.3)  # no reply of any kind


def test_binary_codec_plugin_decodes_the_demo_layout(start_twin):
    import struct

    model = {"services": {"Telemetry": {"temperature": "decimal", "uptime": "int", "outbox": "int", "dropped": "int",
                                        "rssi": "int"}, "Switch": {"on": "int"}}}
    twin = start_twin("huawei", dict(DEVICES, model=model))
    d, _ = login(twin)
    d.publish(data_topic(DEV, "binary"), struct.pack(">BIIhIHHh", 1, 6, 0, 0, 1, 0, 0, 0) + b"x")  # bad length
    sample = struct.pack(">BIIhIHHh", 1, 7, 1700000000, 2150, 12, 0, 0, -32768)
    d.publish(data_topic(DEV, "binary"), sample)
    t = twin.control.wait_samples(DEV, 1)
    assert len(t["rejected"]) == 1 and "21" in t["rejected"][0]["why"]
    assert t["samples"] == ["7"] and t["recent"][0]["data"] == {"temperature": 21.5, "uptime": 12, "outbox": 0,
                                                               "dropped": 0}
    assert d.subscribe(cmd_topic(DEV, "binary")) == [1]
    mid = twin.control.command(DEV, service_id="Config", cmd="set_interval", paras={"value": 5}, binary=True)
    _, raw, _ = d.wait_message(topic=cmd_topic(DEV, "binary"))
    assert raw == struct.pack(">BHBI", 2, mid, 2, 5)
    d.publish(data_topic(DEV, "binary"), struct.pack(">BHBIHI", 3, mid, 0, 5, 0, 1))
    assert twin.control.wait_reply(mid)["reply"] == {"mid": mid, "errcode": 0,
                                                      "body": {"interval": 5, "outbox": 0, "published": 1}}
