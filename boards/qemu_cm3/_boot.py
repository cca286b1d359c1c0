# qemu_cm3 boot (frozen, run before /main.py): mount the RAM disk (cm3.Disk, in SSRAM2/3, kept across
# machine.reset()) at / as littlefs, formatting it when it holds none; a freshly formatted disk gets the files
# tools/qemu_cm3.py placed in memory at cm3.SEED_ADDR (config.json, secrets.json, certs/, main.py), as
# `mpremote cp` would provision a board's flash. Seed layout: b"CM3SEED1", then per file a little-endian u16
# name length, the name, a u32 data length, the data; a zero name length ends it.
import gc
import os
import struct

import cm3
import uctypes
import vfs


def _seed():
    mem = uctypes.bytearray_at(cm3.SEED_ADDR, cm3.SEED_MAX)
    if mem[:8] != b"CM3SEED1":
        return 0
    i, n = 8, 0
    while True:
        ln = struct.unpack_from("<H", mem, i)[0]
        if not ln:
            return n
        name = str(mem[i + 2:i + 2 + ln], "utf-8")
        i += 2 + ln
        size = struct.unpack_from("<I", mem, i)[0]
        i += 4
        d = ""
        for part in name.split("/")[:-1]:  # parent folders
            d += "/" + part
            try:
                os.mkdir(d)
            except OSError:
                pass
        with open("/" + name, "wb") as f:
            for j in range(i, i + size, 512):
                f.write(mem[j:min(j + 512, i + size)])
        i += size
        n += 1


def _mount():
    disk = cm3.Disk()
    try:
        vfs.mount(vfs.VfsLfs2(disk), "/")
        return False
    except OSError:
        vfs.VfsLfs2.mkfs(disk)
        vfs.mount(vfs.VfsLfs2(disk), "/")
        return True


# Collect after every 4 KB allocated instead of only when the heap is full: in a 64 KB heap the firmware's
# short-lived garbage would otherwise be scattered between its long-lived objects until no 1.2 KB block was
# left (a modem reset then failed re-reading ca.pem: MemoryError with ~14 KB free in pieces of 1.1 KB; with the
# threshold the largest free block stays above 10 KB -- make bench, mcu_qemu_cm3 largest_free_min).
gc.threshold(4096)

if _mount():
    print("qemu_cm3: formatted the RAM disk; %d seeded file(s)" % _seed())
del _mount, _seed
gc.collect()
