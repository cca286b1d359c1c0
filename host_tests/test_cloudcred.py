"""tools/cloudcred.py, the credential calculator, run as a command under both python3 and micropython: the
clouds.md vectors as JSON output, every time form, running from any directory, usage errors with exit 2 and
never a traceback, and secrets never echoed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "cloudcred.py"
INTERPRETERS = {"python3": sys.executable, "micropython": str(Path(sys.executable).with_name("micropython"))}

H_ID = "6203cc94c7fb24029b110408_88888888"
H1 = "5888ea6f4631ce76d621f452e8823507c36dd68a61f6e08518c8935e280c3c72"
H2 = "e8bd5664f3a3030ce5b44309d1a2bbd2cb6bea628fd2a9a858aec2cbd4de6a69"
E1 = ["--client-id", "123456", "--device-key", "test", "--product-key", "654321", "--timestamp", "1548753362502"]
E1_SHA256 = "B99032D49C706F7B27B22AB5CD2DD3C56A31E1BCBBC83BA0A2A6BB3272FBB166"
E2 = ["--client-id", "123", "--device-key", "test", "--product-key", "123", "--timestamp", "1524448722000"]


@pytest.fixture(params=sorted(INTERPRETERS))
def cred(request):
    """cred(args, cwd=ROOT, script="tools/cloudcred.py", stdin=None) -> CompletedProcess (text)."""
    exe = INTERPRETERS[request.param]
    env = {k: v for k, v in os.environ.items() if k not in ("MICROPYPATH", "PYTHONPATH")}

    def run(args, cwd=ROOT, script="tools/cloudcred.py", stdin=""):
        return subprocess.run([exe, str(script)] + list(args), cwd=str(cwd), capture_output=True, text=True,
                              input=stdin, env=env, timeout=30, check=False)

    return run


def ok_json(p):
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    lines = p.stdout.splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_huawei_h1(cred):
    out = ok_json(cred(["huawei", "--id", H_ID, "--secret", "123456789", "--hour", "2999010100"]))
    assert out == {"client_id": H_ID + "_0_0_2999010100", "username": H_ID, "password": H1}


def test_output_is_one_json_object_in_a_fixed_key_order(cred):
    p = cred(["huawei", "--id", H_ID, "--secret", "123456789", "--hour", "2999010100"])
    assert p.stdout.startswith('{"client_id": "') and list(json.loads(p.stdout)) == ["client_id", "username",
                                                                                       "password"]


@pytest.mark.parametrize("when", ["2023-11-14T22:13:20Z", "2023-11-14T22:13Z", "2023-11-14t22:59:59z",
                                  "2023-11-15T06:13:20+08:00", "2023-11-14T17:13:20-0500", "2023-11-14T22:00:00+00",
                                  "20231114T221320Z", "2023-11-14 22:13:20.123456Z", "20231115T0613+0800"])
def test_huawei_h2_time_forms(cred, when):
    out = ok_json(cred(["huawei", "--id", H_ID, "--secret", "123456789", "--time", when, "--sig", "1"]))
    assert out == {"client_id": H_ID + "_0_1_2023111422", "username": H_ID, "password": H2}


def test_huawei_id_type_and_equals_form(cred):
    out = ok_json(cred(["huawei", "--id=861234567890123", "--secret=123456789", "--hour=2999010100", "--id-type=2"]))
    assert out["client_id"] == "861234567890123_2_0_2999010100"


def test_runs_from_any_directory(cred, tmp_path):
    args = ["huawei", "--id", H_ID, "--secret", "123456789", "--hour", "2999010100"]
    assert ok_json(cred(args, cwd=tmp_path, script=SCRIPT))["password"] == H1
    assert ok_json(cred(args, cwd=ROOT / "tools", script="cloudcred.py"))["password"] == H1
    assert ok_json(cred(args, cwd=ROOT / "lib", script="../tools/cloudcred.py"))["password"] == H1


def test_enos_e1_variants(cred):
    out = ok_json(cred(["enos"] + E1 + ["--secret", "abcdefg"]))
    assert out == {"client_id": "123456|securemode=2,signmethod=sha256,timestamp=1548753362502|",
                   "username": "test&654321", "password": E1_SHA256}
    assert ok_json(cred(["enos"] + E1 + ["--secret", "abcdefg", "--lower"]))["password"] == E1_SHA256.lower()
    out = ok_json(cred(["enos"] + E1 + ["--secret", "abcdefg", "--signmethod", "sha1"]))
    assert out["password"] == "53D00561032C47B8555B768A08FDE176A6F0D267"
    assert out["client_id"] == "123456|securemode=2,signmethod=sha1,timestamp=1548753362502|"


def test_enos_e2_e3_dynamic(cred):
    out = ok_json(cred(["enos"] + E2 + ["--secret", "abcdefg", "--securemode", "3"]))
    assert out["client_id"] == "123|securemode=3,signmethod=sha256,timestamp=1524448722000|"
    assert out["password"] == "A4F9AD91051E3CA89440E0157029DD358C3A2C556D3C543B9FD5A38484785AC9"
    out = ok_json(cred(["enos"] + E2 + ["--secret", "deviceSecretxxx", "--securemode", "3", "--signmethod", "sha1"]))
    assert out["password"] == "DCF3F4B8D77D78B6598BDCC65A0A65C8BB3C1B08"


def test_secret_from_stdin(cred):
    out = ok_json(cred(["enos"] + E1 + ["--secret", "-"], stdin="abcdefg\n"))
    assert out["password"] == E1_SHA256
    out = ok_json(cred(["huawei", "--id", H_ID, "--secret", "-", "--hour", "2999010100"], stdin="123456789\r\n"))
    assert out["password"] == H1
    p = cred(["enos"] + E1 + ["--secret", "-"], stdin="")
    assert p.returncode == 2 and "empty" in p.stderr


def test_help(cred):
    for args in (["--help"], ["-h"], ["huawei", "--help"], ["enos", "--device-key", "x", "-h"]):
        p = cred(args)
        assert p.returncode == 0 and "usage:" in p.stdout and "cloudcred.py huawei" in p.stdout, args


def test_now_is_the_current_hour_and_milliseconds(cred):
    import time

    before = int(time.time() * 1000)
    out = ok_json(cred(["enos", "--device-key", "test", "--product-key", "654321", "--secret", "abcdefg", "--now"]))
    after = int(time.time() * 1000)
    ts = int(out["client_id"].split("timestamp=")[1].rstrip("|"))
    assert before - 1000 <= ts <= after + 1000 and len(str(ts)) == 13  # milliseconds, now
    # the password is the one of that timestamp (same as giving it explicitly)
    again = ok_json(cred(["enos", "--device-key", "test", "--product-key", "654321", "--secret", "abcdefg",
                          "--timestamp", str(ts)]))
    assert again == out
    hours = {time.strftime("%Y%m%d%H", time.gmtime(t)) for t in (before // 1000 - 2, after // 1000 + 2)}
    out = ok_json(cred(HUAWEI + ["--now"]))
    assert out["client_id"].rsplit("_", 1)[1] in hours  # the UTC hour (not local time)


def test_enos_client_id_defaults_to_the_device_key(cred):
    out = ok_json(cred(["enos", "--device-key", "test", "--product-key", "654321", "--secret", "abcdefg",
                        "--timestamp", "1548753362502"]))
    assert out["client_id"] == "test|securemode=2,signmethod=sha256,timestamp=1548753362502|"
    explicit = ok_json(cred(["enos", "--client-id", "test", "--device-key", "test", "--product-key", "654321",
                             "--secret", "abcdefg", "--timestamp", "1548753362502"]))
    assert explicit == out
    other = ok_json(cred(["enos"] + E1 + ["--secret", "abcdefg"]))
    assert other["password"] == E1_SHA256 and other["password"] != out["password"]


HUAWEI = ["huawei", "--id", H_ID, "--secret", "123456789"]
USAGE_ERRORS = [
    ([], "missing subcommand"),
    (["aws"], "unknown subcommand"),
    (["huawei"], "missing --id"),
    (HUAWEI, "exactly one of --time, --hour and --now"),
    (HUAWEI + ["--now", "--hour", "2999010100"], "exactly one"),
    (HUAWEI + ["--hour", "2999010100", "--time", "2023-11-14T22:13:20Z"], "exactly one"),
    (HUAWEI + ["--hour", "2999010100", "--sig", "2"], "--sig must be one of 0|1"),
    (HUAWEI + ["--hour", "2999010100", "--id-type", "1"], "--id-type must be one of 0|2"),
    (HUAWEI + ["--hour", "2023111424"], "hour"),
    (HUAWEI + ["--hour", "2023-11-14"], "hour"),
    (HUAWEI + ["--time", "2023-11-14T22:13:20"], "zone"),
    (HUAWEI + ["--time", "yesterday"], "ISO 8601"),
    (HUAWEI + ["--time", "2023-02-30T00:00:00Z"], "ISO 8601"),
    (HUAWEI + ["--time", "2023-11-14T25:00:00Z"], "ISO 8601"),
    (HUAWEI + ["--time", "2023-11-14T22:13:20+25:00"], "ISO 8601"),
    (HUAWEI + ["--time", "1970-01-01T00:00:00+01:00"], "ISO 8601"),  # before 1970 in UTC
    (HUAWEI + ["--time", "2023-11-14T22:13:20.Z"], "ISO 8601"),
    (["huawei", "--id", "a/b", "--secret", "s", "--hour", "2999010100"], "device_id"),
    (["huawei", "--id"], "--id needs a value"),
    (["huawei", "--id", "--secret", "x"], "--id needs a value"),
    (HUAWEI + ["--hour", "2999010100", "--foo", "1"], "unknown option --foo"),
    (HUAWEI + ["--hour", "2999010100", "extra"], "unexpected argument"),
    (HUAWEI + ["--hour", "2999010100", "--id", "again"], "given twice"),
    (["huawei", "--id", H_ID, "--secret", "", "--hour", "2999010100"], "--secret is empty"),
    (["enos"] + E1[:-2] + ["--secret", "s"], "exactly one of --timestamp and --now"),
    (["enos"] + E1 + ["--secret", "s", "--now"], "exactly one of --timestamp and --now"),
    (["enos"] + E1[:-1] + ["1548753362", "--secret", "s"], "--timestamp 1548753362 is in seconds"),
    (["enos"] + E1[:-1] + ["1548753362", "--secret", "s"], "e.g. 1548753362000"),
    (["enos"] + E1[:-1] + ["12x", "--secret", "s"], "--timestamp is not a number"),
    (["enos"] + E1[:-1] + ["-5", "--secret", "s"], "--timestamp"),
    (["enos"] + E1 + ["--secret", "s", "--securemode", "4"], "--securemode must be one of 2|3"),
    (["enos"] + E1 + ["--secret", "s", "--signmethod", "md5"], "--signmethod"),
    (["enos"] + E1 + ["--secret", "s", "--signmethod", "hmacsha1"], "--signmethod"),
    (["enos"] + E1 + ["--secret", "s", "--lower=1"], "--lower takes no value"),
    (["enos", "--client-id", "a|b", "--device-key", "d", "--product-key", "p", "--timestamp", "1548753362502",
      "--secret", "s"],
     "client_id"),
    (["enos"] + E1 + ["--secret", "s", "--sig", "1"], "unknown option --sig"),
]


@pytest.mark.parametrize("args,why", USAGE_ERRORS, ids=[str(i) for i in range(len(USAGE_ERRORS))])
def test_usage_errors_exit_2_without_traceback(cred, args, why):
    p = cred(args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stdout == ""
    assert p.stderr.startswith("cloudcred: ")
    assert why in p.stderr
    assert "Traceback" not in p.stderr


def test_secret_never_echoed(cred):
    secret = "TopSecret-4711"
    for args in (["huawei", "--id", "a b", "--secret", secret, "--hour", "2999010100"],
                 ["huawei", "--id", H_ID, "--secret", secret, "--time", "never"],
                 ["huawei", "--id", H_ID, "--secrte=" + secret, "--hour", "2999010100"],
                 ["huawei", "--id", H_ID, secret],
                 ["enos"] + E1 + ["--secret", secret, "--securemode", "9"]):
        p = cred(args)
        assert p.returncode == 2
        assert secret not in p.stderr and secret not in p.stdout, args
    p = cred(["huawei", "--id", H_ID, "--secret", secret, "--hour", "2999010100"])
    assert p.returncode == 0 and secret not in p.stdout


@pytest.mark.parametrize("interp", sorted(INTERPRETERS))
def test_non_utf8_secret_on_stdin_is_a_usage_error(interp):
    env = {k: v for k, v in os.environ.items() if k not in ("MICROPYPATH", "PYTHONPATH")}
    p = subprocess.run([INTERPRETERS[interp], str(SCRIPT), "huawei", "--id", "x", "--secret", "-", "--hour",
                        "2999010100"], input=b"Zq\xff7secret\n", capture_output=True, env=env, timeout=30,
                       check=False)
    assert p.returncode == 2 and p.stdout == b""
    assert p.stderr.startswith(b"cloudcred: ") and b"Traceback" not in p.stderr and b"7secret" not in p.stderr
