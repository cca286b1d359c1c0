"""Command line of the modem emulator: ``python -m tools.modemsim --profile bg96|bc660k --link PATH [...]``.

Prints exactly one line when the pty is ready (``READY link=<PATH> pty=<dev> control=<path or ->``), then
runs until SIGTERM/SIGINT. The module itself boots right after (RDY after the boot latency). Every option
is documented in docs/modemsim.md and by ``--help``.
"""

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile

from . import faults as faultlib
from .bc660k import Bc660k
from .bg95 import Bg95
from .bg96 import Bg96
from .control import ControlServer
from .network import Resolver
from .pty_link import PtyLink
from .store import Store
from .transcript import Transcript

PROFILES = {"bg96": Bg96, "bg95": Bg95, "bc660k": Bc660k}


class Options:
    """Everything the modem classes read from the command line."""

    def __init__(self, a, tmpdir):
        self.profile = a.profile
        self.firmware = a.firmware
        self.latency = a.latency
        self.time = a.time
        self.settings = dict(a.set)
        self.sim = a.sim
        self.sim_pin = None
        if a.sim.startswith("pin:"):
            self.sim_pin = a.sim[4:]
        elif a.sim not in ("ready", "absent"):
            raise ValueError("--sim must be ready, absent or pin:<PIN>")
        self.reg_stat = 5 if a.roaming else 1
        self.nitz = not a.no_nitz
        self.tz_q = a.tz
        self.imei = a.imei
        self.imsi = a.imsi
        self.iccid = a.iccid
        self.tls_ciphers = a.tls_ciphers
        self.check_hostname = a.check_hostname
        self.chunking = a.chunking
        self.wakeup_rxd = a.wakeup_rxd
        self.psm_shipped = a.psm_shipped
        self.tmpdir = tmpdir

    def sim_state(self):
        if self.sim == "absent":
            return "absent"
        return "SIM PIN" if self.sim_pin else "READY"


def _setting(s):
    k, sep, v = s.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("--set wants KEY=SECONDS")
    try:
        return k.strip(), float(v)
    except ValueError:
        raise argparse.ArgumentTypeError("--set %s: value must be a number of seconds" % k) from None


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m tools.modemsim",
                                 description="Quectel BG96 / BC660K-GL emulator on a pty with a real network side.")
    ap.add_argument("--profile", required=True, choices=sorted(PROFILES), help="which module to emulate")
    ap.add_argument("--link", required=True, help="path of the symlink to the pty slave (the 'serial port')")
    ap.add_argument("--resolve", action="append", default=[], metavar="NAME=HOST[:PORT]|NAME:PORT=HOST:PORT",
                    help="map a host name (optionally one port) to an address; repeatable; else real DNS")
    ap.add_argument("--time", default="host", metavar="host|fixed:ISO8601Z|offset:+-SECONDS",
                    help="what the network says the time is (NITZ at registration, QNTP); default host")
    ap.add_argument("--latency", choices=("fast", "realistic"), default="fast",
                    help="fast (default, for tests) or the manuals' typical times")
    ap.add_argument("--set", action="append", default=[], type=_setting, metavar="KEY=SECONDS",
                    help="override one latency/timer (see docs/modemsim.md for the keys); repeatable")
    ap.add_argument("--faults", metavar="FILE_OR_JSON", help="fault script: a file or inline JSON list of rules")
    ap.add_argument("--transcript", metavar="FILE", help="write every byte both ways (secrets redacted) here")
    ap.add_argument("--state-dir", metavar="DIR", help="keep the module's flash (UFS, NV settings) here")
    ap.add_argument("--control", metavar="PATH", help="unix socket for the JSON-lines control protocol")
    ap.add_argument("--firmware", metavar="ID", help="firmware revision (BG96: BG96MAR02A08M1G default, "
                                                     "BG96MAR02A07M1G: no QMTPUB length form, no recv/mode)")
    ap.add_argument("--chunking", type=int, metavar="SEED", help="write the output in random pieces of 1-64 bytes "
                                                               "with 0-3 ms between them (seeded), as a host's UART "
                                                               "driver may hand them over")
    ap.add_argument("--wakeup-rxd", type=int, choices=(0, 1), default=1,
                    help='BC660K-GL: the factory value of AT+QCFG="wakeupRXD" (0: the UART does not wake a sleeping '
                         "module; default 1)")
    ap.add_argument("--psm-shipped", action="store_true",
                    help='BC660K-GL: the module comes with PSM on (+CPSMS: 1,,,"01000001","00100011", a field capture)')
    ap.add_argument("--sim", default="ready", metavar="ready|absent|pin:PIN", help="SIM card state (default ready)")
    ap.add_argument("--roaming", action="store_true", help="register as roaming (stat 5) instead of home (1)")
    ap.add_argument("--no-nitz", action="store_true", help="the network sends no time: the clock stays at the "
                                                           "power-on epoch until AT+CCLK or AT+QNTP")
    ap.add_argument("--tz", type=int, default=0, metavar="QUARTERS", help="time zone the network reports, in "
                                                                          "quarter hours (e.g. 32 = UTC+8)")
    ap.add_argument("--check-hostname", action="store_true",
                    help="verify the server certificate against the host name of QMTOPEN/QSSLOPEN (and send SNI)")
    ap.add_argument("--tls-ciphers", metavar="OPENSSL_LIST",
                    help="replace the module's cipher list (for servers sharing no suite with it; not module "
                         "behaviour)")
    ap.add_argument("--imei", default="866425030000017")
    ap.add_argument("--imsi", default="001010123456789")
    ap.add_argument("--iccid", default="89860000000000000017")
    return ap


async def run(a):
    tmpdir = tempfile.mkdtemp(prefix="modemsim-")  # client cert/key files live here only during a handshake
    try:
        await _run(a, tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


async def _run(a, tmpdir):
    loop = asyncio.get_running_loop()
    opts = Options(a, tmpdir)
    rules = faultlib.load(a.faults) if a.faults else []
    resolver = Resolver(a.resolve)
    cls = PROFILES[a.profile]
    for key in opts.settings:
        if key not in cls.LATENCY["fast"]:
            raise ValueError("--set %s: unknown key (known: %s)" % (key, ", ".join(sorted(cls.LATENCY["fast"]))))
    store = Store(a.state_dir)
    link = PtyLink(a.link)
    transcript = Transcript(a.transcript, header="modemsim transcript profile=%s link=%s pty=%s" % (
        a.profile, a.link, link.device))
    try:
        modem = cls(opts, link, transcript, store, resolver, loop, rules)
    except ValueError:
        transcript.close()
        link.close()  # nothing was started: leave no link behind
        raise
    control = None
    if a.control:
        control = ControlServer(modem, a.control)
        await control.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    modem.start()
    print("READY link=%s pty=%s control=%s" % (link.link, link.device, a.control or "-"), flush=True)
    try:
        await stop.wait()
    finally:
        modem.stop()
        if control:
            await control.stop()
        transcript.event("emulator stopped")
        transcript.close()
        link.close()


def main(argv=None):
    a = build_parser().parse_args(argv)
    try:
        asyncio.run(run(a))
    except (ValueError, FileExistsError, faultlib.FaultError, OSError) as e:
        print("modemsim: %s" % e, file=sys.stderr, flush=True)
        sys.exit(2)
    sys.stdout.flush()
    sys.stderr.flush()
    # A connect still running in a worker thread (up to net_timeout) must not hold the exit up:
    # everything of ours is flushed and closed at this point.
    os._exit(0)


if __name__ == "__main__":
    main()
