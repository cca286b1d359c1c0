"""Modem emulator: every fault action and trigger, BC660K-GL sleep, and the transcript format/redaction.

Fault scripts are given as inline JSON (``faults=[...]``) or fired through the control socket.
"""

import re
import time
from pathlib import Path

from fixtures_modemsim import AtPort

OK = rb"\r\nOK\r\n"  # a regex for read_until
OKB = b"\r\nOK\r\n"


def boot(m, echo=True):
    p = AtPort(m.info["port"])
    p.wait_boot(marker=b"+QIND: SMS DONE\r\n" if m.info["profile"] == "bg96" else b"RDY\r\n")
    if not echo:
        p.cmd("ATE0")
    return p


# ---- response faults -------------------------------------------------------------------------------------


def test_no_reply_on_nth_and_every(start_modemsim):
    m = start_modemsim("bg96", faults=[
        {"when": {"command": "CSQ", "nth": 2, "every": True}, "do": "no_reply"},
        {"when": {"command": "AT+CGMI", "nth": 1}, "do": "no_reply"},
    ])
    p = boot(m)
    assert p.cmd("AT+CSQ").endswith(OKB)
    p.write(b"AT+CSQ\r")
    assert p.read_for(0.4) == b"AT+CSQ\r"  # echoed, never answered
    assert p.cmd("AT+CSQ").endswith(OKB)
    p.write(b"AT+CSQ\r")
    assert p.read_for(0.3) == b"AT+CSQ\r"  # the 4th: every 2nd
    p.write(b"AT+CGMI\r")
    assert p.read_for(0.3) == b"AT+CGMI\r"
    assert p.cmd("AT+CGMI") == b"AT+CGMI\r\r\nQuectel\r\n\r\nOK\r\n"
    assert m.counters()["swallowed"] == 3
    rules = m.control({"cmd": "state"})["state"]["faults"]
    assert rules[0]["seen"] == 4 and rules[0]["fired"] == 2


def test_late_reply_spills_into_the_next_command(start_modemsim):
    m = start_modemsim("bg96", faults=[{"when": {"command": "CSQ"}, "do": {"action": "late_reply", "ms": 500}}])
    p = boot(m, echo=False)
    p.wait_registered()
    p.write(b"AT+CSQ\r")
    assert p.read_for(0.2) == b""  # the host times out...
    assert p.cmd("AT") == b"\r\nOK\r\n"  # ...and sends the next command, answered at once
    assert p.read_until(OK, 2) == b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n"  # then the late answer arrives


def test_garbage_before_after_instead(start_modemsim):
    m = start_modemsim("bg96", faults=[
        {"when": {"command": "CGMI"}, "do": {"action": "garbage", "data": "\u00ff\u0000junk\r\n+QMTST"}},
        {"when": {"command": "CGMM"}, "do": {"action": "garbage", "data": "+CME ERR", "where": "after"}},
        {"when": {"command": "CGMR"}, "do": {"action": "garbage", "data": "\r\nOK\r", "where": "instead"}},
    ])
    p = boot(m, echo=False)
    p.write(b"AT+CGMI\r")
    assert p.read_until(OK) == b"\xff\x00junk\r\n+QMTST\r\nQuectel\r\n\r\nOK\r\n"
    p.write(b"AT+CGMM\r")
    assert p.read_until(rb"\+CME ERR") == b"\r\nBG96\r\n\r\nOK\r\n+CME ERR"
    p.write(b"AT+CGMR\r")
    assert p.read_for(0.3) == b"\r\nOK\r"  # a partial line: no LF


def test_urc_after_echo_and_mid_response(start_modemsim):
    m = start_modemsim("bg96", faults=[
        {"when": {"command": "CPIN"}, "do": {"action": "urc", "line": '+QIURC: "pdpdeact",1'}},
        {"when": {"command": "I"}, "do": {"action": "urc", "line": "+QMTSTAT: 0,1", "where": "mid_response"}},
        {"when": {"command": "CSQ"}, "do": {"action": "urc", "line": "+CEREG: 1", "where": "after_response"}},
    ])
    p = boot(m)
    p.wait_registered()
    assert p.cmd("AT+CPIN?") == b'AT+CPIN?\r\r\n+QIURC: "pdpdeact",1\r\n\r\n+CPIN: READY\r\n\r\nOK\r\n'
    assert p.cmd("ATI") == b"ATI\r\r\nQuectel\r\n\r\n+QMTSTAT: 0,1\r\nBG96\r\nRevision: BG96MAR02A08M1G\r\n\r\nOK\r\n"
    p.write(b"AT+CSQ\r")
    assert p.read_until(rb"\+CEREG: 1\r\n") == b"AT+CSQ\r\r\n+CSQ: 20,99\r\n\r\nOK\r\n\r\n+CEREG: 1\r\n"


