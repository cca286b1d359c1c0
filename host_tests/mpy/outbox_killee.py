# The MicroPython child of host_tests/test_outbox_sigkill.py: opens the outbox, prints what it recovered,
# then appends (and acks) samples until the parent kills it with SIGKILL.
#
#   micropython -X heapsize=64k outbox_killee.py <dir> <run> <seed> <max_bytes> <max_records> <ack 0|1> \
#       <pause point or -> <n>
#
# Output, one write per line (a kill cannot leave half a line that parses):
#   R <sid> <payload>      a record recovered at open, oldest first
#   T <corrupt> <compactions> <depth>   recovery statistics
#   READY
#   W <tag>                about to append the sample <tag>
#   S <sid> <tag>          append() returned: the sample is acknowledged as stored
#   K <sid>                about to ack <sid>
#   A <sid>                ack() returned
#   C <n>                  the outbox has compacted n times since it was opened
#   P <point>              paused at the n-th occurrence of <point>, waiting for the kill:
#                          torn (between the two halves of a record written to the log), tmpwrite (the
#                          same in a compaction's temp file), rename-before / rename-after (around the
#                          compaction's rename)
# Below the outbox (never in its place) a filesystem shim does the real file operations but splits writes
# at random points and pauses a random few hundred microseconds inside writes, flushes and renames, so
# that timed kills land inside records, inside compactions and between a rename's steps; and it can stop
# at one chosen point (P line) so that the parent kills exactly there.
import os
import random
import sys
import time


def payload(tag):
    """The payload of sample <tag> ("r<run>-<i>"): ASCII, 12..111 bytes, derived from the tag only."""
    run, i = tag[1:].split("-")
    n = 12 + (int(run) * 31 + int(i) * 17) % 100
    return (tag + ":" + "0123456789abcdefghijklmnopqrstuvwxyz" * 4)[:n].encode()


def out(s):
    sys.stdout.write(s + "\n")


def spin():
    r = random.getrandbits(8)
    if r >= 96:
        t = time.ticks_us()
        while time.ticks_diff(time.ticks_us(), t) < r * 3:
            pass


PAUSE = ["-", 0]  # [point, stop at its n-th occurrence]


def point(name):
    if PAUSE[0] == name:
        PAUSE[1] -= 1
        if PAUSE[1] == 0:
            out("P " + name)
            time.sleep(30)  # the parent kills us now


class SlowFile:
    def __init__(self, f, name):
        self.f = f
        self.point = "tmpwrite" if name.endswith(".tmp") else "torn"

    def write(self, b):
        n = len(b)
        if n > 1 and (random.getrandbits(1) or PAUSE[0] == self.point):
            k = 1 + random.getrandbits(16) % (n - 1)
            self.f.write(b[:k])
            point(self.point)
            spin()
            return k + self.f.write(b[k:])
        return self.f.write(b)

    def flush(self):
        spin()
        self.f.flush()

    def seek(self, *a):
        return self.f.seek(*a)

    def readinto(self, b):
        return self.f.readinto(b)

    def read(self, n):
        return self.f.read(n)

    def close(self):
        self.f.close()

    def fileno(self):
        return self.f.fileno()


class SlowOs:
    def rename(self, a, b):
        spin()
        point("rename-before")
        os.rename(a, b)
        point("rename-after")
        spin()

    def remove(self, p):
        spin()
        os.remove(p)

    def stat(self, p):
        return os.stat(p)

    def mkdir(self, p):
        os.mkdir(p)


def slow_open(p, mode="r", **kw):
    spin()
    return SlowFile(open(p, mode, **kw), p)


def main():
    d, run, seed, max_bytes, max_records, acks, PAUSE[0], n = sys.argv[1:9]
    PAUSE[1] = int(n)
    random.seed(int(seed))
    from app import outbox

    outbox.open = slow_open  # module globals shadow the builtins: the outbox's file I/O goes through the shim
    outbox.os = SlowOs()
    ob = outbox.Outbox(d, int(max_bytes), int(max_records))
    for sid, p in ob.peek(1 << 30):
        out("R %d %s" % (sid, p.decode()))
    st = ob.stats()
    out("T %d %d %d" % (st["corrupt"], st["compactions"], st["depth"]))
    out("READY")
    i = 0
    target = random.getrandbits(8) % 7
    comp = ob.compactions
    while True:
        i += 1
        tag = "r%s-%d" % (run, i)
        out("W " + tag)
        sid = ob.append(payload(tag))
        out("S %d %s" % (sid, tag))
        spin()
        while acks == "1" and len(ob) > target:
            head = ob.peek(2)
            sid = head[random.getrandbits(1) % len(head)][0]  # the oldest, or out of order the second
            out("K %d" % sid)
            ob.ack(sid)
            out("A %d" % sid)
        if random.getrandbits(4) == 0:
            target = random.getrandbits(8) % 7
        if ob.compactions != comp:
            comp = ob.compactions
            out("C %d" % comp)


if __name__ == "__main__":
    main()
