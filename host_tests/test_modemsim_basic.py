"""Modem emulator: boot, framing, echo, errors, reset, SIM/registration, PDP, clock, persistence, control.

Raw AT over the pty, checked against quectel-bg96.md / quectel-bc660k.md and transcripts.md (T1, T4).
"""

import datetime
import json
import os
import re
import subprocess
import sys
import time

import pytest
from fixtures_modemsim import AtPort

FINAL_OK = rb"\r\nOK\r\n"


def booted(m, marker=None):
    """Open the port and read the boot URCs (BG96: up to +QIND: SMS DONE; BC660K-GL: RDY)."""
    p = AtPort(m.info["port"])
    p.wait_boot(marker=marker or (b"+QIND: SMS DONE\r\n" if m.info["profile"] == "bg96" else b"RDY\r\n"))
    return p


# ---- boot --------------------------------------------------------------------------------------------


def test_bg96_boot_urcs_in_order_and_commands_before_rdy_ignored(start_modemsim):
    # Long boot so the test can talk to it while it boots (the default fast boot is 150 ms).
    m = start_modemsim("bg96", settings={"boot": 1.0})
    p = AtPort(m.info["port"])
    p.write(b"AT\r")
    early = p.read_for(0.4)
    assert early == b"", "a module answers nothing (and echoes nothing) before RDY: %r" % early
    out = p.read_until(rb"\+QIND: SMS DONE\r\n", timeout=3)
    lines = [x for x in out.split(b"\r\n") if x]
    assert lines == [b"RDY", b"+CFUN: 1", b"+CPIN: READY", b"+QUSIM: 1", b"+QIND: SMS DONE"]
    assert out.startswith(b"\r\nRDY\r\n")
    assert b"APP RDY" not in out  # not a BG96 URC (quectel-bg96.md section 2)
    assert p.cmd("AT") == b"AT\r\r\nOK\r\n"
    c = m.counters()
    assert c["rx_dropped"] == 3 and c["at_commands"] == 1
    assert 'RX! "AT\\r" dropped: module booting' in m.transcript_text()


def test_bc660k_boot_prints_only_rdy(start_modemsim):
    m = start_modemsim("bc660k")
    p = booted(m)
    assert p.read_for(0.3) == b""
    assert p.cmd("ATI") == b"ATI\r\r\nQuectel_Ltd\r\nQuectel_BC660K-GL\r\nRevision: BC660KGLAAR01A05\r\n\r\nOK\r\n"


def test_bg96_ati_matches_t1(start_modemsim):
    p = booted(start_modemsim("bg96", firmware="BG96MAR02A07M1G"))  # T1's firmware (the default is later)
    assert p.cmd("ATI") == b"ATI\r\r\nQuectel\r\nBG96\r\nRevision: BG96MAR02A07M1G\r\n\r\nOK\r\n"
    # T1: AT&FZE0 (chained basic commands) then echo is off
    assert p.cmd("AT&FZE0") == b"AT&FZE0\r\r\nOK\r\n"
    assert p.cmd("AT+CPIN?") == b"\r\n+CPIN: READY\r\n\r\nOK\r\n"


# ---- echo and errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["bg96", "bc660k"])
def test_echo_on_by_default_and_ate0(start_modemsim, profile):
    p = booted(start_modemsim(profile, settings={"sleep_idle": 30}))
    assert p.cmd("AT") == b"AT\r\r\nOK\r\n"
    assert p.cmd("ATE0") == b"ATE0\r\r\nOK\r\n"  # the echo of ATE0 itself still happens
    assert p.cmd("AT") == b"\r\nOK\r\n"
    assert p.cmd("ATE1") == b"\r\nOK\r\n"
    assert p.cmd("at") == b"at\r\r\nOK\r\n"  # lower case accepted


