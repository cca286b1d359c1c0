# The AT engine over a real pty on the MicroPython unix port: the board's tty opener, asyncio stream polling
# and the engine's reader together. The peer is a scripted CPython program on the pty's other side.
PORTS = ("micropython",)

import asyncio

from board import Board
from cellmqtt.at_engine import PLAIN, AtClosed, AtEngine, Cmd, CmeError, frame_quoted_len


async def test_engine_over_real_pty(pty_peer):
    eng = AtEngine(Board(pty_peer["port"]).pipe())
    recv = []
    eng.urc(b"+QMTRECV:", recv.append, frame_quoted_len(3))
    assert await eng.cmd(b"AT") == []
    assert await eng.cmd(b"AT+CSQ", Cmd(b"+CSQ:")) == [b"+CSQ: 20,99"]
    try:
        await eng.cmd(b"AT+CPIN?", Cmd(b"+CPIN:"))
        assert False
    except CmeError as e:
        assert e.code == 10
    lines, res = await eng.cmd_result(b'AT+QMTPUB=0,1,1,0,"t",5', PLAIN, b"+QMTPUB: 0,1,", data=b"a\x1ab\r\n")
    assert res == b"+QMTPUB: 0,1,0"
    await asyncio.sleep(0.2)
    assert recv == [b'+QMTRECV: 0,1,"t",5,"a\x1ab\r\n"']  # the peer sends back what it received, framed
    # the peer closes its side: the engine reports a closed stream instead of hanging
    try:
        await eng.cmd(b"AT+BYE", Cmd(None, timeout_ms=3000))
        await eng.cmd(b"AT", Cmd(None, timeout_ms=3000))
        assert False
    except AtClosed:
        pass
