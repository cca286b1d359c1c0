# BC660K-GL driver on the MicroPython unix port against the emulator (BC660K-GL profile, sleep on by default)
# and a real TLS broker: native MQTT and our MQTT client over the module's TLS socket.
PORTS = ("micropython",)
TIMEOUT = 120

import asyncio

from cellmqtt.at_transcript import Transcript
from cellmqtt.bc660k import Bc660k
from cellmqtt.modem import CertUploadError
from cellmqtt.transport import LinkLost, TlsError
from drivertest import ALL, bring_up, control, copy_certs, counters, make, mqtt, round_trip


class NoGate(Bc660k):
    GATE_MS = 0


class NoGateShortPush(NoGate):
    PUSH_TIMEOUT_MS = 1500


async def test_cold_start_with_sleep_on_then_native_tls_mqtt(bc660k, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bc660k", bc660k, tmp_path_str)
    await asyncio.sleep(2.5)  # the module boots and falls asleep before the host says anything
    sent = await bring_up(m)
    assert sent > 500 and m.time_trusted
    t = mqtt(m)
    await t.connect("broker.test", 8883, "nb-1")
    payload = b'{"v":"a,b"}\r\n\x1a\x00'
    assert await round_trip(t, "nb-1/down", payload) == ("nb-1/down", payload)
    c = counters(bc660k)
    assert c["cert_bytes"] == sent and c["mqtt_connects"] == 1 and c.get("sleeps", 0) >= 1
    # steady state: the module sleeps between exchanges and is woken past the lost first byte
    await m.allow_sleep()
    await asyncio.sleep(2.5)
    asleep = counters(bc660k)["sleeps"]
    async with m.awake():
        await t.publish("nb-1/up", b"telemetry", 1)
    c = counters(bc660k)
    assert c["sleeps"] > asleep - 1 and c.get("rx_dropped", 0) >= 1
    assert t.is_connected()


async def test_certificates_pushed_then_skipped(bc660k, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str, ALL)
    m = make("bc660k", bc660k, tmp_path_str, tls={"cert": "client.pem", "key": "client.key"})
    first = await bring_up(m)
    assert first == counters(bc660k)["cert_bytes"] > 2000
    assert control(bc660k, {"cmd": "certs"})["certs"]["clientkey"] == len(open(tmp_path_str + "/certs/client.key", "rb").read())
    m.close()
    m2 = make("bc660k", bc660k, tmp_path_str, tls={"cert": "client.pem", "key": "client.key"})
    assert await bring_up(m2) == 0
    assert counters(bc660k)["cert_bytes"] == first


async def test_wrong_length_reply_is_detected_and_retried(bc660k_9600, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    ours = open(tmp_path_str + "/certs/ca.pem", "rb").read()
    m = make("bc660k", bc660k_9600, tmp_path_str, cls=NoGate)  # send right after ">": the module loses the
    await m.start()  # first ~500 ms of input and stores the rest
    assert await m.provision_certs() == len(ours)
    assert any(("stored" in x and ("of %d" % len(ours)) in x and "retrying" in x) for x in m.logs), m.logs
    assert counters(bc660k_9600)["cert_pushes"] >= 2
    assert control(bc660k_9600, {"cmd": "certs"})["certs"]["cacert"] == len(ours)


async def test_lost_certificate_block_is_a_clear_error(bc660k, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    ours = open(tmp_path_str + "/certs/ca.pem", "rb").read()
    m = make("bc660k", bc660k, tmp_path_str, cls=NoGateShortPush)  # at 115200 bit/s the whole PEM and its
    await m.start()  # Ctrl-Z fall inside the prompt gate
    try:
        await m.provision_certs()
        assert False
    except CertUploadError as e:
        assert "cacert" in str(e) and "3 attempts" in str(e)
    assert open(tmp_path_str + "/certs/ca.pem", "rb").read() == ours  # the flash copy is never touched
    # Esc took the module out of data mode each time: it still answers, and a correct push (the gate) works
    m.close()
    m = make("bc660k", bc660k, tmp_path_str)
    await m.start()
    assert await m.provision_certs() == len(ours)


async def test_mqtt_over_the_tls_socket_text_and_hex(bc660k, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    for fmt in ([0, 1], [1, 1], [0, 0]):
        m = make("bc660k", bc660k, tmp_path_str, mqtt={"transport": "socket"}, tls={"dataformat": fmt})
        await bring_up(m)
        t = mqtt(m)
        await t.connect("broker.test", 8883, "nb-sock", keepalive=60)
        payload = b"bin \x00\x1a\x1b" + bytes(range(200))
        got = await round_trip(t, "nb-sock/x", payload)
        assert got == ("nb-sock/x", payload), (fmt, got)
        await t.disconnect()
        m.close()


async def test_socket_closed_by_peer_and_reconnect(bc660k, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bc660k", bc660k, tmp_path_str, mqtt={"transport": "socket"})
    await bring_up(m)
    t = mqtt(m)
    await t.connect("broker.test", 8883, "nb-sock", keepalive=60)
    control(bc660k, {"cmd": "fault", "do": {"action": "ssl_closed", "client": 0}})
    reason = await asyncio.wait_for(t.wait_lost(), 5)
    assert isinstance(reason, LinkLost)
    await t.connect("broker.test", 8883, "nb-sock", keepalive=60)
    assert await round_trip(t, "nb-sock/y", b"again") == ("nb-sock/y", b"again")


async def test_qmtstat_codes_and_module_reset(bc660k, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str)
    m = make("bc660k", bc660k, tmp_path_str)
    await bring_up(m)
    t = mqtt(m)
    await t.connect("broker.test", 8883, "nb-1")
    for code in (1, 2, 7):
        control(bc660k, {"cmd": "fault", "do": {"action": "qmtstat", "client": 0, "code": code}})
        reason = await asyncio.wait_for(t.wait_lost(), 5)
        assert reason.code == code
        await t.connect("broker.test", 8883, "nb-1")
        assert await round_trip(t, "nb-1/s%d" % code, b"s") == ("nb-1/s%d" % code, b"s")
    control(bc660k, {"cmd": "fault", "do": {"action": "reset", "mode": "crash"}})
    reason = await asyncio.wait_for(t.wait_lost(), 5)
    assert "restarted" in str(reason)
    assert await bring_up(m) == 0  # certificates are kept in NV
    await t.connect("broker.test", 8883, "nb-1")
    assert await round_trip(t, "nb-1/after", b"ok") == ("nb-1/after", b"ok")


async def test_allow_sleep_waits_for_an_exchange_in_progress(bc660k, tmp_path_str):
    # the end of the bring-up's hold must not let the module sleep under a running awake() exchange: the last
    # one to finish sends AT+QSCLK=2 (light sleep: no PSM configured)
    m = make("bc660k", bc660k, tmp_path_str)
    await m.start()
    assert control(bc660k, {"cmd": "state"})["state"]["sclk"] == 0
    async with m.awake():
        await m.allow_sleep()
        assert control(bc660k, {"cmd": "state"})["state"]["sclk"] == 0
        await m.signal()
    assert control(bc660k, {"cmd": "state"})["state"]["sclk"] == 2
    await m.allow_sleep()  # once only
    async with m.awake():
        assert control(bc660k, {"cmd": "state"})["state"]["sclk"] == 0
    assert control(bc660k, {"cmd": "state"})["state"]["sclk"] == 2


async def test_lost_first_byte_after_sleep(bc660k, tmp_path_str):
    m = make("bc660k", bc660k, tmp_path_str)
    await m.start()
    await m.wait_registered()
    await m.allow_sleep()
    await asyncio.sleep(2.5)
    assert control(bc660k, {"cmd": "state"})["state"]["asleep"]
    s = await m.signal()  # the engine's wake hook probes first; the command itself is answered
    assert s["act"] == "NB-IoT" and "rssi" in s and s["ci"]
    assert counters(bc660k).get("rx_dropped", 0) >= 1
    assert m.at.unknown_count == 0


async def test_mutual_tls(bc660k_mtls, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str, ALL)
    m = make("bc660k", bc660k_mtls, tmp_path_str, tls={"cert": "client.pem", "key": "client.key"})
    await bring_up(m)
    t = mqtt(m)
    await t.connect("broker.test", 8883, "nb-m")
    assert await round_trip(t, "nb-m/x", b"mtls") == ("nb-m/x", b"mtls")


async def test_untrusted_server_is_a_tls_error(bc660k, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str, ("other-ca.pem",))
    m = make("bc660k", bc660k, tmp_path_str, mqtt={"transport": "socket"}, tls={"ca": "other-ca.pem"})
    await bring_up(m)
    try:
        await mqtt(m).connect("broker.test", 8883, "nb-x")
        assert False
    except TlsError as e:
        assert "certificate" in str(e)


async def test_clock_without_network_time(bc660k_nonitz, tmp_path_str):
    m = make("bc660k", bc660k_nonitz, tmp_path_str)
    await m.start()
    await m.wait_registered()
    await m.pdp_up()
    assert await m.read_clock() is not None and not m.time_trusted  # unquoted 2000-01-01 clock
    await m.sync_clock()
    assert m.time_trusted


async def test_psm_and_edrx_applied_when_different(bc660k, tmp_path_str):
    m = make("bc660k", bc660k, tmp_path_str, modem={"psm": {"tau": "00100011", "active": "00000101"}, "edrx": "0101"})
    await m.start()
    await m.configure_power()
    first = counters(bc660k)["commands"].get("CPSMS", 0)
    assert first == 1
    m.close()
    m2 = make("bc660k", bc660k, tmp_path_str, modem={"psm": {"tau": "00100011", "active": "00000101"}, "edrx": "0101"})
    await m2.start()
    await m2.configure_power()
    assert counters(bc660k)["commands"].get("CPSMS", 0) == first


async def test_secrets_absent_from_the_transcript(bc660k, pki, tmp_path_str):
    copy_certs(pki, tmp_path_str, ALL)
    out = []
    m = make("bc660k", bc660k, tmp_path_str, transcript=Transcript(out.append), tls={"cert": "client.pem", "key": "client.key"})
    await bring_up(m)
    t = mqtt(m)
    await t.connect("broker.test", 8883, "nb-1", "nb-1", "pw-secret-9")
    text = "".join(out)
    key = open(tmp_path_str + "/certs/client.key").read().split("\n")[3]
    assert "QSSLCFG" in text and "QMTCONN" in text
    assert "pw-secret-9" not in text and key not in text
