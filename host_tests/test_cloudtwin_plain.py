"""The cloud twin as a plain MQTT broker (--cloud mqtt): the firmware's "mqtt" profile's topics and envelopes."""

import pytest

DEVICES = {"devices": [{"client_id": "c1", "username": "u1", "password": "p1"}, {"client_id": "c2"}]}


@pytest.fixture
def twin(start_twin):
    return start_twin("mqtt", DEVICES)


def test_plain_broker_rules(twin):
    assert twin.device("c1", "u1", "wrong").connect() == 4
    assert twin.device("nobody", "u1", "p1").connect() == 2
    assert twin.device("c2").connect() == 0  # no username registered: none checked
    d = twin.device("c1", "u1", "p1")
    assert d.connect() == 0
    assert d.subscribe("devices/c1/commands", "devices/c2/commands") == [1, 128]
    d.publish("devices/c1/telemetry", {"id": 1, "t": None, "d": {"temperature": 20.5}})
    d.publish("devices/c1/telemetry", {"id": 2, "d": {}})  # no "t": malformed
    t = twin.control.wait_for(lambda: twin.control.telemetry("c1"), until=lambda t: t["unique"] >= 1 and t["bad"],
                              what="a sample and a malformed one")
    assert t["samples"] == ["1"] and "telemetry is" in t["bad"][0]["why"]
    cid = twin.control.command("c1", cmd="status", params={})
    _, msg, _ = d.wait_json(topic="devices/c1/commands")
    assert msg == {"id": cid, "cmd": "status", "params": {}}
    d.publish("devices/c1/commands/reply", {"id": cid, "code": 0, "data": {"state": "running"}})
    assert twin.control.wait_reply(cid)["reply"]["data"] == {"state": "running"}
