# Test support for driver tests on the MicroPython unix port: the emulator's control socket, certificates
# copied onto the "flash" (a tmp dir), and drivers built on the unix board's tty.
import asyncio
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


ALL = ("ca.pem", "client.pem", "client.key")  # the certificates and key of a mutual-TLS device


async def bring_up(m):
    """A driver through its bring-up steps up to a configured SSL context; returns the certificate bytes sent."""
    await m.start()
    await m.check_sim()
    if hasattr(m, "configure_radio"):  # BG96
        await m.configure_radio()
    await m.wait_registered()
    await m.pdp_up()
    await m.sync_clock()
    sent = await m.provision_certs()
    await m.configure_ssl()
    return sent


async def wait_for(cond, ms=4000):
    for _ in range(ms // 20):
        if cond():
            return True
        await asyncio.sleep(0.02)
    return cond()


async def round_trip(t, topic, payload):
    """Subscribe, publish QoS 1 and return the first message that comes back."""
    got = []
    t.on_message(lambda tp, pl: got.append((tp, pl)))
    await t.subscribe(topic, 1)
    await t.publish(topic, payload, 1)
    assert await wait_for(lambda: got), "message not received back"
    return got[0]
