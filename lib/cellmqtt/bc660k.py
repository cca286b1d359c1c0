# Quectel BC660K-GL (NB-IoT) driver: sleep-aware AT (the module sleeps by default and loses the first byte
# after waking), the default PDP context cid 0, PSM/eDRX, certificates pushed inline into SSL context 0
# (length-verified, skipped when unchanged), native MQTT over TLS and the raw TLS socket.
# Facts: reference/quectel-bc660k.md (section numbers below), seed 004.
import asyncio
import binascii

from cellmqtt.at_engine import AtError, AtTimeout, AtCommandError, quote, args, frame_quoted_len
from cellmqtt.transport import NetworkError, TlsError, MqttTimeout, LinkLost
from cellmqtt.quectel import opt, Modem, NativeMqtt, ModuleRefused, ModemError, PdpError, CertUploadError, _int
from cellmqtt.certs import Memo, read_pem, checksum

# +QSSLOPEN / +QSSLSEND / +QSSLCLOSE result codes (section 3)
_SSL_ERR = {-1: "exception", -2: "connection error", -3: "certificate error", -4: "key error",
            -5: "cipher error", -6: "state error", -7: "timeout", -9: "other error"}
# MQTT +CME error codes (section 4)
_MQTT_ERR = {8503: "link layer error", 8504: "illegal packet", 8505: "illegal character", 8506: "illegal UTF-8",
             8507: "invalid parameter", 8508: "data longer than the remaining buffer", 8509: "buffer overflow",
             8510: "out of memory", 8600: "unknown error"}


