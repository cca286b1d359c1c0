"""Explain a modem transcript or a firmware log: a timeline of the bring-up, every code in words, the likely cause.

    python -m tools.explain FILE [FILE...] [--html PAGE]

FILE is any of:
  * a transcript the firmware writes (`micropython firmware/main.py --transcript F`, `make run TRANSCRIPT=F`):
    `<ms> > <sent>` / `<ms> < <received line>` / `<ms> # <note>`;
  * the emulator's transcript (`python -m tools.modemsim --transcript F`): `<ms> RX|TX|RX!|EV "<bytes>"`;
  * the firmware's log (console or `log.file`): `<clock> <LEVEL> <message>`;
  * a capture from a real module: lines prefixed `>` (sent) and `<` (received), optionally after a time
    (`12.5 > AT`), a serial-monitor capture (`17:13:30.563 -> AT`) or bare lines (`AT...` is sent, the rest
    received).

It prints the steps in order (power-up, SIM, registration, PDP, clock, certificates, TLS settings, TLS/MQTT
open, CONNECT, subscriptions, publishes) with when each started, how long it took and its result, every result
and error code in words (+CEREG and 3GPP EMM reject causes, +CME ERROR, +QMTOPEN, +QMTCONN/CONNACK, +QMTSTAT,
+QSSLOPEN, file and TCP/IP codes, the BC660K-GL's 85xx), the losses (link, PDP, registration, module resets)
with the time to recover, and the most likely cause of a failure with what to check. ``--html PAGE`` writes the
same as one self-contained page (inline CSS and an SVG chart of the steps over time).
"""

import argparse
import datetime
import html
import re
import sys
from pathlib import Path

from tools import explain_codes as codes

# ---- reading the file -----------------------------------------------------------------------------------------

TX, RX, NOTE, LOG = "tx", "rx", "note", "log"

_FW = re.compile(r"^(\d+) ([<>#]) ?(.*)$")
_SIM = re.compile(r"^\s*(\d+) (RX!|RX|TX|EV)\s+(.*)$")
_LOG = re.compile(r"^(\d{6,}(?:\.\d+)?) (DEBUG|INFO|WARN|ERROR) (.*)$")
_MON = re.compile(r"^(\d\d):(\d\d):(\d\d)[.,](\d{3}) -> ?(.*)$")
_ARROW = re.compile(r"^(?:\[?(\d+(?:\.\d+)?)\]?\s+)?([<>])\s?(.*)$")
_LIBNOTE = re.compile(r"\[\d+\] ###.*$")  # a host library's own debug print after a module line (TinyGSM)
RESTART = "@host restarted"  # a note parse() inserts where a firmware transcript's clock starts again


# commands that carry a secret, and which of their quoted fields it is (0-based among the quoted strings): a
# capture from a real module may hold them in clear; nothing this tool prints shows them
_SECRET_FIELDS = (("AT+QMTCONN=", (2,)), ("AT+QICSGP=", (2,)), ("AT+CPIN=", (0,)), ('AT+QMTCFG="ALIAUTH"', (3,)),
                  ("AT+CGAUTH=", (1,)))
_QUOTED = re.compile(r'"[^"]*"')


def redact(cmd):
    """The command line with its secret fields (MQTT password, APN password, PIN, device secret) as ***."""
    u = cmd.upper()
    for prefix, fields in _SECRET_FIELDS:
        if u.startswith(prefix):
            if prefix == "AT+CPIN=" and '"' not in cmd:
                return "AT+CPIN=***"
            parts = _QUOTED.split(cmd)
            quoted = _QUOTED.findall(cmd)
            out = parts[0]
            for i, q in enumerate(quoted):
                out += ('"***"' if i in fields and q != '""' else q) + parts[i + 1]
            return out
    return cmd


class Line:
    __slots__ = ("t", "dir", "text", "level")

    def __init__(self, t, d, text, level=None):
        self.t, self.dir, self.level = t, d, level
        self.text = redact(text) if d == TX or text[:2].upper() == "AT" else text  # an echo is a command too