def test_bg96_cmee_modes_and_error_shapes(start_modemsim):
    p = booted(start_modemsim("bg96", sim="absent"), marker=b"+CFUN: 1\r\n")
    p.cmd("ATE0")
    assert p.cmd("AT+CMEE?") == b"\r\n+CMEE: 1\r\n\r\nOK\r\n"  # factory default numeric
    assert p.cmd("AT+CPIN?") == b"\r\n+CME ERROR: 10\r\n"
    p.cmd("AT+CMEE=2")
    assert p.cmd("AT+CPIN?") == b"\r\n+CME ERROR: SIM not inserted\r\n"
    p.cmd("AT+CMEE=0")
    assert p.cmd("AT+CPIN?") == b"\r\nERROR\r\n"
    p.cmd("AT+CMEE=2")
    # unknown commands and syntax errors are plain ERROR whatever CMEE says (T4: ATBOGUS -> ERROR)
    assert p.cmd("ATBOGUS") == b"\r\nERROR\r\n"
    assert p.cmd("AT+NOSUCHCMD") == b"\r\nERROR\r\n"
    assert p.cmd('AT+QMTOPEN=0,"unterminated') == b"\r\nERROR\r\n"
    # BG96: out-of-range parameters are plain ERROR too
    assert p.cmd("AT+CEREG=9") == b"\r\nERROR\r\n"
    # File errors are CME codes (text in mode 2)
    assert p.cmd('AT+QFDEL="nope.pem"') == b"\r\n+CME ERROR: file not found\r\n"


def test_bc660k_cme_text_and_parameter_errors(start_modemsim):
    p = booted(start_modemsim("bc660k", settings={"sleep_idle": 30}))
    p.cmd("ATE0")
    assert p.cmd("AT+CEREG=9") == b"\r\n+CME ERROR: 50\r\n"
    p.cmd("AT+CMEE=2")
    assert p.cmd("AT+CEREG=9") == b"\r\n+CME ERROR: Incorrect parameters\r\n"
    assert p.cmd("ATBOGUS") == b"\r\nERROR\r\n"
    assert p.cmd("AT+QIACT=1") == b"\r\nERROR\r\n"  # no QIACT on this module


def test_t4_shapes_qmtopen_test_is_compact_and_cpin_without_pending_pin(start_modemsim):
    p = booted(start_modemsim("bg96", firmware="BG96MAR02A07M1G"))
    assert p.cmd("AT+QMTOPEN=?") == b"AT+QMTOPEN=?\r\r\n+QMTOPEN: (0-5),<host_name>,(0-65535)\r\nOK\r\n"
    assert p.cmd('AT+CPIN="0000"') == b'AT+CPIN="0000"\r\r\n+CME ERROR: 3\r\n'
    out = p.cmd("AT+QMTCFG=?")
    assert b'+QMTCFG: "timeout",(0-5),(1-60),(0-10),(0,1)\r\n' in out
    assert b'+QMTCFG: "will",(0-5),(0,1),(0-2),(0,1),<will_topic>,<will_message>\r\n' in out
    assert b"recv/mode" not in out  # V1.0-era firmware
    assert out.endswith(b"\r\n\r\nOK\r\n")


# ---- reset -------------------------------------------------------------------------------------------


def test_bg96_cfun11_reset_like_t1_keeps_files_loses_volatile(start_modemsim):
    m = start_modemsim("bg96", settings={"reset": 0.6})
    p = booted(m)
    p.cmd("ATE0")
    p.wait_registered()
    assert p.cmd("AT+QIACT=1") == b"\r\nOK\r\n"
    p.write(b'AT+QFUPL="keep.txt",5\r')
    p.read_until(rb"CONNECT\r\n")
    p.write(b"hello")
    p.read_until(FINAL_OK)
    p.cmd('AT+QSSLCFG="seclevel",1,2')
    p.cmd('AT+QMTCFG="version",0,4')
    p.cmd("AT+CMEE=2")
    p.cmd("AT&W")  # saved: survives reset
    p.cmd("ATE1")  # not saved: lost
    p.cmd("AT+CMEE=0")
    # T1: OK, then POWERED DOWN, then pdpdeact while rebooting, then silence, then RDY
    out = p.cmd("AT+CFUN=1,1")
    assert out == b"AT+CFUN=1,1\r\r\nOK\r\n"
    assert p.read_until(rb"POWERED DOWN\r\n", 2) == b"\r\nPOWERED DOWN\r\n"
    p.write(b"AT\r")  # unanswered during the reset
    rest = p.read_until(rb"RDY\r\n", 3)
    assert rest == b'\r\n+QIURC: "pdpdeact",1\r\n\r\nRDY\r\n'
    p.read_until(rb"SMS DONE\r\n")
    assert p.cmd("AT") == b"\r\nOK\r\n"  # echo back to the saved ATE0
    assert p.cmd("AT+CPIN=1") == b"\r\n+CME ERROR: operation not allowed\r\n"  # saved CMEE=2 restored
    assert p.cmd('AT+QFLST="*"') == b'\r\n+QFLST: "keep.txt",5\r\n\r\nOK\r\n'  # files survive
    assert p.cmd('AT+QSSLCFG="seclevel",1') == b'\r\n+QSSLCFG: "seclevel",1,0\r\n\r\nOK\r\n'  # SSL lost
    assert p.cmd('AT+QMTCFG="version",0') == b'\r\n+QMTCFG: "version",3\r\n\r\nOK\r\n'  # MQTT cfg lost
    assert p.cmd("AT+QIACT?") == b"\r\nOK\r\n"  # PDP lost: bare OK
    assert m.counters()["resets"] == 1


