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


def make(kind, info, flash, transcript=None, cls=None, **sections):
    """A driver of ``kind`` on the emulator's tty, built as the app's start-up wiring builds it: the AT engine
    on the board's pipe, then the driver (its CONFIG supplies the defaults the sections leave out). ``cls``: a
    subclass of the driver to build instead (a test that changes a timing constant)."""
    from cellmqtt.at_engine import AtEngine

    log = []
    cfg = config(flash, **sections)
    __import__("cellmqtt." + kind)
    import sys

    cls = cls or sys.modules["cellmqtt." + kind].Driver
    at = AtEngine(Board(info["port"]).pipe(), cls.RXBUF, transcript, log.append)
    m = cls(at, None, cfg, log.append, flash)
    m.logs = log
    return m


_TRANSPORTS = {}


def mqtt(m):
    """The driver's MQTT transport as mqtt.transport selects it (native: its NATIVE dialect; socket: our client
    over its TLS socket), built once per driver as the app builds it."""
    t = _TRANSPORTS.get(id(m))
    if t is None:
        cfg = m.config
        if cfg.get("mqtt", {}).get("transport", "native") == "socket":
            import sys

            from cellmqtt.mqtt_client import MqttClient

            __import__(m.SOCKET[0])
            t = MqttClient(getattr(sys.modules[m.SOCKET[0]], m.SOCKET[1])(m, cfg))
        else:
            t = m.NATIVE(m, cfg)
        _TRANSPORTS[id(m)] = t
    return t


ALL = ("ca.pem", "client.pem", "client.key")  # the certificates and key of a mutual-TLS device


async def bring_up(m):
    """A driver through its bring-up steps up to a configured SSL context; returns the certificate bytes sent."""
    await m.start()
    await m.check_sim()
    await m.configure_radio()
    await m.configure_power()
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
