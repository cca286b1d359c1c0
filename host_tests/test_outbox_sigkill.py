"""Acceptance test of the durable outbox: SIGKILL at random points, 100 times in a row on one outbox.

A MicroPython child (host_tests/mpy/outbox_killee.py, 64 KB heap) opens the outbox, prints what it recovered,
then appends and acks samples, printing each sid once append()/ack() returned. The parent kills it with
SIGKILL at a random moment -- either after it is READY or while it is still opening and recovering -- and
the child's filesystem shim splits writes and pauses inside writes and renames, so kills land inside
records and compactions. After every kill:

* the files are read by an independent parser of the documented format (test_outbox.ref_records), which must
  agree with what the child printed: every sample printed as stored and not printed as acked is there with
  its exact payload, no acked one is, sids are unique and increasing (only the one operation in flight when
  the kill came may go either way);
* the next child, a fresh MicroPython process, must open the outbox without error and recover exactly that
  state, and its first append must get the next sid.

Variants: drop-oldest under kills (a tiny max_records, no acks), and flash damage (truncation or a flipped
byte) injected after some kills, where the recovered state must equal the parser's state without the
damaged record. Set OUTBOX_KILL_SEED to replay a run; the seed is in every failure message.
"""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from outbox_killee import payload
from test_outbox import ref_apply, ref_records

ROOT = Path(__file__).resolve().parent.parent
KILLEE = ROOT / "host_tests" / "mpy" / "outbox_killee.py"
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))
ENV = dict(os.environ, MICROPYPATH=":".join([str(ROOT / p) for p in ("firmware", "lib", "host_tests/mpy")] + [".frozen"]))


POINTS = ["torn", "tmpwrite", "rename-before", "rename-after"]


def seed():
    return int(os.environ.get("OUTBOX_KILL_SEED") or random.randrange(1 << 30))


class Child:
    """One MicroPython child: its output lines, READY detection, SIGKILL."""

    def __init__(self, d, run, rseed, max_bytes, max_records, acks, pause="-", nth=0):
        # 96k: the 64-bit port compiles outbox.py from source into this heap (a device runs it frozen)
        args = [MICROPYTHON, "-X", "heapsize=96k", str(KILLEE), d, str(run), str(rseed), str(max_bytes),
                str(max_records), "1" if acks else "0", pause, str(nth)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        self.lines = []
        self.ready = threading.Event()
        self.paused = threading.Event()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        buf = b""
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):
            buf += chunk
            *done, buf = buf.split(b"\n")  # a line without its newline was cut by the kill: never used
            for ln in done:
                self.lines.append(ln.decode())
                if ln == b"READY":
                    self.ready.set()
                elif ln.startswith(b"P "):
                    self.paused.set()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._t.join(10)
        err = self.proc.stderr.read().decode()
        self.proc.stderr.close()
        self.proc.stdout.close()
        assert self.proc.returncode == -signal.SIGKILL, "child died by itself (%s):\n%s\n%s" % (
            self.proc.returncode, err, "\n".join(self.lines[-20:]))


def on_flash(d):
    """The log the outbox will recover from (the temp file only if a FAT-style rename removed the log)."""
    log, tmp = Path(d, "outbox.bin"), Path(d, "outbox.tmp")
    if log.exists():
        return log
    return tmp if tmp.exists() else None


