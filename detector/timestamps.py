"""Kusto-precision datetimes.

Kusto's ``datetime`` counts 100-nanosecond ticks. Python's ``datetime`` stops at microseconds, which
would make a Run Command 1 tick after the +6h edge of a UEBA window look like it sits exactly on the
edge. So every time in the core is an ``int`` of ticks since 1970-01-01T00:00:00Z (UTC), parsed and
printed here, and compared exactly.

Digits are ASCII ``0-9`` only, in times and in the whole numbers beside them (hours, ticks, priorities).
Python's ``int()`` and ``re``'s ``\\d`` also take the digits of other scripts (Arabic-Indic, Devanagari,
fullwidth, mathematical bold...); Kusto reads none of them as a datetime, so the detector does not either.
The patterns below say ``[0-9]``, never ``\\d``.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

Ticks = int
"""100-nanosecond ticks since the Unix epoch, UTC."""

TICKS_PER_SECOND = 10_000_000
TICKS_PER_MINUTE = 60 * TICKS_PER_SECOND
TICKS_PER_HOUR = 60 * TICKS_PER_MINUTE
TICKS_PER_DAY = 24 * TICKS_PER_HOUR

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?)?"
    r"\s*(Z|z|UTC|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)
# The Azure portal's CSV export writes times in the browser's locale: en-US "4/28/2021, 2:32:14.029 PM",
# en-GB "28/04/2021, 14:32:14.029", en-AU "28/04/2021, 2:32:14.029 pm", de-DE "28.04.2021, 14:32:14.029".
# Groups: first number, separator, second number, year, hour, minute, second, fraction, am/pm.
PORTAL = re.compile(
    r"([0-9]{1,2})([/.])([0-9]{1,2})\2([0-9]{4}),?\s+([0-9]{1,2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]{1,7}))?)?"
    r"\s*(?:([AaPp])\.?[Mm]\.?)?"
)
DATE_ORDERS = ("mdy", "dmy")

# Kusto's datetime range: 0001-01-01 to 9999-12-31 (UTC). A time outside it is refused when parsed, so
# every tick count in the detector can be printed and turned into a Python datetime.
MIN_TICKS = (date(1, 1, 1).toordinal() - date(1970, 1, 1).toordinal()) * 86_400 * 10_000_000
MAX_TICKS = (date(9999, 12, 31).toordinal() + 1 - date(1970, 1, 1).toordinal()) * 86_400 * 10_000_000 - 1


_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


def parse_whole_number(text: str) -> int:
    """A whole number in ASCII digits, with an optional sign and surrounding whitespace.

    ``ValueError`` for anything else, including what ``int()`` would take besides: other scripts' digits
    and underscores (``"4_8"``).
    """
    stripped = text.strip()
    if not _WHOLE_NUMBER.fullmatch(stripped):
        raise ValueError(f"not a whole number: {text[:20]!r}")
    return int(stripped)


def _fraction_ticks(digits: str | None) -> int:
    # Kusto keeps 7 fractional digits; anything finer is truncated, as Kusto does on ingestion.
    if not digits:
        return 0
    return int((digits + "0000000")[:7])


def _compose(year: int, month: int, day: int, hour: int, minute: int, second: int, frac: int) -> Ticks:
    days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    if not (0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 59):
        raise ValueError("time of day out of range")
    return ((days * 86_400 + hour * 3600 + minute * 60 + second) * TICKS_PER_SECOND) + frac


def _in_range(ticks: Ticks) -> Ticks:
    if not MIN_TICKS <= ticks <= MAX_TICKS:
        raise ValueError("outside the datetime range 0001-01-01 .. 9999-12-31 (UTC)")
    return ticks


def parse_datetime(text: str) -> Ticks:
    """Parse ISO 8601 (any offset; no offset means UTC).

    Raises ``ValueError`` with a short reason on anything else, including a time outside Kusto's
    range (year 1 to 9999, UTC). Portal CSV times need their file's day/month order: see
    :func:`parse_portal_datetime`.
    """
    s = text.strip()
    m = _ISO.fullmatch(s)
    if m:
        y, mo, d, h, mi, sec, frac, zone = m.groups()
        ticks = _compose(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(sec or 0),
                         _fraction_ticks(frac))
        if zone and zone not in ("Z", "z", "UTC"):
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            offset_hours, offset_minutes = int(digits[:2]), (int(digits[2:4]) if len(digits) > 2 else 0)
            if offset_hours > 23 or offset_minutes > 59:  # +99:99 would shift the time by 4 days, silently
                raise ValueError(f"UTC offset out of range: {zone!r}")
            offset_min = offset_hours * 60 + offset_minutes
            ticks -= sign * offset_min * TICKS_PER_MINUTE
        return _in_range(ticks)
    raise ValueError(f"not a datetime: {text[:60]!r}")


def portal_date_evidence(text: str) -> str | None:
    """What one portal time says about its file's day/month order.

    ``"dmy"`` or ``"mdy"`` when the value settles it (a number above 12, or a dotted date, which no
    locale writes month first), ``"ambiguous"`` when both orders give valid but different dates,
    ``None`` when the order does not matter or the text is not a portal time.
    """
    m = PORTAL.fullmatch(text.strip())
    if m is None:
        return None
    first, separator, second = int(m.group(1)), m.group(2), int(m.group(3))
    if separator == ".":
        return "dmy"
    if first > 12 >= second:
        return "dmy"
    if second > 12 >= first:
        return "mdy"
    return "ambiguous" if first != second and first <= 12 and second <= 12 else None


def parse_portal_datetime(text: str, order: str) -> Ticks:
    """Parse a portal CSV time with the file's day/month ``order`` (``"mdy"`` or ``"dmy"``).

    Reads 12-hour clocks (``am``/``PM``, hour 1-12) and 24-hour clocks (no suffix, hour 0-23). A
    dotted date (``28.04.2021``) is always day first.
    """
    m = PORTAL.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a portal datetime: {text[:60]!r}")
    first, separator, second, y, h, mi, sec, frac, meridiem = m.groups()
    month, day = (first, second) if order == "mdy" and separator == "/" else (second, first)
    hour = int(h)
    if meridiem:
        if not 1 <= hour <= 12:
            raise ValueError(f"hour {hour} is not on a 12-hour clock")
        hour = hour % 12 + (12 if meridiem.lower() == "p" else 0)
    return _in_range(_compose(int(y), int(month), int(day), hour, int(mi), int(sec or 0), _fraction_ticks(frac)))


def format_datetime(ticks: Ticks) -> str:
    """ISO 8601 UTC with a ``Z``; the fraction keeps its significant digits (up to 7)."""
    seconds, frac = divmod(ticks, TICKS_PER_SECOND)
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    text = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    if frac:
        text += "." + f"{frac:07d}".rstrip("0")
    return text + "Z"


def from_datetime(value: datetime) -> Ticks:
    """Convert an aware (or naive = UTC) ``datetime``; exact to the microsecond."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * TICKS_PER_SECOND + delta.microseconds * 10


def to_datetime(ticks: Ticks) -> datetime:
    """An aware UTC ``datetime`` (sub-microsecond ticks are dropped)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ticks // 10)
