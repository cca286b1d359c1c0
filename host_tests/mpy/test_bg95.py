# BG95-M3 / BG770A-GL driver (the BG96 driver plus the family's differences) on the MicroPython unix port
# against the emulator's bg95 profile and a real TLS broker.
PORTS = ("micropython",)
TIMEOUT = 90

from cellmqtt.settings import ConfigError
from cellmqtt.transport import TlsError
from drivertest import ALL, bring_up, control, copy_certs, counters, make, mqtt, round_trip


async def test_bg95_tls_mqtt_with_sni_and_host_check(bg95, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bg95", bg95, tmp_path_str)
    sent = await bring_up(m)
    assert sent > 500
    st = control(bg95, {"cmd": "state"})["state"]
    ctx = st["ssl"]["1"]
    assert ctx["seclevel"] == 1 and ctx["sni"] == 1 and ctx["checkhost"] == 1, ctx
    t = mqtt(m)
    await t.connect("iot.test", 8883, "dev-95")  # the name the server certificate carries
    assert await round_trip(t, "dev-95/down", b'{"a":1}') == ("dev-95/down", b'{"a":1}')
    s = await m.signal()
    assert s["act"] == "eMTC" and s["band"] == "LTE BAND 20", s
    # the family takes payloads up to the bound its AT+QMTPUB=? prints (4096), in the fixed-length form
    assert t.FIXED_LEN and t.max_payload == 4096
    await t.publish("dev-95/big", bytes(range(256)) * 16, 1)  # 4096 bytes, acknowledged by the broker
    mid = bytes(range(256)) * 6  # 1536 bytes, Ctrl-Z and Esc included: back through the 2 KB receive buffer
    assert await round_trip(t, "dev-95/mid", mid) == ("dev-95/mid", mid)
    await t.disconnect()


async def test_bg95_refuses_a_server_that_does_not_carry_the_host_name(bg95, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bg95", bg95, tmp_path_str)
    await bring_up(m)
    t = mqtt(m)
    try:
        await t.connect("broker.test", 8883, "dev-95")  # the certificate names localhost and iot.test only
        assert False, "connected to a server whose certificate does not name the host"
    except TlsError as e:
        assert "broker.test" in str(e)
    # with the check turned off (tls.check_host false) the chain alone is verified: it connects
    m.close()
    m2 = make("bg95", bg95, tmp_path_str, tls={"check_host": False})
    await bring_up(m2)
    t2 = mqtt(m2)
    await t2.connect("broker.test", 8883, "dev-95")
    assert t2.is_connected()
    await t2.disconnect()


async def test_bg770a_starts_with_bare_errors_has_no_gsm_and_talks_mutual_tls(bg770a, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str, ALL)
    m = make("bg95", bg770a, tmp_path_str, tls={"cert": "client.pem", "key": "client.key"},
             modem={"scan": "lte", "rat": "m1"})
    await bring_up(m)  # sets AT+CMEE=1 itself: the part powers up with CMEE=0
    assert control(bg770a, {"cmd": "state"})["state"]["cmee"] == 1
    assert control(bg770a, {"cmd": "state"})["state"]["qcfg"]["nwscanmode"] == [3]
    t = mqtt(m)
    await t.connect("iot.test", 8883, "dev-770")
    assert await round_trip(t, "dev-770/x", b"hi") == ("dev-770/x", b"hi")
    await t.disconnect()
    # no GSM on this part: asking for it is refused by the module (the driver does not guess)
    m.close()
    m2 = make("bg95", bg770a, tmp_path_str, modem={"scan": "gsm"})
    await m2.start()
    try:
        await m2.configure_radio()
        assert False
    except Exception as e:  # noqa: BLE001
        assert type(e).__name__ == "CommandFailed", e


async def test_an_echoed_fixed_length_payload_is_dropped_not_taken_for_lines(bg95_echo, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bg95", bg95_echo, tmp_path_str)
    await bring_up(m)
    t = mqtt(m)
    await t.connect("iot.test", 8883, "dev-95e")
    payload = b'{"v":1}\r\n+QMTSTAT: 0,1\r\nOK\r\n{"w":2}'  # what a line reader would mistake for results
    assert await round_trip(t, "dev-95e/y", payload) == ("dev-95e/y", payload)
    assert t.is_connected() and m.at.echoed == 1 and m.at.unknown_count == 0, (m.at.echoed, m.at.unknown)
    assert counters(bg95_echo)["qmtpub"] == 1
    await t.disconnect()


def test_bg95_declares_the_familys_ranges():
    from app import config

    base = {"modem": {"type": "bg95"}, "mqtt": {"host": "h"},
            "cloud": {"profile": "huawei", "huawei": {"device_id": "d", "secret": "s"}}}
    cfg = config.validate(base)
    assert cfg["tls"]["sni"] is True and cfg["tls"]["check_host"] is True and cfg["modem"]["pdp_cid"] == 1
    for key, value in (("pdp_cid", 6), ("apn_auth", 3)):
        raw = dict(base, modem={"type": "bg95", key: value})
        try:
            config.validate(raw)
            assert False, key
        except ConfigError as e:
            assert e.key == "modem." + key
    raw = dict(base, modem={"type": "bg95", "psm": {}})  # a BC660K-GL key is not a BG95 setting
    try:
        config.validate(raw)
        assert False
    except ConfigError as e:
        assert e.key == "modem.psm" and "unknown" in str(e)
