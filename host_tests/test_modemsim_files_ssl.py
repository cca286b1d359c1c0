"""Modem emulator: BG96 UFS (QFUPL/QFDWL/QFLST/QFDEL/QFLDS) and SSL context configuration on both modules.

Checked against quectel-bg96.md section 4-5, quectel-bc660k.md section 2, seed 001/004 and T2/T6.
"""

import re
import time
from pathlib import Path

from fixtures_modemsim import AtPort

OK = rb"\r\nOK\r\n"


def boot(m):
    p = AtPort(m.info["port"])
    p.wait_boot(marker=b"+QIND: SMS DONE\r\n" if m.info["profile"] == "bg96" else b"RDY\r\n")
    p.cmd("ATE0")
    return p


def upload(p, name, data, extra=b""):
    p.write(b'AT+QFUPL="%s",%d%s\r' % (name.encode(), len(data), extra))
    assert p.read_until(rb"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    p.write(data)
    return p.read_until(rb"\r\n(OK|ERROR|\+CME ERROR: \d+)\r\n")


# ---- UFS -----------------------------------------------------------------------------------------------


def test_qfupl_checksum_examples_and_407(start_modemsim):
    m = start_modemsim("bg96")
    p = boot(m)
    # manual example: 1234567890 -> 3938 (lowercase hex, no padding)
    assert upload(p, "test.txt", b"1234567890") == b"\r\n+QFUPL: 10,3938\r\n\r\nOK\r\n"
    # odd length: the last byte is the high byte of a final word
    assert upload(p, "odd.txt", b"123") == b"\r\n+QFUPL: 3,232\r\n\r\nOK\r\n"  # 0x3132 ^ 0x3300
    assert upload(p, "z.bin", b"\x00\x0f") == b"\r\n+QFUPL: 2,f\r\n\r\nOK\r\n"  # not zero padded
    assert p.cmd('AT+QFUPL="test.txt",10') == b"\r\n+CME ERROR: 407\r\n"  # exists: delete first
    assert p.cmd('AT+QFLST="*"') == (b'\r\n+QFLST: "odd.txt",3\r\n+QFLST: "test.txt",10\r\n'
                                     b'+QFLST: "z.bin",2\r\n\r\nOK\r\n')
    assert p.cmd('AT+QFLST="test.txt"') == b'\r\n+QFLST: "test.txt",10\r\n\r\nOK\r\n'
    assert p.cmd('AT+QFDWL="test.txt"') == b"\r\nCONNECT\r\n1234567890\r\n+QFDWL: 10,3938\r\n\r\nOK\r\n"
    assert p.cmd('AT+QFDEL="test.txt"') == b"\r\nOK\r\n"
    assert p.cmd('AT+QFDEL="test.txt"') == b"\r\n+CME ERROR: 405\r\n"
    free, total = map(int, re.search(rb"\+QFLDS: (\d+),(\d+)", p.cmd('AT+QFLDS="UFS"')).groups())
    assert total - free == 5
    assert p.cmd("AT+QFLDS") == b"\r\n+QFLDS: 5,2\r\n\r\nOK\r\n"
    assert p.cmd('AT+QFDEL="*"') == b"\r\nOK\r\n"
    assert p.cmd('AT+QFLST="*"') == b"\r\nOK\r\n"


def test_qfupl_ufs_prefix_bad_names_and_upload_counter(start_modemsim):
    m = start_modemsim("bg96")
    p = boot(m)
    assert upload(p, "UFS:ca.pem", b"abcd") == b"\r\n+QFUPL: 4,206\r\n\r\nOK\r\n"
    assert p.cmd('AT+QFLST="*"') == b'\r\n+QFLST: "ca.pem",4\r\n\r\nOK\r\n'
    assert p.cmd('AT+QFUPL="bad/name",4') == b"\r\n+CME ERROR: 406\r\n"
    assert m.counters()["upload_bytes"] == 4


def test_qfupl_ack_mode_sends_A_every_1024_bytes(start_modemsim):
    p = boot(start_modemsim("bg96"))
    data = bytes(range(256)) * 10  # 2560 bytes
    p.write(b'AT+QFUPL="ack.bin",%d,5,1\r' % len(data))
    p.read_until(rb"CONNECT\r\n")
    acks = 0
    for i in range(0, len(data), 1024):
        p.write(data[i:i + 1024])
        if i + 1024 <= len(data):
            assert p.read_until(rb"A", 2) == b"A"  # the host waits for it before the next block
            acks += 1
    out = p.read_until(OK)
    assert acks == 2
    assert re.fullmatch(rb"\r\n\+QFUPL: 2560,[0-9a-f]+\r\n\r\nOK\r\n", out)


def test_qfupl_timeout_keeps_what_arrived(start_modemsim):
    p = boot(start_modemsim("bg96"))
    p.write(b'AT+QFUPL="short.txt",100,1\r')  # 1 s timeout
    p.read_until(rb"CONNECT\r\n")
    p.write(b"1234567890")
    t = time.monotonic()
    assert p.read_until(OK, 3) == b"\r\n+QFUPL: 10,3938\r\n\r\nOK\r\n"
    assert 0.8 < time.monotonic() - t < 2.0


def test_qfupl_plus_plus_plus_aborts_with_guard_times(start_modemsim):
    m = start_modemsim("bg96", settings={"plus_guard": 0.3})
    p = boot(m)
    p.write(b'AT+QFUPL="abort.txt",100,10\r')
    p.read_until(rb"CONNECT\r\n")
    p.write(b"12345")
    time.sleep(0.4)
    p.write(b"+++")
    assert p.read_until(OK, 3) == b"\r\n+QFUPL: 5,3706\r\n\r\nOK\r\n"  # "12345" kept: 0x3132^0x3334^0x3500
    # without the guard time "+++" is just data
    p.write(b'AT+QFUPL="data.txt",6,10\r')
    p.read_until(rb"CONNECT\r\n")
    p.write(b"ab+++c")
    assert re.fullmatch(rb"\r\n\+QFUPL: 6,[0-9a-f]+\r\n\r\nOK\r\n", p.read_until(OK, 3))


def test_corrupt_upload_fault_stores_a_flipped_byte(start_modemsim):
    m = start_modemsim("bg96", faults=[{"when": {"command": "QFUPL", "nth": 2}, "do": "corrupt_upload"}])
    p = boot(m)
    assert upload(p, "a.txt", b"1234567890") == b"\r\n+QFUPL: 10,3938\r\n\r\nOK\r\n"
    out = upload(p, "b.txt", b"1234567890")
    assert out != b"\r\n+QFUPL: 10,3938\r\n\r\nOK\r\n"  # the checksum of what was stored
    stored = p.cmd('AT+QFDWL="b.txt"')
    body = stored[len(b"\r\nCONNECT\r\n"):stored.index(b"\r\n+QFDWL")]
    assert len(body) == 10 and body != b"1234567890"
    x = 0
    for i in range(0, 10, 2):
        x ^= body[i] << 8 | body[i + 1]
    assert out == b"\r\n+QFUPL: 10,%x\r\n\r\nOK\r\n" % x
    files = {f["name"]: f for f in m.control({"cmd": "files"})["files"]}
    assert files["b.txt"]["checksum"] == "%x" % x


def test_private_key_upload_is_redacted_even_when_split(start_modemsim, pki):
    m = start_modemsim("bg96")
    p = boot(m)
    key = Path(pki["client_key"]).read_bytes()
    p.write(b'AT+QFUPL="dev.pem",%d,5\r' % len(key))  # not named like a key: PEM markers decide
    p.read_until(rb"CONNECT\r\n")
    for i in range(0, len(key), 7):  # 7-byte reads split the markers and the body everywhere
        p.write(key[i:i + 7])
        time.sleep(0.001)
    assert re.fullmatch(rb"\r\n\+QFUPL: %d,[0-9a-f]+\r\n\r\nOK\r\n" % len(key), p.read_until(OK))
    out = p.cmd('AT+QFDWL="dev.pem"')
    assert key in out  # the host gets its key back
    text = m.transcript_text()
    body_lines = key.decode().splitlines()[1:-1]
    for line in body_lines:
        for j in range(0, len(line) - 8, 8):
            assert line[j:j + 8] not in text, "key material in the transcript"
    assert "BEGIN RSA PRIVATE KEY" in text or "BEGIN PRIVATE KEY" in text
    assert text.count("[REDACTED]") >= 2  # upload and download


# ---- BG96 SSL context ----------------------------------------------------------------------------------


def test_bg96_qsslcfg_items_queries_and_spellings(start_modemsim):
    p = boot(start_modemsim("bg96"))
    assert p.cmd('AT+QSSLCFG="sslversion",1') == b'\r\n+QSSLCFG: "sslversion",1,4\r\n\r\nOK\r\n'
    assert p.cmd('AT+QSSLCFG="ciphersuite",1') == b'\r\n+QSSLCFG: "ciphersuite",1,0XFFFF\r\n\r\nOK\r\n'
    assert p.cmd('AT+QSSLCFG="ciphersuite",1,0x0035') == b"\r\nOK\r\n"
    assert p.cmd('AT+QSSLCFG="ciphersuite",1') == b'\r\n+QSSLCFG: "ciphersuite",1,0X0035\r\n\r\nOK\r\n'
    assert p.cmd('AT+QSSLCFG="ciphersuite",1,0x1234') == b"\r\nERROR\r\n"
    # the seed manual's spelling "secllevel" and the real "seclevel" are the same setting
    assert p.cmd('AT+QSSLCFG="secllevel",1,2') == b"\r\nOK\r\n"
    assert p.cmd('AT+QSSLCFG="seclevel",1') == b'\r\n+QSSLCFG: "seclevel",1,2\r\n\r\nOK\r\n'
    assert p.cmd('AT+QSSLCFG="cacert",1,"UFS:cacert.pem"') == b"\r\nOK\r\n"
    assert p.cmd('AT+QSSLCFG="cacert",1') == b'\r\n+QSSLCFG: "cacert",1,"UFS:cacert.pem"\r\n\r\nOK\r\n'
    assert p.cmd('AT+QSSLCFG="negotiatetime",1,5') == b"\r\nERROR\r\n"  # 10..300
    assert p.cmd('AT+QSSLCFG="seclevel",6,1') == b"\r\nERROR\r\n"  # contexts 0..5
    assert p.cmd('AT+QSSLCFG="sni",1,1') == b"\r\nERROR\r\n"
    out = p.cmd("AT+QSSLCFG=?")
    assert b'+QSSLCFG: "ciphersuite",(0-5),(0X0035,0X002F,' in out and b"0XFFFF)" in out
    # T2 spellings: "SSL" item of QMTCFG in upper case, cipher 0XFFFF
    assert p.cmd('AT+QMTCFG="SSL",0,1,2') == b"\r\nOK\r\n"
    assert p.cmd('AT+QSSLCFG="ciphersuite",2,0XFFFF') == b"\r\nOK\r\n"


# ---- BC660K-GL SSL context and inline certificates ------------------------------------------------------


def test_bc660k_inline_certificate_length_reply_and_dump(start_modemsim, pki):
    m = start_modemsim("bc660k", settings={"sleep_idle": 30})
    p = boot(m)
    dump = p.cmd("AT+QSSLCFG=0,0")
    assert dump == (b'\r\n+QSSLCFG: 0,0,"seclevel",0\r\n+QSSLCFG: 0,0,"sslversion",4\r\n'
                    b'+QSSLCFG: 0,0,"dataformat",0,0\r\n+QSSLCFG: 0,0,"timeout",90\r\n'
                    b'+QSSLCFG: 0,0,"debug",0\r\n+QSSLCFG: 0,0,"cacert",0\r\n+QSSLCFG: 0,0,"clientcert",0\r\n'
                    b'+QSSLCFG: 0,0,"clientkey",0\r\n+QSSLCFG: 0,0,"dtls",0\r\n'
                    b'+QSSLCFG: 0,0,"dtlsversion",2\r\n\r\nOK\r\n')
    ca = Path(pki["ca_pem"]).read_bytes()
    p.write(b'AT+QSSLCFG=0,0,"cacert"\r')
    assert p.read_until(rb"> ") == b"\r\n> "
    time.sleep(0.6)
    p.write(ca + b"\x1a")
    # the module shows the content it was given (BC660K-GL&BC950K-GL MQTT AN V1.2, 6.2), then the stored length
    assert p.read_until(OK) == ca + b'\r\n+QSSLCFG: 0,0,"cacert",%d\r\n\r\nOK\r\n' % len(ca)
    assert b'+QSSLCFG: 0,0,"cacert",%d\r\n' % len(ca) in p.cmd("AT+QSSLCFG=0,0")
    assert m.control({"cmd": "certs"})["certs"] == {"cacert": len(ca), "clientcert": 0, "clientkey": 0}
    assert m.counters()["cert_bytes"] == len(ca)
    # other contexts/connections do not exist on this module
    assert p.cmd('AT+QSSLCFG=1,0,"seclevel",1') == b"\r\n+CME ERROR: 50\r\n"
    assert p.cmd('AT+QSSLCFG=0,0,"sni",1') == b"\r\nERROR\r\n"  # T6: unsupported option
    assert p.cmd('AT+QSSLCFG=0,0,"timeout",5') == b"\r\n+CME ERROR: 50\r\n"


def test_bc660k_ctrl_z_first_stores_nothing_and_pem_becomes_commands_t6(start_modemsim, pki):
    m = start_modemsim("bc660k", settings={"sleep_idle": 30})
    p = boot(m)
    p.cmd("ATE1")
    p.write(b'AT+QSSLCFG=0,0,"cacert"\r')
    p.read_until(rb"> ")
    time.sleep(0.6)
    p.write(b"\x1a")  # Ctrl-Z before the PEM (T6)
    assert p.read_until(OK) == b'\r\n+QSSLCFG: 0,0,"cacert",0\r\n\r\nOK\r\n'  # 0: nothing stored
    pem = Path(pki["ca_pem"]).read_bytes()
    line = pem[:80].replace(b"\n", b"")
    p.write(line + b"\r")
    echoed = p.read_for(0.3)
    assert echoed == line + b"\r"  # parsed as command-mode input and echoed back (T6), no answer
    assert m.counters()["junk_lines"] == 1


def test_bc660k_prompt_gate_drops_early_bytes(start_modemsim, pki):
    m = start_modemsim("bc660k", settings={"sleep_idle": 30})
    p = boot(m)
    ca = Path(pki["ca_pem"]).read_bytes()
    p.write(b'AT+QSSLCFG=0,0,"cacert"\r')
    p.read_until(rb"> ")
    p.write(ca + b"\x1a")  # at once: inside the 500 ms gate, all lost -- including the Ctrl-Z
    assert p.read_for(0.8) == b""
    time.sleep(0.1)
    p.write(b"\x1a")
    assert p.read_until(OK) == b'\r\n+QSSLCFG: 0,0,"cacert",0\r\n\r\nOK\r\n'
    assert m.counters()["rx_dropped"] == len(ca) + 1
    # a host that does not wait for the prompt at all: what it sent before "> " is lost too
    key = Path(pki["client_key"]).read_bytes()
    p.write(b'AT+QSSLCFG=0,0,"clientkey"\r' + key)
    p.read_until(rb"> ")
    time.sleep(0.6)
    p.write(b"\x1a")
    assert p.read_until(OK) == b'\r\n+QSSLCFG: 0,0,"clientkey",0\r\n\r\nOK\r\n'
    text = m.transcript_text()
    assert "dropped: sent before the > prompt" in text
    assert key.decode().splitlines()[1] not in text  # the dropped key is still redacted


def test_bc660k_certificates_survive_reset_and_restart(start_modemsim, pki, tmp_path):
    state = str(tmp_path / "nv")
    m = start_modemsim("bc660k", state_dir=state, settings={"sleep_idle": 30})
    p = boot(m)
    key = Path(pki["client_key"]).read_bytes()
    p.write(b'AT+QSSLCFG=0,0,"clientkey"\r')
    p.read_until(rb"> ")
    time.sleep(0.6)
    p.write(key + b"\x1a")
    p.read_until(OK)
    p.cmd('AT+QSSLCFG=0,0,"seclevel",2')
    p.cmd("AT+QRST=1")
    p.read_until(rb"RDY\r\n")
    dump = p.cmd("AT+QSSLCFG=0,0")
    assert b'"clientkey",%d\r\n' % len(key) in dump  # certificate settings persist
    assert b'"seclevel",0\r\n' in dump  # other settings do not
    m.stop()
    m2 = start_modemsim("bc660k", state_dir=state, settings={"sleep_idle": 30})
    p2 = boot(m2)
    assert m2.control({"cmd": "certs"})["certs"]["clientkey"] == len(key)
    assert m2.counters().get("cert_bytes", 0) == 0  # a warm start uploads zero certificate bytes
    assert key.decode().splitlines()[3] not in m.transcript_text()
    assert p2.cmd("AT") == b"\r\nOK\r\n"  # ATE0 kept in NVRAM


def test_bc660k_gate_at_a_slow_uart_keeps_the_tail(start_modemsim, pki):
    # At 9600 bit/s a PEM takes longer than the 500 ms gate: the head is lost, the tail is stored, and the
    # length reply tells the host (at the default 115200 a whole certificate fits inside the gate).
    m = start_modemsim("bc660k", settings={"sleep_idle": 30, "uart_bps": 9600})
    p = boot(m)
    ca = Path(pki["ca_pem"]).read_bytes()
    p.write(b'AT+QSSLCFG=0,0,"cacert"\r')
    p.read_until(rb"> ")
    p.write(ca + b"\x1a")
    n = int(re.search(rb'\+QSSLCFG: 0,0,"cacert",(\d+)\r\n', p.read_until(OK, 5)).group(1))
    dropped = m.counters()["rx_dropped"]
    assert 0 < n < len(ca) and n + dropped == len(ca)
    assert 250 < dropped <= 480  # about 500 ms worth of 960 bytes/s (less the time the prompt took to arrive)
