"""The fault script: rules that fire actions on a timer, on the n-th time a command arrives, or on an event.

A script is a JSON list of rules ``{"when": <trigger>, "do": <action or list of actions>}`` (optionally
``"name"`` for the logs). It is given as ``--faults FILE`` or inline JSON (``--faults '[...]'``); the
control socket accepts the same actions (``{"cmd": "fault", "do": ...}``) to fire one now.

Triggers:
  {"after_s": 5}                           once, 5 s after the emulator started
  {"command": "QMTPUB", "nth": 3}          the 3rd time AT+QMTPUB arrives (any form: =, ?, =?)
  {"command": "QMTPUB", "nth": 2, "every": true}   the 2nd, 4th, 6th, ... time
  {"command": "QMTPUB", "match": "regex"}  only lines that match (Python re, searched in the line)
  {"event": "mqtt_connected", "nth": 1}    the n-th time an event happens (list in EVENTS)

An action is a string (its name, default parameters) or an object ``{"action": name, ...params}``; every
action accepts ``"delay_ms"`` (wait before acting). Actions and their parameters are in ACTIONS below; the
ones marked *response* change the response of the command that triggered them (with a non-command
trigger they apply to the next command's response).
"""

import json
import re

EVENTS = (
    "boot",  # RDY printed
    "registered",  # registration reached home/roaming
    "pdp_active",  # a PDP context was activated (BG96 QIACT, BC660K default bearer)
    "mqtt_opened",  # +QMTOPEN: <id>,0
    "mqtt_connected",  # +QMTCONN: <id>,0,0
    "mqtt_subscribed",  # +QMTSUB: ... result 0
    "mqtt_published",  # +QMTPUB: ... result 0
    "mqtt_received",  # +QMTRECV printed (or buffered)
    "ssl_opened",  # +QSSLOPEN success
    "upload_done",  # +QFUPL printed
    "cert_stored",  # BC660K +QSSLCFG: 0,0,"<cert>",<n>
    "sleep",  # BC660K entered sleep
    "wake",  # BC660K woke up (first byte lost)
)

# name -> (defaults, applies to the triggering command's response)
ACTIONS = {
    "no_reply": ({}, True),  # swallow the command: not executed, no response (the echo still happens)
    "late_reply": ({"ms": 2000}, True),  # execute now, print the response ms later (next command runs meanwhile)
    "garbage": ({"data": "\r\n\xff\xfe\x00+QMTST", "where": "before"}, True),  # bytes; where before|after|instead|now
    "urc": ({"line": '+QIURC: "pdpdeact",1', "where": "after_echo"}, True),  # after_echo|mid_response|after_response|now
    "slow_output": ({"byte_ms": 20, "count": 1}, True),  # the next <count> responses trickle out byte by byte
    "reset": ({"mode": "crash"}, False),  # crash: reboot at once; clean: POWERED DOWN first
    "qmtstat": ({"client": 0, "code": 1}, False),  # close MQTT client, print +QMTSTAT: <client>,<code>
    "pdp_lost": ({"cid": None}, False),  # network deactivates the PDP context (profile's default cid)
    # cause: the EMM reject cause a denied registration (stat 3) reports in +CEREG with n = 3 or 5 (BC660K-GL;
    # 3GPP TS 27.007 10.1.22: ...,<AcT>,<cause_type 0 = EMM>,<reject_cause>)
    "registration_lost": ({"stat": 2, "recover_s": 3.0, "drop_links": False, "cause": None}, False),
    "tls_fail": ({"count": 1, "kind": "handshake"}, False),  # next TLS handshake(s) fail; kind handshake|cert|timeout
    "broker_refuse": ({"code": 5, "count": 1}, False),  # next MQTT CONNECT(s) refused with CONNACK code
    "corrupt_upload": ({"count": 1}, False),  # next QFUPL stores a flipped byte (checksum of what was stored)
    "sleep": ({}, False),  # BC660K: enter sleep now
    "drop_first_byte": ({"count": 1}, False),  # drop the next received byte(s)
    "drop_urc": ({"match": "", "count": 1}, False),  # the next <count> URCs holding <match> are lost (never printed)
    "ssl_closed": ({"client": 0}, False),  # the server closes raw TLS socket <client>
    "power_on": ({}, False),  # after AT+QPOWD: press PWRKEY (boot with RDY)
    "psm": ({}, False),  # enter PSM: BG96 prints PSM POWER DOWN, UART dead until "wake"
    "wake": ({}, False),  # leave PSM (PSM_EINT / PWRKEY)
}


class FaultError(ValueError):
    pass


