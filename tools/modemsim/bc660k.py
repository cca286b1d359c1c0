"""Quectel BC660K-GL (NB-IoT) profile: sleep, inline certificates, QSSL* on ctx 0/conn 0, default PDP cid 0.

Shapes from quectel-bc660k.md and seed 004 (SSL application note); T6 (BC66 certificate push gone wrong)
and T7 (hex data format) from transcripts.md. What differs from the BG96 (see that profile):

* sleep is on by default (``+QSCLK: 1``, not kept in NVRAM): after ``sleep_idle`` seconds without UART
  traffic the module sleeps; the first byte it then receives is lost (it only wakes the module) and a
  command missing its first byte gets ``\\r\\n`` after the wake-up time instead of an answer;
* after a ``>`` prompt the first ``prompt_gate`` (500 ms) of input is lost, and URCs that happen while the
  host is typing payload are lost;
* certificates are pushed inline (``AT+QSSLCFG=0,0,"cacert"`` -> ``>`` PEM Ctrl-Z ->
  ``+QSSLCFG: 0,0,"cacert",<stored length>``) and kept in NVRAM; ``0`` means nothing was stored;
* ATE and CMEE are kept in NVRAM as soon as they are set; bad parameters give ``+CME ERROR: 50``;
* the default bearer (cid 0) comes up with registration; there is no QIACT;
* MQTT: clients 0..4, query replies without the option name, QMTCFG settings locked once opened,
  three QMTPUB forms, hex data format, ``+QMTSTAT: <id>,7`` when an OPEN is not followed by a CONN.
"""

import base64
import datetime
from typing import ClassVar

from .common import CommonCommands, decode_t3324, decode_t3412
from .core import UTC, AtError, CmeError, Modem, ParamError
from .faults import FaultError
from .mqtt_at import MqttCommands
from .network import BC660K_SUITES, CIPHERS, NetError, RawLink, TlsParams, open_connection
from .transcript import redact, redact_hex

CME_TEXT = {
    3: "operation not allowed", 4: "operation not supported", 10: "SIM not inserted", 11: "SIM PIN required",
    16: "Incorrect password", 30: "No network service", 50: "Incorrect parameters", 100: "Unknown",
    301: "internal error", 302: "ue busy", 303: "ue not power on", 304: "pdn not active",
    602: "no rrc connection",
}

CERT_ITEMS = ("cacert", "clientcert", "clientkey")
# PSM as a module in the field was found (a public field capture: +CPSMS: 1,,,"01000001","00100011",
# T3412 10 h, T3324 3 min): what --psm-shipped puts in NV
SHIPPED_PSM = {"mode": 1, "tau": "01000001", "active": "00100011"}
CERT_MAX = 4096  # bytes per certificate/key; an emulator limit (the notes give none)
SSL_DEFAULTS = {"seclevel": 0, "sslversion": 4, "dataformat": [0, 0], "timeout": 90, "debug": 0, "dtls": 0,
                "dtlsversion": 2}


