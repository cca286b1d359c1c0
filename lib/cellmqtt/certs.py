# Certificates on the MCU's flash: PEM validation, the Quectel UFS checksum, and the record of what the
# modem already holds (so an unchanged certificate is never uploaded again).
#
# Pure functions plus small file helpers; the filesystem root is passed in. Used by the BG96 driver (QFUPL
# file upload) and the BC660K-GL driver (inline push, length-verified).
import json
import os

from cellmqtt.compat import const

MAX_PEM = const(8192)  # larger than any CA/device certificate or RSA-4096 key in PEM; the modems' UFS limits are near


class CertError(ValueError):
    """A certificate file is missing, unreadable or not a valid PEM. ``name`` says which file."""

    def __init__(self, name, why):
        super().__init__("certificate file %s: %s" % (name, why))
        self.name = name


def checksum(data):
    """Quectel's UFS checksum: XOR of the data read as big-endian 16-bit words; an odd last byte is the high
    byte of a final word (quectel-bg96.md 4). ``checksum(b"1234567890") == 0x3938``."""
    hi = 0
    lo = 0
    n = len(data)
    for i in range(0, n - 1, 2):
        hi ^= data[i]
        lo ^= data[i + 1]
    if n & 1:
        hi ^= data[n - 1]
    return (hi << 8) | lo


def check_pem(data, name, kind=None):
    """Validate a PEM file's content (bytes) and return the block label (e.g. "CERTIFICATE").

    Checks: size, ASCII only, matching BEGIN/END markers, a base64 body that decodes, and -- when ``kind`` is
    "cert" or "key" -- that the label is a certificate or a private key. Raises CertError naming the file
    (never quoting a key's content)."""
    if not data:
        raise CertError(name, "empty")
    if len(data) > MAX_PEM:
        raise CertError(name, "%d bytes is larger than the %d-byte limit" % (len(data), MAX_PEM))
    for c in data:
        if c > 126 or (c < 32 and c not in (9, 10, 13)):
            raise CertError(name, "not a PEM text file (byte 0x%02x)" % c)
    b = data.find(b"-----BEGIN ")
    if b < 0:
        raise CertError(name, "no -----BEGIN marker")
    le = data.find(b"-----", b + 11)
    if le < 0:
        raise CertError(name, "broken BEGIN marker")
    label = data[b + 11:le]
    end_marker = b"-----END " + label + b"-----"
    e = data.find(end_marker, le + 5)
    if e < 0:
        raise CertError(name, "no matching -----END %s----- marker" % label.decode())
    # the body is checked in place: no copy, no list of lines, no decoded DER (this runs while the modem's
    # certificate step holds the PEM itself: the firmware's heap peak). Valid base64 = the alphabet, "=" only as
    # the last one or two characters, a multiple of 4 characters.
    if data.find(b":", le + 5, e) >= 0:  # headers (Proc-Type: ...) mean an encrypted key: the modem can't use it
        raise CertError(name, "encrypted PEM body")
    n = pad = h0 = h1 = 0
    for i in range(le + 5, e):
        c = data[i]
        if c == 10 or c == 13 or c == 32 or c == 9:
            continue
        if c == 61:
            pad += 1
        elif pad or not (65 <= c <= 90 or 97 <= c <= 122 or 48 <= c <= 57 or c == 43 or c == 47):
            raise CertError(name, "PEM body is not valid base64")
        elif n == 0:
            h0 = c
        elif n == 1:
            h1 = c
        n += 1
    if not n:
        raise CertError(name, "empty PEM body")
    if n & 3 or pad > 2:
        raise CertError(name, "PEM body is not valid base64")
    # DER: a SEQUENCE (0x30 is "MI" in base64) of a plausible size
    if n // 4 * 3 - pad < 64 or h0 != 77 or not 65 <= h1 <= 80:
        raise CertError(name, "PEM body is not DER data")
    lab = label.decode()
    if kind == "cert" and lab != "CERTIFICATE":
        raise CertError(name, "expected a CERTIFICATE, found %s" % lab)
    if kind == "key" and not lab.endswith("PRIVATE KEY"):
        raise CertError(name, "expected a PRIVATE KEY, found %s" % lab)
    return lab


def read_pem(path, kind=None):
    """Read and validate one PEM file from flash; returns its bytes."""
    try:
        size = os.stat(path)[6]
        if size > MAX_PEM:
            raise CertError(path, "%d bytes is larger than the %d-byte limit" % (size, MAX_PEM))
        with open(path, "rb") as f:
            data = f.read(size)  # exactly the file: no 8 KB buffer for a 1 KB certificate
    except OSError as e:
        raise CertError(path, "cannot be read (%s)" % (e.args[0] if e.args else e)) from None
    check_pem(data, path, kind)
    return data


class Memo:
    """A small JSON dict on flash for what the driver verified once and need not ask again: certificate files
    the modem holds ({name: [size, checksum]}), NV settings already applied, firmware capabilities probed.

    Written atomically (temporary file + rename): a power cut leaves the old or the new memo; a corrupt or
    missing memo only costs one re-check."""

    def __init__(self, path):
        self.path = path
        self.items = {}
        self.errors = 0  # saves the filesystem refused (each costs one re-check after the next boot)
        try:
            if os.stat(path)[6] <= 4096:  # larger: not ours (erased flash, a stray file); start afresh
                with open(path, "rb") as f:
                    d = json.loads(f.read().decode())
                if isinstance(d, dict):
                    self.items = d
        except Exception:  # noqa: BLE001 -- missing, a folder, not UTF-8, not JSON: only costs one re-check
            pass

    def get(self, key, default=None):
        return self.items.get(key, default)

    def matches(self, key, value):
        return key in self.items and self.items[key] == value

    def set(self, key, value):
        if self.items.get(key) != value:
            self.items[key] = value
            self._save()

    def forget(self, key):
        if self.items.pop(key, None) is not None:
            self._save()

    def _save(self):
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self.items, f)
            os.rename(tmp, self.path)
        except OSError:  # a full or read-only filesystem: the memo stays in RAM; the next boot re-checks
            self.errors += 1
