"""Every choice the configuration offers that changes what goes on the wire is exercised end to end: the firmware
on the MicroPython unix port -> pty -> emulated modem -> real TLS (or TCP) -> the cloud twin with that cloud's
rules and product model. CASES lists the runs; test_every_wire_option_value_is_covered fails when an option gains
a value (or a documented value) that no case uses."""

import sys
from pathlib import Path

import pytest
from e2e import commands_round_trip, device_config

from tools.demo import HUAWEI_NODE

sys.path[:0] = [str(Path(__file__).resolve().parent.parent / p) for p in ("firmware", "lib")]

# (id, Device keyword arguments); "over" is merged into the device's config sections
CASES = [
    ("huawei-legacy-bg96", dict(cloud="huawei", modem="bg96")),
    ("huawei-binary-bc660k-qos0", dict(cloud="huawei", modem="bc660k",
                                       over={"cloud": {"huawei": {"codec": "binary", "sig_type": "0"}},
                                             "mqtt": {"qos": 0}})),
    ("huawei-nodeid-bg95-socket-mtls", dict(cloud="huawei", modem="bg95", transport="socket", mtls=True,
                                            over={"cloud": {"huawei": {"id_type": 2, "device_id": HUAWEI_NODE,
                                                                       "sig_type": "1"}},
                                                  "tls": {"seclevel": 2}})),
    ("iotda-bg96", dict(cloud="iotda", modem="bg96")),
    ("iotda-bc660k-socket-seclevel0", dict(cloud="iotda", modem="bc660k", transport="socket", interval=3,
                                           over={"tls": {"seclevel": 0}})),
    ("enos-sha1-lower-bg96-socket-cert-seclevel1", dict(cloud="enos", modem="bg96", transport="socket", mtls=True,
                                                        twin_opts={"require_client_cert": False},
                                                        over={"cloud": {"enos": {"signmethod": "sha1", "upper": False}},
                                                              "tls": {"seclevel": 1}})),
    ("enos-dynamic-bc660k-datamode", dict(cloud="enos", modem="bc660k", dynamic=True, interval=4,
                                          over={"mqtt": {"inline": False}})),
    ("mqtt-bg96-plain-tcp", dict(cloud="mqtt", modem="bg96", over={"tls": {"enabled": False}, "mqtt": {"port": 1883}})),
    ("mqtt-bg95-qos0-unclean", dict(cloud="mqtt", modem="bg95", over={"mqtt": {"qos": 0, "clean": False}})),
]

# options that change what goes on the wire, with the values the README documents where the schema does not
# enumerate them (ranges); choices and booleans are read from the composed schema itself
DOCUMENTED = {"cloud.huawei.id_type": (0, 2), "mqtt.qos": (0, 1), "tls.seclevel": (None, 0, 1, 2)}
WIRE = ("modem.type", "cloud.profile", "cloud.huawei.api", "cloud.huawei.codec", "cloud.huawei.id_type",
        "cloud.huawei.sig_type", "cloud.enos.signmethod", "cloud.enos.upper", "enos.activation", "mqtt.transport",
        "tls.seclevel", "tls.client_cert", "mqtt.qos", "mqtt.inline", "tls.enabled", "mqtt.clean")


def case_config(kw):
    """The validated configuration a case runs with."""
    from app import config

    raw, sec = device_config(kw["cloud"], kw["modem"], kw.get("transport", "native"), kw.get("dynamic", False),
                             kw.get("mtls", False), kw.get("interval", 1), **kw.get("over", {}))
    for k, v in sec.items():
        for k2, v2 in v.items():
            raw.setdefault(k, {}).setdefault(k2, {}).update(v2)
    return config.validate(raw)


def values_of(cfg, option):
    from app import config

    if option == "enos.activation":
        return "dynamic" if cfg["cloud"]["profile"] == "enos" and not cfg["cloud"]["enos"]["device_secret"] else \
            "static" if cfg["cloud"]["profile"] == "enos" else None
    if option == "tls.client_cert":
        return bool(cfg["tls"]["cert"])
    if option.startswith("cloud.") and option.split(".")[1] != cfg["cloud"]["profile"] and option != "cloud.profile":
        return None  # another cloud's key: not in use
    if option == "mqtt.inline" and cfg["modem"]["type"] != "bc660k":
        return None
    return config.get(cfg, option)


def offered(option):
    """Every value a user can choose for ``option``."""
    if option in DOCUMENTED:
        return set(DOCUMENTED[option])
    if option == "modem.type":
        return {f.stem for f in (Path(__file__).resolve().parent.parent / "lib" / "cellmqtt").glob("*.py")
                if "\nDriver = " in f.read_text()}
    if option == "enos.activation":
        return {"static", "dynamic"}
    if option == "tls.client_cert":
        return {True, False}
    from app import config
    from app.wiring import PROFILE_NAMES

    if option == "cloud.profile":
        return set(PROFILE_NAMES)
    schemas = [config.schema(case_config(kw)) for _, kw in CASES]
    for schema in schemas:
        node = schema
        for part in option.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, tuple):
            return {v for v in node if v is not None} if not isinstance(node[-1], (int, float)) else None
        if isinstance(node, bool):
            return {True, False}
    raise AssertionError("option %s is in no schema" % option)


def test_every_wire_option_value_is_covered():
    configs = [case_config(kw) for _, kw in CASES]
    missing = {}
    for option in WIRE:
        want = offered(option)
        assert want, option
        have = {values_of(c, option) for c in configs}
        if want - have:
            missing[option] = sorted(want - have, key=repr)
    assert missing == {}, "no end-to-end run uses: %s" % missing


def test_the_coverage_check_sees_a_missing_value():
    configs = [case_config(kw) for name, kw in CASES if "binary" not in name]
    assert "binary" not in {values_of(c, "cloud.huawei.codec") for c in configs}


@pytest.mark.parametrize("name, kw", CASES, ids=[c[0] for c in CASES])
def test_configuration_end_to_end(mkdev, name, kw):
    kw = dict(kw)
    over = kw.pop("over", {})
    d = mkdev(interval=kw.pop("interval", 1), config_over=over, **kw)
    d.start()
    tel = d.wait_samples(2, timeout=60)
    if kw.get("dynamic"):
        d.twin.control.wait_for(lambda: [c["securemode"] for c in d.connections() if c["accepted"]][:2] == [3, 2],
                                30, what="activation and reconnect")
    binary = over.get("cloud", {}).get("huawei", {}).get("codec") == "binary"
    # the BC660K-GL loses what arrives while it is in data mode (inline false, or the socket transport)
    quiet = kw["modem"] == "bc660k" and (over.get("mqtt", {}).get("inline") is False or kw.get("transport") == "socket")
    commands_round_trip(d, binary=binary, quiet=quiet)
    tel = d.wait_samples(tel["unique"] + 2, timeout=60)
    ids = sorted(int(s) for s in tel["samples"])
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids  # none lost
    assert not tel["rejected"] and not tel["bad"], tel  # every sample fits the product model
    conns = [c for c in d.connections() if c["accepted"]]
    tls = over.get("tls", {}).get("enabled", True)
    assert conns and all(c["tls"] == tls for c in conns)
    if kw.get("mtls") and over.get("tls", {}).get("seclevel") == 2:
        assert conns[0]["client_cert"] == "device-0001"
    if over.get("cloud", {}).get("huawei", {}).get("id_type") == 2:
        assert conns[0]["id_type"] == 2 and conns[0]["client_id"].startswith(HUAWEI_NODE + "_2_1_")
    log = d.fw.log_text()
    assert "Traceback" not in log and "unexpected" not in log, log[-3000:]
