"""A tiny scripted modem on a pty, for tests of the host side's tty handling (not the emulator)."""

import os
import threading
import tty


class PtyPeer(threading.Thread):
    def __init__(self, link):
        super().__init__(daemon=True)
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.slave = slave
        self.link = link
        os.symlink(os.ttyname(slave), link)
        self.done = False

    def _w(self, data):
        os.write(self.master, data)

    def run(self):
        buf = b""
        pub_len = None
        while not self.done:
            try:
                d = os.read(self.master, 256)
            except OSError:
                return
            buf += d
            while True:
                if pub_len is not None:
                    if len(buf) < pub_len:
                        break
                    data, buf = buf[:pub_len], buf[pub_len:]
                    pub_len = None
                    self._w(b"\r\nOK\r\n\r\n+QMTPUB: 0,1,0\r\n")
                    self._w(b'\r\n+QMTRECV: 0,1,"t",%d,"%s"\r\n' % (len(data), data))
                    continue
                i = buf.find(b"\r")
                if i < 0:
                    break
                cmd, buf = buf[:i], buf[i + 1:]
                if cmd == b"AT":
                    self._w(b"\r\nOK\r\n")
                elif cmd == b"AT+CSQ":
                    self._w(b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
                elif cmd == b"AT+CPIN?":
                    self._w(b"\r\n+CME ERROR: 10\r\n")
                elif cmd.startswith(b"AT+QMTPUB="):
                    pub_len = int(cmd.rsplit(b",", 1)[1])
                    self._w(b"\r\n> ")
                elif cmd == b"AT+BYE":
                    self.done = True
                    os.close(self.slave)
                    os.close(self.master)
                    return
                else:
                    self._w(b"\r\nERROR\r\n")
