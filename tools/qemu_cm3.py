"""Run the qemu_cm3 firmware image (boards/qemu_cm3) on QEMU's emulated MPS2 AN385 Cortex-M3 board.

    python -m tools.qemu_cm3 [--image ELF] [--flash DIR] [--main FILE] (--port TTY | --pty) [--dry-run]

* UART0 (the REPL and the firmware's log) is this process's stdin/stdout;
* UART1 (the modem's UART, boards/qemu_cm3/board.py) goes to ``--port TTY`` -- the modem emulator's pty
  (``tools.modemsim --link``) or a USB modem's tty: QEMU opens it as a host serial device -- or, with ``--pty``,
  to a new pty of QEMU's whose path is printed (``UART1 /dev/pts/N``) for a terminal program or a bridge;
* ``--flash DIR``: the files of the board's flash (config.json, secrets.json, certs/...; main.py, else
  ``--main``, default firmware/main.py) are packed into a seed that QEMU's generic loader places at 0x20200000;
  the image's frozen _boot.py formats its RAM disk on the first boot and copies them in (the way `mpremote cp`
  provisions a board). What the firmware writes (outbox/, state/) lives on that RAM disk: it survives
  machine.reset() but not the end of the QEMU process.

With ``--port`` the launcher execs QEMU (signals reach it directly: SIGKILL is a power cut). ``--image``
defaults to build/firmware/qemu_cm3/firmware.elf (``make firmware BOARD=qemu_cm3``). The machine's heap is the
image's (64 KB; cm3.HEAP_SIZE).
"""

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "build" / "firmware" / "qemu_cm3" / "firmware.elf"
SEED_ADDR = 0x20200000  # boards/qemu_cm3/port/cm3.h CM3_SEED_ADDR
SEED_MAX = 0x00100000
MAGIC = b"CM3SEED1"


def seed(files):
    """The seed image of ``files`` ((name in the flash, bytes) pairs), the layout _boot.py reads."""
    out = bytearray(MAGIC)
    for name, data in files:
        n = name.encode()
        out += struct.pack("<H", len(n)) + n + struct.pack("<I", len(data)) + data
    out += b"\0\0"
    if len(out) > SEED_MAX:
        raise ValueError("the flash files take %d bytes; the seed holds %d" % (len(out), SEED_MAX))
    return bytes(out)


def flash_files(flash, main=None):
    """(name, bytes) of every file under ``flash`` (sorted), plus main.py from ``main`` when the folder has none."""
    files = []
    if flash:
        base = Path(flash)
        for p in sorted(base.rglob("*")):
            if p.is_file():
                files.append((str(p.relative_to(base)), p.read_bytes()))
    if main and not any(n == "main.py" for n, _ in files):
        files.append(("main.py", Path(main).read_bytes()))
    return files


def qemu_command(image, seed_path=None, port=None):
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        raise FileNotFoundError("qemu-system-arm is not installed (apt-get install qemu-system-arm)")
    cmd = [qemu, "-machine", "mps2-an385", "-nographic", "-monitor", "none", "-semihosting", "-serial", "stdio"]
    if port:
        cmd += ["-chardev", "serial,id=modem,path=%s" % port, "-serial", "chardev:modem"]
    else:
        cmd += ["-serial", "pty"]
    if seed_path:
        cmd += ["-device", "loader,file=%s,addr=0x%x,force-raw=on" % (seed_path, SEED_ADDR)]
    return cmd + ["-kernel", str(image)]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.qemu_cm3", description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=str(IMAGE), help="the firmware.elf (default %(default)s)")
    ap.add_argument("--flash", help="folder whose files are put on the board's flash at the first boot")
    ap.add_argument("--main", default=str(ROOT / "firmware" / "main.py"),
                    help="/main.py when --flash has none (default firmware/main.py); '' for none")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--port", help="host tty for UART1 (the modem emulator's pty, a USB modem)")
    g.add_argument("--pty", action="store_true", help="UART1 on a new pty of QEMU's (its path is printed)")
    ap.add_argument("--seed-file", help="where to write the seed (default: next to --flash, DIR.seed)")
    ap.add_argument("--dry-run", action="store_true", help="print the QEMU command and exit")
    a = ap.parse_args(argv)
    if not Path(a.image).is_file():
        print("qemu_cm3: %s: no such image (make firmware BOARD=qemu_cm3)" % a.image, file=sys.stderr)
        return 2
    seed_path = None
    files = flash_files(a.flash, a.main or None)
    if files:
        seed_path = a.seed_file or (str(Path(a.flash).resolve()) + ".seed" if a.flash else "qemu_cm3.seed")
        Path(seed_path).write_bytes(seed(files))
    try:
        cmd = qemu_command(a.image, seed_path, a.port)
    except FileNotFoundError as e:
        print("qemu_cm3: %s" % e, file=sys.stderr)
        return 2
    if a.dry_run:
        print(" ".join(cmd))
        return 0
    sys.stdout.flush()
    if a.port:
        os.execv(cmd[0], cmd)
    # --pty: QEMU names its pty on stdout ("char device redirected to /dev/pts/N (label serial1)")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    try:
        for line in p.stdout:
            m = re.search(rb"redirected to (\S+) \(label serial1\)", line)
            if m:
                print("UART1 %s" % m.group(1).decode(), file=sys.stderr, flush=True)
                break
            sys.stdout.buffer.write(line)
        shutil.copyfileobj(p.stdout, sys.stdout.buffer, 1)
        return p.wait()
    except KeyboardInterrupt:
        p.terminate()
        return p.wait()


if __name__ == "__main__":
    sys.exit(main())
