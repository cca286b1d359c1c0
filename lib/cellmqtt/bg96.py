# Quectel BG96 (LTE Cat-M1 / NB-IoT) driver: radio configuration, PDP context, network time, certificates
# uploaded to the module's file system (AT+QFUPL, checksum-verified, skipped when unchanged), SSL contexts,
# the native MQTT client and the raw TLS socket. Facts: reference/quectel-bg96.md (section numbers below).
import asyncio

from cellmqtt.at_engine import AtError, AtTimeout, AtCommandError, CmeError, quote, args, frame_line_then_bytes
from cellmqtt.transport import MqttError, NetworkError, TlsError, DnsError, MqttTimeout, LinkLost
from cellmqtt.quectel import opt, Modem, NativeMqtt, ModuleRefused, PdpError, CertUploadError, _int
from cellmqtt.certs import Memo, read_pem, checksum

# TCP/IP error codes (seed 001 table 3) that say what failed when a socket or TLS open fails
_DNS_ERRORS = (564, 565)
_PDP_ERRORS = (561, 570, 573)
_NET_ERRORS = (554, 556, 558, 559, 566, 567, 569, 574)

_SCAN = {"auto": 0, "gsm": 1, "lte": 3}
_RAT = {"m1": 0, "nb1": 1, "m1+nb1": 2}


def socket_error(err, what):
    """The typed error for a QSSLOPEN/QIOPEN error code: DNS, PDP, network, or (anything else) TLS."""
    if err in _DNS_ERRORS:
        return DnsError("%s: DNS lookup failed (error %d)" % (what, err), err)
    if err in _PDP_ERRORS:
        return NetworkError("%s: PDP context not usable (error %d)" % (what, err), err)
    if err in _NET_ERRORS:
        return NetworkError("%s: connection failed (error %d)" % (what, err), err)
    return TlsError("%s: TLS handshake failed (error %d)" % (what, err), err)


