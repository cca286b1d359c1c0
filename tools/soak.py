"""The chaos soak: the firmware (MicroPython unix port) against the modem emulator and the cloud twin for a
while, with random faults of every class, and a verdict.

    python -m tools.soak [--modem bg96|bc660k] [--minutes 30] [--seed N] [--every 20] [--workdir DIR] [--json]

What it does (all choices from one seeded random.Random, so a run can be repeated with ``--seed``):

* the emulator writes its output in random pieces (``--chunking``), so no line ever arrives whole;
* every ``--every`` seconds on average (exponential gaps) one fault, drawn from these classes:
  - modem: a crash reset, ``+QMTSTAT`` link loss, PDP loss, registration loss, a failed TLS handshake, a
    refused CONNECT (server unavailable), a swallowed or late command, garbage on the line, a lost first byte,
    trickled output, a lost ``+QMTPUB`` acknowledgement, (BC660K-GL) sleep;
  - power: the MCU loses power (SIGKILL) and comes back 0-3 s later;
  - storage: the flash fills up (every write ENOSPC, host_tests/mpy/fsfull_main.py) for 5-20 s;
  - hostile cloud: a command carrying AT lines (``+QMTSTAT``, ``RDY``), pretty-printed JSON, invalid JSON,
    a 4 KB command, control characters, a burst of 20 commands;
  - interval: set_interval to 1-3 s while the sampler runs;
* at the end: faults stop, the device drains its outbox, and the verdict is checked:
  - zero samples lost: the ids the twin accepted are contiguous from the first to the last the device issued,
    and the device reports nothing dropped;
  - duplicates only where QoS 1 allows: at most a few per disruptive fault (a publish whose PUBACK was lost);
  - commands answered: every well-formed command gets a reply, but for one in flight per disruptive fault
    (a command the modem acknowledged and the power cut or reset took before the reply);
  - every task alive: the firmware still runs, its status lists every task ``ok``, no traceback in its logs;
  - heap flat: the heap in use after a collection (the status reply's ``heap``), sampled while running with
    an empty outbox, grows by less than ``--heap-slack`` bytes over the last power-on period;
  - no secret in any file the device, the firmware or the emulator wrote (the flash except secrets.json, the
    firmware's logs, both transcripts): not the device secret, not any CONNECT password the twin accepted
    (computed from its client id), in clear or hex.

Power cuts are not drawn while the flash is full: the samples it holds in RAM then die with the power, which
is physics, not a bug (host_tests/test_e2e_field.py covers the full flash on its own). Exit status 0 when every
check holds, 1 otherwise; ``--json`` prints the figures as one JSON line (``make soak``, the README).
"""

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tools.demo import HUAWEI_ID, HUAWEI_SECRET, MICROPYPATH, MICROPYTHON, ROOT, Rig

FSFULL_MAIN = ROOT / "host_tests" / "mpy" / "fsfull_main.py"

HOSTILE = [
    '{"msgType":"cloudReq","serviceId":"Config","cmd":"status","paras":{"x":"\r\n+QMTSTAT: 0,1\r\n"},"mid":{mid}}',
    '{"msgType":"cloudReq","serviceId":"Config","cmd":"status","paras":{"x":"\r\nRDY\r\n"},"mid":{mid}}',
    '{\r\n  "msgType": "cloudReq",\r\n  "serviceId": "Config",\r\n  "cmd": "status",\r\n  "paras": {},\r\n'
    '  "mid": {mid}\r\n}',
    '{"msgType":"cloudReq","serviceId":"Config","cmd":"status","paras":{"x":"\x1b[2J\x07\x00"},"mid":{mid}}',
    '{"msgType":"cloudReq","serviceId":"Config","cmd":"status",,"mid":{mid}}',
    '{"msgType":"cloudReq","serviceId":"Config","cmd":"status","paras":{"pad":"' + "x" * 4096 + '"},"mid":{mid}}',
]

# (weight, class) of the faults drawn
CLASSES = ((5, "modem"), (1, "power"), (1, "storage"), (2, "hostile"), (1, "interval"))
DISRUPTIVE = ("reset", "qmtstat", "pdp_lost", "registration_lost", "tls_fail", "broker_refuse", "no_reply",
              "drop_urc", "power", "drop_first_byte", "garbage", "sleep")


