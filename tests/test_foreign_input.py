"""Foreign and hostile values (review gaps): digits of other scripts in times and numbers, old time zone
aliases, BehaviorAnalytics rows met twice, and JSON objects that name a key twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from detector.allowlist import Allowlist, AllowlistEntry, InvalidEntry
from detector.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE
from detector.errors import ConfigError, StoreError
from detector.settings import Settings
from detector.sources.records import ueba_event
from detector.store import StateStore, StoredAlert
from detector.store.files import FileStore
from detector.store.tables import STATE_KEY, TableStore, encode_key
from detector.timestamps import parse_datetime, parse_portal_datetime, portal_date_evidence
from tests.builders import AT
from tests.test_hostile_input import UEBA_ROW, activity_rows, call, jsonl, run_json, write_exports
from tests.test_store import stored_alert

# Python's int(), float() and re's \d read these as digits; Kusto, Azure and .NET's invariant parsing do not.
FOREIGN_DIGITS = {script: "".join(chr(zero + i) for i in range(10)) for script, zero in (
    ("arabic-indic", 0x0660), ("extended-arabic-indic", 0x06F0), ("devanagari", 0x0966), ("fullwidth", 0xFF10),
    ("mathematical-bold", 0x1D7CE))}


def with_foreign_digit(text: str, digits: str) -> list[str]:
    """``text`` once per ASCII digit in it, that one digit written in ``digits``' script."""
    return [text[:i] + digits[int(ch)] + text[i + 1:] for i, ch in enumerate(text) if ch in "0123456789"]


def translated(text: str, digits: str) -> str:
    return text.translate(str.maketrans("0123456789", digits))


# --- 1. digits of other scripts are not digits in a time --------------------------------------------

ISO_TIME = "2026-11-20T06:00:00.5+01:00"
PORTAL_TIME = "4/28/2021, 2:32:14.029 PM"


@pytest.mark.parametrize("script", FOREIGN_DIGITS)
def test_an_iso_time_with_any_foreign_digit_is_not_a_time(script: str) -> None:
    parse_datetime(ISO_TIME)  # the ASCII original is a time
    for text in [*with_foreign_digit(ISO_TIME, FOREIGN_DIGITS[script]), translated(ISO_TIME, FOREIGN_DIGITS[script])]:
        with pytest.raises(ValueError, match="not a datetime"):
            parse_datetime(text)


@pytest.mark.parametrize("script", FOREIGN_DIGITS)
def test_a_portal_time_with_any_foreign_digit_is_not_a_time(script: str) -> None:
    parse_portal_datetime(PORTAL_TIME, "mdy")
    for text in with_foreign_digit(PORTAL_TIME, FOREIGN_DIGITS[script]):
        assert portal_date_evidence(text) is None
        with pytest.raises(ValueError, match="not a portal datetime"):
            parse_portal_datetime(text, "mdy")


