"""The twin's codec plug-in for the demo product's binary payloads (docs/clouds.md "Binary codec"), written
from that layout description, independently of the firmware's encoder (firmware/app/codec.py).

On the platform a codec plug-in turns a device's bytes into the product model's JSON (decode) and commands into
bytes (encode); Huawei's codec guide asks for the message type first and the mid at the same offset in a
command and its reply, so a reply can be matched to its command. A payload that does not decode is not stored
and nothing goes back to the device (a decode failure shows only in the console's message tracing).
"""

import struct

SAMPLE, COMMAND, REPLY = 1, 2, 3
SERVICE = "Telemetry"  # the product model service a decoded sample reports
COMMAND_CODES = {"status": 1, "set_interval": 2, "reboot": 3}


class DecodeError(ValueError):
    pass


def decode(data):
    """bytes -> ("sample", sample id, time or None, {service data}) or ("reply", mid, errcode, {body})."""
    if not data:
        raise DecodeError("empty payload")
    if data[0] == SAMPLE:
        if len(data) != 21:
            raise DecodeError("sample of %d bytes, not 21" % len(data))
        _, sid, t, temp, uptime, outbox, dropped, rssi = struct.unpack(">BIIhIHHh", data)
        service = {"uptime": uptime}
        if temp != -32768:
            service["temperature"] = temp / 100
        if outbox != 0xFFFF:
            service["outbox"] = outbox
        if dropped != 0xFFFF:
            service["dropped"] = dropped
        if rssi != -32768:
            service["rssi"] = rssi
        return "sample", sid, t or None, service
    if data[0] == REPLY:
        if len(data) != 14:
            raise DecodeError("reply of %d bytes, not 14" % len(data))
        _, mid, errcode, interval, outbox, published = struct.unpack(">BHBIHI", data)
        return "reply", mid, errcode, {"interval": interval, "outbox": outbox, "published": published}
    raise DecodeError("unknown message type %d" % data[0])


def encode_command(mid, cmd, paras):
    code = COMMAND_CODES.get(cmd)
    if code is None:
        raise ValueError("the codec has no command %r (only %s)" % (cmd, ", ".join(COMMAND_CODES)))
    value = paras.get("value", 0) if isinstance(paras, dict) else 0
    return struct.pack(">BHBI", COMMAND, mid, code, int(value) & 0xFFFFFFFF)