def test_slow_output_trickles_and_delays_the_next_answer(start_modemsim):
    m = start_modemsim("bg96", faults=[{"when": {"command": "CGMM"}, "do": {"action": "slow_output", "byte_ms": 40}}])
    p = boot(m, echo=False)
    t = time.monotonic()
    p.write(b"AT+CGMM\r")
    first = p.read_for(0.15)
    assert 0 < len(first) < len(b"\r\nBG96\r\n\r\nOK\r\n")  # only a few bytes so far
    p.write(b"AT+CGMI\r")  # the host gives up and moves on
    rest = p.read_until(rb"Quectel\r\n\r\nOK\r\n", 3)
    assert first + rest == b"\r\nBG96\r\n\r\nOK\r\n\r\nQuectel\r\n\r\nOK\r\n"
    assert time.monotonic() - t > 14 * 0.04


# ---- power faults ----------------------------------------------------------------------------------------


def test_reset_crash_and_clean(start_modemsim):
    m = start_modemsim("bg96", settings={"reset": 0.3}, faults=[
        {"when": {"command": "CSQ"}, "do": {"action": "reset", "mode": "crash"}},
        {"when": {"command": "CGMI"}, "do": {"action": "reset", "mode": "clean"}},
    ])
    p = boot(m, echo=False)
    p.write(b"AT+CSQ\r")
    out = p.read_until(rb"RDY\r\n", 2)
    assert out == b"\r\nRDY\r\n"  # no answer, no POWERED DOWN: it just reboots
    p.read_until(rb"SMS DONE\r\n")
    assert p.cmd("AT") == b"AT\r\r\nOK\r\n"  # ATE0 was volatile
    p.write(b"AT+CGMI\r")
    out = p.read_until(rb"RDY\r\n", 2)
    assert out.startswith(b"AT+CGMI\r") and b"\r\nPOWERED DOWN\r\n" in out and b"Quectel" not in out
    assert m.counters()["resets"] == 2


def test_qpowd_then_power_on_and_psm_wake(start_modemsim):
    m = start_modemsim("bg96")
    p = boot(m, echo=False)
    assert p.cmd("AT+QPOWD") == b"\r\nOK\r\n"
    assert p.read_until(rb"POWERED DOWN\r\n") == b"\r\nPOWERED DOWN\r\n"
    p.write(b"AT\r")
    assert p.read_for(0.4) == b""
    m.control({"cmd": "fault", "do": "power_on"})
    p.read_until(rb"SMS DONE\r\n")
    assert p.cmd("AT") == b"AT\r\r\nOK\r\n"
    m.control({"cmd": "fault", "do": "psm"})
    assert p.read_until(rb"PSM POWER DOWN\r\n") == b"\r\nPSM POWER DOWN\r\n"
    p.write(b"AT\r")
    assert p.read_for(0.3) == b""  # UART dead in PSM
    m.control({"cmd": "fault", "do": "wake"})
    assert p.read_until(rb"RDY\r\n").endswith(b"\r\nRDY\r\n")  # waking replays the boot sequence


def test_drop_first_byte(start_modemsim):
    m = start_modemsim("bg96")
    p = boot(m, echo=False)
    m.control({"cmd": "fault", "do": "drop_first_byte"})
    p.write(b"AT+CSQ\r")
    assert p.read_for(0.3) == b""  # "T+CSQ" is not a command
    assert p.cmd("AT+CSQ").endswith(OKB)
    assert m.counters()["junk_lines"] == 1
    assert 'RX! "A" dropped: fault drop_first_byte' in m.transcript_text()