class Bc660k(Modem):
    MODEL = b"BC660K-GL"
    RXBUF = 3072  # a hex-mode +QSSLURC carries 2 x 1400 characters
    GATE_MS = 550  # the module takes data only ~500 ms after its ">" prompt (section 1)
    PUSH_TIMEOUT_MS = 15000  # a 4 KB PEM takes 0.4 s at 115200 bit/s

    def __init__(self, board, config, pipe=None, transcript=None, log=None, state_dir="."):
        super().__init__(board, config, pipe, transcript, log)
        self.memo = Memo(state_dir + "/modem.json")
        self.pushed_bytes = 0
        self.psm = False
        self._awake = 0
        self._released = False
        self._mqtt = None
        self._sleep_ok = bool(opt(self.mcfg, "sleep", True))
        self.at.wake = self._wake
        self.at.wake_idle_ms = int(opt(self.mcfg, "wake_idle_ms", 1000))
        self.at.urc(b"+QNBIOTEVENT:", self._on_event_urc)

    def pdp_cid(self):
        return 0  # the default context, set up by the module from QCGDEFCONT (section 1)

    # ---- sleep (section 1) -----------------------------------------------------------------------------

    async def _wake(self, engine):
        # The first byte after sleep is lost and a command sent into deep sleep may vanish: throw-away AT
        # probes until one is answered. Runs inside the engine (before a command after an idle period).
        for _ in range(6):
            try:
                await engine.raw_cmd(b"AT", timeout_ms=600)
                return
            except AtTimeout:
                pass
            except AtCommandError:
                return  # a half-received probe: awake now
        if self.log:
            self.log("BC660K: no answer to wake probes")

    def _on_event_urc(self, line):
        self.psm = b"ENTER" in line
        self._event("psm", self.psm)

    async def start(self, timeout_ms=30000):
        await super().start(timeout_ms)
        await self.at.cmd(b"AT+QSCLK=0")  # stay awake through bring-up; allow_sleep() when idle
        self._awake = 1
        self.at.wake_idle_ms = 0

    async def allow_sleep(self):
        """Let the module sleep between exchanges again (``modem.sleep``, default on)."""
        if self._awake and self._sleep_ok:
            self._awake = 0
            await self.at.cmd(b"AT+QSCLK=1")
            self.at.wake_idle_ms = int(opt(self.mcfg, "wake_idle_ms", 1000))

    def awake(self):
        """``async with modem.awake():`` wake the module (probing past the lost first byte) and keep it
        awake (AT+QSCLK=0) for a whole exchange; sleep is allowed again at the end."""
        return _Awake(self)

    # ---- radio, PDP, PSM -------------------------------------------------------------------------------

    async def pdp_up(self):
        """Make sure the default PDP context (cid 0) uses ``modem.apn`` (AT+QCGDEFCONT, stored in NV: a change
        needs a reboot, done here) and return its IP address once attached (AT+CGPADDR=0)."""
        apn = opt(self.mcfg, "apn", "")
        if apn and not self.memo.matches("apn", apn):
            lines = await self.at.cmd(b"AT+QCGDEFCONT?", b"+QCGDEFCONT:")
            have = args(lines[0]) if lines else []
            if len(have) < 2 or have[1].decode() != apn:
                await self.at.cmd(b'AT+QCGDEFCONT="IP",%s' % quote(apn, "modem.apn"))
                await self.reboot()
                await self.wait_registered()
            self.memo.set("apn", apn)
        for _ in range(30):
            lines = await self.at.cmd(b"AT+CGPADDR=0", b"+CGPADDR:")
            f = args(lines[0]) if lines else []
            if len(f) > 1 and f[1]:
                return f[1].decode()
            await asyncio.sleep(1)
        raise PdpError("the default PDP context has no address (not attached)")

    async def reboot(self):
        """AT+QRST=1 (reset without detach) and wait for RDY; volatile settings are lost."""
        self._rdy_ev.clear()
        await self.at.cmd(b"AT+QRST=1", timeout_ms=3000)
        await self.wait_boot(20000)
        await self.start()

    async def configure_power(self):
        """PSM (``modem.psm``: {"tau": "<8-bit T3412>", "active": "<8-bit T3324>"} or false to disable) and eDRX
        (``modem.edrx``: "<4-bit value>" or false), applied when different from what was last applied."""
        m = self.mcfg
        want = [m.get("psm"), m.get("edrx")]
        if (want[0] is None and want[1] is None) or self.memo.matches("power", want):
            return
        psm = want[0]
        if psm is not None:
            if psm:
                await self.at.cmd(b"AT+CPSMS=1,,,%s,%s" % (quote(psm["tau"], "modem.psm.tau"), quote(psm["active"], "modem.psm.active")))
                await self.at.cmd(b"AT+QNBIOTEVENT=1,1")
            else:
                await self.at.cmd(b"AT+CPSMS=2")
        edrx = want[1]
        if edrx is not None:
            if edrx:
                await self.at.cmd(b"AT+CEDRXS=1,5,%s" % quote(edrx, "modem.edrx"))
            else:
                await self.at.cmd(b"AT+CEDRXS=0")
        self.memo.set("power", want)

    async def signal(self):
        """{"csq", "rssi", "act"} plus the serving cell ("tac", "ci") from the last +CEREG."""
        out = {"act": "NB-IoT"}
        lines = await self.at.cmd(b"AT+CSQ", b"+CSQ:")
        f = args(lines[0]) if lines else ()
        if f and _int(f[0]) != 99:
            out["csq"] = _int(f[0])
            out["rssi"] = -113 + 2 * _int(f[0])
        if self.cell:
            out["tac"], out["ci"] = self.cell
        return out

    def _ntp_cmd(self, server, port):
        return b"AT+QNTP=0,%s,%d" % (server, port)

    # ---- certificates pushed inline into SSL context 0 (section 2) -------------------------------------

    def cert_files(self):
        t = self.tcfg
        d = opt(t, "dir", "certs")
        out = []
        for role, item, kind in (("ca", "cacert", "cert"), ("cert", "clientcert", "cert"), ("key", "clientkey", "key")):
            name = t.get(role)
            if name:
                out.append((item, name if name.startswith("/") else d + "/" + name, kind))
        return out

    async def _stored_lengths(self):
        # AT+QSSLCFG=0,0 dumps every setting, including "cacert",<len> for each stored certificate
        out = {}
        for line in await self.at.cmd(b"AT+QSSLCFG=0,0", b"+QSSLCFG:"):
            f = args(line)
            for i in range(len(f) - 1):
                if f[i] in (b"cacert", b"clientcert", b"clientkey"):
                    out[f[i].decode()] = _int(f[i + 1])
        return out

    async def provision_certs(self):
        """Push the CA / client certificate / key from flash with AT+QSSLCFG=0,0,"<item>": wait for ">", keep
        the ~500 ms gate, send the PEM, Ctrl-Z, and check the stored length the module reports equals what was
        sent (0 = nothing stored). Retried, then CertUploadError. Skipped when the module already holds the same
        length and we pushed this content before. Returns the bytes pushed."""
        files = self.cert_files()
        blobs = [(item, read_pem(path, kind), kind) for item, path, kind in files]
        stored = await self._stored_lengths() if blobs else {}
        sent = 0
        for item, pem, kind in blobs:
            key = "cert:" + item
            size = len(pem)
            if self.memo.matches(key, [size, checksum(pem)]) and stored.get(item) == size:
                continue
            self.memo.forget(key)
            why = ""
            for attempt in range(3):
                try:
                    lines = await self.at.cmd(b'AT+QSSLCFG=0,0,"%s"' % item.encode(), b"+QSSLCFG:", 5000, data=pem,
                                              ctrlz=True, gate_ms=self.GATE_MS, data_timeout_ms=self.PUSH_TIMEOUT_MS,
                                              secret_data=kind == "key")
                except (AtCommandError, AtTimeout) as e:
                    why = str(e)
                else:
                    f = args(lines[0]) if lines else ()
                    n = _int(f[-1]) if f else -1
                    if n == size:
                        break
                    why = "the module stored %d bytes of %d%s" % (n, size, " (nothing)" if n == 0 else "")
                if self.log:
                    self.log("pushing %s: %s; retrying" % (item, why))
            else:
                raise CertUploadError("pushing %s failed after 3 attempts: %s" % (item, why))
            sent += size
            self.memo.set(key, [size, checksum(pem)])
        self.pushed_bytes += sent
        return sent

    async def release(self):
        """Close what a previous run of the firmware left open in the module (after an MCU reset the module
        still holds it, and an open TLS socket or MQTT client locks the SSL settings: +CME ERROR: 3)."""
        at = self.at
        try:
            await at.cmd_result(b"AT+QSSLCLOSE=0,0", b"+QSSLCLOSE: 0,0,", timeout_ms=5000, result_timeout_ms=15000)
        except AtError:
            pass  # nothing was open
        lines = await at.cmd(b"AT+QMTOPEN?", b"+QMTOPEN:")
        for line in lines:
            i = _int(args(line)[0])
            try:
                await at.cmd_result(b"AT+QMTCLOSE=%d" % i, b"+QMTCLOSE: %d," % i, timeout_ms=5000,
                                    result_timeout_ms=15000)
            except AtError as e:
                if self.log:
                    self.log("QMTCLOSE %d: %s" % (i, e))
        self._released = True

    async def configure_ssl(self):
        """seclevel (1 verify the server, 2 with a client certificate), sslversion (3 = TLS 1.2), timeout and
        dataformat from the tls section; these settings are not kept by the module, so they are set each boot."""
        if not self.fresh and not self._released:
            await self.release()
        t = self.tcfg
        level = t.get("seclevel")
        if level is None:
            level = 2 if t.get("cert") else (1 if t.get("ca") else 0)
        if level and not t.get("ca"):
            raise ValueError("tls.ca is required to verify the server (tls.seclevel %d)" % level)
        at = self.at
        await at.cmd(b'AT+QSSLCFG=0,0,"seclevel",%d' % level)
        await at.cmd(b'AT+QSSLCFG=0,0,"sslversion",%d' % int(opt(t, "version", 3)))
        to = int(opt(t, "negotiate_s", 90))
        if to != 90:
            await at.cmd(b'AT+QSSLCFG=0,0,"timeout",%d' % to)

    def mqtt(self):
        """The transport selected by ``mqtt.transport``: "native" (default) or "socket" (our MQTT client over
        the module's TLS socket). Created once and reused."""
        if self._mqtt is None:
            q = self.qcfg
            tls = bool(opt(self.tcfg, "enabled", True))
            kind = opt(q, "transport", "native")
            if kind == "native":
                self._mqtt = Bc660kMqtt(self, int(opt(q, "client", 0)), tls)
            elif kind == "socket":
                from cellmqtt.mqtt_client import MqttClient
                self._mqtt = MqttClient(Bc660kTlsSocket(self))
            else:
                raise ValueError("mqtt.transport must be native or socket")
        return self._mqtt


