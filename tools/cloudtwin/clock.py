"""The twin's clock: host UTC time or a fixed instant, both movable from the control socket.

Huawei sigType 1 checks the client id's hour against this clock and the EnOS connect rate limit counts its
2-minute window and 5-minute block on it, so tests pin it (``fixed:2023-11-14T22:13:20Z``) or jump it forward
(``advance``) instead of sleeping for minutes.
"""

import datetime
import time

UTC = datetime.UTC


class ClockSpecError(ValueError):
    pass


def parse_iso(text):
    """'2023-11-14T22:13:20Z' (or +00:00, or no zone = UTC) -> aware UTC datetime."""
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    try:
        dt = datetime.datetime.fromisoformat(t)
    except ValueError as e:
        raise ClockSpecError("not an ISO 8601 time: %r (%s)" % (text, e)) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def iso(dt):
    """aware datetime -> '2023-11-14T22:13:20.123Z' (milliseconds, UTC)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)


class TwinClock:
    """``host``: the host's UTC time plus an offset. ``fixed``: a frozen instant plus an offset."""

    def __init__(self, spec="host"):
        self.offset = datetime.timedelta(0)
        if spec == "host":
            self.fixed = None
        elif spec.startswith("fixed:"):
            self.fixed = parse_iso(spec[len("fixed:"):])
        else:
            raise ClockSpecError("clock must be 'host' or 'fixed:ISO8601', not %r" % spec)
        self.spec = spec

    def now(self):
        base = self.fixed if self.fixed is not None else datetime.datetime.now(UTC)
        return base + self.offset

    def timestamp(self):
        return self.now().timestamp()

    def advance(self, seconds):
        self.offset += datetime.timedelta(seconds=float(seconds))

    def set(self, text):
        """Make now() return this instant (it keeps ticking in host mode)."""
        target = parse_iso(text)
        base = self.fixed if self.fixed is not None else datetime.datetime.now(UTC)
        self.offset = target - base

    def host_time(self):
        """Wall time for log lines that must line up with other processes' logs."""
        return time.time()
