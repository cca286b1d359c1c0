# The BC660K-GL's raw TLS socket (AT+QSSLOPEN=0,0,...) as a ModemSocket (transport.py): the carrier of our own
# MQTT client, the "socket" transport. Optional: frozen only with the manifest option transports=("socket",);
# the app's start-up wiring imports it by the driver's SOCKET declaration. Every engine error becomes a
# transport error here. Facts: reference/quectel-bc660k.md section 3.
import binascii

from cellmqtt import modem as md
from cellmqtt.at_engine import AtError, AtTimeout, Cmd, args, frame_quoted_len, quote, to_int
from cellmqtt.settings import section
from cellmqtt.transport import MODULE, LinkLost, MqttTimeout, NetworkError, TlsError

# tls.dataformat: [send, recv], 0 text / 1 hex (default [0, 1]: binary MQTT packets survive the receive side)
CONFIG = {"tls": {"dataformat": [0, 1]}}

# +QSSLOPEN / +QSSLSEND / +QSSLCLOSE result codes (section 3)
_SSL_ERR = {-1: "exception", -2: "connection error", -3: "certificate error", -4: "key error",
            -5: "cipher error", -6: "state error", -7: "timeout", -9: "other error"}
_SEND = Cmd(None, 5000, gate_ms=550, data_ms=10000, result_ms=30000)
_SEND_SECRET = Cmd(None, 5000, gate_ms=550, data_ms=10000, result_ms=30000, secret_data=True)  # never transcribed
_CLOSE = Cmd(None, 5000, result_ms=15000)


def check_config(cfg):
    df = cfg["tls"]["dataformat"]
    if len(df) != 2 or df[0] not in (0, 1) or df[1] not in (0, 1):
        from cellmqtt.settings import ConfigError

        raise ConfigError("tls.dataformat", "must be [send, recv] with 0 (text) or 1 (hex)")


class Bc660kTlsSocket:
    """The module's TLS socket, carrying our own MQTT client. Sends with the fixed-length form after the 500 ms
    gate; receives +QSSLURC "recv" in text or hex (``tls.dataformat``)."""

    CONFIG = CONFIG
    check_config = staticmethod(check_config)
    max_send = 1024
    half_duplex = True  # URCs that arrive while the module is in data mode are lost (section 1)

    def __init__(self, modem, config=None):
        self.m = modem
        self.at = modem.at
        df = section(config, "tls", CONFIG)["dataformat"]
        self.hex_send = bool(df[0])
        self.hex_recv = bool(df[1])
        self._open_spec = Cmd(None, 5000, result_ms=(modem.tcfg["negotiate_s"] + 10) * 1000)
        self._on_data = None
        self._on_close = None
        self.open_ = False
        self._checked = False
        self._pre = b'+QSSLURC: "recv",0,0,'
        self.at.urc(self._pre, self._recv, frame_quoted_len(0, 2 if self.hex_recv else 1))
        self.at.urc(b'+QSSLURC: "closed",0,0', self._closed)
        modem.listen(self._on_modem)

    def on_data(self, cb):
        self._on_data = cb

    def on_close(self, cb):
        self._on_close = cb

    def _recv(self, rec):
        c = rec.find(b",", len(self._pre))
        n = int(rec[len(self._pre):c])
        body = rec[c + 2:-1]
        if self.hex_recv:
            body = binascii.unhexlify(body)
        if len(body) != n:
            self.at.report("+QSSLURC recv: %d bytes announced, %d received" % (n, len(body)))
        if self._on_data is not None:
            self._on_data(body)

    def _closed(self, line):
        self._set_lost(LinkLost("TLS socket closed by the module or the peer", 1))

    def _on_modem(self, kind, value):
        if kind in (md.RESET, md.DOWN, md.CLOSED):
            self._set_lost(LinkLost("the modem restarted or went away", 0, MODULE))

    def _set_lost(self, err):
        if self.open_:
            self.open_ = False
            if self._on_close is not None:
                self._on_close(err)

    async def open(self, host, port):
        at = self.at
        if not self.m.fresh and not self._checked:  # a socket left open by the firmware before an MCU reset
            self.open_ = True
            await self.close()
        self._checked = True
        what = "TLS open of %s:%d" % (host, port)
        try:
            await at.cmd(b'AT+QSSLCFG=0,0,"dataformat",%d,%d' % (self.hex_send, self.hex_recv))
            _, res = await at.cmd_result(b"AT+QSSLOPEN=0,0,%s,%d,0" % (quote(host, "broker host"), port),
                                         self._open_spec, b"+QSSLOPEN: 0,0,")
        except AtTimeout as e:
            raise MqttTimeout("%s: %s" % (what, e)) from None
        except AtError as e:
            raise NetworkError("%s: %s" % (what, e)) from None
        err = to_int(args(res)[2])
        if err != 0:
            why = _SSL_ERR.get(err, "error")
            cls = TlsError if err in (-3, -4, -5) else NetworkError
            raise cls("TLS connection to %s:%d failed: %s (%d)" % (host, port, why, err), err)
        self.open_ = True

    async def send(self, data, secret=False):
        spec = _SEND_SECRET if secret else _SEND
        mv = memoryview(data)
        for i in range(0, len(data), self.max_send):
            chunk = bytes(mv[i:i + self.max_send])
            if not self.open_:
                raise LinkLost("TLS socket is closed")
            payload = binascii.hexlify(chunk) if self.hex_send else chunk
            try:
                _, res = await self.at.cmd_result(b"AT+QSSLSEND=0,0,%d" % len(chunk), spec, b"+QSSLSEND: 0,0,",
                                                  payload)
            except AtError as e:  # the socket died under us (the "closed" URC may still be on its way)
                raise LinkLost("TLS send failed: %s" % e) from None
            err = to_int(args(res)[2])
            if err != 0:
                raise LinkLost("TLS send failed: %s (%d)" % (_SSL_ERR.get(err, "error"), err), err)

    async def close(self):
        was = self.open_
        self.open_ = False
        if was:
            try:
                await self.at.cmd_result(b"AT+QSSLCLOSE=0,0", _CLOSE, b"+QSSLCLOSE: 0,0,")
            except AtError as e:
                if self.m.log:
                    self.m.log("QSSLCLOSE: %s" % e)
