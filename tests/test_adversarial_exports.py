"""Issue 17's export formats tried as a new user and as an attacker would (review 17): each test is a defect
found that way, written before its fix. The formats' own tests are in ``tests/test_formats.py``."""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import shutil
import sys
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detector.correlate import Window
from detector.errors import InputError
from detector.sources import tree
from detector.sources.files import FileSource
from tests.builders import AT
from tests.test_formats import (
    OPERATION,
    UPN,
    _run_on_a_terminal,
    columns_row,
    jsonl,
    powershell_event,
    read,
    record,
    ueba_file,
)

OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
EMAIL = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"


def _data_export_hour(root: Path, hour: int) -> Path:
    folder = root / "am-azureactivity" / "WorkspaceResourceId=/subscriptions/s" / f"y=2026/m=11/d=19/h={hour:02d}/m=00"
    folder.mkdir(parents=True)
    return folder


# --- column mapping ----------------------------------------------------------------------------------

def test_caller_of_a_storage_record_is_the_upn_else_the_email_else_the_principal_object_id(tmp_path: Path) -> None:
    # AzureActivity shows a service principal's or managed identity's *object id* as Caller (the
    # objectidentifier claim: `AzureActivity | where Caller == <ServicePrincipalId>`), not its application id:
    # reading the appid claim gave a Caller that no allowlist entry or workspace alert for it would ever carry.
    claims = [
        {UPN: "alice@contoso.com", EMAIL: "alice@other.example", OID: "u-oid", "appid": "cli-app"},
        {EMAIL: "guest@outlook.com", OID: "guest-oid", "appid": "cli-app"},  # a guest: no UPN claim
        {OID: "5f1c-sp-object-id", "appid": "9b2f-app-id"},  # a service principal / managed identity
        {"appid": "9b2f-app-id"},  # no claim AzureActivity's Caller comes from
    ]
    (tmp_path / "AzureActivity.jsonl").write_text(jsonl([record(i, claims=c) for i, c in enumerate(claims)]),
                                                  encoding="utf-8")
    ueba_file(tmp_path)
    events, _, _ = read(tmp_path)
    assert [e.caller for e in events] == ["alice@contoso.com", "guest@outlook.com", "5f1c-sp-object-id", ""]


def test_powershell_json_cut_by_convertto_json_depth_is_refused_not_read_as_no_match(tmp_path: Path) -> None:
    # ConvertTo-Json writes objects deeper than -Depth as their .NET type name: the scope is gone, and the
    # Run Command would silently never match (Authorization holds no "virtualMachines").
    truncated = powershell_event(3)
    truncated["Authorization"] = "Microsoft.Azure.Commands.Insights.OutputClasses.PSEventDataAuthorization"
    (tmp_path / "AzureActivity.json").write_text(json.dumps([truncated]), encoding="utf-8")
    ueba_file(tmp_path)
    with pytest.raises(InputError, match=r"-Depth") as caught:
        read(tmp_path)
    assert caught.value.column == "Authorization"


def test_get_azlog_export_csv_without_a_type_line_is_refused_with_the_fix(tmp_path: Path) -> None:
    # PowerShell 7's Export-Csv (and Microsoft's documented `Get-AzActivityLog | Export-Csv -NoTypeInformation`)
    # writes no #TYPE line, so the refusal keyed on it never came: the user got "TimeGenerated is missing".
    header = ["Authorization", "Caller", "CorrelationId", "EventDataId", "EventTimestamp", "HttpRequest",
              "OperationName", "Status", "SubscriptionId"]
    row = ["Microsoft.Azure.Commands.Insights.OutputClasses.PSEventDataAuthorization", "alice@contoso.com", "c",
           "e", "11/19/2026 6:00:07 AM", "Microsoft.Azure.Commands.Insights.OutputClasses.PSEventDataHttpRequest",
           "Microsoft.Azure.Management.Monitor.Models.LocalizableString",
           "Microsoft.Azure.Management.Monitor.Models.LocalizableString", "s"]
    with (tmp_path / "AzureActivity-20260519-0000.csv").open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL).writerows([header, row])
    ueba_file(tmp_path)
    with pytest.raises(InputError, match="ConvertTo-Json"):
        read(tmp_path)


