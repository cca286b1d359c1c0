# The BC660K-GL's raw TLS socket (AT+QSSLOPEN=0,0,...) as a ModemSocket (transport.py): the carrier of our own
# MQTT client, the "socket" transport. Optional: frozen only with the manifest option transports=("socket",);
# Bc660k.tls_socket() imports it when mqtt.transport is "socket". Facts: reference/quectel-bc660k.md section 3.
import binascii

from cellmqtt.at_engine import AtError, AtTimeout, args, frame_quoted_len, quote
from cellmqtt.quectel import _int, opt
from cellmqtt.transport import LinkLost, MqttTimeout, NetworkError, TlsError

# +QSSLOPEN / +QSSLSEND / +QSSLCLOSE result codes (section 3)
_SSL_ERR = {-1: "exception", -2: "connection error", -3: "certificate error", -4: "key error",
            -5: "cipher error", -6: "state error", -7: "timeout", -9: "other error"}


class Bc660kTlsSocket:
    """The module's TLS socket, carrying our own MQTT client. Sends with the fixed-length form after the 500 ms gate; receives +QSSLURC "recv" in text or hex
    (``tls.dataformat``: [send, recv], 0 text / 1 hex, default [0, 1] so binary MQTT packets survive)."""

    max_send = 1024
    half_duplex = True  # URCs that arrive while the module is in data mode are lost (section 1)

    def __init__(self, modem):
        self.m = modem
        self.at = modem.at
        df = opt(modem.tcfg, "dataformat", [0, 1])
        self.hex_send = bool(df[0])
        self.hex_recv = bool(df[1])
        self._on_data = None
        self._on_close = None
        self.open_ = False
        self._checked = False
        self._pre = b'+QSSLURC: "recv",0,0,'
        self.at.urc(self._pre, self._recv, frame_quoted_len(0, 2 if self.hex_recv else 1))
        self.at.urc(b'+QSSLURC: "closed",0,0', self._closed)
        modem._transports.append(self)

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
            self.at._report("+QSSLURC recv: %d bytes announced, %d received" % (n, len(body)))
        if self._on_data is not None:
            self._on_data(body)

    def _closed(self, line):
        self._set_lost(LinkLost("TLS socket closed by the module or the peer", 1))

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
        await at.cmd(b'AT+QSSLCFG=0,0,"dataformat",%d,%d' % (self.hex_send, self.hex_recv))
        to = int(opt(self.m.tcfg, "negotiate_s", 90))
        try:
            _, res = await at.cmd_result(b"AT+QSSLOPEN=0,0,%s,%d,0" % (quote(host, "broker host"), port),
                                         b"+QSSLOPEN: 0,0,", timeout_ms=5000, result_timeout_ms=(to + 10) * 1000)
        except AtTimeout as e:
            raise MqttTimeout("TLS open of %s:%d: %s" % (host, port, e)) from None
        err = _int(args(res)[2])
        if err != 0:
            why = _SSL_ERR.get(err, "error")
            cls = TlsError if err in (-3, -4, -5) else NetworkError
            raise cls("TLS connection to %s:%d failed: %s (%d)" % (host, port, why, err), err)
        self.open_ = True

    async def send(self, data):
        mv = memoryview(data)
        for i in range(0, len(data), self.max_send):
            chunk = bytes(mv[i:i + self.max_send])
            if not self.open_:
                raise LinkLost("TLS socket is closed")
            payload = binascii.hexlify(chunk) if self.hex_send else chunk
            try:
                _, res = await self.at.cmd_result(b"AT+QSSLSEND=0,0,%d" % len(chunk), b"+QSSLSEND: 0,0,",
                                                  data=payload, gate_ms=550, timeout_ms=5000, data_timeout_ms=10000,
                                                  result_timeout_ms=30000)
            except AtError as e:  # the socket died under us (the "closed" URC may still be on its way)
                raise LinkLost("TLS send failed: %s" % e) from None
            err = _int(args(res)[2])
            if err != 0:
                raise LinkLost("TLS send failed: %s (%d)" % (_SSL_ERR.get(err, "error"), err), err)

    async def close(self):
        was = self.open_
        self.open_ = False
        if was:
            try:
                await self.at.cmd_result(b"AT+QSSLCLOSE=0,0", b"+QSSLCLOSE: 0,0,", timeout_ms=5000,
                                         result_timeout_ms=15000)
            except AtError as e:
                if self.m.log:
                    self.m.log("QSSLCLOSE: %s" % e)
