# Durable outbox on flash: every telemetry sample is stored before it is sent and removed only after the
# broker acknowledged it (QoS 1). A power cut at any instant leaves a readable outbox.
#
# One append-only log file <dir>/outbox.bin of records, each a 12-byte header and a payload:
#   magic 0xA5 | type | payload length (u16 LE) | sample id (u32 LE) | CRC-32 (u32 LE)
# type: D data (the sample), A acknowledged, X dropped by the size bound (A/X/S/V carry no payload),
#       S sid floor: the highest sid issued so far, written (twice) at the start of a compacted log,
#       V format version (in the sid field): the first record of a new or compacted log. A log whose first
#       record is no V was written before versions existed: format 1, the same records. A log of another
#       version is never read as damage: it is moved aside (outbox-v<N>.bin), kept and reported.
# Encoding and decoding a record are pure functions over bytes (put_header, read_header, encode, decode).
# The CRC-32 covers the payload then the first 8 header bytes; a record is valid when
# crc32(header, crc32(payload)) is the CRC residue 0x2144DF1C, which needs no slicing to check.
# A torn or damaged record is skipped and the scan resynchronises at the next magic byte, so damage in the
# middle never hides the records after it. Compaction writes the live records to outbox.tmp and renames it
# over the log (atomic on LittleFS and POSIX). See docs/outbox.md for guarantees and their limits.
# The record format itself is app/record.py: pure functions over bytes, no file I/O.
import os

from cellmqtt.compat import const

from app.record import FORMAT, MAGIC, A, D, S, V, X, crc32, encode, put_header, read_header, record_ok

_HDR = const(12)  # record.HDR
_FLOORS = const(36)  # the V record and two S records at the start of a compacted log
_BUF = const(128)
_BYTES = (bytes, bytearray)  # built once: a tuple literal in append() would be allocated on every call

# CPython: fsync the file (os.sync there would flush the whole machine); MicroPython unix: flush() already
# fsyncs; MCU ports: flush() commits the file, os.sync() (where present, e.g. STM32) also writes back the
# block device's cache.
_fsync = getattr(os, "fsync", None)
_sync_all = None if _fsync else getattr(os, "sync", None)


def _write(f, b):
    # The log is unbuffered (CPython: no hidden buffer that could flush a failed record later), so a write
    # can be short when the filesystem fills up: that is a failure, never a success.
    if f.write(b) != len(b):
        raise OSError(28, "outbox: short write (filesystem full?)")  # ENOSPC


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _isdir(p):
    try:
        return os.stat(p)[0] & 0o170000 == 0o040000
    except OSError:
        return False


def _version(path):
    # the format version a log declares in its first record (None: empty, or written before versions existed)
    f = open(path, "rb")  # noqa: SIM115 -- (no context manager: a port's file object may lack one)
    try:
        h = f.read(_HDR)
    finally:
        f.close()
    r = read_header(h) if len(h) == _HDR else None
    return r[2] if r is not None and r[0] == V and record_ok(h, 0) else None


