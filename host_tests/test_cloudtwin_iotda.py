"""The cloud twin as Huawei IoTDA ($oc/devices/{id}/sys/..., embedded amqtt broker), driven by a paho-mqtt device.
Each rule, and the CONNACK or response behaviour the platform has for it, is cited in docs/cloudtwin.md ("IoTDA").
Credentials come from the tests' own code (fixtures_twin.huawei_credentials), never from the twin or the firmware.
"""

import time

import pytest
from fixtures_twin import huawei_credentials

DEV = "6203cc94c7fb24029b110408_88888888"
SECRET = "s3cret-iotda"
MODEL = {"services": {"Telemetry": {"temperature": "decimal", "seq": "int", "interval": "int"},
                      "Battery": {"level": "int"}}}
DEVICES = {"model": MODEL, "devices": [{"device_id": DEV, "secret": SECRET}]}
OC = "$oc/devices/%s/sys/" % DEV


@pytest.fixture
def twin(start_twin):
    return start_twin("iotda", DEVICES, clock="fixed:2026-12-01T10:30:00Z")


def login(twin, hour="2026120110", sig_type=1, id_type=0, keepalive=120, dev=DEV, secret=SECRET):
    cid, user, pw = huawei_credentials(dev, secret, hour, sig_type, id_type)
    d = twin.device(cid, user, pw, keepalive=keepalive)
    return d, d.connect()


def report(seq, props=None, service="Telemetry", **item):
    p = {"temperature": 21.5, "seq": seq} if props is None else props
    return {"services": [dict({"service_id": service, "properties": p}, **item)]}


def test_connect_rules_and_their_connack_codes(twin):
    d, rc = login(twin)
    assert rc == 0
    d.close()
    assert login(twin, hour="2026120109")[1] == 4  # sign type 1: not the platform's hour
    assert login(twin, hour="2026120109", sig_type=0)[1] == 0  # sign type 0: the hour is not checked
    assert login(twin, id_type=2)[1] == 2  # the id type is "fixed at 0" on IoTDA
    assert login(twin, keepalive=20)[1] == 2  # heartbeat outside 30..1200 s
    assert login(twin, keepalive=1300)[1] == 2
    assert login(twin, secret="wrong")[1] == 4
    assert login(twin, dev="unknown_device", secret="x")[1] == 5
    conns = twin.control.connections()
    assert [c["code"] for c in conns] == [0, 4, 0, 2, 2, 2, 4, 5]


def test_property_reports_are_checked_against_the_product_model(twin):
    d, _ = login(twin)
    top = OC + "properties/report"
    d.publish(top, report(1, event_time="20261201T103000Z"))
    d.publish(top, report(2, event_time="2026-12-01T10:30:01.250Z"))
    d.publish(top, report(3))  # no event_time: the platform stamps it
    d.publish(top, report(4, {"temperature": 20.0, "seq": 4, "humidity": 40}))  # not in the model
    d.publish(top, report(5, {"temperature": "warm", "seq": 5}))  # wrong type
    d.publish(top, report(6, {"level": 3}, service="Nope"))  # unknown service
    d.publish(top, report(7, event_time="yesterday"))  # malformed time: replaced, not refused
    t = twin.control.wait_for(lambda: twin.control.telemetry(DEV), until=lambda x: x["messages"] == 7)
    assert t["samples"] == ["1", "2", "3", "7"]
    assert [r["sample_id"] for r in t["rejected"]] == [4, 5, None]
    assert "humidity" in t["rejected"][0]["why"] and "decimal" in t["rejected"][1]["why"]
    assert "service 'Nope'" in t["rejected"][2]["why"]
    assert any(e.get("event_time_replaced") == "yesterday" for e in t["events"])
    d.no_message(0.3)  # there is no response topic for a report: nothing goes back to the device


