"""Modem emulator: native MQTT (AT+QMT*) and raw TLS sockets (AT+QSSL*) against a real local broker.

The acceptance round trips: for each profile, push/upload the CA (and client cert/key for mutual TLS),
configure SSL, open, connect, subscribe, publish and receive the message back as +QMTRECV; and the same
over the raw TLS socket with MQTT packets built here. A paho client on the broker side checks that what
the emulator sent is real MQTT.
"""

import json
import os
import re
import struct
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from fixtures_modemsim import AtPort, CipherBroker

OK = rb"\r\nOK\r\n"


def boot(m):
    p = AtPort(m.info["port"])
    p.wait_boot(marker=b"+QIND: SMS DONE\r\n" if m.info["profile"] == "bg96" else b"RDY\r\n")
    p.cmd("ATE0")
    return p


def urc(p, pattern, timeout=10):
    """The next line matching pattern (bytes regex); earlier lines are skipped."""
    out = p.read_until(pattern + rb"[^\r]*\r\n", timeout)
    return re.search(pattern + rb"[^\r]*", out).group(0)


def bg96_upload(p, name, data):
    p.write(b'AT+QFUPL="%s",%d,10\r' % (name.encode(), len(data)))
    p.read_until(rb"CONNECT\r\n")
    p.write(data)
    out = p.read_until(OK)
    assert re.search(rb"\+QFUPL: %d,[0-9a-f]+\r\n" % len(data), out), out


def bc660k_push(p, item, data):
    p.write(b'AT+QSSLCFG=0,0,"%s"\r' % item.encode())
    p.read_until(rb"> ")
    time.sleep(0.6)  # the module drops what arrives within 500 ms of the prompt
    p.write(data + b"\x1a")
    out = p.read_until(OK)  # the content shown back first (BC660K-GL&BC950K-GL MQTT AN V1.2, 6.2)
    assert out == data + b'\r\n+QSSLCFG: 0,0,"%s",%d\r\n\r\nOK\r\n' % (item.encode(), len(data)), out


class Watcher:
    """A paho subscriber on the broker: sees what the emulator's MQTT client really published."""

    def __init__(self, broker, topic):
        self.got = []
        self.event = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watcher", protocol=mqtt.MQTTv311)
        self.c.on_message = lambda cl, ud, msg: (self.got.append((msg.topic, msg.payload, msg.qos)), self.event.set())
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.connect(broker["host"], broker["plain_port"], 30)
        self.c.loop_start()
        self.c.subscribe(topic, 1)
        assert subscribed.wait(5)

    def publish(self, topic, payload, qos=1):
        self.c.publish(topic, payload, qos).wait_for_publish(5)

    def wait(self, timeout=5):
        assert self.event.wait(timeout), "nothing arrived at the broker"
        return self.got[-1]

    def close(self):
        self.c.disconnect()  # first, so the network thread leaves its select at once
        self.c.loop_stop()


@pytest.fixture
def watcher_factory(broker):
    made = []

    def make(topic):
        w = Watcher(broker, topic)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


def resolve(broker):
    return ["broker.test:8883=%s:%d" % (broker["host"], broker["tls_port"]),
            "broker.test:1883=%s:%d" % (broker["host"], broker["plain_port"])]


# ---- acceptance: BG96 native MQTT over TLS ---------------------------------------------------------------


def test_bg96_tls_mqtt_round_trip(broker, start_modemsim, pki, watcher_factory):
    m = start_modemsim("bg96", resolve=resolve(broker))
    p = boot(m)
    p.wait_registered()
    assert p.cmd("AT+QIACT=1") == b"\r\nOK\r\n"
    ca = Path(pki["ca_pem"]).read_bytes()
    bg96_upload(p, "cacert.pem", ca)
    for line in ['AT+QSSLCFG="cacert",2,"cacert.pem"', 'AT+QSSLCFG="seclevel",2,1', 'AT+QSSLCFG="sslversion",2,4',
                 'AT+QSSLCFG="ciphersuite",2,0XFFFF', 'AT+QSSLCFG="ignorelocaltime",2,0',
                 'AT+QMTCFG="SSL",0,1,2', 'AT+QMTCFG="version",0,4']:
        assert p.cmd(line) == b"\r\nOK\r\n", line
    assert p.cmd('AT+QMTCFG="ssl",0') == b'\r\n+QMTCFG: "ssl",1,2\r\n\r\nOK\r\n'
    w = watcher_factory("dev/#")
    assert p.cmd('AT+QMTOPEN=0,"broker.test",8883') == b"\r\nOK\r\n"
    assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 0,0"
    assert p.cmd("AT+QMTOPEN?") == b'\r\n+QMTOPEN: 0,"broker.test",8883\r\n\r\nOK\r\n'
    assert p.cmd('AT+QMTCONN=0,"dev-1","user","pass"') == b"\r\nOK\r\n"
    assert urc(p, rb"\+QMTCONN: ") == b"+QMTCONN: 0,0,0"
    assert p.cmd("AT+QMTCONN?") == b"\r\n+QMTCONN: 0,3\r\n\r\nOK\r\n"
    assert p.cmd('AT+QMTSUB=0,1,"dev/echo",1') == b"\r\nOK\r\n"
    assert urc(p, rb"\+QMTSUB: ") == b"+QMTSUB: 0,1,0,1"
    payload = b'{"msgType":"deviceReq","data":[{"v":1,"s":"a,b"}]}'
    p.write(b'AT+QMTPUB=0,7,1,0,"dev/echo"\r')
    assert p.read_until(rb"> ") == b"\r\n> "
    p.write(payload + b"\x1a")
    assert p.read_until(OK) == b"\r\nOK\r\n"
    out = p.read_until(rb"\+QMTRECV:[^\r]*\r\n", 5)
    if b"\r\n+QMTPUB: 0,7,0\r\n" not in out:  # PUBACK and the echoed PUBLISH may come in either order
        out += p.read_until(rb"\+QMTPUB: 0,7,0\r\n", 5)
    recv = re.search(rb'\+QMTRECV: 0,(\d+),"dev/echo","(.*)"\r\n', out)
    assert recv and recv.group(2) == payload  # raw, not escaped: quotes and commas as they are
    assert int(recv.group(1)) >= 1  # QoS 1 delivery carries a packet id
    assert w.wait() == ("dev/echo", payload, 1)
    # the other direction: something published at the broker arrives as +QMTRECV
    w.publish("dev/echo", b"from-cloud", qos=1)
    assert re.fullmatch(rb'\+QMTRECV: 0,\d+,"dev/echo","from-cloud"', urc(p, rb"\+QMTRECV: "))
    assert p.cmd("AT+QMTDISC=0") == b"\r\nOK\r\n"
    assert urc(p, rb"\+QMTDISC: ") == b"+QMTDISC: 0,0"
    c = m.counters()
    assert c["tls_handshakes"] == 1 and c["qmtpub"] == 1 and c["qmtrecv"] == 2
    assert c["upload_bytes"] == len(ca)


