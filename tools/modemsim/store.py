"""Non-volatile state of an emulated module: UFS files and NV settings, like the module's flash.

With a state directory, everything is written through to disk (``ufs/`` holds one file per UFS file, named
by the hex of its UFS name so any name is safe; ``nv.json`` holds settings), so it survives a module reset
and an emulator restart. Without one, the same state lives in memory: it survives module resets (which only
lose volatile state) but not the emulator process.
"""

import json
import os
from pathlib import Path


class Store:
    def __init__(self, state_dir=None):
        self.dir = Path(state_dir) if state_dir else None
        self.files = {}  # UFS name -> bytes
        self.nv = {}
        if self.dir is not None:
            (self.dir / "ufs").mkdir(parents=True, exist_ok=True)
            for p in sorted((self.dir / "ufs").iterdir()):
                if p.name.endswith(".tmp"):
                    continue  # an interrupted write: the rename never happened, so the file never existed
                try:
                    name = bytes.fromhex(p.name).decode("latin-1")
                except ValueError:
                    continue  # not ours
                self.files[name] = p.read_bytes()
            nvp = self.dir / "nv.json"
            if nvp.exists():
                self.nv = json.loads(nvp.read_text())

    # ---- UFS files ----
    def put_file(self, name, data):
        self.files[name] = bytes(data)
        if self.dir is not None:
            self._atomic_write(self.dir / "ufs" / name.encode("latin-1").hex(), bytes(data))

    def delete_file(self, name):
        del self.files[name]
        if self.dir is not None:
            p = self.dir / "ufs" / name.encode("latin-1").hex()
            if p.exists():
                p.unlink()

    # ---- NV settings ----
    def get(self, key, default=None):
        return self.nv.get(key, default)

    def set(self, key, value):
        if self.nv.get(key) == value and key in self.nv:
            return
        self.nv[key] = value
        if self.dir is not None:
            self._atomic_write(self.dir / "nv.json", json.dumps(self.nv, indent=1, sort_keys=True).encode())

    @staticmethod
    def _atomic_write(path, data):
        # A crash mid-write must not leave half a file: write aside, then rename (atomic on POSIX).
        tmp = Path(str(path) + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