def test_tls_fail_fault_fails_the_next_handshake_only(broker, start_modemsim, pki):
    m = start_modemsim("bg96", resolve=["broker.test=127.0.0.1:%d" % broker["tls_port"]],
                       faults=[{"when": {"command": "QMTOPEN", "nth": 1}, "do": "tls_fail"}])
    p = boot(m, echo=False)
    p.wait_registered()
    p.cmd("AT+QIACT=1")
    ca = Path(pki["ca_pem"]).read_bytes()
    p.write(b'AT+QFUPL="ca.pem",%d\r' % len(ca))
    p.read_until(rb"CONNECT\r\n")
    p.write(ca)
    p.read_until(OK)
    for line in ('AT+QSSLCFG="cacert",0,"ca.pem"', 'AT+QSSLCFG="seclevel",0,1', 'AT+QMTCFG="ssl",0,1,0'):
        p.cmd(line)
    p.cmd('AT+QMTOPEN=0,"broker.test",8883')
    assert p.read_until(rb"\+QMTOPEN: [^\r]*\r\n", 5).endswith(b"+QMTOPEN: 0,-1\r\n")
    p.cmd('AT+QMTOPEN=0,"broker.test",8883')
    assert p.read_until(rb"\+QMTOPEN: [^\r]*\r\n", 5).endswith(b"+QMTOPEN: 0,0\r\n")
    assert m.counters()["tls_failures"] == 1


# ---- triggers --------------------------------------------------------------------------------------------


def test_after_s_event_match_and_delay_triggers(start_modemsim):
    m = start_modemsim("bg96", settings={"reg": 0.3}, faults=[
        {"when": {"after_s": 0.8}, "do": {"action": "urc", "line": "+TIMER: 1"}},
        {"when": {"event": "registered"}, "do": {"action": "urc", "line": "+EVENT: registered"}},
        {"when": {"command": "QMTCFG", "match": "keepalive"}, "do": {"action": "urc", "line": "+MATCH: 1",
                                                                      "delay_ms": 300}},
    ])
    t0 = time.monotonic()
    p = boot(m, echo=False)
    assert p.read_until(rb"\+EVENT: registered\r\n", 2).endswith(b"\r\n+EVENT: registered\r\n")
    p.cmd('AT+QMTCFG="version",0')  # no match
    p.cmd('AT+QMTCFG="keepalive",0')
    t1 = time.monotonic()
    assert p.read_until(rb"\+MATCH: 1\r\n", 2).endswith(b"\r\n+MATCH: 1\r\n")
    assert time.monotonic() - t1 >= 0.25
    p.read_until(rb"\+TIMER: 1\r\n", 2)
    assert time.monotonic() - t0 >= 0.7
    fired = {r["name"]: r["fired"] for r in m.control({"cmd": "state"})["state"]["faults"]}
    assert fired == {"rule0": 1, "rule1": 1, "rule2": 1}


def test_faults_from_a_file(start_modemsim, tmp_path):
    f = tmp_path / "faults.json"
    f.write_text('[{"name": "first-csq", "when": {"command": "CSQ"}, "do": "no_reply"}]')
    m = start_modemsim("bg96", faults=str(f))
    p = boot(m, echo=False)
    p.write(b"AT+CSQ\r")
    assert p.read_for(0.3) == b""
    assert m.control({"cmd": "state"})["state"]["faults"][0]["name"] == "first-csq"


# ---- BC660K-GL sleep -------------------------------------------------------------------------------------


def test_bc660k_sleep_loses_the_first_byte(start_modemsim):
    m = start_modemsim("bc660k", settings={"sleep_idle": 0.4, "wake": 0.2})
    p = boot(m, echo=False)
    assert p.cmd("AT+QSCLK?") == b"\r\n+QSCLK: 1\r\n\r\nOK\r\n"  # on by default
    time.sleep(0.6)
    t = time.monotonic()
    p.write(b"AT\r")
    assert p.read_until(rb"\r\n", 2) == b"\r\n"  # only a line break, after the wake-up time
    assert time.monotonic() - t >= 0.15
    assert p.read_for(0.2) == b""
    assert p.cmd("AT") == b"\r\nOK\r\n"  # the retry works
    # a command sent into sleep vanishes: no prompt for a QMTPUB
    time.sleep(0.6)
    p.write(b'AT+QMTPUB=0,0,0,0,"t"\r')
    assert p.read_for(0.5) == b"\r\n"
    c = m.counters()
    assert c["sleeps"] == 2 and c["rx_dropped"] == 2
    assert "dropped: module asleep (this byte woke it)" in m.transcript_text()