def test_bc660k_qrst_resets_without_powered_down_keeps_nv(start_modemsim):
    m = start_modemsim("bc660k", settings={"sleep_idle": 30, "reset": 0.4})
    p = booted(m)
    p.cmd("ATE0")  # NVRAM on this module: survives the reset without AT&W
    p.cmd('AT+QCGDEFCONT="IP","nb.apn"')
    p.cmd("AT+QSCLK=0")
    assert p.cmd("AT+QRST=1") == b"\r\nOK\r\n"
    out = p.read_until(rb"RDY\r\n", 3)
    assert b"POWERED DOWN" not in out
    assert p.cmd("AT") == b"\r\nOK\r\n"
    assert p.cmd("AT+QSCLK?") == b"\r\n+QSCLK: 1\r\n\r\nOK\r\n"  # sleep setting is not in NVRAM
    assert p.cmd("AT+QCGDEFCONT?") == b'\r\n+QCGDEFCONT: "IP","nb.apn"\r\n\r\nOK\r\n'


# ---- SIM and registration ----------------------------------------------------------------------------


def test_bg96_registration_urcs_with_cereg_2(start_modemsim):
    m = start_modemsim("bg96", settings={"reg": 0.6, "boot": 0.05})
    p = AtPort(m.info["port"])
    p.read_until(rb"SMS DONE\r\n")
    p.cmd("ATE0")
    p.cmd("AT+CEREG=2")
    assert p.cmd("AT+CEREG?") == b"\r\n+CEREG: 2,2\r\n\r\nOK\r\n"  # searching
    assert p.read_until(rb"\+CEREG: [^\r]*\r\n", 2) == b'\r\n+CEREG: 1,"1A2B","01A2B3C4",8\r\n'
    assert p.cmd("AT+CEREG?") == b'\r\n+CEREG: 2,1,"1A2B","01A2B3C4",8\r\n\r\nOK\r\n'
    assert p.cmd("AT+COPS?") == b'\r\n+COPS: 0,0,"MODEMSIM",8\r\n\r\nOK\r\n'
    assert p.cmd("AT+CGREG?") == b"\r\n+CGREG: 0,0\r\n\r\nOK\r\n"  # no GPRS registration on LTE-M
    assert p.cmd("AT+CSQ") == b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n"
    assert p.cmd("AT+QCSQ") == b'\r\n+QCSQ: "CAT-M1",-65,-90,150,-10\r\n\r\nOK\r\n'
    p.cmd("AT+CEREG=1")
    m.control({"cmd": "fault", "do": {"action": "registration_lost", "stat": 2, "recover_s": 0.3}})
    assert p.read_until(rb"\+CEREG: 2\r\n", 2).endswith(b"\r\n+CEREG: 2\r\n")
    assert p.read_until(rb"\+CEREG: 1\r\n", 2).endswith(b"\r\n+CEREG: 1\r\n")


def test_bg96_sim_pin_flow(start_modemsim):
    m = start_modemsim("bg96", sim="pin:1234")
    p = AtPort(m.info["port"])
    out = p.read_until(rb"\+QUSIM: 1\r\n")
    assert b"+CPIN: SIM PIN" in out
    p.cmd("ATE0")
    assert p.cmd("AT+CPIN?") == b"\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n"
    assert p.cmd("AT+CIMI") == b"\r\n+CME ERROR: 11\r\n"
    assert p.cmd('AT+CPIN="0000"') == b"\r\n+CME ERROR: 16\r\n"
    assert p.cmd('AT+CPIN="1234"') == b"\r\nOK\r\n"
    assert p.read_until(rb"\+CPIN: READY\r\n") == b"\r\n+CPIN: READY\r\n"
    p.wait_registered()
    assert m.control({"cmd": "network"})["sim"] == "READY"