def test_commands_are_pushed_at_qos0_and_answered_by_request_id(twin):
    d, _ = login(twin)
    cid = twin.control.command(DEV, kind="command", service_id="Config", command_name="status", paras={"a": 1})
    topic, msg, qos = d.wait_json(topic=OC + "commands/request_id=" + cid)
    assert qos == 0  # implicit subscription: system topics at QoS 0
    assert msg == {"object_device_id": DEV, "service_id": "Config", "command_name": "status", "paras": {"a": 1}}
    d.publish(OC + "commands/response/request_id=" + cid, {"result_code": 0, "response_name": "status",
                                                          "paras": {"state": "running"}})
    rec = twin.control.wait_reply(cid)
    assert rec["reply"]["paras"] == {"state": "running"} and rec["status"] == "replied"
    # subscribed at QoS 1: the next one comes at QoS 1; a response without result_code is a success
    assert d.subscribe(OC + "commands/#") == [1]
    cid = twin.control.command(DEV, kind="command", command_name="reboot")
    assert d.wait_json(topic=OC + "commands/request_id=" + cid)[2] == 1
    d.publish(OC + "commands/response/request_id=" + cid, {"paras": {}})
    assert twin.control.wait_reply(cid)["reply"]["result_code"] == 0


def test_property_set_and_get(twin):
    d, _ = login(twin)
    sid = twin.control.command(DEV, kind="properties_set",
                               services=[{"service_id": "Telemetry", "properties": {"interval": 5}}])
    _, msg, _ = d.wait_json(topic=OC + "properties/set/request_id=" + sid)
    assert msg["services"] == [{"service_id": "Telemetry", "properties": {"interval": 5}}]
    d.publish(OC + "properties/set/response/request_id=" + sid, {"result_code": 1, "result_desc": "not writable"})
    assert twin.control.wait_reply(sid)["reply"] == {"result_code": 1, "result_desc": "not writable"}
    gid = twin.control.command(DEV, kind="properties_get")  # no service_id: the device picks
    _, msg, _ = d.wait_json(topic=OC + "properties/get/request_id=" + gid)
    assert msg == {"object_device_id": DEV}
    d.publish(OC + "properties/get/response/request_id=" + gid, {"result_code": 0})  # no services: malformed
    d.publish(OC + "properties/get/response/request_id=" + gid,
              {"services": [{"service_id": "Telemetry", "properties": {"interval": 5}}]})
    assert twin.control.wait_reply(gid)["reply"]["services"][0]["properties"] == {"interval": 5}
    assert "services" in twin.control.telemetry(DEV)["bad"][0]["why"]


def test_a_response_after_20_s_is_too_late(twin, monkeypatch):
    d, _ = login(twin)
    cid = twin.control.command(DEV, kind="command", command_name="slow")
    d.wait_json(topic=OC + "commands/request_id=" + cid)
    twin.control.wait_for(lambda: twin.control.command_record(cid)["status"] == "timeout", 25, interval=0.5)
    d.publish(OC + "commands/response/request_id=" + cid, {"result_code": 0})
    late = twin.control.wait_for(lambda: twin.control.replies(), 5)
    assert late[0]["id"] == cid and late[0]["late"] and twin.control.command_record(cid)["reply"] is None


def test_time_sync_event(twin):
    d, _ = login(twin)
    sent = int(time.time() * 1000)
    d.publish(OC + "events/up", {"services": [{"service_id": "$time_sync", "event_type": "time_sync_request",
                                               "paras": {"device_send_time": sent}}]})
    _, msg, _ = d.wait_json(topic=OC + "events/down")
    s = msg["services"][0]
    assert s["service_id"] == "$time_sync" and s["event_type"] == "time_sync_response"
    p = s["paras"]
    assert p["device_send_time"] == sent
    assert p["server_recv_time"] == p["server_send_time"] == 1796121000000  # the twin's fixed clock, in ms


def test_qos2_and_retain_close_the_connection_and_topics_are_the_devices_own(twin):
    d, _ = login(twin)
    d.publish("$oc/devices/someone_else/sys/properties/report", report(1))
    assert d.subscribe("$oc/devices/someone_else/sys/commands/#") == [128]
    d.publish(OC + "properties/report", report(2), qos=2)
    assert d.wait_closed()
    v = twin.control.violations()
    assert any("QoS 2" in p["what"] for p in v["protocol"])
    assert [x["action"] for x in v["topic"]] == ["publish", "subscribe"]
    d, _ = login(twin)
    d.publish(OC + "properties/report", report(3), retain=True)
    assert d.wait_closed()
