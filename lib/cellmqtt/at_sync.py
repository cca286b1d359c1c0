# Blocking facade over the AT engine, for scripts and the REPL (keywords instead of a declared Cmd spec):
#
#   from cellmqtt.at_sync import AtSync
#   at = AtSync(engine)
#   at.cmd("AT+CSQ", "+CSQ:")        -> [b'+CSQ: 20,99']
#   at.cmd_result('AT+QMTOPEN=0,"h",8883', "+QMTOPEN: 0,", result_ms=75000)
#
# Each call runs the event loop until the command completes; the engine's reader task stays in the loop
# between calls, so URCs that arrive meanwhile are handled at the next call (the UART buffers them).
import asyncio
import sys

from cellmqtt.at_engine import Cmd


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

    def cmd(self, command, prefix=None, data=None, secrets=(), **spec):
        """spec: the keywords of cellmqtt.at_engine.Cmd (timeout_ms, ctrlz, connect, ...)."""
        return self.run(self.engine.cmd(_b(command), Cmd(_b(prefix), **spec), data, secrets))

    def cmd_result(self, command, result_prefix, data=None, secrets=(), **spec):
        return self.run(self.engine.cmd_result(_b(command), Cmd(**spec), _b(result_prefix), data, secrets))

    def wait_urc(self, prefix, timeout_ms):
        return self.run(self.engine.wait_urc(_b(prefix), timeout_ms))
