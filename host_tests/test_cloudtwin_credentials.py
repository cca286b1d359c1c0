"""The twin's credential rules, device registry and clock, checked against clouds.md section 3's test vectors.

Two independent implementations meet here: the twin's (tools/cloudtwin/credentials.py) and the tests' own
(fixtures_twin.huawei_credentials / enos_credentials). Both must reproduce the published vectors, and neither
may produce the documented wrong answers (HMAC instead of a plain hash, key and message swapped, UTC+8).
"""

import datetime
import json

import pytest
from fixtures_twin import enos_credentials, huawei_credentials, utc_hour

from tools.cloudtwin import credentials as cr
from tools.cloudtwin.clock import ClockSpecError, TwinClock, iso, parse_iso
from tools.cloudtwin.registry import DevicesFileError, load, parse

UTC = datetime.UTC
H_ID = "6203cc94c7fb24029b110408_88888888"

# ---- vectors (clouds.md section 3) ----------------------------------------------------------------------

ENOS_VECTORS = [
    # (cid, dk, pk, ts, secret, signmethod, expected)
    ("123456", "test", "654321", "1548753362502", "abcdefg", "sha256",
     "B99032D49C706F7B27B22AB5CD2DD3C56A31E1BCBBC83BA0A2A6BB3272FBB166"),  # E1
    ("123456", "test", "654321", "1548753362502", "abcdefg", "sha1", "53D00561032C47B8555B768A08FDE176A6F0D267"),
    ("123", "test", "123", "1524448722000", "abcdefg", "sha256",
     "A4F9AD91051E3CA89440E0157029DD358C3A2C556D3C543B9FD5A38484785AC9"),  # E2
    ("123", "test", "123", "1524448722000", "deviceSecretxxx", "sha1", "DCF3F4B8D77D78B6598BDCC65A0A65C8BB3C1B08"),
    ("123", "test", "123", "1524448722000", "aaabbbcc123", "sha1", "97AA97335D6EC3D7E1F9E3119501E399CC0B4125"),
]
E5_HMAC = "4ED8173DEEEE6E8117757E087F3EB448D8ABE78C"  # a real HMAC-SHA1: must never be produced or accepted
H1_PW = "5888ea6f4631ce76d621f452e8823507c36dd68a61f6e08518c8935e280c3c72"
H2_PW = "e8bd5664f3a3030ce5b44309d1a2bbd2cb6bea628fd2a9a858aec2cbd4de6a69"
H3_SWAPPED = "4535d6c9bbbbf620cc4f52227d54fc9e04719fa793ae12dff47a6fc46c3ca100"


@pytest.mark.parametrize("cid,dk,pk,ts,secret,method,want", ENOS_VECTORS)
def test_enos_vectors_twin_and_test_helper(cid, dk, pk, ts, secret, method, want):
    assert cr.enos_password(cid, dk, pk, ts, secret, method) == want
    client_id, username, pw = enos_credentials(dk, pk, secret, signmethod=method, timestamp=ts, cid=cid)
    assert pw == want
    assert username == "%s&%s" % (dk, pk)
    assert client_id == "%s|securemode=2,signmethod=%s,timestamp=%s|" % (cid, method, ts)


def test_enos_e1_client_id_and_aliases():
    cid, user, _ = enos_credentials("test", "654321", "abcdefg", timestamp="1548753362502", cid="123456")
    assert cid == "123456|securemode=2,signmethod=sha256,timestamp=1548753362502|"
    assert user == "test&654321"
    # the "hmac" method names are aliases of the plain hashes (clouds.md 2.1)
    assert cr.enos_password("123456", "test", "654321", "1548753362502", "abcdefg", "hmacsha1") == \
        "53D00561032C47B8555B768A08FDE176A6F0D267"
    assert cr.enos_sign_content("123456", "test", "654321", "1548753362502") == \
        "clientId123456deviceKeytestproductKey654321timestamp1548753362502"


def test_enos_check_accepts_either_case_and_refuses_hmac():
    parsed = cr.parse_enos_client_id("123456|securemode=2,signmethod=sha1,timestamp=1548753362502|")
    ok_upper = cr.check_enos_password(parsed, "test", "654321", "abcdefg", "53D00561032C47B8555B768A08FDE176A6F0D267",
                                      "deviceSecret")
    ok_lower = cr.check_enos_password(parsed, "test", "654321", "abcdefg", "53d00561032c47b8555b768a08fde176a6f0d267",
                                      "deviceSecret")
    assert ok_upper is None and ok_lower is None
    bad = cr.check_enos_password(parsed, "test", "654321", "abcdefg", E5_HMAC, "deviceSecret")
    assert bad.code == 4 and "abcdefg" not in bad.reason
    assert cr.check_enos_password(parsed, "test", "654321", "abcdefg", None, "deviceSecret").code == 4


