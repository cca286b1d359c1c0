# What the Quectel drivers share: bring-up (probe, RDY, echo, error mode), SIM, network registration, signal,
# the module clock, certificates and SSL settings from the tls section, and the module's events. Each public
# step converts engine errors into the modem errors of cellmqtt.modem. Module specifics live in bg96.py,
# bg95.py and bc660k.py; the native MQTT transport (AT+QMT*) in qmt.py.
#
#   d = Bg96(engine, board, config, log, state_dir)   # the app's start-up wiring builds the engine
import asyncio

from cellmqtt import modem as md
from cellmqtt.at_engine import PROBE, AtCommandError, AtError, AtTimeout, Cmd, CmeError, args, first, quote, to_int
from cellmqtt.certs import Memo, checksum, read_pem
from cellmqtt.compat import ticks_diff, ticks_ms
from cellmqtt.settings import ConfigError, at_safe, section
from cellmqtt.timeutil import TRUSTED_AFTER, parse_modem_time

# The keys every Quectel driver reads (its own CONFIG adds the module's); README "Configuration".
CONFIG = {
    "modem": {"pin": str, "apn": "", "register_timeout_s": (180, 10, 3600), "ntp_server": "pool.ntp.org",
              "ntp_port": (123, 1, 65535), "cmee": (1, 1, 2)},
    "tls": {"enabled": True, "dir": "certs", "ca": "ca.pem", "cert": str, "key": str, "seclevel": (None, 0, 2),
            "ignore_time": False},
}

_PLAIN = Cmd()
_LONG = Cmd(None, 5000)
_CPIN = Cmd(b"+CPIN:", 5000)
_CEREG = Cmd(b"+CEREG:")
_CSQ = Cmd(b"+CSQ:")
_CCLK = Cmd(b"+CCLK:")
_NTP = Cmd(None, 3000, result_ms=125000)


def csq(out, f):
    # +CSQ: <rssi>,<ber>; 99 = not known
    v = to_int(f[0]) if f else 99
    if v != 99:
        out["csq"] = v
        out["rssi"] = 2 * v - 113


