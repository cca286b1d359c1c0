"""A MicroPython unix port with the firmware frozen into it: the bytecode lives in the binary, as it lives in
flash on a board, so the heap holds only what the running firmware allocates (issue 8: the demo scenario under
``-X heapsize=64k``).

    python -m tools.frozen_unix [--m32] [--no-tls] [--cache DIR] [--jobs N] [--force] [--quiet]

prints the path of the binary (build/micropython-1.26.1/micropython-frozen[-notls][-m32]). Run the firmware with it as a board would: only frozen modules on the path and
``firmware/main.py`` (copied alone into a folder, so that the script's folder -- sys.path[0] -- holds no other
module) as the entry script:

    MICROPYPATH=.frozen <binary> -X heapsize=64k <dir>/main.py --port <tty>

What is built: MicroPython 1.26.1 from Debian's source package (the only MicroPython source this machine's
registries offer; pinned by sha256, as in Debian's Sources index), its ``mpy-cross``, and the unix port's
``standard`` variant with ``FROZEN_MANIFEST`` set to a manifest written into the cache: the port's asyncio,
the root manifest.py with its defaults (every modem, transport and cloud: the unix board runs any
configuration; the library at -O3) and boards/unix/board.py. Debian's ``+ds`` source strips the git
submodules (lib/*), so:

* TLS (the ``tls`` module, and hashlib's sha1 and md5 that come with it) uses mbed TLS 3.6.7 from Debian's
  ``mbedtls`` source package, unpacked into lib/mbedtls (also pinned). ``--no-tls`` builds without it:
  hashlib then has sha256 only (EnOS ``signmethod: sha1`` is refused at start-up, as on an STM32 build
  without SSL). The firmware itself needs no TLS on the host: the modem does TLS.
* ``btree`` (lib/berkeley-db-1.xx) and ``ffi`` are left out; the firmware uses neither.
* the unix port's default manifest (which also requires mip, ssl and unix-ffi from micropython-lib) is
  replaced by the cache's own: asyncio, the root manifest, the board.

``--m32`` builds a static 32-bit (i386) binary (the port's MICROPY_FORCE_32BIT): its objects have the sizes
they have on the 32-bit ESP32 and STM32 (the 64-bit port's pointers, and so its dicts, lists, functions and
classes, are twice as large). gcc's multilib is used when installed; otherwise Debian's libc6-dev-i386 and
lib32gcc-N-dev matching the installed glibc and gcc are fetched with ``apt-get download`` and unpacked into
the cache (nothing is installed). Static, so it runs without an i386 loader.
* micropython-lib (lib/micropython-lib) is absent, so the root manifest's ``require("hmac")`` resolves to a
  stand-in that freezes nothing: cellmqtt.cloudsign then computes HMAC-SHA256 on hashlib itself
  (``HMAC_IMPL == "hashlib"``), as it does on a firmware without hmac.

Everything lives in the cache folder (default build/micropython-1.26.1, which .gitignore covers and
``make clean`` removes): the downloads, the unpacked tree, its build folders and the finished binary. A second
run reuses the binary unless the frozen sources (lib/cellmqtt, firmware/app, boards/unix/board.py,
manifest.py) or the build options changed (a sha256 over them is kept next to the binary); a change only
regenerates the frozen content and relinks. Concurrent runs wait for each other (a lock file).

``build()`` raises ``BuildError`` with the reason (no compiler, no network, a checksum mismatch, a failed
make with the tail of its log) -- benchmarks report that reason instead of failing.
"""

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MP_VERSION = "1.26.1"
DEBIAN_POOL = "https://deb.debian.org/debian/pool/main"
# Debian sid's source packages, as listed in dists/sid/main/source/Sources (Checksums-Sha256 of the .orig
# tarballs; micropython 1.26.1+ds-1, mbedtls 3.6.7-3)
MICROPYTHON_TARBALL = ("m/micropython/micropython_1.26.1+ds.orig.tar.xz",
                       "f5ad2ec89d3e921f753d448955af98b6005655f84ba26087dde6ba0e8d062f34")