def test_huawei_vectors_twin_and_test_helper():
    assert cr.huawei_password("123456789", "2999010100") == H1_PW
    assert cr.huawei_password("123456789", "2023111422") == H2_PW
    assert cr.huawei_password("123456789", "2999010100") != H3_SWAPPED
    cid, user, pw = huawei_credentials(H_ID, "123456789", "2999010100")
    assert (cid, user, pw) == (H_ID + "_0_0_2999010100", H_ID, H1_PW)
    assert utc_hour(1700000000) == "2023111422"  # H2: UTC, not UTC+8 ("2023111506")
    assert huawei_credentials(H_ID, "123456789", utc_hour(1700000000), sig_type=1)[2] == H2_PW
    # H3: key and message swapped must be refused by the twin
    assert cr.check_huawei_password("123456789", "2999010100", H3_SWAPPED).code == 4
    assert cr.check_huawei_password("123456789", "2999010100", H1_PW) is None
    assert cr.check_huawei_password("123456789", "2999010100", H1_PW.upper()).code == 4  # lower-hex only


# ---- client id parsing ----------------------------------------------------------------------------------

def test_huawei_client_id_split_from_the_right():
    p = cr.parse_huawei_client_id(H_ID + "_0_1_2023111422")
    assert (p.device_id, p.sig_type, p.hour) == (H_ID, 1, "2023111422")


@pytest.mark.parametrize("client_id", [
    "dev1_0_0",                  # three fields
    "_0_0_2999010100",           # empty device id
    "dev1_0_2_2999010100",       # sigType 2
    "dev1_2_0_2999010100",       # idType 2 (nodeId) is not modelled
    "dev1_0_0_299901010",        # 9 digits
    "dev1_0_0_29990101OO",       # letters
    "dev1-0-0-2999010100",
])
def test_huawei_malformed_client_ids_are_code_2(client_id):
    r = cr.parse_huawei_client_id(client_id)
    assert isinstance(r, cr.Refusal) and r.code == 2


def test_huawei_hour_tolerance_edges():
    tol = 600
    start = datetime.datetime(2023, 11, 14, 22, tzinfo=UTC)
    assert cr.check_huawei_hour("2023111422", start, tol) is None
    assert cr.check_huawei_hour("2023111422", start + datetime.timedelta(minutes=69, seconds=59), tol) is None
    assert cr.check_huawei_hour("2023111422", start + datetime.timedelta(minutes=70), tol).code == 4
    assert cr.check_huawei_hour("2023111422", start - datetime.timedelta(minutes=10), tol) is None
    assert cr.check_huawei_hour("2023111422", start - datetime.timedelta(minutes=10, seconds=1), tol).code == 4
    assert cr.check_huawei_hour("2023111506", start, tol).code == 4  # the UTC+8 mistake
    assert cr.check_huawei_hour("2023133122", start, tol).code == 2  # month 13 is not an hour


def test_enos_client_id_parsing():
    p = cr.parse_enos_client_id("dk1|timestamp=1,signmethod=hmacsha256,securemode=3|")
    assert (p.cid, p.securemode, p.signmethod, p.timestamp) == ("dk1", 3, "hmacsha256", "1")


@pytest.mark.parametrize("client_id", [
    "dk1|securemode=2, signmethod=sha256,timestamp=1|",     # the docs' typo: a space
    "dk1|securemode=2,signmethod=sha256,timestamp=1",       # no trailing |
    "dk1securemode=2,signmethod=sha256,timestamp=1|",       # no cid separator
    "|securemode=2,signmethod=sha256,timestamp=1|",         # empty cid
    "x" * 65 + "|securemode=2,signmethod=sha256,timestamp=1|",
    "dk1|securemode=1,signmethod=sha256,timestamp=1|",
    "dk1|securemode=2,signmethod=sha512,timestamp=1|",
    "dk1|securemode=2,signmethod=sha256|",                  # no timestamp
    "dk1|securemode=2,signmethod=sha256,timestamp=1,gw=1|",  # unknown parameter
    "dk1|securemode=2,signmethod=sha256,timestamp=|",
    "dk1|securemode=2,securemode=2,signmethod=sha256,timestamp=1|",
    "dk1|securemode=2|signmethod=sha256,timestamp=1|",
])
def test_enos_malformed_client_ids_are_code_2(client_id):
    r = cr.parse_enos_client_id(client_id)
    assert isinstance(r, cr.Refusal) and r.code == 2, r