class Model:
    """What the child's output says must be on flash."""

    def __init__(self, max_records):
        self.max_records = max_records
        self.expect = []  # [(sid, tag)] stored and not acked, oldest first
        self.acked = set()
        self.maxsid = 0
        self.w = None  # tag of an append in flight at the kill
        self.k = None  # sid of an ack in flight at the kill

    def run_output(self, lines, first_sid):
        """Fold one child's operations into the model; first_sid: the sid its first append must get."""
        ops = lines[lines.index("READY") + 1:] if "READY" in lines else []
        self.w = self.k = None
        for ln in ops:
            op, _, rest = ln.partition(" ")
            if op == "W":
                self.w = rest
            elif op == "S":
                sid, tag = rest.split()
                sid = int(sid)
                assert sid > self.maxsid, "sid %d not above %d" % (sid, self.maxsid)
                if first_sid is not None:
                    assert sid == first_sid, "first append got sid %d, expected %d" % (sid, first_sid)
                    first_sid = None
                self.maxsid = sid
                self.expect.append((sid, tag))
                self.w = None
            elif op == "K":
                self.k = int(rest)
            elif op == "A":
                sid = int(rest)
                self.expect = [e for e in self.expect if e[0] != sid]
                self.acked.add(sid)
                self.k = None
        return len(ops)

    def check(self, live):
        """live [(sid, payload bytes)] read back after the kill must be consistent with the child's output."""
        sids = [s for s, _ in live]
        assert sids == sorted(set(sids)), "sids not unique and increasing: %s" % sids
        tags = {}
        for sid, p in live:
            tag = p.split(b":")[0].decode()
            assert p == payload(tag), "sid %d: payload %r differs from what was stored" % (sid, p)
            tags[sid] = tag
        assert not self.acked & set(sids), "acked samples came back: %s" % sorted(self.acked & set(sids))
        exp = [e for e in self.expect if e[0] != self.k]  # an ack in flight may or may not have landed
        known = {s: t for s, t in self.expect}
        for sid in sids:
            if sid in known:
                assert tags[sid] == known[sid], "sid %d holds %s, stored as %s" % (sid, tags[sid], known[sid])
            else:  # only the append in flight may have landed unannounced, with a fresh sid
                assert tags[sid] == self.w and sid > self.maxsid, "unexpected sid %d (%s)" % (sid, tags[sid])
        kept = [e for e in exp if e[0] in tags]
        # drop-oldest may have removed the oldest (never others), and only as far as the bound requires
        assert kept == exp[len(exp) - len(kept):], "lost a stored sample that is not the oldest: %s vs %s" % (
            [e[0] for e in kept], [e[0] for e in exp])
        assert len(kept) >= min(len(exp), self.max_records - 1), "lost stored samples: %s of %s" % (
            [e[0] for e in kept], [e[0] for e in exp])
        assert len(sids) <= self.max_records

    def recovered(self, live):
        """Resynchronise with the state on flash once it has been checked."""
        self.expect = [(s, p.split(b":")[0].decode()) for s, p in live]
        self.maxsid = max([self.maxsid] + [s for s, _ in live])
        self.w = self.k = None


def damage(path, rnd, cov):
    """Truncate the log or flip one byte of it; return the records that survive, by the parser's view."""
    data = bytearray(path.read_bytes())
    recs = ref_records(bytes(data))
    if not recs:
        return recs
    o = rnd.randrange(len(data))
    if rnd.random() < 0.5:
        path.write_bytes(bytes(data[:o]))
        cov["truncated"] += 1
        return [r for r in recs if r[1] <= o]
    data[o] ^= 1 << rnd.randrange(8)
    path.write_bytes(bytes(data))
    cov["flipped"] += 1
    return [r for r in recs if not r[0] <= o < r[1]]