MBEDTLS_TARBALL = ("m/mbedtls/mbedtls_3.6.7.orig.tar.bz2",
                   "a7e8bcbec0e6f761b4af24f25677626b35f762f68eef79c08677a363212d11f6")
DEFAULT_CACHE = ROOT / "build" / ("micropython-" + MP_VERSION)
BUILD_DIR = "build-cellmqtt"  # the unix port's build folder (ports/unix/build-cellmqtt[-notls][-m32])
# the frozen sources: a change to any of these rebuilds the frozen content
FIRMWARE_SOURCES = ("manifest.py", "lib/cellmqtt/*.py", "firmware/app/*.py", "boards/unix/board.py")


class BuildError(Exception):
    """The frozen binary cannot be built here; the message says why."""


def _manifest_text():
    # the frozen manifest: the port's asyncio (the standard variant's manifest would also require mip, ssl and
    # the unix-ffi library from micropython-lib, which the Debian source lacks), the root manifest, the board
    return "\n".join([
        "# Written by tools/frozen_unix.py: the cellmqtt firmware frozen into the MicroPython unix port.",
        'include("$(MPY_DIR)/extmod/asyncio")',
        "include(%r, port_manifest=False)" % str(ROOT / "manifest.py"),
        "module(\"board.py\", base_path=%r, opt=3)" % str(ROOT / "boards" / "unix"),
        "",
    ])


def _suffix(tls, m32):
    # one build folder and binary per configuration (make does not notice changed flags on built objects)
    return ("" if tls else "-notls") + ("-m32" if m32 else "")


def _make_args(cache, tls, m32):
    args = ["VARIANT=standard", "BUILD=" + BUILD_DIR + _suffix(tls, m32), "MICROPY_PY_BTREE=0", "MICROPY_PY_FFI=0",
            "FROZEN_MANIFEST=" + str(cache / "manifest.py"), "MPY_LIB_DIR=" + str(cache / "micropython-lib-stub")]
    if tls:
        args += ["MICROPY_PY_SSL=1", "MICROPY_SSL_MBEDTLS=1", "MICROPY_SSL_AXTLS=0"]
    else:
        args += ["MICROPY_PY_SSL=0"]
    if m32:
        args += ["MICROPY_FORCE_32BIT=1"]
    return args


def firmware_digest(tls=True, m32=False, cache=DEFAULT_CACHE):
    """sha256 over the frozen sources, the manifest, the pinned tarballs and the make options."""
    h = hashlib.sha256()
    for part in (MICROPYTHON_TARBALL[1], MBEDTLS_TARBALL[1] if tls else "no-tls", _manifest_text(),
                 " ".join(_make_args(Path(cache), tls, m32))):
        h.update(part.encode() + b"\0")
    files = sorted({p for pattern in FIRMWARE_SOURCES for p in ROOT.glob(pattern)})
    for p in files:
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _log(quiet, msg):
    if not quiet:
        print("frozen_unix: " + msg, file=sys.stderr, flush=True)


