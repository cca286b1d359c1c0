# Tests of the durable outbox (firmware/app/outbox.py) on both ports: API, persistence, sid continuity, the
# size bounds and drop-oldest, compaction, recovery from torn writes, damaged bytes and leftover temp files.
# Expected states after damage are computed by an independent reader of the documented record format below,
# so the tests check the format on flash, not only the module's own view of it.
import os
import struct
from binascii import crc32

from app import record
from app.outbox import Outbox
from app.record import crc32_sw

# (The 64 KB-heap proof is the SIGKILL test: its MicroPython children run with -X heapsize=64k.)
TIMEOUT = 120

LOG = "/outbox.bin"
TMP = "/outbox.tmp"


# ---- an independent reader of the on-flash format (docs/outbox.md) ----

def ref_record(data, pos):
    """The record at pos as (off, end, type, sid, payload), or None if no valid record starts there."""
    if pos + 12 > len(data):
        return None
    magic, t, n, sid, _crc = struct.unpack_from("<BBHII", data, pos)
    end = pos + 12 + n
    if magic != 0xA5 or end > len(data) or chr(t) not in "DAXSV" or (n == 0) != (chr(t) != "D"):
        return None
    payload = data[pos + 12:end]
    if crc32(data[pos:pos + 12], crc32(payload)) != 0x2144DF1C:
        return None
    return (pos, end, chr(t), sid, payload)


def ref_records(data):
    """Every valid record, skipping bytes that start none (resynchronising byte by byte)."""
    out = []
    pos = 0
    while pos + 12 <= len(data):
        rec = ref_record(data, pos)
        if rec:
            out.append(rec)
            pos = rec[1]
        else:
            pos += 1
    return out


def ref_apply(records):
    """Live samples [(sid, payload)] oldest first, and the next sid, after applying the records in order."""
    live = []
    top = 0
    for _off, _end, t, sid, payload in records:
        if t == "D":
            assert not live or sid > live[-1][0], "data records out of sid order"
            live.append((sid, payload))
        elif t in "AX":
            live = [x for x in live if x[0] != sid]
        if t in "DS":
            top = max(top, sid)
    return live, top + 1


def rd(path):
    with open(path, "rb") as f:
        return f.read()


def wr(path, data):
    with open(path, "wb") as f:
        f.write(data)


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def everything(ob):
    return ob.peek(1 << 30)


def payload(i):
    return b"sample-%d-" % i + b"x" * (i * 7 % 40)


def build_history(d):
    """A log with floor, data, ack and drop records: returns the file bytes and its parsed records."""
    ob = Outbox(d, max_bytes=600, max_records=6)
    i = 0
    while ob.stats()["compactions"] < 2:
        ob.append(payload(i))
        i += 1
        if i % 3 == 0:
            ob.ack(ob.peek(1)[0][0])
    for j in range(8):  # after the last compaction: data, acks (one out of order) and drops
        ob.append(payload(i + j))
    live = everything(ob)
    ob.ack(live[2][0])
    ob.ack(live[0][0])
    ob.close()
    data = rd(d + LOG)
    recs = ref_records(data)
    assert recs[-1][1] == len(data)  # the whole file is valid records
    kinds = "".join(r[2] for r in recs)
    assert kinds.startswith("VSS") and "D" in kinds and "A" in kinds and "X" in kinds, kinds
    return data, recs


# ---- API ----

def test_append_peek_ack_and_stats(tmp_path_str):
    ob = Outbox(tmp_path_str + "/ob")
    assert len(ob) == 0 and ob.depth() == 0 and ob.peek() == []
    sids = [ob.append(payload(i)) for i in range(5)]
    assert sids == [1, 2, 3, 4, 5]
    assert ob.peek() == [(1, payload(0))]
    assert ob.peek(3) == [(1, payload(0)), (2, payload(1)), (3, payload(2))]
    assert ob.peek(0) == []
    assert len(everything(ob)) == 5
    assert ob.ack(3) is True  # out of order
    assert ob.ack(3) is False  # idempotent
    assert ob.ack(99) is False and ob.ack(0) is False  # unknown: no-op
    try:
        ob.ack("3")
    except TypeError as e:
        assert "outbox" in str(e)
    else:
        raise AssertionError("ack('3') accepted")
    assert [s for s, _ in ob.peek(10)] == [1, 2, 4, 5]
    assert ob.ack(1) and ob.ack(2)
    assert ob.peek(10) == [(4, payload(3)), (5, payload(4))]
    st = ob.stats()
    assert (st["appended"], st["acked"], st["dropped"], st["corrupt"], st["depth"]) == (5, 3, 0, 0, 2)
    assert st["bytes"] == os.stat(tmp_path_str + "/ob" + LOG)[6]
    assert st["next_sid"] == 6
    assert st["live_bytes"] == 24 + len(payload(3)) + len(payload(4))
    ob.append(bytearray(b"ba"))
    assert ob.peek(10)[-1] == (6, b"ba")
    ob.close()


