# Quectel BG95-M3 / BG77 / BG770A-GL (LTE Cat-M1 / NB-IoT), the BG96's successors: the BG96 driver with what
# differs (docs/modemsim.md "BG95 family" names the source of each):
# - no GSM on BG77 / BG770A (nwscanmode only 0 or 3); PDP contexts 1..5 and auth 0..2 on BG770A: the
#   configuration keys are declared with the family's common ranges;
# - TLS: the SSL context has "sni" (send the host name; off by default) and "checkhost" (verify the server
#   certificate names the host), set whenever the server is verified;
# - MQTT: the fixed-length QMTPUB form takes up to the bound AT+QMTPUB=? prints (4096), and the module may
#   answer OK and +QMTPUB in one burst (the engine matches by prefix either way).
from cellmqtt import quectel
from cellmqtt.bg96 import Bg96, Bg96Mqtt

CONFIG = (quectel.CONFIG, {
    "modem": {"pdp_cid": (1, 1, 5), "apn_user": "", "apn_pass": "", "apn_auth": (0, 0, 2),
              "scan": (None, "auto", "lte", "gsm"), "rat": (None, "m1", "nb1", "m1+nb1"), "bands": dict},
    "tls": {"version": (3, 0, 4), "ciphers": "0xFFFF", "negotiate_s": (300, 10, 300), "ctx": (1, 0, 5),
            "sni": True, "check_host": True},
})


class Bg95Mqtt(Bg96Mqtt):
    OPEN_MS = 120000  # "determined by the network" (BG95 MQTT application note); longer than the BG96's 75 s


class Bg95(Bg96):
    CONFIG = CONFIG
    NATIVE = Bg95Mqtt

    SSL_NAMES = (True, True)  # "sni" and "checkhost" on the whole family (lukejenkins/cwd AT+QSSLCFG=?)


Driver = Bg95  # modem.type "bg95"
