"""Quectel BG96 (LTE Cat-M1/NB1) profile: UFS files, SSL contexts by file name, QSSL* sockets, QIACT PDP, QMT*.

Shapes from quectel-bg96.md and seed 001 (SSL manual); real-log quirks from transcripts.md T1/T2/T4.
Firmware (``--firmware``):

* ``BG96MAR02A07M1G`` (default, the V1.0-era firmware of T1): QMTPUB only in the Ctrl-Z form, no
  ``"recv/mode"``;
* ``BG96MAR02A08M1G`` or ``later`` (or any ``BG96MAR..A<nn>M1G`` with nn >= 08): adds the fixed-length
  ``AT+QMTPUB=...,"<topic>",<len>`` form (payload echoed when ATE1) and ``AT+QMTCFG="recv/mode"``
  (length field in +QMTRECV, or buffered mode read with AT+QMTRECV), both shown in ``AT+QMTCFG=?`` and
  ``AT+QMTPUB=?`` so a driver can probe for them.
"""

import datetime
import re
from typing import ClassVar

from .common import CommonCommands, decode_t3324, decode_t3412
from .core import UTC, AtError, CmeError, Modem, ParamError
from .faults import FaultError
from .mqtt_at import MqttCommands
from .network import BG96_ALL, CIPHERS, NetError, RawLink, TlsParams, open_connection
from .transcript import REDACTED, PemStream, apply_spans, line_spans, redact

UFS_TOTAL = 14_680_064  # bytes of UFS on the emulated module (an emulator choice; real parts vary)
UFS_MAX_FILES = 1000


def xor16(data):
    """QFUPL/QFDWL checksum: XOR of big-endian 16-bit words; odd last byte is a high byte (1234567890 -> 3938)."""
    x = 0
    n = len(data) - (len(data) % 2)
    mv = memoryview(data)
    for i in range(0, n, 2):
        x ^= (mv[i] << 8) | mv[i + 1]
    if len(data) % 2:
        x ^= data[-1] << 8
    return x


def is_later_firmware(fw):
    m = re.match(r"BG96MAR\d\dA(\d\d)", fw or "")
    return bool(m) and int(m.group(1)) >= 8


# Text of +CME ERROR codes in AT+CMEE=2 mode (27.007 and the FILE manual's wording).
CME_TEXT = {
    3: "operation not allowed", 4: "operation not supported", 10: "SIM not inserted", 11: "SIM PIN required",
    12: "SIM PUK required", 13: "SIM failure", 14: "SIM busy", 16: "incorrect password",
    30: "no network service", 31: "network timeout", 50: "incorrect parameters", 100: "unknown",
    400: "invalid input value", 401: "larger than the size of the file", 402: "read zero byte",
    403: "drive full", 405: "file not found", 406: "invalid file name", 407: "file already existed",
    409: "fail to write the file", 410: "fail to open the file", 411: "fail to read the file",
    413: "reach the max number of file allowed to be opened", 414: "the file read-only",
    416: "invalid file descriptor", 417: "fail to list the file", 418: "fail to delete the file",
    419: "fail to get disk info", 420: "no space", 421: "time out", 423: "file too large",
    425: "invalid parameter", 426: "file already opened",
}

IP_ERRORS = {
    0: "operation successful", 550: "unknown error", 551: "operation blocked", 552: "invalid parameter",
    553: "memory not enough", 554: "create socket failed", 555: "operation not supported",
    556: "socket bind failed", 557: "socket listen failed", 558: "socket write failed", 559: "socket read failed",
    560: "socket accept failed", 561: "open PDP context failed", 562: "close PDP context failed",
    563: "socket identity has been used", 564: "DNS busy", 565: "DNS parse failed", 566: "socket connect failed",
    567: "socket has been closed", 568: "operation busy", 569: "operation timeout", 570: "PDP context break down",
    571: "cancel send", 572: "operation not allowed", 573: "APN not configured", 574: "port busy",
}

SSL_DEFAULTS = {"sslversion": 4, "ciphersuite": 0xFFFF, "cacert": "", "clientcert": "", "clientkey": "",
                "seclevel": 0, "ignorelocaltime": 0, "negotiatetime": 300}

QCFG_DEFAULTS = {"nwscanmode": [0], "nwscanseq": ["020301"], "iotopmode": [2],
                 "band": ["0xf", "0x400a0e189f", "0xa0e189f"], "psm/urc": [0]}


class SslSocket:
    def __init__(self, client, pdp, ctx, host, port, mode):
        self.client, self.pdp, self.ctx, self.host, self.port, self.mode = client, pdp, ctx, host, port, mode
        self.state = 1  # 1 opening, 2 connected, 4 closing
        self.link = None
        self.rxbuf = bytearray()
        self.notified = False
        self.local_port = 0
        self.token = 0