def _rest_tables(columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"tables": [{"name": "PrimaryResult", "columns": [{"name": c, "type": "string"} for c in columns],
                        "rows": rows}]}


OLDER_COLUMNS = ["TimeGenerated", "OperationName", "Authorization", "CorrelationId", "Caller", "CallerIpAddress",
                 "ActivityStatus"]


def test_older_schema_in_a_query_response_is_mapped_as_in_the_other_formats(tmp_path: Path) -> None:
    rows = [[f"2026-11-19T06:00:0{i}Z", OPERATION, json.dumps({"scope": "/subscriptions/s/resourceGroups/r/providers/"
                                                              "Microsoft.Compute/virtualMachines/vm-1"}),
             "c-old", "alice@contoso.com", "20.1.2.3", status] for i, status in enumerate(("Started", "Succeeded"))]
    (tmp_path / "AzureActivity.json").write_text(json.dumps(_rest_tables(OLDER_COLUMNS, rows)), encoding="utf-8")
    ueba_file(tmp_path)
    events, _, result = read(tmp_path)
    assert [(e.operation_name, e.status) for e in events] == [(OPERATION, "Started"), (OPERATION, "Succeeded")]
    assert len(result) == 1


def test_older_schema_display_names_in_a_query_response_are_refused_with_the_fix(tmp_path: Path) -> None:
    rows = [["2026-11-19T06:00:00Z", "Run Command on Virtual Machine", "{}", "c", "a@b.c", "1.2.3.4", "Succeeded"]]
    (tmp_path / "AzureActivity.json").write_text(json.dumps(_rest_tables(OLDER_COLUMNS, rows)), encoding="utf-8")
    ueba_file(tmp_path)
    with pytest.raises(InputError, match=r"OperationNameValue.*az monitor activity-log list") as caught:
        read(tmp_path)
    assert caught.value.column == "OperationName"


# --- shapes real exports take -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["PT1H.json", "PT1H.json.gz", "PT1H.csv", "blank.json", "bom.csv"])
def test_an_empty_blob_is_an_empty_table_not_a_failed_run(tmp_path: Path, name: str) -> None:
    # Blob copies keep zero-byte blobs; one of them among thousands of hourly files stopped the whole replay.
    (_data_export_hour(tmp_path, 1) / "PT1H.json").write_text(jsonl([columns_row(1)]), encoding="utf-8")
    empty = _data_export_hour(tmp_path, 2) / name
    content = {"blank.json": b" \r\n\n", "bom.csv": b"\xef\xbb\xbf\r\n"}.get(name, b"")
    empty.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    ueba_file(tmp_path)
    for prefilter in (True, False):
        events, report, rows = read(tmp_path, prefilter=prefilter)
        assert len(events) == 1
        assert report.malformed_count == 0
        assert len(rows) == 1


@pytest.mark.parametrize("first", ["\n", "\r\n  \r\n", '{"TimeGenerated": "2026-11-19T06:0\n'])
def test_hourly_blob_whose_first_line_is_blank_or_broken_is_still_json_lines(tmp_path: Path, first: str) -> None:
    # Read as one JSON document, such a blob was refused whole ("Extra data", line 3): a broken first line is
    # one malformed row, and a blank one is nothing.
    (_data_export_hour(tmp_path, 6) / "PT1H.json").write_text(first + jsonl([columns_row(1), columns_row(2)]),
                                                              encoding="utf-8")
    ueba_file(tmp_path)
    for prefilter in (True, False):
        events, report, _ = read(tmp_path, prefilter=prefilter)
        assert len(events) == 2
        assert report.malformed_count == (0 if not first.strip() else 1)


