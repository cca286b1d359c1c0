"""The emulator's network side: --resolve, TCP, TLS from the module's SSL settings, MQTT via paho-mqtt.

``open_connection`` runs in a worker thread (it blocks on connect and handshake, like the module's own
network task) and returns a connected socket or raises ``NetError`` with a kind the profiles map to the
module's result codes. TLS is built from what the host configured on the module:

* CA = the certificate data the host uploaded (BG96 UFS file) or pushed (BC660K-GL), never a system store;
* seclevel 0: no verification; 1: verify the server chain; 2: also present the uploaded client
  certificate and key (sent only if the server asks, as OpenSSL does);
* at most TLS 1.2 (neither module has TLS 1.3); sslversion pins the version; the cipher list is the
  module's (BG96: the configured suite or all of its 13; BC660K-GL: its fixed 3);
* validity dates are checked against the *module clock* (not the host's) unless ignorelocaltime=1:
  OpenSSL's own time check is switched off (X509_V_FLAG_NO_CHECK_TIME) and notBefore/notAfter of the
  server certificate and of the CA that issued it are compared with the module time using ``cryptography``;
* the host name is not checked by default (neither manual has a setting for it); ``--check-hostname``
  checks the certificate against the name the host gave in QMTOPEN/QSSLOPEN (not the --resolve target)
  and sends it as SNI.

``MqttLink`` runs a paho-mqtt client over that same socket: paho's socket factory is overridden to return
it, and paho is driven from the asyncio loop through its external-loop API (loop_read/loop_write/
loop_misc with the on_socket_* callbacks), so all callbacks run on the emulator's loop thread.
"""

import ipaddress
import os
import socket
import ssl
import tempfile

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

X509_V_FLAG_NO_CHECK_TIME = 0x200000

# Quectel cipher suite codes -> OpenSSL names (seed 001 table 2; seed 004 table 2).
CIPHERS = {
    0x0035: "AES256-SHA",
    0x002F: "AES128-SHA",
    0x0005: "RC4-SHA",
    0x0004: "RC4-MD5",
    0x000A: "DES-CBC3-SHA",
    0x003D: "AES256-SHA256",
    0xC011: "ECDHE-RSA-RC4-SHA",
    0xC012: "ECDHE-RSA-DES-CBC3-SHA",
    0xC013: "ECDHE-RSA-AES128-SHA",
    0xC014: "ECDHE-RSA-AES256-SHA",
    0xC027: "ECDHE-RSA-AES128-SHA256",
    0xC028: "ECDHE-RSA-AES256-SHA384",
    0xC02F: "ECDHE-RSA-AES128-GCM-SHA256",
}
BG96_ALL = tuple(CIPHERS)
BC660K_SUITES = (0x002F, 0x0035, 0x000A)  # plus 0x00FF, the renegotiation SCSV OpenSSL always sends

# CONNACK return codes from paho's v5-style reason codes (paho maps 3.1.1 codes up; map them back).
_CONNACK_FROM_REASON = {0: 0, 128: 3, 132: 1, 133: 2, 134: 4, 135: 5, 136: 3}


class NetError(Exception):
    """kind: dns | refused | timeout | tls_cert | tls_expired | tls_key | tls_cipher | tls_version |
    tls_handshake | tls_rejected (server refused our certificate) | io"""

    def __init__(self, kind, detail=""):
        super().__init__("%s: %s" % (kind, detail) if detail else kind)
        self.kind = kind
        self.detail = detail


class Resolver:
    """--resolve rules: NAME=HOST[:PORT] (every port of NAME) or NAME:PORT=HOST:PORT (that port only)."""

    def __init__(self, rules=()):
        self.by_name = {}
        self.by_name_port = {}
        for rule in rules:
            left, sep, right = rule.partition("=")
            if not sep or not left or not right:
                raise ValueError("--resolve %r: expected NAME=HOST[:PORT] or NAME:PORT=HOST:PORT" % rule)
            host, port = _split_host_port(right)
            lname, lport = _split_host_port(left)
            if lport is not None:
                self.by_name_port[(lname.lower(), lport)] = (host, port if port is not None else lport)
            else:
                self.by_name[lname.lower()] = (host, port)

    def resolve(self, name, port):
        """(address, port) to connect to; raises NetError('dns')."""
        key = name.lower()
        if (key, port) in self.by_name_port:
            return self.by_name_port[(key, port)]
        if key in self.by_name:
            host, p = self.by_name[key]
            name, port = host, (p if p is not None else port)
        try:
            ipaddress.ip_address(name)
            return name, port
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            raise NetError("dns", "%s: %s" % (name, e)) from None
        return infos[0][4][0], port

    def describe(self):
        out = {k: "%s:%s" % v if v[1] else v[0] for k, v in self.by_name.items()}
        out.update({"%s:%d" % k: "%s:%d" % v for k, v in self.by_name_port.items()})
        return out


