# The AT engine replaying the real module transcripts of reference/transcripts.md, byte shapes as captured.
import asyncio

from cellmqtt.at_engine import PLAIN, AtCommandError, AtEngine, AtTimeout, Cmd, CmeError, fields
from cellmqtt.at_sync import AtSync
from cellmqtt.at_transcript import Transcript
from fakemodem import MemoryPipe, ScriptedModem


def make(echo=True, chunk=0):
    pipe = MemoryPipe(chunk)
    modem = ScriptedModem(pipe, echo=echo)
    out = []
    eng = AtEngine(pipe, transcript=Transcript(out.append), log=out.append)
    return eng, pipe, modem


async def test_t1_bg96_reboot_echo_powered_down_pdpdeact_rdy():
    eng, pipe, modem = make(echo=True, chunk=5)
    pdp = []
    eng.urc(b'+QIURC: "pdpdeact"', pdp.append)
    powered = []
    eng.urc(b"POWERED DOWN", powered.append)
    modem.reply(b"AT", b"\r\nOK\r\n")
    modem.reply(b"AT+CFUN=1,1", b"\r\nOK\r\n\r\nPOWERED DOWN\r\n")
    assert await eng.cmd(b"AT") == []
    rdy = eng.expect(b"RDY")
    assert await eng.cmd(b"AT+CFUN=1,1", Cmd(None, timeout_ms=15000)) == []
    await asyncio.sleep(0.01)
    assert powered == [b"POWERED DOWN"]
    # While the module reboots, AT probes go unanswered and unechoed (T1: ~3 s of silence)
    modem.echo = False
    modem.script[b"AT"] = [(None, b"", 0, None, 0)]
    for _ in range(2):
        try:
            await eng.raw_cmd(b"AT", Cmd(None, timeout_ms=30))
            assert False
        except AtTimeout:
            pass
    pipe.feed(b'\r\n\r\n+QIURC: "pdpdeact",1\r\n')
    pipe.feed(b"\r\nRDY\r\n")
    assert await eng.wait(rdy, 1000) == b"RDY"
    assert pdp == [b'+QIURC: "pdpdeact",1']
    modem.echo = True
    modem.script[b"AT"] = [(None, b"\r\nOK\r\n", 0, None, -1)]
    modem.reply(b"AT&FZE0", b"\r\nOK\r\n")
    modem.reply(b"AT+CPIN?", b"\r\n+CPIN: READY\r\n\r\nOK\r\n")
    modem.reply(b"ATI", b"\r\nQuectel\r\nBG96\r\nRevision: BG96MAR02A07M1G\r\n\r\nOK\r\n")
    assert await eng.cmd(b"AT") == []
    assert await eng.cmd(b"AT&FZE0") == []
    assert await eng.cmd(b"AT+CPIN?", Cmd(b"+CPIN:")) == [b"+CPIN: READY"]
    assert (await eng.cmd(b"ATI", Cmd(b"")))[1:] == [b"BG96", b"Revision: BG96MAR02A07M1G"]
    assert eng.unknown_count == 0, eng.unknown


async def test_t2_certificate_upload_shapes_and_tls_failure():
    eng, pipe, modem = make(echo=True)
    for name, size, chk in ((b"cacert.pem", 1189, b"2d13"), (b"client.pem", 1221, b"21c"), (b"user_key.pem", 1680, b"57")):
        cmd = b'AT+QFUPL="%s",%d,100' % (name, size)
        modem.data_reply(cmd, b"\r\nCONNECT\r\n", b"\r\n+QFUPL: %d,%s\r\n\r\nOK\r\n" % (size, chk), length=size)
        lines = await eng.cmd(cmd, Cmd(b"+QFUPL:", connect=True, timeout_ms=2000), data=b"x" * size)
        f = fields(lines[0], 7)
        assert int(f[0]) == size and int(f[1], 16) == int(chk, 16)
    # A failed TLS handshake: +QMTOPEN: 0,-1 (the poster's log also shows an ERROR after it)
    modem.reply(b'AT+QMTOPEN=0,"x-ats.iot.us-east-1.amazonaws.com",8883', b"\r\nOK\r\n\r\n+QMTOPEN: 0,-1\r\n\r\nERROR\r\n")
    lines, result = await eng.cmd_result(b'AT+QMTOPEN=0,"x-ats.iot.us-east-1.amazonaws.com",8883', PLAIN, b"+QMTOPEN: 0,")
    assert fields(result, 9) == [b"0", b"-1"]
    await asyncio.sleep(0.01)
    assert eng.late_count == 1  # the trailing ERROR belongs to no command and is reported, not lost