def run_kills(tmp_path, kills, max_bytes, max_records, acks, damage_every=0):
    rseed = seed()
    rnd = random.Random(rseed)
    d = str(tmp_path / "outbox")
    model = Model(max_records)
    cov = dict.fromkeys(["before_ready", "in_append", "in_ack", "torn_tail", "temp_left", "ops", "compactions",
                         "truncated", "flipped"] + ["P " + p for p in POINTS], 0)
    expect_live = None  # the exact state the next child must recover, when known
    first_sid = None
    t0 = time.monotonic()
    for run in range(kills + 1):
        ctx = "seed=%d run=%d" % (rseed, run)
        # a fixed schedule, so every kind of kill gets its share: every other run stops at one of the
        # points in turn; two runs in ten are killed while opening; the rest at a random moment after READY
        pause = POINTS[run // 2 % len(POINTS)] if run % 2 == 0 and run < kills else "-"
        early = run % 10 in (1, 7) and run < kills
        child = Child(d, run, rnd.randrange(1 << 30), max_bytes, max_records, acks, pause, rnd.randint(1, 3))
        try:
            if pause != "-":
                child.paused.wait(10)
            elif early:  # while it opens, recovers, maybe compacts
                time.sleep(rnd.uniform(0, 0.04))
            else:
                assert child.ready.wait(20), "%s: child never got READY" % ctx
                time.sleep(0.05 if run == kills else rnd.uniform(0, 0.12))
        finally:
            child.kill()
        lines = child.lines
        if "READY" in lines:
            dump = [ln.split(" ", 2) for ln in lines[:lines.index("READY")] if ln.startswith("R ")]
            live = [(int(s), p.encode()) for _, s, p in dump]
            try:
                if expect_live is not None:
                    assert live == expect_live, "recovered %s, the flash holds %s" % (
                        [s for s, _ in live], [s for s, _ in expect_live])
                model.check(live)
            except AssertionError as e:
                raise AssertionError("%s: %s" % (ctx, e)) from None
            model.recovered(live)
            stats = next(ln for ln in lines if ln.startswith("T ")).split()
            cov["compactions"] += int(([stats[2]] + [ln[2:] for ln in lines if ln.startswith("C ")])[-1])
        else:
            cov["before_ready"] += 1
        try:
            cov["ops"] += model.run_output(lines, first_sid if "READY" in lines else None)
        except AssertionError as e:
            raise AssertionError("%s: %s" % (ctx, e)) from None
        if run == kills:
            break
        for ln in lines:
            if ln.startswith("P "):
                cov[ln] += 1
        last = [ln for ln in lines if ln[:2] in ("W ", "S ", "K ", "A ")][-1:] or [""]
        cov["in_append"] += last[0].startswith("W ")
        cov["in_ack"] += last[0].startswith("K ")
        # what the kill left on flash, read by the independent parser
        path = on_flash(d)
        cov["temp_left"] += Path(d, "outbox.tmp").exists()
        if path is None:  # killed before the outbox file was first created
            expect_live, first_sid = [], 1
            continue
        data = path.read_bytes()
        recs = ref_records(data)
        end = recs[-1][1] if recs else 0
        # a kill tears at most the record being written; after injected damage near the end, that damaged
        # record can sit right before the torn one (the readability and no-loss checks below are unchanged)
        torn_max = (12 + 112) * (2 if damage_every else 1)
        assert len(data) - end < torn_max, "%s: %d garbage bytes, more than the torn record(s) allowed" % (
            ctx, len(data) - end)
        if not damage_every:  # a kill tears at most the last record; only injected damage sits in the middle
            assert sum(r[1] - r[0] for r in recs) == end, "%s: garbage inside the log" % ctx
        cov["torn_tail"] += end < len(data)
        live, nxt = ref_apply(recs)
        try:
            model.check(live)
        except AssertionError as e:
            raise AssertionError("%s (flash after the kill): %s" % (ctx, e)) from None
        model.recovered(live)
        if damage_every and run % damage_every == damage_every - 1:
            live, nxt = ref_apply(damage(path, rnd, cov))
            model.recovered(live)
            # A destroyed ack record legitimately revives its sample; destroyed data records take their sids
            # with them (the documented limit: damage to confirmed data can let those sids be issued again).
            model.acked = {s for s in model.acked if s < nxt} - {s for s, _ in live}
            model.maxsid = nxt - 1
        expect_live, first_sid = live, nxt
    print("outbox SIGKILL: %d kills in %.1f s, seed %d, coverage %s" % (kills, time.monotonic() - t0, rseed, cov))
    return cov


def test_outbox_survives_100_sigkills(tmp_path):
    # max_bytes 2048 compacts about every 8 appends, so many kills land in or around a compaction (the child
    # keeps at most 7 samples queued: 7 * 123 bytes stay under the 1000-byte bound, so nothing is dropped)
    cov = run_kills(tmp_path, 100, max_bytes=2048, max_records=1000, acks=True)
    # the kills must really have hit the hard places, or this test proves little
    assert all(cov["P " + p] >= 10 for p in POINTS), cov  # of 12 or 13 tries each
    assert cov["torn_tail"] >= 10 and cov["temp_left"] >= 20, cov
    assert cov["in_append"] + cov["in_ack"] >= 20 and cov["before_ready"] >= 5, cov


def test_outbox_drop_oldest_survives_sigkills(tmp_path):
    cov = run_kills(tmp_path, 30, max_bytes=4096, max_records=5, acks=False)
    assert cov["in_append"] >= 5 and cov["P torn"] >= 3, cov


def test_outbox_survives_sigkills_with_flash_damage(tmp_path):
    cov = run_kills(tmp_path, 40, max_bytes=2048, max_records=1000, acks=True, damage_every=2)
    assert cov["truncated"] + cov["flipped"] >= 15, cov