def test_bc660k_registration_nb_iot_and_default_bearer(start_modemsim):
    p = booted(start_modemsim("bc660k", settings={"sleep_idle": 30}, roaming=True))
    p.cmd("ATE0")
    p.wait_registered()
    p.cmd("AT+CEREG=4")
    # exactly the reference's n=4 example (quectel-bc660k.md section 1)
    assert p.cmd("AT+CEREG?") == b'\r\n+CEREG: 4,5,"0001","0000ABCD",9,,,"00100011","00101010"\r\n\r\nOK\r\n'
    assert re.fullmatch(rb'\r\n\+CGPADDR: 0,"100\.68\.\d+\.220"\r\n\r\nOK\r\n', p.cmd("AT+CGPADDR=0"))
    assert p.cmd("AT+CGPADDR=1") == b"\r\n+CGPADDR: 1\r\n\r\nOK\r\n"
    assert p.cmd("AT+CGATT?") == b"\r\n+CGATT: 1\r\n\r\nOK\r\n"
    assert p.cmd("AT+CESQ") == b"\r\n+CESQ: 99,99,255,255,18,40\r\n\r\nOK\r\n"


# ---- PDP ---------------------------------------------------------------------------------------------


def test_bg96_qiact_error_when_active_and_pdpdeact_urc(start_modemsim):
    m = start_modemsim("bg96")
    p = booted(m)
    p.cmd("ATE0")
    assert p.cmd("AT+QIACT?") == b"\r\nOK\r\n"  # nothing active: bare OK
    p.wait_registered()
    assert p.cmd('AT+QICSGP=1,1,"iot.apn","user","pw",1') == b"\r\nOK\r\n"
    assert p.cmd("AT+QIACT=1") == b"\r\nOK\r\n"
    assert re.fullmatch(rb'\r\n\+QIACT: 1,1,1,"10\.\d+\.\d+\.\d+"\r\n\r\nOK\r\n', p.cmd("AT+QIACT?"))
    assert p.cmd("AT+QIACT=1") == b"\r\nERROR\r\n"  # already active (quectel-bg96.md section 3)
    m.control({"cmd": "fault", "do": "pdp_lost"})
    assert p.read_until(rb"pdpdeact[^\r]*\r\n") == b'\r\n+QIURC: "pdpdeact",1\r\n'
    assert p.cmd("AT+QIACT?") == b"\r\nOK\r\n"
    assert p.cmd("AT+QIDEACT=1") == b"\r\nOK\r\n"
    assert p.cmd("AT+QIACT=1") == b"\r\nOK\r\n"
    # the QICSGP query would print the password: the module does, the transcript does not
    assert p.cmd("AT+QICSGP=1") == b'\r\n+QICSGP: 1,"iot.apn","user","pw",1\r\n\r\nOK\r\n'
    text = m.transcript_text()
    assert "pw" not in text and "user" not in text  # (quotes are escaped in the transcript)
    assert text.count('\\"iot.apn\\",\\"[REDACTED]\\",\\"[REDACTED]\\"') == 2  # command (ATE0: no echo) and reply


def test_bg96_qiact_before_registration_fails(start_modemsim):
    p = booted(start_modemsim("bg96", settings={"reg": 3.0}))
    p.cmd("ATE0")
    assert p.cmd("AT+QIACT=1") == b"\r\nERROR\r\n"
    assert p.cmd("AT+QIGETERROR") == b"\r\n+QIGETERROR: 561,open PDP context failed\r\n\r\nOK\r\n"


# ---- clock -------------------------------------------------------------------------------------------