def test_bc660k_qsclk_0_keeps_it_awake_and_fault_sleep(start_modemsim):
    m = start_modemsim("bc660k", settings={"sleep_idle": 0.3})
    p = boot(m, echo=False)
    assert p.cmd("AT+QSCLK=0") == b"\r\nOK\r\n"
    time.sleep(0.5)
    assert p.cmd("AT") == b"\r\nOK\r\n"
    m.control({"cmd": "fault", "do": "sleep"})  # forced, even with QSCLK=0
    p.write(b"AT\r")
    assert p.read_until(rb"\r\n", 2) == b"\r\n"
    assert p.cmd("AT") == b"\r\nOK\r\n"
    assert p.cmd("AT+QSCLK=1") == b"\r\nOK\r\n"
    time.sleep(0.5)
    assert m.control({"cmd": "state"})["state"]["asleep"] is True
    bg = start_modemsim("bg96")
    assert bg.control({"cmd": "fault", "do": "sleep"})["ok"] is False  # BG96 has no such sleep


def test_bc660k_urcs_lost_in_data_mode(start_modemsim):
    m = start_modemsim("bc660k", settings={"sleep_idle": 30})
    p = boot(m, echo=False)
    p.write(b'AT+QSSLCFG=0,0,"cacert"\r')
    p.read_until(rb"> ")
    m.control({"cmd": "fault", "do": {"action": "urc", "line": "+LOST: 1"}})
    time.sleep(0.6)
    p.write(b"x\x1a")
    out = p.read_until(OK)
    assert out == b'x\r\n+QSSLCFG: 0,0,"cacert",1\r\n\r\nOK\r\n'  # the pushed content echoed (AN V1.2 6.2)
    assert p.read_for(0.2) == b""
    assert m.counters()["urc_lost"] == 1


def test_bg96_urcs_held_in_data_mode(start_modemsim):
    m = start_modemsim("bg96")
    p = boot(m, echo=False)
    p.write(b'AT+QFUPL="h.txt",3\r')
    p.read_until(rb"CONNECT\r\n")
    m.control({"cmd": "fault", "do": {"action": "urc", "line": "+HELD: 1"}})
    time.sleep(0.1)
    p.write(b"abc")
    assert p.read_until(rb"\+HELD: 1\r\n") == b"\r\n+QFUPL: 3,262\r\n\r\nOK\r\n\r\n+HELD: 1\r\n"


# ---- transcript --------------------------------------------------------------------------------------------


def test_transcript_format_and_credentials_redacted_in_command_echo_and_dropped_bytes(start_modemsim):
    m = start_modemsim("bg96", settings={"boot": 0.6})
    p = AtPort(m.info["port"])
    p.write(b'AT+QMTCONN=0,"client-1","early-user","early-pass"\r')  # before RDY: dropped
    p.read_until(rb"SMS DONE\r\n")
    p.write(b'AT+QMTCONN=0,"client-1",')  # split across reads
    time.sleep(0.05)
    p.write(b'"the-user","the-pa')
    time.sleep(0.05)
    p.write(b'ss"\r')
    p.read_until(rb"\r\n(OK|ERROR)\r\n")
    text = m.transcript_text()
    for secret in ("early-user", "early-pass", "the-user", "the-pa", "the-pass"):
        assert secret not in text, secret
    lines = text.splitlines()
    assert lines[0].startswith("# modemsim transcript profile=bg96")
    rec = re.compile(r'^\s*\d+ (RX |TX |RX!) "(?:[^"\\]|\\.)*"( .*)?$|^\s*\d+ EV  .+$')
    assert all(rec.match(x) for x in lines[1:]), [x for x in lines[1:] if not rec.match(x)]
    rx = next(x for x in lines if ' RX  "AT+QMTCONN' in x)
    assert rx.endswith('"AT+QMTCONN=0,\\"client-1\\",\\"[REDACTED]\\",\\"[REDACTED]\\"\\r"')
    echo = next(x for x in lines if ' TX  "AT+QMTCONN' in x)
    assert echo.endswith('"AT+QMTCONN=0,\\"client-1\\",\\"[REDACTED]\\",\\"[REDACTED]\\"\\r"')
    dropped = next(x for x in lines if "RX!" in x)
    assert "[REDACTED]" in dropped and "dropped: module booting" in dropped
    stamps = [int(x.split()[0]) for x in lines[1:]]
    assert stamps[-1] >= 600 and stamps == sorted(stamps)
