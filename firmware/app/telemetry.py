# The telemetry pipeline: the sampler reads the sensors every interval and stores the cloud-ready message in
# the durable outbox before anything is sent; the publisher sends the outbox oldest first while the device is
# online, and a sample leaves the outbox only once the broker acknowledged it.
#
# When the flash refuses a sample (full, read-only, an outbox that cannot be opened) the sample waits in RAM
# (at most _HELD, oldest dropped and counted) and is written as soon as the flash takes it again; the
# publisher sends the RAM samples after the stored ones, so the order holds. Sample ids come from here: they
# continue from the outbox's highest id while the outbox remembers one; an outbox that remembers none (new,
# emptied, erased: maybe lost) continues from a high-water mark kept in <state_dir>/sid instead (reserved
# _RESERVE ids at a time: one small write per _RESERVE samples), so a lost outbox never restarts the ids at 1
# (the clouds drop a repeated id as a duplicate); the cost is a gap of at most _RESERVE ids after such a loss.
import asyncio
import os

from cellmqtt.cloudsign import CloudError
from cellmqtt.compat import const, sleep_ms
from cellmqtt.modem import ModemError
from cellmqtt.settings import ConfigError
from cellmqtt.transport import MqttError, PayloadError

from app.outbox import Outbox
from app.readers import READERS

_HELD = const(16)  # samples kept in RAM while the flash refuses them
_RESERVE = const(64)  # sample ids reserved per write of the high-water mark


class _NoOutbox:
    # Stands in for an outbox whose folder cannot be used: every sample waits in RAM (Telemetry._held).
    dropped = 0

    def __init__(self, err):
        self.error = err

    def append(self, payload, sid=None):
        raise OSError(5, "outbox unavailable")  # EIO

    def peek(self, n=1):
        return []

    def ack(self, sid):
        return False

    def next_sid(self):
        return 1

    def __len__(self):
        return 0

    def stats(self):
        return {"error": self.error}


def _read_mark(path):
    # the high-water mark (an int as text), None if missing; ValueError if unreadable (erased, damaged)
    try:
        f = open(path, "rb")  # noqa: SIM115 -- (no context manager: a port's file object may lack one)
    except OSError:
        return None
    try:
        b = f.read(24)
    finally:
        f.close()
    if not b or not all(48 <= c <= 57 for c in b.strip()) or not b.strip():
        raise ValueError("not a number")
    return int(b)


