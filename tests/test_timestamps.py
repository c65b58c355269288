import pytest

from detector.timestamps import (
    TICKS_PER_HOUR,
    TICKS_PER_SECOND,
    format_datetime,
    from_datetime,
    parse_datetime,
    to_datetime,
)

BASE = parse_datetime("2021-04-28T14:32:14Z")


@pytest.mark.parametrize(("text", "delta_ticks"), [
    ("2021-04-28T14:32:14Z", 0),
    ("2021-04-28T14:32:14.029Z", 290_000),
    ("2021-04-28T14:32:14.0290001Z", 290_001),
    ("2021-04-28T14:32:14.02900019Z", 290_001),  # beyond 7 digits: truncated
    ("2021-04-28 14:32:14", 0),  # no zone: UTC
    ("2021-04-28T16:32:14+02:00", 0),
    ("2021-04-28T09:32:14-0500", 0),
    ("4/28/2021, 2:32:14.029 PM", 290_000),
    ("4/28/2021, 2:32:14 PM", 0),
])
def test_parse(text: str, delta_ticks: int) -> None:
    assert parse_datetime(text) == BASE + delta_ticks


def test_portal_midnight_and_noon() -> None:
    assert parse_datetime("1/1/2026, 12:00:00.000 AM") == parse_datetime("2026-01-01T00:00:00Z")
    assert parse_datetime("1/1/2026, 12:00:00.000 PM") == parse_datetime("2026-01-01T12:00:00Z")


@pytest.mark.parametrize("text", ["", "yesterday", "2021-13-01T00:00:00Z", "2021-02-30T00:00:00Z",
                                  "2021-04-28T25:00:00Z", "13/28/2021, 2:32:14 PM", "4/28/2021, 13:32:14 PM"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        parse_datetime(text)


def test_format_keeps_ticks() -> None:
    assert format_datetime(BASE) == "2021-04-28T14:32:14Z"
    assert format_datetime(BASE + 1) == "2021-04-28T14:32:14.0000001Z"
    assert format_datetime(BASE + 290_000) == "2021-04-28T14:32:14.029Z"
    assert parse_datetime(format_datetime(BASE + 1234567)) == BASE + 1234567


def test_datetime_round_trip() -> None:
    dt = to_datetime(BASE + 6 * TICKS_PER_HOUR + 3 * TICKS_PER_SECOND)
    assert from_datetime(dt) == BASE + 6 * TICKS_PER_HOUR + 3 * TICKS_PER_SECOND
    assert dt.tzinfo is not None


def test_before_epoch() -> None:
    assert format_datetime(parse_datetime("1969-12-31T23:59:59.5Z")) == "1969-12-31T23:59:59.5Z"