def test_bad_input_is_refused_and_loses_nothing(tmp_path_str):
    d = tmp_path_str + "/ob"
    ob = Outbox(d, max_bytes=1024)
    ob.append(b"keep")
    size = os.stat(d + LOG)[6]
    for bad, exc in (("text", TypeError), (None, TypeError), (123, TypeError), (b"", ValueError),
                     (b"x" * 465, ValueError)):
        try:
            ob.append(bad)
        except exc as e:
            assert "outbox" in str(e)
        else:
            raise AssertionError("append(%r) accepted" % (bad,))
    assert everything(ob) == [(1, b"keep")] and os.stat(d + LOG)[6] == size
    assert ob.stats()["appended"] == 1 and ob.stats()["next_sid"] == 2
    ob.close()
    ob = Outbox(tmp_path_str + "/big", max_bytes=1024)
    assert ob.append(b"x" * 464) == 1  # the largest payload for max_bytes=1024: (1024/2 - 36) - 12
    for kw in ({"max_bytes": 255}, {"max_records": 0}):
        try:
            Outbox(tmp_path_str + "/other", **kw)
        except ValueError:
            pass
        else:
            raise AssertionError("accepted %r" % (kw,))
    ob.close()


def test_full_flash_fails_append_with_a_typed_error(tmp_path_str):
    # the log on /dev/full: opens (reads as empty) but every write fails with ENOSPC, like a full flash
    d = tmp_path_str + "/ob"
    os.mkdir(d)
    if hasattr(os, "symlink"):
        os.symlink("/dev/full", d + LOG)
    else:  # MicroPython's os has no symlink; the unix port has os.system
        assert os.system("ln -s /dev/full %s" % (d + LOG)) == 0
    ob = Outbox(d)
    for _ in range(2):
        try:
            ob.append(b"sample")
        except OSError as e:
            assert e.args[0] == 28  # ENOSPC, the filesystem's own reason
        else:
            raise AssertionError("append on a full filesystem returned")
    assert len(ob) == 0 and ob.peek() == [] and ob.stats()["appended"] == 0
    ob.close()


def test_creates_missing_directories(tmp_path_str):
    d = tmp_path_str + "/a/b/c/"
    ob = Outbox(d)
    ob.append(b"1")
    ob.close()
    assert exists(tmp_path_str + "/a/b/c" + LOG)
    assert everything(Outbox(d)) == [(1, b"1")]


# ---- persistence and sample ids ----

def test_reopen_keeps_unacked_samples_and_continues_sids(tmp_path_str):
    d = tmp_path_str + "/ob"
    ob = Outbox(d)
    for i in range(10):
        ob.append(payload(i))
    for sid in (2, 5, 6, 9):
        ob.ack(sid)
    before = everything(ob)
    ob.close()
    ob = Outbox(d)
    assert everything(ob) == before
    assert [s for s, _ in before] == [1, 3, 4, 7, 8, 10]
    assert ob.stats()["corrupt"] == 0
    assert ob.append(b"next") == 11
    ob.close()


def test_sids_never_reused_after_outbox_empties_and_compacts(tmp_path_str):
    d = tmp_path_str + "/ob"
    ob = Outbox(d, max_bytes=256)
    last = 0
    while ob.stats()["compactions"] < 3:
        last = ob.append(b"p" * 30)
        ob.ack(last)
    assert len(ob) == 0
    data = rd(d + LOG)
    recs = ref_records(data)
    assert [r[2] for r in recs[:3]] == ["V", "S", "S"]  # the version and the floor survive the empty log
    ob.close()
    ob = Outbox(d, max_bytes=256)
    assert ob.append(b"after") == last + 1
    ob.ack(last + 1)
    ob.close()
    # a log holding nothing but the floor records (emptied, then compacted at boot because of a torn tail)
    wr(d + LOG, rd(d + LOG) + b"\xa5D\x05")
    ob = Outbox(d, max_bytes=256)
    assert len(ob) == 0 and ob.stats()["compactions"] == 1
    ob.close()
    assert [r[2] for r in ref_records(rd(d + LOG))] == ["V", "S", "S"]
    ob = Outbox(d, max_bytes=256)
    assert ob.append(b"z") == last + 2
    ob.close()


