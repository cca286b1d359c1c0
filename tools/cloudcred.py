# Credential calculator: prints the MQTT CONNECT fields (client id, user name, password) for Huawei and EnOS as
# one JSON object, replacing the web HMAC generator seed 000 points people to. A thin wrapper over the device's
# own lib/cellmqtt code; runs unchanged under `python3` and `micropython`, from any working directory.
#
#   cloudcred.py huawei --id ID --secret S (--time ISO8601 | --hour YYYYMMDDHH | --now) [--sig 0|1] [--id-type 0|2]
#   cloudcred.py enos [--client-id C] --device-key D --product-key P --secret S (--timestamp MS | --now)
#                     [--securemode 2|3] [--signmethod sha256|sha1] [--lower]
import sys

USAGE = """usage:
  cloudcred.py huawei --id ID --secret S (--time ISO8601 | --hour YYYYMMDDHH | --now) [--sig 0|1] [--id-type 0|2]
  cloudcred.py enos [--client-id C] --device-key D --product-key P --secret S (--timestamp MS | --now)
                    [--securemode 2|3] [--signmethod sha256|sha1] [--lower]

Prints {"client_id": ..., "username": ..., "password": ...}.
  --time      e.g. 2023-11-14T22:13:20Z or 2023-11-15T06:13:20+08:00 (a zone is required; converted to UTC)
  --hour      the UTC hour YYYYMMDDHH as it appears in the client id
  --sig       0: platform does not check the hour (default); 1: it does
  --id-type   0: platform device id (default); 2: node id (legacy)
  --now       this computer's clock: the current UTC hour (huawei), the current Unix milliseconds (enos)
  --client-id the text before the first | of the EnOS client id (default: the device key, as the firmware)
  --timestamp Unix milliseconds (13 digits), as put in the client id; a value in seconds is refused
  --secret -  reads the secret from the first line of standard input (keeps it out of shell history)
Exit status: 0 ok, 1 the hash is not available in this interpreter, 2 usage error."""

_OPTIONS = {
    "huawei": (("--id", "--secret", "--time", "--hour", "--sig", "--id-type"), ("--now",)),
    "enos": (("--client-id", "--device-key", "--product-key", "--secret", "--timestamp", "--securemode",
              "--signmethod"), ("--lower", "--now")),
}


class Usage(Exception):
    """A bad command line: the message says what is wrong, never echoing a value (it may be a secret)."""


def _lib_dir():
    # lib/ sits next to tools/; found from this file, so any working directory works
    d = __file__.rpartition("/")[0]
    return (d or ".") + "/../lib"


def parse_args(argv):
    """(subcommand, {option: value}) or ("help", None); Usage for anything malformed."""
    if not argv:
        raise Usage("missing subcommand (huawei or enos)")
    if argv[0] in ("-h", "--help"):
        return "help", None
    cmd = argv[0]
    if cmd not in _OPTIONS:
        raise Usage("unknown subcommand: use huawei or enos")
    valued, flags = _OPTIONS[cmd]
    opts = {}
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            return "help", None
        if not arg.startswith("--"):
            raise Usage("unexpected argument at position %d" % i)
        name, eq, value = arg.partition("=")
        if name in flags:
            if eq:
                raise Usage(name + " takes no value")
            opts[name] = True
        elif name in valued:
            if not eq:
                i += 1
                if i >= len(argv) or argv[i].partition("=")[0] in valued or argv[i] in flags:
                    raise Usage(name + " needs a value")
                value = argv[i]
            if name in opts:
                raise Usage(name + " given twice")
            opts[name] = value
        else:
            raise Usage("unknown option " + name + " for " + cmd)
        i += 1
    return cmd, opts


def _need(opts, *names):
    for n in names:
        if n not in opts:
            raise Usage("missing " + n)


def _choice(opts, name, default, allowed):
    v = opts.get(name, default)
    if v not in allowed:
        raise Usage(name + " must be one of " + "|".join(allowed))
    return v


def _secret(opts):
    s = opts["--secret"]
    if s == "-":
        try:
            s = sys.stdin.readline()
        except UnicodeError:
            s = None  # reported below, outside the handler (the error would quote the bytes)
        if s is None:
            raise Usage("--secret -: standard input is not UTF-8 text")
        while s and s[-1] in "\r\n":
            s = s[:-1]
    if not s:
        raise Usage("--secret is empty")
    return s


def _num(s, what):
    from cellmqtt.cloudsign import is_digits

    if not is_digits(s):
        raise Usage(what + " is not a number")
    return int(s)


