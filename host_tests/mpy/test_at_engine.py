# The AT engine, on the MicroPython unix port and CPython, against a scripted modem below it.
import asyncio

from cellmqtt import at_engine
from cellmqtt.at_engine import (
    PLAIN,
    AtClosed,
    AtCommandError,
    AtEngine,
    AtTimeout,
    Cmd,
    CmeError,
    CmsError,
    SendFailed,
    fields,
    frame_line_then_bytes,
    frame_quoted_len,
    quote,
)
from cellmqtt.at_transcript import Transcript
from fakemodem import MemoryPipe, ScriptedModem


def make(echo=False, chunk=0, rxbuf=2048, log=True):
    pipe = MemoryPipe(chunk)
    modem = ScriptedModem(pipe, echo=echo)
    out = []
    logs = []
    eng = AtEngine(pipe, rxbuf=rxbuf, transcript=Transcript(out.append), log=logs.append if log else None)
    eng.out = out
    eng.logs = logs
    return eng, pipe, modem


def urc_sink(eng, prefix, frame=None):
    got = []
    eng.urc(prefix, got.append, frame)
    return got


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


# ---- basics: finals, prefixes, echo ---------------------------------------------------------------------

async def test_info_line_matched_by_prefix_and_ok():
    eng, pipe, modem = make()
    modem.reply(b"AT+CSQ", b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
    assert await eng.cmd(b"AT+CSQ", Cmd(b"+CSQ:")) == [b"+CSQ: 20,99"]
    assert pipe.tx == b"AT+CSQ\r"


async def test_echo_on_is_consumed_and_off_works():
    for echo in (True, False):
        eng, pipe, modem = make(echo=echo)
        modem.reply(b"AT+CPIN?", b"\r\n+CPIN: READY\r\n\r\nOK\r\n")
        assert await eng.cmd(b"AT+CPIN?", Cmd(b"+CPIN:")) == [b"+CPIN: READY"]
        assert eng.unknown_count == 0
        assert eng.echo is (True if echo else None)


async def test_repeated_echoes_glued_by_lone_cr():
    eng, pipe, modem = make()
    modem.reply(b"AT", b"AT\rAT\r\r\nOK\r\n")  # two echoes (a retried probe) without LF between them
    assert await eng.cmd(b"AT") == []
    assert eng.unknown_count == 0 and eng.echo is True


async def test_every_final_kind():
    eng, pipe, modem = make()
    modem.reply(b"AT+A", b"\r\nERROR\r\n")
    modem.reply(b"AT+B", b"\r\n+CME ERROR: 10\r\n")
    modem.reply(b"AT+C", b"\r\n+CME ERROR: SIM not inserted\r\n")
    modem.reply(b"AT+D", b"\r\n+CMS ERROR: 500\r\n")
    modem.data_reply(b"AT+QISEND=0,3", b"\r\n> ", b"\r\nSEND OK\r\n", length=3)
    modem.data_reply(b"AT+QISEND=0,4", b"\r\n> ", b"\r\nSEND FAIL\r\n", length=4)
    try:
        await eng.cmd(b"AT+A")
        assert False
    except CmeError:
        assert False, "plain ERROR is not a CME error"
    except AtCommandError as e:
        assert e.code is None and "AT+A" in str(e)
    try:
        await eng.cmd(b"AT+B")
        assert False
    except CmeError as e:
        assert e.code == 10 and e.text is None
    try:
        await eng.cmd(b"AT+C")
        assert False
    except CmeError as e:
        assert e.code is None and e.text == "SIM not inserted"
    try:
        await eng.cmd(b"AT+D")
        assert False
    except CmsError as e:
        assert e.code == 500
    assert await eng.cmd(b"AT+QISEND=0,3", data=b"abc") == []
    try:
        await eng.cmd(b"AT+QISEND=0,4", data=b"abcd")
        assert False
    except SendFailed:
        pass
    assert modem.data == [b"abc", b"abcd"]


async def test_untagged_information_lines_with_empty_prefix():
    eng, pipe, modem = make(echo=True)
    # T1: ATI on a BG96
    modem.reply(b"ATI", b"\r\nQuectel\r\nBG96\r\nRevision: BG96MAR02A07M1G\r\n\r\nOK\r\n")
    got = urc_sink(eng, b"+QIURC:")
    assert await eng.cmd(b"ATI", Cmd(b"")) == [b"Quectel", b"BG96", b"Revision: BG96MAR02A07M1G"]
    assert got == []


async def test_compact_ok_without_blank_line():
    # T4: test forms print OK with no blank line before it
    eng, pipe, modem = make(echo=True)
    modem.reply(b"AT+QMTOPEN=?", b'\r\n+QMTOPEN: (0-5),<host_name>,(0-65535)\r\nOK\r\n')
    assert await eng.cmd(b"AT+QMTOPEN=?", Cmd(b"+QMTOPEN:")) == [b"+QMTOPEN: (0-5),<host_name>,(0-65535)"]


async def test_fragmented_byte_by_byte():
    eng, pipe, modem = make(echo=True, chunk=1)
    got = urc_sink(eng, b"+QIURC:")
    modem.reply(b"AT+QIACT?", b'\r\n+QIURC: "pdpdeact",1\r\n\r\n+QIACT: 1,1,1,"10.160.151.51"\r\n\r\nOK\r\n')
    assert await eng.cmd(b"AT+QIACT?", Cmd(b"+QIACT:")) == [b'+QIACT: 1,1,1,"10.160.151.51"']
    assert got == [b'+QIURC: "pdpdeact",1']


# ---- URCs at every position -----------------------------------------------------------------------------

async def test_urc_before_echo_between_echo_and_ok_and_between_lines():
    eng, pipe, modem = make()
    stat = urc_sink(eng, b"+QMTSTAT:")
    recv = urc_sink(eng, b"+QMTRECV:")
    # echo comes from the script here so the URC can precede it
    out = (b'\r\n+QMTSTAT: 0,1\r\n'  # before the echo
           b'AT+QFLST="*"\r'
           b'\r\n+QMTRECV: 1,0,"a/b","x"\r\n'  # between echo and the first line
           b'\r\n+QFLST: "ca.pem",1189\r\n'
           b'\r\n+QMTSTAT: 1,7\r\n'  # between two lines of the response
           b'+QFLST: "cl.pem",1221\r\n'
           b'\r\nOK\r\n')
    modem.reply(b'AT+QFLST="*"', out)
    lines = await eng.cmd(b'AT+QFLST="*"', Cmd(b"+QFLST:"))
    assert lines == [b'+QFLST: "ca.pem",1189', b'+QFLST: "cl.pem",1221']
    assert stat == [b"+QMTSTAT: 0,1", b"+QMTSTAT: 1,7"]
    assert recv == [b'+QMTRECV: 1,0,"a/b","x"']
    assert eng.unknown_count == 0


async def test_urc_with_no_command_pending_and_unknown_lines_reported():
    eng, pipe, modem = make()
    seen = urc_sink(eng, b"+CEREG:")
    reported = []
    eng.on_unknown = reported.append
    eng.start()
    pipe.feed(b"\r\n+CEREG: 5\r\n\r\n+WEIRD: 1\r\nnoise\r\n")
    await settle()
    assert seen == [b"+CEREG: 5"]
    assert reported == [b"+WEIRD: 1", b"noise"]
    assert eng.unknown == [b"+WEIRD: 1", b"noise"] and eng.unknown_count == 2


async def test_urc_prefix_vs_read_response_of_same_prefix():
    # +CEREG: as a URC and as the read answer: the pending command's prefix wins while it is pending
    eng, pipe, modem = make()
    urcs = urc_sink(eng, b"+CEREG:")
    modem.reply(b"AT+CEREG?", b"\r\n+CEREG: 2,1\r\n\r\nOK\r\n")
    assert await eng.cmd(b"AT+CEREG?", Cmd(b"+CEREG:")) == [b"+CEREG: 2,1"]
    pipe.feed(b"\r\n+CEREG: 1\r\n")
    await settle()
    assert urcs == [b"+CEREG: 1"]


async def test_handler_exception_does_not_kill_reader():
    eng, pipe, modem = make()

    def bad(line):
        raise ValueError("handler bug")

    eng.urc(b"+BAD:", bad)
    modem.reply(b"AT", b"\r\n+BAD: 1\r\nOK\r\n")
    assert await eng.cmd(b"AT") == []
    assert eng.errors == 1 and any("handler bug" in m for m in eng.logs)
    modem.reply(b"AT", b"\r\nOK\r\n")
    assert await eng.cmd(b"AT") == []


# ---- two-phase commands ---------------------------------------------------------------------------------

async def test_two_phase_result_urc_with_other_commands_meanwhile():
    eng, pipe, modem = make(echo=True)
    modem.reply(b'AT+QMTOPEN=0,"broker.test",8883', b"\r\nOK\r\n")
    modem.reply(b"AT+CSQ", b"\r\n+CSQ: 18,99\r\n\r\nOK\r\n")
    stat = urc_sink(eng, b"+QMTSTAT:")

    async def opener():
        return await eng.cmd_result(b'AT+QMTOPEN=0,"broker.test",8883', Cmd(None, result_ms=2000), b"+QMTOPEN: 0,")

    t = asyncio.create_task(opener())
    await asyncio.sleep(0.02)
    assert await eng.cmd(b"AT+CSQ", Cmd(b"+CSQ:")) == [b"+CSQ: 18,99"]  # runs while OPEN's result is pending
    pipe.feed(b"\r\n+QMTSTAT: 1,1\r\n\r\n+QMTOPEN: 0,0\r\n")
    lines, result = await t
    assert result == b"+QMTOPEN: 0,0" and stat == [b"+QMTSTAT: 1,1"]


async def test_two_phase_result_before_ok_is_not_missed():
    eng, pipe, modem = make()
    modem.reply(b"AT+QMTCONN=0,\"c\"", b"\r\n+QMTCONN: 0,0,0\r\nOK\r\n")
    lines, result = await eng.cmd_result(b'AT+QMTCONN=0,"c"', PLAIN, b"+QMTCONN: 0,")
    assert result == b"+QMTCONN: 0,0,0"


async def test_two_phase_result_timeout_and_error_phase():
    eng, pipe, modem = make()
    modem.reply(b"AT+QMTDISC=0", b"\r\nOK\r\n")
    try:
        await eng.cmd_result(b"AT+QMTDISC=0", Cmd(None, result_ms=50), b"+QMTDISC: 0,")
        assert False
    except AtTimeout as e:
        assert "+QMTDISC: 0," in str(e)
    assert eng._waiters == []
    modem.reply(b"AT+QMTDISC=1", b"\r\n+CME ERROR: 3\r\n")
    try:
        await eng.cmd_result(b"AT+QMTDISC=1", PLAIN, b"+QMTDISC: 1,")
        assert False
    except CmeError as e:
        assert e.code == 3
    assert eng._waiters == []


# ---- data modes -----------------------------------------------------------------------------------------

async def test_prompt_fixed_length_binary_data():
    eng, pipe, modem = make(echo=True)
    payload = b'{"a":1}\x1a\x1b\x00\r\n end'
    cmd = b'AT+QMTPUB=0,1,1,0,"t",%d' % len(payload)
    modem.data_reply(cmd, b"\r\n> ", b"\r\nOK\r\n\r\n+QMTPUB: 0,1,0\r\n", length=len(payload))
    lines, res = await eng.cmd_result(cmd, PLAIN, b"+QMTPUB: 0,1,", data=payload)
    assert modem.data == [payload] and res == b"+QMTPUB: 0,1,0"


async def test_prompt_ctrl_z_form_and_refusal_of_ctrl_z_payload():
    eng, pipe, modem = make()
    modem.data_reply(b'AT+QMTPUB=0,0,0,0,"t"', b"\r\n> ", b"\r\nOK\r\n")
    assert await eng.cmd(b'AT+QMTPUB=0,0,0,0,"t"', Cmd(None, ctrlz=True), data=b"hello") == []
    assert modem.data == [b"hello"] and pipe.tx.endswith(b"hello\x1a")
    for bad in (b"a\x1ab", b"a\x1bb"):
        try:
            await eng.cmd(b'AT+QMTPUB=0,0,0,0,"t"', Cmd(None, ctrlz=True), data=bad)
            assert False
        except ValueError:
            pass
    assert len(modem.commands) == 1  # nothing reached the modem


async def test_esc_leaves_data_mode_after_a_lost_block():
    eng, pipe, modem = make()
    modem.data_reply(b'AT+QSSLCFG=0,0,"cacert"', b"\r\n> ", b"", length=None)  # never answers the block
    try:
        await eng.cmd(b'AT+QSSLCFG=0,0,"cacert"', Cmd(None, ctrlz=True, timeout_ms=200), data=b"PEM")
        assert False
    except AtTimeout:
        pass
    assert pipe.tx.endswith(b"PEM\x1a\x1b")


async def test_error_instead_of_prompt_sends_no_data():
    eng, pipe, modem = make()
    modem.reply(b'AT+QMTPUB=0,0,0,0,"t",3', b"\r\n+CME ERROR: 8503\r\n")
    try:
        await eng.cmd(b'AT+QMTPUB=0,0,0,0,"t",3', data=b"abc")
        assert False
    except CmeError as e:
        assert e.code == 8503
    assert pipe.tx == b'AT+QMTPUB=0,0,0,0,"t",3\r'


async def test_late_ok_before_prompt_is_not_the_answer():
    eng, pipe, modem = make()
    modem.data_reply(b'AT+QSSLSEND=0,2', b"\r\nOK\r\n\r\n> ", b"\r\nSEND OK\r\n", length=2)
    assert await eng.cmd(b"AT+QSSLSEND=0,2", data=b"hi") == []
    assert modem.data == [b"hi"] and eng.late_count == 1


async def test_connect_data_mode_exact_bytes():
    # T2 shape: AT+QFUPL="cacert.pem",<size>,100 -> CONNECT, exact bytes, +QFUPL: size,checksum, OK
    eng, pipe, modem = make(echo=True)
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    cmd = b'AT+QFUPL="cacert.pem",%d,100' % len(pem)
    modem.data_reply(cmd, b"\r\nCONNECT\r\n", b"\r\n+QFUPL: %d,2d13\r\n\r\nOK\r\n" % len(pem), length=len(pem))
    lines = await eng.cmd(cmd, Cmd(b"+QFUPL:", connect=True, timeout_ms=1000), data=pem)
    assert lines == [b"+QFUPL: %d,2d13" % len(pem)] and modem.data == [pem]


async def test_ack_mode_waits_for_a_after_each_kilobyte():
    eng, pipe, modem = make()
    blob = bytes(range(256)) * 10  # 2560 bytes: 3 blocks
    cmd = b'AT+QFUPL="big.bin",2560,5,1'
    acks = []
    orig = modem._data_byte

    def data_byte(c):
        orig(c)
        if modem._collect is not None and len(modem._block) % 1024 == 0:
            acks.append(len(modem._block))
            pipe.feed(b"A")

    modem._data_byte = data_byte
    modem.data_reply(cmd, b"\r\nCONNECT\r\n", b"\r\n+QFUPL: 2560,0\r\n\r\nOK\r\n", length=2560)
    await eng.cmd(cmd, Cmd(b"+QFUPL:", connect=True, ack=1024, timeout_ms=1000), data=blob)
    assert acks == [1024, 2048] and modem.data == [blob]


async def test_ack_mode_stalls_without_a():
    eng, pipe, modem = make()
    cmd = b'AT+QFUPL="big.bin",2048,5,1'
    modem.data_reply(cmd, b"\r\nCONNECT\r\n", b"\r\n+QFUPL: 2048,0\r\n\r\nOK\r\n", length=2048)
    try:
        await eng.cmd(cmd, Cmd(b"+QFUPL:", connect=True, ack=1024, timeout_ms=100), data=bytes(2048))
        assert False
    except AtTimeout:
        pass
    assert len(pipe.tx) == len(cmd) + 1 + 1024  # the second block was never sent


async def test_gate_delay_after_prompt():
    from cellmqtt.compat import ticks_diff, ticks_ms
    eng, pipe, modem = make()
    stamps = {}
    cmd = b'AT+QSSLCFG=0,0,"cacert"'
    modem.data_reply(cmd, b"\r\n> ", b'\r\n+QSSLCFG: 0,0,"cacert",3\r\n\r\nOK\r\n')
    orig = pipe.write

    async def write(data):
        if b">" not in stamps and data.startswith(b"PEM"):
            stamps[b">"] = ticks_ms()
        await orig(data)

    pipe.write = write
    t0 = ticks_ms()
    lines = await eng.cmd(cmd, Cmd(b"+QSSLCFG:", ctrlz=True, gate_ms=120, timeout_ms=1000), data=b"PEM")
    assert lines == [b'+QSSLCFG: 0,0,"cacert",3']
    assert ticks_diff(stamps[b">"], t0) >= 115


async def test_data_echo_is_not_reported_as_unknown():
    eng, pipe, modem = make(echo=True)
    cmd = b'AT+QMTPUB=0,0,0,0,"t",5'
    modem.data_reply(cmd, b"\r\n> ", b"hello\r\nOK\r\n", length=5)
    await eng.cmd(cmd, data=b"hello")
    assert eng.unknown_count == 0


# ---- payload-bearing URCs -------------------------------------------------------------------------------

async def test_qmtrecv_unescaped_payload_without_length():
    eng, pipe, modem = make()
    got = urc_sink(eng, b"+QMTRECV:", frame_quoted_len(3))
    eng.start()
    pipe.feed(b'\r\n+QMTRECV: 0,1,"t","{"a":"b,c"}"\r\n')
    await settle()
    assert got == [b'+QMTRECV: 0,1,"t","{"a":"b,c"}"']


async def test_qmtrecv_with_length_carries_crlf_and_quotes():
    eng, pipe, modem = make(chunk=7)
    got = urc_sink(eng, b"+QMTRECV:", frame_quoted_len(3))
    other = urc_sink(eng, b"+QMTSTAT:")
    payload = b'{"a":\r\n"b,c"}\r\nOK\r\n"'
    eng.start()
    pipe.feed(b'\r\n+QMTRECV: 0,1,"a/b",%d,"%s"\r\n\r\n+QMTSTAT: 0,1\r\n' % (len(payload), payload))
    await asyncio.sleep(0.05)
    assert got == [b'+QMTRECV: 0,1,"a/b",%d,"%s"' % (len(payload), payload)]
    assert other == [b"+QMTSTAT: 0,1"] and eng.unknown_count == 0 and eng.late_count == 0


async def test_bc660k_sslurc_recv_text_and_hex():
    # T7 / quectel-bc660k.md 3: +QSSLURC: "recv",0,0,<len>,"<data>"; hex mode carries 2*len characters
    eng, pipe, modem = make()
    got = urc_sink(eng, b'+QSSLURC: "recv"', frame_quoted_len(3))
    eng.start()
    pipe.feed(b'\r\n+QSSLURC: "recv",0,0,4,"\x20\x02\r\n"\r\n')
    await settle()
    assert got == [b'+QSSLURC: "recv",0,0,4,"\x20\x02\r\n"']
    # hex mode: the length counts bytes, the data is twice as many characters
    eng, pipe, modem = make(chunk=3)
    got = urc_sink(eng, b'+QSSLURC: "recv"', frame_quoted_len(3, scale=2))
    eng.start()
    pipe.feed(b'\r\n+QSSLURC: "recv",0,0,2,"4f4b"\r\n\r\n+QSSLURC: "recv",0,0,3,"0d0a22"\r\n')
    await asyncio.sleep(0.02)
    assert got == [b'+QSSLURC: "recv",0,0,2,"4f4b"', b'+QSSLURC: "recv",0,0,3,"0d0a22"']
    assert eng.unknown_count == 0


async def test_line_then_raw_bytes_record():
    # BG96 push mode: +QSSLURC: "recv",<client>,<len>\r\n<len raw bytes>
    eng, pipe, modem = make(chunk=3)
    got = []
    eng.urc(b'+QSSLURC: "recv"', got.append, frame_line_then_bytes(2))
    eng.urc(b'+QSSLURC: "closed"', got.append)
    eng.start()
    raw = b"\x30\x0c\x00\x03a/b\r\nOK\r\n"
    pipe.feed(b'\r\n+QSSLURC: "recv",1,%d\r\n%s\r\n+QSSLURC: "closed",1\r\n' % (len(raw), raw))
    await asyncio.sleep(0.05)
    assert got[0] == b'+QSSLURC: "recv",1,%d\r\n%s' % (len(raw), raw)
    assert got[1] == b'+QSSLURC: "closed",1'


async def test_response_with_raw_bytes_after_info_line():
    # BG96 AT+QSSLRECV=<client>,<len> -> +QSSLRECV: <n>\r\n<data>\r\nOK
    eng, pipe, modem = make()
    modem.reply(b"AT+QSSLRECV=1,1500", b"\r\n+QSSLRECV: 5\r\nOK\r\n!\r\n\r\nOK\r\n")
    lines = await eng.cmd(b"AT+QSSLRECV=1,1500", Cmd(b"+QSSLRECV:", frame=frame_line_then_bytes(0)))
    assert lines == [b"+QSSLRECV: 5\r\nOK\r\n!"]


async def test_line_longer_than_1kb():
    eng, pipe, modem = make()
    got = urc_sink(eng, b"+QMTRECV:", frame_quoted_len(3))
    body = b"x" * 1500
    eng.start()
    pipe.feed(b'\r\n+QMTRECV: 0,0,"t","' + body + b'"\r\n')
    await settle()
    assert got == [b'+QMTRECV: 0,0,"t","' + body + b'"']


# ---- sleep: the lost first byte -------------------------------------------------------------------------

async def test_wake_probe_and_retry_after_lost_first_byte():
    eng, pipe, modem = make()
    modem.reply(b"AT", b"\r\nOK\r\n", times=-1)
    modem.reply(b"T", b"\r\n")  # what a sleeping module answers to the rest of a probe whose A was lost
    modem.reply(b"AT+CSQ", b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
    wakes = []

    async def wake(engine):
        wakes.append(1)
        for _ in range(3):
            try:
                await engine.raw_cmd(b"AT", Cmd(None, timeout_ms=100))
                return
            except (AtTimeout, AtCommandError):
                pass

    eng.wake = wake
    eng.wake_idle_ms = 50
    await asyncio.sleep(0.06)
    modem.drop_first = True  # asleep: the first byte written is lost
    assert await eng.cmd(b"AT+CSQ", Cmd(b"+CSQ:")) == [b"+CSQ: 20,99"]
    assert wakes == [1] and modem.commands[:2] == [b"T", b"AT"]


async def test_raw_cmd_starts_the_reader():
    eng, pipe, modem = make()
    modem.reply(b"AT", b"\r\nOK\r\n")
    assert await eng.raw_cmd(b"AT", Cmd(None, timeout_ms=500)) == []  # the first call of an engine may be a probe


async def test_echo_of_a_command_that_lost_its_first_byte():
    eng, pipe, modem = make(echo=True)
    modem.reply(b"T", b"\r\nERROR\r\n")
    modem.drop_first = True
    try:
        await eng.raw_cmd(b"AT", Cmd(None, timeout_ms=200))
        assert False
    except AtCommandError:
        pass
    assert eng.unknown_count == 0  # the echoed "T" is recognised, not reported as an unknown line


async def test_retry_when_command_vanished():
    eng, pipe, modem = make()
    modem.reply(b"AT+CEREG?", b"\r\n+CEREG: 0,1\r\n\r\nOK\r\n")
    modem.drop_first = True  # the command loses its first byte; the module stays silent
    modem.script[b"T+CEREG?"] = [(None, b"", 0, None, 0)]  # silence
    assert await eng.cmd(b"AT+CEREG?", Cmd(b"+CEREG:", timeout_ms=100, retry=1)) == [b"+CEREG: 0,1"]
    assert any("retrying" in m for m in eng.logs)


# ---- late replies ---------------------------------------------------------------------------------------

async def test_late_reply_is_not_taken_as_next_answer():
    eng, pipe, modem = make()
    # A module answers in order: QIACT's OK (late, after the host gave up) comes before the answer to the
    # next command the host sends.
    modem.reply(b"AT+QIACT=1", b"\r\nOK\r\n", delay_ms=150)
    modem.reply(b"AT+CMEE?", b"\r\n+CMEE: 1\r\n\r\nOK\r\n", delay_ms=200)
    modem.reply(b"AT+QICSGP=1", b"\r\nERROR\r\n")
    try:
        await eng.cmd(b"AT+QIACT=1", Cmd(None, timeout_ms=50))
        assert False
    except AtTimeout:
        pass
    # The next command must not take QIACT's late OK: the engine re-synchronises first.
    try:
        await eng.cmd(b"AT+QICSGP=1", Cmd(None, timeout_ms=500))
        assert False, "QICSGP answered ERROR; the late OK was taken instead"
    except AtCommandError:
        pass
    assert modem.commands == [b"AT+QIACT=1", b"AT+CMEE?", b"AT+QICSGP=1"]
    assert eng.late_count == 1


async def test_late_info_line_of_other_prefix_is_unknown_not_answer():
    # T4: slow output spills into the next command's window
    eng, pipe, modem = make(echo=True)
    modem.reply(b"AT+CFUN=?", b"\r\nAT+QGPSCFG\r\nAT+QGPS\r\n\r\nOK\r\n\r\n+CFUN: (0,1,4),(0,1)\r\n")
    modem.reply(b"AT+CSQ", b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
    try:
        await eng.cmd(b"AT+CFUN=?", Cmd(b"+CFUN:", need_info=True, timeout_ms=100))
        assert False, "the OK before +CFUN must not end the command"
    except AtTimeout:
        pass
    assert eng.unknown_count == 2


# ---- redaction and transcript ---------------------------------------------------------------------------

async def test_secrets_never_in_transcript_log_or_error():
    eng, pipe, modem = make(echo=True)
    secret = b"5888ea6f4631ce76d621f452e8823507c36dd68a61f6e08518c8935e280c3c72"
    cmd = b'AT+QMTCONN=0,"dev_0_0_2999010100","dev","' + secret + b'"'
    modem.reply(cmd, b"\r\n+CME ERROR: 3\r\n")
    try:
        await eng.cmd(cmd, secrets=(secret,))
        assert False
    except CmeError as e:
        assert secret.decode() not in str(e) and secret.decode() not in e.cmd and "***" in str(e)
    key = b"-----BEGIN RSA PRIVATE KEY-----\nMIIEsecretkeybody\n-----END RSA PRIVATE KEY-----\n"
    up = b'AT+QFUPL="user_key.pem",%d,100' % len(key)
    modem.data_reply(up, b"\r\nCONNECT\r\n", b"\r\n+QFUPL: %d,57\r\n\r\nOK\r\n" % len(key), length=len(key))
    await eng.cmd(up, Cmd(b"+QFUPL:", connect=True, secret_data=True, timeout_ms=1000), data=key)
    pipe.feed(b'\r\n+QMTRECV: 0,0,"/ext/session/p/d/thing/activate/info","{"params":{"deviceSecret":"s3cr3tXYZ"}}"\r\n')
    await settle()
    text = "".join(eng.out) + "".join(eng.logs)
    assert secret.decode() not in text
    assert "secretkeybody" not in text and "bytes, secret" in text
    assert "s3cr3tXYZ" not in text and '"deviceSecret":"***"' in text
    assert "AT+QMTCONN" in text  # the command itself is recorded


async def test_transcript_has_both_directions_with_timestamps():
    eng, pipe, modem = make(echo=True)
    modem.reply(b"AT+CSQ", b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
    await eng.cmd(b"AT+CSQ", Cmd(b"+CSQ:"))
    recs = [r.split(" ", 2) for r in eng.out]
    assert [r[1] for r in recs] == [">", "<", "<", "<"]
    assert recs[0][2] == "AT+CSQ\\r\n" and recs[2][2] == "+CSQ: 20,99\n"
    assert all(int(r[0]) >= 0 for r in recs)


def test_ring_transcript_keeps_the_tail():
    t = Transcript.ring(100)
    for i in range(50):
        t.tx(b"AT+LINE%d" % i)
    d = t.dump()
    assert "AT+LINE49" in d and "AT+LINE0\\r" not in d and len(d) < 140


# ---- bad input ------------------------------------------------------------------------------------------

async def test_garbage_and_nuls_do_not_break_the_next_answer():
    eng, pipe, modem = make()
    modem.reply(b"AT", b"\x00\x00\xff\r\n\x07\x1b[garbage\x80\xfe\r\nOK\r\n")
    assert await eng.cmd(b"AT") == []
    assert eng.unknown_count == 1
    modem.reply(b"AT+CSQ", b"\x00\r\n+CSQ: 9,99\r\n\x00\r\nOK\r\n")
    assert await eng.cmd(b"AT+CSQ", Cmd(b"+CSQ:")) == [b"+CSQ: 9,99"]


async def test_reply_that_never_comes_times_out_without_hanging():
    eng, pipe, modem = make()
    modem.script[b"AT+QIACT=1"] = [(None, b"", 0, None, 0)]  # the module stays silent
    try:
        await eng.cmd(b"AT+QIACT=1", Cmd(None, timeout_ms=80))
        assert False
    except AtTimeout as e:
        assert "AT+QIACT=1" in str(e) and "80 ms" in str(e)


async def test_stream_close_fails_pending_and_later_commands():
    eng, pipe, modem = make()
    modem.script[b"AT+QIACT=1"] = [(None, b"", 0, None, 0)]

    async def closer():
        await asyncio.sleep(0.03)
        pipe.close()

    asyncio.create_task(closer())
    w = eng.expect(b"+QMTOPEN:")
    try:
        await eng.cmd(b"AT+QIACT=1", Cmd(None, timeout_ms=5000))
        assert False
    except AtClosed:
        pass
    try:
        await eng.wait(w, 1000)
        assert False
    except AtClosed:
        pass
    try:
        await eng.cmd(b"AT")
        assert False
    except AtClosed:
        pass


async def test_overlong_line_is_reported_and_reader_survives():
    eng, pipe, modem = make(rxbuf=256)
    eng.start()
    pipe.feed(b"\r\n+JUNK: " + b"z" * 1000 + b"\r\n")
    await settle()
    assert eng.unknown_count == 1 and any("longer than 256" in m for m in eng.logs)
    modem.reply(b"AT+CSQ", b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
    assert await eng.cmd(b"AT+CSQ", Cmd(b"+CSQ:")) == [b"+CSQ: 20,99"]


async def test_framed_record_larger_than_buffer_is_discarded_cleanly():
    eng, pipe, modem = make(rxbuf=256)
    got = urc_sink(eng, b"+QMTRECV:", frame_quoted_len(3))
    eng.start()
    big = b"y\r\n" * 200
    pipe.feed(b'\r\n+QMTRECV: 0,0,"t",%d,"%s"\r\n\r\n+QMTRECV: 0,0,"t",2,"ok"\r\n' % (len(big), big))
    await asyncio.sleep(0.02)
    assert got == [b'+QMTRECV: 0,0,"t",2,"ok"']
    assert eng.unknown_count == 1 and any("larger than the 256-byte buffer" in m for m in eng.logs)


async def test_partial_frame_hands_over_the_head_with_the_records_tail():
    # a message larger than the buffer reaches its handler cut, with the last bytes of the record (an id the
    # sender put last) readable during the call; the stream stays in step for the record after it
    eng, pipe, modem = make(rxbuf=256, chunk=50)
    seen = []
    eng.urc(b"+QMTRECV:", lambda line: seen.append((line, eng.cut_tail)), frame_quoted_len(3, partial=True))
    eng.start()
    big = b'{"pad":"' + b"p" * 900 + b'","mid":77}'
    pipe.feed(b'\r\n+QMTRECV: 0,0,"t",%d,"%s"\r\n\r\n+QMTRECV: 0,0,"t",2,"ok"\r\n' % (len(big), big))
    await asyncio.sleep(0.05)
    assert len(seen) == 2, seen
    head, tail = seen[0]
    assert head.startswith(b'+QMTRECV: 0,0,"t",%d,"{"pad"' % len(big)) and 200 < len(head) <= 256
    assert tail.endswith(b'"mid":77}"') and len(tail) <= 64
    assert seen[1] == (b'+QMTRECV: 0,0,"t",2,"ok"', b"")
    assert eng.cut_tail == b"" and any("; cut" in m for m in eng.logs)


async def test_commands_are_serialised():
    eng, pipe, modem = make()
    modem.reply(b"AT+A", b"\r\nOK\r\n", delay_ms=40)
    modem.reply(b"AT+B", b"\r\nOK\r\n")
    order = []

    async def run(c):
        await eng.cmd(c)
        order.append((c, pipe.tx))

    await asyncio.gather(run(b"AT+A"), run(b"AT+B"))
    assert order[0] == (b"AT+A", b"AT+A\r")  # B was not written before A's answer
    assert order[1][1] == b"AT+A\rAT+B\r"


async def test_timeout_bounds_the_wait_not_the_read():
    # a URC whose first half arrives before a command times out and the rest after: nothing is lost
    eng, pipe, modem = make()
    got = urc_sink(eng, b"+QIURC:")
    modem.script[b"AT+X"] = [(None, b'\r\n+QIURC: "pdp', 0, None, 0)]
    try:
        await eng.cmd(b"AT+X", Cmd(None, timeout_ms=30))
        assert False
    except AtTimeout:
        pass
    pipe.feed(b'deact",1\r\n')
    await settle()
    assert got == [b'+QIURC: "pdpdeact",1']


# ---- helpers --------------------------------------------------------------------------------------------

def test_quote_refuses_bytes_that_break_commands():
    assert quote("a/b") == b'"a/b"'
    for bad in ('a"b', "a\rb", "a\nb", "a\x1ab", "a\x1bb", "a\x00b"):
        try:
            quote(bad, "topic")
            assert False, bad
        except ValueError as e:
            assert "topic" in str(e) and bad not in str(e)


def test_fields_respect_quotes():
    assert fields(b'+QMTRECV: 0,1,"a/b","x,y"', 10) == [b"0", b"1", b"a/b", b"x,y"]
    assert fields(b'+QIACT: 1,1,1,"10.0.0.1"', 8) == [b"1", b"1", b"1", b"10.0.0.1"]
    assert fields(b"+CSQ: 20,99", 5) == [b"20", b"99"]


def test_find_fallback_matches_bytearray_find():
    buf = bytearray(b"ab\r\ncd\r\n\r\n+X: 1\r\nzz")
    mv = memoryview(buf)
    for s in range(len(buf)):
        for e in range(s, len(buf) + 1):
            assert at_engine._find_copy(buf, mv, b"\n", s, e) == at_engine._find_fast(buf, mv, b"\n", s, e)


async def test_framing_with_the_fallback_search():
    saved = at_engine._find
    at_engine._find = at_engine._find_copy  # as on a build without bytearray.find
    try:
        eng, pipe, modem = make(chunk=5)
        got = urc_sink(eng, b"+QMTRECV:", frame_quoted_len(3))
        modem.reply(b"AT+CSQ", b'\r\n+QMTRECV: 0,0,"t",4,"a\r\nb"\r\n+CSQ: 1,2\r\n\r\nOK\r\n')
        assert await eng.cmd(b"AT+CSQ", Cmd(b"+CSQ:")) == [b"+CSQ: 1,2"]
        assert got == [b'+QMTRECV: 0,0,"t",4,"a\r\nb"']
    finally:
        at_engine._find = saved
