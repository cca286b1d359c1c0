"""The twin's control socket: a unix stream socket speaking JSON lines, and ``TwinControl``, its Python client.

One request per line, one reply per line::

    -> {"op": "command", "device": "dev1", "service_id": "Switch", "cmd": "SET", "paras": {"on": 1}}
    <- {"ok": true, "id": 7, "status": "queued", "topic": "/huawei/v1/devices/dev1/command/json"}
    -> {"op": "nope"}
    <- {"ok": false, "error": "unknown op 'nope' (ops: ...)"}

Ops: ping, status, devices, command, commands, replies, telemetry, connections, activations, violations,
reset, clock, disconnect, deactivate. docs/cloudtwin.md describes each one's fields.

Usage from a test::

    ctl = TwinControl("/tmp/ct-x/control.sock")
    mid = ctl.command("dev1", service_id="Switch", cmd="SET", paras={"on": 1})
    rec = ctl.wait_reply(mid)            # the command record once the device answered
    assert ctl.telemetry("dev1")["duplicates"] == 0
"""

import asyncio
import json
import logging
import os
import socket
import time

from .core import TwinError

log = logging.getLogger("cloudtwin.control")

MAX_LINE = 1 << 20


class TwinControlError(Exception):
    """The twin refused a control request (the reason is the twin's own message) or could not be reached."""


