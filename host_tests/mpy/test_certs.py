# Certificate helpers: the UFS checksum, PEM validation (which file is bad and why), the memo on flash.
import os

from cellmqtt.certs import MAX_PEM, CertError, Memo, check_pem, checksum, read_pem


def test_checksum_manual_example_and_odd_length():
    assert checksum(b"1234567890") == 0x3938  # quectel-bg96.md 4
    assert checksum(b"") == 0
    assert checksum(b"\x12") == 0x1200  # an odd last byte is the high byte of a final word
    assert checksum(b"\x12\x34\x56") == 0x1234 ^ 0x5600


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_real_certificates_and_key_pass(pki):
    assert check_pem(_read(pki["ca_pem"]), "ca.pem", "cert") == "CERTIFICATE"
    assert check_pem(_read(pki["client_key"]), "client.key", "key").endswith("PRIVATE KEY")
    assert read_pem(pki["client_pem"], "cert") == _read(pki["client_pem"])


def _bad(data, kind=None):
    try:
        check_pem(data, "certs/x.pem", kind)
    except CertError as e:
        assert e.name == "certs/x.pem" and "certs/x.pem" in str(e)
        return str(e)
    raise AssertionError("accepted")


def test_broken_pems_are_refused_with_the_file_name(pki):
    good = _read(pki["ca_pem"])
    key = _read(pki["client_key"])
    assert "empty" in _bad(b"")
    assert "BEGIN" in _bad(b"hello")
    assert "END" in _bad(good.replace(b"-----END CERTIFICATE-----", b""))
    lines = good.split(b"\n")
    lines[3] = lines[3][:10] + b"*" + lines[3][11:]
    assert "base64" in _bad(b"\n".join(lines))
    lines = good.split(b"\n")
    assert "base64" in _bad(b"\n".join(lines[:2] + [b"=" + lines[2][1:]] + lines[3:]))  # padding mid-body
    assert "base64" in _bad(b"\n".join(lines[:2] + [lines[2][:-1]] + lines[3:]))  # not a multiple of 4
    assert "DER" in _bad(b"\n".join(lines[:1] + [b"NI" + lines[1][2:]] + lines[2:]))  # not a SEQUENCE
    assert "DER" in _bad(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")  # too short
    assert "empty" in _bad(b"-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----\n")
    assert "not a PEM text" in _bad(good[:40] + b"\xe9" + good[41:])
    assert "larger" in _bad(good * (MAX_PEM // len(good) + 1))
    assert "expected a PRIVATE KEY" in _bad(good, "key")
    assert "expected a CERTIFICATE" in _bad(key, "cert")
    enc = key.replace(b"-----\n", b"-----\nProc-Type: 4,ENCRYPTED\n\n", 1)
    assert "encrypted" in _bad(enc)
    # a key's content never appears in the message
    msg = _bad(key[:-60])
    assert key[40:80].decode() not in msg


def test_missing_file_names_it(tmp_path_str):
    try:
        read_pem(tmp_path_str + "/nope.pem")
        assert False
    except CertError as e:
        assert "nope.pem" in str(e) and "cannot be read" in str(e)


def test_memo_persists_and_survives_corruption(tmp_path_str):
    p = tmp_path_str + "/modem.json"
    m = Memo(p)
    assert m.get("file:ca.pem") is None
    m.set("file:ca.pem", [1189, 0x2D13])
    assert Memo(p).matches("file:ca.pem", [1189, 0x2D13])
    assert not Memo(p).matches("file:ca.pem", [1189, 0x2D14])
    m.forget("file:ca.pem")
    assert Memo(p).get("file:ca.pem") is None
    with open(p, "w") as f:
        f.write('{"file:ca.pem": [11')  # torn write: the memo is simply empty (one re-check)
    assert Memo(p).items == {}
    assert "modem.json.tmp" not in os.listdir(tmp_path_str)
