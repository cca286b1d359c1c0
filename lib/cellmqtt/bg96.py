# Quectel BG96 (LTE Cat-M1 / NB-IoT) driver: radio configuration, PDP context, network time, certificates
# uploaded to the module's file system (AT+QFUPL, checksum-verified, skipped when unchanged), SSL contexts, the
# native MQTT dialect (Bg96Mqtt) and the TLS diagnosis. The raw TLS socket (the "socket" transport) is in
# bg96_socket.py, which imports this module (never the other way). Facts: reference/quectel-bg96.md (section
# numbers below). The BG95/BG77/BG770A family reuses all of it (bg95.py).
import binascii
import hashlib

from cellmqtt import modem as md
from cellmqtt import quectel
from cellmqtt.at_engine import AtCommandError, AtError, Cmd, CmeError, args, first, quote, to_int
from cellmqtt.certs import checksum
from cellmqtt.qmt import ModuleRefused, NativeMqtt
from cellmqtt.transport import DnsError, MqttError, NetworkError, PayloadError, TlsError

# What the BG96 reads beyond the shared Quectel keys (README "Configuration")
CONFIG = (quectel.CONFIG, {
    "modem": {"pdp_cid": (1, 1, 16), "apn_user": "", "apn_pass": "", "apn_auth": (0, 0, 3),
              "scan": (None, "auto", "lte", "gsm"), "rat": (None, "m1", "nb1", "m1+nb1"), "bands": dict},
    "tls": {"version": (3, 0, 4), "ciphers": "0xFFFF", "negotiate_s": (300, 10, 300), "ctx": (1, 0, 5),
            "sni": True, "check_host": True},
})
SECRETS = ("modem.pin", "modem.apn_pass")

# TCP/IP error codes (seed 001 table 3) that say what failed when a socket or TLS open fails
_DNS_ERRORS = (564, 565)
_PDP_ERRORS = (561, 570, 573)
_NET_ERRORS = (554, 556, 558, 559, 566, 567, 569, 574)

_SCAN = {"auto": 0, "gsm": 1, "lte": 3}
_RAT = {"m1": 0, "nb1": 1, "m1+nb1": 2}

_PLAIN = Cmd()
_QCFG = Cmd(b"+QCFG:")
_QIACT = Cmd(None, 150000)
_QIACT_Q = Cmd(b"+QIACT:")
_QIDEACT = Cmd(None, 40000)
_QIGETERROR = Cmd(b"+QIGETERROR:")
_QFLST = Cmd(b"+QFLST:")
_QFDEL = Cmd(None, 5000)
# AT+QFUPL by (ack mode above 1 KB, private key): CONNECT, the bytes, then +QFUPL: <size>,<checksum>
_QFUPL = tuple(Cmd(b"+QFUPL:", 5000, connect=True, ack=1024 if i & 2 else 0, data_ms=15000, secret_data=bool(i & 1))
               for i in range(4))
_QSSLCLOSE = Cmd(None, 12000)
_QMTPUB_T = Cmd(b"+QMTPUB:")
_QMTCFG_T = Cmd(b"+QMTCFG:")
_QSSLCFG_T = Cmd(b"+QSSLCFG:")
_QCSQ = Cmd(b"+QCSQ:")
_QNWINFO = Cmd(b"+QNWINFO:")


def socket_error(err, what):
    """The typed error for a QSSLOPEN/QIOPEN error code: DNS, PDP, network, or (anything else) TLS."""
    if err in _DNS_ERRORS:
        return DnsError("%s: DNS lookup failed (error %d)" % (what, err), err)
    if err in _PDP_ERRORS:
        return NetworkError("%s: PDP context not usable (error %d)" % (what, err), err)
    if err in _NET_ERRORS:
        return NetworkError("%s: connection failed (error %d)" % (what, err), err)
    return TlsError("%s: TLS handshake failed (error %d)" % (what, err), err)


def count_params(line):
    """Parameters of a test-command answer: commas outside (ranges), [optional], <names> and "strings"
    separate them."""
    depth = 0
    n = 1
    for c in line[line.find(b":") + 1:]:
        if c in b"(<[":
            depth += 1
        elif c in b")>]":
            depth -= 1
        elif c == 44 and not depth:
            n += 1
    return n