# ---- MQTT packets for the raw-socket tests (built by hand: the emulator only moves bytes) ----------------


def _remlen(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _s(b):
    return struct.pack("!H", len(b)) + b


def mqtt_connect(client_id, user=None, password=None):
    flags = 0x02 | (0x80 if user is not None else 0) | (0x40 if password is not None else 0)
    body = _s(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 60) + _s(client_id)
    if user is not None:
        body += _s(user)
    if password is not None:
        body += _s(password)
    return b"\x10" + _remlen(len(body)) + body


def mqtt_subscribe(pid, topic, qos=0):
    body = struct.pack("!H", pid) + _s(topic) + bytes([qos])
    return b"\x82" + _remlen(len(body)) + body


def mqtt_publish(topic, payload):
    body = _s(topic) + payload
    return b"\x30" + _remlen(len(body)) + body


def mqtt_packets(data):
    """Split a byte stream into (type, body) packets."""
    out, i = [], 0
    while i < len(data):
        t = data[i] >> 4
        n, mult, j = 0, 1, i + 1
        while True:
            b = data[j]
            n += (b & 0x7F) * mult
            mult *= 128
            j += 1
            if not b & 0x80:
                break
        out.append((t, data[j:j + n]))
        i = j + n
    return out


class SslReader:
    """Collect raw-socket bytes from +QSSLURC/+QSSLRECV output."""

    def __init__(self):
        self.data = b""


def bg96_tls_setup(p, pki, ctx=1, seclevel=1, ca="ca_pem", client=False):
    p.wait_registered()
    p.cmd("AT+QIACT=1")
    bg96_upload(p, "ca.pem", Path(pki[ca]).read_bytes())
    p.cmd('AT+QSSLCFG="cacert",%d,"ca.pem"' % ctx)
    p.cmd('AT+QSSLCFG="seclevel",%d,%d' % (ctx, seclevel))
    if client:
        bg96_upload(p, "client.pem", Path(pki["client_pem"]).read_bytes())
        bg96_upload(p, "client.key", Path(pki["client_key"]).read_bytes())
        p.cmd('AT+QSSLCFG="clientcert",%d,"client.pem"' % ctx)
        p.cmd('AT+QSSLCFG="clientkey",%d,"client.key"' % ctx)


BC660K_SUITES_OK = "ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA:AES256-SHA"


@pytest.fixture
def cipher_broker(pki, tmp_path):
    """Factory of brokers with a chosen TLS cipher list (request it before start_modemsim, so brokers stop
    after the emulators: an amqtt broker stopped with clients still connected can take seconds)."""
    made = []

    def make(ciphers, require_client_cert=False):
        b = CipherBroker(pki, tmp_path / ("broker%d.log" % len(made)), ciphers, require_client_cert)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def rsa_broker(cipher_broker):
    """A broker that also accepts TLS_RSA_WITH_AES_*_CBC_SHA: the suites a BC660K-GL has."""
    return cipher_broker(BC660K_SUITES_OK).info


# ---- acceptance: BC660K-GL native MQTT over mutual TLS ---------------------------------------------------


def test_bc660k_mutual_tls_mqtt_round_trip(cipher_broker, start_modemsim, pki):
    b = cipher_broker(BC660K_SUITES_OK, require_client_cert=True)
    m = start_modemsim("bc660k", resolve=resolve(b.info), settings={"sleep_idle": 30})
    p = boot(m)
    p.cmd("AT+QSCLK=0")
    p.wait_registered()
    assert p.cmd('AT+QSSLCFG=0,0,"seclevel",2') == b"\r\nOK\r\n"
    for item, key in (("cacert", "ca_pem"), ("clientcert", "client_pem"), ("clientkey", "client_key")):
        bc660k_push(p, item, Path(pki[key]).read_bytes())
    dump = p.cmd("AT+QSSLCFG=0,0")
    assert b'+QSSLCFG: 0,0,"clientkey",%d\r\n' % os.path.getsize(pki["client_key"]) in dump
    for line in ('AT+QMTCFG="ssl",0,1,0,0', 'AT+QMTCFG="version",0,1', 'AT+QMTCFG="showrecvlen",0,1'):
        assert p.cmd(line) == b"\r\nOK\r\n", line
    assert p.cmd('AT+QMTCFG="version",0') == b"\r\n+QMTCFG: 1\r\n\r\nOK\r\n"  # no option name
    w = Watcher(b.info, "nb/#")
    try:
        assert p.cmd('AT+QMTOPEN=0,"broker.test",8883') == b"\r\nOK\r\n"
        assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 0,0"
        assert p.cmd('AT+QMTCONN=0,"nb-1"') == b"\r\nOK\r\n"
        assert urc(p, rb"\+QMTCONN: ") == b"+QMTCONN: 0,0,0"
        assert p.cmd('AT+QMTSUB=0,3,"nb/cmd",1') == b"\r\nOK\r\n"
        assert urc(p, rb"\+QMTSUB: ") == b"+QMTSUB: 0,3,0,1"
        payload = b'{"id":"1","params":{"t":"x,y"}}\x00\x1a'  # binary-safe in the length form
        p.write(b'AT+QMTPUB=0,4,1,0,"nb/cmd",%d\r' % len(payload))
        p.read_until(rb"> ")
        time.sleep(0.6)  # 500 ms gate after the prompt
        p.write(payload)
        assert p.read_until(OK) == b"\r\nOK\r\n"
        got = p.read_until(rb'\+QMTRECV: [^\r]*"\r\n')
        assert re.search(rb'\r\n\+QMTRECV: 0,\d+,"nb/cmd",%d,"%s"\r\n$' % (len(payload), re.escape(payload)), got)
        assert w.wait() == ("nb/cmd", payload, 1)
    finally:
        w.close()
    c = m.counters()
    assert c["cert_bytes"] == sum(os.path.getsize(pki[k]) for k in ("ca_pem", "client_pem", "client_key"))
    assert c["tls_handshakes"] == 1
    # the private key never reached the transcript
    key_body = Path(pki["client_key"]).read_text().splitlines()[1]
    assert key_body not in m.transcript_text()


class TlsServer:
    """A one-shot blocking TLS server in a thread (OpenSSL sends its alerts, unlike asyncio servers)."""

    def __init__(self, pki, ciphers):
        import socket
        import ssl

        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki["server_pem"], pki["server_key"])
        self.ctx.set_ciphers(ciphers)
        self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.errors = []
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        import ssl

        self.sock.settimeout(10)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError) as e:
            self.errors.append(e)

    def close(self):
        self.sock.close()


