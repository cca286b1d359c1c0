"""Quectel BG95-M3 / BG77 / BG770A-GL profile: the BG96 profile with what the family's own sources show.

``--firmware`` picks the part by its revision: ``BG95M3LAR02A03`` (default, a BG95-M3), ``BG77LA...`` (a BG77)
or ``BG770AGLAAR01A05`` (a BG770A-GL). Each difference, with its source (docs/modemsim.md "BG95 family"):

* boot: ``APP RDY`` after ``RDY`` (manual V1.3 26.7 table 29); the driver accepts it and never needs it;
* identity: ATI ``BG95-M3`` / ``BG77`` / ``BG770A-GL`` with the revision (real captures: lukejenkins/cwd
  BG95-M3 outputs; w1ne/labwired-core BG770A-GL at_harvest.log). The BG77 revision string is inferred (no
  capture), by analogy with the other two;
* RAT names ``eMTC`` / ``NBIoT`` in +QCSQ and +QNWINFO (BG77xA/BG95xA AT Commands Manual V1.3 6.13/6.14,
  MikroTik's BG77 page), AcT 7 for eMTC on the BG770A (manual V1.3 8.8), 8 on BG95-M3/BG77 (MikroTik);
* no GSM on BG77 / BG770A: ``nwscanmode`` only (0,3) (BG770A at_harvest.log), GSM band mask 0;
* PDP contexts 1..5 on the BG770A (at_harvest.log ``+QICSGP: (1-5),...``), 1..16 on the BG95-M3;
* the BG770A starts with CMEE=0, so errors are a bare ERROR until the host sets AT+CMEE (labwired-core
  bg770a_validation.rs, "CMEE verbosity");
* MQTT: always the later feature set (fixed-length QMTPUB, ``recv/mode``: lukejenkins/cwd AT+QMTCFG=? and the
  BG95 MQTT application note V1.1 as quoted in the research notes), payloads up to 4096 bytes, the QMTPUB test
  form ``(1-4096)`` without a blank line before OK (BG770A EXACT_GOLDEN). (labwired-core's BG770A model
  writes OK and +QMTPUB in one burst; that is a model, not a capture, and is not emulated: ``--chunking``
  covers any packing of the output);
* TLS: ``"sni"`` and ``"checkhost"`` items in AT+QSSLCFG (BG95-M3 AT+QSSLCFG=? in lukejenkins/cwd); with
  checkhost 1 the module verifies the server certificate's names against the host it connects to
  (Moran296/bg9x_ssl_zephyr); SNI is off by default (zimbora/esp32-BG95 PR 6).
* payload echo in fixed-length mode: no source shows one (inferred: off); ``--set echo_fixed=1`` turns it
  on, so the driver is tested against both.
"""

from .bg96 import SSL_DEFAULTS, Bg96
from .core import AtError
from .network import CIPHERS
from .transcript import redact

SSL95_DEFAULTS = dict(SSL_DEFAULTS, sni=0, checkhost=0)

# revision prefix -> (model line, AcT of eMTC, GSM, PDP contexts, CMEE at power-up)
PARTS = {"BG95M3": ("BG95-M3", 8, True, 16, 1), "BG77LA": ("BG77", 8, False, 16, 1),
         "BG770A": ("BG770A-GL", 7, False, 5, 0)}