class Bc660k(MqttCommands, CommonCommands, Modem):
    PROFILE = "bc660k"
    MODEL = "BC660K-GL"
    DEFAULT_FIRMWARE = "BC660KGLAAR01A05"
    ACT = 9
    MANUFACTURER = "Quectel_Ltd"
    MODEL_NAME = "Quectel_BC660K-GL"
    CCLK_QUOTED = False  # the manual prints +CCLK: 20/11/03,06:25:06+32
    TAC, CI = "0001", "0000ABCD"
    CID_MIN, CID_MAX = 0, 10
    NTP_NO_PDP = 304
    CME_TEXT = CME_TEXT
    HAS_SLEEP = True
    PROMPT_GATE = True
    URCS_LOST_IN_DATA_MODE = True
    CLOCK_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=UTC)  # RTC after power-on, before any time sync
    POWER_DOWN_TEXT = None
    UNSUPPORTED = frozenset({
        "CREG", "CGREG", "QIACT", "QIDEACT", "QICSGP", "QIDNSCFG", "QIGETERROR", "QFUPL", "QFDWL", "QFLST", "QFDEL",
        "QFLDS", "QLTS", "QCSQ", "QNWINFO", "QPSMS", "QSSLRECV", "QSSLSTATE", "QMTRECV",
    })
    LATENCY: ClassVar[dict] = {
        "fast": {"boot": 0.15, "reset": 0.3, "boot_urc_gap": 0.05, "reg": 0.3, "pdp": 0.1, "ntp": 0.1,
                 "cops_scan": 0.3, "cmd": 0.0, "cfun": 0.05, "wake": 0.1, "sleep_idle": 2.0,
                 "prompt_gate": 0.5, "open_idle": 5.0, "data_idle": 60.0, "plus_guard": 1.0, "uart_bps": 115200, "net_timeout": 20.0,
                 "cert_echo": 1, "psm_scale": 1 / 60.0},
        "realistic": {"boot": 6.0, "reset": 9.0, "boot_urc_gap": 0.5, "reg": 15.0, "pdp": 0.5, "ntp": 2.0,
                      "cops_scan": 60.0, "cmd": 0.03, "cfun": 3.0, "wake": 1.8, "sleep_idle": 5.0,
                      "prompt_gate": 0.5, "open_idle": 5.5, "data_idle": 60.0, "plus_guard": 1.0,
                      "uart_bps": 115200, "net_timeout": 90.0, "cert_echo": 1, "psm_scale": 1.0},
    }
    MQTT_CLIENTS = 5
    MQTT_MAX_PAYLOAD = 1460
    MQTT_QUERY_NAMES = False
    MQTT_OPEN_IDLE_CODE = 7
    MQTT_TOPIC_MAX = 256
    MQTT_CLIENTID_MAX = 128

    # ---- state ----
    def reset_volatile(self):
        super().reset_volatile()
        self.sclk = 1  # sleep on by default; not saved (quectel-bc660k.md section 1)
        self.ssl = {k: (list(v) if isinstance(v, list) else v) for k, v in SSL_DEFAULTS.items()}
        self.ssl_sock = None
        self.nbiotevent = [0, 1]
        self.cgerep = 0
        # AT+QCFG="wakeupRXD": NV, takes effect at the next boot (kivancsikert/ugly-duckling's BC660K driver:
        # "saved to NVRAM, but only takes effect after a restart"); the factory value is --wakeup-rxd
        self.wakeup_rxd = int(self.store.get("wakeuprxd", getattr(self.opts, "wakeup_rxd", 1)))
        saved = self.store.get("cpsms")
        if saved is None and getattr(self.opts, "psm_shipped", False):
            saved = dict(SHIPPED_PSM)
        if saved is not None:
            self.psms = dict(saved)
        self.deep = False  # asleep in deep sleep (PSM with QSCLK=1): the UART is off
        self.in_psm = False
        self._psm_timer = None  # (a later() timer: the previous power-on's is void)

    def persist_basic(self):
        self.store.set("echo", self.echo)
        self.store.set("cmee", self.cmee)

    def param_error(self):
        return CmeError(50)

    def boot_urcs(self):
        return [(0, b"RDY")]

    def sleep_enabled(self):
        return self.sclk in (1, 2) and self.power == "on"

    def certs(self):
        return self.store.get("certs", {})

    def cert(self, item):
        v = self.certs().get(item)
        return base64.b64decode(v) if v else None

    def pdp_defs(self):
        defs = dict(self.store.get("pdp", {}))
        apn = self.store.get("qcgdefcont", {"type": "IP", "apn": ""})
        defs.setdefault("0", {"type": apn["type"], "apn": apn["apn"], "user": "", "pass": "", "auth": 0})
        return defs

    def on_registered(self):
        if 0 not in self.pdp_active:
            self.pdp_active[0] = "100.68.%d.220" % (114 + self.gen % 100)
            if self.cgerep:
                self.urc("+CGEV: ME PDN ACT 0")
            self.fire("pdp_active")

    def on_radio_off(self):
        self._pdn_lost(urc=False)

    def drop_links_on_coverage_loss(self):
        for c in self.mqtt:
            if c.state != "closed":
                self.mqtt_close_with(c.idx, 2)
        if self.ssl_sock is not None:
            self._ssl_peer_closed()

    def _pdn_lost(self, urc=True):
        if 0 not in self.pdp_active:
            return
        del self.pdp_active[0]
        if urc and self.cgerep:
            self.urc("+CGEV: NW PDN DEACT 0")
        for cl in self.mqtt:
            if cl.state != "closed":
                self.mqtt_close_with(cl.idx, 1)
        if self.ssl_sock is not None:
            self._ssl_peer_closed()

    def active_pdp_cids(self):
        return sorted(self.pdp_active)

    def close_network(self):
        super().close_network()
        s = getattr(self, "ssl_sock", None)
        if s is not None:
            s["token"] = -1
            if s["link"]:
                s["link"].close()
        self.ssl_sock = None

    def command_reset(self):
        self.loop.call_soon(self.power_cycle, "reset")  # no POWERED DOWN on this module

    def clean_reset(self):
        self.loop.call_soon(self.power_cycle, "reset")

    # ---- module-specific commands ----
    def at_QRST(self, c, r):
        if c.kind == "test":
            r.info("+QRST: (1)")
            return
        if c.kind != "write" or c.int(0) != 1:
            raise ParamError("QRST=1 only")
        r.after.append(self.command_reset)

    def at_QSCLK(self, c, r):
        if c.kind == "read":
            r.info("+QSCLK: %d" % self.sclk)
        elif c.kind == "test":
            r.info("+QSCLK: (0-2)")
        elif c.kind == "write":
            self.sclk = c.int(0, 0, 2)
            self._rearm_sleep()
        else:
            raise AtError()

    def at_CESQ(self, c, r):
        # 27.007 extended signal quality: GSM/UMTS fields unknown (99/255), RSRQ 0..34, RSRP 0..97 (255 = unknown)
        if c.kind == "test":
            r.info("+CESQ: (0-63,99),(0-7,99),(0-96,255),(0-49,255),(0-34,255),(0-97,255)")
            return
        if c.kind != "exec":
            raise AtError()
        r.info("+CESQ: 99,99,255,255,%s" % ("18,40" if self.registered() else "255,255"))

    def at_QNBIOTEVENT(self, c, r):
        if c.kind == "read":
            r.info("+QNBIOTEVENT: %d,%d" % tuple(self.nbiotevent))
        elif c.kind == "test":
            r.info("+QNBIOTEVENT: (0,1),(1)")
        elif c.kind == "write":
            self.nbiotevent = [c.int(0, 0, 1), c.int(1, 1, 1, default=1)]
        else:
            raise AtError()

    def at_CGEREP(self, c, r):
        if c.kind == "read":
            r.info("+CGEREP: %d,0" % self.cgerep)
        elif c.kind == "test":
            r.info("+CGEREP: (0,1),(0)")
        elif c.kind == "write":
            self.cgerep = c.int(0, 0, 1)
        else:
            raise AtError()

    def at_QCGDEFCONT(self, c, r):
        if c.kind == "read":
            d = self.store.get("qcgdefcont", {"type": "IP", "apn": ""})
            r.info('+QCGDEFCONT: "%s","%s"' % (d["type"], d["apn"]))
        elif c.kind == "test":
            r.info('+QCGDEFCONT: ("IP","IPV6","IPV4V6","Non-IP"),"APN"')
        elif c.kind == "write":
            typ = c.str(0).upper()
            if typ not in ("IP", "IPV6", "IPV4V6", "NON-IP"):
                raise ParamError("pdp type")
            self.store.set("qcgdefcont", {"type": typ, "apn": c.str(1, default="", maxlen=99)})  # NV, next boot
        else:
            raise AtError()

    def at_QCFG(self, c, r):
        if c.kind == "test":
            r.info('+QCFG: "dsevent",(0,1)')
            r.info('+QCFG: "wakeupRXD",(0,1)')
            return
        item = c.item(0) if c.kind == "write" else None
        if item == "dsevent":
            if c.n == 1:
                r.info('+QCFG: "dsevent",%d' % self.store.get("dsevent", 0))
            else:
                self.store.set("dsevent", c.int(1, 0, 1))
        elif item == "wakeuprxd":
            # NV; the query shows what is stored, which takes effect at the next boot (AT+QRST=1)
            if c.n == 1:
                r.info('+QCFG: "wakeupRXD",%d' % int(self.store.get("wakeuprxd", self.wakeup_rxd)))
            else:
                self.store.set("wakeuprxd", c.int(1, 0, 1))
        else:
            raise CmeError(50)

    # ---- PSM (BC660K-GL Hardware Design 3.4: the modem enters PSM when T3324 expires; deep sleep only in
    # PSM; wake by PSM_EINT, by T3412, or -- when wakeupRXD is on -- by a falling edge on MAIN_RXD) ----
    def at_CPSMS(self, c, r):
        super().at_CPSMS(c, r)
        if c.kind == "write":
            self.store.set("cpsms", dict(self.psms))  # NV (inferred: the capture's module had it after a restart)
            self._arm_psm()

    def _arm_psm(self):
        if self._psm_timer is not None:
            self.cancel_later(self._psm_timer)
            self._psm_timer = None
        if self.psms["mode"] != 1 or self.in_psm or self.power != "on" or not self.registered():
            return
        act = decode_t3324(self.psms["active"])
        if act is None:
            return
        self._psm_timer = self.later(max(0.05, act * self.lat["psm_scale"]), self._enter_psm)  # volatile

    def _enter_psm(self):
        self._psm_timer = None
        if self.power != "on" or self.in_psm:
            return
        self.in_psm = True
        self.counters["psm_entries"] += 1
        self.tr.event("T3324 expired: PSM")
        if self.nbiotevent[0]:
            self.urc('+QNBIOTEVENT: "ENTER PSM"')
        # inferred: the broker drops a session whose keep-alive goes unanswered in PSM; collapsed to PSM entry
        for idx, cl in enumerate(self.mqtt):
            if cl.state != "closed":
                self.mqtt_close_with(idx, 1)
        self.close_network()
        if self.sclk == 1 and self.data_mode is None:
            self.asleep = True  # deep sleep: only PSM_EINT, T3412 or (wakeupRXD 1) the UART wakes it
            self.deep = True
            self.counters["sleeps"] += 1
            self.fire("sleep")
        tau = decode_t3412(self.psms["tau"])
        if tau:
            self.later(tau * self.lat["psm_scale"], self._leave_psm, "T3412")  # (later(): cancelled at power-off)

    def _leave_psm(self, why):
        if not self.in_psm or self.power != "on":
            return
        self.in_psm = False
        self.deep = False
        self.asleep = False
        self.tr.event("PSM left (%s)" % why)
        if self.nbiotevent[0]:
            self.urc('+QNBIOTEVENT: "EXIT PSM"')
        self._arm_psm()
        self._rearm_sleep()

    def fire(self, event):
        super().fire(event)
        if event in ("mqtt_connected", "mqtt_published", "mqtt_received", "ssl_opened", "registered"):
            self._arm_psm()  # network activity: T3324 starts again after it

    def uart_wake_allowed(self):
        return bool(self.wakeup_rxd)

    def on_uart_wake(self):
        if self.in_psm:
            self._leave_psm("UART")  # inferred: the host talks because it has something to send

    # ---- SSL configuration ----
    def _ssl_ids(self, c):
        ctx = c.int(0, 0, 10)
        conn = c.int(1, 0, 4)
        if ctx != 0 or conn != 0:
            raise CmeError(50)  # only context 0 / connection 0 exist (seed 004)

    async def at_QSSLCFG(self, c, r):
        if c.kind == "test":
            for line in ('"seclevel",(0-2)', '"sslversion",(1-4)', '"dataformat",(0,1),(0,1)', '"timeout",(10-300)',
                         '"debug",(0-4)', '"cacert"', '"clientcert"', '"clientkey"', '"dtls",(0,1)',
                         '"dtlsversion",(0-2)'):
                r.info("+QSSLCFG: (0),(0),%s" % line)
            return
        if c.kind != "write":
            raise AtError()
        self._ssl_ids(c)
        if c.n == 2:
            for line in self._ssl_dump():
                r.info(line)
            return
        item = c.item(2)
        if item in CERT_ITEMS:
            if c.n > 3:
                raise CmeError(50)
            await self._push_cert(item, r)
            return
        if item not in SSL_DEFAULTS:
            raise AtError("unsupported SSL option")  # T6: "sni" -> ERROR
        if c.n == 3:
            v = self.ssl[item]
            r.info('+QSSLCFG: 0,0,"%s",%s' % (item, ",".join(map(str, v)) if isinstance(v, list) else v))
            return
        if self.ssl_sock is not None and item in ("seclevel", "sslversion", "dtls", "dtlsversion"):
            raise CmeError(3)
        if item == "seclevel":
            self.ssl[item] = c.int(3, 0, 2)
        elif item == "sslversion":
            self.ssl[item] = c.int(3, 1, 4)
        elif item == "dataformat":
            self.ssl[item] = [c.int(3, 0, 1), c.int(4, 0, 1)]
        elif item == "timeout":
            self.ssl[item] = c.int(3, 10, 300)
        elif item == "debug":
            self.ssl[item] = c.int(3, 0, 4)
        elif item == "dtls":
            self.ssl[item] = c.int(3, 0, 1)
        elif item == "dtlsversion":
            self.ssl[item] = c.int(3, 0, 2)

    def _ssl_dump(self):
        s = self.ssl
        lines = ['+QSSLCFG: 0,0,"seclevel",%d' % s["seclevel"], '+QSSLCFG: 0,0,"sslversion",%d' % s["sslversion"],
                 '+QSSLCFG: 0,0,"dataformat",%d,%d' % tuple(s["dataformat"]), '+QSSLCFG: 0,0,"timeout",%d' % s["timeout"],
                 '+QSSLCFG: 0,0,"debug",%d' % s["debug"]]
        for item in CERT_ITEMS:
            v = self.cert(item)
            lines.append('+QSSLCFG: 0,0,"%s",%d' % (item, len(v) if v else 0))
        lines += ['+QSSLCFG: 0,0,"dtls",%d' % s["dtls"], '+QSSLCFG: 0,0,"dtlsversion",%d' % s["dtlsversion"]]
        return lines

    async def _push_cert(self, item, r):
        self.data_redact_all = item == "clientkey"  # also for bytes dropped around the prompt
        await self.prompt(r, label="QSSLCFG " + item)
        data, how = await self.read_data("QSSLCFG " + item, ctrlz=True, idle=self.lat["data_idle"],
                                         log="all" if item == "clientkey" else "unit")
        if self.lat["cert_echo"] and data:
            # the module shows what it was given after ">" whatever ATE says (BC660K-GL&BC950K-GL MQTT
            # Application Note V1.2, 6.2); a private key's echo is redacted in the transcript
            self.emit(data, [b"<echo of the %s: %d bytes, redacted>" % (item.encode(), len(data))]
                      if item == "clientkey" else None)
        if how == "esc":
            return  # cancelled: nothing stored, the old one stays
        if how in ("timeout", "overflow"):
            raise CmeError(50)
        if len(data) > CERT_MAX:
            raise CmeError(50)
        certs = dict(self.certs())
        certs[item] = base64.b64encode(data).decode()
        self.store.set("certs", certs)
        self.counters["cert_bytes"] += len(data)
        self.counters["cert_pushes"] += 1
        r.info('+QSSLCFG: 0,0,"%s",%d' % (item, len(data)))
        self.fire("cert_stored")

    def tls_params(self, hostname):
        s = self.ssl
        return TlsParams(
            seclevel=s["seclevel"], ca_pem=self.cert("cacert"), cert_pem=self.cert("clientcert"),
            key_pem=self.cert("clientkey"), version=s["sslversion"],
            ciphers=self.opts.tls_ciphers or ":".join(CIPHERS[k] for k in BC660K_SUITES),
            check_time=self.clock.now().astimezone(UTC),  # no ignorelocaltime item on this module
            hostname=hostname if self.opts.check_hostname else None, tmpdir=self.opts.tmpdir)

    @staticmethod
    def tls_error_code(e):
        return {"dns": -2, "refused": -2, "io": -2, "timeout": -7, "tls_cert": -3, "tls_expired": -3,
                "tls_rejected": -3, "tls_key": -4, "tls_cipher": -5, "tls_version": -9,
                "tls_handshake": -1}.get(e.kind, -9)

    # ---- SSL socket ----
    def at_QSSLOPEN(self, c, r):
        if c.kind == "test":
            r.info("+QSSLOPEN: (0),(0),<host_name>,(1-65535),(0)")
            return
        if c.kind == "read":
            return
        if c.kind != "write":
            raise AtError()
        self._ssl_ids(c)
        host = c.str(2, maxlen=150)
        port = c.int(3, 1, 65535)
        mode = c.int(4, 0, 1, default=0)
        if mode != 0:
            raise CmeError(4)  # transparent mode: "not supported currently" (seed 004)
        if self.ssl_sock is not None:
            raise CmeError(3)
        s = {"host": host, "port": port, "link": None, "state": "opening", "token": self.gen * 1000 + 1}
        self.ssl_sock = s
        r.after.append(lambda: self.loop.create_task(self._ssl_open(s)))

    async def _ssl_open(self, s):
        token, gen = s["token"], self.gen
        if self.ssl["dtls"]:
            self._ssl_open_done(s, -9)
            self.tr.event("QSSLOPEN: DTLS is not emulated")
            return
        if 0 not in self.pdp_active:
            self._ssl_open_done(s, -2)
            return
        tls = self.tls_params(s["host"])
        fail = self.armed_tls.pop(0) if self.armed_tls else None
        timeout = min(float(self.ssl["timeout"]), self.lat["net_timeout"])
        try:
            sock = await self.loop.run_in_executor(
                None, lambda: open_connection(self.resolver, s["host"], s["port"], tls, timeout, fail))
        except NetError as e:
            if gen == self.gen and s["token"] == token:
                self.tr.event("QSSLOPEN failed: %s" % e)
                if e.kind.startswith("tls"):
                    self.counters["tls_failures"] += 1
                self._ssl_open_done(s, self.tls_error_code(e))
            return
        if gen != self.gen or s["token"] != token:
            sock.close()
            return
        self.counters["tls_handshakes"] += 1
        s["link"] = RawLink(self.loop, sock, lambda d: self._ssl_data(s, token, d), lambda: self._ssl_closed(s, token))
        s["state"] = "connected"
        self._ssl_open_done(s, 0)

    def _ssl_open_done(self, s, err):
        if err != 0:
            self.ssl_sock = None
        self.urc("+QSSLOPEN: 0,0,%d" % err)
        if err == 0:
            self.fire("ssl_opened")

    def _ssl_data(self, s, token, data):
        if s["token"] != token:
            return
        self.counters["ssl_rx_bytes"] += len(data)
        hexmode = self.ssl["dataformat"][1] == 1
        for i in range(0, len(data), 1400):
            part = data[i:i + 1400]
            head = b'+QSSLURC: "recv",0,0,%d,"' % len(part)
            body = part.hex().encode() if hexmode else part
            render = [head] + (redact_hex(body) if hexmode else redact(body)) + [b'"']
            self.urc(head + body + b'"', render)

    def _ssl_closed(self, s, token):
        if s["token"] != token:
            return
        self._ssl_peer_closed()

    def _ssl_peer_closed(self):
        s = self.ssl_sock
        if s is None:
            return
        s["token"] = -1
        if s["link"]:
            s["link"].close()
        self.ssl_sock = None  # closed by the module itself: no QSSLCLOSE needed (seed 004 2.4.2)
        self.urc('+QSSLURC: "closed",0,0')

    async def at_QSSLSEND(self, c, r):
        if c.kind == "test":
            r.info("+QSSLSEND: (0),(0),(1-1024)")
            return
        if c.kind == "read":
            return
        if c.kind != "write":
            raise AtError()
        self._ssl_ids(c)
        length = c.int(2, 1, 1024, default=None)
        s = self.ssl_sock
        if s is None or s["state"] != "connected":
            raise CmeError(3)
        hexmode = self.ssl["dataformat"][0] == 1
        await self.prompt(r)
        if length is None:
            data, how = await self.read_data("QSSLSEND", ctrlz=True, idle=self.lat["data_idle"], hexmode=hexmode)
        else:
            data, how = await self.read_data("QSSLSEND", exact=length * 2 if hexmode else length,
                                             idle=self.lat["data_idle"], hexmode=hexmode)
        if how == "esc":
            return
        if how in ("timeout", "overflow"):
            raise CmeError(50)
        if hexmode:
            try:
                data = bytes.fromhex(data.decode("ascii"))
            except ValueError:
                raise CmeError(50) from None
        if len(data) > 1024:
            raise CmeError(50)
        ok = self.ssl_sock is s and s["link"].send(data)
        if ok:
            self.counters["ssl_tx_bytes"] += len(data)
        r.after.append(lambda: self.urc("+QSSLSEND: 0,0,%d" % (0 if ok else -2)))

    def at_QSSLCLOSE(self, c, r):
        if c.kind == "test":
            r.info("+QSSLCLOSE: (0),(0)")
            return
        if c.kind == "read":
            return
        if c.kind != "write":
            raise AtError()
        self._ssl_ids(c)
        s = self.ssl_sock
        err = 0 if s is not None else -6
        if s is not None:
            s["token"] = -1
            if s["link"]:
                s["link"].close()
            self.ssl_sock = None
        r.after.append(lambda: self.urc("+QSSLCLOSE: 0,0,%d" % err))

    # ---- MQTT profile hooks ----
    def mqtt_cfg_defaults(self):
        return {"will": None, "timeout": [30, 0, 0], "session": 1, "keepalive": 120, "version": 0,
                "showrecvlen": 0, "echomode": 0, "dataformat": [0, 0], "ssl": [0, 0, 0]}

    def mqtt_cfg_spec(self):
        return {"will": None, "timeout": [(1, 60, None), (0, 10, None), (0, 1, None)], "session": [(0, 1, None)],
                "keepalive": [(0, 3600, None)], "version": [(0, 1, None)], "showrecvlen": [(0, 1, None)],
                "echomode": [(0, 1, None)], "dataformat": [(0, 1, None), (0, 1, None)],
                "ssl": [(0, 1, None), (0, 0, None), (0, 0, None)]}

    def mqtt_cfg_test_lines(self):
        n = self.MQTT_CLIENTS - 1
        return ['+QMTCFG: "will",(0-%d),(0,1),(0-2),(0,1),<will_topic>,<will_message>' % n,
                '+QMTCFG: "timeout",(0-%d),(1-60),(0-10),(0,1)' % n, '+QMTCFG: "session",(0-%d),(0,1)' % n,
                '+QMTCFG: "keepalive",(0-%d),(0-3600)' % n, '+QMTCFG: "version",(0-%d),(0,1)' % n,
                '+QMTCFG: "showrecvlen",(0-%d),(0,1)' % n, '+QMTCFG: "echomode",(0-%d),(0,1)' % n,
                '+QMTCFG: "dataformat",(0-%d),(0,1),(0,1)' % n, '+QMTCFG: "ssl",(0-%d),(0,1),(0),(0)' % n]

    def mqtt_pub_test_lines(self):
        return ["+QMTPUB: (0-4),<msgid>,(0-2),(0,1),<topic>,(1-1460),<msg>"]

    def mqtt_cfg_locked(self, item, client):
        # "will/session/keepalive/version/ssl must be set before AT+QMTOPEN" (quectel-bc660k.md section 4)
        return item in ("will", "session", "keepalive", "version", "ssl") and client.state != "closed"

    def mqtt_state_error(self):
        return CmeError(3)

    def mqtt_param_error(self):
        return CmeError(8507)

    def mqtt_inflight_error(self):
        return CmeError(8509)

    def mqtt_payload_error(self):
        return CmeError(8508)

    def mqtt_open_busy(self, client, r):
        raise CmeError(3)  # "QMTOPEN on a stale client may give +CME ERROR: operation not allowed"

    def mqtt_v311(self, cfg):
        return cfg["version"] == 1

    def mqtt_network_ready(self, cfg):
        return 0 in self.pdp_active and self.registered()

    def mqtt_tls(self, cfg, host):
        return self.tls_params(host) if cfg["ssl"][0] else None

    def mqtt_send_hex(self, cfg):
        return cfg["dataformat"][0] == 1

    def mqtt_max_payload(self, cfg):
        return 730 if cfg["dataformat"][0] == 1 else self.MQTT_MAX_PAYLOAD

    def mqtt_pub_form(self, c):
        if c.n == 5:
            return "ctrlz", None, None
        if c.n == 6:
            return "len", c.int(5, 1, self.MQTT_MAX_PAYLOAD), None
        if c.n == 7:
            length = c.int(5, 1, self.MQTT_MAX_PAYLOAD)
            msg = c.str(6, quoted=True)
            if len(msg) != length and not (self.mqtt_send_hex_any() and len(msg) == 2 * length):
                raise CmeError(8507)
            return "inline", length, msg
        raise CmeError(8507)

    def mqtt_send_hex_any(self):
        return any(cfg["dataformat"][0] for cfg in self.mqtt_cfg)

    def mqtt_echo_payload(self, cfg, payload, form):
        if cfg["echomode"]:
            self.emit(payload, redact(payload))

    def mqtt_deliver(self, client, cfg, mid, topic, payload):
        data, render = self.mqtt_recv_line(client, cfg, mid, topic, payload, bool(cfg["showrecvlen"]),
                                           hexmode=cfg["dataformat"][1] == 1)
        self.urc(data, render)

    # ---- faults ----
    def profile_action(self, a):
        name = a["action"]
        if name == "pdp_lost":
            self._pdn_lost(urc=True)
            self.later(1.0, self._reattach)
        elif name == "registration_lost":
            self.lose_registration(int(a["stat"]), a["recover_s"], bool(a["drop_links"]), a.get("cause"))
        elif name == "ssl_closed":
            if self.ssl_sock is None or self.ssl_sock["state"] != "connected":
                raise FaultError("ssl_closed: no SSL connection")
            self._ssl_peer_closed()
        elif name == "psm":
            if self.nbiotevent[0]:
                self.urc('+QNBIOTEVENT: "ENTER PSM"')
            self.close_network()
            if self.proc:
                self.proc.cancel()
                self.proc = None
            self.power = "psm"
            self.tr.event("power: PSM")
        elif name == "wake" and self.power == "on" and (self.asleep or self.in_psm):
            self.asleep = False  # PSM_EINT: wakes it from any sleep
            self.deep = False
            self._leave_psm("PSM_EINT")
            self._rearm_sleep()
        elif name == "wake":
            if self.power == "psm":
                self.power = "on"
                self.proc = self.loop.create_task(self._processor())
                if self.nbiotevent[0]:
                    self.urc('+QNBIOTEVENT: "EXIT PSM"')
                self._rearm_sleep()
        else:
            super().profile_action(a)

    def _reattach(self):
        if self.registered():
            self.on_registered()

    # ---- control socket ----
    def state(self):
        s = super().state()
        s["certs"] = {item: len(self.cert(item) or b"") for item in CERT_ITEMS}
        s["ssl"] = dict(self.ssl)
        s["ssl_socket"] = None if self.ssl_sock is None else {"state": self.ssl_sock["state"],
                                                              "host": self.ssl_sock["host"],
                                                              "port": self.ssl_sock["port"]}
        s["sclk"] = self.sclk
        s["wakeup_rxd"] = {"effective": self.wakeup_rxd, "stored": int(self.store.get("wakeuprxd", self.wakeup_rxd))}
        s["psm"] = {"cpsms": dict(self.psms), "in_psm": self.in_psm, "deep_sleep": self.deep}
        return s
