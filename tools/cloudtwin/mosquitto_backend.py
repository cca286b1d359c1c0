"""The twin on a mosquitto process (Debian package), for interoperability with a second broker implementation.

mosquitto does the MQTT; the twin generates its configuration, password file (``mosquitto_passwd``) and ACL
file in a temp dir, runs ``mosquitto -c`` as the current user on free ports, and plays the cloud as a
privileged MQTT v5 client (no-local subscriptions): it publishes commands and collects telemetry and replies.
It learns about CONNECTs, SUBSCRIBEs, denied PUBLISHes and closed connections from mosquitto's log
(``log_type all`` on stderr).

What mosquitto cannot express, and so this backend does not enforce (docs/cloudtwin.md says the same):

* Huawei: the password file holds one password per user, HMAC-SHA256 keyed with the *twin's* current hour;
  at each hour boundary it is rewritten and mosquitto reloaded (SIGHUP) -- mosquitto then re-authenticates and
  drops every connected device. A sigType-0 device whose client id carries another hour is refused. The client
  id form, the username and the keep-alive range are checked only after the fact (``twin_check`` in the
  connection log). A second connection of a device under another client id does not take the first over.
* EnOS: the signature depends on the device's own timestamp, so there is no password file at all: any password
  is accepted and the ACL (keyed by the claimed username) is the only guard. Activation works, but mosquitto
  still accepts the product secret afterwards. The rate limit is recorded, never enforced.
* Neither cloud: mosquitto delivers only to subscribers, so an EnOS device must SUBSCRIBE to receive the
  activation push, commands and replies. A forbidden SUBSCRIBE is granted by mosquitto 2.0 (nothing is ever
  delivered on it) and recorded as a violation. Refused CONNECTs carry no client id or username in the log.
"""

import asyncio
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from tools.broker import free_port

from .core import ConnectInfo, Link, StartError
from .credentials import (
    ENOS_KEEPALIVE,
    HUAWEI_KEEPALIVE,
    huawei_hour_of,
    huawei_password,
)

log = logging.getLogger("cloudtwin.mosquitto")

SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
START_TIMEOUT_S = 10

_TS = re.compile(r"^\d+: ")
_NEW_CONN = re.compile(r"^New connection from (\S+):(\d+) on port (\d+)\.$")
_CONNECTED = re.compile(r"^New client connected from (\S+):(\d+) as (.*) \(p\d+, c(\d), k(\d+)(?:, u'(.*)')?\)\.$")
_CONNACK = re.compile(r"^Sending CONNACK to (.*) \((\d+), (\d+)\)$")
_SUBSCRIBE = re.compile(r"^Received SUBSCRIBE from (.*)$")
_SUB_ITEM = re.compile(r"^\t(.*) \(QoS (\d)\)$")
_PUBLISH = re.compile(r"^(Received|Denied) PUBLISH from (.*) \(d(\d), q(\d), r(\d), m\d+, '(.*)', \.\.\. \(\d+ bytes\)\)$")
_CLOSED = re.compile(r"^Client (.*?) (disconnected\.|closed its connection\.|has exceeded timeout, disconnecting\."
                     r"|been disconnected by administrative action\.|disconnected due to protocol error\."
                     r"|already connected, closing old connection\.)$")
# mosquitto's words -> the reasons the amqtt backend records, so tests can assert either the same way
_CLOSE_REASONS = {
    "disconnected.": "client sent DISCONNECT",
    "closed its connection.": "connection lost without DISCONNECT",
    "has exceeded timeout, disconnecting.": "keep-alive timeout (mosquitto: 1.5 x keep-alive)",
    "been disconnected by administrative action.": "disconnected by mosquitto (administrative action)",
    "already connected, closing old connection.": "taken over by a new connection with the same client id",
    "disconnected due to protocol error.": "mosquitto: protocol error",
}
_SOCKET_ERR = re.compile(r"^Socket error on client (.*), disconnecting\.$")


class MosquittoError(StartError):
    """mosquitto is missing, would not start, or refused the twin's own client."""