@pytest.mark.parametrize("first", ['{"TimeGenerated": "2026-11', "garbage", "[]"])
def test_older_schema_after_a_broken_first_line_is_still_refused_not_scanned_past(tmp_path: Path, first: str) -> None:
    # The scan cannot see display names: a file is scanned only when its first object is not the older schema,
    # and that first object must be the one the readers take, even after a broken first line.
    def older(second: int, operation: str) -> dict[str, Any]:
        row = {**columns_row(second), "OperationName": operation, "ActivityStatus": "Succeeded"}
        del row["OperationNameValue"], row["ActivityStatusValue"]
        return row
    rows = [older(1, OPERATION), older(3, "Run Command on Virtual Machine")]
    (_data_export_hour(tmp_path, 6) / "PT1H.jsonl").write_text(first + "\n" + jsonl(rows), encoding="utf-8")
    ueba_file(tmp_path)
    with pytest.raises(InputError, match="OperationNameValue") as caught:
        read(tmp_path)
    assert caught.value.column == "OperationName"


@pytest.mark.parametrize("ext", ["json", "jsonl"])
def test_event_hub_messages_one_records_document_per_line(tmp_path: Path, ext: str) -> None:
    # An event hub consumer writes each message body, {"records": [...]}, as a line: refused before ("Extra
    # data" as a .json, "TimeGenerated is missing" as a .jsonl), though each line is the documented shape.
    messages = [{"records": [record(0, "Start"), record(5, "Accept")]}, {"records": [record(9)]}]
    (tmp_path / f"AzureActivity.{ext}").write_text(jsonl(messages), encoding="utf-8")
    ueba_file(tmp_path)
    for prefilter in (True, False):
        events, report, rows = read(tmp_path, prefilter=prefilter)
        assert [e.status for e in events] == ["Start", "Accept", "Success"]
        assert report.rows_read["AzureActivity"] == 3
        assert len(rows) == 1


def test_macos_metadata_and_hidden_files_in_a_tree_are_ignored(tmp_path: Path) -> None:
    # A tree copied by macOS to a share or zipped there carries AppleDouble twins (._PT1H.json, __MACOSX/):
    # binary, NUL-filled, they were taken for UTF-16 exports and stopped the run.
    hour = _data_export_hour(tmp_path, 6)
    (hour / "PT1H.json").write_text(jsonl([columns_row(1)]), encoding="utf-8")
    apple_double = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 64
    (hour / "._PT1H.json").write_bytes(apple_double)
    zipped = tmp_path / "__MACOSX" / "am-azureactivity"
    zipped.mkdir(parents=True)
    (zipped / "._PT1H.json").write_bytes(apple_double)
    (tmp_path / "._BehaviorAnalytics.jsonl").write_bytes(apple_double)
    hidden = tmp_path / ".trash" / "am-azureactivity"
    hidden.mkdir(parents=True)
    (hidden / "PT1H.json").write_text("not JSON", encoding="utf-8")
    ueba_file(tmp_path)
    events, report, rows = read(tmp_path)
    assert len(events) == 1
    assert report.malformed_count == 0
    assert len(rows) == 1


def test_symlinked_folders_are_followed_each_file_read_once_and_loops_end(tmp_path: Path) -> None:
    # A tree assembled with symlinks (a mounted archive linked into the export folder) lost the linked part
    # without a word; followed, a link back up must not loop, and a file seen twice is read once.
    archive = tmp_path / "archive"
    (archive / "h=07").mkdir(parents=True)
    (archive / "h=07" / "PT1H.json").write_text(jsonl([record(7)]), encoding="utf-8")  # no eventDataId
    data = tmp_path / "data"
    hour = _data_export_hour(data, 6)
    (hour / "PT1H.json").write_text(jsonl([record(1)]), encoding="utf-8")
    (data / "am-azureactivity" / "archive").symlink_to(archive, target_is_directory=True)
    (data / "am-azureactivity" / "same-archive").symlink_to(archive, target_is_directory=True)
    (data / "am-azureactivity" / "loop").symlink_to(data, target_is_directory=True)
    ueba_file(data)
    events, report, _ = read(data)
    assert sorted(e.status for e in events) == ["Success", "Success"]
    assert report.rows_read["AzureActivity"] == 2


