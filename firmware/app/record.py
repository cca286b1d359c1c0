# The outbox's record format (docs/outbox.md), as pure functions over bytes: no file I/O, tested on both ports.
#
#   magic 0xA5 | type | payload length (u16 LE) | sample id (u32 LE) | CRC-32 (u32 LE)   then the payload
#
# type: D data (the sample), A acknowledged, X dropped by the size bound, S sid floor, V format version (the
# version in the sid field). A/X/S/V carry no payload. The CRC-32 covers the payload then the first 8 header
# bytes; a record is intact when crc32(header, crc32(payload)) is the CRC residue 0x2144DF1C.
from struct import pack_into as _pack

from cellmqtt.compat import const

MAGIC = const(0xA5)
D = const(0x44)
A = const(0x41)
X = const(0x58)
S = const(0x53)
V = const(0x56)
FORMAT = const(1)  # the record format this firmware writes and reads
HDR = const(12)
_RESIDUE = const(0x2144DF1C)


def crc32_sw(data, crc=0):
    # Bitwise CRC-32 (zlib polynomial): only for ports built without binascii.crc32; same values.
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


try:
    from binascii import crc32
except ImportError:
    crc32 = crc32_sw


def put_header(h, t, sid, payload, h8=None):
    """Fill the 12-byte header ``h`` (a bytearray) of a record of type ``t`` with sample id ``sid`` (the
    version, for V) and ``payload`` (b"" for A/X/S/V). ``h8``: memoryview(h)[:8] when the caller keeps one
    (then nothing is allocated)."""
    n = len(payload)
    h[0] = MAGIC
    h[1] = t
    h[2] = n & 0xFF
    h[3] = n >> 8
    _pack("<I", h, 4, sid)
    n = crc32(payload)
    n = crc32(memoryview(h)[:8] if h8 is None else h8, n)
    _pack("<I", h, 8, n)


def read_header(h):
    """(type, payload length, sid) of a plausible header -- the magic, a known type, a payload only on D --
    or None. record_ok() checks the CRC once the payload is read."""
    t = h[1]
    n = h[2] | h[3] << 8
    if h[0] != MAGIC or not (n if t == D else (n == 0 and t in (A, X, S, V))):
        return None
    return t, n, h[4] | h[5] << 8 | h[6] << 16 | h[7] << 24


def record_ok(h, payload_crc):
    """Whether header ``h`` and its payload (whose CRC-32 is ``payload_crc``) are intact."""
    return crc32(h, payload_crc) == _RESIDUE


def encode(t, sid, payload=b""):
    """One whole record as bytes (the outbox itself writes through put_header into its own buffer)."""
    h = bytearray(HDR)
    put_header(h, t, sid, payload)
    return bytes(h) + payload


def decode(data, pos=0):
    """The record at ``data[pos:]`` as (type, sid, payload, next position), or None when no intact record
    starts there (a reader then resynchronises at the next magic byte)."""
    if pos + HDR > len(data):
        return None
    h = data[pos:pos + HDR]
    r = read_header(h)
    if r is None or pos + HDR + r[1] > len(data):
        return None
    payload = data[pos + HDR:pos + HDR + r[1]]
    if not record_ok(h, crc32(payload)):
        return None
    return r[0], r[2], payload, pos + HDR + r[1]