class Bg96(MqttCommands, CommonCommands, Modem):
    PROFILE = "bg96"
    MODEL = "BG96"
    DEFAULT_FIRMWARE = "BG96MAR02A08M1G"
    ACT = 8
    MANUFACTURER = "Quectel"
    MODEL_NAME = "BG96"
    CCLK_QUOTED = True
    CID_MIN, CID_MAX = 1, 16
    AUTH_MAX = 3
    NTP_NO_PDP = 561
    CME_TEXT = CME_TEXT
    UNSUPPORTED = frozenset({"QRST", "QNBIOTEVENT", "QCGDEFCONT"})
    LATENCY: ClassVar[dict] = {
        "fast": {"boot": 0.15, "reset": 0.3, "boot_urc_gap": 0.05, "reg": 0.3, "pdp": 0.1, "ntp": 0.1,
                 "cops_scan": 0.3, "cmd": 0.0, "cfun": 0.05, "wake": 0.05, "sleep_idle": 2.0,
                 "prompt_gate": 0.5, "open_idle": 5.0, "data_idle": 0.0, "plus_guard": 1.0, "uart_bps": 115200, "net_timeout": 20.0},
        "realistic": {"boot": 4.5, "reset": 6.0, "boot_urc_gap": 1.5, "reg": 8.0, "pdp": 1.5, "ntp": 2.0,
                      "cops_scan": 45.0, "cmd": 0.02, "cfun": 1.5, "wake": 0.1, "sleep_idle": 5.0,
                      "prompt_gate": 0.5, "open_idle": 5.0, "data_idle": 0.0, "plus_guard": 1.0,
                      "uart_bps": 115200, "net_timeout": 75.0},
    }
    # Firmware switches (--set KEY=1), for the behaviours public sources report without naming a revision:
    #   qmtopen_silent     AT+QMTOPEN? gets no answer at all while a client is open (LooUQ LTEmC ltemc-mqtt.c:457
    #                      "BGx modules will not respond over serial to AT+QMTOPEN?")
    #   pub_test_bracket   AT+QMTPUB=? shows the length field as [(1-1548)] (an unidentified Quectel capture)
    #   pub_fixed_refused  the fixed-length QMTPUB form is listed but answered ERROR (inferred: a driver must not
    #                      trust the test form alone)
    LATENCY = {k: dict(v, qmtopen_silent=0, pub_test_bracket=0, pub_fixed_refused=0) for k, v in LATENCY.items()}
    MQTT_CLIENTS = 6
    MQTT_MAX_PAYLOAD = 1548
    MQTT_QUERY_NAMES = True
    MQTT_OPEN_IDLE_CODE = 1

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        if self.firmware.lower() == "later":
            self.firmware = "BG96MAR02A08M1G"
        self.later_fw = is_later_firmware(self.firmware)
        if not self.lat["data_idle"]:
            self.lat["data_idle"] = None  # 0: BG96 stays in data mode until Ctrl-Z/Esc (no documented timeout)

    # ---- volatile state ----
    def reset_volatile(self):
        super().reset_volatile()
        self.ssl_ctx = [dict(SSL_DEFAULTS) for _ in range(6)]
        self.ssl_socks = {}
        self.ip_error = 0
        self.dns = {}
        self.sclk = 0

    def boot_urcs(self):
        urcs = [(0, b"RDY")]
        gap = self.lat["boot_urc_gap"]
        urcs.append((gap, b"+CFUN: 1"))
        if self.sim == "READY":
            urcs += [(gap, b"+CPIN: READY"), (gap * 1.2, b"+QUSIM: 1"), (gap * 2, b"+QIND: SMS DONE")]
        elif self.sim == "SIM PIN":
            urcs += [(gap, b"+CPIN: SIM PIN"), (gap * 1.2, b"+QUSIM: 1")]
        return urcs

    def persist_basic(self):
        pass  # BG96 keeps ATE/CMEE only with AT&W

    def active_pdp_cids(self):
        return sorted(self.pdp_active)

    def on_reset_pdp_lost(self, cids):
        for cid in cids:
            self.urc('+QIURC: "pdpdeact",%d' % cid)  # T1: arrives during the reset, before RDY

    def close_network(self):
        super().close_network()
        for s in getattr(self, "ssl_socks", {}).values():
            s.token += 1
            if s.link:
                s.link.close()
        self.ssl_socks = {}

    def on_deregistered(self):
        pass  # LTE keeps the PDP context through a short coverage loss

    def drop_links_on_coverage_loss(self):
        for c in self.mqtt:
            if c.state != "closed":
                self.mqtt_close_with(c.idx, 2)

    def on_radio_off(self):
        for cid in list(self.pdp_active):
            self._deactivate(cid, urc=True)

    # ---- PDP ----
    def at_QICSGP(self, c, r):
        defs = dict(self.pdp_defs())
        if c.kind == "test":
            r.info('+QICSGP: (1-%d),(1-3),"APN","USERNAME","PASSWORD",(0-%d)' % (self.CID_MAX, self.AUTH_MAX))
            return
        if c.kind != "write":
            raise AtError()
        cid = c.int(0, 1, self.CID_MAX)
        if c.n == 1:
            d = defs.get(str(cid), {"type": "IP", "apn": "", "user": "", "pass": "", "auth": 0})
            typ = {"IP": 1, "IPV6": 2, "IPV4V6": 3}.get(d["type"], 1)
            line = ('+QICSGP: %d,"%s","%s","%s",%d' % (typ, d["apn"], d["user"], d["pass"], d["auth"])).encode("latin-1")
            # the password is a secret: the transcript shows the line without user/password
            render = apply_spans(line, [s for s in _qicsgp_query_spans(line)])
            r.info(line, render)
            return
        typ = c.int(1, 1, 3)
        apn = c.str(2, default="", maxlen=100)
        user = c.str(3, default="", maxlen=127)
        pw = c.str(4, default="", maxlen=127)
        auth = c.int(5, 0, self.AUTH_MAX, default=0)
        defs[str(cid)] = {"type": {1: "IP", 2: "IPV6", 3: "IPV4V6"}[typ], "apn": apn, "user": user, "pass": pw,
                          "auth": auth}
        self.store.set("pdp", defs)

    async def at_QIACT(self, c, r):
        if c.kind == "test":
            r.info("+QIACT: (1-%d)" % self.CID_MAX)
            return
        if c.kind == "read":
            for cid in sorted(self.pdp_active):
                r.info('+QIACT: %d,1,1,"%s"' % (cid, self.pdp_active[cid]))
            return
        if c.kind != "write":
            raise AtError()
        cid = c.int(0, 1, self.CID_MAX)
        if cid in self.pdp_active:
            self.ip_error = 561
            raise AtError("already active")  # quectel-bg96.md section 3: ERROR on an active context
        if not self.registered():
            await self._sleep(self.lat["pdp"])
            self.ip_error = 561
            raise AtError("not registered")
        await self._sleep(self.lat["pdp"])
        if not self.registered():
            self.ip_error = 561
            raise AtError("lost registration")
        self.pdp_active[cid] = "10.%d.%d.%d" % (100 + cid, (self.gen * 7) % 250 + 1, 17)
        self.ip_error = 0
        self.counters["pdp_activations"] += 1
        self.fire("pdp_active")

    async def at_QIDEACT(self, c, r):
        if c.kind == "test":
            r.info("+QIDEACT: (1-%d)" % self.CID_MAX)
            return
        if c.kind != "write":
            raise AtError()
        cid = c.int(0, 1, self.CID_MAX)
        await self._sleep(self.lat["pdp"] / 2)
        self._deactivate(cid, urc=False)

    def _deactivate(self, cid, urc):
        if cid not in self.pdp_active:
            return
        del self.pdp_active[cid]
        if urc:
            self.urc('+QIURC: "pdpdeact",%d' % cid)
        for cl in self.mqtt_clients_on_cid(cid):
            self.mqtt_close_with(cl.idx, 1)
        for s in list(self.ssl_socks.values()):
            if s.pdp == cid and s.state != 4:
                self._ssl_peer_closed(s)

    def at_QIDNSCFG(self, c, r):
        if c.kind != "write":
            raise AtError()
        cid = c.int(0, 1, self.CID_MAX)
        if c.n == 1:
            pri, sec = self.dns.get(cid, ("8.8.8.8", "8.8.4.4"))
            r.info('+QIDNSCFG: %d,"%s","%s"' % (cid, pri, sec))
            return
        if cid not in self.pdp_active:
            raise AtError("context not active")
        self.dns[cid] = (c.str(1), c.str(2, default="0.0.0.0"))

    def at_QIGETERROR(self, c, r):
        r.info("+QIGETERROR: %d,%s" % (self.ip_error, IP_ERRORS.get(self.ip_error, "unknown error")))

    # ---- network info / time / PSM ----
    def at_QCSQ(self, c, r):
        r.info('+QCSQ: "CAT-M1",-65,-90,150,-10' if self.registered() else '+QCSQ: "NOSERVICE"')

    def at_QNWINFO(self, c, r):
        if self.registered():
            r.info('+QNWINFO: "CAT-M1","%s","LTE BAND 20",6300' % self.OPERATOR_NUMERIC)
        else:
            r.info("+QNWINFO: No Service")

    def at_QLTS(self, c, r):
        mode = c.int(0, 0, 2, default=0) if c.kind == "write" else 0
        if c.kind == "test":
            r.info("+QLTS: (0-2)")
            return
        if mode == 0:
            if self.nitz is None:
                r.info('+QLTS: ""')
                return
            t, tz_q = self.nitz
            local = t + datetime.timedelta(minutes=15 * tz_q)
            r.info('+QLTS: "%s%+03d,0"' % (local.strftime("%Y/%m/%d,%H:%M:%S"), tz_q))
            return
        now = self.clock.now()
        if mode == 2:
            now = now + datetime.timedelta(minutes=15 * self.clock.tz_q)
        r.info('+QLTS: "%s%+03d,0"' % (now.strftime("%Y/%m/%d,%H:%M:%S"), self.clock.tz_q))

    def at_QPSMS(self, c, r):
        if c.kind != "read":
            raise AtError()
        tau = decode_t3412(self.psms["tau"])
        act = decode_t3324(self.psms["active"])
        r.info('+QPSMS: %d,,,"%s","%s"' % (self.psms["mode"], tau if tau is not None else "",
                                            act if act is not None else ""))

    def at_QSCLK(self, c, r):
        if c.kind == "read":
            r.info("+QSCLK: %d" % self.sclk)
        elif c.kind == "test":
            r.info("+QSCLK: (0,1)")
        elif c.kind == "write":
            self.sclk = c.int(0, 0, 1)  # BG96 sleeps only with DTR high; the emulated DTR is always low
        else:
            raise AtError()

    def at_QCFG(self, c, r):
        if c.kind == "test":
            r.info('+QCFG: "nwscanmode",(0,1,3),(0,1)')
            r.info('+QCFG: "nwscanseq",(00-030201),(0,1)')
            r.info('+QCFG: "iotopmode",(0-2),(0,1)')
            r.info('+QCFG: "band",<gsmbandval>,<catm1bandval>,<nb1bandval>,(0,1)')
            r.info('+QCFG: "psm/urc",(0,1)')
            return
        if c.kind != "write":
            raise AtError()
        item = c.item(0)
        qcfg = dict(QCFG_DEFAULTS)
        qcfg.update(self.store.get("qcfg", {}))
        if item not in QCFG_DEFAULTS:
            raise AtError("unknown QCFG item")
        if c.n == 1:
            vals = qcfg[item]
            r.info('+QCFG: "%s",%s' % (item, ",".join(str(v) for v in vals)))
            return
        if item == "nwscanmode":
            v = c.int(1)
            if v not in (0, 1, 3):
                raise ParamError("mode")
            qcfg[item] = [v]
        elif item == "iotopmode":
            qcfg[item] = [c.int(1, 0, 2)]
        elif item == "psm/urc":
            qcfg[item] = [c.int(1, 0, 1)]
        elif item == "nwscanseq":
            v = c.str(1)
            if not re.fullmatch(r"(0[0-3]){1,3}", v):
                raise ParamError("scan sequence")
            qcfg[item] = [v]
        elif item == "band":
            vals = [c.str(i) for i in (1, 2, 3)]
            for v in vals:
                if not re.fullmatch(r"(0x)?[0-9a-fA-F]+", v):
                    raise ParamError("band mask")
            qcfg[item] = ["0x" + v.lower().replace("0x", "") for v in vals]
        if c.has(len(QCFG_DEFAULTS[item]) + 1 if item != "band" else 4):
            c.int(len(QCFG_DEFAULTS[item]) + 1 if item != "band" else 4, 0, 1)  # <effect>: accepted
        saved = self.store.get("qcfg", {})
        saved = dict(saved)
        saved[item] = qcfg[item]
        self.store.set("qcfg", saved)

    # ---- UFS ----
    @staticmethod
    def _ufs_name(s):
        name = s[4:] if s.upper().startswith("UFS:") else s
        if not name or len(name) > 80 or any(ch in name for ch in '\\/:*?"<>|') or name.upper().startswith("RAM:"):
            raise CmeError(406)
        return name

    async def at_QFUPL(self, c, r):
        if c.kind == "test":
            r.info('+QFUPL: "<filename>",(1-%d),(1-65535),(0,1)' % UFS_TOTAL)
            return
        if c.kind != "write":
            raise AtError()
        name = self._ufs_name(c.str(0))
        size = c.int(1, 1, UFS_TOTAL, default=10240)
        timeout = c.int(2, 1, 65535, default=5)
        ack = c.int(3, 0, 1, default=0)
        if name in self.store.files:
            raise CmeError(407)  # quectel-bg96.md section 4: delete first
        if len(self.store.files) >= UFS_MAX_FILES:
            raise CmeError(403)
        if size > self._ufs_free():
            raise CmeError(420)
        r.flush(b"\r\nCONNECT\r\n")
        self.hold_urcs = True
        # A file named like a key is redacted whole in the transcript; any other keeps PEM key bodies out.
        log = "all" if "key" in name.lower() else PemStream()
        # ends on the size, the idle timeout or "+++": in every case what arrived is stored and reported
        data, _how = await self.read_data("QFUPL", exact=size, idle=float(timeout), plus_abort=True,
                                         ack_every=1024 if ack else None, log=log)
        data = bytearray(data)
        if self.armed_corrupt and data:
            self.armed_corrupt -= 1
            pos = len(data) // 2
            data[pos] ^= 0x01
            self.tr.event("fault corrupt_upload: byte %d of %s flipped before storing" % (pos, name))
        self.store.put_file(name, bytes(data))
        self.counters["upload_bytes"] += len(data)
        self.counters["uploads"] += 1
        r.info("+QFUPL: %d,%x" % (len(data), xor16(bytes(data))))
        self.fire("upload_done")

    def _ufs_free(self):
        return UFS_TOTAL - sum(len(v) for v in self.store.files.values())

    def at_QFDWL(self, c, r):
        if c.kind == "test":
            r.info('+QFDWL: "<filename>"')
            return
        if c.kind != "write":
            raise AtError()
        name = self._ufs_name(c.str(0))
        if name not in self.store.files:
            raise CmeError(405)
        data = self.store.files[name]
        if "key" in name.lower():
            render = [REDACTED]
        else:
            ps = PemStream()
            render = ps.feed(data) + ps.finish()
        r.raw(b"\r\nCONNECT\r\n")
        r.raw(data, render)
        r.info("+QFDWL: %d,%x" % (len(data), xor16(data)))

    def at_QFLST(self, c, r):
        if c.kind == "test":
            return
        pattern = c.str(0, default="*") if c.kind == "write" else "*"
        pat = pattern[4:] if pattern.upper().startswith("UFS:") else pattern
        regex = re.compile("^" + re.escape(pat).replace("\\*", ".*").replace("\\?", ".") + "$")
        for name in sorted(self.store.files):
            if regex.match(name):
                r.info('+QFLST: "%s",%d' % (name, len(self.store.files[name])))

    def at_QFDEL(self, c, r):
        if c.kind == "test":
            return
        if c.kind != "write":
            raise AtError()
        pattern = c.str(0)
        pat = pattern[4:] if pattern.upper().startswith("UFS:") else pattern
        if pat == "*":
            for name in list(self.store.files):
                self.store.delete_file(name)
            return
        name = self._ufs_name(pattern)
        if name not in self.store.files:
            raise CmeError(405)
        self.store.delete_file(name)

    def at_QFLDS(self, c, r):
        if c.kind == "test":
            r.info('+QFLDS: ("UFS")')
            return
        used = sum(len(v) for v in self.store.files.values())
        if c.kind == "write":
            if c.str(0).upper() != "UFS":
                raise CmeError(425)
            r.info("+QFLDS: %d,%d" % (UFS_TOTAL - used, UFS_TOTAL))
        else:
            r.info("+QFLDS: %d,%d" % (used, len(self.store.files)))

    # ---- SSL contexts ----
    def at_QSSLCFG(self, c, r):
        if c.kind == "test":
            r.info('+QSSLCFG: "sslversion",(0-5),(0-4)')
            r.info('+QSSLCFG: "ciphersuite",(0-5),(%s)' % ",".join("0X%04X" % k for k in list(CIPHERS) + [0xFFFF]))
            r.info('+QSSLCFG: "cacert",(0-5),<cacertpath>')
            r.info('+QSSLCFG: "clientcert",(0-5),<client_cert_path>')
            r.info('+QSSLCFG: "clientkey",(0-5),<client_key_path>')
            r.info('+QSSLCFG: "seclevel",(0-5),(0-2)')
            r.info('+QSSLCFG: "ignorelocaltime",(0-5),(0,1)')
            r.info('+QSSLCFG: "negotiatetime",(0-5),(10-300)')
            return
        if c.kind != "write":
            raise AtError()
        spelled = c.str(0)
        item = spelled.lower()
        key = "seclevel" if item in ("seclevel", "secllevel") else item  # the seed manual spells it "secllevel"
        if key not in SSL_DEFAULTS:
            raise AtError("unknown SSL item")
        ctx_id = c.int(1, 0, 5)
        ctx = self.ssl_ctx[ctx_id]
        if c.n == 2:
            v = ctx[key]
            if key == "ciphersuite":
                shown = "0X%04X" % v
            elif key in ("cacert", "clientcert", "clientkey"):
                shown = '"%s"' % v
            else:
                shown = str(v)
            r.info('+QSSLCFG: "%s",%d,%s' % (spelled, ctx_id, shown))
            return
        if key == "sslversion":
            ctx[key] = c.int(2, 0, 4)
        elif key == "ciphersuite":
            v = c.int(2)
            if v != 0xFFFF and v not in CIPHERS:
                raise AtError("cipher suite")
            ctx[key] = v
        elif key in ("cacert", "clientcert", "clientkey"):
            ctx[key] = c.str(2, maxlen=80)
        elif key == "seclevel":
            ctx[key] = c.int(2, 0, 2)
        elif key == "ignorelocaltime":
            ctx[key] = c.int(2, 0, 1)
        elif key == "negotiatetime":
            ctx[key] = c.int(2, 10, 300)

    def tls_from_ctx(self, ctx_id, hostname):
        ctx = self.ssl_ctx[ctx_id]

        def file(path):
            if not path:
                return None
            name = path[4:] if path.upper().startswith("UFS:") else path
            return self.store.files.get(name)

        if self.opts.tls_ciphers:
            ciphers = self.opts.tls_ciphers
        elif ctx["ciphersuite"] == 0xFFFF:
            ciphers = ":".join(CIPHERS[k] for k in BG96_ALL)
        else:
            ciphers = CIPHERS[ctx["ciphersuite"]]
        return TlsParams(
            seclevel=ctx["seclevel"], ca_pem=file(ctx["cacert"]), cert_pem=file(ctx["clientcert"]),
            key_pem=file(ctx["clientkey"]), version=ctx["sslversion"], ciphers=ciphers,
            check_time=None if ctx["ignorelocaltime"] else self.clock.now().astimezone(UTC),
            hostname=hostname if self.opts.check_hostname else None, tmpdir=self.opts.tmpdir)

    # ---- SSL sockets ----
    def at_QSSLOPEN(self, c, r):
        if c.kind == "test":
            r.info("+QSSLOPEN: (1-16),(0-5),(0-11),<serveraddr>,<server_port>[,(0-2)]")
            return
        if c.kind != "write":
            raise AtError()
        pdp = c.int(0, 1, self.CID_MAX)
        ctx = c.int(1, 0, 5)
        client = c.int(2, 0, 11)
        host = c.str(3, maxlen=150)
        port = c.int(4, 1, 65535)
        mode = c.int(5, 0, 2, default=0)
        if mode == 2:
            self.ip_error = 555
            raise AtError("transparent mode is not emulated")
        if client in self.ssl_socks:
            self.ip_error = 563
            raise AtError("client id in use")
        s = SslSocket(client, pdp, ctx, host, port, mode)
        self.ssl_socks[client] = s
        self.ip_error = 0
        r.after.append(lambda: self.loop.create_task(self._ssl_open(s)))

    async def _ssl_open(self, s):
        token, gen = s.token, self.gen
        if s.pdp not in self.pdp_active:
            self._ssl_open_failed(s, 561)
            return
        tls = self.tls_from_ctx(s.ctx, s.host)
        fail = self.armed_tls.pop(0) if self.armed_tls else None
        try:
            sock = await self.loop.run_in_executor(
                None, lambda: open_connection(self.resolver, s.host, s.port, tls, self.lat["net_timeout"], fail))
        except NetError as e:
            if gen == self.gen and s.token == token:
                self.tr.event("QSSLOPEN %d failed: %s" % (s.client, e))
                if e.kind.startswith("tls"):
                    self.counters["tls_failures"] += 1
                self._ssl_open_failed(s, {"dns": 565, "timeout": 569}.get(e.kind, 566))
            return
        if gen != self.gen or s.token != token:
            sock.close()
            return
        self.counters["tls_handshakes"] += 1
        s.local_port = sock.getsockname()[1]
        s.link = RawLink(self.loop, sock, lambda d: self._ssl_data(s, token, d), lambda: self._ssl_closed(s, token))
        s.state = 2
        self.urc("+QSSLOPEN: %d,0" % s.client)
        self.fire("ssl_opened")

    def _ssl_open_failed(self, s, code):
        self.ip_error = code
        self.ssl_socks.pop(s.client, None)
        self.urc("+QSSLOPEN: %d,%d" % (s.client, code))

    def _ssl_data(self, s, token, data):
        if s.token != token:
            return
        self.counters["ssl_rx_bytes"] += len(data)
        if s.mode == 1:  # direct push
            for i in range(0, len(data), 1500):
                part = data[i:i + 1500]
                head = b'+QSSLURC: "recv",%d,%d\r\n' % (s.client, len(part))
                self.urc(head + part, [head] + redact(part))
            return
        s.rxbuf += data
        if not s.notified:
            s.notified = True
            self.urc('+QSSLURC: "recv",%d' % s.client)

    def _ssl_closed(self, s, token):
        if s.token != token:
            return
        self._ssl_peer_closed(s)

    def _ssl_peer_closed(self, s):
        s.state = 4
        if s.link:
            s.link.close()
        self.urc('+QSSLURC: "closed",%d' % s.client)

    async def at_QSSLSEND(self, c, r):
        if c.kind == "test":
            r.info("+QSSLSEND: (0-11)[,(1-1460)]")
            return
        if c.kind != "write":
            raise AtError()
        client = c.int(0, 0, 11)
        length = c.int(1, 1, 1460, default=None)
        s = self.ssl_socks.get(client)
        if s is None or s.state != 2:
            self.ip_error = 567 if s else 552
            raise AtError("not connected")
        await self.prompt(r)
        if length is None:
            data, how = await self.read_data("QSSLSEND", ctrlz=True)
        else:
            data, how = await self.read_data("QSSLSEND", exact=length)
        if how == "esc":
            return
        if how == "overflow" or len(data) > 1460:
            raise AtError("too long")
        if s.state != 2 or not s.link.send(data):
            self.ip_error = 567
            raise AtError("connection closed")
        self.counters["ssl_tx_bytes"] += len(data)
        r.final = b"SEND OK"

    def at_QSSLRECV(self, c, r):
        if c.kind == "test":
            r.info("+QSSLRECV: (0-11),(1-1500)")
            return
        if c.kind != "write":
            raise AtError()
        client = c.int(0, 0, 11)
        n = c.int(1, 1, 1500)
        s = self.ssl_socks.get(client)
        if s is None or (s.state != 2 and not s.rxbuf):
            raise AtError("not connected")
        data = bytes(s.rxbuf[:n])
        del s.rxbuf[:n]
        if not s.rxbuf:
            s.notified = False  # the next arrival is announced again
        head = b"\r\n+QSSLRECV: %d\r\n" % len(data)
        if data:
            r.raw(head + data + b"\r\n", [head] + redact(data) + [b"\r\n"])
        else:
            r.raw(head)

    def at_QSSLCLOSE(self, c, r):
        if c.kind == "test":
            r.info("+QSSLCLOSE: (0-11),(0-65535)")
            return
        if c.kind != "write":
            raise AtError()
        client = c.int(0, 0, 11)
        c.int(1, 0, 65535, default=10)
        s = self.ssl_socks.pop(client, None)
        if s is not None:
            s.token += 1
            if s.link:
                s.link.close()

    def at_QSSLSTATE(self, c, r):
        if c.kind == "test":
            return
        if c.kind == "write":
            clients = [c.int(0, 0, 11)]
        else:
            clients = sorted(self.ssl_socks)
        for cl in clients:
            s = self.ssl_socks.get(cl)
            if s is None:
                continue
            r.info('+QSSLSTATE: %d,"SSLClient","%s",%d,%d,%d,%d,%d,%d,"uart1",%d' % (
                s.client, s.host, s.port, s.local_port, s.state, s.pdp, s.client, s.mode, s.ctx))

    # ---- MQTT profile hooks ----
    def mqtt_cfg_defaults(self):
        return {"version": 3, "pdpcid": 1, "ssl": [0, 0], "keepalive": 120, "session": 1, "timeout": [5, 3, 0],
                "will": None, "recv/mode": [0, 0]}

    def mqtt_cfg_spec(self):
        spec = {"version": [(3, 4, None)], "pdpcid": [(1, 16, None)], "ssl": [(0, 1, None), (0, 5, None)],
                "keepalive": [(0, 3600, None)], "session": [(0, 1, None)],
                "timeout": [(1, 60, None), (0, 10, None), (0, 1, None)], "will": None}
        if self.later_fw:
            spec["recv/mode"] = [(0, 1, None), (0, 1, None)]
        return spec

    def mqtt_cfg_test_lines(self):
        n = self.MQTT_CLIENTS - 1
        lines = ['+QMTCFG: "version",(0-%d),(3,4)' % n, '+QMTCFG: "pdpcid",(0-%d),(1-16)' % n,
                 '+QMTCFG: "ssl",(0-%d),(0,1),(0-5)' % n, '+QMTCFG: "keepalive",(0-%d),(0-3600)' % n,
                 '+QMTCFG: "session",(0-%d),(0,1)' % n, '+QMTCFG: "timeout",(0-%d),(1-60),(0-10),(0,1)' % n,
                 '+QMTCFG: "will",(0-%d),(0,1),(0-2),(0,1),<will_topic>,<will_message>' % n]
        if self.later_fw:
            lines.append('+QMTCFG: "recv/mode",(0-%d),(0,1),(0,1)' % n)
        return lines

    def at_QMTOPEN(self, c, r):
        if c.kind == "read" and self.lat.get("qmtopen_silent") and any(cl.state != "closed" for cl in self.mqtt):
            r.swallowed = True  # no answer over the UART while a client is open (LTEmC)
            self.tr.event("AT+QMTOPEN? not answered (qmtopen_silent)")
            return
        super().at_QMTOPEN(c, r)

    def mqtt_pub_test_lines(self):
        if self.later_fw:
            field = "[(1-%d)]" if self.lat.get("pub_test_bracket") else "(1-%d)"
            return ["+QMTPUB: (0-5),<msgid>,(0-2),(0,1),<topic>," + field % self.MQTT_MAX_PAYLOAD]
        return ["+QMTPUB: (0-5),<msgid>,(0-2),(0,1),<topic>"]

    def mqtt_v311(self, cfg):
        return cfg["version"] == 4

    def mqtt_network_ready(self, cfg):
        return cfg["pdpcid"] in self.pdp_active

    def mqtt_tls(self, cfg, host):
        if not cfg["ssl"][0]:
            return None
        return self.tls_from_ctx(cfg["ssl"][1], host)

    def mqtt_pub_form(self, c):
        if c.n == 5:
            return "ctrlz", None, None
        if c.n == 6 and self.later_fw and not self.lat.get("pub_fixed_refused"):
            return "len", c.int(5, 1, self.MQTT_MAX_PAYLOAD), None
        raise ParamError("QMTPUB form not supported by this firmware")

    def mqtt_echo_payload(self, cfg, payload, form):
        # later firmware echoes the fixed-length payload when ATE1 (quectel-bg96.md: "may echo")
        if self.later_fw and self.echo and form == "len":
            self.emit(payload, redact(payload))

    def mqtt_deliver(self, client, cfg, mid, topic, payload):
        mode, with_len = cfg["recv/mode"] if self.later_fw else (0, 0)
        if mode == 0:
            data, render = self.mqtt_recv_line(client, cfg, mid, topic, payload, bool(with_len))
            self.urc(data, render)
            return
        for slot in range(5):
            if slot not in client.recv_slots:
                client.recv_slots[slot] = (mid, topic, payload)
                self.urc("+QMTRECV: %d,%d" % (client.idx, slot))
                return
        self.counters["qmtrecv_dropped"] += 1
        self.tr.event("QMTRECV buffer of client %d full: message dropped" % client.idx)

    def at_QMTRECV(self, c, r):
        if not self.later_fw:
            raise AtError()
        if c.kind == "test":
            r.info("+QMTRECV: (0-5),(0-4)")
            return
        if c.kind == "read":
            for cl in self.mqtt:
                if cl.state != "closed":
                    r.info("+QMTRECV: %d,%s" % (cl.idx, ",".join("1" if s in cl.recv_slots else "0" for s in range(5))))
            return
        if c.kind != "write":
            raise AtError()
        client, cfg = self._client(c, 0)
        slots = [c.int(1, 0, 4)] if c.has(1) else sorted(client.recv_slots)
        for slot in slots:
            if slot in client.recv_slots:
                mid, topic, payload = client.recv_slots.pop(slot)
                data, render = self.mqtt_recv_line(client, cfg, mid, topic, payload, bool(cfg["recv/mode"][1]))
                r.info(data, render)

    # ---- faults ----
    def profile_action(self, a):
        name = a["action"]
        if name == "pdp_lost":
            cids = [a["cid"]] if a["cid"] is not None else sorted(self.pdp_active)[:1]
            for cid in cids:
                self._deactivate(int(cid), urc=True)
        elif name == "registration_lost":
            self.lose_registration(int(a["stat"]), a["recover_s"], bool(a["drop_links"]), a.get("cause"))
        elif name == "ssl_closed":
            s = self.ssl_socks.get(int(a["client"]))
            if s is None or s.state != 2:
                raise FaultError("ssl_closed: SSL client %s is not connected" % a["client"])
            self._ssl_peer_closed(s)
        elif name == "psm":
            self.power_off(b"PSM POWER DOWN")
            self.power = "psm"
        elif name == "wake":
            if self.power == "psm":
                self.power_cycle("wake")
        else:
            super().profile_action(a)

    # ---- control socket ----
    def state(self):
        s = super().state()
        s["files"] = [{"name": n, "size": len(d), "checksum": "%x" % xor16(d)} for n, d in sorted(self.store.files.items())]
        s["ssl"] = {str(i): dict(ctx) for i, ctx in enumerate(self.ssl_ctx)}
        s["ssl_sockets"] = {str(k): {"state": v.state, "host": v.host, "port": v.port, "buffered": len(v.rxbuf)}
                            for k, v in self.ssl_socks.items()}
        s["qcfg"] = dict(QCFG_DEFAULTS, **self.store.get("qcfg", {}))
        return s


def _qicsgp_query_spans(line):
    """'+QICSGP: 1,"apn","user","pass",0' -> spans of user and password."""
    fake = b"AT+QICSGP=0," + line[len(b"+QICSGP: "):]
    off = len(b"AT+QICSGP=0,") - len(b"+QICSGP: ")
    return [(s - off, e - off) for s, e in line_spans(fake)]