# ---- bounds, drop-oldest and compaction ----

def test_max_records_drops_oldest_counts_and_persists(tmp_path_str):
    d = tmp_path_str + "/ob"
    ob = Outbox(d, max_records=5)
    for i in range(8):
        ob.append(payload(i))
    assert [s for s, _ in everything(ob)] == [4, 5, 6, 7, 8]
    assert ob.stats()["dropped"] == 3
    assert ob.ack(1) is False  # a dropped sample acked later (it was in flight): a no-op
    ob.close()
    ob = Outbox(d, max_records=5)
    assert everything(ob) == [(i + 1, payload(i)) for i in range(3, 8)]  # drops are not revived
    assert ob.stats()["dropped"] == 0
    ob.close()
    ob = Outbox(d, max_records=2)  # a smaller bound at boot applies at once
    assert [s for s, _ in everything(ob)] == [7, 8] and ob.stats()["dropped"] == 3
    ob.close()
    assert [s for s, _ in everything(Outbox(d, max_records=5))] == [7, 8]


def test_max_bytes_drops_oldest_and_bounds_the_file(tmp_path_str):
    d = tmp_path_str + "/ob"
    ob = Outbox(d, max_bytes=512)  # unacknowledged data: at most 512/2 - 36 = 220 bytes
    for i in range(10):
        ob.append(b"%02d" % i + b"y" * 48)  # 62 bytes a record: 3 fit
        assert os.stat(d + LOG)[6] <= 512
    assert [s for s, _ in everything(ob)] == [8, 9, 10]
    st = ob.stats()
    assert st["dropped"] == 7 and st["live_bytes"] == 186
    ob.close()


def test_file_stays_bounded_and_compaction_is_rare(tmp_path_str):
    d = tmp_path_str + "/ob"
    ob = Outbox(d, max_bytes=2048, max_records=20)
    n = 0
    for i in range(600):
        ob.append(payload(i))
        if i % 4 != 3:  # acks lag behind appends, then catch up
            for s, _ in ob.peek(2 if i % 4 == 0 else 1):
                ob.ack(s)
                n += 1
        assert ob.stats()["bytes"] == os.stat(d + LOG)[6] <= 2048
    st = ob.stats()
    assert st["dropped"] == 0 and n == st["acked"]
    # each compaction happens only when the log is full, and reclaims at least half of it
    assert 0 < st["compactions"] < n // 10, st
    live = everything(ob)
    ob.close()
    assert everything(Outbox(d, max_bytes=2048, max_records=20)) == live


# ---- recovery ----

def test_torn_tail_is_ignored_and_cleaned(tmp_path_str):
    d = tmp_path_str + "/ob"
    ob = Outbox(d)
    for i in range(3):
        ob.append(payload(i))
    ob.close()
    good = rd(d + LOG)
    # a fourth record cut by a power cut: whole header, half the payload
    torn = b"\xa5D" + struct.pack("<HII", 20, 4, 0) + b"half-of-it"
    wr(d + LOG, good + torn)
    ob = Outbox(d)
    assert everything(ob) == [(i + 1, payload(i)) for i in range(3)]
    assert ob.stats()["corrupt"] == len(torn)
    assert ob.stats()["compactions"] == 1  # cleaned at once, not rescanned on every boot
    assert ob.append(b"four") == 4
    ob.close()
    recs = ref_records(rd(d + LOG))
    assert ref_apply(recs)[0] == [(1, payload(0)), (2, payload(1)), (3, payload(2)), (4, b"four")]
    assert recs[-1][1] == os.stat(d + LOG)[6]
    assert Outbox(d).stats()["corrupt"] == 0


