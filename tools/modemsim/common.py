"""Commands both modules share: V.250 basics, errors, identity, SIM, registration, PDP basics, clock, PSM.

A mixin for the profile classes (bg96.py, bc660k.py). Shapes follow quectel-bg96.md section 2 and
quectel-bc660k.md section 1; where the two differ the profile sets a class attribute (ATI lines, AcT,
CCLK quoting) or overrides the handler.
"""

import asyncio
import datetime

from .core import UTC, AtError, CmeError, ParamError

# 3GPP TS 27.007 PSM timer units (bits 8-6 of the GPRS Timer 3 / Timer 2 octets).
_T3412_UNITS = {0: 600, 1: 3600, 2: 36000, 3: 2, 4: 30, 5: 60, 6: 1152000}
_T3324_UNITS = {0: 2, 1: 60, 2: 360}


def decode_t3412(bits):
    v = int(bits, 2)
    unit = v >> 5
    return None if unit == 7 else _T3412_UNITS[unit] * (v & 0x1F)


def decode_t3324(bits):
    v = int(bits, 2)
    unit = v >> 5
    return None if unit == 7 else _T3324_UNITS.get(unit, 60) * (v & 0x1F)


class CommonCommands:
    OPERATOR = "MODEMSIM"
    OPERATOR_NUMERIC = "00101"  # the 3GPP test network: no real operator is named
    ACT = 8  # 8 = Cat-M1 (BG96), 9 = NB-IoT (BC660K-GL)
    MANUFACTURER = "Quectel"
    MODEL_NAME = "BG96"
    CCLK_QUOTED = True
    CMEE_DEFAULT = 1  # AT+CMEE at power-up and after AT&F (BG96 and BC660K-GL manuals: 1)
    TAC, CI = "1A2B", "01A2B3C4"

    # ---- volatile state ----
    def reset_volatile(self):
        super().reset_volatile()
        self.cfun = 1
        self.reg_stat = 0
        self.cereg_n = 0
        self.creg_n = 0
        self.cgreg_n = 0
        self.cops_mode = 0
        self.sim = self.opts.sim_state()
        self.pin_tries = 3
        self.nitz = None  # (utc datetime, tz_q) of the last network time, for QLTS
        # quectel-bc660k.md's +CEREG example: Active-Time "00100011", Periodic-TAU "00101010"
        self.psms = {"mode": 0, "tau": "00101010", "active": "00100011"}
        self.edrx = {"mode": 0, "act": 5 if self.ACT == 9 else 4, "value": "0010"}
        self.sregs = {"0": 0, "3": 13, "4": 10, "5": 8}
        self.pdp_active = {}  # cid -> ip

    def load_nv_settings(self):
        super().load_nv_settings()
        self.echo = self.store.get("echo", 1)
        self.cmee = self.store.get("cmee", self.CMEE_DEFAULT)

    def after_boot(self):
        super().after_boot()
        self.start_registration()

    def sim_ready(self):
        return self.sim == "READY"

    def require_sim(self):
        if self.sim == "absent":
            raise CmeError(10)
        if self.sim == "SIM PIN":
            raise CmeError(11)

    # ---- registration ----
    def start_registration(self):
        if self.cfun != 1 or not self.sim_ready() or self.cops_mode == 2:
            self.set_reg(0)
            return
        self.set_reg(2)
        self.later(self.lat["reg"], self._registered)

    def _registered(self):
        if self.cfun != 1 or not self.sim_ready():
            return
        stat = self.opts.reg_stat
        if self.opts.nitz:
            t = self.time_source.now()
            self.nitz = (t, self.opts.tz_q)
            self.clock.set(t, self.opts.tz_q, by="nitz")
        self.set_reg(stat)
        self.on_registered()
        self.fire("registered")

    def on_registered(self):
        pass

    def on_deregistered(self):
        pass

    def registered(self):
        return self.reg_stat in (1, 5)

    def set_reg(self, stat):
        if stat == self.reg_stat:
            return
        was = self.registered()
        self.reg_stat = stat
        for name, n in (("CEREG", self.cereg_n), ("CREG", self.creg_n), ("CGREG", self.cgreg_n)):
            if name in self.UNSUPPORTED or n == 0:
                continue
            if name == "CGREG" and self.ACT == 8:
                continue  # LTE-M: no GPRS registration to report (+CGREG stays 0)
            self.urc(self._reg_urc(name, n))
        if was and not self.registered():
            self.on_deregistered()

    def _reg_fields(self):
        return '"%s","%s",%d' % (self.TAC, self.CI, self.ACT)

    def _reg_urc(self, name, n):
        s = "+%s: %d" % (name, self.reg_stat)
        if n >= 2 and self.registered():
            s += "," + self._reg_fields()
            if n >= 4:
                s += ',,,"%s","%s"' % (self.psms["active"], self.psms["tau"])
        return s + self._reject(name, n)

    def _reject(self, name, n):
        # 3GPP TS 27.007 10.1.22: with n = 3 or 5 a denied registration carries <cause_type>,<reject_cause>
        # after the (here empty) <tac>,<ci>,<AcT>
        cause = getattr(self, "reject_cause", None)
        if name == "CEREG" and self.reg_stat == 3 and cause is not None and n in (3, 5):
            return ",,,,0,%d" % cause
        return ""

    def lose_registration(self, stat, recover_s, drop_links, cause=None):
        self.reject_cause = int(cause) if cause is not None and stat == 3 else None
        self.set_reg(stat)
        if drop_links:
            self.drop_links_on_coverage_loss()
        if recover_s is not None and recover_s >= 0:
            self.later(recover_s, self._recover_registration)

    def _recover_registration(self):
        if self.cfun == 1 and self.sim_ready() and self.cops_mode != 2:
            self.set_reg(self.opts.reg_stat)
            self.on_registered()
            self.fire("registered")

    def drop_links_on_coverage_loss(self):
        pass

    # ---- V.250 ----
    def at_E(self, c, r):
        v = c.int(0, 0, 1, default=0)
        self.echo = v
        self.persist_basic()

    def at_V(self, c, r):
        if c.int(0, 0, 1, default=0) != 1:
            raise AtError("ATV0 (numeric result codes) is not emulated")

    def at_Q(self, c, r):
        if c.int(0, 0, 1, default=0) != 0:
            raise AtError("ATQ1 is not emulated")

    def at_Z(self, c, r):
        self.echo = self.store.get("echo", 1)
        self.cmee = self.store.get("cmee", self.CMEE_DEFAULT)

    def at_AMP_F(self, c, r):
        self.echo = 1
        self.cmee = self.CMEE_DEFAULT
        self.persist_basic()

    def at_AMP_W(self, c, r):
        self.store.set("echo", self.echo)
        self.store.set("cmee", self.cmee)

    def at_AMP_D(self, c, r):
        c.int(0, 0, 2, default=0)

    def at_AMP_C(self, c, r):
        c.int(0, 0, 1, default=0)

    def at_S(self, c, r):
        reg = c.str(0)
        if c.kind == "read":
            if reg not in self.sregs:
                raise AtError("no such S register")
            r.info("%03d" % self.sregs[reg])
        else:
            self.sregs[reg] = c.int(1, 0, 255)

    def persist_basic(self):
        """BC660K-GL keeps ATE/CMEE in NVRAM at once; BG96 only with AT&W."""

    def at_I(self, c, r):
        for line in self.ati_lines():
            r.info(line)

    def ati_lines(self):
        return [self.MANUFACTURER, self.MODEL_NAME, "Revision: " + self.firmware]

    def at_GMI(self, c, r):
        r.info(self.MANUFACTURER)

    at_CGMI = at_GMI

    def at_GMM(self, c, r):
        r.info(self.MODEL_NAME)

    at_CGMM = at_GMM

    def at_GMR(self, c, r):
        r.info("Revision: " + self.firmware)

    at_CGMR = at_GMR

    def at_GSN(self, c, r):
        r.info(self.opts.imei)

    def at_CGSN(self, c, r):
        if c.kind == "test":
            return
        if c.kind == "write":
            c.int(0, 0, 3)
            r.info("+CGSN: " + self.opts.imei)
        else:
            r.info(self.opts.imei)

    def at_CIMI(self, c, r):
        self.require_sim()
        r.info(self.opts.imsi)

    def at_QCCID(self, c, r):
        if self.sim == "absent":
            raise CmeError(10)
        r.info("+QCCID: " + self.opts.iccid)

    def at_CMEE(self, c, r):
        if c.kind == "read":
            r.info("+CMEE: %d" % self.cmee)
        elif c.kind == "test":
            r.info("+CMEE: (0-2)")
        elif c.kind == "write":
            self.cmee = c.int(0, 0, 2)
            self.persist_basic()
        else:
            raise AtError()

    # ---- SIM ----
    def at_CPIN(self, c, r):
        if c.kind == "read":
            if self.sim == "absent":
                raise CmeError(10)
            r.info("+CPIN: " + self.sim)
        elif c.kind == "test":
            return
        elif c.kind == "write":
            pin = c.str(0)
            if self.sim == "absent":
                raise CmeError(10)
            if self.sim != "SIM PIN":
                raise CmeError(3)  # no PIN pending (T4: AT+CPIN="0000" -> +CME ERROR: 3)
            if pin != self.opts.sim_pin:
                self.pin_tries -= 1
                if self.pin_tries <= 0:
                    self.sim = "SIM PUK"
                raise CmeError(16)
            self.sim = "READY"
            r.after.append(self._sim_unlocked)
        else:
            raise AtError()

    def _sim_unlocked(self):
        self.urc("+CPIN: READY")
        self.start_registration()

    # ---- functionality ----
    async def at_CFUN(self, c, r):
        if c.kind == "read":
            r.info("+CFUN: %d" % self.cfun)
            return
        if c.kind == "test":
            r.info("+CFUN: (0,1,4),(0,1)")
            return
        if c.kind != "write":
            raise AtError()
        fun = c.int(0)
        if fun not in (0, 1, 4):
            raise ParamError("fun")
        rst = c.int(1, 0, 1, default=0)
        if rst == 1:
            r.after.append(self.command_reset)
            return
        await self._sleep(self.lat["cfun"])
        if fun == self.cfun:
            return
        self.cfun = fun
        if fun == 1:
            self.start_registration()
        else:
            self.set_reg(0)
            self.on_radio_off()

    def command_reset(self):
        """AT+CFUN=1,1 / AT+QRST=1 after its OK."""
        self.clean_reset()

    def on_radio_off(self):
        pass

    async def _sleep(self, s):
        if s:
            await asyncio.sleep(s)

    # ---- registration commands ----
    def _reg_cmd(self, c, r, name, attr, max_n):
        if c.kind == "read":
            n = getattr(self, attr)
            stat = 0 if (name == "CGREG" and self.ACT == 8) else self.reg_stat
            s = "+%s: %d,%d" % (name, n, stat)
            if n >= 2 and stat in (1, 5):
                s += "," + self._reg_fields()
                if n >= 4:
                    s += ',,,"%s","%s"' % (self.psms["active"], self.psms["tau"])
            r.info(s + self._reject(name, n))
        elif c.kind == "test":
            r.info("+%s: (0-%d)" % (name, max_n))
        elif c.kind == "write":
            setattr(self, attr, c.int(0, 0, max_n))
        else:
            raise AtError()

    def at_CEREG(self, c, r):
        self._reg_cmd(c, r, "CEREG", "cereg_n", 5 if self.ACT == 9 else 2)

    def at_CREG(self, c, r):
        self._reg_cmd(c, r, "CREG", "creg_n", 2)

    def at_CGREG(self, c, r):
        self._reg_cmd(c, r, "CGREG", "cgreg_n", 2)

    async def at_COPS(self, c, r):
        if c.kind == "read":
            if self.cops_mode == 2:
                r.info("+COPS: 2")
            elif self.registered():
                r.info('+COPS: 0,0,"%s",%d' % (self.OPERATOR, self.ACT))
            else:
                r.info("+COPS: 0")
        elif c.kind == "test":
            self.require_sim()
            await self._sleep(self.lat["cops_scan"])
            r.info('+COPS: (2,"%s","%s","%s",%d),,(0-4),(0-2)' % (
                self.OPERATOR, self.OPERATOR, self.OPERATOR_NUMERIC, self.ACT))
        elif c.kind == "write":
            mode = c.int(0, 0, 4)
            if mode == 2:
                self.cops_mode = 2
                self.set_reg(0)
                return
            self.require_sim()
            self.cops_mode = 0
            if not self.registered():
                self.start_registration()
                await self._sleep(self.lat["reg"] + 0.05)
                if not self.registered():
                    raise CmeError(30)
        else:
            raise AtError()

    def at_CSQ(self, c, r):
        if c.kind == "test":
            r.info("+CSQ: (0-31,99),(0-7,99)")
            return
        r.info("+CSQ: 20,99" if self.registered() else "+CSQ: 99,99")

    def at_CGATT(self, c, r):
        if c.kind == "read":
            r.info("+CGATT: %d" % (1 if self.registered() else 0))
        elif c.kind == "test":
            r.info("+CGATT: (0,1)")
        elif c.kind == "write":
            v = c.int(0, 0, 1)
            if v == 0:
                self.cops_mode = 2
                self.set_reg(0)
            else:
                self.cops_mode = 0
                if not self.registered():
                    self.start_registration()
        else:
            raise AtError()

    # ---- PDP definitions ----
    def pdp_defs(self):
        return self.store.get("pdp", {})

    def at_CGDCONT(self, c, r):
        defs = dict(self.pdp_defs())
        if c.kind == "read":
            for cid in sorted(defs, key=int):
                typ, apn = defs[cid]["type"], defs[cid]["apn"]
                ip = self.pdp_active.get(int(cid), "0.0.0.0")
                r.info('+CGDCONT: %s,"%s","%s","%s",0,0' % (cid, typ, apn, ip))
        elif c.kind == "test":
            r.info('+CGDCONT: (%d-%d),"IP",,,(0-2),(0-4)' % (self.CID_MIN, self.CID_MAX))
        elif c.kind == "write":
            cid = c.int(0, self.CID_MIN, self.CID_MAX)
            if c.n == 1:
                defs.pop(str(cid), None)
            else:
                typ = c.str(1, default="IP").upper()
                if typ not in ("IP", "IPV6", "IPV4V6", "NON-IP"):
                    raise ParamError("pdp type")
                defs[str(cid)] = {"type": typ, "apn": c.str(2, default=""), "user": "", "pass": "", "auth": 0}
            self.store.set("pdp", defs)
        else:
            raise AtError()

    def at_CGPADDR(self, c, r):
        if c.kind == "test":
            r.info("+CGPADDR: (%s)" % ",".join(str(x) for x in sorted(int(k) for k in self.pdp_defs())))
            return
        if c.kind == "write":
            cids = [c.int(i, self.CID_MIN, self.CID_MAX) for i in range(c.n)]
        else:
            cids = sorted({int(k) for k in self.pdp_defs()} | set(self.pdp_active))
        for cid in cids:
            if cid in self.pdp_active:
                r.info('+CGPADDR: %d,"%s"' % (cid, self.pdp_active[cid]))
            else:
                r.info("+CGPADDR: %d" % cid)

    # ---- clock ----
    def _fmt_clock(self, dt_local, four_digit_year=False):
        fmt = "%Y/%m/%d,%H:%M:%S" if four_digit_year else "%y/%m/%d,%H:%M:%S"
        return dt_local.strftime(fmt) + self.clock.tz_str()

    def at_CCLK(self, c, r):
        if c.kind == "read":
            s = self._fmt_clock(self.clock.local())
            r.info('+CCLK: "%s"' % s if self.CCLK_QUOTED else "+CCLK: " + s)
        elif c.kind == "test":
            return
        elif c.kind == "write":
            # Quoted, or unquoted (then the comma split it in two).
            raw = ",".join(a[1] for a in c.args if a is not None)
            try:
                dt, tz_q = parse_clock(raw)
            except ValueError:
                raise ParamError("clock") from None
            self.clock.set(dt, tz_q, by="cclk")
        else:
            raise AtError()

    def at_QNTP(self, c, r):
        if c.kind == "test":
            r.info('+QNTP: (%d-%d),"<server>",(1-65535),(0,1)' % (self.CID_MIN, self.CID_MAX))
            return
        if c.kind != "write":
            raise AtError()
        cid = c.int(0, self.CID_MIN, self.CID_MAX)
        c.str(1, maxlen=100)
        c.int(2, 1, 65535, default=123)
        autoset = c.int(3, 0, 1, default=1)
        self.later(self.lat["ntp"], self._ntp_done, cid, autoset)

    def _ntp_done(self, cid, autoset):
        if cid not in self.pdp_active:
            self.urc("+QNTP: %d" % self.NTP_NO_PDP)
            return
        t = self.time_source.now()
        if autoset:
            self.clock.set(t, by="ntp")
        local = t + datetime.timedelta(minutes=15 * self.clock.tz_q)
        self.urc('+QNTP: 0,"%s"' % self._fmt_clock(local, four_digit_year=True))

    # ---- power saving ----
    def at_CPSMS(self, c, r):
        if c.kind == "read":
            r.info('+CPSMS: %d,,,"%s","%s"' % (self.psms["mode"], self.psms["tau"], self.psms["active"]))
        elif c.kind == "test":
            r.info('+CPSMS: (0-%d),,,("00000000"-"11111111"),("00000000"-"11111111")' % (2 if self.ACT == 9 else 1))
        elif c.kind == "write":
            mode = c.int(0, 0, 2 if self.ACT == 9 else 1)
            self.psms["mode"] = 0 if mode == 2 else mode
            for idx, key in ((3, "tau"), (4, "active")):
                if c.has(idx):
                    v = c.str(idx)
                    if len(v) != 8 or set(v) - set("01"):
                        raise ParamError("timer")
                    self.psms[key] = v
        else:
            raise AtError()

    def at_CEDRXS(self, c, r):
        if c.kind == "read":
            if self.edrx["mode"]:
                r.info('+CEDRXS: %d,"%s"' % (self.edrx["act"], self.edrx["value"]))
            else:
                r.info("+CEDRXS:")
        elif c.kind == "test":
            r.info('+CEDRXS: (0-3),(%d),("0000"-"1111")' % self.edrx["act"])
        elif c.kind == "write":
            mode = c.int(0, 0, 3)
            self.edrx["mode"] = 0 if mode in (0, 3) else mode
            if c.has(1):
                self.edrx["act"] = c.int(1, 4, 5)
            if c.has(2):
                v = c.str(2)
                if len(v) != 4 or set(v) - set("01"):
                    raise ParamError("edrx")
                self.edrx["value"] = v
        else:
            raise AtError()

    def at_QPOWD(self, c, r):
        if c.kind == "test":
            r.info("+QPOWD: (0,1)")
            return
        normal = 1
        if c.kind == "write":
            normal = c.int(0, 0, 1)
        r.after.append(lambda: self.command_power_down(normal))

    def command_power_down(self, normal=1):
        # =0 is the immediate power-down: no POWERED DOWN text
        self.power_off(self.POWER_DOWN_TEXT if normal else None)

    POWER_DOWN_TEXT = b"POWERED DOWN"

    # ---- control socket ----
    def state(self):
        s = super().state()
        s.update({
            "sim": self.sim,
            "cfun": self.cfun,
            "registration": {"stat": self.reg_stat, "cereg_n": self.cereg_n},
            "pdp": {str(k): v for k, v in self.pdp_active.items()},
        })
        return s


def parse_clock(s):
    """'24/05/01,12:00:00+08' (local time, zone in quarter hours) -> (utc datetime, tz_q)."""
    s = s.strip().strip('"')
    if len(s) < 17 or s[-3] not in "+-":
        raise ValueError(s)
    tz_q = int(s[-3:])
    body = s[:-3]
    fmt = "%Y/%m/%d,%H:%M:%S" if len(body.split("/")[0]) == 4 else "%y/%m/%d,%H:%M:%S"
    local = datetime.datetime.strptime(body, fmt).replace(tzinfo=UTC)
    return local - datetime.timedelta(minutes=15 * tz_q), tz_q
