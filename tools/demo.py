"""`make demo`: the whole mission on one machine, narrated in plain words.

    python -m tools.demo [--cloud huawei|huawei-binary|iotda|enos|enos-dynamic|mqtt] [--modem bg96|bg95|bc660k]
                         [--transport native|socket] [--scenario basic|outage]
                         [--forever] [--fresh] [--workdir build/demo]

The firmware (firmware/main.py on the MicroPython unix port) talks over a pty to the modem emulator, whose
network side reaches the cloud twin over real TLS. The demo generates the test certificates, starts the twin
and the emulator, prepares the device's flash (config, secrets, certificates), runs the firmware and tells
what happens: registration, certificate upload (skipped on the next run: the emulated module keeps its files
in --workdir), the TLS connection, telemetry arriving at the cloud, a command sent down and its reply. It
exits 0 after that short scenario, or keeps running with --forever (Ctrl-C stops it).

--scenario outage instead takes the device through a network loss, a modem crash and a power cut of the MCU
(the firmware process killed and started again), telling the outbox depth on the way, and exits 0 only when
every sample reached the cloud (none lost, each stored once). Every run ends by naming the AT transcript and
the firmware log it wrote, and the `python -m tools.explain` command that turns them into a timeline.
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tools import pki
from tools.service import ROOT, Service, python_module

HOST = "iot.test"  # the broker's name in the device config; the emulator resolves it to the twin
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))
MICROPYPATH = ".frozen:" + ":".join(str(ROOT / p) for p in ("lib", "firmware", "boards/unix"))

HUAWEI_ID = "6203cc94c7fb24029b110408_88888888"
HUAWEI_SECRET = "s3cret-huawei-device"
ENOS_PK, ENOS_DK, ENOS_DS, ENOS_PS = "pk-test-1", "dk-test-1", "enos-device-secret-1", "enos-product-secret-1"


# The product model a console must define for the firmware's default readings (README "Product model"):
# telemetry.readings demo (temperature), signal (csq, rssi, rsrp, sinr, rsrq, act, oper, band, channel, tac, ci),
# uptime, outbox (outbox, dropped), plus the sample number IoTDA reports carry (seq).
READINGS_TYPES = {"temperature": "decimal", "uptime": "int", "outbox": "int", "dropped": "int", "csq": "int",
                  "rssi": "int", "rsrp": "int", "sinr": "int", "rsrq": "int", "channel": "int", "act": "string",
                  "oper": "string", "band": "string", "tac": "string", "ci": "string", "mcu_temp": "decimal",
                  "vbat": "decimal", "vdda": "decimal"}
# (plus "interval", the one writable value: the set/get commands name it)
HUAWEI_MODEL = {"services": {"Telemetry": dict(READINGS_TYPES, seq="int", interval="int")}}
_ENOS_TYPE = {"decimal": "float", "int": "int", "string": "string"}
ENOS_MODEL = {"measurepoints": dict({k: _ENOS_TYPE[t] for k, t in READINGS_TYPES.items()}, interval="int")}
HUAWEI_NODE = "866425030000017"  # the device's node id (its IMEI), for legacy id type 2
PLAIN_ID = "plain-dev-1"
PLAIN_USER, PLAIN_PASS = "plain-user", "plain-pass-1"
# make demo CLOUD=...: the twin's rules and the device's cloud settings
VARIANTS = {"huawei": ("huawei", {}), "huawei-binary": ("huawei", {"codec": "binary"}),
            "iotda": ("iotda", {"api": "iotda"}), "enos": ("enos", {}), "enos-dynamic": ("enos", {}),
            "mqtt": ("mqtt", {})}


def devices(cloud, dynamic=False):
    """The twin's device registry for the demo device (cloud: the twin's --cloud)."""
    if cloud in ("huawei", "iotda"):
        d = {"device_id": HUAWEI_ID, "secret": HUAWEI_SECRET}
        if cloud == "huawei":
            d["node_id"] = HUAWEI_NODE
        return {"model": HUAWEI_MODEL, "devices": [d]}
    if cloud == "mqtt":
        return {"devices": [{"client_id": PLAIN_ID, "username": PLAIN_USER, "password": PLAIN_PASS}]}
    if dynamic:
        return {"model": ENOS_MODEL, "products": [{"product_key": ENOS_PK, "product_secret": ENOS_PS, "dynamic": True}],
                "devices": [{"product_key": ENOS_PK, "device_key": ENOS_DK}]}
    return {"model": ENOS_MODEL, "products": [{"product_key": ENOS_PK}],
            "devices": [{"product_key": ENOS_PK, "device_key": ENOS_DK, "device_secret": ENOS_DS}]}


def device_id(cloud):
    """The name the twin knows the demo device by."""
    return HUAWEI_ID if cloud in ("huawei", "iotda") else PLAIN_ID if cloud == "mqtt" else ENOS_DK


def device_config(which, modem_type, transport="native", dynamic=False, mtls=False, interval=2, **over):
    """(config.json, secrets.json) contents for the demo/test device. cloud: huawei, iotda, enos or mqtt (the
    twin's rules); ``over`` merges into the sections (e.g. cloud={"huawei": {"codec": "binary"}})."""
    cloud = which
    profile = {"iotda": "huawei"}.get(cloud, cloud)
    cfg = {
        "board": "unix",
        "modem": {"type": modem_type, "apn": "iot.test"},
        "tls": {"ca": "ca.pem"},
        "mqtt": {"host": HOST, "port": 8883, "transport": transport, "keepalive": 60 if cloud == "enos" else 120},
        "cloud": {"profile": profile},
        "telemetry": {"interval_s": interval, "readings": ["demo", "uptime", "outbox"]},
        "backoff": {"min_s": 1, "max_s": 4, "jitter": 0.25},
        "log": {"level": "info"},
        "watchdog_s": 0,
    }
    if mtls:
        cfg["tls"].update({"cert": "client.pem", "key": "client.key"})
    if profile == "huawei":
        cfg["cloud"]["huawei"] = {"device_id": HUAWEI_ID, "service_id": "Telemetry"}
        if cloud == "iotda":
            cfg["cloud"]["huawei"]["api"] = "iotda"
        sec = {"cloud": {"huawei": {"secret": HUAWEI_SECRET}}}
    elif profile == "mqtt":
        cfg["cloud"]["mqtt"] = {"client_id": PLAIN_ID, "username": PLAIN_USER}
        sec = {"cloud": {"mqtt": {"password": PLAIN_PASS}}}
    else:
        cfg["cloud"]["enos"] = {"product_key": ENOS_PK, "device_key": ENOS_DK}
        sec = {"cloud": {"enos": {"product_secret": ENOS_PS} if dynamic else {"device_secret": ENOS_DS}}}
    for k, v in over.items():
        if isinstance(v, dict):
            node = cfg.setdefault(k, {})
            for k2, v2 in v.items():
                if isinstance(v2, dict) and isinstance(node.get(k2), dict):
                    node[k2].update(v2)
                else:
                    node[k2] = v2
        else:
            cfg[k] = v
    return cfg, sec


# ---- narration of the firmware's own log ----------------------------------------------------------------------

def _say(msg):
    print("  " + msg, flush=True)


def narrate(line, modem_name, ctx=None):
    """Turn one firmware log line into plain words (or None for lines that need none). ``ctx``: a dict the
    narration keeps its state in across lines (whether the device was online yet)."""
    parts = line.split(" ", 2)
    if len(parts) < 3:
        return None
    ctx = {} if ctx is None else ctx
    level, msg = parts[1], parts[2]
    if msg.startswith("modem event reset ") and msg != "modem event reset 1":
        ctx["reset"] = True  # the module restarted after the power-up's first reset event
        return None
    if msg.startswith("the modem restarted"):
        if not ctx.get("online") and modem_name == "BC660K-GL" and ctx.pop("reset", False):
            return ("The BC660K-GL reads its APN (AT+QCGDEFCONT, kept in its NV memory) only at start-up: the "
                    "firmware stored the configured APN and restarted the module once, on purpose. It comes back "
                    "with the new APN; later boots find it set and skip this.")
        ctx.pop("reset", None)
        return ("The modem restarted (RDY without being asked): every session inside it is gone, so the firmware "
                "starts over from power-up; unsent samples wait in the outbox.")
    if msg == "running":
        ctx["online"] = True
    if msg.startswith("modem ready"):
        return "The %s modem answers on its UART; echo off, error codes on." % modem_name
    if msg.startswith("registered on the network"):
        return "Registered on the cellular network " + msg.split("network ", 1)[1] + "."
    if msg.startswith("network up: "):
        ip = msg.split("ip ", 1)[1].split(",")[0]
        t = int(msg.split("clock ", 1)[1].split(" ")[0])
        when = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        return "Data connection up (IP %s); modem clock set to %s, so TLS date checks stay on." % (ip, when)
    if msg.startswith("certificates: "):
        n = int(msg.split(" ")[1])
        if n:
            return "Uploaded the CA certificate from flash into the modem (%d bytes, checksum verified)." % n
        return "Certificates already in the modem and unchanged: nothing uploaded (skipped)."
    if msg.startswith("connecting to "):
        return "Opening MQTT over TLS to the cloud as " + msg.split(" as ", 1)[1] + " (credentials computed on the device)."
    if msg.startswith("MQTT connected"):
        return "TLS handshake done (server verified against the uploaded CA) and MQTT session accepted by the cloud."
    if msg.startswith("waiting for the activation"):
        return "Dynamic activation: waiting quietly for the cloud to push the device secret..."
    if msg.startswith("activated"):
        return "Received the device secret, stored it on flash (atomically) and replied."
    if msg.startswith("reconnecting with the device secret"):
        return "Reconnecting with the device secret (securemode 2)."
    if msg == "running":
        return "Subscribed to the command topics: the device is online."
    if level in ("WARN", "ERROR"):
        return "[%s] %s" % (level.lower(), msg)
    return None


class Tail(threading.Thread):
    def __init__(self, path, modem_name):
        super().__init__(daemon=True)
        self.path = path
        self.modem_name = modem_name
        self.stop_ = False
        self.seen = []
        self.ctx = {}

    def run(self):
        pos = 0
        while not self.stop_:
            try:
                if os.path.getsize(self.path) < pos:
                    pos = 0  # the firmware was started again: a new log
                with open(self.path, errors="replace") as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos = f.tell()
            except OSError:
                chunk = ""
            for line in chunk.splitlines():
                self.seen.append(line)
                text = narrate(line, self.modem_name, self.ctx)
                if text:
                    _say(text)
            time.sleep(0.1)


# ---- the demo -------------------------------------------------------------------------------------------------

class Rig:
    """The demo's set-up, reusable (benchmarks): the test PKI, the cloud twin, the emulated modem and the device's
    flash directory, and the firmware process. ``stop()`` ends everything."""

    def __init__(self, work, cloud="huawei", modem="bg96", transport="native", dynamic=False, fresh=False,
                 interval=2, quiet=False, variant=None, cfg_over=None, **over):
        self.work = Path(work)
        self.cloud, self.modem, self.dynamic = cloud, modem, dynamic
        self.variant = variant or ("enos-dynamic" if dynamic else cloud)
        self.tag = "%s-%s-%s" % (self.variant, modem, transport)
        if fresh:
            shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs = self.work / "logs"
        self.logs.mkdir(exist_ok=True)
        self.say = (lambda *a: None) if quiet else print
        self.keys = _pki(self.work, fresh, self.say)
        self.procs = []
        self.fw = None
        self.sim = None
        self.sockdir = tempfile.mkdtemp(prefix="cellmqtt-")  # unix socket paths must stay short (108 bytes)
        self.device = device_id(cloud)
        devfile = self.work / ("devices-%s.json" % self.tag)
        devfile.write_text(json.dumps(devices(cloud, dynamic)))
        twin = Service(python_module("tools.cloudtwin", "--cloud", cloud, "--certs", self.work / "pki", "--devices",
                                     devfile, "--control", os.path.join(self.sockdir, "twin.sock")),
                       "READY", self.logs / ("twin-%s.log" % self.tag))
        self.procs.append(twin)
        self.twin_ports = twin.fields()
        from tools.cloudtwin.control import TwinControl

        self.ctl = TwinControl(self.twin_ports["control"])
        self.port = self.work / ("modem-%s" % self.tag)
        self.module_flash = self.work / ("module-flash-%s" % modem)
        self.start_modem()
        self.flash = self.work / ("device-%s" % self.tag)
        (self.flash / "certs").mkdir(parents=True, exist_ok=True)
        shutil.copy(self.keys["ca_pem"], self.flash / "certs" / "ca.pem")
        cfg, sec = device_config(cloud, modem, transport, dynamic, interval=interval, **dict(cfg_over or {}, **over))
        (self.flash / "config.json").write_text(json.dumps(cfg, indent=1))
        if dynamic or not (self.flash / "secrets.json").exists():
            (self.flash / "secrets.json").write_text(json.dumps(sec))

    def start_modem(self, *extra):
        if self.variant == "huawei-binary" and self.modem == "bg96" and "--firmware" not in extra:
            # the codec's bytes include 0x1A/0x1B, which the A07 firmware's Ctrl-Z publish form cannot carry:
            # a BG96 firmware with the fixed-length QMTPUB form (docs/clouds.md "Binary codec")
            extra = ("--firmware", "BG96MAR02A08M1G") + extra
        self.sim = Service(python_module("tools.modemsim", "--profile", self.modem, "--link", self.port,
                                         "--resolve", "%s:8883=127.0.0.1:%s" % (HOST, self.twin_ports["tls"]),
                                         "--state-dir", self.module_flash,
                                         "--control", os.path.join(self.sockdir, "modem.sock"),
                                         "--transcript", self.logs / ("modem-transcript-%s.txt" % self.tag), *extra),
                           "READY", self.logs / ("modemsim-%s.log" % self.tag))
        return self.sim

    def stop_modem(self):
        if self.sim is not None:
            self.sim.stop()
            self.sim = None

    def modem_control(self, obj):
        import socket

        s = socket.socket(socket.AF_UNIX)
        s.connect(os.path.join(self.sockdir, "modem.sock"))
        s.sendall(json.dumps(obj).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            d = s.recv(65536)
            if not d:
                break
            buf += d
        s.close()
        return json.loads(buf)

    def start_firmware(self, heapsize=None, mpy_dir=None, args=(), main=None, micropython=None, micropypath=None,
                       append_log=False):
        """Start firmware/main.py in the device's flash folder; its console output goes to ``self.fwlog`` (started
        afresh, or continued with ``append_log``: the same device booting again)."""
        # micropython: another unix-port binary (e.g. tools/frozen_unix.py's, the firmware frozen into it) and
        # micropypath: its MICROPYPATH (".frozen" for that one); by default .venv's micropython on the sources
        path = micropypath or (MICROPYPATH if mpy_dir is None else ".frozen:" + str(mpy_dir))
        cmd = [micropython or MICROPYTHON] + (["-X", "heapsize=" + heapsize] if heapsize else [])
        cmd += [str(main or ROOT / "firmware" / "main.py"), "--port", str(self.port)] + list(args)
        self.fwlog = self.logs / ("firmware-%s.log" % self.tag)
        if not append_log:
            self.fwlog.write_text("")
        self._out = open(self.fwlog, "ab")
        self.fw = subprocess.Popen(cmd, cwd=str(self.flash), env=dict(os.environ, MICROPYPATH=path), stdout=self._out,
                                   stderr=subprocess.STDOUT)
        return self.fw

    def stop_firmware(self, sig=signal.SIGKILL):
        if self.fw is not None and self.fw.poll() is None:
            self.fw.send_signal(sig)
            try:
                self.fw.wait(5)
            except subprocess.TimeoutExpired:
                self.fw.kill()
                self.fw.wait(5)
        self.fw = None

    def wait(self, what, fn, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = fn()
            if r:
                return r
            if self.fw is not None and self.fw.poll() is not None:
                raise SystemExit("the firmware stopped (exit %s); see %s" % (self.fw.returncode, self.fwlog))
            time.sleep(0.1)
        raise SystemExit("timed out waiting for %s; logs in %s" % (what, self.logs))

    def samples(self):
        return len(self.ctl.telemetry(self.device).get("samples", []))

    def stop(self):
        self.stop_firmware(signal.SIGTERM)
        self.stop_modem()
        for p in reversed(self.procs):
            p.stop()
        shutil.rmtree(self.sockdir, ignore_errors=True)


def _pki(work, fresh, say=print):
    d = work / "pki"
    if fresh or not (d / "ca.pem").exists():
        pki.generate(d, hosts=("localhost", "127.0.0.1", HOST))
        say("Test PKI: generated a CA, a server certificate for %s and a device certificate in %s" % (HOST, d))
    else:
        say("Test PKI: reusing %s" % d)
    return {n.replace(".", "_"): str(d / n) for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


# per variant: the two commands the demo sends (the second sets the interval to 1 s) as control specs, and
# where the reply carries its values
COMMANDS = {
    "huawei": ((dict(service_id="Config", cmd="status", paras={}), "body"),
               (dict(service_id="Config", cmd="set_interval", paras={"value": 1}), "body")),
    "huawei-binary": ((dict(service_id="Config", cmd="status", paras={}, binary=True), "body"),
                      (dict(service_id="Config", cmd="set_interval", paras={"value": 1}, binary=True), "body")),
    "iotda": ((dict(kind="command", service_id="Config", command_name="status", paras={}), "paras"),
              (dict(kind="properties_set", services=[{"service_id": "Telemetry", "properties": {"interval": 1}}]),
               "result_desc")),
    "enos": ((dict(kind="service", service_id="status", params={}), "data"),
             (dict(kind="measurepoint_set", params={"interval": 1}), "data")),
    "mqtt": ((dict(cmd="status", params={}), "data"), (dict(cmd="set_interval", params={"interval": 1}), "data")),
}
COMMANDS["enos-dynamic"] = COMMANDS["enos"]
NARRATED = {"huawei": "Huawei OceanConnect (legacy)", "huawei-binary": "Huawei OceanConnect (legacy, binary codec)",
            "iotda": "Huawei IoTDA", "enos": "EnOS", "enos-dynamic": "EnOS (dynamic activation)",
            "mqtt": "a plain MQTT broker"}


def _ok(rep):
    # success in each cloud's words: errcode 0 (legacy), result_code 0 or absent (IoTDA), code 200 (EnOS), 0
    for key, good in (("errcode", 0), ("result_code", 0), ("code", 200)):
        if key in rep:
            return rep[key] == good or (key == "code" and rep[key] == 0)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--cloud", choices=tuple(VARIANTS), default="huawei")
    ap.add_argument("--modem", choices=("bg96", "bg95", "bc660k"), default="bg96")
    ap.add_argument("--transport", choices=("native", "socket"), default="native")
    ap.add_argument("--scenario", choices=("basic", "outage"), default="basic",
                    help="basic: commands and telemetry; outage: network loss, modem crash, MCU power cut")
    ap.add_argument("--forever", action="store_true", help="keep running after the scenario (Ctrl-C stops)")
    ap.add_argument("--fresh", action="store_true", help="forget the certificates, the module's flash and the device's state")
    ap.add_argument("--workdir", default=str(ROOT / "build" / "demo"))
    ap.add_argument("--timeout", type=float, default=60, help="seconds each step may take (default 60)")
    a = ap.parse_args(argv)
    cloud, huawei = VARIANTS[a.cloud]
    dynamic = a.cloud == "enos-dynamic"
    modem_name = {"bg96": "BG96", "bg95": "BG95-M3", "bc660k": "BC660K-GL"}[a.modem]
    print("cellmqtt demo: %s modem, %s, %s MQTT transport" % (modem_name, NARRATED[a.cloud], a.transport))
    rig = None
    tail = None
    transcript = None
    try:
        over = {"cloud": {"huawei": huawei}} if huawei else {}
        rig = Rig(a.workdir, cloud, a.modem, a.transport, dynamic, a.fresh, variant=a.cloud, cfg_over=over)
        print("Cloud twin (%s rules, product model checked) is listening with TLS on 127.0.0.1:%s" % (
            NARRATED[a.cloud], rig.twin_ports["tls"]))
        print("Emulated %s on %s (its network side reaches the twin over real TLS)" % (modem_name, rig.port))
        print("Device flash: %s (config.json, secrets.json, certs/ca.pem)" % rig.flash)
        print("Starting the firmware on the MicroPython unix port...")
        transcript = rig.logs / ("at-%s.txt" % rig.tag)
        transcript.write_text("")  # this run's (a power cut in the outage scenario appends the next boot's)
        fw_args = ["--transcript", str(transcript)]
        rig.start_firmware(args=fw_args)
        fw = rig.fw
        tail = Tail(rig.fwlog, modem_name)
        tail.start()
        device = rig.device
        ctl = rig.ctl

        def wait(what, fn):
            return rig.wait(what, fn, a.timeout)

        if a.scenario == "outage":
            return outage(rig, tail, a.timeout, fw_args)

        shown = set()

        def show_samples():
            tel = ctl.telemetry(device)
            for m in tel.get("recent", []):
                sid = m.get("sample_id")
                if sid is None or sid in shown:
                    continue
                shown.add(sid)
                _say("Telemetry accepted by the twin's product model: sample %s %s" % (sid, _readings(m)))
            for r in tel.get("rejected", [])[len(shown_rejected):]:
                shown_rejected.append(r)
                _say("[rejected] the cloud refused sample %s: %s" % (r.get("sample_id"), r.get("why")))
            return tel

        shown_rejected = []
        wait("the device to come online", lambda: any(x.endswith(" INFO running") for x in tail.seen))
        time.sleep(0.3)  # let the narration of the connection print first
        wait("3 samples at the cloud", lambda: len(show_samples().get("samples", [])) >= 3)
        conn = [c for c in ctl.connections(device) if c["accepted"]][-1]
        _say("The twin saw: TLS=%s, client id %s, credentials checked and accepted." % (conn["tls"], conn["client_id"]))
        (first, where1), (second, where2) = COMMANDS[a.cloud]
        cid = ctl.command(device, **first)
        _say("Cloud sends the command 'status' down (id %s)..." % cid)
        rep = wait("the command's reply", lambda: (ctl.command_record(cid) or {}).get("reply"))
        body = rep.get(where1) or {}
        _say("Reply came back: %s" % ", ".join("%s=%s" % (k, body.get(k)) for k in ("state", "uptime", "interval",
                                                                                  "outbox", "published") if k in body))
        cid = ctl.command(device, **second)
        _say("Cloud sets the telemetry interval to 1 s%s..." % (" (a property set)" if a.cloud == "iotda" else ""))
        rep = wait("the interval reply", lambda: (ctl.command_record(cid) or {}).get("reply"))
        ok = _ok(rep)
        _say("Device confirmed (%s)." % ("success" if ok else "FAILED: %s" % rep))
        n = len(ctl.telemetry(device).get("samples", []))
        wait("faster samples", lambda: len(show_samples().get("samples", [])) >= n + 3)
        tel = ctl.telemetry(device)
        ids = sorted(int(s) for s in tel["samples"])
        gaps = (ids[-1] - ids[0] + 1) - len(ids)
        print("Demo complete: %d samples delivered this run, %d missing, %d duplicates, %d rejected; 2 commands "
              "answered." % (len(ids), gaps, tel["duplicates"], len(tel.get("rejected", []))))
        if a.forever:
            print("Running on (--forever); Ctrl-C stops.")
            while fw.poll() is None:
                show_samples()
                time.sleep(1)
        return 0 if gaps == 0 and ok and not tel.get("rejected") else 1
    except KeyboardInterrupt:
        print("stopped")
        return 0
    finally:
        if tail:
            tail.stop_ = True
        if rig is not None:
            rig.stop()
            if transcript is not None:
                _written(transcript, rig.fwlog)


def _written(transcript, log):
    rel = lambda p: os.path.relpath(p, ROOT) if str(p).startswith(str(ROOT)) else str(p)  # noqa: E731
    print("Wrote the AT transcript %s and the firmware log %s. To see them as a timeline with every code "
          "explained:" % (rel(transcript), rel(log)))
    print("  python -m tools.explain %s %s [--html timeline.html]" % (rel(transcript), rel(log)))


def outage(rig, tail, timeout, fw_args):
    """--scenario outage: a network loss, a modem crash and a power cut of the MCU, then the sample count."""
    ctl, device = rig.ctl, rig.device

    def wait(what, fn, t=timeout):
        return rig.wait(what, fn, t)

    def tel():
        return ctl.telemetry(device)

    def connects():
        return len([c for c in ctl.connections(device) if c["accepted"]])

    def depth_after(first_id):
        # the outbox depth each sample saw when it was taken (the "outbox" reading), for samples from first_id on
        out = [m["data"].get("outbox", 0) for m in tel().get("recent", []) if isinstance(m.get("data"), dict)
               and _int(m.get("sample_id")) >= first_id]
        return max(out or [0])

    def back_online(what, n):
        wait("the device to reconnect after the %s" % what, lambda: connects() > n)
        reached = tel()["unique"]
        last = max((_int(s) for s in tel()["samples"]), default=0)
        wait("the outbox to drain after the %s" % what,
             lambda: tel()["unique"] >= reached + 2 and _latest_outbox(tel()) <= 1)
        return last

    wait("the device to come online", lambda: any(x.endswith(" INFO running") for x in tail.seen))
    wait("3 samples at the cloud", lambda: tel()["unique"] >= 3)
    time.sleep(0.3)
    _say("Online: %d samples delivered. Now the outage scenario." % tel()["unique"])

    # 1. network loss: the cell goes away (+CEREG 2) and takes the MQTT link with it (+QMTSTAT 2); back after 8 s
    n, first = connects(), max(_int(s) for s in tel()["samples"]) + 1
    rig.modem_control({"cmd": "fault", "do": [{"action": "registration_lost", "stat": 2, "recover_s": 8,
                                               "drop_links": True}, {"action": "pdp_lost"}]})
    _say("Network lost for 8 s: the cell is gone (+CEREG: 2, searching), the data connection and the MQTT link "
         "with it. Samples are still taken every 2 s and wait in the flash outbox...")
    back_online("network loss", n)
    _say("Network back: reconnected; the outbox held up to %d samples during the outage and has been sent "
         "(depth %d now)." % (depth_after(first), _latest_outbox(tel())))

    # 2. the modem crashes and reboots by itself
    n, first = connects(), max(_int(s) for s in tel()["samples"]) + 1
    rig.modem_control({"cmd": "fault", "do": {"action": "reset", "mode": "crash"}})
    _say("Modem crash: the module rebooted on its own (RDY), losing its PDP context, TLS and MQTT sessions...")
    back_online("modem reset", n)
    _say("Recovered from the modem reset; outbox depth up to %d meanwhile, %d now." % (
        depth_after(first), _latest_outbox(tel())))

    # 3. power cut of the MCU: the firmware process is killed (no goodbye), off for 3 s, then boots again
    n, before = connects(), tel()["unique"]
    rig.stop_firmware(signal.SIGKILL)
    _say("Power cut of the MCU: the firmware was killed mid-run (SIGKILL, as a power loss). Whatever it had "
         "not yet handed to the cloud is in its flash outbox. Power back in 3 s...")
    time.sleep(3)
    rig.start_firmware(args=fw_args, append_log=True)
    _say("The MCU boots again: the firmware reads its outbox, finds the module still holding the old MQTT "
         "session, and reconnects.")
    back_online("power cut", n)
    t = tel()
    ids = sorted(_int(s) for s in t["samples"])
    gaps = (ids[-1] - ids[0] + 1) - len(ids)
    dup = t["duplicates"]
    _say("After the power cut: %d more samples arrived (outbox depth %d now)." % (t["unique"] - before,
                                                                                   _latest_outbox(t)))
    if gaps == 0:
        how = "each exactly once" if dup == 0 else (
            "each stored once: %d QoS 1 re-sends (published again because their acknowledgement was cut off) "
            "were recognised by their id and dropped" % dup)
        print("Outage demo complete: every sample arrived, ids %d..%d, 0 lost, %s; %d rejected." % (
            ids[0], ids[-1], how, len(t.get("rejected", []))))
    else:
        missing = sorted(set(range(ids[0], ids[-1] + 1)) - set(ids))
        print("Outage demo FAILED: %d samples lost (ids %s)." % (gaps, missing[:20]))
    return 0 if gaps == 0 and not t.get("rejected") else 1


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return -1


def _latest_outbox(t):
    recent = [m for m in t.get("recent", []) if isinstance(m.get("data"), dict)]
    if not recent:
        return 0
    return max(recent, key=lambda m: _int(m.get("sample_id")))["data"].get("outbox", 0)


def _readings(m):
    d = m.get("data") or {}
    return " ".join("%s=%s" % (k, v) for k, v in list(d.items())[:4]) if isinstance(d, dict) else str(d)[:60]


if __name__ == "__main__":
    sys.exit(main())
