# Civil time <-> Unix seconds, independent of the port's epoch and of time.gmtime, and the modems' clock
# formats. Used by the drivers (module clock) and the cloud profiles (UTC hour, event times).
from cellmqtt.compat import const

_DAY = const(86400)
TRUSTED_AFTER = const(1735689600)  # 2025-01-01: a module clock before this was never set from the network


def days_in_month(year, month):
    if month == 2:
        return 29 if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 else 28
    return 30 if month in (4, 6, 9, 11) else 31


def civil(unix_s):
    """(year, month, day, hour, minute, second) in UTC for Unix seconds >= 0 (proleptic Gregorian).

    Days to date by era arithmetic (H. Hinnant's civil_from_days): 400-year eras of 146097 days, years
    starting on 1 March so the leap day is the last day of the year."""
    days = unix_s // _DAY
    secs = unix_s - days * _DAY
    z = days + 719468  # days from 0000-03-01 to 1970-01-01
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return year, month, day, secs // 3600, secs // 60 % 60, secs % 60


def unix_from_civil(year, month, day, hour=0, minute=0, second=0):
    """Unix seconds of a UTC civil time (the inverse of civil()); ValueError for an impossible time."""
    if not (1970 <= year <= 9999 and 1 <= month <= 12 and 1 <= day <= days_in_month(year, month)):
        raise ValueError("date out of range or impossible")
    if not (0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 59):
        raise ValueError("time of day out of range")
    y = year - 1 if month <= 2 else year
    era = y // 400
    yoe = y - era * 400
    mp = month - 3 if month > 2 else month + 9
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return (era * 146097 + doe - 719468) * _DAY + hour * 3600 + minute * 60 + second


def parse_modem_time(s):
    """Unix seconds (UTC) of a Quectel clock string, or None when it is malformed.

    Accepts ``yy/MM/dd,hh:mm:ss±zz`` (+CCLK, quoted or not) and ``yyyy/MM/dd,hh:mm:ss±zz[,dst]`` (+QNTP,
    +QLTS); ``zz`` is the local offset in quarter hours, so UTC = local - zz * 15 min."""
    s = s.strip().strip(b'"') if isinstance(s, bytes) else s.strip().strip('"').encode()
    try:
        date, _, rest = s.partition(b",")
        y, mo, d = [int(x) for x in date.split(b"/")]
        sign = 1
        i = rest.find(b"+")
        if i < 0:
            i = rest.find(b"-")
            sign = -1
        if i < 0:
            tz = 0
            hms = rest
        else:
            tz = int(rest[i + 1:].split(b",")[0]) * sign
            hms = rest[:i]
        h, mi, sec = [int(x) for x in hms.split(b":")]
        if y < 100:
            y += 2000 if y < 70 else 1900
        return unix_from_civil(y, mo, d, h, mi, sec) - tz * 900
    except ValueError:
        return None