def test_bg96_clock_nitz_cclk_qlts_qntp(start_modemsim):
    m = start_modemsim("bg96", time="fixed:2024-05-01T12:00:00Z", tz=8, settings={"reg": 0.4})
    p = booted(m)
    p.cmd("ATE0")
    # before registration: the power-on epoch, and no network time yet
    assert re.fullmatch(rb'\r\n\+CCLK: "80/01/06,00:00:0\d\+00"\r\n\r\nOK\r\n', p.cmd("AT+CCLK?"))
    assert p.cmd("AT+QLTS") == b'\r\n+QLTS: ""\r\n\r\nOK\r\n'
    p.wait_registered()
    assert re.fullmatch(rb'\r\n\+CCLK: "24/05/01,14:00:0\d\+08"\r\n\r\nOK\r\n', p.cmd("AT+CCLK?"))
    assert re.fullmatch(rb'\r\n\+QLTS: "2024/05/01,14:00:0\d\+08,0"\r\n\r\nOK\r\n', p.cmd("AT+QLTS"))
    assert p.cmd('AT+CCLK="30/01/02,03:04:05+00"') == b"\r\nOK\r\n"
    assert re.fullmatch(rb'\r\n\+CCLK: "30/01/02,03:04:0\d\+00"\r\n\r\nOK\r\n', p.cmd("AT+CCLK?"))
    p.cmd("AT+QIACT=1")
    assert p.cmd('AT+QNTP=1,"pool.ntp.org",123') == b"\r\nOK\r\n"
    assert re.fullmatch(rb'\r\n\+QNTP: 0,"2024/05/01,12:00:\d\d\+00"\r\n', p.read_until(rb"\+QNTP:[^\r]*\r\n"))
    assert m.control({"cmd": "state"})["state"]["clock_set_by"] == "ntp"


def test_bc660k_cclk_unquoted_and_epoch(start_modemsim):
    p = booted(start_modemsim("bc660k", no_nitz=True, settings={"sleep_idle": 30}))
    p.cmd("ATE0")
    assert re.fullmatch(rb"\r\n\+CCLK: 00/01/01,00:00:0\d\+00\r\n\r\nOK\r\n", p.cmd("AT+CCLK?"))
    assert p.cmd("AT+CCLK=24/06/01,10:00:00+00") == b"\r\nOK\r\n"  # unquoted accepted too
    assert p.cmd("AT+CCLK?").startswith(b"\r\n+CCLK: 24/06/01,10:00:0")


# ---- persistence across emulator restarts --------------------------------------------------------------


def test_state_dir_persists_files_and_nv_across_emulator_restarts(start_modemsim, tmp_path):
    state = str(tmp_path / "flash")
    m = start_modemsim("bg96", state_dir=state)
    p = booted(m)
    p.cmd("ATE0")
    p.write(b'AT+QFUPL="ca.pem",4\r')
    p.read_until(rb"CONNECT\r\n")
    p.write(b"abcd")
    assert p.read_until(FINAL_OK) == b"\r\n+QFUPL: 4,206\r\n\r\nOK\r\n"  # 0x6162 ^ 0x6364
    p.cmd('AT+QCFG="iotopmode",0,1')
    p.cmd("AT&W")
    p.close()
    m.stop()
    m2 = start_modemsim("bg96", state_dir=state)
    p2 = booted(m2)
    assert p2.cmd("AT") == b"\r\nOK\r\n"  # ATE0 saved with AT&W
    assert p2.cmd('AT+QFLST="*"') == b'\r\n+QFLST: "ca.pem",4\r\n\r\nOK\r\n'
    assert p2.cmd('AT+QCFG="iotopmode"') == b'\r\n+QCFG: "iotopmode",0\r\n\r\nOK\r\n'
    files = m2.control({"cmd": "files"})["files"]
    assert files == [{"name": "ca.pem", "size": 4, "checksum": "206"}]


def test_without_state_dir_nothing_survives_a_restart(start_modemsim):
    m = start_modemsim("bg96")
    p = booted(m)
    p.write(b'AT+QFUPL="x.pem",1\r')
    p.read_until(rb"CONNECT\r\n")
    p.write(b"x")
    p.read_until(FINAL_OK)
    m.stop()
    p2 = booted(start_modemsim("bg96"))
    assert p2.cmd('AT+QFLST="*"') == b'AT+QFLST="*"\r\r\nOK\r\n'


# ---- control socket and CLI --------------------------------------------------------------------------


