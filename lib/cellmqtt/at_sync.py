# Blocking facade over the AT engine, for scripts and the REPL:
#
#   from cellmqtt.at_sync import AtSync
#   at = AtSync(engine)
#   at.cmd("AT+CSQ", "+CSQ:")        -> [b'+CSQ: 20,99']
#   at.cmd_result('AT+QMTOPEN=0,"h",8883', "+QMTOPEN: 0,", result_timeout_ms=75000)
#
# Each call runs the event loop until the command completes; the engine's reader task stays in the loop
# between calls, so URCs that arrive meanwhile are handled at the next call (the UART buffers them).
import asyncio
import sys


def _b(x):
    return x.encode() if isinstance(x, str) else x


class AtSync:
    def __init__(self, engine):
        self.engine = engine
        if sys.implementation.name == "micropython":
            self._loop = asyncio.get_event_loop()
        else:
            self._loop = asyncio.new_event_loop()

    def run(self, coro):
        return self._loop.run_until_complete(coro)

    def cmd(self, command, prefix=None, **kw):
        return self.run(self.engine.cmd(_b(command), _b(prefix), **kw))

    def cmd_result(self, command, result_prefix, **kw):
        return self.run(self.engine.cmd_result(_b(command), _b(result_prefix), **kw))

    def wait_urc(self, prefix, timeout_ms):
        return self.run(self.engine.wait_urc(_b(prefix), timeout_ms))