def find_tool(name):
    """A mosquitto binary on PATH or in the sbin directories a non-root PATH often lacks."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", "")] + list(SBIN)))


def find_mosquitto():
    return find_tool("mosquitto")


class MosquittoBackend:
    name = "mosquitto"
    can_push = False

    def __init__(self, twin, certs, tls_port=0, plain_port=0, require_client_cert=False, exe=None):
        self.twin = twin
        twin.backend = self
        self.certs = os.path.abspath(certs)
        self.exe = exe or find_mosquitto()
        if not self.exe:
            raise MosquittoError("mosquitto not found (Debian: apt-get install -y mosquitto)")
        if not os.access(self.exe, os.X_OK):
            raise MosquittoError("mosquitto binary %s is not an executable file" % self.exe)
        self.passwd_tool = find_tool("mosquitto_passwd")
        if twin.cloud == "huawei" and not self.passwd_tool:
            raise MosquittoError("mosquitto_passwd not found (it ships with the mosquitto package)")
        self.tls_port = tls_port or free_port()
        self.plain_port = plain_port or free_port()
        self.require_client_cert = require_client_cert
        self.workdir = tempfile.mkdtemp(prefix="cloudtwin-mosq-")
        # the twin's own account: a random name (and, for Huawei, password) nobody else knows
        self.user = "cloudtwin-" + secrets.token_hex(6)
        self.secret = secrets.token_hex(16)
        self.proc = None
        self.client = None
        self.hour = None
        self.loop = None
        self._running = None
        self._pending = []  # [(ip, port, tls)] connections mosquitto announced, CONNACK not yet seen
        self._by_cid = {}  # client id -> Link
        self._last_link = {}  # device name -> its most recent Link (messages may trail the close line)
        self._early = {}  # device name -> [message] that arrived before mosquitto's log named the connection
        self._sub_cid = None
        self._inflight = {}  # paho mid -> done callback
        self._tasks = []
        self._startup_lines = []

    # ---- files -----------------------------------------------------------------------------------------

    def _path(self, name):
        return os.path.join(self.workdir, name)

    def _write_acl(self):
        lines = ["# generated by tools.cloudtwin: each device may use only its own topics", ""]
        for d in self.twin.devices.values():
            if self.twin.cloud == "huawei":
                base = "/huawei/v1/devices/%s/" % d.device_id
                lines += ["user %s" % d.device_id, "topic write %sdata/json" % base, "topic write %sdata/binary" % base,
                          "topic read %scommand/json" % base, "topic read %scommand/binary" % base, ""]
            else:
                lines += ["user %s&%s" % (d.device_key, d.product_key),
                          "topic readwrite /sys/%s/%s/#" % (d.product_key, d.device_key),
                          "topic readwrite /ext/session/%s/%s/#" % (d.product_key, d.device_key), ""]
        lines += ["user %s" % self.user, "topic readwrite #", ""]
        with open(self._path("acl"), "w") as f:
            f.write("\n".join(lines))

    def _write_passwd(self):
        """Huawei: every device's password for the twin's current hour, hashed by mosquitto_passwd -U."""
        self.hour = huawei_hour_of(self.twin.clock.now())
        tmp = self._path("passwd.new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            for d in self.twin.devices.values():
                f.write("%s:%s\n" % (d.device_id, huawei_password(d.secret, self.hour)))
            f.write("%s:%s\n" % (self.user, self.secret))
        r = subprocess.run([self.passwd_tool, "-U", tmp], capture_output=True, timeout=30, check=False)
        if r.returncode != 0:
            raise MosquittoError("mosquitto_passwd -U failed: %s" % r.stderr.decode(errors="replace").strip())
        os.replace(tmp, self._path("passwd"))

    def _write_conf(self):
        ka_max = (HUAWEI_KEEPALIVE if self.twin.cloud == "huawei" else ENOS_KEEPALIVE)[1]
        lines = [
            "# generated by tools.cloudtwin",
            "per_listener_settings false",
            # Huawei: passwords in the password file. EnOS: signatures mosquitto cannot check, so any password
            # passes and the ACL (by claimed username) is the only guard; clients without a username get nothing.
            "allow_anonymous %s" % ("false" if self.twin.cloud == "huawei" else "true"),
        ]
        if self.twin.cloud == "huawei":
            lines.append("password_file %s" % self._path("passwd"))
        lines += [
            "acl_file %s" % self._path("acl"),
            "log_dest stderr",
            "log_type all",
            "connection_messages true",
            "persistence false",
            "max_keepalive %d" % ka_max,
            # started as root, mosquitto would switch to user 'mosquitto', who cannot read our temp files
            "user %s" % pwd.getpwuid(os.getuid()).pw_name,
            "listener %d 127.0.0.1" % self.plain_port,
            "listener %d 127.0.0.1" % self.tls_port,
            "cafile %s" % os.path.join(self.certs, "ca.pem"),
            "certfile %s" % os.path.join(self.certs, "server.pem"),
            "keyfile %s" % os.path.join(self.certs, "server.key"),
            "require_certificate %s" % ("true" if self.require_client_cert else "false"),
            "",
        ]
        with open(self._path("mosquitto.conf"), "w") as f:
            f.write("\n".join(lines))

    # ---- process ---------------------------------------------------------------------------------------

    async def start(self):
        self.loop = asyncio.get_running_loop()
        self._running = asyncio.Event()
        self._write_acl()
        if self.twin.cloud == "huawei":
            self._write_passwd()
        self._write_conf()
        # Popen returns at once (ASYNC220 does not apply); the log thread does the reading
        self.proc = subprocess.Popen([self.exe, "-c", self._path("mosquitto.conf")], stdin=subprocess.DEVNULL,  # noqa: ASYNC220
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        threading.Thread(target=self._read_log, daemon=True).start()
        try:
            await asyncio.wait_for(self._running.wait(), START_TIMEOUT_S)
        except TimeoutError:
            await self.stop()
            raise MosquittoError("mosquitto did not start within %ds:\n%s"
                                 % (START_TIMEOUT_S, "\n".join(self._startup_lines[-20:]))) from None
        if self.proc.poll() is not None:
            raise MosquittoError("mosquitto exited (%s):\n%s" % (self.proc.returncode, "\n".join(self._startup_lines)))
        await self._connect_client()
        if self.twin.cloud == "huawei":
            self._tasks.append(asyncio.ensure_future(self._rotate_hourly()))

    async def stop(self):
        for t in self._tasks:
            t.cancel()
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.proc.wait, 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _read_log(self):
        for raw in self.proc.stderr:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            self.loop.call_soon_threadsafe(self._line, text)
        self.loop.call_soon_threadsafe(self._exited)

    def _exited(self):
        if self._running is not None and not self._running.is_set():
            self._startup_lines.append("(mosquitto exited with %s)" % self.proc.poll())
            self._running.set()

    # ---- the twin's own client -------------------------------------------------------------------------

    async def _connect_client(self):
        ready = asyncio.Event()
        result = {}
        loop = self.loop

        def on_connect(client, userdata, flags, reason, props):
            result["rc"] = reason.value
            loop.call_soon_threadsafe(ready.set)

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.user, protocol=mqtt.MQTTv5)
        c.username_pw_set(self.user, self.secret)
        c.on_connect = on_connect
        c.on_message = lambda client, ud, m: loop.call_soon_threadsafe(self._message, m.topic, bytes(m.payload),
                                                                      m.qos, m.retain)
        c.on_publish = lambda client, ud, mid, reason, props: loop.call_soon_threadsafe(self._published, mid,
                                                                                        reason.value)
        c.connect("127.0.0.1", self.plain_port, 60)
        c.loop_start()
        try:
            await asyncio.wait_for(ready.wait(), START_TIMEOUT_S)
        except TimeoutError:
            raise MosquittoError("the twin's client could not connect to mosquitto") from None
        if result["rc"] != 0:
            raise MosquittoError("mosquitto refused the twin's own client: reason %d" % result["rc"])
        opts = SubscribeOptions(qos=1, noLocal=True)
        if self.twin.cloud == "huawei":
            filters = ["/huawei/v1/devices/+/data/json", "/huawei/v1/devices/+/data/binary"]
        else:
            filters = ["/sys/+/+/thing/#", "/ext/session/+/+/thing/#"]
        c.subscribe([(f, opts) for f in filters])
        self.client = c

    def _published(self, mid, reason):
        done = self._inflight.pop(mid, None)
        if done is not None:
            done(None if reason < 128 else "mosquitto refused the publish: reason %d" % reason)

    def send(self, link, topic, payload, qos, done=None):
        info = self.client.publish(topic, payload, qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            if done is not None:
                done("paho publish failed: %s" % mqtt.error_string(info.rc))
            return
        if done is not None:
            self._inflight[info.mid] = done

    def kick(self, link, reason):
        return False  # mosquitto 2.0 offers no way to drop one client without its dynamic-security plugin

    # ---- Huawei hourly password ------------------------------------------------------------------------

    async def _rotate_hourly(self):
        while True:
            await asyncio.sleep(0.5)
            self.clock_changed()

    def clock_changed(self):
        if self.twin.cloud != "huawei" or self.proc is None:
            return
        if huawei_hour_of(self.twin.clock.now()) == self.hour:
            return
        for links in self.twin.links.values():
            for link in links:
                link.close_reason = "mosquitto re-authenticated after the hourly password rotation"
        self._write_passwd()
        self.proc.send_signal(signal.SIGHUP)
        log.info("password file rotated to hour %s", self.hour)

    # ---- mosquitto's log -------------------------------------------------------------------------------

    def _line(self, text):
        line = _TS.sub("", text, count=1)
        log.info("mosquitto: %s", line)
        if not self._running.is_set():
            self._startup_lines.append(line)
            if line.startswith("mosquitto version") and line.endswith("running"):
                self._running.set()
            return
        m = _NEW_CONN.match(line)
        if m:
            self._pending.append((m.group(1), int(m.group(2)), int(m.group(3)) == self.tls_port))
            return
        m = _CONNECTED.match(line)
        if m:
            self._connected(m)
            return
        m = _CONNACK.match(line)
        if m:
            self._connack(m.group(1), int(m.group(3)))
            return
        m = _SUBSCRIBE.match(line)
        if m:
            self._sub_cid = m.group(1)
            return
        m = _SUB_ITEM.match(line)
        if m:
            self._subscribe_item(m.group(1), int(m.group(2)))
            return
        m = _PUBLISH.match(line)
        if m:
            self._publish_line(m)
            return
        m = _CLOSED.match(line) or _SOCKET_ERR.match(line)
        if m:
            self._closed(m.group(1), m.group(2) if m.re is _CLOSED else "socket error")

    def _take_pending(self, ip, port=None):
        for i, (pip, pport, tls) in enumerate(self._pending):
            if pip == ip and (port is None or pport == port):
                del self._pending[i]
                return tls
        return None

    def _connected(self, m):
        ip, port, cid, clean, keepalive, username = m.groups()
        if cid == self.user:
            self._take_pending(ip, int(port))
            return
        tls = self._take_pending(ip, int(port))
        info = ConnectInfo(cid, username, None, int(keepalive), clean_session=clean == "1", tls=bool(tls),
                           peer="%s:%s" % (ip, port))
        _, link = self.twin.attempt(info, broker_code=0)
        if link is None:
            # mosquitto accepted a client the twin cannot place (no device of that username): nothing to track
            return
        link.handle = cid
        self._by_cid[cid] = link
        self._last_link[link.device.name] = link
        self.twin.link_ready(link)
        for args in self._early.pop(link.device.name, []):
            self._message(*args)

    def _connack(self, to, code):
        if code == 0:
            return
        # a refusal before mosquitto knew the client's name: "to" is the peer address
        tls = self._take_pending(to)
        if tls is None and self._pending:
            tls = self._pending.pop(0)[2]
        info = ConnectInfo(None if _looks_like_ip(to) else to, None, None, None, tls=bool(tls))
        self.twin.attempt(info, broker_code=code)

    def _subscribe_item(self, flt, qos):
        link = self._by_cid.get(self._sub_cid)
        if link is None or link.closed:
            return
        # mosquitto 2.0 grants it either way; its ACL only stops delivery on a forbidden filter
        if self.twin.check_subscribe(link, flt, enforced=False):
            self.twin.subscribed(link, flt, qos)

    def _publish_line(self, m):
        verdict, cid, _dup, qos, retain, topic = m.groups()
        link = self._by_cid.get(cid)
        if link is None:
            return
        if verdict == "Denied":
            if self.twin.may_publish(link, topic):
                self.twin.violation("protocol", link, what="mosquitto denied a publish the twin allows", topic=topic)
            else:
                self.twin.check_publish(link, topic)
            return
        self.twin.protocol_check(link, topic, int(qos), retain == "1")

    def _closed(self, cid, how):
        link = self._by_cid.pop(cid, None)
        if link is not None:
            self.twin.link_closed(link, _CLOSE_REASONS.get(how, "mosquitto: " + how.rstrip(".")))

    # ---- upstream --------------------------------------------------------------------------------------

    def _device_of(self, topic):
        parts = topic.split("/")
        if self.twin.cloud == "huawei":
            return self.twin.devices.get(parts[4]) if len(parts) > 5 else None
        if topic.startswith("/sys/") and len(parts) > 4:
            d = self.twin.devices.get(parts[3])
            return d if d is not None and d.product_key == parts[2] else None
        if topic.startswith("/ext/session/") and len(parts) > 5:
            d = self.twin.devices.get(parts[4])
            return d if d is not None and d.product_key == parts[3] else None
        return None

    def _message(self, topic, payload, qos, retain):
        device = self._device_of(topic)
        if device is None:
            log.warning("message on %s from no known device", topic)
            return
        link = self.twin.current_link(device.name) or self._last_link.get(device.name)
        if link is None:
            # the PUBLISH overtook mosquitto's log line about the connection: hold it until that line arrives
            early = self._early.setdefault(device.name, [])
            early.append((topic, payload, qos, retain))
            if len(early) == 1:
                self.loop.call_later(2.0, self._flush_early, device)
            return
        self.twin.message(link, topic, payload, qos, retain, False)

    def _flush_early(self, device):
        early = self._early.pop(device.name, [])
        if not early:
            return
        # still no connection line after 2 s: count the data against a placeholder so nothing is lost
        entry = {"device": device.name, "note": "placeholder: messages seen before any connection line"}
        ghost = Link(self.twin, 0, device, ConnectInfo("", None, None, 0), entry)
        ghost.closed = True
        self._last_link[device.name] = ghost
        for args in early:
            self.twin.message(ghost, *args[:4], False)


def _looks_like_ip(text):
    return re.match(r"^[0-9.:a-fA-F]+$", text) is not None and ("." in text or ":" in text)