class Outbox:
    def __init__(self, dirpath, max_bytes=32768, max_records=500):
        if max_bytes < 256 or max_records < 1:
            raise ValueError("outbox: need max_bytes >= 256 and max_records >= 1")
        self._cap = max_bytes
        # Unacknowledged data may fill half the log, so a compaction always reclaims at least half of it.
        self._lmax = (max_bytes >> 1) - _FLOORS
        self._nmax = max_records
        d = dirpath.rstrip("/") or "/"
        self._dir = d
        self._path = d + "/outbox.bin"
        self._tmp = d + "/outbox.tmp"
        self._hdr = bytearray(_HDR)
        self._h8 = memoryview(self._hdr)[:8]
        self._buf = memoryview(bytearray(_BUF))
        # In-RAM index of live (unacknowledged) records, oldest first: sid, file offset, payload length.
        self._sids = []
        self._offs = []
        self._lens = []
        self._live = 0  # bytes of live records, headers included
        self._size = 0  # bytes of the log file
        self._next = 1
        self.appended = self.acked = self.dropped = self.corrupt = self.compactions = self.ack_errors = 0
        self._owed = []  # sids acknowledged whose A record could not be written yet
        self.foreign = None  # where a log of another format version was moved (kept, reported)
        self._f = None
        i = 0
        while i >= 0:  # create dirpath and its parents (no os.makedirs on MicroPython)
            i = d.find("/", i + 1)
            p = d if i < 0 else d[:i]
            if not _exists(p):
                os.mkdir(p)
        self._open()

    # ---- opening and recovery ----

    def _open(self):
        log, tmp = self._path, self._tmp
        if _exists(tmp):
            if _exists(log):
                os.remove(tmp)  # a compaction cut before its rename: the log is still complete
            else:
                os.rename(tmp, log)  # cut inside a FAT rename (remove, then rename): the temp file is complete
        if _isdir(log):  # not a log at all (a user's mkdir, a damaged filesystem): moved aside, kept
            aside = self._aside(log, ".dir")
            os.rename(log, aside)
            self.foreign = aside
        if _exists(log):
            v = _version(log)
            if v is not None and v != FORMAT:  # another firmware's format: kept whole, never compacted away
                aside = self._aside("%s/outbox-v%d" % (self._dir, v), ".bin")
                os.rename(log, aside)
                self.foreign = aside
        if not _exists(log):
            g = open(log, "wb")  # noqa: SIM115 -- (no context manager: a port's file object may lack one)
            try:
                _write(g, encode(V, FORMAT))
            finally:
                g.close()
            self._dsync()
        self._f = open(log, "r+b", buffering=0)  # noqa: SIM115 -- open for the outbox's lifetime
        self._scan()
        # Damaged bytes are compacted away so they are not rescanned on every boot; the bounds may be
        # smaller than on the last boot.
        self._room(0, 0, self.corrupt)

    def _aside(self, stem, ext):
        # a free name for a file moved aside: stem+ext, else stem.1+ext, stem.2+ext ...
        n = 0
        q = stem + ext
        while _exists(q):
            n += 1
            q = "%s.%d%s" % (stem, n, ext)
        return q

    def _scan(self):
        f, h, buf = self._f, self._hdr, self._buf
        size = f.seek(0, 2)
        pos = bad = top = last = 0
        while pos + _HDR <= size:
            f.seek(pos)
            f.readinto(h)
            r = read_header(h)
            if r is not None and pos + _HDR + r[1] <= size:
                t, n, sid = r
                c, m = 0, n
                while m:
                    k = min(m, _BUF)
                    f.readinto(buf[:k])
                    c = crc32(buf[:k], c)
                    m -= k
                if record_ok(h, c):
                    if t == D:
                        if sid > last:
                            self._sids.append(sid)
                            self._offs.append(pos)
                            self._lens.append(n)
                            self._live += _HDR + n
                            last = sid
                        else:
                            bad += _HDR + n  # a valid record out of sid order: never trust it
                    if t == S or t == D:
                        top = max(top, sid)
                    elif t != V:
                        i = self._find(sid)
                        if i >= 0:
                            self._pop(i)
                    pos += _HDR + n
                    continue
            # No record starts here: resynchronise at the next magic byte in this header.
            i = 1
            while i < _HDR and h[i] != MAGIC:
                i += 1
            pos += i
            bad += i
        self.corrupt = bad + size - pos
        self._size = size
        self._next = top + 1
        self.top = top  # the highest sample id the log remembers (0: none -- new, emptied or erased)

    # ---- the API ----

    def append(self, payload, sid=None):
        """Store one sample durably; return its sample id (strictly increasing, never reused). ``sid``: the
        id the caller numbered the sample with (above every id stored so far), else the next one."""
        if not isinstance(payload, _BYTES):
            raise TypeError("outbox: payload must be bytes")
        r = _HDR + len(payload)
        if r == _HDR or r > self._lmax:
            raise ValueError("outbox: payload must be 1..%d bytes, got %d" % (self._lmax - _HDR, r - _HDR))
        a = self._sids
        if sid is None:
            sid = self._next
        elif type(sid) is not int or sid < 1 or (a and sid <= a[-1]):
            raise ValueError("outbox: sid must be above every stored sid")
        if len(a) >= self._nmax or self._live + r > self._lmax or self._size + r > self._cap:
            self._room(r, 1)
        self._debts()
        self._next = max(self._next, sid + 1)  # consumed even if the write fails: a record that did land keeps a unique id
        off = self._put(D, sid, payload)
        self._offs.append(off)
        a.append(sid)
        self._lens.append(r - _HDR)
        self._live += r
        self.appended += 1
        return sid

    def next_sid(self):
        """The sample id the next append() will return (this outbox has one writer)."""
        return self._next

    def peek(self, n=1):
        """The n oldest unacknowledged samples, oldest first: [(sid, payload), ...]."""
        out = []
        while len(out) < n and len(out) < len(self._sids):
            r = self._read(len(out))
            if r:
                out.append(r)
        return out

    def ack(self, sid):
        """Mark sample sid delivered. Idempotent; an unknown sid is a no-op. True if it was pending."""
        if not isinstance(sid, int):
            raise TypeError("outbox: sid must be an int")
        a = self._sids
        i = 0 if a and a[0] == sid else self._find(sid)  # the oldest is the usual case: no search
        if i < 0:
            return False
        a.pop(i)
        self._offs.pop(i)
        self._live -= _HDR + self._lens.pop(i)
        self.acked += 1
        # Delivered: out of the index whatever happens to its A record. One the filesystem refuses (full) is
        # written with the next record that succeeds, or made moot by a compaction; a power cut first resends
        # that sample once (a QoS 1 duplicate, same id).
        self._owed.append(sid)
        try:
            if self._size + _HDR > self._cap:
                self._compact()
            self._debts()
        except OSError:
            self.ack_errors += 1
        return True

    def __len__(self):
        return len(self._sids)

    def depth(self):
        return len(self._sids)

    def stats(self):
        return {"appended": self.appended, "acked": self.acked, "dropped": self.dropped,
                "corrupt": self.corrupt, "compactions": self.compactions, "depth": len(self._sids),
                "bytes": self._size, "live_bytes": self._live, "next_sid": self._next, "foreign": self.foreign,
                "ack_errors": self.ack_errors}

    def close(self):
        if self._f:
            self._f.close()
            self._f = None

    # ---- internals ----

    def _find(self, sid):
        a = self._sids
        lo, hi = 0, len(a)
        while lo < hi:
            m = (lo + hi) >> 1
            if a[m] < sid:
                lo = m + 1
            else:
                hi = m
        return lo if lo < len(a) and a[lo] == sid else -1

    def _read(self, i):
        # Record i of the index as (sid, payload); if its bytes no longer check (the flash changed under us),
        # count it and drop it from the index rather than block the queue forever. (Hot path: few locals, so
        # MicroPython keeps the frame on the C stack.)
        f, h = self._f, self._hdr
        f.seek(self._offs[i])
        f.readinto(h)
        p = f.read(self._lens[i])
        if record_ok(h, crc32(p)) and h[4] | h[5] << 8 | h[6] << 16 | h[7] << 24 == self._sids[i]:
            return self._sids[i], p
        self.corrupt += _HDR + self._lens[i]
        self._pop(i)
        return None

    def _pop(self, i):
        self._sids.pop(i)
        self._offs.pop(i)
        self._live -= _HDR + self._lens.pop(i)

    def _room(self, r, n, compact=False):
        # Drop the oldest records until n more records of r bytes fit the bounds (drop-oldest policy), and
        # compact when the log would grow past max_bytes: the dropped records are then simply not copied.
        k, live, cnt = 0, self._live, len(self._sids)
        while k < cnt and (cnt - k + n > self._nmax or live + r > self._lmax):
            live -= _HDR + self._lens[k]
            k += 1
        if compact or self._size + k * _HDR + r > self._cap:
            for _ in range(k):
                self._pop(0)
            self.dropped += k
            self._compact()
            return
        for _ in range(k):
            self._put(X, self._sids[0])  # persisted, so a reboot does not revive it
            self._pop(0)
            self.dropped += 1

    def _debts(self):
        # the A records still owed (see ack), oldest first
        owed = self._owed
        while owed:
            self._put(A, owed[0])
            owed.pop(0)

    def _head(self, t, sid, payload):
        put_header(self._hdr, t, sid, payload, self._h8)

    def _put(self, t, sid, payload=b""):
        # Append one record to the log and make it durable; return its offset.
        self._head(t, sid, payload)
        f = self._f
        off = f.seek(0, 2)  # the real end: a failed earlier write may have left a partial record there
        _write(f, self._hdr)
        if payload:
            _write(f, payload)
        self._sync(f)
        self._size = off + _HDR + len(payload)
        return off

    def _sync(self, f):
        f.flush()
        if _fsync:
            _fsync(f.fileno())
        elif _sync_all:
            _sync_all()

    def _dsync(self):
        # Make a create or rename durable. CPython on POSIX: fsync the directory. MCU ports: os.sync() (STM32's
        # internal-flash block cache is written back lazily otherwise); LittleFS commits renames by itself.
        if _fsync and hasattr(os, "O_RDONLY"):
            fd = os.open(self._dir, os.O_RDONLY)
            try:
                _fsync(fd)
            finally:
                os.close(fd)
        elif _sync_all:
            _sync_all()

    def _compact(self):
        # Copy the live records to outbox.tmp behind two sid-floor records, then rename it over the log.
        f, buf, tmp = self._f, self._buf, self._tmp
        try:
            g = open(tmp, "wb")  # noqa: SIM115 -- closed in the finally below
            try:
                self._head(V, FORMAT, b"")
                _write(g, self._hdr)
                self._head(S, self._next - 1, b"")
                _write(g, self._hdr)
                _write(g, self._hdr)
                for i in range(len(self._sids)):
                    f.seek(self._offs[i])
                    m = _HDR + self._lens[i]
                    while m:
                        k = min(m, _BUF)
                        if f.readinto(buf[:k]) != k:
                            raise OSError(5, "outbox: log shorter than its index")  # EIO
                        _write(g, buf[:k])
                        m -= k
                self._sync(g)
            finally:
                g.close()
            f.close()
            try:
                os.rename(tmp, self._path)
                pos = _FLOORS
                for i in range(len(self._sids)):
                    self._offs[i] = pos
                    pos += _HDR + self._lens[i]
                self._size = pos
                self.compactions += 1
                self._owed = []  # the acknowledged records were simply not copied
            finally:
                # the new log, or the old one if the rename failed
                self._f = open(self._path, "r+b", buffering=0)  # noqa: SIM115
            self._dsync()
        except Exception:
            if _exists(tmp):  # never leave a partial copy behind; the log itself is untouched
                os.remove(tmp)
            raise