def _unescape(s):
    out = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            if n == "x" and i + 3 < len(s) + 1:
                try:
                    out.append(chr(int(s[i + 2:i + 4], 16)))
                    i += 4
                    continue
                except ValueError:
                    pass
            out.append({"r": "\r", "n": "\n", "t": "\t", "\\": "\\", '"': '"'}.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _split_rx(t, data, out):
    # bytes the module sent: lines between CR/LF; a data prompt "> " kept as a line of its own
    for part in re.split(r"\r\n|\r|\n", data):
        part = part.strip()
        if part:
            out.append(Line(t, RX, part))


def _split_tx(t, data, out):
    # bytes the host sent: a command line ends with CR; anything else is a data block (payload, PEM)
    if re.match(r"^(AT|at|At)", data):
        for part in data.split("\r"):
            part = part.strip("\n")
            if part:
                out.append(Line(t, TX, part) if re.match(r"^AT", part, re.I) else Line(t, TX, "<data %d bytes>" % len(part)))
    elif data:
        out.append(Line(t, TX, "<data %d bytes>" % len(data)))


def parse(text):
    """(format name, [Line]) of a transcript, log or capture. Times are ms from the start of the file."""
    text = text.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'").replace("\u2019", "'")
    raw = text.splitlines()
    body = [ln for ln in raw if ln.strip() and not ln.startswith("# ") and not ln.startswith("```")]
    kind = "capture"
    if body:
        sample = body[:40]
        if sum(bool(_SIM.match(ln)) for ln in sample) > len(sample) // 2:
            kind = "emulator transcript"
        elif sum(bool(_LOG.match(ln)) for ln in sample) > len(sample) // 2:
            kind = "firmware log"
        elif sum(bool(_FW.match(ln)) for ln in sample) > len(sample) // 2:
            kind = "firmware transcript"
        elif sum(bool(_MON.match(ln)) for ln in sample) > len(sample) // 2:
            kind = "serial monitor capture"
    out = []
    t0 = None
    last_t = 0
    offset = 0
    for ln in raw:
        if not ln.strip() or ln.startswith("```"):
            continue
        if kind == "emulator transcript":
            m = _SIM.match(ln)
            if not m:
                continue
            t, d, rest = int(m.group(1)), m.group(2), m.group(3)
            if d == "EV":
                out.append(Line(t, NOTE, rest.strip()))
                continue
            q = re.match(r'^"((?:[^"\\]|\\.)*)"\s*(.*)$', rest)
            data = _unescape(q.group(1)) if q else rest
            if d == "RX":
                _split_tx(t, data, out)
            elif d == "TX":
                _split_rx(t, data, out)
            else:
                out.append(Line(t, NOTE, "bytes lost by the module: %r %s" % (data[:40], q.group(2) if q else "")))
            continue
        if kind == "firmware log":
            m = _LOG.match(ln)
            if not m:
                continue
            t = float(m.group(1)) * 1000
            t0 = t if t0 is None else t0
            out.append(Line(int(t - t0), LOG, m.group(3), m.group(2)))
            continue
        if kind == "firmware transcript":
            m = _FW.match(ln)
            if not m:
                continue
            t, d, rest = int(m.group(1)) + offset, m.group(2), _unescape(m.group(3))
            if t < last_t - 500:  # the times start again: the firmware (the MCU) was started again
                offset = last_t + 1
                t = int(m.group(1)) + offset
                out.append(Line(t, NOTE, RESTART))
            last_t = t
            if d == "#":
                out.append(Line(t, NOTE, rest))
            elif d == ">":
                _split_tx(t, rest, out)
            else:
                _split_rx(t, rest, out)
            continue
        if ln.startswith("#"):
            continue  # a comment or a capture tool's header (### AT+X [801 ms])
        t = None
        m = _MON.match(ln)
        if m:
            h, mi, s, ms = (int(x) for x in m.groups()[:4])
            t = ((h * 60 + mi) * 60 + s) * 1000 + ms
            if t0 is None:
                t0 = t
            t -= t0
            ln = m.group(5)
            if re.match(r"^\[\d+\] ###", ln.strip()):
                continue
            ln = _LIBNOTE.sub("", ln)
        m = _ARROW.match(ln)
        if m and (m.group(1) is not None or ln.lstrip()[:1] in "<>") and not ln.startswith("> ") or \
                (m and ln.startswith("> ") and len(ln) > 2):
            if m.group(1) is not None:
                t = int(float(m.group(1)) * (1 if "." not in m.group(1) else 1000))
            d, rest = m.group(2), m.group(3).strip()
            if t is None:
                t = last_t
            last_t = t
            if d == ">":
                out.append(Line(t, TX, rest) if re.match(r"^AT", rest, re.I) or not rest else
                           Line(t, TX, "<data %d bytes>" % len(rest)))
            elif rest:
                out.append(Line(t, RX, rest))
            continue
        s = ln.strip()
        if not s or s in ("...", "\u2026"):
            continue
        if t is None:
            t = last_t
        last_t = t
        if re.match(r"^AT", s, re.I):
            out.append(Line(t, TX, s))
        elif re.match(r"^(wrote|read):", s):
            continue  # a host program's own print
        else:
            out.append(Line(t, RX, s))
    return kind, out


# ---- the steps ------------------------------------------------------------------------------------------------

OK, FAIL, LOSS, INFO, OPEN = "ok", "FAILED", "loss", "info", "unfinished"

CATEGORY = (  # command prefix (upper case) -> the step it belongs to
    ("AT+CPIN", "SIM"), ("AT+QCCID", "SIM"), ("AT+CIMI", "SIM"),
    ("AT+CEREG", "registration"), ("AT+CREG", "registration"), ("AT+CGREG", "registration"),
    ("AT+COPS", "registration"), ("AT+CEER", "registration"), ('AT+QCFG="NWSCAN', "registration"),
    ('AT+QCFG="IOTOP', "registration"), ('AT+QCFG="BAND', "registration"),
    ("AT+QICSGP", "PDP"), ("AT+QIACT", "PDP"), ("AT+CGDCONT", "PDP"), ("AT+QCGDEFCONT", "PDP"),
    ("AT+CGPADDR", "PDP"), ("AT+CGATT", "PDP"), ("AT+QIDEACT", "PDP"), ("AT+QIDNSCFG", "PDP"),
    ("AT+CCLK", "clock"), ("AT+QLTS", "clock"), ("AT+QNTP", "clock"),
    ("AT+QFUPL", "certificates"), ("AT+QFLST", "certificates"), ("AT+QFDEL", "certificates"),
    ("AT+QFLDS", "certificates"),
    ("AT+QSSLCFG", "TLS/MQTT settings"), ("AT+QMTCFG", "TLS/MQTT settings"), ("AT+QICFG", "TLS/MQTT settings"),
    ("AT+QMTOPEN", "open"), ("AT+QSSLOPEN", "open"), ("AT+QIOPEN", "open"),
    ("AT+QMTCONN", "CONNECT"), ("AT+QMTSUB", "subscriptions"),
    ("AT+QMTPUB", "publishes"), ("AT+QSSLSEND", "publishes"), ("AT+QISEND", "publishes"),
    ("AT+QMTDISC", "close"), ("AT+QMTCLOSE", "close"), ("AT+QSSLCLOSE", "close"), ("AT+QICLOSE", "close"),
)
_PUSH = re.compile(r'^AT\+QSSLCFG=\d+,\d+,"(cacert|clientcert|clientkey)"$', re.I)
CHAIN = ("power-up", "SIM", "registration", "PDP", "clock", "certificates", "TLS/MQTT settings", "open", "CONNECT",
         "subscriptions", "publishes")


def category(cmd):
    u = cmd.upper()
    if _PUSH.match(cmd):
        return "certificates"
    for prefix, cat in CATEGORY:
        if u.startswith(prefix):
            return cat
    return "power-up"


class Step:
    def __init__(self, name, start, attempt=1):
        self.name, self.start, self.end = name, start, start
        self.status = OPEN
        self.attempt = attempt
        self.detail = []  # what happened, codes in words
        self.kind = None  # the failure's kind, for the diagnosis
        self.info = {}
        self.count = 0

    @property
    def label(self):
        if self.status == LOSS and self.detail:
            return "loss: " + self.detail[0].split(":")[0][:34]
        return self.name + (" (attempt %d)" % self.attempt if self.attempt > 1 else "")

    def add(self, text):
        if text not in self.detail:
            self.detail.append(text)

    def done(self, t, status, text=None, kind=None):
        self.end = max(self.end, t)
        self.status = status
        if text:
            self.add(text)
        if kind:
            self.kind = kind


def _ints(s):
    out = []
    for f in s.split(","):
        f = f.strip().strip('"')
        try:
            out.append(int(f))
        except ValueError:
            out.append(f)
    return out


def _code(text):
    v = text.split(":", 1)[1].strip()
    try:
        return int(v)
    except ValueError:
        return v


def _fmt_s(ms):
    return "%.3f s" % (ms / 1000.0)


class Analysis:
    """The steps, losses and findings of one file's lines."""

    def __init__(self, kind, lines, name="-"):
        self.kind, self.lines, self.name = kind, lines, name
        self.steps = []
        self.losses = []  # Step objects with status LOSS
        self.notes = []
        self.clock = None  # the module's clock as read (datetime), if any
        self.cur = {}  # category -> the open step
        self.pending = None  # (command, t, category)
        self.after_fail_open = None  # t of a failed QMTOPEN -1 (the firmware's TLS diagnosis follows)
        self.received = 0
        self.last_cat = None
        self.restarts = 0
        self.secrets_seen = False
        for ln in lines:
            if ln.dir == TX:
                self._tx(ln)
            elif ln.dir == RX:
                self._rx(ln)
            elif ln.dir == LOG:
                self._log(ln)
            else:
                self._note(ln)
        self.duration = max([ln.t for ln in lines] or [0]) - min([ln.t for ln in lines] or [0])
        self._recoveries()

    # -- bookkeeping
    def step(self, cat, t, new=False):
        # a command continues its category's step while nothing else came between and no pause of more than
        # 1.5 s (a retry after a back-off is a new attempt); publishes continue the step of their session
        s = self.cur.get(cat)
        if s is not None and not new and s.status != OPEN:
            contiguous = self.last_cat == cat and t - s.end <= 1500
            if not (contiguous or (cat == "publishes" and s.status == OK)):
                s = None
        elif new:
            s = None
        if s is None:
            n = 1 + sum(1 for x in self.steps if x.name == cat)
            s = Step(cat, t, n)
            self.steps.append(s)
            self.cur[cat] = s
        return s

    def loss(self, t, text, kind):
        s = Step("loss", t)
        s.done(t, LOSS, text, kind)
        self.steps.append(s)
        self.losses.append(s)
        return s

    # -- what the host sent
    def _tx(self, ln):
        cmd = ln.text
        if cmd.startswith("<data"):
            if self.pending and self.pending[2] == "publishes":
                self.cur["publishes"].info["bytes"] = self.cur["publishes"].info.get("bytes", 0) + \
                    int(cmd.split()[1])
            return
        if self.pending and self.pending[0] == cmd and ln.t - self.pending[1] < 50 and self.kind != "firmware log":
            return  # an echo shown twice (a host library printing what it sends, then the module's echo)
        cat = category(cmd)
        u = cmd.upper()
        if u.endswith("=?") or cat == "close" or u.startswith("AT+QIGETERROR") or (
                cat in ("open", "CONNECT") and u.endswith("?")):
            self.pending = (cmd, ln.t, "probe")  # a test form (capability probe) or a close: no step of its own
            return
        if self.after_fail_open is not None and ln.t - self.after_fail_open < 15000 and \
                cat in ("TLS/MQTT settings", "open") and not u.startswith("AT+QMTOPEN"):
            cat = "TLS diagnosis"
            s = self.cur.get(cat)
            if s is None or s.status != OPEN:
                s = self.step(cat, ln.t, new=True)
                s.add("the firmware opens a raw TLS socket without certificate checks to tell an unreachable "
                      "server from a certificate or clock problem")
            self.pending = (cmd, ln.t, cat)
            self.last_cat = cat
            return
        if cat == "power-up":
            if u.startswith("AT+CFUN=1,1") or u.startswith("AT+QRST") or u.startswith("AT+QPOWD"):
                s = self.step("power-up", ln.t, new=True)
                s.add("%s: the host restarts the module" % cmd)
                s.info["await_rdy"] = True
            elif "power-up" not in self.cur:
                self.step("power-up", ln.t)
        elif cat in ("open", "CONNECT"):
            s = self.step(cat, ln.t, new=True)
            m = re.search(r'"([^"]+)",(\d+)', cmd)
            if m and cat == "open":
                s.info["host"] = "%s:%s" % (m.group(1), m.group(2))
            if cat == "CONNECT":
                m = re.match(r'AT\+QMTCONN=\d+,"([^"]*)"', cmd, re.I)
                if m:
                    s.info["client_id"] = m.group(1)
                if "***" in cmd:
                    self.secrets_seen = True
        elif cat == "publishes":
            s = self.step(cat, ln.t)
            s.info.setdefault("sent", []).append(ln.t)
        elif cat == "subscriptions":
            s = self.step(cat, ln.t)
            m = re.search(r',"([^"]+)",(\d)', cmd)
            if m:
                s.info.setdefault("topics", []).append(m.group(1))
        else:
            s = self.step(cat, ln.t)
            if cat == "TLS/MQTT settings":
                self._tls_setting(s, cmd)
            if cat == "certificates":
                m = re.match(r'AT\+QFUPL="([^"]+)",(\d+)', cmd, re.I)
                if m:
                    s.info["file"] = (m.group(1), int(m.group(2)))
                m = _PUSH.match(cmd)
                if m:
                    s.info["file"] = (m.group(1), None)
        # a new phase closes the settings/certificate groups
        for c in ("TLS/MQTT settings", "certificates"):
            if c != cat and self.cur.get(c) is not None and self.cur[c].status == OPEN:
                self.cur[c].done(self.cur[c].end, OK)
        self.pending = (cmd, ln.t, cat if cat in self.cur else "power-up")
        self.last_cat = cat

    def _tls_setting(self, s, cmd):
        m = re.match(r'AT\+QSSLCFG="(\w+)",(\d+),(.*)$', cmd, re.I) or \
            re.match(r'AT\+QSSLCFG=\d+,\d+,"(\w+)",()(.*)$', cmd, re.I)
        if not m:
            return
        item, value = m.group(1).lower(), m.group(3).strip('"')
        if item in ("seclevel", "secllevel") and value == "0":
            s.add("seclevel 0: the server's certificate is not verified (anyone can pose as the cloud)")
        if item == "ignorelocaltime" and value == "1":
            s.add("ignorelocaltime 1: certificate validity dates are not checked (insecure; set the clock instead)")
        if item == "cacert" and value:
            s.info["ca"] = value

    # -- what the module sent
    def _rx(self, ln):
        text, t = ln.text, ln.t
        pend = self.pending
        if pend and text == pend[0]:
            return  # echo
        if text in ("RDY", "APP RDY"):
            running = any(x.name in ("CONNECT", "registration") for x in self.steps)
            s = self.cur.get("power-up")
            if running and (s is None or s.status != OPEN):
                self.loss(t, "the module restarted (RDY): every connection, MQTT client and TLS state in it is lost",
                          "module_reset")
                s = self.step("power-up", t, new=True)
                for c in list(self.cur):
                    if c != "power-up":
                        del self.cur[c]
            s = s or self.step("power-up", t)
            if s.status == OPEN or s.info.pop("await_rdy", False):
                s.done(t, OK, "RDY: the module booted and accepts commands")
            return
        if text == "POWERED DOWN":
            s = self.step("power-up", t)
            s.add("POWERED DOWN: the module is resetting or switching off")
            s.end = t
            return
        if text.startswith("+CEREG:") or text.startswith("+CREG:") or text.startswith("+CGREG:"):
            self._reg(text, t)
            return
        if text.startswith("+CEER:"):
            s = self.step("registration", t) if self.cur.get("registration") is None else self.cur["registration"]
            rest = text.split(":", 1)[1].strip()
            nums = [int(x) for x in re.findall(r"\b(\d+)\b", rest)]
            s.add("+CEER: %s%s" % (rest, (": " + codes.emm(nums[-1])) if nums and "emm" in rest.lower() else ""))
            if nums and "emm" in rest.lower():
                s.info["cause"] = nums[-1]
            return
        if text.startswith("+QIACT:"):
            f = _ints(text.split(":", 1)[1])
            s = self.cur.get("PDP") or self.step("PDP", t)
            if len(f) >= 4 and f[1] == 1:
                s.done(t, OK, "context %s active, IP %s" % (f[0], f[3]))
            return
        if text.startswith("+CGPADDR:"):
            f = _ints(text.split(":", 1)[1])
            s = self.cur.get("PDP") or self.step("PDP", t)
            if len(f) >= 2 and f[1] != "":
                s.done(t, OK, "default bearer (cid %s) up, IP %s" % (f[0], f[1]))
            return
        if text.startswith('+QIURC: "pdpdeact"') and (self.cur.get("power-up") or Step("", 0)).info.get("await_rdy"):
            self.cur["power-up"].add('+QIURC "pdpdeact" during the reset: the data connection goes with it')
            return
        if text.startswith('+QIURC: "pdpdeact"'):
            self.loss(t, '+QIURC "pdpdeact": the network deactivated the PDP context (data connection lost; '
                         'the host must deactivate and activate it again)', "pdp_lost")
            return
        if text.startswith("+CGEV:") and "DEACT" in text:
            self.loss(t, "%s: the network dropped the data bearer" % text, "pdp_lost")
            return
        if text.startswith("+CCLK:") or text.startswith("+QLTS:"):
            self._clock(text, t)
            return
        if text.startswith("+QNTP:"):
            f = _ints(text.split(":", 1)[1])
            s = self.cur.get("clock") or self.step("clock", t)
            if f and f[0] == 0:
                s.done(t, OK, "network time (NTP) received: %s" % (f[1] if len(f) > 1 else ""))
            else:
                s.done(t, FAIL, "NTP failed (%s)" % text, "ntp")
            return
        if text.startswith("+QFUPL:"):
            f = _ints(text.split(":", 1)[1])
            s = self.cur.get("certificates") or self.step("certificates", t)
            name = s.info.get("file", ("?", None))
            s.add("uploaded %s: %s bytes stored, checksum %s" % (name[0], f[0], f[1] if len(f) > 1 else "?"))
            if name[1] is not None and f[0] != name[1]:
                s.done(t, FAIL, "the module stored %s of %s bytes" % (f[0], name[1]), "cert_upload")
            return
        if text.startswith("+QFLST:"):
            s = self.cur.get("certificates") or self.step("certificates", t)
            s.add("in the module's flash: %s" % text.split(":", 1)[1].strip())
            return
        if text.startswith("+QSSLCFG:"):
            f = _ints(text.split(":", 1)[1])
            if len(f) >= 4 and f[2] in ("cacert", "clientcert", "clientkey") and isinstance(f[3], int):
                s = self.cur.get("certificates") or self.step("certificates", t)
                if f[3] == 0:
                    s.done(t, FAIL, "%s push: 0 bytes stored: nothing was kept (the PEM must follow the > prompt, "
                                    "Ctrl-Z only after it)" % f[2], "cert_upload")
                else:
                    s.add("%s pushed: %d bytes stored" % (f[2], f[3]))
            return
        if text.startswith("+QMTOPEN:"):
            f = _ints(text.split(":", 1)[1])
            if len(f) >= 2 and isinstance(f[1], int) and "," in text:
                s = self.cur.get("open") or self.step("open", t)
                words = codes.QMTOPEN.get(f[1], "result %s" % f[1])
                if f[1] == 0:
                    s.done(t, OK, "+QMTOPEN %s: %s %s" % (f[1], words, s.info.get("host", "")))
                else:
                    kind = {-1: "open_failed", 2: "stale_client", 3: "pdp", 4: "dns"}.get(f[1], "open_failed")
                    s.done(t, FAIL, "+QMTOPEN %s: %s" % (f[1], words), kind)
                    if f[1] == -1:
                        self.after_fail_open = t
            return
        if text.startswith("+QSSLOPEN:") or text.startswith("+QIOPEN:"):
            self._sslopen(text, t)
            return
        if text.startswith("+QMTCONN:"):
            f = _ints(text.split(":", 1)[1])
            if len(f) >= 2 and isinstance(f[1], int) and len(text.split(",")) >= 2:
                if pend and pend[0].upper().startswith("AT+QMTCONN?"):
                    state = {1: "initialising", 2: "connecting", 3: "connected", 4: "disconnecting"}.get(f[1], "?")
                    self.notes.append((t, "the module's MQTT client %s is %s (state %s)%s" % (
                        f[0], state, f[1], ": a session left from before the host's restart, closed and opened "
                                           "again" if f[1] == 3 and self.restarts else "")))
                    return
                s = self.cur.get("CONNECT") or self.step("CONNECT", t)
                ret = f[2] if len(f) > 2 else None
                if f[1] == 0 and (ret in (0, None)):
                    s.done(t, OK, "CONNACK 0: session accepted%s" % (
                        (" as " + s.info["client_id"]) if s.info.get("client_id") else ""))
                elif ret is not None:
                    s.done(t, FAIL, "CONNACK %d: %s" % (ret, codes.CONNACK.get(ret, "unknown code")), "connack%d" % ret)
                else:
                    s.done(t, FAIL, "+QMTCONN result %d: %s" % (f[1], codes.QMTCONN_RESULT.get(f[1], "?")), "conn_send")
            return
        if text.startswith("+QMTSUB:"):
            f = _ints(text.split(":", 1)[1])
            s = self.cur.get("subscriptions") or self.step("subscriptions", t)
            granted = f[3:] if len(f) > 3 else []
            if len(f) >= 3 and f[2] == 0 and 128 not in granted:
                s.count += 1
                s.done(t, OK, None)
            elif len(f) >= 3:
                s.done(t, FAIL, "subscription %s: %s%s" % (f[1], codes.QMTSUB.get(f[2], "?"),
                                                            ", refused by the broker (128)" if 128 in granted else ""),
                       "subscribe")
            return
        if text.startswith("+QMTPUB:") or text.startswith("+QSSLSEND:") or text == "SEND OK":
            if "(" in text:
                return  # the test form's answer
            s = self.cur.get("publishes") or self.step("publishes", t)
            f = _ints(text.split(":", 1)[1]) if ":" in text else [0, 0, 0]
            res = f[2] if len(f) > 2 and text.startswith("+QMTPUB") else (f[-1] if ":" in text else 0)
            sent = s.info.get("sent", [])
            took = t - sent[s.count + s.info.get("failed", 0)] if len(sent) > s.count + s.info.get("failed", 0) else 0
            if res == 0:
                s.count += 1
                s.info.setdefault("took", []).append(took)
                s.done(t, OK)
            elif res == 1:
                s.add("publish %s being retransmitted (%s)" % (f[1], text))
            else:
                s.info["failed"] = s.info.get("failed", 0) + 1
                s.done(t, FAIL if s.count == 0 else OK, "publish %s not acknowledged (%s: %s)" % (
                    f[1] if len(f) > 1 else "?", text, codes.QMTPUB.get(res, "error %s" % res)), "publish")
            return
        if text.startswith("+QMTRECV:") or text.startswith('+QSSLURC: "recv"') or text.startswith('+QIURC: "recv"'):
            self.received += 1
            return
        if text.startswith("+QMTSTAT:"):
            f = _ints(text.split(":", 1)[1])
            code = f[1] if len(f) > 1 else None
            self.loss(t, "+QMTSTAT %s: %s" % (code, codes.QMTSTAT.get(code, "unknown code (handled as 1)")),
                      "qmtstat%s" % code)
            return
        if text.startswith('+QSSLURC: "closed"') or text.startswith('+QIURC: "closed"'):
            self.loss(t, "%s: the server closed the connection" % text, "closed")
            return
        if text.startswith("+CPIN:"):
            s = self.cur.get("SIM") or self.step("SIM", t)
            st = text.split(":", 1)[1].strip()
            if st == "READY":
                s.done(t, OK, "+CPIN READY: SIM unlocked")
            else:
                s.add("+CPIN %s: the SIM waits for %s" % (st, st.replace("SIM ", "its ")))
            return
        if text.startswith("+CME ERROR:") or text.startswith("+CMS ERROR:") or text == "ERROR":
            self._error(text, t)
            return
        if text == "OK":
            if pend:
                cat = pend[2]
                s = self.cur.get(cat)
                u = pend[0].upper()
                if s is not None and s.status == OPEN:
                    s.end = t
                    if cat == "PDP" and (u.startswith("AT+QIACT=") or u.startswith("AT+QCGDEFCONT=")):
                        s.done(t, OK, "%s: OK" % pend[0])
                    elif cat == "power-up" and s.info.get("await_rdy"):
                        s.end = t
                    elif cat == "power-up" and "power-up" in self.cur and not any(
                            x.name != "power-up" for x in self.steps if x.status != INFO):
                        s.done(t, OK, "the module answers AT commands")
                    elif cat in ("TLS/MQTT settings", "certificates") or (cat == "SIM" and "=" in u):
                        s.end = t
                    elif cat == "close":
                        s.done(t, OK)
            return
        if text.startswith("-----BEGIN"):
            s = self.cur.get("certificates") or self.step("certificates", t)
            s.add("the module shows the PEM as command-mode input: it was sent outside the data prompt "
                  "(after Ctrl-Z, or before the prompt), so it was not stored")
            return
        if text.startswith("+QIGETERROR:"):
            f = _ints(text.split(":", 1)[1])
            failed = [x for x in self.steps if x.status == FAIL]
            words = codes.cme(f[0]) if f and isinstance(f[0], int) else text
            if failed:
                failed[-1].add("+QIGETERROR %s: %s" % (f[0] if f else "?", words))
                if f and f[0] in (561, 570, 573) and failed[-1].name == "PDP":
                    failed[-1].detail = [d for d in failed[-1].detail if "already active" not in d] or \
                        failed[-1].detail
            return

    def _reg(self, text, t):
        name, rest = text.split(":", 1)
        f = _ints(rest)
        # read form "<n>,<stat>[,...]" (second field an unquoted number) or URC "<stat>[,<tac>...]"
        read = len(f) >= 2 and isinstance(f[1], int) and '"' not in rest.split(",")[1]
        stat = f[1] if read else f[0]
        extra = f[2:] if read else f[1:]
        cause = None
        if len(extra) >= 5 and isinstance(extra[4], int) and extra[3] in (0, 1):
            cause = extra[4]
        s = self.cur.get("registration")
        registered = s is not None and s.status == OK
        if registered and stat in (1, 5):
            return
        if registered and stat not in (1, 5):
            self.loss(t, "%s stat %s: %s (coverage or registration lost)" % (name, stat, codes.REG_STAT.get(stat, "?")),
                      "reg_lost")
            self.cur.pop("registration", None)
            if stat == 3:
                self.step("registration", t).done(t, FAIL, "stat 3: registration denied", "reg_denied")
            return
        if s is None or s.status != OPEN:
            s = self.step("registration", t, new=s is not None and s.status == FAIL and self.pending is not None
                          and self.pending[1] >= s.end)
        if cause is not None:
            s.info["cause"] = cause
            s.add("reject cause %d: %s" % (cause, codes.emm(cause)))
        if stat in (1, 5):
            cell = [x for x in extra[:3] if x != ""]
            s.done(t, OK, "%s stat %d: %s%s" % (name, stat, codes.REG_STAT[stat],
                                               (" (cell " + "/".join(str(x) for x in cell[:2]) + ")") if cell else ""))
        elif stat == 3:
            s.done(t, FAIL, "%s stat 3: registration denied by the network" % name, "reg_denied")
        else:
            s.add("%s stat %s: %s" % (name, stat, codes.REG_STAT.get(stat, "?")))
            s.end = t

    def _clock(self, text, t):
        s = self.cur.get("clock") or self.step("clock", t)
        v = text.split(":", 1)[1].strip().strip('"')
        m = re.match(r"(\d+)/(\d+)/(\d+),(\d+):(\d+):(\d+)", v)
        if not m:
            s.done(t, INFO, "%s: the network has sent no time" % text.split(":")[0])
            return
        y = int(m.group(1))
        y += 2000 if y < 80 else (1900 if y < 100 else 0)
        try:
            when = datetime.datetime(y, *(int(m.group(i)) for i in range(2, 7)), tzinfo=datetime.timezone.utc)
        except ValueError:
            s.done(t, INFO, "unreadable clock %s" % v)
            return
        self.clock = when
        if y <= 2000 or y < 2020:
            s.done(t, FAIL, "module clock %s: never set (power-on epoch): certificate dates cannot be checked"
                   % when.strftime("%Y-%m-%d %H:%M:%S"), "clock_unset")
        else:
            s.done(t, OK, "module clock %s" % when.strftime("%Y-%m-%d %H:%M:%S"))

    def _sslopen(self, text, t):
        f = _ints(text.split(":", 1)[1])
        s = self.cur.get("open") or self.step("open", t)
        diag = self.cur.get("TLS diagnosis")
        if diag is not None and diag.status == OPEN and self.pending and self.pending[2] == "TLS diagnosis":
            s = diag
            self.after_fail_open = None
        bc = len(f) >= 3  # BC660K-GL: +QSSLOPEN: 0,0,<err>; BG96: +QSSLOPEN: <client>,<err>
        err = f[-1] if f else None
        if not isinstance(err, int):
            return
        if bc:
            words = codes.BC_SSL.get(err, "error %d" % err)
        else:
            words = "opened" if err == 0 else codes.cme(err)
        label = text.split(":")[0]
        if s.name == "TLS diagnosis":
            if err == 0:
                s.done(t, OK, "%s %s: the server is reachable and speaks TLS; so the failure is in the certificate "
                              "check (CA, validity dates against the module clock) or the client certificate" % (
                                  label, err), "diag_tls_ok")
            else:
                s.done(t, FAIL, "%s %s: %s: the server cannot be reached at all" % (label, err, words),
                       "diag_unreachable")
            return
        if err == 0:
            s.done(t, OK, "%s %s: %s" % (label, err, words))
        else:
            kind = {-3: "tls_cert", -5: "tls_cipher", -2: "unreachable", -7: "tls_timeout", 565: "dns",
                    566: "unreachable", 569: "tls_timeout", 561: "pdp", 570: "pdp"}.get(err, "open_failed")
            s.done(t, FAIL, "%s %s: %s" % (label, err, words), kind)

    def _error(self, text, t):
        pend = self.pending
        cat = pend[2] if pend else "power-up"
        if cat == "probe":
            self.notes.append((t, "%s -> %s: %s" % (pend[0], text, "not supported by this module or firmware"
                                                    if text == "ERROR" else codes.cme(_code(text)))))
            return
        s = self.cur.get(cat) or self.step(cat, t)
        if text == "ERROR":
            words = "refused: an unknown command, a syntax error or an option this module does not support"
            code = None
        else:
            v = text.split(":", 1)[1].strip()
            try:
                code = int(v)
            except ValueError:
                code = v
            words = codes.cme(code)
        what = "%s -> %s: %s" % (pend[0] if pend else "?", text, words)
        if s.status == FAIL and s.kind:
            s.add(what)  # the command's final after its result URC (T2: +QMTOPEN: 0,-1 then ERROR)
            return
        if cat in ("TLS/MQTT settings",) or (cat == "power-up" and code is None):
            s.add(what)
            return
        kind = "cme"
        if isinstance(code, int):
            if 10 <= code <= 18:
                kind = "sim"
            elif code in (565,):
                kind = "dns"
            elif code in (561, 570, 573, 304):
                kind = "pdp"
            elif code == 407:
                kind = "file_exists"
        if cat == "PDP" and pend and pend[0].upper().startswith("AT+QIACT=") and code is None:
            s.add(what + " (on an already active context the BG96 also answers ERROR)")
            s.done(t, FAIL, None, "pdp")
            return
        if cat == "SIM" and code == 3:
            s.done(t, INFO, what + " (no PIN was pending)")
            return
        s.done(t, FAIL, what, kind)

    def _note(self, ln):
        text = ln.text
        if text == RESTART:
            self.restarts += 1
            self.loss(ln.t, "the host (MCU) started again: a power cut or a reset of the board (the transcript's "
                            "clock starts again here)", "host_restart")
            self.cur.clear()
            self.pending = None
            self.step("power-up", ln.t)
            return
        if "failed" in text or "lost" in text or "dropped" in text:
            self.notes.append((ln.t, text))

    # -- the firmware's log (when the input is a log, not a transcript)
    def _log(self, ln):
        msg, t = ln.text, ln.t
        if "power-up" not in self.cur:
            self.step("power-up", t)
        m = re.match(r"^(\w+) failed: (\w+): (.*?); (\w+) in ([\d.]+) s$", msg)
        if msg.startswith("modem ready"):
            self.cur["power-up"].done(t, OK, "the modem answers (%s)" % msg)
        elif msg.startswith("registered on the network"):
            self.step("registration", t).done(t, OK, msg)
        elif msg.startswith("network up: "):
            self.step("PDP", t).done(t, OK, msg.split(",")[0])
            mm = re.search(r"clock (\d+) \((\w+)\)", msg)
            if mm:
                when = datetime.datetime.fromtimestamp(int(mm.group(1)), datetime.timezone.utc)
                self.clock = when
                self.step("clock", t).done(t, OK if when.year >= 2020 else FAIL, "module clock %s (%s)" % (
                    when.strftime("%Y-%m-%d %H:%M:%S"), mm.group(2)), None if when.year >= 2020 else "clock_unset")
        elif msg.startswith("certificates: "):
            self.step("certificates", t).done(t, OK, msg)
        elif msg.startswith("connecting to "):
            s = self.step("CONNECT", t, new=True)
            s.info["client_id"] = msg.split(" as ", 1)[-1]
            s.add(msg)
        elif msg.startswith("MQTT connected"):
            (self.cur.get("CONNECT") or self.step("CONNECT", t)).done(t, OK, msg)
        elif msg == "running":
            self.step("subscriptions", t, new=True).done(t, OK, "subscribed: the device is online")
        elif m:
            state, exc, why = m.group(1), m.group(2), m.group(3)
            cat = {"power": "power-up", "sim": "SIM", "registered": "registration", "pdp": "PDP",
                   "certificates": "certificates", "connect": "CONNECT", "subscribe": "subscriptions"}.get(state)
            if state == "running" or exc == "LinkLost":
                self.loss(t, "%s: %s" % (exc, why), "link_lost")
                return
            kind = {"RegistrationError": "reg_denied" if "stat 3" in why else "reg_timeout", "SimError": "sim",
                    "PdpError": "pdp", "CertUploadError": "cert_upload", "DnsError": "dns",
                    "NetworkError": "unreachable", "TlsError": "tls_cert" if "reachable" in why else "open_failed",
                    "ModemNotResponding": "no_modem"}.get(exc, "cme")
            if exc == "ConnectRefused":
                mm = re.search(r"CONNACK (\d+)", why)
                kind = "connack%s" % (mm.group(1) if mm else "")
            s = self.cur.get(cat) if cat else None
            if s is None or s.status != OPEN:
                s = self.step(cat or state, t, new=True)
            s.done(t, FAIL, "%s: %s" % (exc, why), kind)
        elif msg.startswith("the modem restarted"):
            self.loss(t, "the modem restarted: the firmware starts over from power-up", "module_reset")
        elif msg.startswith("modem event reset") and any(x.name == "CONNECT" for x in self.steps):
            self.loss(t, "the modem reset", "module_reset")
        elif msg.startswith("publish of sample"):
            self.loss(t, msg, "publish")
        elif ln.level in ("WARN", "ERROR"):
            self.notes.append((t, "%s %s" % (ln.level, msg)))

    def _recoveries(self):
        for s in self.losses:
            nxt = [x for x in self.steps if x.name == "CONNECT" and x.status == OK and x.end > s.start]
            if nxt:
                s.end = nxt[0].end
                s.add("recovered: connected again %s later" % _fmt_s(nxt[0].end - s.start))
            else:
                s.add("not recovered within this file")
        # a step still open at the end of the file
        for s in self.steps:
            if s.status == OPEN and s.name in ("TLS/MQTT settings", "certificates", "subscriptions", "publishes"):
                s.status = OK if not s.kind else FAIL
            elif s.status == OPEN and s.name == "power-up":
                s.status = OK if any(x.name != "power-up" for x in self.steps) else OPEN
        pub = [s for s in self.steps if s.name == "publishes"]
        for s in pub:
            took = s.info.get("took", [])
            s.add("%d acknowledged%s%s%s" % (
                s.count, (", %d not" % s.info["failed"]) if s.info.get("failed") else "",
                (", %d payload bytes" % s.info["bytes"]) if s.info.get("bytes") else "",
                (", each %.0f ms on average (longest %d ms)" % (sum(took) / len(took), max(took))) if took else ""))
        for s in self.steps:
            if s.name == "subscriptions" and s.count:
                s.add("%d subscription(s) granted%s" % (s.count, (": " + ", ".join(s.info["topics"]))
                                                        if s.info.get("topics") else ""))
        if self.received:
            self.notes.append((None, "%d message(s) received from the network (+QMTRECV / recv URCs)"
                               % self.received))

    # ---- the likely cause
    def diagnosis(self):
        """(headline, [what to check]) for the failure that matters, or None when the run succeeded."""
        order = {n: i for i, n in enumerate(CHAIN + ("TLS diagnosis",))}
        fails = [s for s in self.steps if s.status == FAIL]
        # a failure that a later success of the same step repaired is not the cause
        unresolved = [s for s in fails if not any(x.name == s.name and x.status == OK and x.start >= s.end
                                                  for x in self.steps)]
        if not unresolved:
            conn_ok = any(s.name == "CONNECT" and s.status == OK for s in self.steps)
            if self.losses and conn_ok:
                return None
            return None
        # the earliest step of the chain that failed for good; of its attempts the last (it knows the most)
        first = min(order.get(x.name, 99) for x in unresolved)
        s = max((x for x in unresolved if order.get(x.name, 99) == first), key=lambda x: x.start)
        if s.name == "registration" and "cause" not in s.info:
            known = [x.info["cause"] for x in unresolved if x.name == "registration" and "cause" in x.info]
            if known:
                s.info["cause"] = known[-1]
        kind = s.kind or "cme"
        diag = [x for x in self.steps if x.name == "TLS diagnosis" and x.status in (OK, FAIL)]
        if kind == "open_failed" and diag:
            kind = "tls_cert" if diag[-1].kind == "diag_tls_ok" else "unreachable"
        return _cause(self, s, kind)


def _clock_check(a):
    if a.clock is None:
        return "Read the module clock (AT+CCLK?): certificates are checked against it"
    now = datetime.datetime.now(datetime.timezone.utc)
    off = (a.clock - now).total_seconds()
    if abs(off) > 86400:
        return ("The module clock says %s, %d days %s this computer's clock: with a wrong clock valid certificates "
                "look expired or not yet valid" % (a.clock.strftime("%Y-%m-%d %H:%M"), abs(off) // 86400,
                                                   "ahead of" if off > 0 else "behind"))
    return "The module clock (%s) looks right" % a.clock.strftime("%Y-%m-%d %H:%M UTC")


def _cause(a, s, kind):
    where = "%s at %s" % (s.label, _fmt_s(s.start)) if a.duration > 0 else s.label
    if kind == "reg_denied":
        cause = s.info.get("cause")
        head = "The network refused the registration (+CEREG stat 3)%s." % (
            ": reject cause %d, %s" % (cause, codes.emm(cause)) if cause is not None else "")
        checks = ["The SIM is activated and its subscription includes LTE-M/NB-IoT data (ask the operator)",
                  "The radio technology and bands suit the operator (modem.rat, modem.scan, modem.bands)",
                  "The module's IMEI is allowed on the subscription (some IoT SIMs are locked to one IMEI)",
                  "Roaming is allowed when the SIM is not from the local operator"]
        if cause is None:
            checks.append("The reject cause is not in this file: ask the module with AT+CEER or AT+CEREG=3 then "
                          "AT+CEREG? (3GPP TS 24.301 EMM cause)")
    elif kind == "reg_timeout":
        head = "No registration within the time limit: no usable cell was found."
        checks = ["Antenna connected, signal (AT+CSQ: 99 means none)", "Bands and RAT (modem.bands, modem.rat)",
                  "modem.register_timeout_s long enough for a first attach (several minutes on NB-IoT)"]
    elif kind == "sim":
        head = "The SIM is missing, locked or broken: %s." % s.detail[-1]
        checks = ["SIM inserted and contacts clean", "modem.pin set when the SIM asks for a PIN (secrets.json)",
                  "a SIM locked with its PUK must be unlocked in a phone"]
    elif kind == "pdp":
        head = "The data connection (PDP context) did not come up."
        checks = ["modem.apn is the APN your operator gave (and apn_user/apn_pass/apn_auth if it needs them)",
                  "The subscription includes data", "On the BC660K-GL an APN change takes effect after the module's "
                  "reboot (the firmware does it once)"]
    elif kind == "clock_unset":
        head = "The module clock was never set, so no certificate date can be checked."
        checks = ["The network sends no time (NITZ): set modem.ntp_server to a reachable NTP server",
                  "Do not turn on tls.ignore_time except on a bench"]
    elif kind == "cert_upload":
        head = "The certificate did not reach the module intact: %s." % s.detail[-1]
        checks = ["The PEM files in certs/ are complete (BEGIN/END lines) and below 4 KB",
                  "BC660K-GL: the PEM is sent after the > prompt and the 500 ms gate, Ctrl-Z after it",
                  "BG96: the +QFUPL size and checksum match what was sent"]
    elif kind == "file_exists":
        head = "A file of that name is already in the module (+CME ERROR: 407)."
        checks = ["Delete it first (AT+QFDEL) or let the firmware replace it"]
    elif kind in ("tls_cert", "tls_expired"):
        head = "The TLS handshake failed although the server is reachable: the server's certificate was not " \
               "accepted (CA, validity dates) or the client certificate was refused."
        checks = ["tls.ca (certs/%s) is the CA that signed the broker's certificate (openssl s_client -connect "
                  "HOST:PORT -showcerts)" % s.info.get("ca", "ca.pem"),
                  "The CA and the server certificate are within their dates (openssl x509 -noout -dates -in ca.pem)",
                  _clock_check(a), "Mutual TLS: tls.cert/tls.key are the device certificate the cloud registered"]
    elif kind == "tls_cipher":
        head = "The module and the server share no TLS cipher suite."
        checks = ["The BC660K-GL offers only TLS_RSA_WITH_AES_128/256_CBC_SHA and 3DES: the server must allow one",
                  "tls.version / tls.ciphers (BG96)"]
    elif kind == "tls_timeout":
        head = "The TLS handshake timed out."
        checks = ["Signal quality (AT+CSQ)", "tls.negotiate_s", "The server answers on that port"]
    elif kind in ("unreachable", "open_failed"):
        head = "The network connection to the broker could not be opened (+QMTOPEN -1: no TCP connection, or " \
               "the TLS handshake failed)."
        checks = ["mqtt.host and mqtt.port (Huawei 8883; EnOS 11883 without TLS, 18883 with a device certificate)",
                  "The broker is reachable from the operator's network (firewalls, private APNs)",
                  _clock_check(a), "tls.ca is the CA of the broker's certificate"]
    elif kind == "dns":
        head = "The broker's host name could not be resolved."
        checks = ["mqtt.host spelled right", "The APN gives DNS servers (AT+QIDNSCFG on the BG96)"]
    elif kind == "stale_client":
        head = "The module's MQTT client was still open from an earlier run (+QMTOPEN 2)."
        checks = ["Close it first: AT+QMTDISC / AT+QMTCLOSE (the firmware does when it finds one)"]
    elif kind.startswith("connack"):
        code = int(kind[7:] or 0) if kind[7:].isdigit() else None
        head = "The broker refused the MQTT CONNECT: CONNACK %s, %s." % (code, codes.CONNACK.get(code, "?"))
        if code in (4, 5):
            checks = ["The device secret in secrets.json is the one the cloud console shows for this device",
                      "The device id / product key / device key are this device's (client id %s)" % (
                          s.info.get("client_id", "?")),
                      "Huawei with sig_type 1 and EnOS check the time in the credentials: " + _clock_check(a),
                      "Compare with what the console expects: python -m tools.cloudcred huawei|enos ... --now"]
        elif code == 2:
            checks = ["The client id's format (Huawei {id}_0_{sig}_{YYYYMMDDHH}; EnOS {cid}|securemode=...|)",
                      "No other connection uses the same client id"]
        else:
            checks = ["The broker is up and accepts MQTT 3.1.1 (AT+QMTCFG=\"version\",<id>,4 on the BG96)"]
    elif kind == "conn_send":
        head = "The CONNECT packet could not be sent (the link broke right after the open)."
        checks = ["The server drops connections it does not like: host/port, TLS settings", "Signal quality"]
    elif kind == "subscribe":
        head = "A subscription was refused (SUBACK 128): the topic is not permitted for this device."
        checks = ["The topics match the cloud (Huawei /huawei/v1/devices/{id}/command/json; IoTDA $oc/devices/...)"]
    elif kind == "publish":
        head = "Publishes were not acknowledged."
        checks = ["mqtt.pkt_timeout_s/retries", "The topic is permitted (a broker may drop the link instead)"]
    elif kind == "no_modem":
        head = "The modem does not answer on the UART."
        checks = ["Power and PWRKEY wiring (docs/boards.md)", "TX/RX crossed, 1.8 V level shifting (BG96)",
                  "modem.baud matches the module"]
    else:
        head = "%s failed: %s." % (s.label, s.detail[-1] if s.detail else "see the timeline")
        checks = ["The error's words above; the module's AT manual for that command"]
    return "%s (%s)" % (head, where), checks


# ---- output ---------------------------------------------------------------------------------------------------

def analyse(path):
    text = Path(path).read_text(errors="replace")
    kind, lines = parse(text)
    return Analysis(kind, lines, str(path))


def report(a):
    timed = a.duration > 0
    out = ["%s: %s, %d lines, %s" % (a.name, a.kind, len(a.lines), _fmt_s(a.duration) if timed else
                                     "no times in the file (durations unknown)")]
    if not a.steps:
        out.append("  nothing recognisable: no AT commands, module lines or firmware log lines found")
        return "\n".join(out)
    out.append("  %10s  %10s  %-22s %-10s %s" % ("at", "took", "step", "result", "what happened"))
    for s in a.steps:
        words = "; ".join(s.detail) or "-"
        out.append("  %10s  %10s  %-22s %-10s %s" % (_fmt_s(s.start) if timed else "-",
                                                     _fmt_s(s.end - s.start) if timed else "-", s.label, s.status,
                                                     words))
    for t, n in a.notes:
        out.append("  note%s: %s" % ("" if t is None else " at " + _fmt_s(t), n))
    losses = a.losses
    if losses:
        out.append("Losses: %d (%s)" % (len(losses), ", ".join(sorted({x.detail[0].split(":")[0] for x in losses}))))
    d = a.diagnosis()
    if d is None:
        reached = [s.name for s in a.steps if s.status == OK]
        last = max((CHAIN.index(n) for n in reached if n in CHAIN), default=-1)
        out.append("Result: no unresolved failure; reached %s." % (CHAIN[last] if last >= 0 else "nothing"))
    else:
        out.append("Most likely cause: " + d[0])
        out.append("What to check:")
        out.extend("  - " + c for c in d[1])
    return "\n".join(out)


_COLOURS = {OK: "#2e8b57", FAIL: "#c0392b", LOSS: "#e67e22", INFO: "#7f8c8d", OPEN: "#95a5a6"}


def html_page(analyses):
    """One self-contained page (no external resources) for the analyses."""
    css = ("body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:1em 0}"
           "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top;font-size:13px}"
           "th{background:#eee}.ok{color:#2e8b57}.FAILED{color:#c0392b;font-weight:bold}.loss{color:#e67e22}"
           ".cause{background:#fdecea;border-left:4px solid #c0392b;padding:.5em 1em}"
           ".good{background:#eafaf1;border-left:4px solid #2e8b57;padding:.5em 1em}svg text{font-size:11px}")
    parts = ["<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>cellmqtt explain</title><style>%s</style>"
             "</head><body><h1>cellmqtt explain</h1>" % css]
    for a in analyses:
        e = html.escape
        parts.append("<section><h2>%s</h2><p>%s, %d lines, %s</p>" % (e(a.name), e(a.kind), len(a.lines),
                                                                         _fmt_s(a.duration)))
        parts.append(_svg(a))
        parts.append("<table id=\"timeline\"><tr><th>at</th><th>took</th><th>step</th><th>result</th>"
                     "<th>what happened</th></tr>")
        for s in a.steps:
            parts.append("<tr class=\"step\"><td>%s</td><td>%s</td><td>%s</td><td class=\"%s\">%s</td><td>%s</td></tr>"
                         % (_fmt_s(s.start), _fmt_s(s.end - s.start), e(s.label), e(s.status), e(s.status),
                            "<br>".join(e(x) for x in s.detail) or "-"))
        parts.append("</table>")
        if a.notes:
            parts.append("<ul>%s</ul>" % "".join("<li>%s</li>" % e(n) for _, n in a.notes))
        d = a.diagnosis()
        if d is None:
            parts.append("<p class=\"good\" id=\"result\">No unresolved failure.</p>")
        else:
            parts.append("<div class=\"cause\" id=\"cause\"><p><b>Most likely cause:</b> %s</p><ul>%s</ul></div>" % (
                e(d[0]), "".join("<li>%s</li>" % e(c) for c in d[1])))
        parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts)