def parse_iso8601(s):
    """Unix seconds of an ISO 8601 date-time with a zone: extended (2023-11-14T22:13:20Z, +08:00 offsets,
    optional seconds and fraction) or basic (20231114T221320Z, Huawei's form)."""
    from cellmqtt.cloudsign import CloudValueError, is_digits, unix_from_civil

    bad = Usage("--time is not an ISO 8601 date-time with a zone (e.g. 2023-11-14T22:13:20Z)")
    if len(s) >= 10 and s[4:5] == "-" and s[7:8] == "-":
        date, rest = s[:4] + s[5:7] + s[8:10], s[10:]
    else:
        date, rest = s[:8], s[8:]
    if not is_digits(date) or len(date) != 8 or rest[:1] not in ("T", "t", " ") or len(rest) < 2:
        raise bad
    rest = rest[1:]
    # the zone starts at the first Z/z/+/- after the time of day
    z = len(rest)
    for i in range(len(rest)):
        if rest[i] in "Zz+-":
            z = i
            break
    clock, zone = rest[:z], rest[z:]
    clock, dot, frac = clock.partition(".")  # a fraction of a second is allowed and dropped
    if ":" in clock:
        parts = clock.split(":")
    else:
        parts = [clock[i : i + 2] for i in range(0, len(clock), 2)]
    if not 2 <= len(parts) <= 3 or (dot and (len(parts) != 3 or not is_digits(frac))):
        raise bad
    for p in parts:
        if len(p) != 2 or not is_digits(p):
            raise bad
    hh, mm, ss = int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) == 3 else 0
    if zone in ("Z", "z"):
        offset = 0
    elif zone[:1] in ("+", "-"):
        zz = zone[1:].replace(":", "")
        if len(zz) not in (2, 4) or not is_digits(zz) or int(zz[:2]) > 23 or int(zz[2:] or "0") > 59:
            raise bad
        offset = (int(zz[:2]) * 3600 + int(zz[2:] or "0") * 60) * (1 if zone[0] == "+" else -1)
    else:
        raise Usage("--time needs a zone: Z (UTC) or an offset like +08:00")
    try:
        t = unix_from_civil(int(date[:4]), int(date[4:6]), int(date[6:]), hh, mm, ss) - offset
    except CloudValueError:
        t = None
    if t is None or t < 0:
        raise bad
    return t


_MS_MIN = 100000000000  # 1973-03-03 in ms; 5138 AD in seconds: anything smaller was given in seconds


def _now_ms():
    import time

    ns = getattr(time, "time_ns", None)  # CPython and MicroPython both have it; fall back to seconds
    return ns() // 1000000 if ns else int(time.time()) * 1000


def huawei_fields(opts):
    from cellmqtt import huawei
    from cellmqtt.cloudsign import utc_hour

    _need(opts, "--id", "--secret")
    if sum(k in opts for k in ("--time", "--hour", "--now")) != 1:
        raise Usage("give exactly one of --time, --hour and --now")
    sig = int(_choice(opts, "--sig", "0", ("0", "1")))
    id_type = int(_choice(opts, "--id-type", "0", ("0", "2")))
    if "--now" in opts:
        hour = utc_hour(_now_ms() // 1000)
    else:
        hour = opts["--hour"] if "--hour" in opts else utc_hour(parse_iso8601(opts["--time"]))
    return huawei.credentials(opts["--id"], _secret(opts), hour, sig, id_type)


def enos_fields(opts):
    from cellmqtt import enos

    _need(opts, "--device-key", "--product-key", "--secret")
    if ("--timestamp" in opts) == ("--now" in opts):
        raise Usage("give exactly one of --timestamp and --now")
    securemode = int(_choice(opts, "--securemode", "2", ("2", "3")))
    method = _choice(opts, "--signmethod", "sha256", enos.SIGN_METHODS)
    if "--now" in opts:
        ts = _now_ms()
    else:
        ts = _num(opts["--timestamp"], "--timestamp")
        if ts < _MS_MIN:
            raise Usage("--timestamp %d is in seconds (or before 1973): EnOS wants Unix milliseconds, "
                        "13 digits (e.g. %d)" % (ts, ts * 1000))
    cid = opts.get("--client-id", opts["--device-key"])  # the firmware's default (cloud.enos.client_id)
    return enos.credentials(cid, opts["--device-key"], opts["--product-key"], ts, _secret(opts),
                            securemode, method, not opts.get("--lower", False))


def main(argv):
    lib = _lib_dir()
    if lib not in sys.path:
        sys.path.insert(0, lib)
    import json

    from cellmqtt.cloudsign import CloudValueError, HashUnavailable

    try:
        cmd, opts = parse_args(argv)
        if cmd == "help":
            sys.stdout.write(USAGE + "\n")
            return 0
        fields = huawei_fields(opts) if cmd == "huawei" else enos_fields(opts)
    except Usage as e:
        sys.stderr.write("cloudcred: %s\n%s\n" % (e.args[0], USAGE))
        return 2
    except CloudValueError as e:  # the library's checks name the option's key, never a secret's value
        sys.stderr.write("cloudcred: %s\n" % e.args[0])
        return 2
    except HashUnavailable as e:
        sys.stderr.write("cloudcred: %s\n" % e.args[0])
        return 1
    # fixed key order on both interpreters (MicroPython dicts are unordered)
    sys.stdout.write('{"client_id": %s, "username": %s, "password": %s}\n' % tuple(json.dumps(f) for f in fields))
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    # never a traceback: a bug shows its type only (its text might quote an input, e.g. a secret)
    except Exception as e:  # noqa: BLE001
        sys.stderr.write("cloudcred: internal error (%s)\n" % type(e).__name__)
        code = 1
    sys.exit(code)