def test_bc660k_shares_no_cipher_with_an_ecdhe_only_server(start_modemsim, pki):
    srv = TlsServer(pki, "ECDHE-RSA-AES128-GCM-SHA256")
    try:
        m = start_modemsim("bc660k", resolve=["ecdhe.test=127.0.0.1:%d" % srv.port], settings={"sleep_idle": 30})
        p = boot(m)
        p.wait_registered()
        p.cmd('AT+QSSLCFG=0,0,"seclevel",1')
        bc660k_push(p, "cacert", Path(pki["ca_pem"]).read_bytes())
        assert p.cmd('AT+QSSLOPEN=0,0,"ecdhe.test",8883,0') == b"\r\nOK\r\n"
        assert urc(p, rb"\+QSSLOPEN: ") == b"+QSSLOPEN: 0,0,-5"  # cipher error
        srv.t.join(5)
        assert "NO_SHARED_CIPHER" in str(srv.errors[0]).upper()
        assert m.counters()["tls_failures"] == 1
    finally:
        srv.close()


def test_bc660k_shared_fixture_tls_mqtt_with_the_project_broker(bc660k, broker, pki):
    # tools.broker offers the RSA AES-CBC-SHA suites next to ECDHE, so the BC660K-GL's handshake succeeds
    # (BC660K_SUITES_OK above is the same idea for the brokers these tests start themselves).
    p = AtPort(bc660k["port"])
    p.wait_boot(marker=b"RDY\r\n")
    p.cmd("ATE0")
    p.cmd("AT+QSCLK=0")
    p.wait_registered()
    p.cmd('AT+QSSLCFG=0,0,"seclevel",1')
    bc660k_push(p, "cacert", Path(pki["ca_pem"]).read_bytes())
    for line in ('AT+QMTCFG="ssl",1,1,0,0', 'AT+QMTCFG="version",1,1'):
        p.cmd(line)
    p.cmd('AT+QMTOPEN=1,"broker.test",8883')
    assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 1,0"
    p.cmd('AT+QMTCONN=1,"nb-fixture"')
    assert urc(p, rb"\+QMTCONN: ") == b"+QMTCONN: 1,0,0"
    p.cmd('AT+QMTSUB=1,1,"fx/t",0')
    assert urc(p, rb"\+QMTSUB: ") == b"+QMTSUB: 1,1,0,0"
    assert p.cmd('AT+QMTPUB=1,0,0,0,"fx/t",2,"ok"') == b"\r\nOK\r\n"
    assert urc(p, rb"\+QMTRECV: ") == b'+QMTRECV: 1,0,"fx/t","ok"'


# ---- acceptance: raw TLS sockets with MQTT built by the host ---------------------------------------------


