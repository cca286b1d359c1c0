"""Modem emulator, BG95 family profile (BG95-M3, BG77, BG770A-GL): raw AT over the pty, checked against the
sources docs/modemsim.md names for each difference from the BG96."""

from fixtures_modemsim import AtPort


def booted(m):
    p = AtPort(m.info["port"])
    out = p.wait_boot(marker=b"+QIND: SMS DONE\r\n")
    return p, out


def test_bg95_m3_identity_boot_and_signal_names(start_modemsim):
    m = start_modemsim("bg95")
    p, boot = booted(m)
    lines = [x for x in boot.split(b"\r\n") if x]
    assert lines[:2] == [b"RDY", b"APP RDY"] and b"+QIND: SMS DONE" in lines
    assert p.cmd("ATI") == b"ATI\r\r\nQuectel\r\nBG95-M3\r\nRevision: BG95M3LAR02A03\r\n\r\nOK\r\n"
    p.cmd("ATE0")
    p.wait_registered()
    assert p.cmd("AT+QCSQ").startswith(b'\r\n+QCSQ: "eMTC",')
    assert p.cmd("AT+QNWINFO").startswith(b'\r\n+QNWINFO: "eMTC",')
    assert b"+CEREG: 0,1" in p.cmd("AT+CEREG?") or b"+CEREG: 0,5" in p.cmd("AT+CEREG?")


def test_bg95_mqtt_and_ssl_test_forms(start_modemsim):
    p, _ = booted(start_modemsim("bg95"))
    p.cmd("ATE0")
    # fixed-length form with the family's 4096-byte bound, no blank line before OK (BG770A EXACT_GOLDEN)
    assert p.cmd("AT+QMTPUB=?") == b"\r\n+QMTPUB: (0-5),(0-65535),(0-2),(0,1),<topic>,(1-4096)\r\nOK\r\n"
    assert b'"recv/mode"' in p.cmd("AT+QMTCFG=?")
    ssl = p.cmd("AT+QSSLCFG=?")
    assert b'"sni",(0-5),(0,1)' in ssl and b'"checkhost",(0-5),(0,1)' in ssl
    assert p.cmd('AT+QSSLCFG="sni",1') == b'\r\n+QSSLCFG: "sni",1,0\r\n\r\nOK\r\n'  # off as shipped
    assert p.cmd('AT+QSSLCFG="checkhost",1,1') == b"\r\nOK\r\n"
    assert p.cmd('AT+QSSLCFG="checkhost",1') == b'\r\n+QSSLCFG: "checkhost",1,1\r\n\r\nOK\r\n'


def test_bg770a_powers_up_with_bare_errors_and_without_gsm(start_modemsim):
    m = start_modemsim("bg95", firmware="BG770AGLAAR01A05")
    p, _ = booted(m)
    assert p.cmd("ATI") == b"ATI\r\r\nQuectel\r\nBG770A-GL\r\nRevision: BG770AGLAAR01A05\r\n\r\nOK\r\n"
    p.cmd("ATE0")
    assert p.cmd('AT+CPIN="0000"') == b"\r\nERROR\r\n"  # CMEE=0 at power-up: no code
    p.cmd("AT+CMEE=1")
    assert p.cmd('AT+CPIN="0000"') == b"\r\n+CME ERROR: 3\r\n"
    assert b'"nwscanmode",(0,3),(0,1)' in p.cmd("AT+QCFG=?")
    assert p.cmd('AT+QCFG="nwscanmode",1,1').endswith(b"ERROR\r\n")  # no GSM-only mode
    assert p.cmd('AT+QCFG="nwscanmode",3,1') == b"\r\nOK\r\n"
    assert p.cmd("AT+QICSGP=6,1,\"apn\",\"\",\"\",0").endswith(b"ERROR\r\n")  # contexts 1..5