class Bg95(Bg96):
    PROFILE = "bg95"
    MODEL = "BG95"
    DEFAULT_FIRMWARE = "BG95M3LAR02A03"
    MQTT_MAX_PAYLOAD = 4096
    # --set echo_fixed=1: echo a fixed-length QMTPUB payload (no source shows it; the driver must cope)
    LATENCY = {k: dict(v, echo_fixed=0) for k, v in Bg96.LATENCY.items()}

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        part = PARTS.get(self.firmware[:6])
        if part is None:
            raise ValueError("--firmware for bg95: a BG95M3..., BG77LA... or BG770A... revision")
        self.MODEL_NAME, self.ACT, self.gsm, self.CID_MAX, self.cmee = part
        self.AUTH_MAX = 2 if self.CID_MAX == 5 else 3  # BG770A: +QICSGP ...,(0-2) (at_harvest.log)
        self.later_fw = True  # the whole family has the fixed-length form and recv/mode
        self.reset_volatile()

    def reset_volatile(self):
        super().reset_volatile()
        self.ssl_ctx = [dict(SSL95_DEFAULTS) for _ in range(6)]

    @property
    def CMEE_DEFAULT(self):  # noqa: N802 -- the class attribute of the other profiles
        part = PARTS.get(self.firmware[:6])
        return part[4] if part else 1

    def boot_urcs(self):
        # APP RDY once the application core is up (BG77xA/BG95xA AT Commands Manual V1.3, 26.7 table 29; the
        # BG96 of T1 never prints it)
        urcs = super().boot_urcs()
        return urcs[:1] + [(self.lat["boot_urc_gap"] / 2, b"APP RDY")] + urcs[1:]

    # ---- network info ----
    def at_QCSQ(self, c, r):
        r.info('+QCSQ: "eMTC",-62,-87,111,-12' if self.registered() else '+QCSQ: "NOSERVICE"')

    def at_QNWINFO(self, c, r):
        if self.registered():
            r.info('+QNWINFO: "eMTC","%s","LTE BAND 20",6300' % self.OPERATOR_NUMERIC)
        else:
            r.info('+QNWINFO: "No Service"')

    def at_QCFG(self, c, r):
        if c.kind == "write" and c.n >= 2 and c.item(0) == "nwscanmode" and not self.gsm and c.int(1) == 1:
            raise AtError("no GSM on this part")
        if c.kind == "test" and not self.gsm:
            r.info('+QCFG: "nwscanmode",(0,3),(0,1)')
            r.info('+QCFG: "nwscanseq",(00,02,03,0203,0302),(0,1)')
            r.info('+QCFG: "iotopmode",(0-2),(0,1)')
            r.info('+QCFG: "band",(0),<catm1bandval>,<nb1bandval>,(0,1)')
            r.info('+QCFG: "psm/urc",(0,1)')
            return
        super().at_QCFG(c, r)

    # ---- SSL: sni and checkhost ----
    def at_QSSLCFG(self, c, r):
        if c.kind == "test":
            r.info('+QSSLCFG: "sslversion",(0-5),(0-4)')
            r.info('+QSSLCFG: "ciphersuite",(0-5),(%s)' % ",".join("0X%04X" % k for k in list(CIPHERS) + [0xFFFF]))
            for item, arg in (("cacert", "<cacertpath>"), ("clientcert", "<client_cert_path>"),
                              ("clientkey", "<client_key_path>"), ("seclevel", "(0-2)"), ("session", "(0,1)"),
                              ("sni", "(0,1)"), ("checkhost", "(0,1)"), ("ignorelocaltime", "(0,1)"),
                              ("negotiatetime", "(10-300)")):
                r.info('+QSSLCFG: "%s",(0-5),%s' % (item, arg))
            return
        if c.kind == "write" and c.str(0).lower() in ("sni", "checkhost"):
            item = c.str(0).lower()
            ctx = self.ssl_ctx[c.int(1, 0, 5)]
            if c.n == 2:
                r.info('+QSSLCFG: "%s",%d,%d' % (item, c.int(1), ctx[item]))
            else:
                ctx[item] = c.int(2, 0, 1)
            return
        super().at_QSSLCFG(c, r)

    def tls_from_ctx(self, ctx_id, hostname):
        tls = super().tls_from_ctx(ctx_id, None)
        ctx = self.ssl_ctx[ctx_id]
        tls.sni = hostname if ctx["sni"] else None
        tls.hostname = hostname if ctx["checkhost"] or self.opts.check_hostname else None
        return tls

    # ---- MQTT ----
    def mqtt_pub_test_lines(self):
        return ["+QMTPUB: (0-5),(0-65535),(0-2),(0,1),<topic>,(1-%d)" % self.MQTT_MAX_PAYLOAD]

    async def at_QMTPUB(self, c, r):
        if c.kind == "test":
            r.compact = True  # BG770A EXACT_GOLDEN: "...(1-4096)\r\nOK\r\n"
        await super().at_QMTPUB(c, r)

    def mqtt_echo_payload(self, cfg, payload, form):
        if form == "len" and self.lat.get("echo_fixed"):  # no source shows it: a test switch (--set echo_fixed=1)
            self.emit(payload, redact(payload))