class _Awake:
    def __init__(self, modem):
        self.m = modem

    async def __aenter__(self):
        m = self.m
        m._awake += 1
        if m._awake == 1:
            await m.at.cmd(b"AT+QSCLK=0", retry=1)  # the engine's wake hook probes first after idle
            m.at.wake_idle_ms = 0
        return m

    async def __aexit__(self, *exc):
        m = self.m
        m._awake -= 1
        if m._awake == 0:
            if m._sleep_ok:
                try:
                    await m.at.cmd(b"AT+QSCLK=1")
                except AtError as e:
                    if m.log:
                        m.log("QSCLK=1: %s" % e)
                m.at.wake_idle_ms = int(opt(m.mcfg, "wake_idle_ms", 1000))
            else:
                m._awake = 1  # sleep disabled by config: stay awake
        return False


class Bc660kMqtt(NativeMqtt):
    """BC660K-GL native MQTT (section 4): version 1 = 3.1.1, client 0..4, SSL context 0 / connection 0,
    length-prefixed +QMTRECV (showrecvlen), QMTOPEN up to 176 s.

    Publishing: the module loses every URC that arrives while it is in data mode (after ">", gate included), so
    an incoming command would be lost during each publish. With ``mqtt.inline`` (default) the payload travels
    hex-encoded inside the command line (form 3, "dataformat" send = hex): no data mode at all, binary-safe,
    up to 730 bytes. Without it: the fixed-length data-mode form after the 500 ms gate, up to 1460 bytes."""

    VERSION = 1
    OPEN_MS = 176000
    MAX_PAYLOAD = 1460
    GATE_MS = 550
    FIXED_LEN = True
    DEFAULTS = {"keepalive": 120, "session": 1, "pkt": 30, "retries": 0}

    def __init__(self, modem, index=0, tls=True):
        super().__init__(modem, index, tls)
        self.inline = bool(opt(modem.qcfg, "inline", True))
        if self.inline:
            self.max_payload = 730

    def _ssl_cfg(self, enable):
        if enable:
            return b'AT+QMTCFG="ssl",%d,1,0,0' % self.id
        return b'AT+QMTCFG="ssl",%d,0' % self.id

    def _cfg_commands(self, keepalive, clean):
        out = super()._cfg_commands(keepalive, clean)
        out.append(b'AT+QMTCFG="showrecvlen",%d,1' % self.id)
        if self.inline or not self.m.fresh:
            out.append(b'AT+QMTCFG="dataformat",%d,%d,0' % (self.id, 1 if self.inline else 0))
        return out

    def _pub_cmd(self, cmd, payload, fixed):
        if self.inline:
            return cmd + b",%d,\"%s\"" % (len(payload), binascii.hexlify(payload)), None
        return super()._pub_cmd(cmd, payload, fixed)

    def _cmd_error(self, e):
        if e.code in _MQTT_ERR:
            cls = NetworkError if e.code == 8503 else ModuleRefused
            return cls("module MQTT error: %s (+CME ERROR: %d)" % (_MQTT_ERR[e.code], e.code), e.code)
        return super()._cmd_error(e)

    async def connect(self, host, port, client_id, username=None, password=None, keepalive=120, clean=True):
        try:
            await super().connect(host, port, client_id, username, password, keepalive, clean)
        except ModuleRefused as e:
            if e.code != 3:
                raise
            # QMTOPEN on a stale client: "operation not allowed" -> close it and try once more
            await self._close()
            await super().connect(host, port, client_id, username, password, keepalive, clean)


class Bc660kTlsSocket:
    """The module's TLS socket (AT+QSSLOPEN=0,0,...) as a ModemSocket (transport.py), carrying our own MQTT
    client. Sends with the fixed-length form after the 500 ms gate; receives +QSSLURC "recv" in text or hex
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
