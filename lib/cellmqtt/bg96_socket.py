# The BG96's raw TLS socket (AT+QSSLOPEN in direct push mode) as a ModemSocket (transport.py): the carrier of
# our own MQTT client, the "socket" transport. Optional: frozen only with the manifest option
# transports=("socket",); the app's start-up wiring imports it by the driver's SOCKET declaration. Every engine
# error becomes a transport error here. The BG95/BG77/BG770A use it unchanged.
import asyncio

from cellmqtt import modem as md
from cellmqtt.at_engine import AtError, AtTimeout, Cmd, frame_line_then_bytes
from cellmqtt.bg96 import socket_error
from cellmqtt.settings import section
from cellmqtt.transport import MODULE, LinkLost, MqttTimeout, NetworkError

CONFIG = {"mqtt": {"socket": (1, 0, 10)}}  # socket 11 is the TLS diagnosis'
_SEND = Cmd(None, 5000, data_ms=30000)
_SEND_SECRET = Cmd(None, 5000, data_ms=30000, secret_data=True)  # a packet with a credential: never transcribed


class Bg96TlsSocket:
    """A TLS byte stream through the module: socket ``mqtt.socket`` (0..10), SSL context tls.ctx."""

    CONFIG = CONFIG
    max_send = 1460

    @staticmethod
    def check_config(cfg):
        pass  # no rules across keys

    def __init__(self, modem, config=None):
        if not section(config, "tls", modem.CONFIG)["enabled"]:
            raise ValueError("the socket transport always uses TLS (tls.enabled must be true)")
        self.m = modem
        self.at = modem.at
        self.client = client = section(config, "mqtt", CONFIG)["socket"]
        self._on_data = None
        self._on_close = None
        self.open_ = False
        self._checked = False
        self.at.urc(b'+QSSLURC: "recv",%d,' % client, self._recv, frame_line_then_bytes(0))
        self.at.urc(b'+QSSLURC: "closed",%d' % client, self._closed)
        modem.listen(self._on_modem)

    def on_data(self, cb):
        self._on_data = cb

    def on_close(self, cb):
        self._on_close = cb

    def _recv(self, rec):
        if self._on_data is not None:
            self._on_data(rec[rec.find(b"\n") + 1:])

    def _closed(self, line):
        self._set_lost(LinkLost("TLS socket %d closed by the peer" % self.client, 1))
        asyncio.create_task(self.m.ssl_close(self.client))  # the module wants QSSLCLOSE to free the socket

    def _on_modem(self, kind, value):
        # (a PDP deactivation closes the socket too: the module reports that with +QSSLURC "closed")
        if kind in (md.RESET, md.DOWN, md.CLOSED):
            self._set_lost(LinkLost("the modem restarted or went away", 0, MODULE))

    def _set_lost(self, err):
        if self.open_:
            self.open_ = False
            if self._on_close is not None:
                self._on_close(err)

    async def open(self, host, port):
        m = self.m
        if not m.fresh and not self._checked:
            await m.ssl_close(self.client)  # a socket left open by the firmware before an MCU reset
        self._checked = True
        what = "TLS connection to %s:%d" % (host, port)
        try:
            err = await m.ssl_open(host, port, self.client)
        except AtTimeout as e:
            raise MqttTimeout("%s: %s" % (what, e)) from None
        except AtError as e:
            raise NetworkError("%s: %s" % (what, e)) from None
        if err:
            await m.ssl_close(self.client)
            if err == 566:  # "connection failed" also covers a failed handshake: find out which
                raise await m.diagnose_tls(host, port)
            raise socket_error(err, what)
        self.open_ = True

    async def send(self, data, secret=False):
        spec = _SEND_SECRET if secret else _SEND
        mv = memoryview(data)
        for i in range(0, len(data), self.max_send):
            chunk = mv[i:i + self.max_send]
            if not self.open_:
                raise LinkLost("TLS socket %d is closed" % self.client)
            try:
                await self.at.cmd(b"AT+QSSLSEND=%d,%d" % (self.client, len(chunk)), spec, bytes(chunk))
            except AtError as e:  # the socket died under us (the "closed" URC may still be on its way)
                raise LinkLost("TLS send failed: %s" % e) from None

    async def close(self):
        if self.open_:
            self.open_ = False
            await self.m.ssl_close(self.client)