async def test_t4_bg770a_capture_shapes():
    eng, pipe, modem = make(echo=True)
    modem.reply(b"AT+QMTCFG=?", b'\r\n+QMTCFG: "version",(0-5),(3,4)\r\n+QMTCFG: "pdpcid",(0-5),(1-5)\r\n'
                b'+QMTCFG: "ssl",(0-5),(0,1),(0-5)\r\n+QMTCFG: "keepalive",(0-5),(0-3600)\r\n'
                b'+QMTCFG: "recv/mode",(0-5),(0,1),(0,1)\r\n\r\nOK\r\n')
    modem.reply(b"AT+COPS=?", b"\r\n+CME ERROR: 515\r\n")
    modem.reply(b'AT+CPIN="0000"', b"\r\n+CME ERROR: 3\r\n")
    lines = await eng.cmd(b"AT+QMTCFG=?", Cmd(b"+QMTCFG:"))
    assert len(lines) == 5 and any(b'"recv/mode"' in x for x in lines)
    try:
        await eng.cmd(b"AT+COPS=?", Cmd(b"+COPS:", timeout_ms=180000))
        assert False
    except CmeError as e:
        assert e.code == 515
    try:
        await eng.cmd(b'AT+CPIN="0000"', secrets=(b"0000",))
        assert False
    except CmeError as e:
        assert e.code == 3 and "0000" not in str(e)
    try:
        await eng.cmd(b"ATBOGUS")  # unknown command: plain ERROR even with CMEE=1
        assert False
    except CmeError:
        assert False
    except AtCommandError:
        pass


async def test_t6_bc66_inline_cert_zero_length_reply():
    eng, pipe, modem = make(echo=False)
    # T6 (Ctrl-Z sent before the PEM): the module stored nothing and says so with length 0
    modem.data_reply(b'AT+QSSLCFG=1,5,"cacert"', b"\r\n> ", b'\r\n+QSSLCFG: 1,5,"cacert",0\r\n\r\nOK\r\n')
    lines = await eng.cmd(b'AT+QSSLCFG=1,5,"cacert"', Cmd(b"+QSSLCFG:", ctrlz=True), data=b"")
    assert fields(lines[0], 9) == [b"1", b"5", b"cacert", b"0"]


async def test_t7_bc660_hex_socket_recv_urc():
    eng, pipe, modem = make(echo=False)
    got = []
    eng.urc(b'+QIURC: "recv"', got.append)
    modem.reply(b'AT+QICFG="dataformat",1,1', b"\r\nOK\r\n")
    modem.reply(b'AT+QISEND=0,4,"01020304"', b"\r\nOK\r\n\r\nSEND OK\r\n\r\n+QIURC: \"recv\",0,2,\"4f4b\"\r\n")
    await eng.cmd(b'AT+QICFG="dataformat",1,1')
    await eng.cmd(b'AT+QISEND=0,4,"01020304"')
    await asyncio.sleep(0.01)
    assert got == [b'+QIURC: "recv",0,2,"4f4b"']
    f = fields(got[0], 8)
    assert bytes.fromhex(f[3].decode()) == b"OK" and int(f[2]) == 2
    assert eng.late_count == 1  # SEND OK after OK: reported as a late reply, not taken by the next command


async def test_t8_boot_urcs_interleave_with_echo_and_ok():
    eng, pipe, modem = make(echo=False, chunk=4)
    boot = []
    for p in (b"RDY", b"+CFUN:", b"+CPIN:", b"+QUSIM:", b"+QIND:"):
        eng.urc(p, boot.append)
    # EG25 shapes: boot URCs land in the echo/OK stream of unrelated commands
    modem.reply(b"AT", b"\r\nRDY\r\n", times=0)
    modem.reply(b"AT", b"\r\n+CFUN: 1\r\n")
    modem.reply(b"AT", b"AT\r\nOK\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n")
    modem.reply(b"AT+CREG?", b"AT\r\nOK\r\n\r\n+QIND: SMS DONE\r\n\r\n+CREG: 0,1\r\n\r\nOK\r\n")
    for _ in range(2):
        try:
            await eng.raw_cmd(b"AT", Cmd(None, timeout_ms=30))
        except AtTimeout:
            pass
    assert await eng.cmd(b"AT") == []
    assert await eng.cmd(b"AT+CREG?", Cmd(b"+CREG:")) == [b"+CREG: 0,1"]
    assert boot == [b"RDY", b"+CFUN: 1", b"+CPIN: READY", b"+QUSIM: 1", b"+QIND: SMS DONE"]


def test_blocking_facade():
    pipe = MemoryPipe()
    modem = ScriptedModem(pipe, echo=True)
    modem.reply(b"AT+CSQ", b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
    modem.reply(b'AT+QMTOPEN=0,"h",1883', b"\r\nOK\r\n\r\n+QMTOPEN: 0,0\r\n")
    modem.reply(b"AT+QRST=1", b"\r\nOK\r\n")
    at = AtSync(AtEngine(pipe))
    assert at.cmd("AT+CSQ", "+CSQ:") == [b"+CSQ: 20,99"]
    assert at.cmd_result('AT+QMTOPEN=0,"h",1883', "+QMTOPEN: 0,")[1] == b"+QMTOPEN: 0,0"
    try:
        at.cmd("AT+NOPE")
        assert False
    except AtCommandError:
        pass
    at.cmd("AT+QRST=1")
    at.run(_later(pipe, b"\r\nRDY\r\n"))
    assert at.wait_urc("RDY", 500) == b"RDY"
    assert at.engine.unknown_count == 0


async def _later(pipe, data):
    async def feed():
        await asyncio.sleep(0.03)
        pipe.feed(data)

    asyncio.create_task(feed())