def upper_bound(line):
    """The upper bound of the last range in a test-command answer: ``...,<topic>,(1-4096)`` -> 4096 (0: none)."""
    i = line.rfind(b"-")
    j = i + 1
    while j < len(line) and 48 <= line[j] <= 57:
        j += 1
    return int(line[i + 1:j]) if i >= 0 and j > i + 1 else 0


class Bg96Mqtt(NativeMqtt):
    """BG96 native MQTT (section 6): version 4 = 3.1.1, client 0..5, SSL context from tls.ctx, the Ctrl-Z
    publish form, and -- probed once with AT+QMTPUB=? / AT+QMTCFG=? -- the later firmware's fixed-length form
    (binary-safe) and length-prefixed +QMTRECV."""

    def __init__(self, modem, config=None):
        super().__init__(modem, config)
        caps = modem.memo.get("qmt_caps")  # [fixed-length form, "recv/mode", payload limit], probed once
        self._caps = caps if isinstance(caps, list) and len(caps) == 3 else None
        self._use_caps()

    def _use_caps(self):
        c = self._caps
        self._set_fixed(bool(c and c[0]))
        if c and c[2] > 0:
            self.max_payload = c[2]

    def _ssl_cfg(self):
        return b'AT+QMTCFG="ssl",%d,1,%d' % (self.id, self.m.ssl_ctx())

    def _cfg_commands(self, keepalive, clean):
        out = super()._cfg_commands(keepalive, clean)
        cid = self.m.pdp_cid()
        if cid != 1 or not self.m.fresh:
            out.append(b'AT+QMTCFG="pdpcid",%d,%d' % (self.id, cid))
        if self._caps[1]:
            out.append(b'AT+QMTCFG="recv/mode",%d,0,1' % self.id)
        return out

    async def connect(self, host, port, client_id, username=None, password=None, keepalive=120, clean=True):
        if self._caps is None:
            try:
                pub = await self._cmd(b"AT+QMTPUB=?", _QMTPUB_T)
                cfg = await self._cmd(b"AT+QMTCFG=?", _QMTCFG_T)
            except ModuleRefused:
                pub = cfg = ()
            # ...,<topic>,(1-1548) on later firmware; [(1-1548)] on some; (1-4096) on the BG95 family
            fixed = bool(pub) and count_params(pub[0]) >= 6
            self._caps = [fixed, any(b'"recv/mode"' in line for line in cfg), upper_bound(pub[0]) if fixed else 0]
            self._use_caps()
            self.m.memo.set("qmt_caps", self._caps)
        if not self._caps[1]:
            # Without "recv/mode" the module prints +QMTRECV with no length: a payload holding CR LF would be
            # read as AT lines (a forged +QMTSTAT, RDY, OK). No framing rule fixes that, so this firmware gets
            # no native session; the socket transport reads every byte by count (AT+QSSLRECV).
            raise MqttError("this BG96 firmware has no length-framed MQTT receive (no QMTCFG \"recv/mode\"): "
                            "use mqtt.transport \"socket\" or newer module firmware")
        await super().connect(host, port, client_id, username, password, keepalive, clean)

    async def publish(self, topic, payload, qos=1, retain=False):
        try:
            return await super().publish(topic, payload, qos, retain)
        except ModuleRefused as e:
            if not self.FIXED_LEN or self._caps is None:
                raise
            first = e
        # Firmware that lists the fixed-length form and refuses it: the same message in the Ctrl-Z form. If that
        # goes through, the form was the problem: Ctrl-Z from now on, remembered across boots.
        self._set_fixed(False)
        try:
            r = await super().publish(topic, payload, qos, retain)
        except (ModuleRefused, PayloadError):  # refused too (or it cannot carry this payload): not the form
            self._set_fixed(True)
            raise first from None
        self._caps = [False] + self._caps[1:]  # a new list: the memo holds the old one (and compares to it)
        self.m.memo.set("qmt_caps", self._caps)
        if self.m.log:
            self.m.log("the fixed-length AT+QMTPUB form was refused: the Ctrl-Z form from now on")
        return r

    async def _open_error(self, code, host, port):
        if code == -1 and self.tls:
            # -1 covers both "network unreachable" and "TLS handshake failed" (T2): the diagnosis tells them apart
            return await self.m.diagnose_tls(host, port)
        return await super()._open_error(code, host, port)


def _digest(secret):
    # enough to see that a stored setting changed, without keeping the secret on flash
    return binascii.hexlify(hashlib.sha256(b"cellmqtt-memo:" + secret).digest()[:12]).decode()