def _split_host_port(s):
    if s.count(":") == 1:
        h, p = s.split(":")
        try:
            return h, int(p)
        except ValueError:
            raise ValueError("bad port in %r" % s) from None
    return s, None


class TlsParams:
    """What the module's SSL context says, in terms the connector uses."""

    def __init__(self, seclevel, ca_pem=None, cert_pem=None, key_pem=None, version=4, ciphers=None,
                 check_time=None, hostname=None, tmpdir=None, sni=None):
        self.seclevel = seclevel
        self.ca_pem = ca_pem  # bytes or None
        self.cert_pem = cert_pem
        self.key_pem = key_pem
        self.version = version  # 0 SSL3, 1 TLS1.0, 2 TLS1.1, 3 TLS1.2, 4 all (<= 1.2)
        self.ciphers = ciphers  # OpenSSL cipher string or None (library default, capped at 1.2)
        self.check_time = check_time  # module time (aware datetime) to check validity against, or None
        self.hostname = hostname  # name to verify (and send as SNI), or None
        self.sni = sni  # name to send as SNI without verifying it, or None
        self.tmpdir = tmpdir


_VERSIONS = {
    1: (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1),
    2: (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1),
    3: (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2),
    4: (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_2),
}


def build_context(tls):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.version == 0:
        raise NetError("tls_version", "SSL 3.0 is not available in this OpenSSL")
    lo, hi = _VERSIONS.get(tls.version, _VERSIONS[4])
    try:
        ctx.minimum_version = lo
        ctx.maximum_version = hi
    except ValueError as e:
        raise NetError("tls_version", str(e)) from None
    if tls.ciphers:
        try:
            # @SECLEVEL=0 so the module's old suites (SHA-1, 3DES) are offered when asked for; whether
            # the server accepts them is the server's business, as on a real network.
            ctx.set_ciphers(tls.ciphers + ":@SECLEVEL=0")
        except ssl.SSLError as e:
            raise NetError("tls_cipher", "no usable cipher suite in %s (%s)" % (tls.ciphers, e.reason)) from None
    if tls.seclevel == 0:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.check_hostname = tls.hostname is not None
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.verify_flags |= X509_V_FLAG_NO_CHECK_TIME
        if not tls.ca_pem:
            raise NetError("tls_cert", "no CA certificate configured")
        try:
            ctx.load_verify_locations(cadata=tls.ca_pem.decode("latin-1"))
        except (ssl.SSLError, ValueError) as e:
            raise NetError("tls_cert", "CA certificate unusable: %s" % getattr(e, "reason", e)) from None
    if tls.seclevel == 2 and tls.cert_pem and tls.key_pem:
        # load_cert_chain only reads files: write them to a private temp dir, delete right after.
        d = tempfile.mkdtemp(prefix="msim-tls-", dir=tls.tmpdir)
        try:
            cp, kp = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
            with open(os.open(cp, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                f.write(tls.cert_pem)
            with open(os.open(kp, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                f.write(tls.key_pem)
            try:
                ctx.load_cert_chain(cp, kp)
            except (ssl.SSLError, ValueError) as e:
                raise NetError("tls_key", "client certificate/key unusable: %s" % getattr(e, "reason", e)) from None
        finally:
            for p in ("c.pem", "k.pem"):
                try:
                    os.unlink(os.path.join(d, p))
                except OSError:
                    pass
            os.rmdir(d)
    return ctx


def _classify_ssl_error(e):
    reason = (getattr(e, "reason", None) or str(e)).upper()
    if isinstance(e, ssl.SSLCertVerificationError):
        return "tls_cert"
    if any(k in reason for k in ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "CERTIFICATE_UNKNOWN",
                                 "UNSUPPORTED_CERTIFICATE", "PEER DID NOT RETURN")):
        return "tls_rejected"
    if any(k in reason for k in ("NO_SHARED_CIPHER", "NO_CIPHERS", "INSUFFICIENT_SECURITY", "HANDSHAKE_FAILURE")):
        return "tls_cipher"
    if any(k in reason for k in ("PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "WRONG_VERSION", "NO_PROTOCOLS")):
        return "tls_version"
    return "tls_handshake"


def check_validity(der, ca_pem, now):
    """Raise NetError('tls_expired') if the server cert or its issuing CA is not valid at module time."""
    from cryptography import x509

    leaf = x509.load_der_x509_certificate(der)
    certs = [leaf]
    for ca in x509.load_pem_x509_certificates(ca_pem):
        if ca.subject == leaf.issuer:
            certs.append(ca)
    for c in certs:
        nb, na = c.not_valid_before_utc, c.not_valid_after_utc
        if now < nb:
            raise NetError("tls_expired", "certificate %s not valid before %s; module time %s" % (
                c.subject.rfc4514_string(), nb.isoformat(), now.isoformat()))
        if now > na:
            raise NetError("tls_expired", "certificate %s expired %s; module time %s" % (
                c.subject.rfc4514_string(), na.isoformat(), now.isoformat()))


def open_connection(resolver, host, port, tls=None, timeout=20.0, fail=None):
    """Blocking: resolve, connect, handshake. Returns the connected (TLS) socket. Raises NetError only.

    ``fail``: a fault to inject ('handshake' | 'cert' | 'timeout'); the TCP connection is made for real
    first so the server sees the attempt.
    """
    addr, rport = resolver.resolve(host, port)
    ctx = build_context(tls) if tls is not None else None
    try:
        sock = socket.create_connection((addr, rport), timeout=timeout)
    except TimeoutError:
        raise NetError("timeout", "connect %s:%s" % (addr, rport)) from None
    except (OSError, ValueError, OverflowError) as e:
        raise NetError("refused", "connect %s:%s: %s" % (addr, rport, getattr(e, "strerror", None) or e)) from None
    # small MQTT packets must not wait for Nagle: the module's stack sends them at once
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if fail:
        sock.close()
        raise NetError({"handshake": "tls_handshake", "cert": "tls_cert", "timeout": "timeout"}[fail],
                       "injected fault")
    if ctx is None:
        return sock
    try:
        ssock = ctx.wrap_socket(sock, server_hostname=tls.hostname or tls.sni or None)
    except ssl.SSLError as e:
        sock.close()
        raise NetError(_classify_ssl_error(e), getattr(e, "reason", None) or str(e)) from None
    except TimeoutError:
        sock.close()
        raise NetError("timeout", "TLS handshake") from None
    except (OSError, ValueError) as e:
        sock.close()
        raise NetError("io", "TLS handshake: %s" % e) from None
    if tls.seclevel >= 1 and tls.check_time is not None:
        try:
            check_validity(ssock.getpeercert(binary_form=True), tls.ca_pem, tls.check_time)
        except NetError:
            ssock.close()
            raise
        except ValueError as e:  # a certificate cryptography cannot parse although OpenSSL accepted it
            ssock.close()
            raise NetError("tls_cert", "validity check: %s" % e) from None
    return ssock


class _SocketClient(paho.Client):
    """paho Client whose socket factory hands over the socket the module already opened (QMTOPEN)."""

    def __init__(self, sock, mid_source, **kw):
        super().__init__(CallbackAPIVersion.VERSION2, **kw)
        self._given_sock = sock
        self._mid_source = mid_source

    def _create_socket(self):
        sock, self._given_sock = self._given_sock, None
        if sock is None:
            raise ConnectionError("the module's socket was already used")
        return sock

    def _mid_generate(self):
        # The host chooses the packet identifier (QMTSUB/QMTPUB <msgid>); put exactly that on the wire.
        mid = self._mid_source()
        if mid is None:
            return super()._mid_generate()
        return mid


class MqttLink:
    """One MQTT session over an already-connected socket, driven from the asyncio loop.

    ``handler`` gets: on_connack(code), on_puback(mid), on_suback(mid, [granted...]), on_unsuback(mid),
    on_message(mid, topic_bytes, payload, qos, retain), on_closed(reason) where reason is
    'peer' | 'keepalive' | 'local'.
    """

    def __init__(self, loop, sock, handler, client_id, version311, clean, keepalive, user=None, password=None,
                 will=None):
        self.loop = loop
        self.sock = sock
        self.handler = handler
        self.closed = False
        self._next_mid = None
        self._misc = None
        self.client = _SocketClient(sock, self._take_mid, client_id=client_id, clean_session=bool(clean),
                                    protocol=paho.MQTTv311 if version311 else paho.MQTTv31)
        c = self.client
        c.max_inflight_messages_set(65535)  # the module enforces its own limit before paho sees a publish
        c.max_queued_messages_set(0)
        c.suppress_exceptions = False
        if user is not None:
            c.username_pw_set(user, password)
        if will is not None:
            topic, msg, qos, retain = will
            c.will_set(topic, msg, qos, retain)
        c.on_socket_open = self._sock_open
        c.on_socket_close = self._sock_close
        c.on_socket_register_write = self._reg_write
        c.on_socket_unregister_write = self._unreg_write
        c.on_connect = self._on_connect
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_unsubscribe
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        self._keepalive = keepalive
        self._local_close = False

    def _take_mid(self):
        mid, self._next_mid = self._next_mid, None
        return mid

    # --- paho external loop plumbing ---
    def _sock_open(self, client, userdata, sock):
        self.loop.add_reader(sock, self._readable)
        self._misc = self.loop.call_later(1.0, self._tick)

    def _sock_close(self, client, userdata, sock):
        try:
            self.loop.remove_reader(sock)
            self.loop.remove_writer(sock)
        except (ValueError, OSError):
            pass  # fd already gone

    def _reg_write(self, client, userdata, sock):
        self.loop.add_writer(sock, self._writable)

    def _unreg_write(self, client, userdata, sock):
        try:
            self.loop.remove_writer(sock)
        except (ValueError, OSError):
            pass

    def _readable(self):
        c = self.client
        c.loop_read()
        # TLS may hold decrypted records the fd no longer signals: drain them.
        while c.socket() is not None and hasattr(c.socket(), "pending") and c.socket().pending() > 0:
            c.loop_read()

    def _writable(self):
        self.client.loop_write()

    def _tick(self):
        if self.closed:
            return
        self.client.loop_misc()
        self._misc = self.loop.call_later(1.0, self._tick)

    # --- paho callbacks -> module ---
    def _on_connect(self, client, userdata, flags, reason, props):
        self.handler.on_connack(_CONNACK_FROM_REASON.get(reason.value, 3))

    def _on_publish(self, client, userdata, mid, reason, props):
        self.handler.on_puback(mid)

    def _on_subscribe(self, client, userdata, mid, reasons, props):
        self.handler.on_suback(mid, [r.value for r in reasons])

    def _on_unsubscribe(self, client, userdata, mid, reasons, props):
        self.handler.on_unsuback(mid)

    def _on_message(self, client, userdata, msg):
        self.handler.on_message(msg.mid if msg.qos else 0, msg._topic, msg.payload, msg.qos, msg.retain)

    def _on_disconnect(self, client, userdata, flags, reason, props):
        if self.closed or self._local_close:
            self.closed = True
            return  # the module closed it (QMTDISC/QMTCLOSE/reset): nothing to report
        self.closed = True
        if self._misc:
            self._misc.cancel()
        if reason is not None and reason.value == 141:  # "Keep alive timeout"
            why = "keepalive"
        else:
            why = "peer"
        self.handler.on_closed(why)

    # --- module -> paho ---
    def connect(self):
        self.client.connect("module-socket", 1, self._keepalive)  # host/port unused: _create_socket gives ours

    def publish(self, topic, payload, qos, retain, mid):
        self._next_mid = mid if qos else None
        info = self.client.publish(topic, payload, qos, retain)
        self._next_mid = None
        return info.rc == 0

    def subscribe(self, topics, mid):
        self._next_mid = mid
        rc, _ = self.client.subscribe(topics)
        self._next_mid = None
        return rc == 0

    def unsubscribe(self, topics, mid):
        self._next_mid = mid
        rc, _ = self.client.unsubscribe(topics)
        self._next_mid = None
        return rc == 0

    def disconnect(self):
        """Send DISCONNECT and close (QMTDISC)."""
        self._local_close = True
        self.client.disconnect()
        self.client.loop_write()
        self._shutdown()

    def close(self):
        """Close the socket without DISCONNECT (QMTCLOSE, reset, fault)."""
        self._local_close = True
        self._shutdown()

    def _shutdown(self):
        if self._misc:
            self._misc.cancel()
        self.closed = True
        sock = self.client.socket()
        if sock is not None:
            self._sock_close(None, None, sock)
            try:
                sock.close()
            except OSError:
                pass
        elif self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass


class RawLink:
    """A raw (TLS) socket for QSSLOPEN: bytes in via ``on_data``, ``on_closed()`` when the peer closes."""

    def __init__(self, loop, sock, on_data, on_closed):
        self.loop = loop
        self.sock = sock
        self.on_data = on_data
        self.on_closed = on_closed
        self.closed = False
        sock.setblocking(False)
        loop.add_reader(sock, self._readable)

    def _readable(self):
        # Read until the socket would block: that drains both the kernel buffer and any records the TLS
        # layer already decrypted (which the fd would not signal again).
        chunks = []
        eof = False
        while True:
            try:
                data = self.sock.recv(16384)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                break
            except (ssl.SSLError, OSError):
                eof = True
                break
            if not data:
                eof = True
                break
            chunks.append(data)
        if chunks:
            self.on_data(b"".join(chunks))
        if eof and not self.closed:
            self._teardown()
            self.on_closed()

    def send(self, data):
        """Send all bytes; False if the connection is broken."""
        try:
            self.sock.settimeout(10)
            self.sock.sendall(data)
            self.sock.setblocking(False)
            return True
        except (OSError, ssl.SSLError):
            return False

    def _teardown(self):
        self.closed = True
        try:
            self.loop.remove_reader(self.sock)
        except (ValueError, OSError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def close(self):
        if not self.closed:
            self._teardown()
