# What the Quectel BG96 and BC660K-GL drivers share: bring-up (probe, RDY, echo, error mode), SIM, network
# registration, signal, the module clock, certificates and SSL settings from the tls section, the choice of MQTT
# transport, events for the application, and the module's native MQTT client (AT+QMT*) behind the Transport
# interface. Module specifics live in bg96.py and bc660k.py.
import asyncio

from cellmqtt.at_engine import (
    AtClosed,
    AtCommandError,
    AtEngine,
    AtError,
    AtTimeout,
    CmeError,
    args,
    frame_quoted_len,
    quote,
)
from cellmqtt.certs import Memo, checksum, read_pem
from cellmqtt.compat import ticks_diff, ticks_ms
from cellmqtt.timeutil import TRUSTED_AFTER, parse_modem_time
from cellmqtt.transport import (
    DnsError,
    LinkLost,
    MqttError,
    MqttTimeout,
    NetworkError,
    PayloadError,
    SubscribeRefused,
    connack_error,
)


class ModemError(Exception):
    """A driver-level failure with the module's reason attached."""


class ModemNotResponding(ModemError):
    pass


class SimError(ModemError):
    pass


class RegistrationError(ModemError):
    pass


class PdpError(ModemError):
    pass


class CertUploadError(ModemError):
    pass


class ModuleRefused(MqttError):
    """The module answered an MQTT command with ERROR / +CME ERROR (``code``: the module's code or None)."""


def _int(b, default=-1):
    try:
        return int(b)
    except ValueError:
        return default


def _first(lines):
    # the parameters of a command's first information line, or () when it printed none
    return args(lines[0]) if lines else ()


def _nth_int(line, n):
    # the n-th parameter of b"+QMTPUB: 0,5,0" as an int, parsed in place (no list, no slices): -1 if absent
    i = line.find(b":") + 1
    while n:
        i = line.find(b",", i) + 1
        if not i:
            return -1
        n -= 1
    while i < len(line) and line[i] == 32:
        i += 1
    neg = i < len(line) and line[i] == 45
    if neg:
        i += 1
    v = -1
    while i < len(line) and 48 <= line[i] <= 57:
        v = (0 if v < 0 else v * 10) + line[i] - 48
        i += 1
    return -v if neg and v >= 0 else v


def csq(out, f):
    # +CSQ: <rssi>,<ber>; 99 = not known
    v = _int(f[0]) if f else 99
    if v != 99:
        out["csq"] = v
        out["rssi"] = 2 * v - 113


def opt(d, key, default):
    """d[key], or default when it is missing or None (the app's validated config holds None for unset keys)."""
    v = d.get(key)
    return default if v is None else v


def _section(config, name):
    v = config.get(name) if config else None
    return v if isinstance(v, dict) else {}


