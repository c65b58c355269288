import pytest

from detector.timestamps import (
    TICKS_PER_HOUR,
    TICKS_PER_SECOND,
    format_datetime,
    from_datetime,
    parse_datetime,
    parse_portal_datetime,
    portal_date_evidence,
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
])
def test_parse(text: str, delta_ticks: int) -> None:
    assert parse_datetime(text) == BASE + delta_ticks


@pytest.mark.parametrize(("text", "order", "delta_ticks"), [
    ("4/28/2021, 2:32:14.029 PM", "mdy", 290_000),  # en-US
    ("4/28/2021, 2:32:14 PM", "mdy", 0),
    ("28/04/2021, 14:32:14.029", "dmy", 290_000),  # en-GB: 24-hour clock
    ("28/04/2021, 2:32:14.029 pm", "dmy", 290_000),  # en-AU: lower-case pm
    ("28.04.2021, 14:32:14,029", "dmy", 290_000),  # de-DE: dots, comma fraction
    ("28.04.2021, 14:32:14", "mdy", 0),  # a dotted date is day-first whatever the order says
])
def test_parse_portal_locales(text: str, order: str, delta_ticks: int) -> None:
    assert parse_portal_datetime(text, order) == BASE + delta_ticks


def test_portal_midnight_and_noon() -> None:
    assert parse_portal_datetime("1/1/2026, 12:00:00.000 AM", "mdy") == parse_datetime("2026-01-01T00:00:00Z")
    assert parse_portal_datetime("1/1/2026, 12:00:00.000 PM", "mdy") == parse_datetime("2026-01-01T12:00:00Z")
    assert parse_portal_datetime("1/1/2026, 00:00:00.000", "dmy") == parse_datetime("2026-01-01T00:00:00Z")


def test_en_au_time_is_11_august_not_8_november() -> None:
    # The example: read month-first it was silently 8 November.
    assert portal_date_evidence("11/08/2023, 6:36:04.536 am") == "ambiguous"
    assert parse_portal_datetime("11/08/2023, 6:36:04.536 am", "dmy") == parse_datetime("2023-08-11T06:36:04.536Z")


@pytest.mark.parametrize(("text", "evidence"), [
    ("28/04/2021, 14:32:14.029", "dmy"), ("4/28/2021, 2:32:14 PM", "mdy"), ("11/08/2023, 6:36 am", "ambiguous"),
    ("5/5/2021, 1:00 PM", None), ("01.02.2021, 10:00", "dmy"), ("2021-04-28T14:32:14Z", None),
])
def test_portal_date_evidence(text: str, evidence: str | None) -> None:
    assert portal_date_evidence(text) == evidence


@pytest.mark.parametrize("text", ["", "yesterday", "2021-13-01T00:00:00Z", "2021-02-30T00:00:00Z",
                                  "2021-04-28T25:00:00Z", "4/28/2021, 2:32:14 PM",  # portal text is not ISO
                                  "0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-02:00", "0000-01-01T00:00:00Z"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        parse_datetime(text)


@pytest.mark.parametrize(("text", "order"), [("13/28/2021, 2:32:14 PM", "mdy"), ("4/28/2021, 13:32:14 PM", "mdy"),
                                             ("4/28/2021, 2:32:14 PM", "dmy"), ("28/04/2021, 24:00:00", "dmy")])
def test_parse_portal_rejects(text: str, order: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        parse_portal_datetime(text, order)


def test_kusto_range_edges_print() -> None:
    for text in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.9999999Z"):
        assert format_datetime(parse_datetime(text)) == text


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