def test_control_socket_counters_and_errors(start_modemsim):
    m = start_modemsim("bg96")
    p = booted(m)
    for _ in range(3):
        p.cmd("AT")
    p.cmd("AT+CSQ;+CREG?")
    c = m.counters()
    assert c["at_commands"] == 4
    assert c["commands"]["CSQ"] == 1 and c["commands"]["CREG"] == 1
    assert c["rx_bytes"] == len(b"AT\r") * 3 + len(b"AT+CSQ;+CREG?\r")
    assert m.control({"cmd": "ping"}) == {"ok": True}
    bad = m.control({"cmd": "fault", "do": {"action": "explode"}})
    assert bad["ok"] is False and "unknown fault action" in bad["error"]
    assert m.control({"cmd": "nope"})["ok"] is False
    assert m.control({"cmd": "certs"})["ok"] is False  # BG96 keeps certificates as files
    m.control({"cmd": "reset_counters"})
    assert m.counters()["commands"] == {}


def test_cli_rejects_bad_options_with_clear_errors(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "tools.modemsim", "--profile", "bg96", "--link",
                               str(tmp_path / "l"), *args], capture_output=True, text=True, timeout=20,
                              check=False)

    r = run("--faults", '[{"when": {"after_s": 1}, "do": "explode"}]')
    assert r.returncode == 2 and "unknown fault action 'explode'" in r.stderr
    r = run("--set", "bootx=1")
    assert r.returncode == 2 and "--set bootx: unknown key" in r.stderr
    r = run("--time", "yesterday")
    assert r.returncode == 2 and "--time must be" in r.stderr
    assert not (tmp_path / "l").exists()


def test_port_can_be_closed_and_reopened(start_modemsim):
    m = start_modemsim("bg96")
    p = booted(m)
    assert p.cmd("AT") == b"AT\r\r\nOK\r\n"
    p.close()
    time.sleep(0.1)
    p = AtPort(m.info["port"])
    assert p.cmd("AT") == b"AT\r\r\nOK\r\n"
    assert m.alive()


def test_realistic_latency_uses_manual_times(start_modemsim):
    m = start_modemsim("bg96", latency="realistic", settings={"boot": 0.2})
    p = booted(m, marker=b"RDY\r\n")
    p.cmd("ATE0")
    time.sleep(1.0)
    assert p.cmd("AT+CEREG?") == b"\r\n+CEREG: 0,2\r\n\r\nOK\r\n"  # still searching: it takes seconds
    lat = m.control({"cmd": "state"})["state"]["latency"]
    assert lat["reg"] >= 5 and lat["reset"] >= 5 and lat["boot"] == 0.2  # --set overrides one key


def test_bg96_psm_and_edrx_settings(start_modemsim):
    p = booted(start_modemsim("bg96"))
    p.cmd("ATE0")
    assert p.cmd('AT+CPSMS=1,,,"00000100","00000011"') == b"\r\nOK\r\n"
    assert p.cmd("AT+CPSMS?") == b'\r\n+CPSMS: 1,,,"00000100","00000011"\r\n\r\nOK\r\n'
    # T3412 unit 000 = 10 min x 4; T3324 unit 000 = 2 s x 3
    assert p.cmd("AT+QPSMS?") == b'\r\n+QPSMS: 1,,,"2400","6"\r\n\r\nOK\r\n'
    assert p.cmd('AT+CPSMS=1,,,"0000010","00000011"') == b"\r\nERROR\r\n"  # 8 bits each
    assert p.cmd('AT+CEDRXS=1,4,"0101"') == b"\r\nOK\r\n"
    assert p.cmd("AT+CEDRXS?") == b'\r\n+CEDRXS: 4,"0101"\r\n\r\nOK\r\n'
    assert p.cmd('AT+QCFG="psm/urc",1') == b"\r\nOK\r\n"
    assert p.cmd('AT+QCFG="psm/urc"') == b'\r\n+QCFG: "psm/urc",1\r\n\r\nOK\r\n'
    assert p.cmd('AT+QCFG="band"') == b'\r\n+QCFG: "band",0xf,0x400a0e189f,0xa0e189f\r\n\r\nOK\r\n'
    assert p.cmd('AT+QCFG="nwscanmode",2') == b"\r\nERROR\r\n"  # 0, 1 or 3