class ControlServer:
    def __init__(self, twin, path, info=None):
        self.twin = twin
        self.path = path
        self.info = info or {}
        self.server = None
        self.ops = {
            "ping": lambda r: {"pong": True},
            "status": lambda r: dict(self.twin.status(), **self.info),
            "devices": lambda r: {"devices": [d.describe() for d in self.twin.devices.values()]},
            "command": self._command,
            "commands": self._commands,
            "replies": lambda r: {"replies": list(self.twin.unmatched_replies)},
            "telemetry": lambda r: {"telemetry": self.twin.report_telemetry(r.get("device"))},
            "connections": lambda r: {"connections": self.twin.report_connections(r.get("device"))},
            "activations": lambda r: {"activations": [dict(a) for a in self.twin.activations]},
            "violations": lambda r: {"violations": {k: list(v) for k, v in self.twin.violations.items()}},
            "reset": self._reset,
            "clock": self._clock,
            "disconnect": lambda r: {"kicked": self.twin.disconnect(r.get("device"))},
            "deactivate": self._deactivate,
            "push": lambda r: self.twin.push(r),
        }

    async def start(self):
        if os.path.exists(self.path):
            os.unlink(self.path)  # a stale socket from a killed twin; connect() to it would fail anyway
        self.server = await asyncio.start_unix_server(self._client, path=self.path, limit=MAX_LINE)

    async def stop(self):
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def _client(self, reader, writer):
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(b'{"ok": false, "error": "request line longer than 1 MiB"}\n')
                    break
                if not line:
                    break
                writer.write(json.dumps(self.handle(line), separators=(",", ":")).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass  # the client went away mid-reply: nothing left to tell it
        finally:
            writer.close()

    def handle(self, line):
        try:
            req = json.loads(line)
        except ValueError as e:
            return {"ok": False, "error": "request is not JSON: %s" % e}
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            return {"ok": False, "error": "request must be an object with an 'op' string"}
        fn = self.ops.get(req["op"])
        if fn is None:
            return {"ok": False, "error": "unknown op %r (ops: %s)" % (req["op"], ", ".join(sorted(self.ops)))}
        try:
            out = fn(req)
        except TwinError as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:  # a twin bug must reach the test as an error, not kill the socket
            log.exception("control op %s failed", req["op"])
            return {"ok": False, "error": "twin internal error in %s: %s: %s" % (req["op"], type(e).__name__, e)}
        out["ok"] = True
        return out

    def _command(self, req):
        spec = {k: v for k, v in req.items() if k != "op"}
        rec = self.twin.command(spec)
        return {"id": rec["id"], "status": rec["status"], "topic": rec["topic"]}

    def _commands(self, req):
        recs = self.twin.report_commands(req.get("device"))
        if "id" in req:
            recs = [r for r in recs if r["id"] == req["id"]]
            if not recs:
                raise TwinError("no command with id %r" % (req["id"],))
        return {"commands": recs}

    def _reset(self, req):
        self.twin.reset()
        return {}

    def _clock(self, req):
        if "advance" in req:
            if not isinstance(req["advance"], (int, float)) or isinstance(req["advance"], bool):
                raise TwinError("advance must be a number of seconds")
            self.twin.clock.advance(req["advance"])
        if "set" in req:
            try:
                self.twin.clock.set(str(req["set"]))
            except ValueError as e:
                raise TwinError(str(e)) from None
        self.twin.clock_changed()
        return {"time": self.twin.now_iso()}

    def _deactivate(self, req):
        if not hasattr(self.twin, "deactivate"):
            raise TwinError("deactivate is an EnOS operation")
        self.twin.deactivate(req.get("device"))
        return {}


class TwinControl:
    """Blocking client of the control socket; one short connection per request."""

    def __init__(self, path, timeout=10.0):
        self.path = path
        self.timeout = timeout

    def request(self, op, **args):
        req = dict(args, op=op)
        data = json.dumps(req, separators=(",", ":")).encode() + b"\n"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.path)
                s.sendall(data)
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
        except OSError as e:
            raise TwinControlError("control socket %s: %s" % (self.path, e)) from None
        if not buf:
            raise TwinControlError("control socket %s closed without a reply to %s" % (self.path, op))
        reply = json.loads(buf)
        if not reply.get("ok"):
            raise TwinControlError(reply.get("error", "request failed"))
        return reply

    # ---- convenience -----------------------------------------------------------------------------------

    def ping(self):
        return self.request("ping")["pong"]

    def status(self):
        return self.request("status")

    def command(self, device, **spec):
        """Send a command; return its id (Huawei mid: int, EnOS id: str).

        Huawei: ``service_id, cmd, paras``. EnOS: ``kind`` = measurepoint_set (params dict) | measurepoint_get
        (params list) | service (service_id, params dict). Both: ``qos`` (0/1, default 1), ``queue`` (default
        True: hold it until the device can receive it; False: error if it cannot now).
        """
        return self.request("command", device=device, **spec)["id"]

    def commands(self, device=None):
        args = {} if device is None else {"device": device}
        return self.request("commands", **args)["commands"]

    def command_record(self, cmd_id):
        return self.request("commands", id=cmd_id)["commands"][0]

    def replies(self):
        """Replies that matched no command."""
        return self.request("replies")["replies"]

    def telemetry(self, device=None):
        args = {} if device is None else {"device": device}
        return self.request("telemetry", **args)["telemetry"]

    def connections(self, device=None):
        args = {} if device is None else {"device": device}
        return self.request("connections", **args)["connections"]

    def activations(self):
        return self.request("activations")["activations"]

    def violations(self):
        return self.request("violations")["violations"]

    def reset(self):
        self.request("reset")

    def clock(self, advance=None, set=None):  # 'set' mirrors the op's field name
        args = {}
        if advance is not None:
            args["advance"] = advance
        if set is not None:
            args["set"] = set
        return self.request("clock", **args)["time"]

    def disconnect(self, device):
        return self.request("disconnect", device=device)["kicked"]

    def deactivate(self, device):
        self.request("deactivate", device=device)

    def push(self, device, topic, payload, qos=0):
        """Publish raw bytes (payload: bytes or str) to a connected device on any topic: what a cloud that passes
        data through (IoTDA messages/down, a hostile or buggy application) can deliver. No record is kept."""
        if isinstance(payload, (bytes, bytearray)):
            payload = bytes(payload).decode("latin-1")
        return self.request("push", device=device, topic=topic, payload=payload, qos=qos)["sent"]

    def wait_for(self, fn, timeout=5.0, interval=0.05, what="condition", until=None):
        """Poll ``fn()`` until its value is truthy (or ``until(value)`` is); return the value, or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = fn()
            if (until(value) if until is not None else value):
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError("twin: %s not reached within %.1f s (last: %r)" % (what, timeout, value))
            time.sleep(interval)

    def wait_reply(self, cmd_id, timeout=5.0):
        """The command record once its reply arrived."""
        def replied():
            rec = self.command_record(cmd_id)
            return rec if rec["reply"] is not None else None

        return self.wait_for(replied, timeout, what="reply to command %r" % (cmd_id,))

    def wait_samples(self, device, n, timeout=5.0):
        """Telemetry of ``device`` once it holds at least ``n`` unique samples."""
        def enough():
            t = self.telemetry(device)
            return t if t["unique"] >= n else None

        return self.wait_for(enough, timeout, what="%d samples from %s" % (n, device))
