"""End-to-end support: the real firmware (firmware/main.py on the MicroPython unix port) talking over a pty to
the modem emulator, whose network side reaches the cloud twin over real TLS.

``Device(...)`` prepares a "flash" directory (config.json, secrets.json, certs/) for one device of one cloud,
starts the twin and the emulator, and runs/kills/restarts the firmware process. Tests observe through the
twin's control socket (telemetry, commands, connections) and inject faults through the emulator's.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))
MICROPYPATH = ".frozen:" + ":".join(str(ROOT / p) for p in ("lib", "firmware", "boards/unix"))
from tools.demo import (  # noqa: F401
    ENOS_DK,
    ENOS_DS,
    ENOS_PK,
    ENOS_PS,
    HOST,
    HUAWEI_ID,
    HUAWEI_SECRET,
    device_config,
    device_id,
    devices,
)


class Firmware:
    """The firmware as a MicroPython process, in its flash directory."""

    def __init__(self, flash, port, log_path, heapsize=None, transcript=None, main=None, env=None):
        self.flash = Path(flash)
        self.port = port
        self.log_path = Path(log_path)
        self.heapsize = heapsize
        self.transcript = transcript
        self.main = main or ROOT / "firmware" / "main.py"  # or a wrapper that fakes something below the app
        self.env = env or {}
        self.proc = None

    def start(self):
        cmd = [MICROPYTHON]
        if self.heapsize:
            cmd += ["-X", "heapsize=" + self.heapsize]
        cmd += [str(self.main), "--port", self.port]
        if self.transcript:
            cmd += ["--transcript", str(self.transcript)]
        env = dict(os.environ, MICROPYPATH=MICROPYPATH, **self.env)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=str(self.flash), env=env, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self._log.close()

    def wait(self, timeout=20):
        return self.proc.wait(timeout)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class Device:
    """One device of one cloud, end to end. ``start_twin``/``start_modemsim``: the fixtures' factories."""

    def __init__(self, tmp_path, pki, start_twin, start_modemsim, cloud="huawei", modem="bg96", transport="native",
                 dynamic=False, mtls=False, interval=2, sim_opts=None, twin_opts=None, config_over=None, **over):
        self.tmp = Path(tmp_path)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.cloud, self.modem_kind, self.dynamic = cloud, modem, dynamic
        twin_cloud = cloud  # huawei (legacy), iotda, enos or mqtt: the twin's rules
        twin_opts = dict(twin_opts or {})
        require = twin_opts.pop("require_client_cert", mtls)
        self.twin = start_twin(twin_cloud, devices(twin_cloud, dynamic), require_client_cert=require, **twin_opts)
        ti = self.twin.info
        rules = ["%s:8883=127.0.0.1:%d" % (HOST, ti["tls_port"]), "%s:1883=127.0.0.1:%d" % (HOST, ti["plain_port"])]
        so = dict(sim_opts or {})
        so.setdefault("state_dir", str(self.tmp / "module-flash"))
        self.sim = start_modemsim(modem, resolve=rules, **so)
        self.flash = self.tmp / "flash"
        (self.flash / "certs").mkdir(parents=True, exist_ok=True)
        names = ["ca.pem"] + (["client.pem", "client.key"] if mtls else [])
        for n in names:
            shutil.copy(pki[n.replace(".", "_")], self.flash / "certs" / n)
        cfg, sec = device_config(cloud, modem, transport, dynamic, mtls, interval, **dict(config_over or {}, **over))
        self.write_config(cfg, sec)
        self.fw = None
        self.runs = 0

    @property
    def device(self):
        return device_id(self.cloud)

    def write_config(self, cfg, sec=None):
        (self.flash / "config.json").write_text(json.dumps(cfg))
        if sec is not None:
            (self.flash / "secrets.json").write_text(json.dumps(sec))

    def start(self, heapsize=None, transcript=None, main=None, env=None):
        self.runs += 1
        self.fw = Firmware(self.flash, self.sim.info["port"], self.tmp / ("firmware-%d.log" % self.runs), heapsize,
                           transcript, main, env).start()
        return self.fw

    def stop(self):
        if self.fw is not None:
            self.fw.kill()

    # ---- observation

    def telemetry(self):
        return self.twin.control.telemetry(self.device)

    def wait_samples(self, n, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tel = self.telemetry()
            if len(tel.get("samples", [])) >= n:
                return tel
            if self.fw is not None and not self.fw.alive():
                raise AssertionError("the firmware exited (%s):\n%s" % (self.fw.proc.returncode, self.fw.log_text()[-4000:]))
            time.sleep(0.2)
        raise AssertionError("only %d of %d samples after %s s; firmware log:\n%s" % (
            len(self.telemetry().get("samples", [])), n, timeout, self.fw.log_text()[-4000:] if self.fw else ""))

    def connections(self):
        return self.twin.control.connections(self.device)

    def fault(self, action):
        return self.sim.control({"cmd": "fault", "do": action})


# the status command and the interval set, in each cloud's words: (control spec, where the reply's values are,
# the success test)
_OK = {"huawei": lambda r: r.get("errcode") == 0, "iotda": lambda r: r.get("result_code", 0) == 0,
       "enos": lambda r: r.get("code") == 200, "mqtt": lambda r: r.get("code") == 0}


def commands_round_trip(d, binary=False, quiet=False):
    """Send 'status' and set the interval to 2 s the way the device's cloud does; assert both are answered with
    success and the status says running. Returns the status values the reply carried. quiet: send each right
    after a sample arrived (a BC660K-GL in data mode loses what arrives while it sends)."""
    tc = d.twin.control

    def send(spec):
        if quiet:
            d.wait_samples(d.telemetry()["unique"] + 1)
        return tc.command(d.device, **spec)

    cloud = d.cloud
    if cloud == "huawei":
        status = dict(service_id="Config", cmd="status", paras={}, binary=binary)
        setter = dict(service_id="Config", cmd="set_interval", paras={"value": 2}, binary=binary)
        where = "body"
    elif cloud == "iotda":
        status = dict(kind="command", service_id="Config", command_name="status", paras={})
        setter = dict(kind="properties_set", services=[{"service_id": "Telemetry", "properties": {"interval": 2}}])
        where = "paras"
    elif cloud == "enos":
        status = dict(kind="service", service_id="status", params={})
        setter = dict(kind="measurepoint_set", params={"interval": 2})
        where = "data"
    else:
        status, setter, where = dict(cmd="status", params={}), dict(cmd="set_interval", params={"interval": 2}), "data"
    rep = tc.wait_reply(send(status), 20)["reply"]
    assert _OK[cloud](rep), rep
    body = rep.get(where) or {}
    assert body.get("state", "running") == "running" and "interval" in body, rep
    rep = tc.wait_reply(send(setter), 20)["reply"]
    assert _OK[cloud](rep), rep
    return body