class Quectel(md.Modem):
    """Base of the Quectel drivers. ``at``: the AT engine on the modem's UART; ``board``: power lines (or
    None); ``config``: the app's configuration (the driver reads the sections its CONFIG declares);
    ``state_dir`` holds the memo of what the module already has (modem.json).

    A driver sets CONFIG, NATIVE (its qmt.NativeMqtt dialect), SOCKET ((module, class) of its TLS socket, or
    None), CERT_MEMO (memo key prefix of a stored certificate) and implements _cert_name(), _held() and
    _put_cert() (certificates, see provision_certs)."""

    RXBUF = 2048  # the engine's receive buffer: the longest record the module prints
    CONFIG = CONFIG
    CERT_MEMO = "cert:"
    NATIVE = None
    SOCKET = None
    SIGNAL = ((b"AT+CSQ", _CSQ, csq),)  # (command, spec, parse(out, params)) for signal()

    def __init__(self, at, board=None, config=None, log=None, state_dir="."):
        super().__init__()
        self.board = board
        self.config = config or {}
        self.mcfg = section(config, "modem", self.CONFIG)
        self.tcfg = section(config, "tls", self.CONFIG)
        self.log = log
        self.memo = Memo(state_dir + "/modem.json")
        self.at = at
        self.fresh = False  # the module booted while we watched: its volatile settings are factory defaults
        self.sim_ready = False
        self.registered = False
        self.cell = None  # (tac, ci) of the serving cell, from +CEREG (mode 2)
        self.resets = 0
        self._reg_ev = asyncio.Event()
        self._time = None  # (unix seconds, ticks_ms) of the last clock reading
        self.time_trusted = False
        at.urc(b"RDY", self._on_rdy)
        at.urc(b"POWERED DOWN", self._on_powered_down)
        at.urc(b"+CPIN:", self._on_cpin)
        at.urc(b"+CEREG:", self._on_cereg)
        for p in (b"+CFUN:", b"+QUSIM:", b"+QIND:", b"APP RDY"):
            at.urc(p, self._ignore)

    @classmethod
    def check_config(cls, cfg):
        """Cross-key rules of the tls section (ConfigError): a client certificate needs its key, and verifying
        the server needs the CA."""
        at_safe(cfg, _AT_KEYS)
        t = cfg["tls"]
        if not t["enabled"]:
            return
        if (t["cert"] is None) != (t["key"] is None):
            raise ConfigError("tls.key" if t["key"] is None else "tls.cert",
                              "a client certificate needs both tls.cert and tls.key")
        if t["seclevel"] is None and not t["ca"]:
            # no CA named and no seclevel said: never read as "do not verify"
            raise ConfigError("tls.ca", "is empty: name the CA file, or set tls.seclevel 0 to turn verification off")
        if _seclevel(t) and not t["ca"]:
            raise ConfigError("tls.ca", "is required to verify the server (tls.seclevel %d)" % _seclevel(t))

    # ---- URCs (called from the reader: quick, no awaits) -------------------------------------------------

    def _ignore(self, line):
        pass

    def _on_rdy(self, line):
        # A boot: every socket, MQTT client and volatile setting is gone; files and NV settings remain.
        self.fresh = True
        self.sim_ready = self.registered = False
        self.resets += 1
        self.at.echo = None
        self._event(md.RESET, self.resets)

    def _on_powered_down(self, line):
        self.registered = False
        self._event(md.DOWN)

    def _on_cpin(self, line):
        self.sim_ready = line.endswith(b"READY")
        if not self.sim_ready:
            self._event(md.SIM, line[7:].strip())

    def _on_cereg(self, line):
        self._reg(args(line), 0)
        self._reg_ev.set()

    def _reg(self, f, i):
        # +CEREG: [<n>,]<stat>[,<tac>,<ci>...] with <stat> at index i; returns the stat
        stat = to_int(f[i]) if len(f) > i else -1
        if len(f) > i + 2 and f[i + 1]:
            self.cell = (f[i + 1].decode(), f[i + 2].decode())
        was = self.registered
        self.registered = stat == 1 or stat == 5
        if was != self.registered:
            self._event(md.REG, stat)
        return stat

    # ---- bring-up ----------------------------------------------------------------------------------------

    def start(self, timeout_ms=30000):
        """Power the module if the board can, wait for RDY or an answer to AT, then echo off and the error
        mode (``modem.cmee``: 1 numeric, 2 text). Raises ModemNotResponding."""
        return md.guard(self._start(timeout_ms))

    async def _start(self, timeout_ms):
        board = self.board
        if board is not None and board.status() is False:
            await board.power_on()
        t0 = ticks_ms()
        tried_reset = False
        while True:
            try:
                await self.at.raw_cmd(b"AT", PROBE)
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
                raise md.ModemNotResponding("no answer to AT within %d s" % (timeout_ms // 1000))
        await self.at.cmd(b"ATE0")
        self.at.echo = False
        await self.at.cmd(b"AT+CMEE=%d" % self.mcfg["cmee"])

    def close(self):
        """Stop the AT engine and release the UART (the module itself is left as it is)."""
        self._event(md.CLOSED)
        self.at.close()

    def check_sim(self):
        """SIM ready, entering ``modem.pin`` when asked. A wrong PIN is never retried (it would lock the SIM)."""
        return md.guard(self._check_sim())

    async def _check_sim(self):
        pin = self.mcfg["pin"]
        for _ in range(20):
            if self.sim_ready:
                return
            try:
                lines = await self.at.cmd(b"AT+CPIN?", _CPIN)
            except CmeError as e:
                why = e.text.lower() if e.text else ""
                if e.code == 14 or "busy" in why:
                    await asyncio.sleep(1)
                    continue
                raise md.SimError("%s (+CME ERROR: %s)" % ("no SIM card" if e.code == 10 or "not inserted" in why
                                                           else "SIM failure", e.code or e.text), e.code) from None
            state = lines[0][7:].strip() if lines else b""
            if state == b"READY":
                self.sim_ready = True
                return
            if state == b"SIM PIN":
                if not pin:
                    raise md.SimError("the SIM needs a PIN and modem.pin is not set")
                pin_b = str(pin).encode()
                try:
                    await self.at.cmd(b"AT+CPIN=" + quote(pin_b, "modem.pin"), _LONG, None, (pin_b,))
                except CmeError as e:
                    raise md.SimError("the SIM refused modem.pin (+CME ERROR: %s); not retried" % (e.code or e.text),
                                      e.code) from None
                pin = None  # never send it twice
                await asyncio.sleep(0.5)
            elif state == b"SIM PUK":
                raise md.SimError("the SIM is locked and needs its PUK")
            else:
                await asyncio.sleep(1)
        raise md.SimError("the SIM did not become ready")

    def wait_registered(self, timeout_ms=None):
        """Wait until registered (home or roaming) using the +CEREG URCs, polling as a fallback. Returns the
        stat. Raises RegistrationError when denied or after ``modem.register_timeout_s``."""
        return md.guard(self._wait_registered(timeout_ms))

    async def _wait_registered(self, timeout_ms):
        if timeout_ms is None:
            timeout_ms = self.mcfg["register_timeout_s"] * 1000
        at = self.at
        await at.cmd(b"AT+CEREG=2")
        t0 = ticks_ms()
        while True:
            self._reg_ev.clear()
            stat = self._reg(first(await at.cmd(b"AT+CEREG?", _CEREG)), 1)
            if self.registered:
                return stat
            if stat == 3:
                raise md.RegistrationError("registration denied by the network (+CEREG stat 3)", 3)
            left = timeout_ms - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                raise md.RegistrationError("not registered after %d s (+CEREG stat %d)" % (timeout_ms // 1000, stat),
                                           stat)
            try:
                await asyncio.wait_for(self._reg_ev.wait(), min(left, 10000) / 1000)
            except asyncio.TimeoutError:
                pass

    async def signal(self):
        """What the driver's SIGNAL queries read ({"csq", "rssi", ...}, unknown values omitted) and the serving
        cell ("tac", "ci") from the last +CEREG, which costs no command."""
        out = {}
        at = self.at
        try:
            for c, spec, parse in self.SIGNAL:  # plain parsers: no coroutine per query (read every cycle)
                parse(out, first(await at.cmd(c, spec)))
        except AtError as e:
            raise md.modem_error(e) from None
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

    def read_clock(self):
        """Read +CCLK; returns Unix seconds (UTC) and sets ``time_trusted`` when the clock was set."""
        return md.guard(self._read_clock())

    async def _read_clock(self):
        lines = await self.at.cmd(b"AT+CCLK?", _CCLK)
        t = parse_modem_time(lines[0][6:]) if lines else None
        if t is not None:
            self._set_time(t)
        return t

    def sync_clock(self):
        """Make sure the module clock is right (TLS validity checks and cloud timestamps depend on it):
        +CCLK when the network already set it, else NTP (``modem.ntp_server``). Returns Unix seconds."""
        return md.guard(self._sync_clock())

    async def _sync_clock(self):
        t = await self._read_clock()
        if t is not None and t >= TRUSTED_AFTER:
            return t
        server = quote(self.mcfg["ntp_server"], "modem.ntp_server")
        _, res = await self.at.cmd_result(self._ntp_cmd(server, self.mcfg["ntp_port"]), _NTP, b"+QNTP:")
        f = args(res)
        t = parse_modem_time(f[1]) if len(f) > 1 and f[0] == b"0" else None
        if t is None:
            raise md.ModemError("network time failed: %s" % res.decode())
        self._set_time(t)
        return t

    def _ntp_cmd(self, server, port):
        return b"AT+QNTP=%d,%s,%d,1" % (self.pdp_cid(), server, port)

    def pdp_cid(self):
        return self.mcfg["pdp_cid"]

    # ---- certificates and SSL (the tls section) ----------------------------------------------------------

    def cert_files(self):
        """[(tls key, SSL item, flash path, PEM kind)] for tls.ca / tls.cert / tls.key (under tls.dir unless
        the name is absolute)."""
        t = self.tcfg
        d = t["dir"]
        out = []
        for key, item, kind in (("ca", "cacert", "cert"), ("cert", "clientcert", "cert"), ("key", "clientkey", "key")):
            name = t.get(key)
            if name:
                out.append((key, item, name if name[0] == "/" else d + "/" + name, kind))
        return out

    def seclevel(self):
        """tls.seclevel, by default 2 with a client certificate, else 1 (verify the server) when tls.ca is set."""
        return _seclevel(self.tcfg)

    def provision_certs(self):
        """Make the module hold exactly the certificates on flash (the flash copy is only ever read). Every PEM
        is validated first (CertError names the file); one the module already holds unchanged (remembered size
        and checksum, size confirmed by the module) is skipped; otherwise it is stored and verified by the
        driver's _put_cert, retried, then CertUploadError. Returns the bytes sent."""
        return md.guard(self._provision_certs())

    async def _provision_certs(self):
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
                raise md.CertUploadError("storing %s failed after 3 attempts: %s" % (name, why))
            sent += want[0]
            self.memo.set(memo, want)
        return sent

    def configure_ssl(self):
        """Configure the module's SSL context from the tls section (verification on by default)."""
        return md.guard(self._configure_ssl())


# the configuration strings that go into AT commands as quoted arguments
_AT_KEYS = ("modem.apn", "modem.apn_user", "modem.apn_pass", "modem.pin", "modem.ntp_server", "mqtt.host",
            "tls.ca", "tls.cert", "tls.key")


def _seclevel(t):
    level = t.get("seclevel")
    if level is None:
        level = 2 if t.get("cert") else (1 if t.get("ca") else 0)
    return level