def _download(cache, rel, sha256, quiet):
    dl = cache / "dl"
    dl.mkdir(parents=True, exist_ok=True)
    dst = dl / rel.rsplit("/", 1)[1]
    if dst.exists() and _sha256(dst) == sha256:
        return dst
    url = DEBIAN_POOL + "/" + rel
    _log(quiet, "downloading " + url)
    tmp = dst.with_name(dst.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 16)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        # (Debian's pool keeps current versions only: when this one is gone, re-pin from Sources.xz)
        raise BuildError("cannot download %s: %s" % (url, e)) from None
    got = _sha256(tmp)
    if got != sha256:
        tmp.unlink(missing_ok=True)
        raise BuildError("%s: sha256 %s, expected %s (pinned from Debian's Sources)" % (url, got, sha256))
    os.replace(tmp, dst)
    return dst


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def _unpack(tarball, dest, strip_prefix, keep):
    """Extract the members of ``tarball`` under ``strip_prefix`` whose path (without it) starts with one of
    ``keep`` into ``dest``."""
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        with tarfile.open(tarball) as t:
            members = []
            for m in t.getmembers():
                if not m.name.startswith(strip_prefix + "/"):
                    continue
                m.name = m.name[len(strip_prefix) + 1:]
                if m.name.startswith(keep):
                    members.append(m)
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            t.extractall(tmp, members=members, **kw)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    except (OSError, tarfile.TarError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError("cannot unpack %s: %s" % (tarball, e)) from None


# what the unix port and mpy-cross build from (not the other ports, docs, tests)
_MP_KEEP = ("py/", "extmod/", "shared/", "lib/", "drivers/", "mpy-cross/", "tools/", "ports/unix/", "LICENSE")


def _source_tree(cache, tls, quiet):
    """The unpacked MicroPython tree (with mbed TLS in lib/mbedtls when ``tls``)."""
    src = cache / ("micropython-" + MP_VERSION)
    stamp = src / ".cellmqtt-unpacked"
    if not stamp.exists():
        tb = _download(cache, *MICROPYTHON_TARBALL, quiet)
        _log(quiet, "unpacking " + tb.name)
        _unpack(tb, src, "micropython-" + MP_VERSION, _MP_KEEP)
        stamp.write_text(MICROPYTHON_TARBALL[1] + "\n")
    mbed = src / "lib" / "mbedtls"
    if tls and not (mbed / ".cellmqtt-unpacked").exists():
        tb = _download(cache, *MBEDTLS_TARBALL, quiet)
        _log(quiet, "unpacking " + tb.name + " into lib/mbedtls")
        _unpack(tb, mbed, "mbedtls-3.6.7", ("include/", "library/", "LICENSE"))
        (mbed / ".cellmqtt-unpacked").write_text(MBEDTLS_TARBALL[1] + "\n")
    # micropython-lib stand-in: the build checks for its README.md; require("hmac") finds a package that
    # freezes nothing (cloudsign then uses its own HMAC on hashlib)
    stub = cache / "micropython-lib-stub"
    (stub / "python-stdlib" / "hmac").mkdir(parents=True, exist_ok=True)
    (stub / "README.md").write_text("Stand-in for micropython-lib (stripped from Debian's +ds source); written by "
                                    "tools/frozen_unix.py.\n")
    (stub / "python-stdlib" / "hmac" / "manifest.py").write_text(
        'metadata(version="0.0.0", description="stand-in: micropython-lib is not in the Debian source; '
        'nothing frozen, cellmqtt.cloudsign falls back to HMAC on hashlib")\n')
    return src


def _make(src, subdir, args, jobs, logf):
    # the caller's make variables (MAKEFLAGS: e.g. `make bench PORT=...`) must not reach MicroPython's Makefiles
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    # MicroPython's makeversionhdr asks git for a version: not our repository's (the tree lives inside it)
    env["GIT_CEILING_DIRECTORIES"] = str(src.parent)
    cmd = ["make", "-C", str(src / subdir), "-j%d" % jobs, "PYTHON=" + sys.executable] + args
    logf.write(("$ " + " ".join(cmd) + "\n").encode())
    logf.flush()
    return subprocess.run(cmd, check=False, stdout=logf, stderr=subprocess.STDOUT, env=env).returncode


def check_tools():
    """None when make and a C compiler are present, else what is missing."""
    missing = [t for t in ("make", "gcc") if shutil.which(t) is None]
    return ("not installed: " + ", ".join(missing)) if missing else None


_HELLO = "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", (int)sizeof(void *)); return 0; }\n"