class Telemetry:
    def __init__(self, app):
        self.app = app
        cfg = app.cfg
        ob = cfg["outbox"]
        log = app.log
        try:
            self.outbox = Outbox(ob["dir"], ob["max_bytes"], ob["max_records"])
            if self.outbox.foreign:
                log.warn("outbox: %s moved aside (kept; not this firmware's log)", self.outbox.foreign)
        except (OSError, ValueError) as e:  # a folder that cannot be written: samples wait in RAM, reported
            self.outbox = _NoOutbox("%s: %s" % (ob["dir"], e))
            log.error("outbox %s unusable (%s): samples kept in RAM only", ob["dir"], e)
        self.readers = []  # [(fn, uses the modem)]
        extra = app.board.readers()
        for name in cfg["telemetry"]["readings"]:
            r = READERS.get(name) or ((extra[name], False) if name in extra else None)
            if r is None:
                raise ConfigError("telemetry.readings", "unknown reading %s" % name)
            self.readers.append(r)
        self.interval = cfg["telemetry"]["interval_s"]
        self.qos = cfg["mqtt"]["qos"]
        self.samples = self.published = 0
        self.rejected = 0  # samples the cloud refused after taking them (EnOS post_reply with an error code)
        self.store_errors = self.held_dropped = self.mark_errors = 0
        self.last_sample = {}
        self.last_signal = {}
        self.bench = None  # `make bench`: called at every telemetry cycle
        self.task = None  # the sampler's app.tasks record (set by App.run): set_interval() wakes it
        self._sleeping = False  # the sampler waits for its next interval (the only place it may be cancelled)
        self._resample = False
        self._wake_pub = asyncio.Event()
        self._held = []  # [(sid, payload)] the flash refused, oldest first
        # sample ids: above everything the outbox and the high-water mark have seen
        self._mark_path = cfg["state_dir"] + "/sid"
        try:
            mark = _read_mark(self._mark_path) or 0
        except (OSError, ValueError) as e:
            log.warn("%s unreadable (%s): ids continue from the outbox", self._mark_path, e)
            mark = 0
        # an outbox that remembers ids is exact; one that remembers none (new, emptied, erased) was maybe lost:
        # the mark (a reserved block's end) then keeps the ids above every one sent before
        self._sid = self.outbox.next_sid() if getattr(self.outbox, "top", 0) else max(1, mark)
        self._reserved = 0  # ids up to here are covered by the mark on flash

    def set_interval(self, s):
        """A new interval: the sampler samples now and goes on with it. It is woken only while it sleeps between
        samples (cancelling it inside a sample would cut a modem exchange); during a sample, the new interval
        simply applies to the next sleep."""
        self.interval = s
        t = self.task
        if t is not None and t.task is not None and self._sleeping and not self._resample:
            self._resample = True
            t.task.cancel()

    def wake(self):
        """The link is up again (or a sample is waiting): let the publisher look at the outbox."""
        self._wake_pub.set()

    def waiting(self):
        """Samples not delivered yet (outbox and RAM)."""
        return len(self.outbox) + len(self._held)

    def dropped(self):
        """Samples dropped by a bound (the outbox's, the RAM queue's) since start."""
        return self.outbox.dropped + self.held_dropped

    def stored_status(self):
        """Where samples wait: the outbox's folder problem or the number waiting in RAM (None: all well)."""
        err = getattr(self.outbox, "error", None)
        if err is None and not self._held and not self.store_errors:
            return None
        return {"ram": len(self._held), "store_errors": self.store_errors, "ram_dropped": self.held_dropped,
                "outbox_error": err}

    async def _pause(self, fn, *args):
        # Wait (idle, cancellable by set_interval) for fn(*args); a set_interval meanwhile ends the wait early.
        self._sleeping = True
        self.task.idle()
        try:
            await fn(*args)
        except asyncio.CancelledError:
            if not self._resample:
                raise
            self._resample = False
        finally:
            self._sleeping = False
            self.task.busy()

    async def sampler(self, task):
        """Every interval: read the sensors and store the sample in the outbox before anything is sent. The first
        sample waits (up to one interval) for a clock the device can trust."""
        self.task = task
        clock = self.app.supervisor.clock_known
        if not clock.is_set():
            try:
                await self._pause(asyncio.wait_for, clock.wait(), self.interval)  # once per boot
            except asyncio.TimeoutError:
                pass
        while True:
            if self.bench is not None:
                self.bench()
            await self.sample()
            task.beat()
            await self._pause(sleep_ms, self.interval * 1000)  # no allocation (asyncio.wait_for costs ~2 KB a call)

    def _next_sid(self):
        sid = self._sid
        if sid >= self._reserved:
            r = sid + _RESERVE
            try:
                tmp = self._mark_path + ".tmp"
                f = open(tmp, "wb")  # noqa: SIM115
                try:
                    f.write(b"%d" % r)
                finally:
                    f.close()
                os.rename(tmp, self._mark_path)
                self._reserved = r
            except OSError as e:  # ids stay unique this boot; only their survival of a lost outbox suffers
                self.mark_errors += 1
                if self.mark_errors == 1:
                    self.app.log.warn("%s not written: %s", self._mark_path, e)
                self._reserved = sid + 1  # try again with the next sample
        self._sid = sid + 1
        return sid

    async def sample(self):
        app = self.app
        online = app.supervisor.online
        data = {}
        for fn, uses_modem in self.readers:
            try:
                if uses_modem:  # the modem: only while online, and awake
                    if online.is_set():
                        async with app.modem.awake():
                            data.update(await fn(app))
                else:
                    r = fn(app)
                    data.update(await r if hasattr(r, "send") else r)
            except (MqttError, ModemError, OSError) as e:
                app.log.warn("reading failed: %s", e)
        if not data:
            return None
        self.last_sample = data
        self.samples += 1
        # the cloud-ready message goes into the outbox: nothing to rebuild when it is sent (or sent again)
        m = app.modem
        # only a time the device can trust (network time / NTP) is sent; without it the time is left out and
        # the cloud stamps the sample on arrival (docs/clouds.md "Time")
        t = m.now() if m.time_trusted else None
        sid = self._sid
        try:
            _, payload = app.profile.telemetry(data, t, sid)
        except CloudError as e:
            app.log.error("sample refused by the cloud profile: %s", e)
            return None
        self._next_sid()
        self._store(sid, payload)
        self._wake_pub.set()
        return sid

    def _store(self, sid, payload):
        # into the outbox, after any samples still waiting in RAM; what the flash refuses waits in RAM
        held = self._held
        held.append((sid, payload))
        ob = self.outbox
        while held:
            try:
                ob.append(held[0][1], held[0][0])
            except OSError as e:
                self.store_errors += 1
                if self.store_errors == 1 or not self.store_errors % 16:
                    self.app.log.error("sample %d not stored (%s): kept in RAM (%d waiting)", held[-1][0], e,
                                       len(held))
                break
            held.pop(0)
        if len(held) > _HELD:
            held.pop(0)
            self.held_dropped += 1

    async def publisher(self, task):
        """Send the outbox oldest first (then the samples waiting in RAM); a sample leaves the outbox only once
        the broker acknowledged it. A publish that fails is a lost link: the supervisor recovers it."""
        app = self.app
        online = app.supervisor.online
        while True:
            task.idle()
            await online.wait()
            head = self.outbox.peek(1)
            ram = not head and self._held
            if ram:
                head = self._held[:1]
            if not head:
                self._wake_pub.clear()
                await self._wake_pub.wait()
                continue
            task.busy()
            sid, payload = head[0]
            try:
                async with app.modem.awake():
                    await app.transport.publish(app.profile.telemetry_topic(), payload, self.qos)
            except PayloadError as e:
                app.log.error("sample %d refused by the transport (%s): dropped", sid, e)
            except (MqttError, ModemError) as e:
                app.log.warn("publish of sample %d failed: %s", sid, e)
                online.clear()
                app.supervisor.trouble(e)  # no answer to a publish: the session is suspect, reconnect
                continue
            else:
                self.published += 1
                task.beat()
            if ram:
                if self._held and self._held[0][0] == sid:
                    self._held.pop(0)
            else:
                self.outbox.ack(sid)
