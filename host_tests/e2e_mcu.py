"""End-to-end support on an emulated MCU (issue 16): the firmware frozen into the qemu_cm3 image (boards/qemu_cm3),
running on QEMU's Cortex-M3 with UART1 on the modem emulator's pty. Everything else is host_tests/e2e.py's
Device: the emulator, its faults, the cloud twin and its control. ``image()`` builds (or reuses) the image and
says why not (``Unavailable``) when this machine cannot: no arm-none-eabi-gcc, no qemu-system-arm.
"""

import shutil
import subprocess
import sys

from e2e import ROOT, Device, Firmware

BOARD = "qemu_cm3"


class Unavailable(Exception):
    """The image cannot be built or run here; the message says why (a test skips with it)."""


def missing_tools():
    """What this machine lacks to build and run the qemu_cm3 image, or None."""
    from tools import firmware

    why = []
    if shutil.which("arm-none-eabi-gcc") is None:
        why.append("no arm-none-eabi-gcc (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)")
    if shutil.which("qemu-system-arm") is None:
        why.append("no qemu-system-arm (apt-get install qemu-system-arm)")
    if not why and firmware.check_tools():
        why.append(firmware.check_tools())
    return "; ".join(why) or None


def image(board=BOARD):
    """The built image's record (tools.firmware.build: "elf", "flash_bytes", ...); raises Unavailable."""
    from tools import firmware

    why = missing_tools()
    if why:
        raise Unavailable(why)
    try:
        return firmware.build(board, quiet=True)
    except firmware.BuildError as e:
        raise Unavailable("the %s image does not build: %s" % (board, e)) from None


class QemuFirmware(Firmware):
    """The firmware as a QEMU process (tools/qemu_cm3.py execs QEMU: kill() is a power cut). The flash folder's
    files are seeded onto the board's RAM disk at boot; what the firmware writes stays inside the machine."""

    def __init__(self, flash, port, log_path, elf):
        super().__init__(flash, port, log_path)
        self.elf = elf

    def start(self):
        cmd = [sys.executable, "-m", "tools.qemu_cm3", "--image", str(self.elf), "--flash", str(self.flash),
               "--port", self.port, "--seed-file", str(self.log_path.with_suffix(".seed"))]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        return self


class McuDevice(Device):
    """e2e.Device whose firmware runs on the qemu_cm3 image (config "board": "qemu_cm3")."""

    def __init__(self, tmp_path, pki, start_twin, start_modemsim, elf, **kw):
        kw.setdefault("board", BOARD)
        super().__init__(tmp_path, pki, start_twin, start_modemsim, **kw)
        self.elf = elf

    def start(self, heapsize=None, transcript=None):
        self.runs += 1
        self.fw = QemuFirmware(self.flash, self.sim.info["port"], self.tmp / ("firmware-%d.log" % self.runs),
                               self.elf).start()
        return self.fw