@contextlib.contextmanager
def _unprivileged() -> Iterator[None]:
    """As root (CI) permissions do not apply: act as ``nobody`` for the duration (the real uid stays root, so
    the effective one comes back); as anyone else, as oneself."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_a_folder_that_cannot_be_listed_is_an_error_not_a_silent_gap() -> None:
    base = Path(tempfile.mkdtemp(prefix="unreadable-"))  # not under pytest's root-only tmp folder
    try:
        base.chmod(0o755)
        (base / "AzureActivity.jsonl").write_text(jsonl([columns_row(1)]), encoding="utf-8")
        ueba_file(base)
        locked = _data_export_hour(base, 7)
        (locked / "PT1H.json").write_text(jsonl([columns_row(2)]), encoding="utf-8")
        for folder in (base, *base.rglob("*")):
            folder.chmod(0o755 if folder.is_dir() else 0o644)
        locked.chmod(0)
        with _unprivileged(), pytest.raises(InputError, match="cannot list the folder") as caught:
            tree.find_tables(base, ("AzureActivity", "BehaviorAnalytics"))
        assert caught.value.path == str(locked)
    finally:
        locked.chmod(0o755)
        shutil.rmtree(base)


def _python_calls_to_read(directory: Path) -> int:
    calls = 0

    def count(_frame: Any, event: str, _arg: Any) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(count)
    try:
        read(directory)
    finally:
        sys.setprofile(None)
    return calls


def test_many_small_files_cost_work_in_proportion_to_their_number(tmp_path: Path) -> None:
    # A data-export month of 10,000 small hourly blobs took minutes: two lookups per file in a list of every
    # file (quadratic). Measured as Python calls, not time, at 400 and 1,600 files: 4x the files, about 4x the
    # calls (a quadratic cost gave 9x here, and grows with the count).
    calls = []
    for count in (400, 1600):
        root = tmp_path / str(count)
        for i in range(count):
            folder = root / "am-azureactivity" / f"d={i // 24:03d}" / f"h={i % 24:02d}"
            folder.mkdir(parents=True)
            (folder / "PT1H.json").write_text(jsonl([columns_row(i % 60, event_id=f"e{i}")]), encoding="utf-8")
        ueba_file(root)
        calls.append(_python_calls_to_read(root))
    assert calls[1] / calls[0] < 5, calls


# --- duplicates -----------------------------------------------------------------------------------------

def test_the_same_event_in_a_portal_csv_and_a_json_lines_export_is_read_once(tmp_path: Path) -> None:
    # The portal writes times to the millisecond, the workspace and data export to 100 ns: with the time in the
    # identity, one event in both exports was never recognised as one.
    row = {**columns_row(7, event_id="E-1"), "TimeGenerated": "2026-11-19T06:00:07.1234567Z"}
    (tmp_path / "AzureActivity-export.jsonl").write_text(jsonl([row]), encoding="utf-8")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["$table", *(f"{c} [UTC]" if c == "TimeGenerated" else c for c in row)])
    writer.writerow(["AzureActivity", *({**row, "TimeGenerated": "11/19/2026, 6:00:07.123 AM",
                                         "EventDataId": "e-1"}.values())])
    (tmp_path / "AzureActivity-portal.csv").write_text(buffer.getvalue(), encoding="utf-8")
    ueba_file(tmp_path)
    events, report, _ = read(tmp_path)
    assert len(events) == 1
    assert report.duplicates_skipped == 1


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_overlapping_portal_csv_and_query_response_exports_count_each_event_once(tmp_path: Path, fmt: str) -> None:
    # Both readers kept only the rule's columns, so EventDataId never reached the duplicate check: the same
    # events in two overlapping CSV (or query response) exports were all read twice.
    rows = [columns_row(s, st, event_id=f"E-{s}") for s, st in ((0, "Started"), (4, "Accepted"), (8, "Succeeded"))]
    for name, part in (("AzureActivity-week1", rows[:2]), ("AzureActivity-week2", rows[1:])):
        if fmt == "csv":
            with (tmp_path / f"{name}.csv").open("w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(part)
        else:
            document = _rest_tables(list(rows[0]), [list(r.values()) for r in part])
            (tmp_path / f"{name}.json").write_text(json.dumps(document), encoding="utf-8")
    ueba_file(tmp_path)
    events, report, result = read(tmp_path)
    assert len(events) == 3
    assert report.duplicates_skipped == 1
    assert len(result) == 1


def test_a_copy_that_says_something_else_is_not_a_duplicate_and_never_hides_the_event(tmp_path: Path) -> None:
    # The first copy read won: a planted or corrupt copy with the real event's ids but another status (or
    # caller, operation) in a file read earlier made the real success vanish, and with it the alert.
    started, succeeded = columns_row(0, "Started", event_id="E-0"), columns_row(8, "Succeeded", event_id="E-8")
    forged = [{**succeeded, "ActivityStatusValue": "Failed"}, {**succeeded, "Caller": "mallory@contoso.com"},
              {**succeeded, "OperationNameValue": "MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE"}]
    (tmp_path / "AzureActivity-0-planted.jsonl").write_text(jsonl(forged), encoding="utf-8")
    (tmp_path / "AzureActivity-1-real.jsonl").write_text(jsonl([started, succeeded]), encoding="utf-8")
    (tmp_path / "AzureActivity-2-overlap.jsonl").write_text(jsonl([started, succeeded]), encoding="utf-8")
    ueba_file(tmp_path)
    events, report, rows = read(tmp_path)
    assert report.duplicates_skipped == 2  # the true copies in the overlapping export
    assert [(e.caller, e.status) for e in events if e.caller == "alice@contoso.com"] == [
        ("alice@contoso.com", "Failed"), ("alice@contoso.com", "Started"), ("alice@contoso.com", "Succeeded")]
    assert [r["Caller"] for r in rows] == ["alice@contoso.com"]


def _peak_bytes_reading(directory: Path, *, prefilter: bool) -> int:
    """Peak traced allocations while the rows stream through (none kept, as the correlation keeps none but the
    usable ones)."""
    tracemalloc.start()
    try:
        data = FileSource(directory, prefilter=prefilter).fetch(Window.ending_at(AT))
        usable = sum(1 for e in data.activity if "RUNCOMMAND" in e.operation_name)
        assert usable == 2
        assert data.report.duplicates_skipped == 0
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("fmt", "prefilter"), [("csv", True), ("jsonl", False)])
def test_memory_for_duplicates_does_not_grow_with_rows_no_rule_can_use(tmp_path: Path, fmt: str,
                                                                      prefilter: bool) -> None:
    # Every row's identity was remembered: a CSV export or --check-all-rows replay of 10M rows held ~3 GB of
    # them (287 MB per million), though only the rows a rule can use can change a result. Measured as the
    # peak of traced allocations (not time) for 4,000 and 16,000 other rows: the same, within noise.
    peaks = []
    for count in (4000, 16000):
        rows = [{**columns_row(i % 60, event_id=f"{i:08d}-4b7c-4e8f-9a1d-2c3e4f5a6b7c"),
                 "OperationNameValue": "MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE"} for i in range(count)]
        rows += [columns_row(1, "Started"), columns_row(2)]
        folder = tmp_path / f"{fmt}{count}"
        folder.mkdir()
        if fmt == "csv":
            with (folder / "AzureActivity.csv").open("w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        else:
            (folder / "AzureActivity.jsonl").write_text(jsonl(rows), encoding="utf-8")
        ueba_file(folder)
        peaks.append(_peak_bytes_reading(folder, prefilter=prefilter))
    assert peaks[1] < 1.5 * peaks[0], peaks


# --- progress -------------------------------------------------------------------------------------------

def test_an_error_during_the_replay_is_printed_on_its_own_line_not_after_the_bar(tmp_path: Path) -> None:
    (tmp_path / "AzureActivity-00.jsonl").write_text(
        jsonl([columns_row(s % 60, event_id=f"e-{s}") for s in range(3000)]), encoding="utf-8")
    (tmp_path / "AzureActivity-01.json").write_text("[{", encoding="utf-8")  # read after the first file
    ueba_file(tmp_path)
    code, out, terminal = _run_on_a_terminal(tmp_path)
    assert code == 3
    assert out == ""
    before, found, _ = terminal.partition("detector: bad input: ")
    assert found, terminal
    line_start = max(before.rfind("\r"), before.rfind("\n")) + 1
    assert "reading" in before  # the bar was shown...
    assert before[line_start:] == "", repr(terminal)  # ...and cleared before the error was written