def test_bg96_raw_tls_socket_mqtt_round_trip(broker, start_modemsim, pki):
    m = start_modemsim("bg96", resolve=resolve(broker))
    p = boot(m)
    bg96_tls_setup(p, pki, ctx=1)
    assert p.cmd('AT+QSSLOPEN=1,1,4,"broker.test",8883,0') == b"\r\nOK\r\n"
    assert urc(p, rb"\+QSSLOPEN: ") == b"+QSSLOPEN: 4,0"
    st = p.cmd("AT+QSSLSTATE=4")
    assert re.fullmatch(rb'\r\n\+QSSLSTATE: 4,"SSLClient","broker.test",8883,\d+,2,1,4,0,"uart1",1\r\n\r\nOK\r\n', st)
    stream = b""

    def send(data, fixed=True):
        if fixed:
            p.write(b"AT+QSSLSEND=4,%d\r" % len(data))
            p.read_until(rb"> ")
            p.write(data)
        else:
            p.write(b"AT+QSSLSEND=4\r")
            p.read_until(rb"> ")
            p.write(data + b"\x1a")
        assert p.read_until(rb"\r\n(SEND OK|ERROR)\r\n") == b"\r\nSEND OK\r\n"

    def recv_packets(n):
        nonlocal stream
        end = time.monotonic() + 5
        while len(mqtt_packets(stream)) < n and time.monotonic() < end:
            urc(p, rb'\+QSSLURC: "recv",4')
            while True:
                out = p.cmd("AT+QSSLRECV=4,1500")
                k = int(re.match(rb"\r\n\+QSSLRECV: (\d+)\r\n", out).group(1))
                if k == 0:
                    break
                head = out.index(b"\r\n", 2) + 2
                stream += out[head:head + k]
        return mqtt_packets(stream)

    send(mqtt_connect(b"raw-1", b"u", b"p"))
    pk = recv_packets(1)
    assert pk[0] == (2, b"\x00\x00")  # CONNACK accepted
    send(mqtt_subscribe(1, b"raw/t", 0), fixed=False)
    pk = recv_packets(2)
    assert pk[1] == (9, b"\x00\x01\x00")  # SUBACK pid 1, QoS 0
    send(mqtt_publish(b"raw/t", b'{"hello":"world"}'))
    pk = recv_packets(3)
    assert pk[2][0] == 3 and pk[2][1] == _s(b"raw/t") + b'{"hello":"world"}'
    assert p.cmd("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
    assert p.cmd("AT+QSSLSTATE") == b"\r\nOK\r\n"
    text = m.transcript_text()
    assert "[REDACTED]" in text and "raw-1" in text  # CONNECT user/password redacted, client id kept


def test_bg96_raw_tls_push_mode_and_peer_close(broker, start_modemsim, pki):
    m = start_modemsim("bg96", resolve=resolve(broker))
    p = boot(m)
    bg96_tls_setup(p, pki, ctx=0)
    p.cmd('AT+QSSLOPEN=1,0,2,"broker.test",8883,1')
    assert urc(p, rb"\+QSSLOPEN: ") == b"+QSSLOPEN: 2,0"
    pkt = mqtt_connect(b"push-1")
    p.write(b"AT+QSSLSEND=2,%d\r" % len(pkt))
    p.read_until(rb"> ")
    p.write(pkt)
    p.read_until(rb"SEND OK\r\n")
    out = p.read_until(rb'\+QSSLURC: "recv",2,4\r\n', 5)
    assert out.endswith(b'\r\n+QSSLURC: "recv",2,4\r\n')
    assert p.read_until(rb"\x20\x02\x00\x00\r\n") == b"\x20\x02\x00\x00\r\n"  # CONNACK pushed raw
    m.control({"cmd": "fault", "do": {"action": "ssl_closed", "client": 2}})
    assert urc(p, rb'\+QSSLURC: "closed"') == b'+QSSLURC: "closed",2'
    assert p.cmd("AT+QSSLSEND=2,1") == b"\r\nERROR\r\n"
    assert p.cmd("AT+QSSLCLOSE=2") == b"\r\nOK\r\n"


def test_bc660k_raw_tls_socket_hex_mode_round_trip(rsa_broker, start_modemsim, pki):
    m = start_modemsim("bc660k", resolve=resolve(rsa_broker), settings={"sleep_idle": 30})
    p = boot(m)
    p.wait_registered()
    p.cmd('AT+QSSLCFG=0,0,"seclevel",1')
    assert p.cmd('AT+QSSLCFG=0,0,"dataformat",1,1') == b"\r\nOK\r\n"
    assert p.cmd('AT+QSSLCFG=0,0,"dataformat"') == b'\r\n+QSSLCFG: 0,0,"dataformat",1,1\r\n\r\nOK\r\n'
    bc660k_push(p, "cacert", Path(pki["ca_pem"]).read_bytes())
    assert p.cmd('AT+QSSLOPEN=0,0,"broker.test",8883,0') == b"\r\nOK\r\n"
    assert urc(p, rb"\+QSSLOPEN: ") == b"+QSSLOPEN: 0,0,0"
    pkt = mqtt_connect(b"hex-1", b"dk&pk", b"SECRETPW")
    p.write(b"AT+QSSLSEND=0,0,%d\r" % len(pkt))
    p.read_until(rb"> ")
    time.sleep(0.6)
    p.write(pkt.hex().encode())  # 2 x len hex characters
    assert p.read_until(OK) == b"\r\nOK\r\n"
    assert urc(p, rb"\+QSSLSEND: ") == b"+QSSLSEND: 0,0,0"
    # T7 shape: count of bytes and quoted lowercase hex
    assert urc(p, rb'\+QSSLURC: "recv"') == b'+QSSLURC: "recv",0,0,4,"20020000"'
    # subscribe, publish to ourselves, receive the PUBLISH back (all hex, Ctrl-Z form this time)
    for pkt, expect in ((mqtt_subscribe(7, b"nbraw/t", 0), b"9003000700"),
                        (mqtt_publish(b"nbraw/t", b'{"v":42}'), mqtt_publish(b"nbraw/t", b'{"v":42}').hex().encode())):
        p.write(b"AT+QSSLSEND=0,0\r")
        p.read_until(rb"> ")
        time.sleep(0.6)
        p.write(pkt.hex().encode() + b"\x1a")
        assert p.read_until(OK) == b"\r\nOK\r\n"
        assert urc(p, rb"\+QSSLSEND: ") == b"+QSSLSEND: 0,0,0"
        got = urc(p, rb'\+QSSLURC: "recv"')
        assert got == b'+QSSLURC: "recv",0,0,%d,"%s"' % (len(expect) // 2, expect)
    assert p.cmd("AT+QSSLCLOSE=0,0") == b"\r\nOK\r\n"
    assert urc(p, rb"\+QSSLCLOSE: ") == b"+QSSLCLOSE: 0,0,0"
    text = m.transcript_text()
    assert b"SECRETPW".hex() not in text and "SECRETPW" not in text
    assert b"hex-1".hex() in text


# ---- TLS settings and failures ---------------------------------------------------------------------------


def test_bg96_mutual_tls_needs_the_uploaded_client_certificate(cipher_broker, start_modemsim, pki):
    b = cipher_broker("ECDHE-RSA-AES128-GCM-SHA256", require_client_cert=True)
    m = start_modemsim("bg96", resolve=resolve(b.info))
    p = boot(m)
    bg96_tls_setup(p, pki, ctx=3, seclevel=2, client=True)
    p.cmd('AT+QMTCFG="ssl",0,1,3')
    p.cmd('AT+QMTCFG="version",0,4')
    p.cmd('AT+QMTOPEN=0,"broker.test",8883')
    assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 0,0"
    p.cmd('AT+QMTCONN=0,"mtls"')
    assert urc(p, rb"\+QMTCONN: ") == b"+QMTCONN: 0,0,0"
    # seclevel 1: server check only, no client certificate sent -> the server refuses the handshake
    p.cmd('AT+QSSLCFG="seclevel",3,1')
    p.cmd('AT+QMTCFG="ssl",1,1,3')
    p.cmd('AT+QMTOPEN=1,"broker.test",8883')
    assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 1,-1"
    assert "client.key" in m.transcript_text()
    assert Path(pki["client_key"]).read_text().splitlines()[2] not in m.transcript_text()


def test_bg96_tls_failures_give_module_codes(broker, start_modemsim, pki):
    m = start_modemsim("bg96", resolve=resolve(broker) + ["nowhere.test=127.0.0.1:1"])
    p = boot(m)
    # MQTT before the PDP context is up: 3 (failed to activate PDP)
    p.cmd('AT+QMTCFG="ssl",0,1,1')
    p.cmd('AT+QMTOPEN=0,"broker.test",8883')
    assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 0,3"
    bg96_tls_setup(p, pki, ctx=1, ca="other-ca_pem")  # a CA that did not sign the server
    p.cmd('AT+QMTOPEN=0,"broker.test",8883')
    assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 0,-1"  # T2: failed handshake
    p.cmd('AT+QSSLOPEN=1,1,0,"broker.test",8883')
    assert urc(p, rb"\+QSSLOPEN: ") == b"+QSSLOPEN: 0,566"
    assert p.cmd("AT+QIGETERROR") == b"\r\n+QIGETERROR: 566,socket connect failed\r\n\r\nOK\r\n"
    p.cmd('AT+QMTOPEN=0,"no-such-host.invalid",8883')
    assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 0,4"  # DNS
    p.cmd('AT+QSSLOPEN=1,1,0,"no-such-host.invalid",8883')
    assert urc(p, rb"\+QSSLOPEN: ") == b"+QSSLOPEN: 0,565"
    p.cmd('AT+QMTOPEN=0,"nowhere.test",8883')
    assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 0,-1"  # connection refused
    c = m.counters()
    assert c["tls_failures"] == 2 and c["mqtt_open_failures"] == 4


def test_bg96_validity_checked_against_module_clock(broker, start_modemsim, pki):
    # No network time: the clock stays at 1980 and the server certificate is "not yet valid".
    m = start_modemsim("bg96", resolve=resolve(broker), no_nitz=True)
    p = boot(m)
    bg96_tls_setup(p, pki, ctx=1)
    p.cmd('AT+QMTCFG="ssl",0,1,1')
    p.cmd('AT+QMTOPEN=0,"broker.test",8883')
    assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 0,-1"
    assert "not valid before" in m.transcript_text()
    # ignorelocaltime 1: the dates are not checked
    p.cmd('AT+QSSLCFG="ignorelocaltime",1,1')
    p.cmd('AT+QMTOPEN=0,"broker.test",8883')
    assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 0,0"
    p.cmd("AT+QMTCLOSE=0")
    assert urc(p, rb"\+QMTCLOSE: ") == b"+QMTCLOSE: 0,0"
    # set the clock with AT+CCLK and check again
    p.cmd('AT+QSSLCFG="ignorelocaltime",1,0')
    p.cmd('AT+CCLK="%s+00"' % time.strftime("%y/%m/%d,%H:%M:%S", time.gmtime()))
    p.cmd('AT+QMTOPEN=0,"broker.test",8883')
    assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 0,0"
    # a clock far in the future: the certificate has expired
    p.cmd("AT+QMTCLOSE=0")
    p.cmd('AT+CCLK="99/01/01,00:00:00+00"')
    p.cmd('AT+QMTOPEN=0,"broker.test",8883')
    assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 0,-1"
    assert "expired" in m.transcript_text()


def test_bc660k_certificate_error_code(rsa_broker, start_modemsim, pki):
    m = start_modemsim("bc660k", resolve=resolve(rsa_broker), settings={"sleep_idle": 30})
    p = boot(m)
    p.wait_registered()
    p.cmd('AT+QSSLCFG=0,0,"seclevel",1')
    bc660k_push(p, "cacert", Path(pki["other-ca_pem"]).read_bytes())
    p.cmd('AT+QSSLOPEN=0,0,"broker.test",8883,0')
    assert urc(p, rb"\+QSSLOPEN: ") == b"+QSSLOPEN: 0,0,-3"
    p.cmd('AT+QSSLCFG=0,0,"seclevel",0')  # no verification at all
    p.cmd('AT+QSSLOPEN=0,0,"broker.test",8883,0')
    assert urc(p, rb"\+QSSLOPEN: ") == b"+QSSLOPEN: 0,0,0"


# ---- MQTT command shapes, forms, limits, link states ------------------------------------------------------


def test_qmtcfg_query_formats_per_profile(start_modemsim):
    p = boot(start_modemsim("bg96", firmware="BG96MAR02A07M1G"))
    assert p.cmd('AT+QMTCFG="keepalive",0') == b'\r\n+QMTCFG: "keepalive",120\r\n\r\nOK\r\n'
    assert p.cmd('AT+QMTCFG="timeout",0') == b'\r\n+QMTCFG: "timeout",5,3,0\r\n\r\nOK\r\n'
    assert p.cmd('AT+QMTCFG="version",5') == b'\r\n+QMTCFG: "version",3\r\n\r\nOK\r\n'
    p.cmd('AT+QMTCFG="will",1,1,1,0,"lwt/t","gone"')
    assert p.cmd('AT+QMTCFG="will",1') == b'\r\n+QMTCFG: "will",1,1,0,"lwt/t","gone"\r\n\r\nOK\r\n'
    assert p.cmd('AT+QMTCFG="recv/mode",0,0,1') == b"\r\nERROR\r\n"  # not on A07 firmware
    assert p.cmd('AT+QMTCFG="keepalive",6') == b"\r\nERROR\r\n"  # clients 0..5
    assert p.cmd("AT+QMTPUB=?") == b"\r\n+QMTPUB: (0-5),<msgid>,(0-2),(0,1),<topic>\r\n\r\nOK\r\n"
    q = boot(start_modemsim("bc660k", settings={"sleep_idle": 30}))
    assert q.cmd('AT+QMTCFG="keepalive",0') == b"\r\n+QMTCFG: 120\r\n\r\nOK\r\n"
    assert q.cmd('AT+QMTCFG="timeout",0') == b"\r\n+QMTCFG: 30,0,0\r\n\r\nOK\r\n"
    assert q.cmd('AT+QMTCFG="pdpcid",0') == b"\r\nERROR\r\n"  # no pdpcid on BC660K-GL
    assert q.cmd('AT+QMTCFG="recv/mode",0') == b"\r\nERROR\r\n"
    assert q.cmd('AT+QMTCFG="keepalive",5') == b"\r\n+CME ERROR: 50\r\n"  # clients 0..4


def test_bg96_later_firmware_length_form_and_recv_mode(broker, start_modemsim):
    m = start_modemsim("bg96", resolve=resolve(broker), firmware="later")
    p = boot(m)
    assert b"Revision: BG96MAR02A08M1G" in p.cmd("ATI")
    assert b'+QMTCFG: "recv/mode",(0-5),(0,1),(0,1)\r\n' in p.cmd("AT+QMTCFG=?")
    assert p.cmd("AT+QMTPUB=?") == b"\r\n+QMTPUB: (0-5),<msgid>,(0-2),(0,1),<topic>,(1-1548)\r\n\r\nOK\r\n"
    p.wait_registered()
    p.cmd("AT+QIACT=1")
    p.cmd('AT+QMTCFG="version",0,4')
    p.cmd('AT+QMTCFG="recv/mode",0,0,1')
    p.cmd('AT+QMTOPEN=0,"broker.test",1883')
    assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 0,0"
    p.cmd('AT+QMTCONN=0,"later"')
    assert urc(p, rb"\+QMTCONN: ") == b"+QMTCONN: 0,0,0"
    p.cmd('AT+QMTSUB=0,1,"l/t",0')
    assert urc(p, rb"\+QMTSUB: ") == b"+QMTSUB: 0,1,0,0"
    payload = b"a\x1ab\x1bc"  # Ctrl-Z and Esc inside: impossible in the Ctrl-Z form
    p.cmd("ATE1")
    p.write(b'AT+QMTPUB=0,0,0,0,"l/t",%d\r' % len(payload))
    assert p.read_until(rb"> ") == b'AT+QMTPUB=0,0,0,0,"l/t",5\r\r\n> '
    p.write(payload)
    assert p.read_until(OK) == payload + b"\r\nOK\r\n"  # this firmware echoes the payload with ATE1
    assert urc(p, rb"\+QMTRECV: ") == b'+QMTRECV: 0,0,"l/t",5,"%s"' % payload
    p.cmd("ATE0")
    # buffered receive mode: URC with a slot, read with AT+QMTRECV
    p.cmd("AT+QMTDISC=0")
    p.cmd('AT+QMTCFG="recv/mode",1,1,1')
    p.cmd('AT+QMTCFG="version",1,4')
    p.cmd('AT+QMTOPEN=1,"broker.test",1883')
    urc(p, rb"\+QMTOPEN: 1")
    p.cmd('AT+QMTCONN=1,"later2"')
    urc(p, rb"\+QMTCONN: 1")
    p.cmd('AT+QMTSUB=1,2,"l/t",0')
    urc(p, rb"\+QMTSUB: 1")
    w = Watcher(broker, "x/none")
    try:
        w.publish("l/t", b"buffered", qos=0)
    finally:
        w.close()
    assert urc(p, rb"\+QMTRECV: 1") == b"+QMTRECV: 1,0"
    assert p.cmd("AT+QMTRECV?") == b"\r\n+QMTRECV: 1,1,0,0,0,0\r\n\r\nOK\r\n"
    assert p.cmd("AT+QMTRECV=1,0") == b'\r\n+QMTRECV: 1,0,"l/t",8,"buffered"\r\n\r\nOK\r\n'


def test_qmtpub_rules_limits_and_inflight(broker, start_modemsim):
    m = start_modemsim("bg96", resolve=resolve(broker), firmware="BG96MAR02A07M1G")
    p = boot(m)
    p.wait_registered()
    p.cmd("AT+QIACT=1")
    assert p.cmd('AT+QMTPUB=0,0,0,0,"t"') == b"\r\nERROR\r\n"  # not connected: no prompt
    p.cmd('AT+QMTCFG="version",0,4')
    p.cmd('AT+QMTOPEN=0,"broker.test",1883')
    urc(p, rb"\+QMTOPEN: ")
    p.cmd('AT+QMTCONN=0,"lim"')
    assert urc(p, rb"\+QMTCONN: ") == b"+QMTCONN: 0,0,0"
    assert p.cmd('AT+QMTPUB=0,5,0,0,"t"') == b"\r\nERROR\r\n"  # QoS 0 needs msgid 0
    assert p.cmd('AT+QMTPUB=0,0,1,0,"t"') == b"\r\nERROR\r\n"  # QoS 1 needs a msgid
    assert p.cmd('AT+QMTPUB=0,0,0,0,"t/#"') == b"\r\nERROR\r\n"  # no wildcards in a topic name
    assert p.cmd('AT+QMTPUB=0,0,0,0,"t",5') == b"\r\nERROR\r\n"  # length form: later firmware only
    # 1548 bytes is the limit (Ctrl-Z form)
    p.write(b'AT+QMTPUB=0,0,0,0,"t"\r')
    p.read_until(rb"> ")
    p.write(b"x" * 1549 + b"\x1a")
    assert p.read_until(rb"\r\n(OK|ERROR)\r\n") == b"\r\nERROR\r\n"
    p.write(b'AT+QMTPUB=0,0,0,0,"t"\r')
    p.read_until(rb"> ")
    p.write(b"x" * 1548 + b"\x1a")
    assert p.read_until(rb"\r\n(OK|ERROR)\r\n") == b"\r\nOK\r\n"
    assert urc(p, rb"\+QMTPUB: ") == b"+QMTPUB: 0,0,0"
    # Esc cancels: OK and nothing is sent
    p.write(b'AT+QMTPUB=0,0,0,0,"t"\r')
    p.read_until(rb"> ")
    p.write(b"never\x1b")
    assert p.read_until(rb"\r\n(OK|ERROR)\r\n") == b"\r\nOK\r\n"
    assert p.read_for(0.3) == b""
    # six QoS 1 publishes pipelined faster than the acks: the sixth is refused (at most 5 in flight)
    burst = b"".join(b'AT+QMTPUB=0,%d,1,0,"t"\rm%d\x1a' % (i, i) for i in range(1, 7))
    p.write(burst)
    out = p.read_for(1.0)
    assert out.count(b"\r\nOK\r\n") == 5 and out.count(b"\r\nERROR\r\n") == 1
    assert sorted(re.findall(rb"\+QMTPUB: 0,(\d),0", out)) == [b"1", b"2", b"3", b"4", b"5"]
    assert m.counters()["qmtpub_refused_inflight"] == 1
    # the refused 6th left its payload "m6<Ctrl-Z>" in command mode: it is a junk line until a CR comes
    p.write(b"\r")
    assert p.read_for(0.2) == b""
    assert m.counters()["junk_lines"] == 1
    # QoS 2: PUBREC/PUBREL/PUBCOMP run underneath, the result comes once the flow completes
    p.write(b'AT+QMTPUB=0,42,2,0,"t"\r')
    p.read_until(rb"> ")
    p.write(b"exactly-once\x1a")
    assert p.read_until(OK) == b"\r\nOK\r\n"
    assert urc(p, rb"\+QMTPUB: 0,42") == b"+QMTPUB: 0,42,0"


def test_bc660k_qmtpub_forms_hex_and_echomode(broker, start_modemsim):
    m = start_modemsim("bc660k", resolve=resolve(broker), settings={"sleep_idle": 30})
    p = boot(m)
    p.cmd("AT+QSCLK=0")
    p.wait_registered()
    p.cmd('AT+QMTCFG="version",2,1')
    p.cmd('AT+QMTCFG="echomode",2,1')
    p.cmd('AT+QMTOPEN=2,"broker.test",1883')
    assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 2,0"
    assert p.cmd('AT+QMTCFG="version",2,0') == b"\r\n+CME ERROR: 3\r\n"  # locked once opened
    assert p.cmd('AT+QMTOPEN=2,"broker.test",1883') == b"\r\n+CME ERROR: 3\r\n"  # stale client
    p.cmd('AT+QMTCONN=2,"forms"')
    assert urc(p, rb"\+QMTCONN: ") == b"+QMTCONN: 2,0,0"
    p.cmd('AT+QMTSUB=2,1,"f/#",0')
    urc(p, rb"\+QMTSUB: ")
    # (3) inline
    assert p.cmd('AT+QMTPUB=2,0,0,0,"f/a",5,"hello"') == b"\r\nOK\r\n"
    assert urc(p, rb"\+QMTRECV: ") == b'+QMTRECV: 2,0,"f/a","hello"'
    # (1) Ctrl-Z, echoed back (echomode 1)
    p.write(b'AT+QMTPUB=2,0,0,0,"f/b"\r')
    p.read_until(rb"> ")
    time.sleep(0.6)
    p.write(b"ctrlz\x1a")
    assert p.read_until(OK) == b"ctrlz\r\nOK\r\n"
    assert urc(p, rb"\+QMTRECV: ") == b'+QMTRECV: 2,0,"f/b","ctrlz"'
    # bytes inside the 500 ms gate are lost
    p.write(b'AT+QMTPUB=2,0,0,0,"f/c",4\r')
    p.read_until(rb"> ")
    p.write(b"lost")
    time.sleep(0.6)
    p.write(b"kept")
    assert p.read_until(OK) == b"kept\r\nOK\r\n"
    assert urc(p, rb"\+QMTRECV: ") == b'+QMTRECV: 2,0,"f/c","kept"'
    assert 'RX! "lost" dropped: inside the 500 ms gate' in m.transcript_text()
    assert p.cmd('AT+QMTPUB=2,0,0,0,"f/d",1461') == b"\r\n+CME ERROR: 50\r\n"  # 1460 max
    # hex data format both ways
    p.cmd("AT+QMTDISC=2")
    urc(p, rb"\+QMTDISC: ")
    p.cmd('AT+QMTCFG="dataformat",2,1,1')
    p.cmd('AT+QMTCFG="echomode",2,0')
    p.cmd('AT+QMTOPEN=2,"broker.test",1883')
    urc(p, rb"\+QMTOPEN: ")
    p.cmd('AT+QMTCONN=2,"forms-hex"')
    urc(p, rb"\+QMTCONN: ")
    p.cmd('AT+QMTSUB=2,1,"f/#",0')
    urc(p, rb"\+QMTSUB: ")
    p.write(b'AT+QMTPUB=2,0,0,0,"f/h",2\r')
    p.read_until(rb"> ")
    time.sleep(0.6)
    p.write(b"00ff")
    p.read_until(OK)
    assert urc(p, rb"\+QMTRECV: ") == b'+QMTRECV: 2,0,"f/h","00ff"'


def test_mqtt_link_states_and_qmtstat_codes(broker, start_modemsim):
    m = start_modemsim("bc660k", resolve=resolve(broker), settings={"sleep_idle": 30, "open_idle": 0.5})
    p = boot(m)
    p.wait_registered()
    # OPEN without CONN: the link is dropped after a few seconds with +QMTSTAT: <id>,7
    p.cmd('AT+QMTOPEN=0,"broker.test",1883')
    assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 0,0"
    assert p.cmd("AT+QMTCONN?") == b"\r\n+QMTCONN: 0,1\r\n\r\nOK\r\n"
    assert urc(p, rb"\+QMTSTAT: ", 3) == b"+QMTSTAT: 0,7"
    # MQTT 3.1 (the default version) to a 3.1.1-only broker: the broker drops the link without CONNACK
    p.cmd('AT+QMTOPEN=0,"broker.test",1883')
    urc(p, rb"\+QMTOPEN: ")
    p.cmd('AT+QMTCONN=0,"old-protocol"')
    assert urc(p, rb"\+QMTSTAT: ", 5) == b"+QMTSTAT: 0,1"
    # refused CONNACK (simulated at the module: the local broker accepts everyone)
    p.cmd('AT+QMTCFG="version",0,1')
    m.control({"cmd": "fault", "do": {"action": "broker_refuse", "code": 4}})
    p.cmd('AT+QMTOPEN=0,"broker.test",1883')
    urc(p, rb"\+QMTOPEN: ")
    p.cmd('AT+QMTCONN=0,"refused"')
    assert urc(p, rb"\+QMTCONN: ") == b"+QMTCONN: 0,0,4"
    assert urc(p, rb"\+QMTSTAT: ") == b"+QMTSTAT: 0,3"
    assert p.cmd("AT+QMTCONN?") == b"\r\nOK\r\n"
    # every +QMTSTAT code can be injected
    for code in range(1, 8):
        p.cmd('AT+QMTOPEN=0,"broker.test",1883')
        urc(p, rb"\+QMTOPEN: ")
        m.control({"cmd": "fault", "do": {"action": "qmtstat", "client": 0, "code": code}})
        assert urc(p, rb"\+QMTSTAT: ") == b"+QMTSTAT: 0,%d" % code


def test_bg96_will_is_published_when_the_link_dies(broker, start_modemsim, watcher_factory):
    m = start_modemsim("bg96", resolve=resolve(broker))
    p = boot(m)
    p.wait_registered()
    p.cmd("AT+QIACT=1")
    p.cmd('AT+QMTCFG="version",0,4')
    p.cmd('AT+QMTCFG="keepalive",0,30')
    p.cmd('AT+QMTCFG="will",0,1,1,0,"lwt/dev","offline"')
    w = watcher_factory("lwt/#")
    p.cmd('AT+QMTOPEN=0,"broker.test",1883')
    urc(p, rb"\+QMTOPEN: ")
    p.cmd('AT+QMTCONN=0,"will-dev"')
    assert urc(p, rb"\+QMTCONN: ") == b"+QMTCONN: 0,0,0"
    p.cmd('AT+QMTUNS=0,9,"nothing/here"')
    assert urc(p, rb"\+QMTUNS: ") == b"+QMTUNS: 0,9,0"
    m.control({"cmd": "fault", "do": {"action": "qmtstat", "client": 0, "code": 2}})
    assert urc(p, rb"\+QMTSTAT: ") == b"+QMTSTAT: 0,2"
    assert w.wait() == ("lwt/dev", b"offline", 1)  # the socket closed without DISCONNECT


def test_bg96_pdp_loss_closes_mqtt_clients(broker, start_modemsim):
    m = start_modemsim("bg96", resolve=resolve(broker))
    p = boot(m)
    p.wait_registered()
    p.cmd("AT+QIACT=1")
    p.cmd('AT+QMTCFG="version",3,4')
    p.cmd('AT+QMTOPEN=3,"broker.test",1883')
    urc(p, rb"\+QMTOPEN: ")
    p.cmd('AT+QMTCONN=3,"pdp"')
    urc(p, rb"\+QMTCONN: ")
    m.control({"cmd": "fault", "do": "pdp_lost"})
    out = p.read_until(rb"\+QMTSTAT: 3,1\r\n")
    assert out.index(b'+QIURC: "pdpdeact",1') < out.index(b"+QMTSTAT: 3,1")
    assert m.control({"cmd": "mqtt"})["mqtt"] == {}


def test_json_secrets_in_payloads_are_redacted_both_ways(broker, start_modemsim):
    m = start_modemsim("bg96", resolve=resolve(broker))
    p = boot(m)
    p.wait_registered()
    p.cmd("AT+QIACT=1")
    p.cmd('AT+QMTCFG="version",0,4')
    p.cmd('AT+QMTOPEN=0,"broker.test",1883')
    urc(p, rb"\+QMTOPEN: ")
    p.cmd('AT+QMTCONN=0,"cid|securemode=3,signmethod=sha256,timestamp=1|","dk&pk","PASSWORD-HEX"')
    urc(p, rb"\+QMTCONN: ")
    p.cmd('AT+QMTSUB=0,1,"/ext/session/pk/dk/thing/activate/info",0')
    urc(p, rb"\+QMTSUB: ")
    w = Watcher(broker, "x/none")
    try:
        w.publish("/ext/session/pk/dk/thing/activate/info", json.dumps(
            {"id": "1", "params": {"deviceSecret": "DEV-SECRET-1", "productKey": "pk"}}).encode(), qos=0)
    finally:
        w.close()
    got = urc(p, rb"\+QMTRECV: ")
    assert b"DEV-SECRET-1" in got  # the host gets the real payload
    p.write(b'AT+QMTPUB=0,0,0,0,"/ext/session/pk/dk/thing/activate/info_reply"\r')
    p.read_until(rb"> ")
    p.write(b'{"id":"1","code":200,"productSecret" : "PROD-\\"SECRET"}\x1a')
    p.read_until(OK)
    text = m.transcript_text()
    for secret in ("DEV-SECRET-1", "PROD-", "SECRET", "PASSWORD-HEX", "dk&pk"):
        assert secret not in text, secret
    assert text.count("[REDACTED]") == 4  # user, password, deviceSecret, productSecret (ATE0: no echo)
    assert "productKey" in text and "securemode=3" in text  # only the secrets go


def test_check_hostname_option_verifies_the_name_the_host_gave(broker, start_modemsim, pki):
    # the test server certificate names localhost and 127.0.0.1, not broker.test
    rules = resolve(broker) + ["localhost:8883=127.0.0.1:%d" % broker["tls_port"]]
    m = start_modemsim("bg96", resolve=rules, check_hostname=True)
    p = boot(m)
    bg96_tls_setup(p, pki, ctx=1)
    p.cmd('AT+QSSLOPEN=1,1,0,"broker.test",8883')
    assert urc(p, rb"\+QSSLOPEN: ") == b"+QSSLOPEN: 0,566"
    p.cmd('AT+QSSLOPEN=1,1,0,"localhost",8883')
    assert urc(p, rb"\+QSSLOPEN: ") == b"+QSSLOPEN: 0,0"
    # without the option (default) the name is not checked, like the modules
    m2 = start_modemsim("bg96", resolve=rules)
    p2 = boot(m2)
    bg96_tls_setup(p2, pki, ctx=1)
    p2.cmd('AT+QSSLOPEN=1,1,0,"broker.test",8883')
    assert urc(p2, rb"\+QSSLOPEN: ") == b"+QSSLOPEN: 0,0"


def test_tls_ciphers_override_lets_bc660k_reach_an_ecdhe_only_broker(broker, start_modemsim, pki):
    m = start_modemsim("bc660k", resolve=resolve(broker), tls_ciphers="ECDHE-RSA-AES128-GCM-SHA256",
                       settings={"sleep_idle": 30})
    p = boot(m)
    p.wait_registered()
    p.cmd('AT+QSSLCFG=0,0,"seclevel",1')
    bc660k_push(p, "cacert", Path(pki["ca_pem"]).read_bytes())
    p.cmd('AT+QSSLOPEN=0,0,"broker.test",8883,0')
    assert urc(p, rb"\+QSSLOPEN: ") == b"+QSSLOPEN: 0,0,0"


class FakeServer:
    """A TCP server in a thread: ``behaviour(conn)`` runs for the first connection."""

    def __init__(self, behaviour):
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.behaviour = behaviour
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        self.sock.settimeout(10)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            self.behaviour(conn)

    def close(self):
        self.sock.close()


def _close_soon(conn):
    time.sleep(0.3)


def _connack_then_ignore(conn):
    conn.settimeout(10)
    conn.recv(4096)  # CONNECT
    conn.sendall(b"\x20\x02\x00\x00")
    try:
        while conn.recv(4096):  # PINGREQs are never answered
            pass
    except OSError:
        pass


def test_server_closing_an_opened_link_and_a_dead_keepalive(start_modemsim):
    closer = FakeServer(_close_soon)
    silent = FakeServer(_connack_then_ignore)
    try:
        m = start_modemsim("bg96", resolve=["closer.test=127.0.0.1:%d" % closer.port,
                                            "silent.test=127.0.0.1:%d" % silent.port])
        p = boot(m)
        p.wait_registered()
        p.cmd("AT+QIACT=1")
        p.cmd('AT+QMTOPEN=0,"closer.test",1883')
        assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 0,0"
        assert urc(p, rb"\+QMTSTAT: ", 3) == b"+QMTSTAT: 0,1"  # closed by the server before CONNECT
        p.cmd('AT+QMTCFG="version",1,4')
        p.cmd('AT+QMTCFG="keepalive",1,1')
        p.cmd('AT+QMTOPEN=1,"silent.test",1883')
        assert urc(p, rb"\+QMTOPEN: ") == b"+QMTOPEN: 1,0"
        p.cmd('AT+QMTCONN=1,"ka"')
        assert urc(p, rb"\+QMTCONN: ") == b"+QMTCONN: 1,0,0"
        assert urc(p, rb"\+QMTSTAT: ", 6) == b"+QMTSTAT: 1,2"  # PINGREQ not answered
    finally:
        closer.close()
        silent.close()