def _try_m32(flags_c, flags_ld):
    """True when gcc builds and runs a static 32-bit program with these extra flags."""
    with tempfile.TemporaryDirectory() as d:
        c, exe = Path(d) / "t.c", Path(d) / "t"
        c.write_text(_HELLO)
        p = subprocess.run(["gcc", "-m32"] + flags_c + [str(c), "-o", str(exe)] + flags_ld, check=False,
                           capture_output=True)
        if p.returncode != 0:
            return False
        p = subprocess.run([str(exe)], check=False, capture_output=True, text=True)
        return p.returncode == 0 and p.stdout.strip() == "4"


def _m32_toolchain(cache, quiet):
    """(CFLAGS_EXTRA, LDFLAGS_EXTRA) for a static i386 binary: the system's multilib gcc when installed, else
    Debian's libc6-dev-i386 and lib32gcc-N-dev of the installed glibc and gcc versions, fetched with
    `apt-get download` (apt checks them against the signed archive) and unpacked into the cache with dpkg-deb
    -- nothing is installed. The binary is static: no i386 loader or libc is needed to run it."""
    if _try_m32([], ["-static"]):
        return [], ["-static"]
    if os.uname().machine != "x86_64":
        raise BuildError("--m32: needs an x86_64 host (this is %s)" % os.uname().machine)
    for tool in ("apt-get", "dpkg-deb", "dpkg-query"):
        if shutil.which(tool) is None:
            raise BuildError("--m32: gcc -m32 does not work and %s (to fetch the i386 libc) is missing" % tool)
    triplet = subprocess.run(["gcc", "-dumpmachine"], check=False, capture_output=True, text=True).stdout.strip()
    major = subprocess.run(["gcc", "-dumpversion"], check=False, capture_output=True, text=True).stdout.strip()
    major = major.split(".")[0]

    def version(pkg):
        p = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], check=False, capture_output=True, text=True)
        if p.returncode != 0 or not p.stdout:
            raise BuildError("--m32: %s is not installed (its i386 twin must match it)" % pkg)
        return p.stdout

    pkgs = ["libc6-dev-i386=" + version("libc6-dev"), "lib32gcc-%s-dev=%s" % (major, version("libgcc-%s-dev" % major))]
    root = cache / "i386-root"
    stamp = root / ".cellmqtt-packages"
    if not stamp.exists() or stamp.read_text().split() != pkgs:
        debs = cache / "dl" / "i386"
        shutil.rmtree(debs, ignore_errors=True)
        debs.mkdir(parents=True)
        _log(quiet, "apt-get download " + " ".join(pkgs))
        p = subprocess.run(["apt-get", "download"] + pkgs, check=False, cwd=debs, capture_output=True, text=True)
        if p.returncode != 0:
            raise BuildError("--m32: apt-get download %s failed: %s" % (" ".join(pkgs), p.stderr.strip()[-300:]))
        shutil.rmtree(root, ignore_errors=True)
        for deb in sorted(debs.glob("*.deb")):
            if subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=False).returncode != 0:
                raise BuildError("--m32: dpkg-deb -x %s failed" % deb.name)
        stamp.write_text("\n".join(pkgs) + "\n")
    # glibc's headers are bi-arch: the amd64 ones plus the i386 package's gnu/stubs-32.h
    cflags = ["-isystem", str(root / "usr" / "include" / triplet), "-isystem", "/usr/include/" + triplet]
    libdirs = [root / "usr" / "lib32", root / "usr" / "lib" / "gcc" / triplet / major / "32"]
    ldflags = ["-static"] + ["-B%s" % d for d in libdirs] + ["-L%s" % d for d in libdirs]
    if not _try_m32(cflags, ldflags):
        raise BuildError("--m32: gcc -m32 -static still fails with %s unpacked in %s" % (" ".join(pkgs), root))
    return cflags, ldflags