class Modem:
    """Base of the drivers. ``board`` gives the modem's byte pipe (board.pipe()) and power lines; ``config`` is
    the app's configuration (sections "modem", "tls", "mqtt" are read); ``state_dir`` holds the memo of what
    the module already has (modem.json). ``pipe`` overrides board.pipe().

    A driver sets NATIVE (its NativeMqtt class), CERT_MEMO (memo key prefix of a stored certificate) and
    implements tls_socket(), _cert_name(), _held() and _put_cert() (certificates, see provision_certs)."""

    RXBUF = 2048
    CERT_MEMO = "cert:"
    SIGNAL = ((b"AT+CSQ", b"+CSQ:", csq),)  # (command, info prefix, parse(out, params)) for signal()

    def __init__(self, board, config, pipe=None, transcript=None, log=None, state_dir="."):
        self.board = board
        self.mcfg = _section(config, "modem")
        self.tcfg = _section(config, "tls")
        self.qcfg = _section(config, "mqtt")
        self.log = log
        self.memo = Memo(state_dir + "/modem.json")
        self.at = AtEngine(pipe if pipe is not None else board.pipe(), self.RXBUF, transcript, log)
        self.on_event = None  # callable(kind, value): "reset", "reg", "pdp", "sim", "psm" -- called from the reader
        self.fresh = False  # the module booted while we watched: its volatile settings are factory defaults
        self.sim_ready = False
        self.registered = False
        self.cell = None  # (tac, ci) of the serving cell, from +CEREG (mode 2)
        self.resets = 0
        self._reg_ev = asyncio.Event()
        self._transports = []
        self._mqtt = None
        self._time = None  # (unix seconds, ticks_ms) of the last clock reading
        self.time_trusted = False
        at = self.at
        at.urc(b"RDY", self._on_rdy)
        at.urc(b"POWERED DOWN", self._on_powered_down)
        at.urc(b"+CPIN:", self._on_cpin)
        at.urc(b"+CEREG:", self._on_cereg)
        for p in (b"+CFUN:", b"+QUSIM:", b"+QIND:", b"APP RDY"):
            at.urc(p, self._ignore)

    # ---- URCs (called from the reader: quick, no awaits) -------------------------------------------------

    def _event(self, kind, value=None):
        if self.on_event is not None:
            self.on_event(kind, value)

    def _ignore(self, line):
        pass

    def _on_rdy(self, line):
        # A boot: every socket, MQTT client and volatile setting is gone; files and NV settings remain.
        self.fresh = True
        self.sim_ready = self.registered = False
        self.resets += 1
        self.at.echo = None
        self._lost_all("the modem restarted")
        self._event("reset", self.resets)

    def _on_powered_down(self, line):
        self.registered = False
        self._lost_all("the modem powered down")

    def _on_cpin(self, line):
        self.sim_ready = line.endswith(b"READY")
        if not self.sim_ready:
            self._event("sim", line[7:].strip())

    def _on_cereg(self, line):
        self._reg(args(line), 0)
        self._reg_ev.set()

    def _reg(self, f, i):
        # +CEREG: [<n>,]<stat>[,<tac>,<ci>...] with <stat> at index i; returns the stat
        stat = _int(f[i]) if len(f) > i else -1
        if len(f) > i + 2 and f[i + 1]:
            self.cell = (f[i + 1].decode(), f[i + 2].decode())
        was = self.registered
        self.registered = stat == 1 or stat == 5
        if was != self.registered:
            self._event("reg", stat)
        return stat

    def _lost_all(self, why):
        err = LinkLost(why, 0)
        for t in self._transports:
            t._set_lost(err)

    # ---- bring-up ----------------------------------------------------------------------------------------

    async def start(self, timeout_ms=30000):
        """Power the module if the board can, wait for RDY or an answer to AT, then echo off and the error
        mode (``modem.cmee``: 1 numeric, 2 text). Raises ModemNotResponding."""
        cmee = opt(self.mcfg, "cmee", 1)
        if cmee not in (1, 2):
            raise ValueError("modem.cmee must be 1 or 2")
        board = self.board
        if board is not None and board.status() is False:
            await board.power_on()
        t0 = ticks_ms()
        tried_reset = False
        while True:
            try:
                await self.at.raw_cmd(b"AT", timeout_ms=700)
                break
            except AtTimeout:
                pass
            except AtCommandError:  # a half-received probe after sleep: the module is alive
                break
            if ticks_diff(ticks_ms(), t0) > timeout_ms:
                if not tried_reset and board is not None and await board.reset():
                    tried_reset = True
                    t0 = ticks_ms()
                    continue
                raise ModemNotResponding("no answer to AT within %d s" % (timeout_ms // 1000))
        await self.at.cmd(b"ATE0")
        self.at.echo = False
        await self.at.cmd(b"AT+CMEE=%d" % cmee)

    def close(self):
        """Stop the AT engine and release the UART (the module itself is left as it is)."""
        self._lost_all("the driver was closed")
        self.at.close()

    async def check_sim(self):
        """SIM ready, entering ``modem.pin`` when asked. A wrong PIN is never retried (it would lock the SIM)."""
        pin = self.mcfg.get("pin")
        for _ in range(20):
            if self.sim_ready:
                return
            try:
                lines = await self.at.cmd(b"AT+CPIN?", b"+CPIN:", 5000)
            except CmeError as e:
                why = e.text.lower() if e.text else ""
                if e.code == 14 or "busy" in why:
                    await asyncio.sleep(1)
                    continue
                raise SimError("%s (+CME ERROR: %s)" % ("no SIM card" if e.code == 10 or "not inserted" in why
                                                        else "SIM failure", e.code or e.text)) from None
            state = lines[0][7:].strip() if lines else b""
            if state == b"READY":
                self.sim_ready = True
                return
            if state == b"SIM PIN":
                if not pin:
                    raise SimError("the SIM needs a PIN and modem.pin is not set")
                pin_b = str(pin).encode()
                try:
                    await self.at.cmd(b"AT+CPIN=" + quote(pin_b, "modem.pin"), timeout_ms=5000, secrets=(pin_b,))
                except CmeError as e:
                    raise SimError("the SIM refused modem.pin (+CME ERROR: %s); not retried" % (e.code or e.text)) from None
                pin = None  # never send it twice
                await asyncio.sleep(0.5)
            elif state == b"SIM PUK":
                raise SimError("the SIM is locked and needs its PUK")
            else:
                await asyncio.sleep(1)
        raise SimError("the SIM did not become ready")

    async def wait_registered(self, timeout_ms=None):
        """Wait until registered (home or roaming) using the +CEREG URCs, polling as a fallback. Returns the
        stat. Raises RegistrationError when denied or after ``modem.register_timeout_s`` (default 180)."""
        if timeout_ms is None:
            timeout_ms = int(opt(self.mcfg, "register_timeout_s", 180)) * 1000
        at = self.at
        await at.cmd(b"AT+CEREG=2")
        t0 = ticks_ms()
        while True:
            self._reg_ev.clear()
            stat = self._reg(_first(await at.cmd(b"AT+CEREG?", b"+CEREG:")), 1)
            if self.registered:
                return stat
            if stat == 3:
                raise RegistrationError("registration denied by the network (+CEREG stat 3)")
            left = timeout_ms - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                raise RegistrationError("not registered after %d s (+CEREG stat %d)" % (timeout_ms // 1000, stat))
            try:
                await asyncio.wait_for(self._reg_ev.wait(), min(left, 10000) / 1000)
            except asyncio.TimeoutError:
                pass

    async def signal(self):
        """What the driver's SIGNAL queries read ({"csq", "rssi", ...}, unknown values omitted) and the serving
        cell ("tac", "ci") from the last +CEREG, which costs no command."""
        out = {}
        at = self.at
        for c, p, parse in self.SIGNAL:  # plain parsers: no coroutine per query (read every telemetry cycle)
            parse(out, _first(await at.cmd(c, p)))
        if self.cell:
            out["tac"], out["ci"] = self.cell
        return out

    # ---- clock -------------------------------------------------------------------------------------------

    def now(self):
        """Unix seconds (UTC) from the last clock reading plus elapsed ticks, or None before any reading."""
        if self._time is None:
            return None
        return self._time[0] + ticks_diff(ticks_ms(), self._time[1]) // 1000

    def _set_time(self, unix_s):
        self._time = (unix_s, ticks_ms())
        self.time_trusted = unix_s >= TRUSTED_AFTER

    async def read_clock(self):
        """Read +CCLK; returns Unix seconds (UTC) and sets ``time_trusted`` when the clock was set."""
        lines = await self.at.cmd(b"AT+CCLK?", b"+CCLK:")
        t = parse_modem_time(lines[0][6:]) if lines else None
        if t is not None:
            self._set_time(t)
        return t

    async def sync_clock(self):
        """Make sure the module clock is right (TLS validity checks and cloud timestamps depend on it):
        +CCLK when the network already set it, else NTP (``modem.ntp_server``). Returns Unix seconds."""
        t = await self.read_clock()
        if t is not None and t >= TRUSTED_AFTER:
            return t
        server = quote(opt(self.mcfg, "ntp_server", "pool.ntp.org"), "modem.ntp_server")
        _, res = await self.at.cmd_result(self._ntp_cmd(server, int(opt(self.mcfg, "ntp_port", 123))), b"+QNTP:",
                                          timeout_ms=3000, result_timeout_ms=125000)
        f = args(res)
        t = parse_modem_time(f[1]) if len(f) > 1 and f[0] == b"0" else None
        if t is None:
            raise ModemError("network time failed: %s" % res.decode())
        self._set_time(t)
        return t

    def _ntp_cmd(self, server, port):
        return b"AT+QNTP=%d,%s,%d,1" % (self.pdp_cid(), server, port)

    def pdp_cid(self):
        return int(opt(self.mcfg, "pdp_cid", 1))

    # ---- certificates and SSL (the tls section) ----------------------------------------------------------

    def cert_files(self):
        """[(tls key, SSL item, flash path, PEM kind)] for tls.ca / tls.cert / tls.key (under tls.dir unless
        the name is absolute)."""
        t = self.tcfg
        d = opt(t, "dir", "certs")
        out = []
        for key, item, kind in (("ca", "cacert", "cert"), ("cert", "clientcert", "cert"), ("key", "clientkey", "key")):
            name = t.get(key)
            if name:
                out.append((key, item, name if name[0] == "/" else d + "/" + name, kind))
        return out

    def seclevel(self):
        """tls.seclevel, by default 2 with a client certificate, else 1 (verify the server) when tls.ca is set."""
        t = self.tcfg
        level = t.get("seclevel")
        if level is None:
            level = 2 if t.get("cert") else (1 if t.get("ca") else 0)
        if level and not t.get("ca"):
            raise ValueError("tls.ca is required to verify the server (tls.seclevel %d)" % level)
        return level

    async def provision_certs(self):
        """Make the module hold exactly the certificates on flash (the flash copy is only ever read). Every PEM
        is validated first (CertError names the file); one the module already holds unchanged (remembered size
        and checksum, size confirmed by the module) is skipped; otherwise it is stored and verified by the
        driver's _put_cert, retried, then CertUploadError. Returns the bytes sent."""
        files = [(self._cert_name(k, item, path), read_pem(path, kind), kind == "key")
                 for k, item, path, kind in self.cert_files()]
        held = await self._held() if files else {}
        sent = 0
        for name, pem, secret in files:
            memo = self.CERT_MEMO + name
            want = [len(pem), checksum(pem)]
            if self.memo.matches(memo, want) and held.get(name) == want[0]:
                continue
            self.memo.forget(memo)
            for attempt in range(3):
                try:
                    why = await self._put_cert(name, pem, secret, attempt or name in held)
                except (AtCommandError, AtTimeout) as e:
                    why = str(e)
                if why is None:
                    break
                if self.log:
                    self.log("storing %s: %s; retrying" % (name, why))
            else:
                raise CertUploadError("storing %s failed after 3 attempts: %s" % (name, why))
            sent += want[0]
            self.memo.set(memo, want)
        return sent

    # ---- MQTT transports ---------------------------------------------------------------------------------

    def mqtt(self):
        """The transport selected by ``mqtt.transport``: "native" (the module's MQTT client, default) or
        "socket" (our MQTT client over the module's TLS socket). Created once and reused."""
        if self._mqtt is None:
            q = self.qcfg
            tls = bool(opt(self.tcfg, "enabled", True))
            kind = opt(q, "transport", "native")
            if kind == "native":
                self._mqtt = self.NATIVE(self, int(opt(q, "client", 0)), tls)
            elif kind == "socket":
                from cellmqtt.mqtt_client import MqttClient

                self._mqtt = MqttClient(self.tls_socket(tls))
            else:
                raise ValueError("mqtt.transport must be native or socket")
        return self._mqtt


# ---- native MQTT (AT+QMT*) ----------------------------------------------------------------------------------

STAT_TEXT = ("", "closed by the peer", "PINGREQ failed", "CONNECT failed", "CONNACK timeout",
             "disconnected", "repeated send failures", "link not alive")
# +QMTOPEN results 1..5 (the rest: could not open)
_OPEN_TEXT = ("the module refused the open parameters", "MQTT client still in use", "PDP context not activated",
              "cannot resolve the host", "network disconnected while opening")


class NativeMqtt:
    """The module's own MQTT client, index ``index``, as a Transport (see transport.py).

    The drivers subclass it for their QMTCFG dialect, publish forms and limits. URCs: +QMTRECV delivers
    messages to ``on_message``; +QMTSTAT (or a module restart) ends the session -- ``wait_lost()`` returns the
    LinkLost error and every waiting call fails at once."""

    VERSION = 4  # QMTCFG "version" value meaning MQTT 3.1.1
    OPEN_MS = 75000
    MAX_PAYLOAD = 1548
    MAX_INFLIGHT = 5
    GATE_MS = 0
    FIXED_LEN = True  # the fixed-length QMTPUB form exists (binary-safe)
    PKT_TIMEOUT = 5  # the module's defaults after a boot: packet timeout (s) and retries
    RETRIES = 3

    def __init__(self, modem, index=0, tls=True):
        self.m = modem
        self.at = modem.at
        self.id = index
        self.tls = tls
        self.max_payload = self.MAX_PAYLOAD
        self._on_message = None
        self._connected = False
        self._maybe_open = not modem.fresh  # a client may be left open from before an MCU reset
        self._configured = None  # (keepalive, clean, modem resets) the QMTCFG settings were made for
        self._qtopics = {}  # topic -> quoted bytes
        self._lost = asyncio.Event()
        self._reason = None
        self._waiters = []
        self._msgid = 0
        self._inflight = 0
        self._slot = asyncio.Event()
        q = modem.qcfg
        self.pkt_timeout = int(opt(q, "pkt_timeout_s", self.PKT_TIMEOUT))
        self.retries = int(opt(q, "retries", self.RETRIES))
        self._pre_stat = b"+QMTSTAT: %d," % index
        # after the prefix (which holds the client id): msgid, "topic", then the length when there is one
        self.at.urc(b"+QMTRECV: %d," % index, self._on_recv, frame_quoted_len(2))
        self.at.urc(self._pre_stat, self._on_stat)
        modem._transports.append(self)

    def on_message(self, cb):
        self._on_message = cb

    def is_connected(self):
        return self._connected

    async def wait_lost(self):
        await self._lost.wait()
        return self._reason

    # ---- URC handlers

    def _on_recv(self, line):
        # +QMTRECV: <id>,<msgid>,"<topic>",[<len>,]"<payload>" -- the payload is raw, never escaped
        i = line.find(b'"')
        j = line.find(b'"', i + 1)
        if i < 0 or j < 0 or self._on_message is None:
            self.at._unknown(line)
            return
        k = j + 2
        if k < len(line) and 48 <= line[k] <= 57:
            c = line.find(b",", k)
            payload = line[c + 2:c + 2 + int(line[k:c])]
        else:
            payload = line[k + 1:-1]
        self._on_message(line[i + 1:j].decode(), payload)

    def _on_stat(self, line):
        code = _int(line[len(self._pre_stat):].strip())
        self._maybe_open = False  # +QMTSTAT: the module has already closed this client
        txt = STAT_TEXT[code] if 0 < code < len(STAT_TEXT) else "unknown reason"
        self._set_lost(LinkLost("MQTT session closed by the module: %s (+QMTSTAT %d)" % (txt, code), code))

    def _set_lost(self, err):
        if self._reason is None or self._connected:
            self._reason = err
        self._connected = False
        self._lost.set()
        for w in self._waiters:
            if w.line is None:
                w.error = err
                w.ev.set()
        self._slot.set()

    # ---- commands

    def _error(self, e):
        # an engine error as a transport error (the Transport contract): a timeout, a closed stream, a refusal
        if isinstance(e, AtTimeout):
            return MqttTimeout(str(e))
        if isinstance(e, AtClosed):
            return LinkLost(str(e))
        return ModuleRefused("the module refused the MQTT command: %s" % e, e.code)

    async def _call(self, command, result_prefix, result_ms, secrets=()):
        """A two-phase QMT command whose wait also ends when the session is lost."""
        at = self.at
        w = at.expect(result_prefix)
        self._waiters.append(w)
        try:
            try:
                await at.cmd(command, timeout_ms=5000, secrets=secrets)
            except BaseException:
                at.cancel(w)
                raise
            return await at.wait(w, result_ms)
        except AtError as e:
            raise self._error(e) from None
        finally:
            self._waiters.remove(w)

    def _op_ms(self):
        return self.pkt_timeout * (self.retries + 1) * 1000 + 5000

    def _next_id(self):
        self._msgid = self._msgid % 65535 + 1
        return self._msgid

    def _cfg_commands(self, keepalive, clean):
        # Only what differs from the module's defaults after a boot; everything when its state is unknown.
        i = self.id
        fresh = self.m.fresh
        out = [b'AT+QMTCFG="version",%d,%d' % (i, self.VERSION)]
        if self.tls or not fresh:
            out.append(self._ssl_cfg() if self.tls else b'AT+QMTCFG="ssl",%d,0' % i)
        if not fresh or keepalive != 120:
            out.append(b'AT+QMTCFG="keepalive",%d,%d' % (i, keepalive))
        if not fresh or not clean:
            out.append(b'AT+QMTCFG="session",%d,%d' % (i, 1 if clean else 0))
        if not fresh or self.pkt_timeout != self.PKT_TIMEOUT or self.retries != self.RETRIES:
            out.append(b'AT+QMTCFG="timeout",%d,%d,%d,0' % (i, self.pkt_timeout, self.retries))
        return out

    async def _close(self):
        try:
            await self._call(b"AT+QMTCLOSE=%d" % self.id, b"+QMTCLOSE: %d," % self.id, 10000)
        except MqttError as e:
            if self.m.log:
                self.m.log("QMTCLOSE %d: %s" % (self.id, e))
        self._maybe_open = False

    async def connect(self, host, port, client_id, username=None, password=None, keepalive=120, clean=True):
        """Open the network connection (TLS per the SSL context) and send CONNECT. Raises DnsError, TlsError,
        NetworkError, ConnectRefused (CONNACK code), MqttTimeout -- never leaves the client half-open."""
        i = self.id
        h = quote(host, "broker host")
        cmd_conn = b"AT+QMTCONN=%d,%s" % (i, quote(client_id, "client id"))
        secrets = ()
        if username is not None:
            cmd_conn += b"," + quote(username, "user name")
            if password is not None:
                pw = password.encode() if isinstance(password, str) else password
                cmd_conn += b"," + quote(pw, "password")
                secrets = (pw,)
        self._connected = False
        self._reason = None
        self._lost.clear()
        self.sent_connect = False
        if self._maybe_open:  # first: an open client locks its settings (BC660K-GL: +CME ERROR: 3)
            try:
                lines = await self.at.cmd(b"AT+QMTOPEN?", b"+QMTOPEN: %d," % i)
            except AtCommandError:
                lines = None
            if lines:
                await self._close()
            self._maybe_open = False
        want = (keepalive, clean, self.m.resets)
        if self._configured != want:  # the settings last until the module restarts
            for c in self._cfg_commands(keepalive, clean):
                await self.at.cmd(c)
            self._configured = want
        self._maybe_open = True
        code = _int(args(await self._call(b"AT+QMTOPEN=%d,%s,%d" % (i, h, port), b"+QMTOPEN: %d," % i,
                                          self.OPEN_MS))[1])
        if code:
            self._maybe_open = code == 2
            raise await self._open_error(code, host, port)
        self.sent_connect = True  # the broker sees this attempt (clouds rate-limit CONNECTs)
        try:
            f = args(await self._call(cmd_conn, b"+QMTCONN: %d," % i, self._op_ms(), secrets))
            result = _int(f[1])
            ret = _int(f[2]) if len(f) > 2 else 0
            if ret > 0:
                raise connack_error(ret)
            if result or ret:
                raise MqttTimeout("the broker did not acknowledge CONNECT (+QMTCONN result %d)" % result, result)
            self._connected = True
        except BaseException:
            await self._close()
            raise

    async def _open_error(self, code, host, port):
        why = _OPEN_TEXT[code - 1] if 0 < code <= len(_OPEN_TEXT) else "could not open" + (" with TLS" if self.tls else "")
        return (DnsError if code == 4 else MqttError if code == 1 else NetworkError)(
            "%s:%d: %s (+QMTOPEN %d)" % (host, port, why, code), code)

    async def subscribe(self, topic, qos=1):
        if not self._connected:
            raise self._reason or LinkLost("not connected")
        mid = self._next_id()
        while True:
            f = args(await self._call(b"AT+QMTSUB=%d,%d,%s,%d" % (self.id, mid, quote(topic, "topic"), qos),
                                      b"+QMTSUB: %d,%d," % (self.id, mid), self._op_ms()))
            result = _int(f[2])
            if result != 1:  # 1: a retransmission notice, the final result follows
                break
        if result:
            raise MqttTimeout("SUBSCRIBE %s not acknowledged" % topic, result)
        granted = _int(f[3]) if len(f) > 3 else qos
        if granted == 128:
            raise SubscribeRefused("the broker refused the subscription to %s" % topic, 128)
        return granted

    async def unsubscribe(self, topic):
        mid = self._next_id()
        res = await self._call(b"AT+QMTUNS=%d,%d,%s" % (self.id, mid, quote(topic, "topic")),
                               b"+QMTUNS: %d,%d," % (self.id, mid), self._op_ms())
        if _nth_int(res, 2):
            raise MqttTimeout("UNSUBSCRIBE %s not acknowledged" % topic)

    async def publish(self, topic, payload, qos=1, retain=False):
        """Publish and return once the broker acknowledged it (QoS 1) or the module sent it (QoS 0)."""
        if isinstance(payload, str):
            payload = payload.encode()
        if len(payload) > self.max_payload:
            raise PayloadError("payload of %d bytes exceeds the module's %d-byte limit" % (len(payload), self.max_payload))
        fixed = self.FIXED_LEN
        if not fixed and (payload.find(b"\x1a") >= 0 or payload.find(b"\x1b") >= 0):
            raise PayloadError("payload holds Ctrl-Z/Esc and this firmware has no fixed-length QMTPUB form")
        t = self._qtopics.get(topic)
        if t is None:  # telemetry goes to the same topic every time: quote (and check) it once
            t = quote(topic, "topic")
            if len(self._qtopics) >= 8:
                self._qtopics.clear()
            self._qtopics[topic] = t
        if not self._connected:
            raise self._reason or LinkLost("not connected")
        while qos and self._inflight >= self.MAX_INFLIGHT:
            self._slot.clear()
            await self._slot.wait()
            if not self._connected:
                raise self._reason or LinkLost("not connected")
        mid = self._next_id() if qos else 0
        cmd, data = self._pub_cmd(b"AT+QMTPUB=%d,%d,%d,%d,%s" % (self.id, mid, qos, 1 if retain else 0, t), payload,
                                  fixed)
        if qos:
            self._inflight += 1
        at = self.at
        pre = b"+QMTPUB: %d,%d," % (self.id, mid)
        w = at.expect(pre)
        self._waiters.append(w)
        try:
            try:  # positional arguments: no keyword dict on the hot path
                await at.cmd(cmd, None, 5000, data, data is not None and not fixed, False, self.GATE_MS, 0, 10000)
            except BaseException:
                at.cancel(w)
                raise
            res = await at.wait(w, self._op_ms())
            while _nth_int(res, 2) == 1:  # retransmitting: the final result of the same message follows
                self._waiters.remove(w)
                w = at.expect(pre)
                self._waiters.append(w)
                res = await at.wait(w, self._op_ms())
            result = _nth_int(res, 2)
            if result:
                raise MqttTimeout("PUBLISH to %s not acknowledged (+QMTPUB result %d)" % (topic, result), result)
        except AtError as e:
            raise self._error(e) from None
        finally:
            self._waiters.remove(w)
            if qos:
                self._inflight -= 1
                self._slot.set()

    def _pub_cmd(self, cmd, payload, fixed):
        # -> (command line, data block or None); the fixed-length form names the length
        return (cmd + b",%d" % len(payload), payload) if fixed else (cmd, payload)

    async def disconnect(self):
        """Send DISCONNECT and close the client. Never raises for an already-closed session."""
        if self._connected:
            self._connected = False
            try:
                await self._call(b"AT+QMTDISC=%d" % self.id, b"+QMTDISC: %d," % self.id, 10000)
                self._maybe_open = False
            except MqttError as e:
                if self.m.log:
                    self.m.log("QMTDISC %d: %s" % (self.id, e))
        if self._maybe_open:
            await self._close()
        if self._reason is None:
            self._reason = LinkLost("disconnected", 5)
        self._lost.set()
