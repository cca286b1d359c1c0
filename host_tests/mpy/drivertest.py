# Test support for driver tests on the MicroPython unix port: the emulator's control socket, certificates
# copied onto the "flash" (a tmp dir), and drivers built on the unix board's tty.
import json
import socket
import struct

from board import Board


def control(info, obj):
    """One request on the emulator's control socket (unix socket, JSON lines) -> the reply dict."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(struct.pack("<H", socket.AF_UNIX) + info["control"].encode() + b"\0")
    s.send(json.dumps(obj).encode() + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        d = s.recv(4096)
        if not d:
            break
        buf += d
    s.close()
    r = json.loads(buf)
    assert r.get("ok"), r
    return r


def counters(info):
    return control(info, {"cmd": "counters"})["counters"]


def copy_certs(pki, flash, names=("ca.pem",)):
    """Copy the test PKI's files onto the device's flash dir (certs/). names: ca.pem, client.pem, client.key."""
    import os

    d = flash + "/certs"
    try:
        os.mkdir(d)
    except OSError:
        pass
    for n in names:
        with open(pki[n.replace(".", "_")], "rb") as f:
            data = f.read()
        with open(d + "/" + n, "wb") as f:
            f.write(data)
    return d


def config(flash, **sections):
    cfg = {"modem": {"apn": "iot.test"}, "tls": {"dir": flash + "/certs", "ca": "ca.pem"},
           "mqtt": {"host": "broker.test", "port": 8883}}
    for k, v in sections.items():
        cfg.setdefault(k, {}).update(v)
    return cfg


def make(kind, info, flash, transcript=None, **sections):
    log = []
    cfg = config(flash, **sections)
    if kind == "bg96":
        from cellmqtt.bg96 import Bg96 as cls
    else:
        from cellmqtt.bc660k import Bc660k as cls
    m = cls(Board(info["port"]), cfg, transcript=transcript, log=log.append, state_dir=flash)
    m.logs = log
    return m