def build(cache=None, jobs=2, tls=True, m32=False, force=False, quiet=False):
    """Build (or reuse) the frozen unix binary; return its path. Raises BuildError with the reason.
    ``tls``: with mbed TLS (hashlib sha1/md5, the tls module); ``m32``: a static 32-bit (i386) binary, whose
    heap holds objects of the size a 32-bit MCU's does (pointers are half the size of the 64-bit port's)."""
    cache = Path(cache or DEFAULT_CACHE).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    name = "micropython-frozen" + _suffix(tls, m32)
    binary = cache / name
    stampf = cache / (name + ".json")
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building: wait for it, then reuse
        digest = firmware_digest(tls, m32, cache)
        try:
            stamp = json.loads(stampf.read_text())
        except (OSError, ValueError):
            stamp = {}
        if not force and binary.exists() and stamp.get("digest") == digest:
            return binary
        why = check_tools()
        if why:
            raise BuildError("no C toolchain: " + why)
        t0 = time.monotonic()
        src = _source_tree(cache, tls, quiet)
        args = _make_args(cache, tls, m32)
        if m32:
            cflags, ldflags = _m32_toolchain(cache, quiet)
            args += ["CFLAGS_EXTRA=" + " ".join(cflags), "LDFLAGS_EXTRA=" + " ".join(ldflags)]
        (cache / "manifest.py").write_text(_manifest_text())
        logpath = cache / ("build%s.log" % _suffix(tls, m32))
        with open(logpath, "wb") as logf:
            _log(quiet, "building mpy-cross and the unix port (log: %s)" % logpath)
            if _make(src, "mpy-cross", [], jobs, logf) != 0:
                raise BuildError("mpy-cross did not build:\n" + _tail(logpath))
            if _make(src, "ports/unix", args, jobs, logf) != 0:
                raise BuildError("the unix port did not build:\n" + _tail(logpath))
        built = src / "ports" / "unix" / (BUILD_DIR + _suffix(tls, m32)) / "micropython"
        tmp = binary.with_name(binary.name + ".tmp")
        shutil.copy2(built, tmp)
        _verify(tmp, tls, m32)
        os.replace(tmp, binary)  # atomic: a firmware still running the previous binary keeps its file
        stampf.write_text(json.dumps({"digest": digest, "micropython": MP_VERSION, "tls": tls, "m32": m32,
                                      "build_s": round(time.monotonic() - t0, 1)}, indent=1))
        _log(quiet, "built in %.0f s" % (time.monotonic() - t0))
    return binary


def _tail(path, n=25):
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


# every module the unix firmware imports must come from the binary (an empty folder as cwd and script folder)
_VERIFY = """
import sys, hashlib
import app.main, app.supervisor, board, cellmqtt.bg96, cellmqtt.bc660k, cellmqtt.huawei, cellmqtt.enos, asyncio
hashlib.sha256
if %r and not hasattr(hashlib, "sha1"):
    raise SystemExit("hashlib has no sha1")
if sys.maxsize != %d:
    raise SystemExit("word size: sys.maxsize is %%d" %% sys.maxsize)
print("ok", sys.implementation.version)
"""


def _verify(binary, tls, m32):
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run([str(binary), "-X", "heapsize=1M", "-c", _VERIFY % (tls, 2**31 - 1 if m32 else 2**63 - 1)],
                           check=False, cwd=d, capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, MICROPYPATH=".frozen"))
    if p.returncode != 0 or not p.stdout.startswith("ok"):
        binary.unlink(missing_ok=True)
        raise BuildError("the built binary does not import the frozen firmware: %s%s" % (p.stdout, p.stderr))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.frozen_unix", description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="download/build folder (default %(default)s)")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="make -j (default 2)")
    ap.add_argument("--no-tls", action="store_true", help="build without mbed TLS (hashlib: sha256 only)")
    ap.add_argument("--m32", action="store_true", help="a static 32-bit (i386) binary: object sizes of a 32-bit MCU")
    ap.add_argument("--force", action="store_true", help="run make even when the binary is up to date")
    ap.add_argument("--quiet", "-q", action="store_true")
    a = ap.parse_args(argv)
    try:
        print(build(a.cache, a.jobs, not a.no_tls, a.m32, a.force, a.quiet))
    except BuildError as e:
        print("frozen_unix: " + str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