def test_every_single_byte_flip_loses_only_the_damaged_record(tmp_path_str):
    base = tmp_path_str + "/base"
    data, recs = build_history(base)
    d = tmp_path_str + "/ob"
    Outbox(d).close()
    for o in range(len(data)):
        hit = next(r for r in recs if r[0] <= o < r[1])
        damaged = bytearray(data)
        damaged[o] ^= 1 << (o % 8)  # one bit: CRC-32 detects every single-bit error
        wr(d + LOG, damaged)
        ob = Outbox(d)
        survivors = [r for r in recs if r is not hit]
        live, nxt = ref_apply(survivors)
        assert everything(ob) == live, "flip at %d (%s record)" % (o, hit[2])
        assert ob.stats()["corrupt"] == hit[1] - hit[0], o
        assert ob.append(b"new") == nxt, o
        ob.close()


def test_every_truncation_keeps_everything_before_it(tmp_path_str):
    data, recs = build_history(tmp_path_str + "/base")
    d = tmp_path_str + "/ob"
    Outbox(d).close()
    for o in range(len(data)):
        wr(d + LOG, data[:o])
        ob = Outbox(d)
        kept = [r for r in recs if r[1] <= o]
        live, nxt = ref_apply(kept)
        assert everything(ob) == live, o
        assert ob.stats()["corrupt"] == o - (kept[-1][1] if kept else 0), o
        assert ob.append(b"new") == nxt, o
        ob.close()
        ob = Outbox(d)
        assert ob.stats()["corrupt"] == 0  # the damage was compacted away
        ob.close()


def test_random_multi_byte_damage_and_garbage(tmp_path_str):
    data, recs = build_history(tmp_path_str + "/base")
    d = tmp_path_str + "/ob"
    Outbox(d).close()
    x = 12345
    for trial in range(60):
        offs = []
        for _ in range(1 + trial % 4):  # a small LCG: the same damage on both ports
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
            offs.append(x % len(data))
        damaged = bytearray(data)
        for o in offs:
            damaged[o] ^= 0xFF
        wr(d + LOG, damaged)
        hits = [r for r in recs if any(r[0] <= o < r[1] for o in offs)]
        ob = Outbox(d)
        assert everything(ob) == ref_apply([r for r in recs if r not in hits])[0], offs
        assert ob.stats()["corrupt"] == sum(r[1] - r[0] for r in hits), offs
        ob.close()
    # pure garbage opens empty, is counted, and the outbox works afterwards
    junk = bytes((i * 151 + 7) & 0xFF for i in range(700)) + b"\xa5" * 30
    wr(d + LOG, junk)
    ob = Outbox(d)
    assert len(ob) == 0 and ob.stats()["corrupt"] == len(junk)
    assert ob.append(b"fresh") == 1
    ob.close()
    assert everything(Outbox(d)) == [(1, b"fresh")]


def test_leftover_temp_file_from_a_cut_compaction(tmp_path_str):
    d = tmp_path_str + "/ob"
    ob = Outbox(d)
    for i in range(4):
        ob.append(payload(i))
    ob.ack(2)
    ob.close()
    good = rd(d + LOG)
    expect = [(1, payload(0)), (3, payload(2)), (4, payload(3))]
    # cut while writing the temp file: the log is complete, the partial copy is discarded
    wr(d + TMP, good[:30])
    ob = Outbox(d)
    assert everything(ob) == expect and not exists(d + TMP)
    ob.close()
    # cut after the copy was complete but before the rename: the same, the log wins
    wr(d + TMP, good)
    ob = Outbox(d)
    assert everything(ob) == expect and not exists(d + TMP)
    ob.close()
    # cut inside a FAT-style rename (target removed first): the complete temp file is adopted
    os.rename(d + LOG, d + TMP)
    ob = Outbox(d)
    assert everything(ob) == expect and not exists(d + TMP) and exists(d + LOG)
    assert ob.append(b"5") == 5
    ob.close()


def test_flash_damage_while_running_is_counted_not_fatal(tmp_path_str):
    d = tmp_path_str + "/ob"
    ob = Outbox(d)
    for i in range(3):
        ob.append(payload(i))
    data = bytearray(rd(d + LOG))
    off2 = ref_records(bytes(data))[2][0]  # after the V record and sample 1
    data[off2 + 14] ^= 0x40  # a payload byte of sample 2 rots on flash while we run
    with open(d + LOG, "r+b") as f:
        f.write(data)
    assert everything(ob) == [(1, payload(0)), (3, payload(2))]
    assert ob.stats()["corrupt"] == 12 + len(payload(1))
    assert ob.append(b"four") == 4 and len(ob) == 3
    ob.close()