def _svg(a):
    steps = a.steps
    if not steps:
        return ""
    t0 = min(s.start for s in steps)
    span = max(max(s.end for s in steps) - t0, 1)
    width, left, row = 900, 230, 18
    h = row * len(steps) + 30
    scale = (width - left - 20) / span
    out = ["<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" role=\"img\">" % (width, h)]
    for i, s in enumerate(steps):
        y = 10 + i * row
        x = left + (s.start - t0) * scale
        w = max((s.end - s.start) * scale, 3)
        out.append("<text x=\"4\" y=\"%d\">%s</text>" % (y + 12, html.escape(s.label)))
        out.append("<rect class=\"bar\" x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"><title>%s</title>"
                   "</rect>" % (x, y, w, row - 4, _COLOURS.get(s.status, "#999"),
                                html.escape("%s: %s, %s" % (s.label, s.status, _fmt_s(s.end - s.start)))))
    out.append("<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#444\"/>" % (left, h - 18, width - 20, h - 18))
    step = next((x for x in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
                 if span / 1000.0 / x <= 10), 7200)
    k = 0
    while k * step * 1000 <= span:
        x = left + k * step * 1000 * scale
        out.append("<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#444\"/><text x=\"%.1f\" y=\"%d\" "
                   "text-anchor=\"middle\">%g s</text>" % (x, h - 18, x, h - 14, x, h - 4, k * step))
        k += 1
    out.append("</svg>")
    return "".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.explain", description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", metavar="TRANSCRIPT_OR_LOG")
    ap.add_argument("--html", metavar="FILE", help="also write the timeline as one self-contained HTML page")
    a = ap.parse_args(argv)
    analyses = []
    for f in a.files:
        try:
            analyses.append(analyse(f))
        except OSError as e:
            print("explain: %s: %s" % (f, e.strerror), file=sys.stderr)
            return 2
    print("\n\n".join(report(x) for x in analyses))
    if a.html:
        Path(a.html).write_text(html_page(analyses))
        print("\nHTML timeline written to %s" % a.html)
    return 1 if any(x.diagnosis() for x in analyses) else 0


if __name__ == "__main__":
    sys.exit(main())
