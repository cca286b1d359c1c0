"""The emulated UART: a pty pair, the slave in raw mode, and a symlink at --link pointing to the slave.

The emulator keeps its own handle on the slave open for its whole life, so a client can close and reopen
the port (like unplugging a terminal program from a USB modem) without the master seeing a hang-up, and
the slave is put in raw mode so whatever opens it gets the bytes exactly as the module sent them (no echo
by the tty layer, no CR/LF translation). Bytes the module sends while no client has the port open wait
in the pty's buffer (a few KB) and are read by the next client, like a USB CDC modem's host buffer.
"""

import os
import tty


class PtyLink:
    def __init__(self, link_path):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.device = os.ttyname(self.slave)
        self.link = os.path.abspath(link_path) if link_path else None
        if self.link:
            if os.path.islink(self.link):
                os.unlink(self.link)  # a stale link from an earlier run
            elif os.path.exists(self.link):
                raise FileExistsError("--link %s exists and is not a symlink; refusing to replace it" % self.link)
            os.symlink(self.device, self.link)

    def read(self, n=4096):
        """Bytes the host wrote, or b'' if none are waiting."""
        try:
            return os.read(self.master, n)
        except BlockingIOError:
            return b""
        except OSError:
            # EIO: no slave open anywhere. We keep our own slave fd, so this should not happen; treat as
            # "nothing to read" rather than killing the emulator.
            return b""

    def write(self, data):
        """Write what fits now; return the number of bytes written (0 if the buffer is full)."""
        try:
            return os.write(self.master, data)
        except BlockingIOError:
            return 0

    def close(self):
        if self.link and os.path.islink(self.link) and os.readlink(self.link) == self.device:
            os.unlink(self.link)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
