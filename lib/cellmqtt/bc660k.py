# Quectel BC660K-GL (NB-IoT) driver: sleep-aware AT (the module sleeps by default and loses the first byte
# after waking), the default PDP context cid 0, PSM/eDRX, certificates pushed inline into SSL context 0
# (length-verified, skipped when unchanged) and the native MQTT dialect (Bc660kMqtt). The raw TLS socket (the
# "socket" transport) is in bc660k_socket.py, which imports this module (never the other way).
# Facts: reference/quectel-bc660k.md (section numbers below), seed 004.
import asyncio
import binascii

from cellmqtt import modem as md
from cellmqtt import qmt, quectel
from cellmqtt.at_engine import AtCommandError, AtError, AtTimeout, Cmd, args, first, quote, to_int
from cellmqtt.compat import const, sleep_ms, ticks_diff, ticks_ms
from cellmqtt.qmt import ModuleRefused, NativeMqtt
from cellmqtt.settings import ConfigError, section
from cellmqtt.transport import NetworkError

# What the BC660K-GL reads beyond the shared Quectel keys (README "Configuration")
CONFIG = (quectel.CONFIG, {
    "modem": {"sleep": True, "wake_idle_ms": (1000, 0, 60000), "psm": dict, "edrx": str},
    "tls": {"version": (3, 1, 4), "negotiate_s": (90, 10, 300)},
})
SECRETS = ("modem.pin",)

# MQTT +CME error codes (section 4)
_MQTT_ERR = {8503: "link layer error", 8504: "illegal packet", 8505: "illegal character", 8506: "illegal UTF-8",
             8507: "invalid parameter", 8508: "data longer than the remaining buffer", 8509: "buffer overflow",
             8510: "out of memory", 8600: "unknown error"}

_PLAIN = Cmd()
_WAKE = Cmd(None, 600)  # a throw-away probe while the module wakes
_WAKE_PROBES = const(10)  # probes (600 ms each) with a back-off of 0.1 s doubling to 1 s between: ~13 s in all
_QCFG_RXD = Cmd(b'+QCFG: "wakeupRXD"')
_QSCLK0 = Cmd(None, 300, retry=1)  # the engine's wake hook probes first after idle
_QCGDEFCONT = Cmd(b"+QCGDEFCONT:")
_CGPADDR = Cmd(b"+CGPADDR:")
_QRST = Cmd(None, 3000)
_QSSLCFG_Q = Cmd(b"+QSSLCFG:")
_CLOSE = Cmd(None, 5000, result_ms=15000)
_QMTOPEN_Q = Cmd(b"+QMTOPEN:")
_CSQ = Cmd(b"+CSQ:")


class Bc660kMqtt(NativeMqtt):
    """BC660K-GL native MQTT (section 4): version 1 = 3.1.1, client 0..4, SSL context 0 / connection 0,
    length-prefixed +QMTRECV (showrecvlen), QMTOPEN up to 176 s.

    Publishing: the module loses every URC that arrives while it is in data mode (after ">", gate included), so
    an incoming command would be lost during each publish. With ``mqtt.inline`` (default) the payload travels
    hex-encoded inside the command line (form 3, "dataformat" send = hex): no data mode at all, binary-safe,
    up to 730 bytes. Without it: the fixed-length data-mode form after the 500 ms gate, up to 1460 bytes."""

    CONFIG = {"mqtt": dict(qmt.CONFIG["mqtt"], client=(0, 0, 4), inline=True)}
    VERSION = 1
    OPEN_MS = 176000
    MAX_PAYLOAD = 1460
    GATE_MS = 550
    PKT_TIMEOUT = 30
    RETRIES = 0

    def __init__(self, modem, config=None):
        super().__init__(modem, config)
        self.inline = section(config, "mqtt", self.CONFIG)["inline"]
        if self.inline:
            self.max_payload = 730

    def _ssl_cfg(self):
        return b'AT+QMTCFG="ssl",%d,1,0,0' % self.id

    def _cfg_commands(self, keepalive, clean):
        out = super()._cfg_commands(keepalive, clean)
        out.append(b'AT+QMTCFG="showrecvlen",%d,1' % self.id)
        if self.inline or not self.m.fresh:
            out.append(b'AT+QMTCFG="dataformat",%d,%d,0' % (self.id, 1 if self.inline else 0))
        return out

    def _pub_cmd(self, cmd, payload, fixed):
        if self.inline:
            return cmd + b',%d,"%s"' % (len(payload), binascii.hexlify(payload)), None
        return super()._pub_cmd(cmd, payload, fixed)

    def _error(self, e):
        if e.code in _MQTT_ERR:
            return (NetworkError if e.code == 8503 else ModuleRefused)(
                "module MQTT error: %s (+CME ERROR: %d)" % (_MQTT_ERR[e.code], e.code), e.code)
        return super()._error(e)

    async def connect(self, host, port, client_id, username=None, password=None, keepalive=120, clean=True):
        try:
            await super().connect(host, port, client_id, username, password, keepalive, clean)
        except ModuleRefused as e:
            if e.code != 3:
                raise
            # QMTOPEN on a stale client: "operation not allowed" -> close it and try once more
            await self._close()
            await super().connect(host, port, client_id, username, password, keepalive, clean)