@pytest.mark.parametrize("username", ["", None, "dk1", "dk1&", "&pk1", "dk1&pk1&x"])
def test_enos_malformed_usernames_are_code_4(username):
    assert cr.parse_enos_username(username).code == 4


def test_keepalive_bounds():
    assert cr.check_keepalive(30, cr.HUAWEI_KEEPALIVE, "Huawei") is None
    assert cr.check_keepalive(1200, cr.HUAWEI_KEEPALIVE, "Huawei") is None
    assert cr.check_keepalive(29, cr.HUAWEI_KEEPALIVE, "Huawei").code == 2
    assert cr.check_keepalive(0, cr.HUAWEI_KEEPALIVE, "Huawei").code == 2
    assert cr.check_keepalive(301, cr.ENOS_KEEPALIVE, "EnOS").code == 2
    assert cr.check_keepalive(60, cr.ENOS_KEEPALIVE, "EnOS") is None


# ---- registry -------------------------------------------------------------------------------------------

HW_MODEL = {"services": {"S": {"v": "int"}}}
EN_MODEL = {"measurepoints": {"v": "int"}}


def test_registry_loads_both_clouds(tmp_path):
    hw = parse({"model": HW_MODEL, "devices": [{"device_id": H_ID, "secret": "s"}]}, "huawei")
    assert hw[H_ID].secret == "s"
    en = parse({"model": EN_MODEL, "products": [{"product_key": "pk", "product_secret": "ps", "dynamic": True}],
                "devices": [{"product_key": "pk", "device_key": "d1"},
                            {"product_key": "static", "device_key": "d2", "device_secret": "x"}]}, "enos")
    assert en["d1"].device_secret is None and en["d1"].product.dynamic
    assert en["d2"].product_key == "static" and not en["d2"].product.dynamic
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"model": HW_MODEL, "devices": [{"device_id": "a", "secret": "b"}]}))
    assert list(load(str(p), "huawei")) == ["a"]


@pytest.mark.parametrize("cloud,data,words", [
    ("huawei", {"devices": {}}, "'devices' must be a list"),
    ("huawei", {"devices": [{"device_id": "a"}]}, "'secret'"),
    ("huawei", {"devices": [{"device_id": "a/b", "secret": "x"}]}, "'/'"),
    ("huawei", {"devices": [{"device_id": "a b", "secret": "x"}]}, "whitespace"),
    ("huawei", {"devices": [{"device_id": "a", "secret": "x"}, {"device_id": "a", "secret": "y"}]}, "twice"),
    ("enos", {"devices": [{"product_key": "pk", "device_key": "d"}]}, "not dynamic"),
    ("enos", {"products": [{"product_key": "pk", "dynamic": True}], "devices": []}, "'product_secret'"),
    ("enos", {"devices": [{"product_key": "p&k", "device_key": "d", "device_secret": "s"}]}, "'&'"),
    ("enos", {"devices": [{"product_key": "a", "device_key": "d", "device_secret": "s"},
                          {"product_key": "b", "device_key": "d", "device_secret": "s"}]}, "unique"),
])
def test_registry_errors_name_the_field_not_the_secret(cloud, data, words):
    data = dict(data, model=HW_MODEL if cloud == "huawei" else EN_MODEL)
    with pytest.raises(DevicesFileError) as e:
        parse(data, cloud)
    assert words in str(e.value)
    assert "'y'" not in str(e.value) and "'s'" not in str(e.value)


def test_registry_file_errors(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(DevicesFileError, match="not valid JSON"):
        load(str(p), "huawei")
    with pytest.raises(DevicesFileError, match="cannot read"):
        load(str(tmp_path / "missing.json"), "huawei")


# ---- clock ----------------------------------------------------------------------------------------------

def test_clock_fixed_advance_set():
    c = TwinClock("fixed:2023-11-14T22:13:20Z")
    assert c.now() == datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    c.advance(301)
    assert iso(c.now()) == "2023-11-14T22:18:21.000Z"
    c.set("2024-01-01T00:00:00+00:00")
    assert c.now() == datetime.datetime(2024, 1, 1, tzinfo=UTC)
    h = TwinClock("host")
    assert abs((h.now() - datetime.datetime.now(UTC)).total_seconds()) < 2
    h.advance(-3600)
    assert 3590 < (datetime.datetime.now(UTC) - h.now()).total_seconds() < 3610
    assert parse_iso("2023-11-14T22:13:20") == datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    with pytest.raises(ClockSpecError):
        TwinClock("fixed:yesterday")
    with pytest.raises(ClockSpecError):
        TwinClock("ntp")