def test_a_row_whose_time_has_foreign_digits_is_a_reported_malformed_row(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = activity_rows()
    rows[1]["TimeGenerated"] = translated(rows[1]["TimeGenerated"], FOREIGN_DIGITS["arabic-indic"])
    ueba_rows = [UEBA_ROW, {**UEBA_ROW, "TimeGenerated": translated(UEBA_ROW["TimeGenerated"],
                                                                      FOREIGN_DIGITS["fullwidth"])}]
    directory = write_exports(tmp_path, jsonl(rows), jsonl(ueba_rows))  # type: ignore[arg-type]
    code, payload, err = run_json(directory)
    assert code == EXIT_OK
    assert payload["summary"]["malformed_rows"] == 2  # type: ignore[index]
    assert "AzureActivity.jsonl, line 2: TimeGenerated: not a datetime" in err
    assert "BehaviorAnalytics.jsonl, line 2: TimeGenerated: not a datetime" in err


def test_a_portal_csv_time_with_foreign_digits_is_a_malformed_row(tmp_path: Path) -> None:
    header = "$table,TimeGenerated [UTC],OperationNameValue,Authorization,CorrelationId,Caller,CallerIpAddress," \
             "ActivityStatusValue\n"
    auth = '"{""scope"":""/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1""}"'
    lines = [f'AzureActivity,"{t}",MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION,{auth},c-1,alice@contoso.com,'
             f'20.1.2.3,{s}\n' for t, s in (("11/19/2026, 6:00:00.000 AM", "Started"),
                                            (translated("11/19/2026, 6:00:30.000 AM", FOREIGN_DIGITS["fullwidth"]),
                                             "Succeeded"))]
    directory = write_exports(tmp_path, header + "".join(lines), activity_name="AzureActivity.csv")
    code, payload, err = run_json(directory)
    assert code == EXIT_OK
    assert payload["summary"]["malformed_rows"] == 1  # type: ignore[index]
    assert "AzureActivity.csv, line 3: TimeGenerated: not a datetime" in err


def test_a_powershell_date_with_foreign_digits_is_a_malformed_row(tmp_path: Path) -> None:
    events = [{"EventTimestamp": f"/Date({ms})/", "OperationName": {"Value": "Microsoft.Compute/virtualMachines/runCommand/action"},
               "Status": {"Value": status}, "Authorization": {"Scope": "/subscriptions/s1/resourceGroups/rg/providers/"
                                                                         "Microsoft.Compute/virtualMachines/vm-1"},
               "Caller": "alice@contoso.com", "CorrelationId": "c-ps", "HttpRequest": {"ClientIpAddress": "20.1.2.3"}}
              for ms, status in (("1763532000000", "Started"),
                                 (translated("1763532007000", FOREIGN_DIGITS["arabic-indic"]), "Succeeded"))]
    (tmp_path / "data").mkdir()
    directory = write_exports(tmp_path / "data", json.dumps({"value": events}), activity_name="AzureActivity.json")
    code, payload, err = call("run", "--data", str(directory), "--at", "2025-11-20T00:00:00Z", "--json")
    assert code == EXIT_OK, err
    assert json.loads(payload)["summary"]["malformed_rows"] == 1
    assert "AzureActivity.json, item 2: TimeGenerated: not a datetime" in err


@pytest.mark.parametrize("script", ["arabic-indic", "fullwidth"])
def test_an_allowlist_expiry_or_window_with_foreign_digits_suppresses_nothing(script: str) -> None:
    digits = FOREIGN_DIGITS[script]
    base = {"reason": "r", "conditions": [{"field": "caller", "op": "equals", "value": "alice@contoso.com"}]}
    window = {"weekdays": ["Sat"], "start": "22:00", "end": "04:00", "timezone": "Europe/Berlin"}
    raws = [{**base, "id": "expiry", "expires_at": translated("2027-05-01T00:00:00Z", digits)},
            {**base, "id": "start", "window": {**window, "start": translated("22:00", digits)}},
            {**base, "id": "end", "window": {**window, "end": "0" + digits[4] + ":00"}}]
    loaded = Allowlist.load(raws, now=AT)
    assert loaded.active == []
    assert sorted(p.id for p in loaded.problems) == ["end", "expiry", "start"]
    assert all("invalid, suppresses nothing" in p.problem for p in loaded.problems)


def test_at_with_foreign_digits_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = call("run", "--at", translated("2026-11-20T06:00:00Z", FOREIGN_DIGITS["devanagari"]))
    assert (code, out) == (EXIT_USAGE, "")
    assert "--at: not an ISO 8601 time" in err + capsys.readouterr().err


@pytest.mark.parametrize(("command", "option"), [("run", "--period-hours"), ("card", "--digest-threshold")])
def test_whole_number_options_with_foreign_digits_are_usage_errors(command: str, option: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = call(command, option, translated("48", FOREIGN_DIGITS["fullwidth"]))
    assert code == EXIT_USAGE
    assert f"{option}: not a whole number" in err + capsys.readouterr().err


@pytest.mark.parametrize("raw", [translated("48", FOREIGN_DIGITS["arabic-indic"]), "4_8"])
def test_whole_number_settings_with_foreign_digits_are_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="DETECTOR_PERIOD_HOURS: must be a whole number"):
        Settings.from_env({"DETECTOR_PERIOD_HOURS": raw})


@pytest.mark.parametrize("value", [*(digits[7] for digits in FOREIGN_DIGITS.values()), "\u00b2", "7_0"])
def test_an_investigation_priority_in_foreign_digits_is_unknown_not_a_crash(value: str) -> None:
    row = {**UEBA_ROW, "InvestigationPriority": value}
    assert ueba_event(row).investigation_priority is None
    assert ueba_event({**row, "InvestigationPriority": " 7 "}).investigation_priority == 7


def test_a_state_watermark_with_foreign_digits_is_not_read_as_a_time(store: StateStore) -> None:
    store.set_watermark(AT)
    if isinstance(store, FileStore):
        runs = json.loads((store.directory / "runs.json").read_text(encoding="utf-8"))
        runs["watermark"] = translated(runs["watermark"], FOREIGN_DIGITS["arabic-indic"])
        (store.directory / "runs.json").write_text(json.dumps(runs), encoding="utf-8")
        where = r"runs\.json: not a detector state file"
    else:
        assert isinstance(store, TableStore)
        entity = store.runs.get_entity("watermark", encode_key(STATE_KEY))
        entity["end"] = translated(entity["end"], FOREIGN_DIGITS["arabic-indic"])
        store.runs.update_entity(entity)
        where = r"read watermark failed \(the stored watermark is not an ISO 8601 time"
    with pytest.raises(StoreError, match=where):
        store.get_watermark()



# --- 2. old time zone aliases are refused, naming the canonical zone ---------------------------------

def window_entry(zone: str) -> dict[str, Any]:
    return {"id": "w", "reason": "r", "conditions": [{"field": "caller", "op": "equals", "value": "a@contoso.com"}],
            "window": {"weekdays": ["Sat"], "start": "22:00", "end": "04:00", "timezone": zone}}


@pytest.mark.parametrize(("alias", "canonical"), [
    ("Asia/Calcutta", "Asia/Kolkata"),  # what Windows-to-IANA tables (CLDR) still give for India Standard Time
    ("Asia/Saigon", "Asia/Ho_Chi_Minh"),
    ("Europe/Kiev", "Europe/Kyiv"),
    ("America/Buenos_Aires", "America/Argentina/Buenos_Aires"),
    ("US/Eastern", "America/New_York"),
    ("US/Pacific", "America/Los_Angeles"),
    ("GB", "Europe/London"),
    ("UCT", "Etc/UTC"),
])
def test_an_old_zone_alias_is_refused_naming_its_canonical_zone(alias: str, canonical: str) -> None:
    with pytest.raises(InvalidEntry, match=f"time zone '{alias}' is an old alias; use its canonical IANA name "
                                           f"'{canonical}'"):
        AllowlistEntry.from_dict(window_entry(alias))
    window = AllowlistEntry.from_dict(window_entry(canonical)).window  # the name the message gives is accepted
    assert window is not None
    assert window.timezone == canonical


@pytest.mark.parametrize("zone", [
    "Asia/Kolkata", "America/Argentina/Buenos_Aires", "Etc/GMT-14", "UTC",
    # Links in IANA's data since 2022b (merged with a zone that agrees since 1970), but still the zone its
    # country lists in zone.tab: canonical for the people who live there.
    "Europe/Amsterdam", "Atlantic/Reykjavik",
])
def test_current_zone_names_are_canonical(zone: str) -> None:
    window = AllowlistEntry.from_dict(window_entry(zone)).window
    assert window is not None
    assert window.timezone == zone
    assert AllowlistEntry.from_dict(window_entry(zone)).to_dict()["window"]["timezone"] == zone


def test_allowlist_add_with_an_alias_saves_nothing_and_names_the_canonical_zone(tmp_path: Path) -> None:
    code, out, err = call("allowlist", "add", "--state", str(tmp_path), "--id", "maint", "--reason", "maintenance",
                          "--when", "caller", "equals", "ops@contoso.com", "--window-days", "Sat,Sun",
                          "--window-start", "22:00", "--window-end", "04:00", "--window-tz", "Asia/Calcutta")
    assert (code, out) == (EXIT_BAD_INPUT, "")
    assert err == ("detector: allowlist entry 'maint' not saved: time zone 'Asia/Calcutta' is an old alias; use its "
                   "canonical IANA name 'Asia/Kolkata'\n")
    assert not (tmp_path / "allowlist.json").exists() or "maint" not in (tmp_path / "allowlist.json").read_text()


# --- 3. a BehaviorAnalytics event met twice is read once ---------------------------------------------

SIGN_IN = {**UEBA_ROW, "SourceRecordId": "6f1c0d2e-8b3a-4c59-9e7d-1a2b3c4d5e6f"}


def ueba_csv(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    def cell(value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value)
        return '"' + text.replace('"', '""') + '"'
    return ",".join(f"{c} [UTC]" if c == "TimeGenerated" else c for c in columns) + "\n" + "".join(
        ",".join(cell(r.get(c, "")) for c in columns) + "\n" for r in rows)


def rest_table(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    return json.dumps({"tables": [{"name": "PrimaryResult", "columns": [{"name": c} for c in columns],
                                   "rows": [[r.get(c) for c in columns] for r in rows]}]})


def matches_and_duplicates(directory: Path, *extra: str) -> tuple[int, int]:
    code, payload, err = run_json(directory, *extra)
    assert code == EXIT_OK, err
    summary: dict[str, int] = payload["summary"]  # type: ignore[assignment]
    return summary["matches"], summary["duplicates_skipped"]


@pytest.mark.parametrize("extra", [(), ("--check-all-rows",)])
def test_overlapping_behavior_analytics_exports_join_each_sign_in_once(tmp_path: Path, extra: tuple[str, ...]) -> None:
    other = {**SIGN_IN, "TimeGenerated": "2026-11-19T07:00:00Z", "SourceRecordId": "0b9e4d7c-2f1a-4e3b-8c6d-5a4b3c2d1e0f"}
    single = write_exports(tmp_path / "single", jsonl(activity_rows()), jsonl([SIGN_IN, other]))  # type: ignore[arg-type]
    assert matches_and_duplicates(single, *extra) == (2, 0)
    overlap = write_exports(tmp_path / "overlap", jsonl(activity_rows()), jsonl([SIGN_IN]))  # type: ignore[arg-type]
    (overlap / "BehaviorAnalytics-day2.jsonl").write_text(jsonl([other, SIGN_IN]), encoding="utf-8")
    (overlap / "BehaviorAnalytics-again.jsonl").write_text(jsonl([SIGN_IN, SIGN_IN]), encoding="utf-8")
    assert matches_and_duplicates(overlap, *extra) == (2, 3)


def test_a_sign_in_in_a_portal_csv_and_a_rest_export_is_read_once(tmp_path: Path) -> None:
    directory = write_exports(tmp_path, jsonl(activity_rows()), jsonl([SIGN_IN]))  # type: ignore[arg-type]
    (directory / "BehaviorAnalytics-portal.csv").write_text(ueba_csv([SIGN_IN]), encoding="utf-8")
    (directory / "BehaviorAnalytics-rest.json").write_text(rest_table([SIGN_IN]), encoding="utf-8")
    assert matches_and_duplicates(directory) == (1, 2)


def test_an_activity_event_in_a_portal_csv_twice_is_read_once(tmp_path: Path) -> None:
    # The identity column was dropped from CSV rows, so CSV duplicates were never skipped.
    rows = [{**r, "EventDataId": f"e-{i}"} for i, r in enumerate(activity_rows())]
    directory = write_exports(tmp_path, ueba_csv(rows + rows), jsonl([SIGN_IN]), activity_name="AzureActivity.csv")
    assert matches_and_duplicates(directory) == (1, 2)


@pytest.mark.parametrize(("first", "second"), [
    ({}, {}),  # no identity column: never merged, as the rule would join both rows
    ({"SourceRecordId": ""}, {"SourceRecordId": " "}),
    ({"SourceRecordId": None}, {"SourceRecordId": None}),
    ({"SourceRecordId": "r-1"}, {"SourceRecordId": "R-1"}),  # compared exactly: one source (the workspace) spells it
    ({"SourceRecordId": "r-1"}, {"SourceRecordId": "r-1", "TimeGenerated": "2026-11-19T05:30:00.0000001Z"}),
])
def test_sign_ins_without_the_same_identity_and_time_are_never_merged(tmp_path: Path, first: dict[str, Any],
                                                                      second: dict[str, Any]) -> None:
    rows = [{**UEBA_ROW, **first}, {**UEBA_ROW, **second}]
    directory = write_exports(tmp_path, jsonl(activity_rows()), jsonl(rows))  # type: ignore[arg-type]
    assert matches_and_duplicates(directory) == (2, 0)


# --- 4. a JSON object naming a key twice: the last value counts (pinned decision) -------------------

def with_key_twice(row: dict[str, Any], key: str, first: Any, path: tuple[str, ...] = ()) -> str:
    """``row`` as one JSON line in which ``key`` (inside ``path``) is given twice: ``first``, then its value."""
    target = row
    for step in path:
        target = target[step]
    text = json.dumps(row)
    place = json.dumps(key) + ": " + json.dumps(target[key])
    assert text.count(place) == 1
    return text.replace(place, json.dumps(key) + ": " + json.dumps(first) + ", " + place) + "\n"


def test_a_row_naming_a_column_twice_reads_the_last_value(tmp_path: Path) -> None:
    # The first TimeGenerated lies outside the sign-in's window, the last inside: only the last one joins.
    line = with_key_twice(SIGN_IN, "TimeGenerated", "2026-11-18T00:00:00Z")
    directory = write_exports(tmp_path, jsonl(activity_rows()), line)  # type: ignore[arg-type]
    assert matches_and_duplicates(directory, "--check-all-rows") == (1, 0)
    flipped = with_key_twice({**SIGN_IN, "TimeGenerated": "2026-11-18T00:00:00Z"}, "TimeGenerated",
                             SIGN_IN["TimeGenerated"])
    (directory / "BehaviorAnalytics.jsonl").write_text(flipped, encoding="utf-8")
    assert matches_and_duplicates(directory, "--check-all-rows") == (0, 0)


@pytest.mark.parametrize(("first", "last", "matches"), [("False", "True", 1), ("True", "False", 0)])
def test_an_insight_named_twice_reads_the_last_value(tmp_path: Path, first: str, last: str, matches: int) -> None:
    row = {**SIGN_IN, "ActivityInsights": {"ActionUncommonlyPerformedByUser": last}}
    line = with_key_twice(row, "ActionUncommonlyPerformedByUser", first, ("ActivityInsights",))
    directory = write_exports(tmp_path, jsonl(activity_rows()), line)  # type: ignore[arg-type]
    for extra in ((), ("--check-all-rows",)):
        assert matches_and_duplicates(directory, *extra) == (matches, 0)


def test_an_authorization_naming_its_scope_twice_reads_the_last_scope(tmp_path: Path) -> None:
    scope = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/"
    authorization = f'{{"scope": "{scope}decoy", "scope": "{scope}vm-real"}}'
    rows = [{**r, "Authorization": authorization} for r in activity_rows()]
    directory = write_exports(tmp_path, jsonl(rows), jsonl([SIGN_IN]))  # type: ignore[arg-type]
    code, out, err = call("rows", "--data", str(directory), "--at", "2026-11-20T06:00:00Z")
    assert code == EXIT_OK, err
    assert [row["VirtualMachineName"] for row in json.loads(out)] == ["vm-real"]


@pytest.mark.parametrize("field", ["first_seen", "updated"])
def test_a_stored_alert_record_with_a_foreign_digit_time_is_unreadable(field: str) -> None:
    record = stored_alert().to_record()
    StoredAlert.from_record(record, etag=None)  # the record as written reads back
    record[field] = translated(record[field], FOREIGN_DIGITS["fullwidth"])
    with pytest.raises(StoreError, match="unreadable alert record: ValueError not a datetime"):
        StoredAlert.from_record(record, etag=None)