# ---- CRC and RAM ----

def test_software_crc32_matches_binascii():
    data = bytes((i * 37 + 11) & 0xFF for i in range(300))
    for n in (0, 1, 7, 64, 300):
        assert crc32_sw(data[:n]) == crc32(data[:n]), n
    assert crc32_sw(data[100:], crc32_sw(data[:100])) == crc32(data)
    assert crc32_sw(b"123456789") == 0xCBF43926  # the CRC-32 check value


def _alloc(fn):
    """Bytes allocated while fn runs: MicroPython's mem_total delta; CPython: tracemalloc's peak."""
    try:
        import micropython

        fn()  # warm-up (first-call allocations)
        a = micropython.mem_total()
        fn()
        return micropython.mem_total() - a
    except ImportError:
        import tracemalloc

        fn()
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


def test_peek_and_cycle_allocate_per_record_not_per_outbox(tmp_path_str):
    ob = Outbox(tmp_path_str + "/ob", max_bytes=65536)
    for i in range(200):
        ob.append(b"%03d" % i + b"v" * 97)  # 22 KB queued: loading it would show
    assert len(ob) == 200
    peek_alloc = _alloc(lambda: ob.peek(1))
    assert peek_alloc < 600, peek_alloc

    def cycle():
        sid = ob.append(b"w" * 100)
        ob.ack(sid)

    cycle_alloc = _alloc(cycle)
    assert cycle_alloc < 600, cycle_alloc
    ob.close()


# ---- the record format as pure functions, and the format version ----

def test_records_encode_and_decode_as_pure_functions():
    for t, sid, payload in ((record.D, 7, b'{"t":1}'), (record.A, 7, b""), (record.S, 99, b""), (record.V, 1, b"")):
        blob = record.encode(t, sid, payload)
        assert len(blob) == record.HDR + len(payload)
        assert record.decode(blob) == (t, sid, payload, len(blob))
        assert ref_record(blob, 0)[2:] == (chr(t), sid, payload)  # the independent reader agrees
    two = record.encode(record.D, 1, b"a") + record.encode(record.A, 1)
    first = record.decode(two)
    assert record.decode(two, first[3])[:2] == (record.A, 1)
    bad = bytearray(two)
    bad[12] ^= 0x01  # the payload byte
    assert record.decode(bytes(bad)) is None
    assert record.decode(record.encode(record.A, 1, b"")[:11]) is None  # torn
    assert record.read_header(b"\xa5A\x01\x00" + bytes(8)) is None  # an ack with a payload is no record


def test_a_new_log_declares_its_format_and_an_old_one_still_opens(tmp_path_str):
    d = tmp_path_str + "/ob"
    ob = Outbox(d)
    ob.append(b"one")
    ob.close()
    recs = ref_records(rd(d + LOG))
    assert recs[0][2:4] == ("V", record.FORMAT)
    # a log written before versions existed (no V record) is format 1: read as it is
    legacy = record.encode(record.D, 5, b"old") + record.encode(record.D, 6, b"older")
    wr(d + LOG, legacy)
    ob = Outbox(d)
    assert everything(ob) == [(5, b"old"), (6, b"older")] and ob.stats()["foreign"] is None
    assert ob.append(b"new") == 7
    ob.close()


def test_a_log_of_another_format_is_kept_aside_never_compacted(tmp_path_str):
    d = tmp_path_str + "/ob"
    Outbox(d).close()
    future = record.encode(record.V, record.FORMAT + 1) + b"\x00records a newer firmware wrote" * 4
    wr(d + LOG, future)
    ob = Outbox(d)
    aside = ob.stats()["foreign"]
    assert aside == d + "/outbox-v%d.bin" % (record.FORMAT + 1)
    assert rd(aside) == future  # every byte kept
    assert len(ob) == 0 and ob.stats()["corrupt"] == 0  # not taken for damage
    assert ob.append(b"x") == 1
    ob.close()
    wr(d + LOG, future)  # a second such log does not overwrite the first one kept aside
    ob = Outbox(d)
    assert ob.stats()["foreign"] == d + "/outbox-v%d.1.bin" % (record.FORMAT + 1) and rd(aside) == future
    ob.close()
