# The payload codec of a Huawei product with a binary codec plug-in (cloud.huawei.codec "binary"): the device
# sends bytes, the platform's plug-in (written by the product's owner, uploaded to the console) turns them into
# the product model's JSON and commands into bytes. A board supplies its own with Board.codec(); this is the
# demo's small fixed layout (docs/clouds.md "Binary codec", which the cloud twin's plug-in implements too).
#
#   sample   01 | sid u32 | time u32 (0: unknown) | temperature i16 (x100) | uptime u32 | outbox u16 | dropped u16
#            | rssi i16 (dBm)                       -- big-endian; an absent reading is 0x8000 (i16) / 0xFFFF (u16)
#   command  02 | mid u16 | command u8 (1 status, 2 set_interval, 3 reboot) | value u32
#   reply    03 | mid u16 | errcode u8 (0 ok, 1 failed) | interval u32 | outbox u16 | published u32
# Message type first and the mid at the same offset in a command and its reply, as Huawei's codec guide asks,
# so the plug-in tells data from replies and matches a reply to its command.
import struct

_COMMANDS = {1: "status", 2: "set_interval", 3: "reboot"}


def _i16(v, scale=1):
    if type(v) not in (int, float):
        return -32768
    v = int(round(v * scale))
    return v if -32767 <= v <= 32767 else -32768


def _u16(v):
    return v if type(v) is int and 0 <= v < 0xFFFF else 0xFFFF


class DemoCodec:
    def encode_sample(self, data, unix_s, sample_id):
        return struct.pack(">BIIhIHHh", 1, sample_id or 0, unix_s or 0, _i16(data.get("temperature"), 100),
                           data.get("uptime", 0) & 0xFFFFFFFF, _u16(data.get("outbox")), _u16(data.get("dropped")),
                           _i16(data.get("rssi")))

    def decode_command(self, b):
        """(mid, command name, params), or ValueError(why, mid or None)."""
        if len(b) < 3 or b[0] != 2:
            raise ValueError("not a command message (type %d)" % (b[0] if b else -1), None)
        mid = b[1] << 8 | b[2]
        if len(b) != 8:
            raise ValueError("command of %d bytes, not 8" % len(b), mid)
        name = _COMMANDS.get(b[3])
        if name is None:
            raise ValueError("unknown command code %d" % b[3], mid)
        return mid, name, {"value": struct.unpack(">I", b[4:8])[0]} if name == "set_interval" else {}

    def encode_reply(self, mid, code, body):
        body = body if isinstance(body, dict) else {}
        return struct.pack(">BHBIHI", 3, mid & 0xFFFF, 0 if code == 0 else 1, body.get("interval", 0) & 0xFFFFFFFF,
                           _u16(body.get("outbox")), body.get("published", 0) & 0xFFFFFFFF)
