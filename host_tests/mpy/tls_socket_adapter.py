# Test support: a ModemSocket (see lib/cellmqtt/transport.py) over a real TLS TCP connection, so MqttClient
# can be checked against a real broker on both ports. Not product code: on the device the socket is the
# modem's QSSLOPEN. Received bytes are handed on in chunks of at most `chunk` bytes (like +QSSLURC "recv",
# <= 1400) and sends are cut at max_send (like QSSLSEND, <= 1024), so the client sees realistic fragments.
import asyncio
import ssl
import sys

from cellmqtt.transport import LinkLost, MqttTimeout, NetworkError, TlsError

_MPY = sys.implementation.name == "micropython"


def _context(ca_path):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with open(ca_path, "rb") as f:
        pem = f.read()
    if _MPY:
        # The unix port's mbedTLS refuses PEM in cadata ("invalid cert"); DER works.
        import binascii

        b64 = b"".join(line for line in pem.split(b"\n") if line and not line.startswith(b"-----"))
        ctx.load_verify_locations(cadata=binascii.a2b_base64(b64))
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.load_verify_locations(cadata=pem.decode())  # CPython: PEM as str; verifies host name too
    return ctx


class TlsSocket:
    def __init__(self, ca_path, server_hostname="localhost", max_send=1024, chunk=1400, timeout=15):
        self.max_send = max_send
        self._ca = ca_path
        self._sni = server_hostname
        self._chunk = chunk
        self._timeout = timeout
        self._r = self._w = None
        self._task = None
        self._data_cb = None
        self._close_cb = None
        self.sent = []  # every chunk written, for tests that look at the wire
        self.received = 0

    def on_data(self, cb):
        self._data_cb = cb

    def on_close(self, cb):
        self._close_cb = cb

    async def open(self, host, port):
        try:
            self._r, self._w = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=_context(self._ca), server_hostname=self._sni),
                self._timeout)
        except asyncio.TimeoutError:  # noqa: UP041 -- MicroPython has no builtin TimeoutError
            raise MqttTimeout("TLS connect to %s:%d timed out" % (host, port))
        except OSError as e:  # CPython's ssl.SSLError is an OSError too
            if type(e).__name__.startswith("SSL"):
                raise TlsError("TLS handshake with %s:%d failed: %s" % (host, port, e))
            raise NetworkError("cannot connect to %s:%d: %s" % (host, port, e))
        self._task = asyncio.create_task(self._reader())

    async def _reader(self):
        try:
            while True:
                data = await self._r.read(self._chunk)
                if not data:
                    break
                self.received += len(data)
                self._data_cb(data)
            err = LinkLost("closed by peer")
        except OSError as e:
            err = LinkLost("TLS read failed: %s" % e)
        self._task = None
        await self._shut()
        if self._close_cb is not None:
            self._close_cb(err)

    async def send(self, data, secret=False):
        if self._w is None:
            raise NetworkError("socket is not open")
        mv = memoryview(data)
        try:
            for i in range(0, len(mv), self.max_send):
                chunk = bytes(mv[i:i + self.max_send])
                self.sent.append(chunk)
                self._w.write(chunk)
                await self._w.drain()
        except OSError as e:
            raise NetworkError("TLS write failed: %s" % e)

    async def close(self):
        t = self._task
        self._task = None
        if t is not None:
            t.cancel()
        await self._shut()

    async def _shut(self):
        w = self._w
        self._w = self._r = None
        if w is None:
            return
        try:
            w.close()
            await w.wait_closed()
        except OSError:
            pass  # closing an already broken TLS link: there is nothing left to report to
