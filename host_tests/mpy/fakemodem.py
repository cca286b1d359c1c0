# Test support (both ports): an in-memory byte pipe and a scripted modem *below* the AT engine.
#
# The engine is the layer under test here, so the peer is scripted byte for byte: each expected command
# maps to the exact bytes a module would answer (taken from the references and real transcripts).
import asyncio


class MemoryPipe:
    """The engine's pipe. ``feed()`` plays modem output; ``tx`` collects what the engine wrote."""

    def __init__(self, chunk=0):
        self.rx = b""
        self.tx = b""
        self.chunk = chunk  # max bytes per readinto (0 = all available): to test fragmentation
        self.closed = False
        self.on_write = None
        self._ev = asyncio.Event()

    def feed(self, data):
        self.rx += data
        self._ev.set()

    def close(self):
        self.closed = True
        self._ev.set()

    async def readinto(self, buf):
        while not self.rx:
            if self.closed:
                return 0
            self._ev.clear()
            await self._ev.wait()
        n = min(len(buf), len(self.rx))
        if self.chunk:
            n = min(n, self.chunk)
        buf[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n

    async def write(self, data):
        data = bytes(data)
        self.tx += data
        if self.on_write is not None:
            self.on_write(data)


class ScriptedModem:
    """Answers commands written to ``pipe`` from a script.

    ``reply(cmd, out, delay_ms=0)``: when the engine sends ``cmd + CR``, feed ``out`` (after ``delay_ms``).
    ``data_reply(cmd, prompt, out, length=None)``: feed ``prompt``; then collect the data block (``length``
    bytes, or up to Ctrl-Z) into ``self.data`` and feed ``out``.
    ``echo``: echo each command line (``cmd + CR``) before its answer, as ATE1 modules do.
    ``drop_first``: lose the first byte of the next write (a module waking from sleep).
    Unknown commands get ``ERROR``. ``commands`` records every command line received, in order.
    """

    def __init__(self, pipe, echo=False):
        self.pipe = pipe
        self.echo = echo
        self.script = {}
        self.commands = []
        self.data = []
        self.drop_first = False
        self._line = b""
        self._collect = None  # (cmd, remaining length or None for Ctrl-Z, out)
        self._block = b""
        pipe.on_write = self._on_write

    def reply(self, cmd, out, delay_ms=0, times=0):
        self.script.setdefault(cmd, []).append((None, out, delay_ms, None, times))

    def data_reply(self, cmd, prompt, out, length=None, delay_ms=0):
        self.script.setdefault(cmd, []).append((prompt, out, delay_ms, length, 0))

    def _emit(self, out, delay_ms):
        if not delay_ms:
            self.pipe.feed(out)
            return

        async def later():
            await asyncio.sleep(delay_ms / 1000)
            self.pipe.feed(out)

        asyncio.create_task(later())

    def _on_write(self, data):
        if self.drop_first and data:
            self.drop_first = False
            data = data[1:]
        for i in range(len(data)):
            c = data[i:i + 1]
            if self._collect is not None:
                self._data_byte(c)
                continue
            if c == b"\r":
                line = self._line
                self._line = b""
                self._command(line)
            else:
                self._line += c

    def _data_byte(self, c):
        cmd, remaining, out = self._collect
        if remaining is None:
            if c == b"\x1a":
                self._end_block(out)
                return
            self._block += c
            return
        self._block += c
        remaining -= 1
        self._collect = (cmd, remaining, out)
        if remaining == 0:
            self._end_block(out)

    def _end_block(self, out):
        self.data.append(self._block)
        self._block = b""
        self._collect = None
        self._emit(out, 0)

    def _command(self, line):
        self.commands.append(line)
        if self.echo:
            self.pipe.feed(line + b"\r")
        steps = self.script.get(line)
        if not steps:
            self.pipe.feed(b"\r\nERROR\r\n")
            return
        prompt, out, delay_ms, length, times = steps[0]
        if times != -1 and len(steps) > 1:
            steps.pop(0)  # several scripted answers for the same command: use them in order
        if prompt is None:
            self._emit(out, delay_ms)
        else:
            self._collect = (line, length, out)
            self._emit(prompt, delay_ms)
