"""Test PKI: a CA, a server certificate and a device client certificate, generated on the fly.

RSA 2048 keys and SHA-256 signatures, because the BG96 offers only RSA key-exchange/authentication cipher
suites (no ECDSA). Used by the tests, the modem emulator's tests and the cloud twin.

    python -m tools.pki OUTDIR [--host NAME ...] [--expired] [--days N]

writes ``ca.pem ca.key server.pem server.key client.pem client.key`` (and ``other-ca.pem``, a CA that
signed nothing here, for negative tests) and prints the directory.
"""

import argparse
import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1")


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn, org="cellmqtt test PKI"):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path, key):
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                          serialization.NoEncryption())
    )
    os.chmod(path, 0o600)


def _write_cert(path, cert):
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ca(cn, not_before, not_after):
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(ca_key, ca_cert, cn, not_before, not_after, server_hosts=None):
    key = _key()
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server_hosts is not None:
        sans = []
        for h in server_hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


def generate(outdir, hosts=DEFAULT_HOSTS, expired=False, days=30, client_cn="device-0001"):
    """Write a fresh PKI into outdir; return a dict of the file paths (str)."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    start = now - datetime.timedelta(days=1)
    ca_key, ca_cert = _ca("cellmqtt test root CA", start - datetime.timedelta(days=1), now + datetime.timedelta(days=3650))
    if expired:
        s_from, s_to = now - datetime.timedelta(days=400), now - datetime.timedelta(days=35)
    else:
        s_from, s_to = start, now + datetime.timedelta(days=days)
    srv_key, srv_cert = _leaf(ca_key, ca_cert, hosts[0], s_from, s_to, server_hosts=list(hosts))
    cli_key, cli_cert = _leaf(ca_key, ca_cert, client_cn, start, now + datetime.timedelta(days=days))
    _, other_ca = _ca("unrelated CA", start, now + datetime.timedelta(days=3650))
    _write_cert(out / "ca.pem", ca_cert)
    _write_key(out / "ca.key", ca_key)
    _write_cert(out / "server.pem", srv_cert)
    _write_key(out / "server.key", srv_key)
    _write_cert(out / "client.pem", cli_cert)
    _write_key(out / "client.key", cli_key)
    _write_cert(out / "other-ca.pem", other_ca)
    return {n.replace(".", "_"): str(out / n) for n in
            ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key", "other-ca.pem")}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.pki", description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--host", action="append", help="server host name or IP (repeatable); default localhost, 127.0.0.1")
    ap.add_argument("--expired", action="store_true", help="make the server certificate already expired")
    ap.add_argument("--days", type=int, default=30, help="validity of the leaf certificates (default 30)")
    a = ap.parse_args(argv)
    generate(a.outdir, tuple(a.host) if a.host else DEFAULT_HOSTS, a.expired, a.days)
    print(a.outdir)


if __name__ == "__main__":
    main()
