# The telemetry pipeline: the sampler reads the sensors every interval and stores the cloud-ready message in
# the durable outbox before anything is sent; the publisher sends the outbox oldest first while the device is
# online, and a sample leaves the outbox only once the broker acknowledged it.
import asyncio

from cellmqtt.cloudsign import CloudError
from cellmqtt.compat import sleep_ms
from cellmqtt.modem import ModemError
from cellmqtt.settings import ConfigError
from cellmqtt.transport import MqttError, PayloadError

from app.outbox import Outbox
from app.readers import READERS


class Telemetry:
    def __init__(self, app):
        self.app = app
        cfg = app.cfg
        ob = cfg["outbox"]
        self.outbox = Outbox(ob["dir"], ob["max_bytes"], ob["max_records"])
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
        self.last_sample = {}
        self.last_signal = {}
        self.bench = None  # `make bench`: called at every telemetry cycle
        self._task = None  # the sampler's task (set by App.run): set_interval() wakes it
        self._resample = False
        self._wake_pub = asyncio.Event()

    def set_interval(self, s):
        self.interval = s
        if self._task is not None and not self._resample:
            self._resample = True
            self._task.cancel()

    def wake(self):
        """The link is up again (or a sample is waiting): let the publisher look at the outbox."""
        self._wake_pub.set()

    async def sampler(self):
        """Every interval: read the sensors and store the sample in the outbox before anything is sent. The first
        sample waits (up to one interval) for a clock the device can trust."""
        clock = self.app.supervisor.clock_known
        if not clock.is_set():
            try:
                await asyncio.wait_for(clock.wait(), self.interval)  # once per boot: its cost does not matter
            except asyncio.TimeoutError:
                pass
            except asyncio.CancelledError:
                if not self._resample:
                    raise
                self._resample = False  # set_interval meanwhile: sample now
        while True:
            if self.bench is not None:
                self.bench()
            await self.sample()
            try:
                await sleep_ms(self.interval * 1000)  # no allocation (asyncio.wait_for costs ~2 KB a call)
            except asyncio.CancelledError:
                if not self._resample:
                    raise
                self._resample = False  # set_interval: sample now and go on with the new interval

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
        sid = self.outbox.next_sid()
        m = app.modem
        # only a time the device can trust (network time / NTP) is sent; without it the time is left out and
        # the cloud stamps the sample on arrival (docs/clouds.md "Time")
        t = m.now() if m.time_trusted else None
        try:
            _, payload = app.profile.telemetry(data, t, sid)
        except CloudError as e:
            app.log.error("sample refused by the cloud profile: %s", e)
            return None
        self.outbox.append(payload)
        self._wake_pub.set()
        return sid

    async def publisher(self):
        """Send the outbox oldest first; a sample leaves the outbox only once the broker acknowledged it."""
        app = self.app
        online = app.supervisor.online
        while True:
            await online.wait()
            head = self.outbox.peek(1)
            if not head:
                self._wake_pub.clear()
                await self._wake_pub.wait()
                continue
            sid, payload = head[0]
            try:
                async with app.modem.awake():
                    await app.transport.publish(app.profile.telemetry_topic(), payload, self.qos)
            except PayloadError as e:
                app.log.error("sample %d refused by the transport (%s): dropped", sid, e)
            except (MqttError, ModemError) as e:
                app.log.warn("publish of sample %d failed: %s", sid, e)
                online.clear()  # the supervisor sees the lost link and reconnects
                await asyncio.sleep(1)
                continue
            else:
                self.published += 1
            self.outbox.ack(sid)
