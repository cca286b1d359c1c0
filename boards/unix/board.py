# Board definition for the MicroPython unix port: the modem's UART is a tty -- a USB-attached modem
# (/dev/ttyUSB2) or the modem emulator's pty. There are no power or reset lines: the driver resets the
# module with AT commands instead. `make run PORT=/dev/ttyUSB2` uses this board.
import select
import termios

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_VMIN = const(6)  # termios c_cc indices (Linux); the unix port's termios has no names for them
_VTIME = const(5)
_BAUD = {9600: "B9600", 57600: "B57600", 115200: "B115200", 230400: "B230400", 460800: "B460800",
         921600: "B921600"}


def open_tty(path, baud=115200):
    """Open ``path`` raw, 8N1 at ``baud``, with non-blocking reads (VMIN=VTIME=0): readinto() returns what
    is there, which is what the AT engine's stream expects after poll() said the tty is readable."""
    f = open(path, "r+b")
    fd = f.fileno()
    termios.setraw(fd)
    a = termios.tcgetattr(fd)
    cc = a[6]
    cc[_VMIN] = 0
    cc[_VTIME] = 0
    name = _BAUD.get(baud)
    if name is None:
        f.close()
        raise ValueError("unsupported baud rate %d" % baud)
    speed = getattr(termios, name)
    a[4] = speed
    a[5] = speed
    termios.tcsetattr(fd, termios.TCSANOW, a)
    return f


class TtyPipe:
    """The AT engine's byte pipe over a tty. A poll-then-read on a tty can come back empty (another reader took
    the bytes, or a spurious wake-up); that is not the end of the stream, which only a hang-up (the device
    unplugged, the emulator stopped) is: ``hangup()`` tells the engine which."""

    def __init__(self, tty):
        import asyncio

        self.tty = tty
        self._s = asyncio.StreamReader(tty)
        self._p = select.poll()
        self._p.register(tty, select.POLLIN)

    def readinto(self, buf):
        return self._s.readinto(buf)  # the stream's own coroutine: no extra one per read

    def hangup(self):
        # after an empty read: True when the other side hung up (then it is the end of the stream)
        for _, ev in self._p.poll(0):
            if ev & (select.POLLHUP | select.POLLERR):
                return True
        return False

    async def write(self, data):
        self._s.write(data)
        await self._s.drain()

    def send(self, data):
        # a short command: one blocking write, no coroutine (the engine's hot path allocates nothing here)
        self.tty.write(data)

    def close(self):
        self.tty.close()


class Board:
    """The board interface drivers use. ``pins`` are absent here: power_on/reset report that they did
    nothing, so the driver falls back to AT+CFUN=1,1 / AT+QRST=1 and to probing with AT."""

    NAME = "unix"  # the config's "board" value
    MODEM = None  # any modem (a USB modem or the emulator)
    name = "unix"
    has_power_lines = False

    def __init__(self, cfg, baud=115200):
        # cfg: the app configuration (modem.port, modem.baud) or just the tty path
        if isinstance(cfg, dict):
            m = cfg.get("modem", {})
            port, baud = m.get("port"), m.get("baud", baud)
        else:
            port = cfg
        if not port:
            raise ValueError("modem.port: the unix port needs the modem's tty (e.g. /dev/ttyUSB2)")
        self.port = port
        self.baud = baud

    def uart(self):
        return open_tty(self.port, self.baud)

    def pipe(self):
        """The AT engine's pipe to the modem (see cellmqtt.at_engine)."""
        return TtyPipe(self.uart())

    async def power_on(self):
        return False

    async def power_off(self):
        return False

    async def reset(self):
        return False

    def status(self):
        return None  # no STATUS line: unknown

    def watchdog(self, timeout_ms):
        return None  # the unix port has no hardware watchdog

    def readers(self):
        return {}  # no sensors of its own

    def codec(self):
        """The payload codec of a Huawei product with a binary codec plug-in, or None (the app's demo layout)."""
        return None

    def reboot(self):
        # "reboot" command on a PC: end the process with EX_TEMPFAIL so a service manager restarts it
        import sys

        sys.exit(75)