def _qcsq(out, f):
    # +QCSQ: "<act>",<rssi>,<rsrp>,<sinr>,<rsrq>
    if len(f) >= 5:
        out["act"] = f[0].decode()
        out["rssi"] = to_int(f[1])
        out["rsrp"] = to_int(f[2])
        out["sinr"] = to_int(f[3])
        out["rsrq"] = to_int(f[4])


def _qnwinfo(out, f):
    # +QNWINFO: "<act>","<oper>","<band>",<channel>
    if len(f) >= 4:
        out["oper"] = f[1].decode()
        out["band"] = f[2].decode()
        out["channel"] = to_int(f[3])


def _same_values(have, want):
    # QCFG values compare as numbers when both are numbers (0x80084 vs 80084 hex, "0" vs "00")
    a = have.split(b",")
    b = want.split(b",")
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        x = x.strip().strip(b'"').lower()
        y = y.strip().strip(b'"').lower()
        try:
            if x != y and int(x[2:] if x.startswith(b"0x") else x, 16) != int(y[2:] if y.startswith(b"0x") else y, 16):
                return False
        except ValueError:
            return False
    return True


class Bg96(quectel.Quectel):
    CONFIG = CONFIG
    SECRETS = SECRETS
    NATIVE = Bg96Mqtt
    SOCKET = ("cellmqtt.bg96_socket", "Bg96TlsSocket")
    CERT_MEMO = "file:"
    SIGNAL = quectel.Quectel.SIGNAL + ((b"AT+QCSQ", _QCSQ, _qcsq), (b"AT+QNWINFO", _QNWINFO, _qnwinfo))
    RADIO = (("scan", "nwscanmode", _SCAN), ("rat", "iotopmode", _RAT))  # (config key, QCFG item, values)

    def __init__(self, at, board=None, config=None, log=None, state_dir="."):
        super().__init__(at, board, config, log, state_dir)
        self.pdp_active = False
        self._pdp_lost = False
        self._sslopen = Cmd(None, 5000, result_ms=(150 + self.tcfg["negotiate_s"]) * 1000)
        at.urc(b'+QIURC: "pdpdeact"', self._on_pdpdeact)

    def _on_pdpdeact(self, line):
        self.pdp_active = False
        self._pdp_lost = True
        self._event(md.PDP, to_int(args(line)[1]))

    # ---- radio (section 2): NV settings, applied only when they differ --------------------------------

    def configure_radio(self):
        """Apply ``modem.scan`` (auto|lte|gsm), ``modem.rat`` (m1|nb1|m1+nb1) and ``modem.bands``
        ({"gsm","m1","nb1"} hex masks) when they differ from the module's. They are stored in the module's
        NV memory: once verified they are remembered and not queried again. Returns the number changed."""
        return md.guard(self._configure_radio())

    def _radio_wanted(self):
        m = self.mcfg
        want = []  # [item, value] lists: what the JSON memo gives back
        for key, item, values in self.RADIO:
            v = m.get(key)
            if v is not None:
                want.append([item, "%d" % values[v]])
        b = m.get("bands")
        if b:
            want.append(["band", "%s,%s,%s" % (b.get("gsm", "0"), b.get("m1", "0"), b.get("nb1", "0"))])
        return want

    async def _configure_radio(self):
        want = self._radio_wanted()
        if not want or self.memo.matches("radio", want):
            return 0
        changed = 0
        for item, value in want:
            item = item.encode()
            value = quote(value, "modem." + item.decode())[1:-1]
            have = b",".join(first(await self.at.cmd(b'AT+QCFG="%s"' % item, _QCFG))[1:])
            if not _same_values(have, value):
                await self.at.cmd(b'AT+QCFG="%s",%s,1' % (item, value))
                changed += 1
        self.memo.set("radio", want)
        return changed

    # ---- PDP context (section 3) -----------------------------------------------------------------------

    def pdp_up(self):
        """Configure (``modem.apn``, ``apn_user``, ``apn_pass``, ``apn_auth``) and activate context
        ``modem.pdp_cid``; after a network-side deactivation the context is deactivated first. Returns the IP."""
        return md.guard(self._pdp_up())

    async def _pdp_up(self):
        at = self.at
        cid = self.pdp_cid()
        m = self.mcfg
        pw = str(m["apn_pass"]).encode()
        # the memo keeps a digest of the password, never the password (it belongs in secrets.json only)
        ctx = [cid, m["apn"], m["apn_user"], _digest(pw) if pw else "", m["apn_auth"]]
        if not self.memo.matches("pdp", ctx):
            await at.cmd(b"AT+QICSGP=%d,1,%s,%s,%s,%d" % (cid, quote(ctx[1], "modem.apn"), quote(ctx[2], "modem.apn_user"),
                                                         quote(pw, "modem.apn_pass"), ctx[4]), _PLAIN, None,
                         (pw,) if pw else ())
            self.memo.set("pdp", ctx)
        if self._pdp_lost:
            try:
                await at.cmd(b"AT+QIDEACT=%d" % cid, _QIDEACT)
            except AtCommandError as e:
                if self.log:
                    self.log("QIDEACT %d: %s" % (cid, e))
            self._pdp_lost = False
        try:
            await at.cmd(b"AT+QIACT=%d" % cid, _QIACT)
            err = None
        except AtCommandError as e:  # ERROR also means "already active": ask before giving up (section 3)
            err = e
        ip = None
        for line in await at.cmd(b"AT+QIACT?", _QIACT_Q):
            f = args(line)
            if to_int(f[0]) == cid and len(f) > 3 and f[1] == b"1":
                ip = f[3].decode()
        if ip is None and err is not None:
            self.memo.forget("pdp")
            try:
                why = (await at.cmd(b"AT+QIGETERROR", _QIGETERROR))[0][13:].decode()  # after "+QIGETERROR: "
            except (AtError, IndexError):
                why = "?"
            raise md.PdpError("PDP context %d could not be activated (%s; %s)" % (cid, err, why))
        self.pdp_active = True
        return ip

    # ---- certificates in the module's file system (section 4), used by provision_certs ------------------

    def _cert_name(self, key, item, path):
        name = path.rsplit("/", 1)[-1]  # the module's UFS file name
        quote(name, "tls." + key)
        if len(name) > 80:
            raise ValueError("tls.%s: module file names are at most 80 bytes" % key)
        return name

    async def _held(self):
        out = {}
        for line in await self.at.cmd(b'AT+QFLST="*"', _QFLST):
            f = args(line)
            if len(f) >= 2:
                out[f[0].decode()] = to_int(f[1])
        return out

    async def _put_cert(self, name, pem, secret, replace):
        # Delete (when it may exist), upload with AT+QFUPL (ack mode above 1 KB) and compare the module's
        # size and checksum with ours. None when stored intact, else why not.
        at = self.at
        q = quote(name)
        if replace:
            try:
                await at.cmd(b"AT+QFDEL=%s" % q, _QFDEL)
            except CmeError as e:
                if e.code != 405:  # 405: not found -- fine
                    raise
        size = len(pem)
        ack = size > 1024
        f = first(await at.cmd(b"AT+QFUPL=%s,%d,10,%d" % (q, size, ack), _QFUPL[ack * 2 + bool(secret)], pem))
        got = to_int(f[0]) if f else -1
        try:
            chk = int(f[1], 16)  # lowercase, unpadded on real modules
        except (ValueError, IndexError):
            chk = -1
        if got == size and chk == checksum(pem):
            return None
        return "module stored %d bytes with checksum %x, expected %d bytes with %x" % (got, chk, size, checksum(pem))

    # ---- SSL context (section 5) -----------------------------------------------------------------------

    def ssl_ctx(self):
        return self.tcfg["ctx"]

    async def _configure_ssl(self):
        """SSL context ``tls.ctx`` from the tls section, secure by default: verify the server (seclevel 1, 2
        with a client certificate), TLS 1.2, validity dates checked against the module clock (sync_clock()
        first). ``tls.ignore_time`` / ``tls.seclevel`` / ``tls.version`` / ``tls.ciphers`` /
        ``tls.negotiate_s`` override."""
        t = self.tcfg
        ctx = self.ssl_ctx()
        fresh = self.fresh
        cmds = []
        version = t["version"]
        if version != 4 or not fresh:
            cmds.append(b'AT+QSSLCFG="sslversion",%d,%d' % (ctx, version))
        ciphers = str(t["ciphers"]).upper()
        if ciphers != "0XFFFF" or not fresh:
            cmds.append(b'AT+QSSLCFG="ciphersuite",%d,%s' % (ctx, quote(ciphers, "tls.ciphers")[1:-1]))
        cmds.append(b'AT+QSSLCFG="seclevel",%d,%d' % (ctx, self.seclevel()))
        for key, item, path, _ in self.cert_files():
            cmds.append(b'AT+QSSLCFG="%s",%d,%s' % (item.encode(), ctx, quote(self._cert_name(key, item, path))))
        cmds.append(b'AT+QSSLCFG="ignorelocaltime",%d,%d' % (ctx, 1 if t["ignore_time"] else 0))
        neg = t["negotiate_s"]
        if neg != 300 or not fresh:
            cmds.append(b'AT+QSSLCFG="negotiatetime",%d,%d' % (ctx, neg))
        for c in cmds:
            await self.at.cmd(c)
        # SNI lets a virtual-hosted broker pick its certificate; checkhost makes the module compare the server
        # certificate's names with the host (seclevel alone checks only the chain). Firmware-dependent: probed.
        sni, check = await self._ssl_names()
        verify = self.seclevel() > 0
        if sni:
            await self.at.cmd(b'AT+QSSLCFG="sni",%d,%d' % (ctx, 1 if t["sni"] else 0))
        if check:
            await self.at.cmd(b'AT+QSSLCFG="checkhost",%d,%d' % (ctx, 1 if verify and t["check_host"] else 0))
        self.host_checked = bool(check and verify and t["check_host"])
        if verify and not check and self.log and not self._warned_host:
            self._warned_host = True
            self.log("TLS: the server's chain is verified, its host name is not (no checkhost in this firmware): "
                     "tls.ca should hold the cloud's own CA, not a public root")

    SSL_NAMES = None  # (sni, checkhost) when known for the model; None: probed with AT+QSSLCFG=?
    host_checked = False
    _warned_host = False

    async def _ssl_names(self):
        if self.SSL_NAMES is not None:
            return self.SSL_NAMES
        caps = self.memo.get("ssl_names")
        if not (isinstance(caps, list) and len(caps) == 2):
            try:
                lines = await self.at.cmd(b"AT+QSSLCFG=?", _QSSLCFG_T)
            except AtCommandError:
                lines = ()
            caps = [any(b'"sni"' in x for x in lines), any(b'"checkhost"' in x for x in lines)]
            self.memo.set("ssl_names", caps)
        return caps[0], caps[1]

    # ---- raw TLS sockets (section 5): the socket transport and the TLS diagnosis -------------------------

    async def ssl_open(self, host, port, client, ctx=None):
        """AT+QSSLOPEN of socket ``client`` in direct push mode; returns the module's result (0 = open).
        Engine errors are the caller's to convert."""
        _, res = await self.at.cmd_result(
            b"AT+QSSLOPEN=%d,%d,%d,%s,%d,1" % (self.pdp_cid(), self.ssl_ctx() if ctx is None else ctx, client,
                                              quote(host, "broker host"), port), self._sslopen,
            b"+QSSLOPEN: %d," % client)
        return to_int(args(res)[1])

    async def ssl_close(self, client):
        """AT+QSSLCLOSE; a failure is logged, never raised (the socket is gone either way)."""
        try:
            await self.at.cmd(b"AT+QSSLCLOSE=%d" % client, _QSSLCLOSE)
        except AtError as e:
            if self.log:
                self.log("QSSLCLOSE %d: %s" % (client, e))

    async def diagnose_tls(self, host, port):
        """Why did a TLS open fail? Opens a raw TLS socket to the same server through a spare SSL context with
        seclevel 0: if that works the server is reachable and the handshake with our checks failed (TlsError);
        otherwise the DNS/network error of that attempt. Costs a few commands, only after a failure."""
        ctx = 5 if self.ssl_ctx() != 5 else 4
        try:
            await self.at.cmd(b'AT+QSSLCFG="seclevel",%d,0' % ctx)
            err = await self.ssl_open(host, port, 11, ctx)
            await self.ssl_close(11)
        except (AtError, MqttError) as e:
            return NetworkError("TLS diagnosis of %s:%d failed: %s" % (host, port, e))
        if err:
            return socket_error(err, "TLS connection to %s:%d" % (host, port))
        return TlsError("TLS handshake with %s:%d failed: the server is reachable, but its certificate is not "
                        "trusted by tls.ca, outside its validity dates by the module clock, or the TLS "
                        "version/ciphers or client certificate were refused" % (host, port))


Driver = Bg96  # modem.type "bg96" (the app's start-up wiring finds the driver by this name)