class Bg96(Modem):
    MODEL = b"BG96"

    def __init__(self, board, config, pipe=None, transcript=None, log=None, state_dir="."):
        super().__init__(board, config, pipe, transcript, log)
        self.memo = Memo(state_dir + "/modem.json")
        self.pdp_active = False
        self._pdp_lost = False
        self.uploaded_bytes = 0
        self._mqtt = None
        self._probe_sock = None
        self.at.urc(b'+QIURC: "pdpdeact"', self._on_pdpdeact)

    def _on_pdpdeact(self, line):
        self.pdp_active = False
        self._pdp_lost = True
        self._event("pdp", _int(args(line)[1]))

    # ---- radio (section 2): NV settings, applied only when they differ --------------------------------

    async def configure_radio(self):
        """Apply ``modem.scan`` (auto|lte|gsm), ``modem.rat`` (m1|nb1|m1+nb1) and ``modem.bands``
        ({"gsm","m1","nb1"} hex masks) when they differ from the module's. They are stored in the module's
        NV memory: once verified they are remembered and not queried again."""
        m = self.mcfg
        want = []
        if m.get("scan") is not None:
            if m["scan"] not in _SCAN:
                raise ValueError("modem.scan must be one of auto, lte, gsm")
            want.append(["nwscanmode", "%d" % _SCAN[m["scan"]]])  # lists: what the JSON memo gives back
        if m.get("rat") is not None:
            if m["rat"] not in _RAT:
                raise ValueError("modem.rat must be one of m1, nb1, m1+nb1")
            want.append(["iotopmode", "%d" % _RAT[m["rat"]]])
        if m.get("bands"):
            b = m["bands"]
            want.append(["band", "%s,%s,%s" % (b.get("gsm", "0"), b.get("m1", "0"), b.get("nb1", "0"))])
        if not want or self.memo.matches("radio", want):
            return 0
        changed = 0
        for item, value in want:
            lines = await self.at.cmd(b'AT+QCFG="%s"' % item.encode(), b"+QCFG:")
            have = b",".join(args(lines[0])[1:]) if lines else b""
            if not _same_values(have, value.encode()):
                quote(value, "modem." + item)
                await self.at.cmd(b'AT+QCFG="%s",%s,1' % (item.encode(), value.encode()))
                changed += 1
        self.memo.set("radio", want)
        return changed

    # ---- signal and network info for telemetry ---------------------------------------------------------

    async def signal(self):
        """{"csq", "rssi", "rsrp", "sinr", "rsrq", "act", "oper", "band", "channel", "tac", "ci"} (missing values
        omitted; the cell comes from the last +CEREG, without a command)."""
        out = {}
        lines = await self.at.cmd(b"AT+CSQ", b"+CSQ:")
        f = args(lines[0]) if lines else ()
        if f and _int(f[0]) != 99:
            out["csq"] = _int(f[0])
            out["rssi"] = -113 + 2 * _int(f[0])
        lines = await self.at.cmd(b"AT+QCSQ", b"+QCSQ:")
        f = args(lines[0]) if lines else ()
        if len(f) >= 5:
            out["act"] = f[0].decode()
            out["rssi"] = _int(f[1])
            out["rsrp"] = _int(f[2])
            out["sinr"] = _int(f[3])
            out["rsrq"] = _int(f[4])
        lines = await self.at.cmd(b"AT+QNWINFO", b"+QNWINFO:")
        f = args(lines[0]) if lines else ()
        if len(f) >= 4:
            out["oper"] = f[1].decode()
            out["band"] = f[2].decode()
            out["channel"] = _int(f[3])
        if self.cell:
            out["tac"], out["ci"] = self.cell
        return out

    # ---- PDP context (section 3) -----------------------------------------------------------------------

    async def pdp_up(self):
        """Configure (``modem.apn``, ``apn_user``, ``apn_pass``, ``apn_auth``) and activate context
        ``modem.pdp_cid``; after a network-side deactivation the context is deactivated first. Returns the IP."""
        at = self.at
        cid = self.pdp_cid()
        m = self.mcfg
        ctx = [cid, opt(m, "apn", ""), opt(m, "apn_user", ""), opt(m, "apn_pass", ""), int(opt(m, "apn_auth", 0))]
        if not self.memo.matches("pdp", ctx):
            pw = str(ctx[3]).encode()
            await at.cmd(b"AT+QICSGP=%d,1,%s,%s,%s,%d" % (cid, quote(ctx[1], "modem.apn"), quote(ctx[2], "modem.apn_user"),
                                                         quote(pw, "modem.apn_pass"), ctx[4]), secrets=(pw,) if pw else ())
            self.memo.set("pdp", ctx)
        if self._pdp_lost:
            try:
                await at.cmd(b"AT+QIDEACT=%d" % cid, timeout_ms=40000)
            except AtCommandError as e:
                if self.log:
                    self.log("QIDEACT %d: %s" % (cid, e))
            self._pdp_lost = False
        try:
            await at.cmd(b"AT+QIACT=%d" % cid, timeout_ms=150000)
        except AtCommandError as e:
            # ERROR also means "already active": ask before giving up (section 3)
            ip = await self._pdp_ip(cid)
            if ip is None:
                self.memo.forget("pdp")
                raise PdpError("PDP context %d could not be activated (%s%s)" % (cid, e, await self._last_error())) from None
            self.pdp_active = True
            return ip
        self.pdp_active = True
        return await self._pdp_ip(cid)

    async def _pdp_ip(self, cid):
        for line in await self.at.cmd(b"AT+QIACT?", b"+QIACT:"):
            f = args(line)
            if _int(f[0]) == cid and len(f) > 3 and f[1] == b"1":
                return f[3].decode()
        return None

    async def _last_error(self):
        try:
            lines = await self.at.cmd(b"AT+QIGETERROR", b"+QIGETERROR:")
            return "; " + lines[0][14:].decode() if lines else ""
        except AtError:
            return ""

    # ---- certificates in the module's file system (section 4) ------------------------------------------

    def cert_files(self):
        """[(role, flash path, module file name, kind)] for tls.ca / tls.cert / tls.key under tls.dir."""
        t = self.tcfg
        d = opt(t, "dir", "certs")
        out = []
        for role, kind in (("ca", "cert"), ("cert", "cert"), ("key", "key")):
            name = t.get(role)
            if name:
                base = name.rsplit("/", 1)[-1]
                quote(base, "tls." + role)
                if len(base) > 80:
                    raise ValueError("tls.%s: module file names are at most 80 bytes" % role)
                out.append((role, name if name.startswith("/") else d + "/" + name, base, kind))
        return out

    async def provision_certs(self):
        """Make the module hold exactly the certificates on flash. Each PEM is validated first (the error
        names the bad file); a file the module already holds unchanged (remembered size and checksum, size
        confirmed with QFLST) is skipped; otherwise it is deleted, uploaded with AT+QFUPL and the module's
        checksum compared with ours -- retried, then CertUploadError. The flash copy is only ever read.
        Returns the number of bytes uploaded."""
        files = self.cert_files()
        data = {}
        for role, path, name, kind in files:
            data[name] = read_pem(path, kind)
        listing = {}
        for line in await self.at.cmd(b'AT+QFLST="*"', b"+QFLST:"):
            f = args(line)
            if len(f) >= 2:
                listing[f[0].decode()] = _int(f[1])
        sent = 0
        for role, path, name, kind in files:
            blob = data[name]
            size = len(blob)
            chk = checksum(blob)
            if self.memo.matches("file:" + name, [size, chk]) and listing.get(name) == size:
                continue
            sent += await self._upload(name, blob, chk, name in listing, kind == "key")
            self.memo.set("file:" + name, [size, chk])
        self.uploaded_bytes += sent
        return sent

    async def _upload(self, name, blob, chk, exists, secret):
        at = self.at
        q = quote(name, "file name")
        size = len(blob)
        why = ""
        for attempt in range(3):
            if exists:
                try:
                    await at.cmd(b"AT+QFDEL=%s" % q, timeout_ms=5000)
                except CmeError as e:
                    if e.code != 405:  # 405: not found -- fine
                        raise
            self.memo.forget("file:" + name)
            ack = 1 if size > 1024 else 0
            try:
                lines = await at.cmd(b"AT+QFUPL=%s,%d,10,%d" % (q, size, ack), b"+QFUPL:", 5000, data=blob,
                                     connect=True, ack=1024 if ack else 0, data_timeout_ms=15000, secret_data=secret)
            except CmeError as e:
                if e.code == 407:  # exists after all: delete and retry
                    exists = True
                    why = "file exists (407)"
                    continue
                raise CertUploadError("upload of %s failed: %s" % (name, e)) from None
            f = args(lines[0]) if lines else ()
            got_size = _int(f[0]) if f else -1
            try:
                got_chk = int(f[1], 16) if len(f) > 1 else -1  # lowercase, unpadded on real modules
            except ValueError:
                got_chk = -1
            if got_size == size and got_chk == chk:
                return size
            why = "module stored %d bytes with checksum %x, expected %d bytes with %x" % (got_size, got_chk, size, chk)
            exists = True
        raise CertUploadError("upload of %s failed after 3 attempts: %s" % (name, why))

    # ---- SSL context (section 5) -----------------------------------------------------------------------

    def ssl_ctx(self):
        return int(opt(self.tcfg, "ctx", 1))

    async def configure_ssl(self):
        """Configure SSL context ``tls.ctx`` from the tls section, secure by default: verify the server
        (seclevel 1, 2 with a client certificate), TLS 1.2, validity dates checked against the module clock
        (call sync_clock() first). ``tls.ignore_time`` / ``tls.seclevel`` / ``tls.version`` /
        ``tls.ciphers`` / ``tls.negotiate_s`` override."""
        t = self.tcfg
        ctx = self.ssl_ctx()
        fresh = self.fresh
        level = t.get("seclevel")
        if level is None:
            level = 2 if t.get("cert") else (1 if t.get("ca") else 0)
        if level and not t.get("ca"):
            raise ValueError("tls.ca is required to verify the server (tls.seclevel %d)" % level)
        cmds = []
        version = int(opt(t, "version", 3))
        if version != 4 or not fresh:
            cmds.append(b'AT+QSSLCFG="sslversion",%d,%d' % (ctx, version))
        ciphers = str(opt(t, "ciphers", "0xFFFF")).upper()
        if ciphers != "0XFFFF" or not fresh:
            quote(ciphers, "tls.ciphers")
            cmds.append(b'AT+QSSLCFG="ciphersuite",%d,%s' % (ctx, ciphers.encode()))
        cmds.append(b'AT+QSSLCFG="seclevel",%d,%d' % (ctx, level))
        names = {role: name for role, _, name, _ in self.cert_files()}
        for role, item in (("ca", b"cacert"), ("cert", b"clientcert"), ("key", b"clientkey")):
            if role in names:
                cmds.append(b'AT+QSSLCFG="%s",%d,%s' % (item, ctx, quote(names[role])))
        cmds.append(b'AT+QSSLCFG="ignorelocaltime",%d,%d' % (ctx, 1 if t.get("ignore_time") else 0))
        neg = int(opt(t, "negotiate_s", 300))
        if neg != 300 or not fresh:
            cmds.append(b'AT+QSSLCFG="negotiatetime",%d,%d' % (ctx, neg))
        for c in cmds:
            await self.at.cmd(c)

    async def diagnose_tls(self, host, port):
        """Why did a TLS open fail? Opens a raw TLS socket to the same server through a spare SSL context with
        seclevel 0: if that works the server is reachable and the handshake with our checks failed (TlsError);
        otherwise the DNS/network error of that attempt. Costs a few commands, only after a failure."""
        ctx = 5 if self.ssl_ctx() != 5 else 4
        try:
            await self.at.cmd(b'AT+QSSLCFG="seclevel",%d,0' % ctx)
            if self._probe_sock is None:
                self._probe_sock = Bg96TlsSocket(self, 11, True)
            err = await self._probe_sock.probe(host, port, ctx)
        except (AtError, MqttError) as e:
            return NetworkError("TLS diagnosis of %s:%d failed: %s" % (host, port, e))
        if err is None:
            return TlsError("TLS handshake with %s:%d failed: the server is reachable, but its certificate is not "
                            "trusted by tls.ca, outside its validity dates by the module clock, or the TLS "
                            "version/ciphers or client certificate were refused" % (host, port))
        return err

    # ---- MQTT transports -------------------------------------------------------------------------------

    def mqtt(self):
        """The MQTT transport selected by ``mqtt.transport``: "native" (the module's MQTT client, default) or
        "socket" (our MQTT client over the module's TLS socket). Created once and reused."""
        if self._mqtt is None:
            q = self.qcfg
            tls = bool(opt(self.tcfg, "enabled", True))
            kind = opt(q, "transport", "native")
            if kind == "native":
                self._mqtt = Bg96Mqtt(self, int(opt(q, "client", 0)), tls)
            elif kind == "socket":
                from cellmqtt.mqtt_client import MqttClient
                self._mqtt = MqttClient(Bg96TlsSocket(self, int(opt(q, "socket", 1)), tls))
            else:
                raise ValueError("mqtt.transport must be native or socket")
        return self._mqtt