def modem_faults(modem, rnd):
    """One modem/network fault action for the emulator's control socket."""
    choices = [
        {"action": "reset", "mode": "crash"},
        {"action": "qmtstat", "client": 0, "code": rnd.choice((1, 2))},
        {"action": "pdp_lost"},
        {"action": "registration_lost", "stat": 2, "recover_s": rnd.uniform(1, 6)},
        {"action": "tls_fail", "count": 1, "kind": "handshake"},
        {"action": "broker_refuse", "code": 3, "count": 1},
        {"action": "no_reply"},
        {"action": "late_reply", "ms": rnd.randint(200, 3000)},
        {"action": "garbage", "where": "now"},
        {"action": "drop_first_byte", "count": 1},
        {"action": "slow_output", "byte_ms": 5, "count": 2},
        {"action": "drop_urc", "match": "+QMTPUB:", "count": 1},
    ]
    if modem == "bc660k":
        choices.append({"action": "sleep"})
    return rnd.choice(choices)


class Soak:
    def __init__(self, a):
        self.a = a
        self.rnd = random.Random(a.seed)
        self.work = Path(a.workdir)
        self.rig = Rig(self.work, "huawei", a.modem, fresh=True, quiet=True, interval=a.interval)
        self.rig.stop_modem()  # again, with chunked output
        self.rig.start_modem("--chunking", str(a.seed), "--latency", a.latency)
        self.fsfull = self.work / "fsfull.flag"
        self.runs = 0
        self.fw = None
        self.fw_logs = []
        self.counts = {}
        self.heap = []  # (run, heap) while running with an empty outbox
        self.full_until = 0.0
        self.disruptions = 0
        self.errors = []
        self.commands = []  # ids of well-formed commands sent: every one must be answered

    # ---- the firmware process

    def start_fw(self):
        self.runs += 1
        log = self.rig.logs / ("soak-firmware-%d.log" % self.runs)
        self.fw_logs.append(log)
        tr = self.rig.logs / "soak-firmware-transcript.txt"
        cmd = [MICROPYTHON] + (["-X", "heapsize=" + self.a.heapsize] if self.a.heapsize else []) + [str(FSFULL_MAIN), "--port", str(self.rig.port),
               "--transcript", str(tr)]
        env = dict(os.environ, MICROPYPATH=MICROPYPATH, FSFULL=str(self.fsfull))
        self._out = open(log, "ab")
        self.fw = subprocess.Popen(cmd, cwd=str(self.rig.flash), env=env, stdout=self._out, stderr=subprocess.STDOUT)

    def kill_fw(self, sig=signal.SIGKILL):
        if self.fw is not None and self.fw.poll() is None:
            self.fw.send_signal(sig)
            try:
                self.fw.wait(10)
            except subprocess.TimeoutExpired:
                self.fw.kill()
                self.fw.wait(5)
        self._out.close()

    # ---- cloud side

    def command(self, spec, timeout=0):
        return self.rig.ctl.command(self.rig.device, **spec)

    def status(self, timeout=60):
        ctl = self.rig.ctl
        rec = ctl.wait_reply(ctl.command(self.rig.device, service_id="Config", cmd="status", paras={}), timeout)
        return rec["reply"].get("body") or {}

    def samples(self):
        return self.rig.ctl.telemetry(self.rig.device)

    # ---- faults

    def note(self, what):
        self.counts[what] = self.counts.get(what, 0) + 1
        if not self.a.json:
            print("%7.1f s  %s" % (time.monotonic() - self.t0, what), flush=True)

    def fault(self):
        now = time.monotonic()
        weights = [w for w, _ in CLASSES]
        cls = self.rnd.choices([c for _, c in CLASSES], weights)[0]
        full = now < self.full_until
        if cls == "power" and full:
            cls = "modem"
        if cls == "modem":
            act = modem_faults(self.a.modem, self.rnd)
            self.rig.modem_control({"cmd": "fault", "do": act})
            self.note("modem " + act["action"])
            if act["action"] in DISRUPTIVE:
                self.disruptions += 1
        elif cls == "power":
            self.kill_fw()
            time.sleep(self.rnd.uniform(0, 3))
            self.start_fw()
            self.disruptions += 1
            self.note("power cut")
        elif cls == "storage":
            if not full:
                self.fsfull.write_text("full")
                self.full_until = now + self.rnd.uniform(5, 20)
                self.note("flash full")
        elif cls == "hostile":
            i = self.rnd.randrange(len(HOSTILE) + 1)
            if i == len(HOSTILE):
                for _ in range(20):
                    self.commands.append(self.command(dict(service_id="Config", cmd="status", paras={})))
                self.note("hostile burst of 20")
            else:
                self.commands.append(self.command(dict(service_id="Config", cmd="status", raw=HOSTILE[i])))
                self.note("hostile command %d" % i)
        else:
            v = self.rnd.randint(1, 3)
            self.commands.append(self.command(dict(service_id="Config", cmd="set_interval", paras={"value": v})))
            self.note("set_interval %d" % v)

    def tick(self):
        if self.full_until and time.monotonic() >= self.full_until:
            self.fsfull.unlink(missing_ok=True)
            self.full_until = 0.0
            self.note("flash space back")
        if self.fw.poll() is not None:
            self.errors.append("the firmware exited (%s) at %.0f s" % (self.fw.returncode, time.monotonic() - self.t0))
            self.start_fw()

    # ---- the run

    def run(self):
        a = self.a
        self.t0 = time.monotonic()
        self.start_fw()
        self.rig.wait("the first sample", lambda: self.samples()["unique"] >= 1, timeout=120)
        self.startup_s = round(time.monotonic() - self.t0, 1)
        end = self.t0 + a.minutes * 60
        next_fault = time.monotonic() + self.rnd.expovariate(1.0 / a.every)
        next_heap = time.monotonic() + 30
        while time.monotonic() < end:
            self.tick()
            now = time.monotonic()
            if now >= next_fault:
                self.fault()
                next_fault = now + max(2.0, self.rnd.expovariate(1.0 / a.every))
            if now >= next_heap:
                next_heap = now + 30
                self.sample_heap()
            time.sleep(0.2)
        return self.finish()

    def sample_heap(self):
        if self.full_until:
            return
        try:
            body = self.status(timeout=6)
        except Exception:  # busy reconnecting, or lost: next time
            return
        if body.get("state") == "running" and body.get("outbox") == 0 and not (body.get("stored") or {}).get("ram") \
                and body.get("heap"):
            self.heap.append((self.runs, body["heap"]))

    def finish(self):
        a = self.a
        self.t_end = time.monotonic()
        self.fsfull.unlink(missing_ok=True)
        self.full_until = 0.0
        verdict = {}
        # drain: the device's outbox empties and its status is answered
        deadline = time.monotonic() + 180
        body = {}
        while time.monotonic() < deadline:
            self.tick()
            try:
                body = self.status(timeout=8)
            except Exception:  # lost (a BC660K-GL loses what arrives while it sends) or late: ask again
                continue
            if body.get("outbox") == 0 and not (body.get("stored") or {}).get("ram") and body.get("state") == "running":
                break
            time.sleep(1)
        if body.get("heap"):
            self.heap.append((self.runs, body["heap"]))  # at rest, the last power-on period
        self.drain_s = round(time.monotonic() - self.t_end, 1)
        tel = self.samples()
        ids = sorted(int(i) for i in tel["samples"])
        missing = sorted(set(range(ids[0], ids[-1] + 1)) - set(ids)) if ids else []
        answered = 0
        for cid in self.commands:
            try:
                if self.rig.ctl.command_record(cid)["reply"] is not None:
                    answered += 1
            except Exception:
                pass
        logs = "".join(p.read_text(errors="replace") for p in self.fw_logs)
        last = [h for r, h in self.heap if r == self.runs]
        growth = (min(last[-2:]) - min(last[:2])) if len(last) >= 3 else None
        secrets = self.secret_hits()
        verdict.update({
            "modem": a.modem, "minutes": a.minutes, "drain_s": self.drain_s,
            "startup_s": self.startup_s, "seed": a.seed, "faults": sum(self.counts.values()),
            "fault_counts": self.counts, "samples": len(ids), "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None, "missing": missing[:20], "lost": len(missing),
            "device_dropped": body.get("dropped"), "duplicates": tel["duplicates"], "disruptions": self.disruptions,
            "power_cuts": self.counts.get("power cut", 0), "commands_sent": len(self.commands),
            "commands_answered": answered, "tasks": body.get("tasks"), "task_restarts": body.get("task_restarts"),
            "task_failure": body.get("task_failure"), "reconnects": body.get("reconnects"),
            "heap_samples": len(last), "heap_first": last[0] if last else None, "heap_last": last[-1] if last else None,
            "heap_growth": growth, "secret_hits": secrets, "firmware_exits": self.errors,
            "tracebacks": logs.count("Traceback"), "unretrieved": logs.count("Task exception wasn't retrieved"),
        })
        fails = []
        if not ids:
            fails.append("no sample arrived")
        if missing or body.get("dropped"):
            fails.append("samples lost: %d missing, %s dropped" % (len(missing), body.get("dropped")))
        if tel["duplicates"] > 3 * max(1, self.disruptions):
            fails.append("%d duplicates for %d disruptive faults" % (tel["duplicates"], self.disruptions))
        tasks = body.get("tasks") or {}
        if not tasks or any(v != "ok" for v in tasks.values()):
            fails.append("tasks not all ok: %s" % tasks)
        if self.errors or verdict["tracebacks"] or verdict["unretrieved"]:
            fails.append("firmware died or raised: %s, %d tracebacks" % (self.errors, verdict["tracebacks"]))
        if growth is not None and growth > a.heap_slack:
            fails.append("heap grew by %d bytes (slack %d)" % (growth, a.heap_slack))
        if len(self.commands) - answered > self.disruptions:  # one in flight may die with each disruption
            fails.append("only %d of %d commands answered (%d disruptive faults)" % (
                answered, len(self.commands), self.disruptions))
        if secrets:
            fails.append("secrets found in %s" % secrets)
        verdict["fails"] = fails
        verdict["ok"] = not fails
        return verdict

    def secret_hits(self):
        """Files the device, the firmware or the emulator wrote that hold a secret (clear or hex)."""
        if str(ROOT / "lib") not in sys.path:
            sys.path.insert(0, str(ROOT / "lib"))
        from cellmqtt import huawei  # the firmware's own credential maths, on CPython

        needles = {HUAWEI_SECRET.encode()}
        for c in self.rig.ctl.connections(self.rig.device):
            hour = str(c.get("client_id", "")).split("_")[-1]
            if len(hour) == 10 and hour.isdigit():
                for sig in (0, 1):
                    needles.add(huawei.credentials(HUAWEI_ID, HUAWEI_SECRET, hour, sig)[2].encode())
        forms = set()
        for n in needles:
            forms |= {n, n.hex().encode(), n.hex().upper().encode()}
        hits = []
        files = [p for p in self.rig.flash.rglob("*") if p.is_file() and p.name != "secrets.json"]
        files += [p for p in self.rig.logs.iterdir() if p.is_file() and not p.name.startswith("twin-")]
        files += [p for p in self.rig.module_flash.rglob("*") if p.is_file()] if self.rig.module_flash.exists() else []
        for p in files:
            data = p.read_bytes()
            if any(f in data for f in forms):
                hits.append(str(p.relative_to(self.work)))
        return hits

    def stop(self):
        self.kill_fw(signal.SIGTERM)
        self.rig.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.soak", description=__doc__.splitlines()[0])
    ap.add_argument("--modem", choices=("bg96", "bc660k", "bg95"), default="bg96")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--every", type=float, default=20, help="mean seconds between faults (default 20)")
    ap.add_argument("--interval", type=int, default=2, help="telemetry interval at start (s)")
    ap.add_argument("--latency", choices=("fast", "realistic"), default="fast")
    ap.add_argument("--heapsize", default=None, help="the firmware's -X heapsize (default: the unix port's)")
    ap.add_argument("--heap-slack", type=int, default=2048, help="allowed heap growth (bytes) over the last run")
    ap.add_argument("--workdir", default=None, help="default build/soak/<modem>")
    ap.add_argument("--json", action="store_true", help="print the verdict as one JSON line only")
    a = ap.parse_args(argv)
    if a.minutes <= 0 or a.every <= 0 or not math.isfinite(a.minutes):
        ap.error("--minutes and --every must be positive")
    a.workdir = a.workdir or str(ROOT / "build" / "soak" / a.modem)
    shutil.rmtree(a.workdir, ignore_errors=True)
    soak = Soak(a)
    try:
        verdict = soak.run()
    finally:
        soak.stop()
    if a.json:
        print("SOAK " + json.dumps(verdict, sort_keys=True), flush=True)
    else:
        print(json.dumps(verdict, indent=1, sort_keys=True))
        print("soak %s: %s (logs in %s)" % (a.modem, "PASSED" if verdict["ok"] else "FAILED: " + "; ".join(
            verdict["fails"]), soak.rig.logs))
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
