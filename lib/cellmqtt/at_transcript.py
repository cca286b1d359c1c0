# AT transcript recorder: both directions of the modem link with timestamps, for debugging and for the test
# transcripts. Optional: frozen only when a manifest asks for it (root manifest option ``transcript``); the AT
# engine only calls ``tx(bytes)``, ``rx(bytes)`` and ``note(str)`` on whatever it is given as ``transcript``.
from cellmqtt.compat import ticks_diff, ticks_ms


class Transcript:
    """Records both directions with timestamps: ``<ms> > data`` / ``<ms> < line``; non-printables escaped.

    ``write`` is any callable taking a str (a file's write, a list's append). ``Transcript.ring(n)`` keeps only
    the last n characters in RAM for field debugging (``dump()``). Secrets are redacted by the engine before
    they get here; ``keys`` additionally masks JSON string values of those keys in received lines (e.g. a
    device secret pushed by the cloud)."""

    KEYS = (b'"deviceSecret"', b'"productSecret"', b'"password"', b'"secret"')

    def __init__(self, write, clock=ticks_ms, keys=KEYS):
        self._write = write
        self._clock = clock
        self._t0 = clock()
        self.keys = keys
        self._ring = None

    @classmethod
    def ring(cls, size=2048, clock=ticks_ms):
        t = cls(None, clock)
        t._ring = []
        t._ring_size = size
        t._ring_len = 0
        t._write = t._ring_add
        return t

    def _ring_add(self, s):
        self._ring.append(s)
        self._ring_len += len(s)
        while self._ring_len > self._ring_size and len(self._ring) > 1:
            self._ring_len -= len(self._ring.pop(0))

    def dump(self):
        return "".join(self._ring) if self._ring is not None else ""

    def _mask(self, data):
        for k in self.keys:
            i = data.find(k)
            while i >= 0:
                q = data.find(b'"', data.find(b":", i + len(k)) + 1)
                e = data.find(b'"', q + 1) if q >= 0 else -1
                if q < 0 or e < 0:
                    data = data[:i + len(k)] + b':"***"'
                    break
                data = data[:q + 1] + b"***" + data[e:]
                i = data.find(k, q + 5)
        return data

    def _rec(self, arrow, data):
        out = []
        for c in data:
            if c == 13:
                out.append("\\r")
            elif c == 10:
                out.append("\\n")
            elif c == 92:
                out.append("\\\\")
            elif 32 <= c < 127:
                out.append(chr(c))
            else:
                out.append("\\x%02x" % c)
        self._write("%d %s %s\n" % (ticks_diff(self._clock(), self._t0), arrow, "".join(out)))

    def tx(self, data):
        self._rec(">", data)

    def rx(self, data):
        self._rec("<", self._mask(data))

    def note(self, text):
        self._write("%d # %s\n" % (ticks_diff(self._clock(), self._t0), text))