def _count_params(line):
    # parameters of a test-command answer: commas outside (ranges), <names> and "strings" separate them
    depth = 0
    n = 1
    for c in line[line.find(b":") + 1:]:
        if c in b"(<":
            depth += 1
        elif c in b")>":
            depth -= 1
        elif c == 44 and not depth:
            n += 1
    return n


def _same_values(have, want):
    # QCFG values compare as numbers when both are numbers (0x80084 vs 80084 hex, "0" vs "00")
    a = have.split(b",")
    b = want.split(b",")
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        x = x.strip().strip(b'"').lower()
        y = y.strip().strip(b'"').lower()
        if x == y:
            continue
        try:
            if int(x[2:] if x.startswith(b"0x") else x, 16) != int(y[2:] if y.startswith(b"0x") else y, 16):
                return False
        except ValueError:
            return False
    return True


class Bg96Mqtt(NativeMqtt):
    """BG96 native MQTT (section 6): version 4 = 3.1.1, client 0..5, SSL context from tls.ctx, the Ctrl-Z
    publish form, and -- probed once with AT+QMTPUB=? / AT+QMTCFG=? -- the later firmware's fixed-length form
    (binary-safe) and length-prefixed +QMTRECV."""

    VERSION = 4
    OPEN_MS = 75000
    MAX_PAYLOAD = 1548
    DEFAULTS = {"keepalive": 120, "session": 1, "pkt": 5, "retries": 3}

    def __init__(self, modem, index=0, tls=True):
        super().__init__(modem, index, tls)
        caps = modem.memo.get("qmt_caps")
        self._caps = caps if isinstance(caps, list) and len(caps) == 2 else None
        self.FIXED_LEN = bool(self._caps and self._caps[0])

    def _ssl_cfg(self, enable):
        if enable:
            return b'AT+QMTCFG="ssl",%d,1,%d' % (self.id, self.m.ssl_ctx())
        return b'AT+QMTCFG="ssl",%d,0' % self.id

    def _cfg_commands(self, keepalive, clean):
        out = super()._cfg_commands(keepalive, clean)
        cid = self.m.pdp_cid()
        if cid != 1 or not self.m.fresh:
            out.append(b'AT+QMTCFG="pdpcid",%d,%d' % (self.id, cid))
        if self._caps and self._caps[1]:
            out.append(b'AT+QMTCFG="recv/mode",%d,0,1' % self.id)
        return out

    async def _probe(self):
        at = self.at
        try:
            pub = await at.cmd(b"AT+QMTPUB=?", b"+QMTPUB:")
            cfg = await at.cmd(b"AT+QMTCFG=?", b"+QMTCFG:")
        except AtCommandError:
            pub = cfg = []
        fixed = bool(pub) and _count_params(pub[0]) >= 6  # ...,<topic>,(1-1548) on later firmware
        recvlen = any(b'"recv/mode"' in line for line in cfg)
        self._caps = [fixed, recvlen]
        self.FIXED_LEN = fixed
        self.m.memo.set("qmt_caps", self._caps)

    async def connect(self, host, port, client_id, username=None, password=None, keepalive=120, clean=True):
        if self._caps is None:
            await self._probe()
        await super().connect(host, port, client_id, username, password, keepalive, clean)

    async def publish(self, topic, payload, qos=1, retain=False):
        try:
            return await super().publish(topic, payload, qos, retain)
        except ModuleRefused:
            if self.FIXED_LEN:  # the module no longer takes the fixed-length form: probe again next time
                self.m.memo.forget("qmt_caps")
                self._caps = None
            raise

    async def _open_error(self, code, host, port):
        if code == -1 and self.tls:
            # -1 covers both "network unreachable" and "TLS handshake failed" (T2). A raw TLS open to the same
            # server through a spare SSL context without certificate checks tells them apart.
            err = await self.m.diagnose_tls(host, port)
            if err is not None:
                return err
        return await super()._open_error(code, host, port)