def normalise_action(spec):
    """A string or dict -> a full action dict with defaults filled in; raises FaultError if invalid."""
    if isinstance(spec, str):
        spec = {"action": spec}
    if not isinstance(spec, dict) or "action" not in spec:
        raise FaultError("an action is a name or an object with \"action\": %r" % (spec,))
    name = spec["action"]
    if name not in ACTIONS:
        raise FaultError("unknown fault action %r (known: %s)" % (name, ", ".join(sorted(ACTIONS))))
    defaults, _ = ACTIONS[name]
    unknown = set(spec) - set(defaults) - {"action", "delay_ms"}
    if unknown:
        raise FaultError("action %s has no parameter(s) %s" % (name, ", ".join(sorted(unknown))))
    out = dict(defaults)
    out.update(spec)
    out.setdefault("delay_ms", 0)
    if name == "urc" and out["where"] not in ("after_echo", "mid_response", "after_response", "now"):
        raise FaultError("urc where must be after_echo|mid_response|after_response|now")
    if name == "garbage" and out["where"] not in ("before", "after", "instead", "now"):
        raise FaultError("garbage where must be before|after|instead|now")
    if name == "qmtstat" and not (isinstance(out["code"], int) and 1 <= out["code"] <= 7):
        raise FaultError("qmtstat code must be 1..7")
    if name == "reset" and out["mode"] not in ("crash", "clean"):
        raise FaultError("reset mode must be crash|clean")
    if name == "tls_fail" and out["kind"] not in ("handshake", "cert", "timeout"):
        raise FaultError("tls_fail kind must be handshake|cert|timeout")
    return out


def is_response_action(action):
    return ACTIONS[action["action"]][1]


def command_name(token):
    """'AT+QMTPUB' / '+qmtpub' / 'QMTPUB' -> 'QMTPUB'."""
    t = token.strip().upper()
    t = t.removeprefix("AT")
    return t.lstrip("+")


class Rule:
    def __init__(self, index, spec):
        if not isinstance(spec, dict) or "when" not in spec or "do" not in spec:
            raise FaultError("rule %d: needs \"when\" and \"do\"" % index)
        self.index = index
        self.name = spec.get("name", "rule%d" % index)
        when = spec["when"]
        if not isinstance(when, dict):
            raise FaultError("rule %d: \"when\" must be an object" % index)
        self.when = when
        kinds = [k for k in ("after_s", "command", "event") if k in when]
        if len(kinds) != 1:
            raise FaultError("rule %d: \"when\" needs exactly one of after_s, command, event" % index)
        self.kind = kinds[0]
        unknown = set(when) - {"after_s", "command", "event", "nth", "every", "match"}
        if unknown:
            raise FaultError("rule %d: unknown trigger key(s) %s" % (index, ", ".join(sorted(unknown))))
        self.nth = int(when.get("nth", 1))
        if self.nth < 1:
            raise FaultError("rule %d: nth counts from 1" % index)
        self.every = bool(when.get("every", False))
        self.match = re.compile(when["match"]) if "match" in when else None
        if self.kind == "command":
            self.command = command_name(when["command"])
        elif self.kind == "event":
            if when["event"] not in EVENTS:
                raise FaultError("rule %d: unknown event %r (known: %s)" % (index, when["event"], ", ".join(EVENTS)))
            self.event = when["event"]
        else:
            self.after_s = float(when["after_s"])
        do = spec["do"] if isinstance(spec["do"], list) else [spec["do"]]
        self.actions = [normalise_action(a) for a in do]
        self.seen = 0  # times the trigger matched
        self.fired = 0  # times the actions ran

    def hit(self):
        """Count one matching occurrence; True if the rule fires on it."""
        self.seen += 1
        if self.every:
            fire = self.seen % self.nth == 0
        else:
            fire = self.seen == self.nth
        if fire:
            self.fired += 1
        return fire

    def describe(self):
        return {"name": self.name, "when": self.when, "seen": self.seen, "fired": self.fired,
                "do": [a["action"] for a in self.actions]}


def load(text_or_path):
    """Parse a fault script from inline JSON or a file path; return a list of Rules."""
    if text_or_path is None:
        return []
    s = text_or_path.strip()
    if not s.startswith("[") and not s.startswith("{"):
        with open(text_or_path) as f:
            s = f.read()
    try:
        spec = json.loads(s)
    except json.JSONDecodeError as e:
        raise FaultError("fault script is not valid JSON: %s" % e) from None
    if isinstance(spec, dict):
        spec = [spec]
    if not isinstance(spec, list):
        raise FaultError("a fault script is a JSON list of rules")
    return [Rule(i, r) for i, r in enumerate(spec)]
