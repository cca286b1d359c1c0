# BG96 driver on the MicroPython unix port against the emulator (BG96 profile) and a real TLS broker.
PORTS = ("micropython",)
TIMEOUT = 90

import asyncio

from cellmqtt.at_transcript import Transcript
from cellmqtt.certs import CertError
from cellmqtt.modem import CertUploadError, RegistrationError, SimError
from cellmqtt.transport import ConnectRefused, DnsError, LinkLost, MqttError, NetworkError, PayloadError, TlsError
from drivertest import ALL, bring_up, control, copy_certs, counters, make, mqtt, round_trip, wait_for


async def test_cold_start_tls_mqtt_round_trip(bg96, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bg96", bg96, tmp_path_str)
    sent = await bring_up(m)
    assert sent > 500 and m.time_trusted and m.registered and m.pdp_active
    t = mqtt(m)
    await t.connect("broker.test", 8883, "dev-1")
    assert await round_trip(t, "dev-1/down", b'{"a":"b,c"}') == ("dev-1/down", b'{"a":"b,c"}')
    c = counters(bg96)
    assert c["upload_bytes"] == sent and c["mqtt_connects"] == 1
    await t.disconnect()
    assert not t.is_connected()
    await t.disconnect()  # idempotent


async def test_unchanged_certificates_upload_nothing(bg96, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str, ALL)
    m = make("bg96", bg96, tmp_path_str, tls={"cert": "client.pem", "key": "client.key"})
    first = await bring_up(m)
    assert first == counters(bg96)["upload_bytes"] > 2000
    # an MCU restart: a new driver, the module keeps its files
    m.close()
    m2 = make("bg96", bg96, tmp_path_str, tls={"cert": "client.pem", "key": "client.key"})
    assert await bring_up(m2) == 0
    assert counters(bg96)["upload_bytes"] == first
    # a changed certificate on flash is uploaded again, only that one
    with open(tmp_path_str + "/certs/ca.pem", "ab") as f:
        f.write(b"\n")
    m2.close()
    m3 = make("bg96", bg96, tmp_path_str, tls={"cert": "client.pem", "key": "client.key"})
    n = await m3.provision_certs()
    assert n == len(open(tmp_path_str + "/certs/ca.pem", "rb").read())
    names = sorted(f["name"] for f in control(bg96, {"cmd": "files"})["files"])
    assert names == ["ca.pem", "client.key", "client.pem"]


async def test_corrupted_upload_detected_by_checksum_then_retried(bg96, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bg96", bg96, tmp_path_str)
    await m.start()
    control(bg96, {"cmd": "fault", "do": {"action": "corrupt_upload", "count": 1}})
    size = await m.provision_certs()
    c = counters(bg96)
    assert c["uploads"] == 2 and size > 0  # the first, corrupted copy was detected and replaced
    ours = open(tmp_path_str + "/certs/ca.pem", "rb").read()
    f = control(bg96, {"cmd": "files"})["files"][0]
    from cellmqtt.certs import checksum
    assert f["size"] == len(ours) and int(str(f["checksum"]), 16) == checksum(ours)
    # persistent corruption: a clear error after the retries, flash copy untouched
    control(bg96, {"cmd": "fault", "do": {"action": "corrupt_upload", "count": 5}})
    with open(tmp_path_str + "/certs/ca.pem", "ab") as fh:
        fh.write(b"\n")
    try:
        await m.provision_certs()
        assert False
    except CertUploadError as e:
        assert "ca.pem" in str(e) and "checksum" in str(e)
    assert open(tmp_path_str + "/certs/ca.pem", "rb").read() == ours + b"\n"


async def test_bad_pem_on_flash_names_the_file(bg96, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    with open(tmp_path_str + "/certs/ca.pem", "wb") as f:
        f.write(b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    m = make("bg96", bg96, tmp_path_str)
    await m.start()
    try:
        await m.provision_certs()
        assert False
    except CertError as e:
        assert "certs/ca.pem" in str(e)
    assert counters(bg96).get("uploads", 0) == 0


async def test_every_qmtstat_code_and_a_module_reset_reconnect_cleanly(bg96, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bg96", bg96, tmp_path_str)
    await bring_up(m)
    t = mqtt(m)
    await t.connect("broker.test", 8883, "dev-1")
    for code in range(1, 8):
        control(bg96, {"cmd": "fault", "do": {"action": "qmtstat", "client": 0, "code": code}})
        reason = await asyncio.wait_for(t.wait_lost(), 5)
        assert isinstance(reason, LinkLost) and reason.code == code, (code, reason)
        assert not t.is_connected()
        await t.connect("broker.test", 8883, "dev-1")
        assert await round_trip(t, "dev-1/s%d" % code, b"x%d" % code) == ("dev-1/s%d" % code, b"x%d" % code)
    events = []
    m.listen(lambda kind, value: events.append(kind))
    control(bg96, {"cmd": "fault", "do": {"action": "reset", "mode": "crash"}})
    reason = await asyncio.wait_for(t.wait_lost(), 5)
    assert "restarted" in str(reason) and "reset" in events
    await bring_up(m)  # the module lost everything volatile; files stay: nothing to upload
    await t.connect("broker.test", 8883, "dev-1")
    assert await round_trip(t, "dev-1/after-reset", b"ok") == ("dev-1/after-reset", b"ok")
    assert counters(bg96)["uploads"] == 1


async def test_v1_firmware_gets_no_native_session(bg96_a07, pki, tmp_path_str):
    # BG96MAR02A07M1G prints +QMTRECV without a length: a payload could forge AT lines, so no native session
    copy_certs(pki, tmp_path_str)
    m = make("bg96", bg96_a07, tmp_path_str)
    await bring_up(m)
    t = mqtt(m)
    try:
        await t.connect("broker.test", 8883, "dev-1")
        assert False
    except MqttError as e:
        assert "socket" in str(e) and "recv/mode" in str(e)
    assert counters(bg96_a07).get("mqtt_connects", 0) == 0 and not t.sent_connect


async def test_refused_fixed_length_form_falls_back_to_ctrl_z_and_remembers(bg96_nofixed, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bg96", bg96_nofixed, tmp_path_str)
    await bring_up(m)
    t = mqtt(m)
    await t.connect("broker.test", 8883, "dev-1")
    assert t.FIXED_LEN  # the test form lists it
    assert await round_trip(t, "dev-1/text", b"plain text") == ("dev-1/text", b"plain text")
    assert not t.FIXED_LEN and m.memo.get("qmt_caps")[0] is False
    before = counters(bg96_nofixed).get("qmtpub", 0)
    try:  # the Ctrl-Z form cannot carry 0x1A: refused before anything reaches the module
        await t.publish("dev-1/bin", b"a\x1ab", 1)
        assert False
    except PayloadError as e:
        assert "Ctrl-Z" in str(e)
    assert counters(bg96_nofixed).get("qmtpub", 0) == before
    try:
        await t.publish("dev-1/big", b"x" * 1549, 1)
        assert False
    except PayloadError:
        pass
    # an MCU restart: the memo keeps the Ctrl-Z form, no failed fixed-length attempt first
    await t.disconnect()
    m.close()
    m2 = make("bg96", bg96_nofixed, tmp_path_str)
    await bring_up(m2)
    t2 = mqtt(m2)
    await t2.connect("broker.test", 8883, "dev-1")
    assert not t2.FIXED_LEN
    assert await round_trip(t2, "dev-1/again", b"again") == ("dev-1/again", b"again")


async def test_silent_qmtopen_query_after_an_mcu_reset(bg96_silent_open, pki, tmp_path_str):
    # LTEmC: BGx firmware that never answers AT+QMTOPEN? on the UART; an MCU reset leaves the client open
    copy_certs(pki, tmp_path_str)
    m = make("bg96", bg96_silent_open, tmp_path_str)
    await bring_up(m)
    t = mqtt(m)
    await t.connect("broker.test", 8883, "dev-1")
    m.close()  # the MCU resets; the module keeps its session
    m2 = make("bg96", bg96_silent_open, tmp_path_str)
    await bring_up(m2)
    t2 = mqtt(m2)
    await t2.connect("broker.test", 8883, "dev-1")  # closes the stale client first, never asks QMTOPEN?
    assert await round_trip(t2, "dev-1/after", b"ok") == ("dev-1/after", b"ok")


async def test_ctrl_z_payload_published_intact_on_later_firmware(bg96_later, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bg96", bg96_later, tmp_path_str)
    await bring_up(m)
    t = mqtt(m)
    await t.connect("broker.test", 8883, "dev-1")
    payload = b'{"k":"a\x1ab\x1bc"}\r\n\x00end'
    got = await round_trip(t, "dev-1/bin", payload)
    assert got == ("dev-1/bin", payload), (got, m.at.unknown)
    big = bytes(range(256)) * 6  # 1536 bytes, every byte value, length-framed +QMTRECV
    got = await round_trip(t, "dev-1/big", big)
    assert got == ("dev-1/big", big), (len(got[1]), got[1][:40], m.at.unknown, m.logs[-3:])


async def test_qmtrecv_in_the_middle_of_a_qmtpub_is_delivered(bg96, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bg96", bg96, tmp_path_str)
    await bring_up(m)
    t = mqtt(m)
    got = []
    t.on_message(lambda tp, pl: got.append((tp, pl)))
    await t.connect("broker.test", 8883, "dev-1")
    line = '+QMTRECV: 0,7,"dev-1/cmd","{"cmd":"x","v":"1,2"}"'
    control(bg96, {"cmd": "fault", "do": {"action": "urc", "line": line, "where": "after_echo"}})
    await t.publish("dev-1/up", b"telemetry", 1)
    assert got == [("dev-1/cmd", b'{"cmd":"x","v":"1,2"}')]
    assert m.at.unknown_count == 0


async def test_secrets_absent_from_the_transcript(bg96_auth, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str, ALL)
    out = []
    m = make("bg96", bg96_auth, tmp_path_str, transcript=Transcript(out.append),
             tls={"cert": "client.pem", "key": "client.key"}, modem={"apn_pass": "apn-pw-77"})
    await bring_up(m)
    t = mqtt(m)
    await t.connect("broker.test", 8883, "dev-1", "dev-1", "s3cret-pw")
    text = "".join(out) + "".join(m.logs)
    key = open(tmp_path_str + "/certs/client.key").read().split("\n")[3]
    assert "AT+QMTCONN" in text and "QFUPL" in text
    for secret in ("s3cret-pw", "apn-pw-77", key):
        assert secret not in text, secret
    emu = open(bg96_auth["transcript"]).read()
    for secret in ("s3cret-pw", "apn-pw-77", key):
        assert secret not in emu


async def test_connect_errors_are_told_apart(bg96_auth, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bg96", bg96_auth, tmp_path_str)
    await bring_up(m)
    t = mqtt(m)
    try:
        await t.connect("broker.test", 8883, "dev-1", "dev-1", "wrong")
        assert False
    except ConnectRefused as e:
        assert e.code == 4 and e.credentials() and "bad user name or password" in str(e)
    try:
        await t.connect("no-such-host.invalid", 8883, "dev-1")
        assert False
    except DnsError as e:
        assert "no-such-host.invalid" in str(e)
    try:
        await t.connect("127.0.0.1", 9, "dev-1")
        assert False
    except TlsError:
        assert False, "an unreachable port is not a TLS failure"
    except NetworkError as e:
        assert "127.0.0.1:9" in str(e)
    control(bg96_auth, {"cmd": "fault", "do": {"action": "tls_fail", "kind": "cert"}})
    try:
        await t.connect("broker.test", 8883, "dev-1", "dev-1", "s3cret-pw")
        assert False
    except TlsError as e:
        assert "certificate" in str(e)
    await t.connect("broker.test", 8883, "dev-1", "dev-1", "s3cret-pw")  # and it still works afterwards
    assert t.is_connected()


async def test_server_not_trusted_by_the_uploaded_ca_is_a_tls_error(bg96, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str, ("other-ca.pem",))
    m = make("bg96", bg96, tmp_path_str, tls={"ca": "other-ca.pem"})
    await bring_up(m)
    try:
        await mqtt(m).connect("broker.test", 8883, "dev-1")
        assert False
    except TlsError as e:
        assert "trusted" in str(e)


async def test_mutual_tls(bg96_mtls, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str, ALL)
    m = make("bg96", bg96_mtls, tmp_path_str, tls={"cert": "client.pem", "key": "client.key"})
    await bring_up(m)
    t = mqtt(m)
    await t.connect("broker.test", 8883, "dev-1")
    assert await round_trip(t, "dev-1/m", b"mtls") == ("dev-1/m", b"mtls")
    ssl = control(bg96_mtls, {"cmd": "ssl"})
    assert "2" in str(ssl)  # seclevel 2 with a client certificate


async def test_sim_pin_entered_once_and_missing_sim(bg96_pin, bg96_nosim, tmp_path_str):
    m = make("bg96", bg96_pin, tmp_path_str, modem={"pin": "1234"})
    await m.start()
    await m.check_sim()
    assert m.sim_ready
    m2 = make("bg96", bg96_nosim, tmp_path_str)
    await m2.start()
    try:
        await m2.check_sim()
        assert False
    except SimError as e:
        assert "no SIM" in str(e)


async def test_wrong_pin_is_not_retried(bg96_pin, tmp_path_str):
    m = make("bg96", bg96_pin, tmp_path_str, modem={"pin": "0000"})
    await m.start()
    try:
        await m.check_sim()
        assert False
    except SimError as e:
        assert "not retried" in str(e) and "0000" not in str(e)
    assert counters(bg96_pin)["commands"].get("CPIN", 0) <= 2  # one query, one entry


async def test_radio_settings_applied_only_when_different(bg96, tmp_path_str):
    m = make("bg96", bg96, tmp_path_str, modem={"scan": "lte", "rat": "m1", "bands": {"gsm": "0", "m1": "0x80084", "nb1": "0x80084"}})
    await m.start()
    changed = await m.configure_radio()
    assert changed >= 1, control(bg96, {"cmd": "state"})["state"].get("qcfg")
    m.close()
    m2 = make("bg96", bg96, tmp_path_str, modem={"scan": "lte", "rat": "m1", "bands": {"gsm": "0", "m1": "0x80084", "nb1": "0x80084"}})
    before = counters(bg96)["commands"].get("QCFG", 0)
    await m2.start()
    assert await m2.configure_radio() == 0
    after = counters(bg96)["commands"].get("QCFG", 0)
    assert after == before, (before, after)  # remembered: not even queried


async def test_registration_lost_and_regained(bg96, tmp_path_str):
    m = make("bg96", bg96, tmp_path_str)
    await m.start()
    await m.wait_registered()
    events = []
    m.listen(lambda k, v: events.append((k, v)))
    control(bg96, {"cmd": "fault", "do": {"action": "registration_lost", "stat": 2, "recover_s": 0.5}})
    assert await wait_for(lambda: not m.registered, 2000)
    assert await m.wait_registered(5000) in (1, 5)
    assert ("reg", 2) in events


async def test_registration_deadline(bg96_noreg, tmp_path_str):
    m = make("bg96", bg96_noreg, tmp_path_str)
    await m.start()
    try:
        await m.wait_registered(1500)
        assert False
    except RegistrationError as e:
        assert "not registered after 1 s" in str(e)


async def test_pdp_already_active_and_network_deactivation(bg96, tmp_path_str):
    m = make("bg96", bg96, tmp_path_str)
    await m.start()
    await m.wait_registered()
    ip = await m.pdp_up()
    assert ip and m.pdp_active
    assert await m.pdp_up() == ip  # QIACT answers ERROR on an active context: treated as success
    events = []
    m.listen(lambda k, v: events.append(k))
    control(bg96, {"cmd": "fault", "do": "pdp_lost"})
    assert await wait_for(lambda: not m.pdp_active, 2000) and "pdp" in events
    assert await m.pdp_up()
    assert counters(bg96)["commands"].get("QIDEACT", 0) == 1


async def test_network_time_when_the_network_sends_none(bg96_nonitz, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bg96", bg96_nonitz, tmp_path_str)
    await m.start()
    await m.wait_registered()
    await m.pdp_up()
    t0 = await m.read_clock()
    assert t0 is not None and not m.time_trusted  # the 1980 power-on clock
    t = await m.sync_clock()
    assert m.time_trusted and abs(t - m.now()) <= 1
    assert counters(bg96_nonitz)["commands"].get("QNTP", 0) == 1


async def test_stale_client_from_before_an_mcu_reset_is_closed(bg96, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bg96", bg96, tmp_path_str)
    await bring_up(m)
    await mqtt(m).connect("broker.test", 8883, "dev-1")
    # the MCU restarts; the module keeps its MQTT client open
    m.close()
    m2 = make("bg96", bg96, tmp_path_str)
    await bring_up(m2)
    t2 = mqtt(m2)
    await t2.connect("broker.test", 8883, "dev-1")
    assert await round_trip(t2, "dev-1/x", b"again") == ("dev-1/x", b"again")
    assert counters(bg96)["commands"].get("QMTCLOSE", 0) >= 1


async def test_in_flight_limit_and_concurrent_publishes(bg96, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bg96", bg96, tmp_path_str)
    await bring_up(m)
    t = mqtt(m)
    got = []
    t.on_message(lambda tp, pl: got.append(pl))
    await t.connect("broker.test", 8883, "dev-1")
    await t.subscribe("dev-1/n", 1)
    await asyncio.gather(*[t.publish("dev-1/n", b"%d" % i, 1) for i in range(12)])
    assert await wait_for(lambda: len(got) == 12)
    assert sorted(got) == sorted(b"%d" % i for i in range(12))
    assert counters(bg96).get("qmtpub_refused_inflight", 0) == 0


async def test_mqtt_over_the_tls_socket(bg96, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bg96", bg96, tmp_path_str, mqtt={"transport": "socket"})
    await bring_up(m)
    t = mqtt(m)
    await t.connect("broker.test", 8883, "dev-sock", keepalive=30)
    payload = b"\x00\x1a\x1b binary " + bytes(range(256))
    assert await round_trip(t, "dev-sock/x", payload) == ("dev-sock/x", payload)
    control(bg96, {"cmd": "fault", "do": {"action": "ssl_closed", "client": 1}})
    reason = await asyncio.wait_for(t.wait_lost(), 5)
    assert isinstance(reason, LinkLost), repr(reason)
    await t.connect("broker.test", 8883, "dev-sock", keepalive=30)
    assert t.is_connected()


async def test_signal_and_network_info(bg96, tmp_path_str):
    m = make("bg96", bg96, tmp_path_str)
    await m.start()
    await m.wait_registered()
    s = await m.signal()
    assert -113 <= s["rssi"] <= -51 and s["act"] and s["oper"] and "band" in s and s["ci"]