class Bg96TlsSocket:
    """A TLS byte stream through the module (QSSLOPEN in direct push mode), as a ModemSocket (transport.py):
    the carrier of our own MQTT client. ``client`` is the socket index 0..11, the SSL context is tls.ctx."""

    max_send = 1460

    def __init__(self, modem, client=1, tls=True):
        if not tls:
            raise ValueError("the socket transport always uses TLS (tls.enabled must be true)")
        self.m = modem
        self.at = modem.at
        self.client = client
        self._on_data = None
        self._on_close = None
        self.open_ = False
        self._checked = False
        self._pre = b'+QSSLURC: "recv",%d,' % client
        self.at.urc(self._pre, self._recv, frame_line_then_bytes(0))
        self.at.urc(b'+QSSLURC: "closed",%d' % client, self._closed)
        modem._transports.append(self)

    def on_data(self, cb):
        self._on_data = cb

    def on_close(self, cb):
        self._on_close = cb

    def _recv(self, rec):
        nl = rec.find(b"\n")
        if self._on_data is not None:
            self._on_data(rec[nl + 1:])

    def _closed(self, line):
        self._set_lost(LinkLost("TLS socket %d closed by the peer" % self.client, 1))
        asyncio.create_task(self._close_cmd())  # the module wants QSSLCLOSE to free the socket

    def _set_lost(self, err):
        if self.open_:
            self.open_ = False
            if self._on_close is not None:
                self._on_close(err)

    async def _open(self, host, port, ctx=None):
        h = quote(host, "broker host")
        ctx = self.m.ssl_ctx() if ctx is None else ctx
        _, res = await self.at.cmd_result(
            b"AT+QSSLOPEN=%d,%d,%d,%s,%d,1" % (self.m.pdp_cid(), ctx, self.client, h, port),
            b"+QSSLOPEN: %d," % self.client, timeout_ms=5000,
            result_timeout_ms=(150 + int(opt(self.m.tcfg, "negotiate_s", 300))) * 1000)
        return _int(args(res)[1])

    async def open(self, host, port):
        if not self.m.fresh and not self._checked:
            await self._close_cmd()  # a socket left open by the firmware before an MCU reset
        self._checked = True
        try:
            err = await self._open(host, port)
        except AtTimeout as e:
            raise MqttTimeout("TLS open of %s:%d: %s" % (host, port, e)) from None
        except AtError as e:
            raise NetworkError("TLS open of %s:%d: %s" % (host, port, e)) from None
        if err != 0:
            await self._close_cmd()
            if err == 566:  # "connection failed" also covers a failed handshake: find out which
                raise await self.m.diagnose_tls(host, port)
            raise socket_error(err, "TLS connection to %s:%d" % (host, port))
        self.open_ = True

    async def probe(self, host, port, ctx=None):
        """Open and close at once; returns the typed error of a failed open, or None when it works."""
        err = await self._open(host, port, ctx)
        await self._close_cmd()
        return socket_error(err, "TLS connection to %s:%d" % (host, port)) if err else None

    async def send(self, data):
        mv = memoryview(data)
        for i in range(0, len(data), self.max_send):
            chunk = mv[i:i + self.max_send]
            if not self.open_:
                raise LinkLost("TLS socket %d is closed" % self.client)
            try:
                await self.at.cmd(b"AT+QSSLSEND=%d,%d" % (self.client, len(chunk)), data=bytes(chunk), timeout_ms=5000,
                                  data_timeout_ms=30000)
            except AtCommandError as e:  # the socket died under us (the "closed" URC may still be on its way)
                raise LinkLost("TLS send failed: %s" % e) from None

    async def _close_cmd(self):
        try:
            await self.at.cmd(b"AT+QSSLCLOSE=%d" % self.client, timeout_ms=12000)
        except AtError as e:
            if self.m.log:
                self.m.log("QSSLCLOSE %d: %s" % (self.client, e))

    async def close(self):
        was = self.open_
        self.open_ = False
        if was:
            await self._close_cmd()