def test_bc660k_pdn_loss_and_reattach(start_modemsim):
    m = start_modemsim("bc660k", settings={"sleep_idle": 30})
    p = booted(m)
    p.cmd("ATE0")
    p.wait_registered()
    p.cmd("AT+CGEREP=1")
    m.control({"cmd": "fault", "do": "pdp_lost"})
    assert p.read_until(rb"\+CGEV: [^\r]*\r\n") == b"\r\n+CGEV: NW PDN DEACT 0\r\n"
    assert p.cmd("AT+CGPADDR=0") == b"\r\n+CGPADDR: 0\r\n\r\nOK\r\n"
    assert p.read_until(rb"\+CGEV: [^\r]*\r\n", 3) == b"\r\n+CGEV: ME PDN ACT 0\r\n"
    assert p.cmd("AT+CGPADDR=0").startswith(b'\r\n+CGPADDR: 0,"100.68.')


def test_time_offset_source(start_modemsim):
    m = start_modemsim("bg96", time="offset:-86400")  # the network says it is yesterday
    p = booted(m)
    p.cmd("ATE0")
    p.wait_registered()
    yesterday = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    assert p.cmd("AT+CCLK?").startswith(b'\r\n+CCLK: "' + yesterday.strftime("%y/%m/%d").encode())


def test_shared_fixtures_give_json_info_and_reach_the_broker(bg96, bc660k, broker, start_modemsim):
    for info, profile in ((bg96, "bg96"), (bc660k, "bc660k")):
        assert json.loads(json.dumps(info)) == info
        assert info["profile"] == profile and os.path.islink(info["port"])
    # the bg96 fixture's emulator maps broker.test to the broker fixture
    p = AtPort(bg96["port"])
    p.wait_boot(marker=b"+QIND: SMS DONE\r\n")
    p.cmd("ATE0")
    p.wait_registered()
    p.cmd("AT+QIACT=1")
    p.cmd('AT+QMTCFG="version",0,4')
    p.cmd('AT+QMTOPEN=0,"broker.test",1883')
    assert p.read_until(rb"\+QMTOPEN: [^\r]*\r\n").endswith(b"+QMTOPEN: 0,0\r\n")


MPY_CLIENT = """
import select, time
f = open(PORT, "r+b")
p = select.poll()
p.register(f, select.POLLIN)

def cmd(line):
    f.write(line + b"\\r")
    buf = b""
    t = time.ticks_ms()
    while not (buf.endswith(b"OK\\r\\n") or buf.endswith(b"ERROR\\r\\n")):
        if time.ticks_diff(time.ticks_ms(), t) > 3000:
            raise OSError("timeout: %r" % buf)
        if p.poll(50):
            buf += f.read(1)  # a tty read waits to fill the buffer: take what poll promised
    return buf

buf = b""
while b"SMS DONE\\r\\n" not in buf:
    if p.poll(3000):
        buf += f.read(1)
    else:
        raise OSError("no boot URCs: %r" % buf)
print(cmd(b"ATE0"))
print(cmd(b"ATI"))
"""


def test_micropython_unix_port_can_drive_the_emulator(start_modemsim, mpy):
    m = start_modemsim("bg96", settings={"boot": 0.5})
    r = mpy(["-c", "PORT = %r\n" % m.info["port"] + MPY_CLIENT], timeout=30)
    assert r.returncode == 0, r.stderr.decode() + r.stdout.decode()
    out = r.stdout.decode()
    assert "b'ATE0\\r\\r\\nOK\\r\\n'" in out
    assert "b'\\r\\nQuectel\\r\\nBG96\\r\\nRevision: BG96MAR02A08M1G\\r\\n\\r\\nOK\\r\\n'" in out


def test_profile_specific_fault_rules_are_checked_at_start(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tools.modemsim", "--profile", "bg96", "--link", str(tmp_path / "l"),
                        "--faults", '[{"when": {"after_s": 1}, "do": "sleep"}]'],
                       capture_output=True, text=True, timeout=20, check=False)
    assert r.returncode == 2 and "no UART sleep" in r.stderr
    assert not (tmp_path / "l").exists()


def test_scripted_fault_that_the_state_refuses_is_logged_not_fatal(start_modemsim):
    m = start_modemsim("bg96", faults=[{"when": {"after_s": 0.3}, "do": {"action": "ssl_closed", "client": 3}}])
    p = booted(m)
    time.sleep(0.4)
    assert p.cmd("AT") == b"AT\r\r\nOK\r\n"  # still running
    assert m.counters()["faults_refused"] == 1
    assert "fault action ssl_closed refused: ssl_closed: SSL client 3 is not connected" in m.transcript_text()