def _csq_nb(out, f):
    out["act"] = "NB-IoT"
    quectel.csq(out, f)


class Bc660k(quectel.Quectel):
    CONFIG = CONFIG
    SECRETS = SECRETS
    NATIVE = Bc660kMqtt
    SOCKET = ("cellmqtt.bc660k_socket", "Bc660kTlsSocket")
    SIGNAL = ((b"AT+CSQ", _CSQ, _csq_nb),)
    RXBUF = 3072  # a hex-mode +QSSLURC carries 2 x 1400 characters
    GATE_MS = 550  # the module takes data only ~500 ms after its ">" prompt (section 1)
    PUSH_TIMEOUT_MS = 15000  # a 4 KB PEM takes 0.4 s at 115200 bit/s

    def __init__(self, at, board=None, config=None, log=None, state_dir="."):
        super().__init__(at, board, config, log, state_dir)
        self.psm = False
        self._awake = 0
        self._hold = False
        self._released = False
        self._sleep_ok = self.mcfg["sleep"]
        # AT+QSSLCFG=0,0,"<item>" by private key or not: ">", the gate, the PEM, Ctrl-Z
        self._push = tuple(Cmd(b"+QSSLCFG:", 5000, ctrlz=True, gate_ms=self.GATE_MS, data_ms=self.PUSH_TIMEOUT_MS,
                               secret_data=s) for s in (False, True))
        at.wake = self._wake
        self._idle()
        at.urc(b"+QNBIOTEVENT:", self._on_event_urc)

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        psm = cfg["modem"]["psm"]
        if psm and not (isinstance(psm.get("tau"), str) and isinstance(psm.get("active"), str)):
            raise ConfigError("modem.psm", 'must be {"tau": "<8 bits>", "active": "<8 bits>"} or false')

    def pdp_cid(self):
        return 0  # the default context, set up by the module from QCGDEFCONT (section 1)

    # ---- sleep (section 1) -----------------------------------------------------------------------------

    async def _wake(self, engine):
        # The first byte after sleep is lost and a command sent into deep sleep may vanish: throw-away AT
        # probes until one is answered, backing off (a module leaving deep sleep in PSM takes longer than one
        # leaving light sleep). Runs inside the engine (before a command after an idle period).
        pause = 100
        for _ in range(_WAKE_PROBES):
            try:
                await engine.raw_cmd(b"AT", _WAKE)
                return
            except AtTimeout:
                pass
            except AtCommandError:
                return  # a half-received probe: awake now
            await sleep_ms(pause)
            pause = min(pause * 2, 1000)
        if self.log:
            self.log("BC660K: no answer to wake probes")

    def _idle(self):
        # the module may sleep: probe it awake before a command after this much silence
        self.at.wake_idle_ms = self.mcfg["wake_idle_ms"]

    def _on_event_urc(self, line):
        self.psm = b"ENTER" in line
        self._event(md.PSM, self.psm)

    async def _start(self, timeout_ms):
        await super()._start(timeout_ms)
        await self.at.cmd(b"AT+QSCLK=0")  # stay awake through bring-up; allow_sleep() when idle
        self._awake = 1  # the bring-up's hold, counted like an awake() exchange
        self._hold = True
        self.at.wake_idle_ms = 0
        await self._wakeup_rxd()

    async def _wakeup_rxd(self):
        # Without AT+QCFG="wakeupRXD",1 the UART does not wake a sleeping module: after its first sleep it would
        # be unreachable. Stored in NV, effective after a restart: checked once per module, set and verified.
        if self.memo.matches("wakeup_rxd", 1):
            return
        try:
            f = first(await self.at.cmd(b'AT+QCFG="wakeupRXD"', _QCFG_RXD))
        except AtCommandError:
            if self.log:
                self.log('BC660K: this firmware has no AT+QCFG="wakeupRXD" (its UART wake cannot be checked)')
            self.memo.set("wakeup_rxd", 1)
            return
        if len(f) > 1 and f[1] == b"1":
            self.memo.set("wakeup_rxd", 1)
            return
        if self._rxd_set:
            raise md.ModemError('AT+QCFG="wakeupRXD" stays 0 after a restart: the module could not be woken by the UART')
        self._rxd_set = True
        if self.log:
            self.log('BC660K: wakeupRXD was off (the UART would not wake the module): set, restarting it')
        await self.at.cmd(b'AT+QCFG="wakeupRXD",1')
        await self._reboot()  # (its _start checks again)

    _rxd_set = False

    async def allow_sleep(self):
        """End the bring-up's hold: the module may sleep between exchanges again (``modem.sleep``, default on)
        once no awake() exchange is in progress (the last one to end sends AT+QSCLK=1)."""
        if self._hold and self._sleep_ok:
            self._hold = False
            await self._release()

    async def _release(self):
        # one holder (an awake() exchange, or the bring-up) done: the last one lets the module sleep again
        self._awake -= 1
        if self._awake == 0:
            if self._sleep_ok:
                # light sleep only (2), unless PSM is configured: 1 also allows the deep sleep PSM brings
                cmd = b"AT+QSCLK=1" if self.mcfg.get("psm") else b"AT+QSCLK=2"
                try:
                    await self.at.cmd(cmd)
                except AtError as e:
                    if self.log:
                        self.log("%s: %s" % (cmd.decode(), e))
                self._idle()
            else:
                self._awake = 1  # sleep disabled by config: stay awake

    def awake(self):
        """``async with modem.awake():`` wake the module (probing past the lost first byte) and keep it
        awake (AT+QSCLK=0) for a whole exchange; sleep is allowed again at the end."""
        return _Awake(self)

    # ---- PDP, PSM --------------------------------------------------------------------------------------

    def pdp_up(self):
        """Make sure the default PDP context (cid 0) uses ``modem.apn`` (AT+QCGDEFCONT, stored in NV: a change
        needs a reboot, done here) and return its IP address once attached (AT+CGPADDR=0)."""
        return md.guard(self._pdp_up())

    async def _pdp_up(self):
        apn = self.mcfg["apn"]
        if apn and not self.memo.matches("apn", apn):
            have = first(await self.at.cmd(b"AT+QCGDEFCONT?", _QCGDEFCONT))
            if len(have) < 2 or have[1].decode() != apn:
                await self.at.cmd(b'AT+QCGDEFCONT="IP",%s' % quote(apn, "modem.apn"))
                await self._reboot()
                await self._wait_registered(None)
            self.memo.set("apn", apn)
        for _ in range(30):
            f = first(await self.at.cmd(b"AT+CGPADDR=0", _CGPADDR))
            if len(f) > 1 and f[1]:
                return f[1].decode()
            await asyncio.sleep(1)
        raise md.PdpError("the default PDP context has no address (not attached)")

    def reboot(self):
        """AT+QRST=1 (reset without detach), wait for its RDY, start again and unlock the SIM (modem.pin);
        volatile settings are lost."""
        return md.guard(self._reboot())

    async def _reboot(self):
        n = self.resets  # counted by the RDY handler
        await self.at.cmd(b"AT+QRST=1", _QRST)
        t0 = ticks_ms()
        while self.resets == n:
            if ticks_diff(ticks_ms(), t0) > 20000:
                raise md.ModemNotResponding("no RDY within 20 s of AT+QRST")
            await asyncio.sleep(0.1)
        await self._start(30000)
        await self._check_sim()  # a restart locks a PIN SIM again: enter it before anything waits for the network

    def configure_power(self):
        """PSM (``modem.psm``: {"tau": "<8-bit T3412>", "active": "<8-bit T3324>"} or false to disable) and eDRX
        (``modem.edrx``: "<4-bit value>" or false); not configured is off: never left as the module came
        (a module shipped with PSM on loses its MQTT session at the end of every active timer). Applied when
        different from what was last applied."""
        return md.guard(self._configure_power())

    async def _configure_power(self):
        m = self.mcfg
        psm, edrx = want = [m.get("psm") or False, m.get("edrx") or False]
        if self.memo.matches("power", want):
            return
        at = self.at
        if psm:
            await at.cmd(b"AT+CPSMS=1,,,%s,%s" % (quote(psm["tau"], "modem.psm.tau"), quote(psm["active"], "modem.psm.active")))
            await at.cmd(b"AT+QNBIOTEVENT=1,1")
        else:
            await at.cmd(b"AT+CPSMS=2")  # off, the requested timers discarded (27.007 10.1.23)
        if edrx:
            await at.cmd(b"AT+CEDRXS=1,5,%s" % quote(edrx, "modem.edrx"))
        else:
            await at.cmd(b"AT+CEDRXS=0")
        self.memo.set("power", want)

    def _ntp_cmd(self, server, port):
        return b"AT+QNTP=0,%s,%d" % (server, port)

    # ---- certificates pushed inline into SSL context 0 (section 2), used by provision_certs --------------

    def _cert_name(self, key, item, path):
        return item

    async def _held(self):
        # AT+QSSLCFG=0,0 dumps every setting, including "cacert",<len> for each stored certificate
        out = {}
        for line in await self.at.cmd(b"AT+QSSLCFG=0,0", _QSSLCFG_Q):
            f = args(line)
            for i in range(len(f) - 1):
                if f[i] in (b"cacert", b"clientcert", b"clientkey"):
                    out[f[i].decode()] = to_int(f[i + 1])
        return out

    async def _put_cert(self, item, pem, secret, replace):
        # AT+QSSLCFG=0,0,"<item>": ">", the ~500 ms gate, the PEM, Ctrl-Z; the module answers with the length it
        # stored (0 = nothing), which must be what was sent. None when stored intact, else why not.
        f = first(await self.at.cmd(b'AT+QSSLCFG=0,0,"%s"' % item.encode(), self._push[bool(secret)], pem))
        n = to_int(f[-1]) if f else -1
        return None if n == len(pem) else "the module stored %d bytes of %d" % (n, len(pem))

    async def release(self):
        """Close what a previous run of the firmware left open in the module (after an MCU reset the module
        still holds it, and an open TLS socket or MQTT client locks the SSL settings: +CME ERROR: 3)."""
        at = self.at
        try:
            await at.cmd_result(b"AT+QSSLCLOSE=0,0", _CLOSE, b"+QSSLCLOSE: 0,0,")
        except AtError:
            pass  # nothing was open
        for line in await at.cmd(b"AT+QMTOPEN?", _QMTOPEN_Q):
            i = to_int(args(line)[0])
            try:
                await at.cmd_result(b"AT+QMTCLOSE=%d" % i, _CLOSE, b"+QMTCLOSE: %d," % i)
            except AtError as e:
                if self.log:
                    self.log("QMTCLOSE %d: %s" % (i, e))
        self._released = True

    async def _configure_ssl(self):
        """seclevel (1 verify the server, 2 with a client certificate), sslversion (3 = TLS 1.2) and timeout
        from the tls section; these settings are not kept by the module, so they are set each boot."""
        if not self.fresh and not self._released:
            await self.release()
        t = self.tcfg
        at = self.at
        await at.cmd(b'AT+QSSLCFG=0,0,"seclevel",%d' % self.seclevel())
        await at.cmd(b'AT+QSSLCFG=0,0,"sslversion",%d' % t["version"])
        to = t["negotiate_s"]
        if to != 90:
            await at.cmd(b'AT+QSSLCFG=0,0,"timeout",%d' % to)
        if self.seclevel() and self.log and not self._warned_host:
            # no SNI and no host-name check on the BC660K-GL (no source lists either; the BC66 answers ERROR to "sni")
            self._warned_host = True
            self.log("TLS: the server's chain is verified, its host name is not (the BC660K-GL cannot): tls.ca "
                     "should hold the cloud's own CA, not a public root")

    host_checked = False
    _warned_host = False


class _Awake:
    def __init__(self, modem):
        self.m = modem

    async def __aenter__(self):
        m = self.m
        m._awake += 1
        if m._awake == 1:
            try:
                await m.at.cmd(b"AT+QSCLK=0", _QSCLK0)
            except AtError as e:
                m._awake -= 1
                raise md.modem_error(e) from None
            m.at.wake_idle_ms = 0
        return m

    async def __aexit__(self, *exc):
        await self.m._release()
        return False


Driver = Bc660k  # modem.type "bc660k"
