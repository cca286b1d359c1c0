"""The control socket: a unix stream socket speaking one JSON object per line, one JSON reply per line.

Requests (``{"cmd": ...}``) and replies (always ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``):

  {"cmd": "ping"}                       -> {"ok": true}
  {"cmd": "state"}                      -> {"ok": true, "state": {... everything below ...}}
  {"cmd": "counters"}                   -> {"ok": true, "counters": {...}}
  {"cmd": "files"}                      -> BG96: {"ok": true, "files": [{"name", "size", "checksum"}]}
  {"cmd": "certs"}                      -> BC660K-GL: {"ok": true, "certs": {"cacert": <len>, ...}}
  {"cmd": "ssl"}                        -> SSL context settings
  {"cmd": "mqtt"}                       -> MQTT clients that are not closed
  {"cmd": "network"}                    -> registration, PDP contexts, --resolve map
  {"cmd": "fault", "do": <action|[actions]>}  -> run fault actions now (vocabulary of faults.py)
  {"cmd": "reset_counters"}             -> counters back to zero

Nothing secret is ever returned: file and certificate contents are reported by size and checksum only.
"""

import asyncio
import json
import os

from .faults import FaultError, normalise_action


class ControlServer:
    def __init__(self, modem, path):
        self.modem = modem
        self.path = path
        self.server = None

    async def start(self):
        if os.path.exists(self.path):
            os.unlink(self.path)  # a stale socket from an earlier run
        self.server = await asyncio.start_unix_server(self._client, path=self.path)

    async def stop(self):
        if self.server:
            self.server.close()
        if os.path.exists(self.path):
            os.unlink(self.path)

    async def _client(self, reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise TypeError("a request is a JSON object")
                    reply = self.handle(req)
                except (ValueError, FaultError, KeyError, TypeError) as e:
                    reply = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
                writer.write(json.dumps(reply, default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            writer.close()

    def handle(self, req):
        m = self.modem
        cmd = req.get("cmd")
        if cmd == "ping":
            return {"ok": True}
        st = m.state()
        if cmd == "state":
            return {"ok": True, "state": st}
        if cmd == "counters":
            return {"ok": True, "counters": st["counters"]}
        if cmd == "files":
            if "files" not in st:
                raise ValueError("this module has no UFS file system")
            return {"ok": True, "files": st["files"]}
        if cmd == "certs":
            if "certs" not in st:
                raise ValueError("this module keeps certificates as UFS files (see files)")
            return {"ok": True, "certs": st["certs"]}
        if cmd == "ssl":
            return {"ok": True, "ssl": st["ssl"]}
        if cmd == "mqtt":
            return {"ok": True, "mqtt": st["mqtt"]}
        if cmd == "network":
            return {"ok": True, "registration": st["registration"], "pdp": st["pdp"], "sim": st["sim"],
                    "resolve": m.resolver.describe()}
        if cmd == "fault":
            do = req.get("do")
            actions = [normalise_action(a) for a in (do if isinstance(do, list) else [do])]
            for a in actions:
                m.run_action(a)
            return {"ok": True, "ran": [a["action"] for a in actions]}
        if cmd == "reset_counters":
            m.counters.clear()
            m.cmd_counts.clear()
            return {"ok": True}
        raise ValueError("unknown cmd %r" % cmd)
