"""The exports people keep (issue 17): Activity Log records and REST events, data-export folder trees, the
older AzureActivity schema, PowerShell files, .gz, many files per table, duplicates across files, progress."""

from __future__ import annotations

import csv
import fcntl
import gzip
import json
import os
import pty
import random
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest

from detector.correlate import correlate
from detector.errors import InputError
from detector.model import ActivityEvent
from detector.sources.files import FileSource
from detector.timestamps import format_datetime, parse_datetime
from detector.window import Window
from tests.builders import AT, VM_SCOPE

ROOT = Path(__file__).resolve().parents[1]
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
OPERATION = "Microsoft.Compute/virtualMachines/runCommand/action"
UEBA_ROW = {"TimeGenerated": "2026-11-19T05:30:00Z", "EventSource": "Azure AD", "ActionType": "Sign-in",
            "UserPrincipalName": "alice@contoso.com", "SourceIPLocation": "Lagos, NG",
            "ActivityInsights": {"ActionUncommonlyPerformedByUser": "True"}, "UsersInsights": {"BlastRadius": "High"}}


def record(second: int, status: str = "Success", *, claims: dict[str, str] | None = None) -> dict[str, Any]:
    """An Activity Log event as a diagnostic setting writes it to storage / an event hub (resource log schema)."""
    return {"time": f"2026-11-19T06:00:{second:02d}.1234567Z", "resourceId": VM_SCOPE.upper(),
            "operationName": OPERATION.upper(), "category": "Action", "resultType": status,
            "resultSignature": "Succeeded.", "durationMs": "0", "callerIpAddress": "20.1.2.3",
            "correlationId": "c-rec", "level": "Information", "location": "global",
            "identity": {"authorization": {"scope": VM_SCOPE, "action": OPERATION, "evidence": {"role": "Owner"}},
                         "claims": claims if claims is not None else {UPN: "alice@contoso.com", "appid": "app-1"}},
            "properties": {"statusCode": "OK"}}


def event(second: int, status: str = "Succeeded", *, event_id: str | None = None) -> dict[str, Any]:
    """The same event as the REST API and ``az monitor activity-log list`` return it."""
    return {"authorization": {"action": OPERATION, "scope": VM_SCOPE}, "caller": "alice@contoso.com",
            "channels": "Operation", "claims": {UPN: "alice@contoso.com"}, "correlationId": "c-rest",
            "eventDataId": event_id or f"e-{second}-{status}", "eventName": {"value": "EndRequest"},
            "category": {"value": "Administrative"}, "eventTimestamp": f"2026-11-19T06:00:{second:02d}.5Z",
            "httpRequest": {"clientRequestId": "r", "clientIpAddress": "20.1.2.3", "method": "POST"},
            "level": "Informational", "operationId": "o-1",
            "operationName": {"value": OPERATION, "localizedValue": "Run Command on Virtual Machine"},
            "resourceGroupName": "rg-1", "resourceId": VM_SCOPE, "status": {"value": status, "localizedValue": status},
            "subStatus": {"value": ""}, "submissionTimestamp": "2026-11-19T06:01:00Z", "subscriptionId": "s"}


def powershell_event(second: int, status: str = "Succeeded") -> dict[str, Any]:
    """``Get-AzLog | ConvertTo-Json`` in Windows PowerShell 5.1: PascalCase, times as /Date(ms)/."""
    ms = (parse_datetime(f"2026-11-19T06:00:{second:02d}Z") - parse_datetime("1970-01-01T00:00:00Z")) // 10_000
    return {"Authorization": {"Action": OPERATION, "Role": "Owner", "Scope": VM_SCOPE}, "Caller": "alice@contoso.com",
            "CorrelationId": "c-ps", "EventDataId": f"ps-{second}", "EventTimestamp": f"/Date({ms})/",
            "HttpRequest": {"ClientId": "x", "Method": "POST", "Uri": None, "ClientIpAddress": "20.1.2.3"},
            "OperationName": {"Value": OPERATION, "LocalizedValue": "Run Command on Virtual Machine"},
            "Status": {"Value": status, "LocalizedValue": status}, "SubscriptionId": "s"}


def columns_row(second: int, status: str = "Succeeded", *, event_id: str | None = None) -> dict[str, Any]:
    return {"TimeGenerated": f"2026-11-19T06:00:{second:02d}Z", "OperationNameValue": OPERATION.upper(),
            "Authorization": json.dumps({"scope": VM_SCOPE}), "CorrelationId": "c-cols", "Caller": "alice@contoso.com",
            "CallerIpAddress": "20.1.2.3", "ActivityStatusValue": status,
            "EventDataId": event_id or f"d-{second}-{status}"}


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def ueba_file(directory: Path) -> None:
    (directory / "BehaviorAnalytics.jsonl").write_text(jsonl([UEBA_ROW]), encoding="utf-8")


def read(directory: Path, *, prefilter: bool = True) -> tuple[list[ActivityEvent], Any, list[dict[str, Any]]]:
    window = Window.ending_at(AT)
    data = FileSource(directory, prefilter=prefilter).fetch(window)
    activity = list(data.activity)
    rows = correlate(activity, list(data.ueba), window).rows
    return activity, data.report, [r.to_dict() for r in rows]


def assert_mapped(events: list[ActivityEvent], correlation_id: str, *, times: list[str]) -> None:
    """Every AzureActivity column the rule reads, as the schema page maps it."""
    assert [format_datetime(e.time)[:19] for e in events] == times
    for e in events:
        assert e.operation_name.lower() == OPERATION.lower()  # OperationNameValue <- operationName(.value)
        assert json.loads(e.authorization)["scope"] == VM_SCOPE  # Authorization <- (identity.)authorization
        assert e.correlation_id == correlation_id
        assert e.caller == "alice@contoso.com"
        assert e.caller_ip == "20.1.2.3"  # CallerIpAddress <- callerIpAddress / httpRequest.clientIpAddress
    assert [e.status for e in events][-1] in ("Success", "Succeeded")  # ActivityStatusValue <- resultType/status


# --- 1. formats -------------------------------------------------------------------------------------

def test_activity_log_records_in_the_storage_tree_as_json_lines_and_gz(tmp_path: Path) -> None:
    hour = tmp_path / "insights-activity-logs" / "resourceId=/SUBSCRIPTIONS/S/y=2026/m=11/d=19"
    (hour / "h=06" / "m=00").mkdir(parents=True)
    (hour / "h=07" / "m=00").mkdir(parents=True)
    (hour / "h=06" / "m=00" / "PT1H.json").write_text(jsonl([record(0, "Start"), record(5, "Accept")]), encoding="utf-8")
    with gzip.open(hour / "h=07" / "m=00" / "PT1H.json.gz", "wt", encoding="utf-8") as handle:
        handle.write(jsonl([record(9, "Success")]))
    ueba_file(tmp_path)
    for prefilter in (True, False):
        events, report, rows = read(tmp_path, prefilter=prefilter)
        assert_mapped(events, "c-rec", times=["2026-11-19T06:00:00", "2026-11-19T06:00:05", "2026-11-19T06:00:09"])
        assert [e.status for e in events] == ["Start", "Accept", "Success"]
        assert report.rows_read["AzureActivity"] == 3
        assert len(rows) == 1
        assert rows[0]["VirtualMachineName"] == "vm-1"


def test_records_wrapper_document_and_the_caller_claims(tmp_path: Path) -> None:
    spn = record(3, claims={"appid": "9b2f-app"})  # a service principal: no UPN claim
    (tmp_path / "AzureActivity.json").write_text(json.dumps({"records": [record(1), spn]}, indent=2), encoding="utf-8")
    ueba_file(tmp_path)
    events, _, _ = read(tmp_path)
    assert [e.caller for e in events] == ["alice@contoso.com", "9b2f-app"]
    assert [e.status for e in events] == ["Success", "Success"]


@pytest.mark.parametrize("shape", ["value", "array", "single"])
def test_rest_and_az_cli_events(tmp_path: Path, shape: str) -> None:
    events_in = [event(0, "Started"), event(7, "Succeeded")]
    document: Any = {"value": events_in} if shape == "value" else events_in if shape == "array" else events_in[1]
    (tmp_path / "AzureActivity.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    ueba_file(tmp_path)
    events, _, rows = read(tmp_path)
    times = ["2026-11-19T06:00:00", "2026-11-19T06:00:07"] if shape != "single" else ["2026-11-19T06:00:07"]
    assert_mapped(events, "c-rest", times=times)
    assert len(rows) == 1


def test_powershell_convertto_json_of_get_azlog(tmp_path: Path) -> None:
    document = {"value": [powershell_event(2, "Started"), powershell_event(4)], "Count": 2}  # PowerShell 5.1's wrapper
    (tmp_path / "AzureActivity.json").write_text("\ufeff" + json.dumps(document, indent=4), encoding="utf-8")
    ueba_file(tmp_path)
    events, _, rows = read(tmp_path)
    assert_mapped(events, "c-ps", times=["2026-11-19T06:00:02", "2026-11-19T06:00:04"])
    assert len(rows) == 1
    assert rows[0]["Subscription"]
    assert rows[0]["VirtualMachineName"] == "vm-1"


def test_powershell_export_csv_with_a_type_line(tmp_path: Path) -> None:
    header = '"TimeGenerated","OperationNameValue","Authorization","CorrelationId","Caller","CallerIpAddress",' \
             '"ActivityStatusValue"'
    auth = json.dumps({"scope": VM_SCOPE}).replace('"', '""')
    lines = ["#TYPE System.Management.Automation.PSCustomObject", header] + [
        f'"2026-11-19T06:00:0{i}Z","{OPERATION}","{auth}","c-csv","alice@contoso.com","20.1.2.3","{s}"'
        for i, s in enumerate(("Started", "Succeeded"))]
    (tmp_path / "AzureActivity.csv").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    ueba_file(tmp_path)
    events, report, rows = read(tmp_path)
    assert_mapped(events, "c-csv", times=["2026-11-19T06:00:00", "2026-11-19T06:00:01"])
    assert report.malformed_count == 0
    assert len(rows) == 1


def test_export_csv_of_get_azlog_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "AzureActivity.csv").write_text(
        '#TYPE Microsoft.Azure.Commands.Insights.OutputClasses.PSEventData\r\n"Authorization","Caller"\r\n'
        '"Microsoft.Azure.Commands.Insights.OutputClasses.PSEventDataAuthorization","a@b.c"\r\n', encoding="utf-8")
    ueba_file(tmp_path)
    with pytest.raises(InputError, match="ConvertTo-Json"):
        read(tmp_path)


def older(second: int, operation: str, status: str = "Succeeded") -> dict[str, Any]:
    row = columns_row(second, status)
    del row["OperationNameValue"], row["ActivityStatusValue"]
    return {**row, "OperationName": operation, "ActivityStatus": status}


def test_older_schema_with_operation_identifiers_is_mapped(tmp_path: Path) -> None:
    (tmp_path / "AzureActivity.jsonl").write_text(jsonl([older(0, OPERATION, "Started"), older(3, OPERATION)]),
                                                  encoding="utf-8")
    ueba_file(tmp_path)
    for prefilter in (True, False):
        events, _, rows = read(tmp_path, prefilter=prefilter)
        assert_mapped(events, "c-cols", times=["2026-11-19T06:00:00", "2026-11-19T06:00:03"])
        assert [e.status for e in events] == ["Started", "Succeeded"]  # ActivityStatus -> ActivityStatusValue
        assert len(rows) == 1


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_older_schema_display_names_are_refused_with_how_to_convert(tmp_path: Path, fmt: str) -> None:
    # The display name is on a later line: the scan must not skip it (it holds no "runcommand").
    rows = [older(0, "Microsoft.Compute/virtualMachines/write"), older(3, "Run Command on Virtual Machine")]
    if fmt == "jsonl":
        (tmp_path / "AzureActivity.jsonl").write_text(jsonl(rows), encoding="utf-8")
    else:
        with (tmp_path / "AzureActivity.csv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    ueba_file(tmp_path)
    with pytest.raises(InputError, match=r"OperationNameValue.*az monitor activity-log list") as caught:
        read(tmp_path)
    assert caught.value.column == "OperationName"
    assert "Run Command on Virtual Machine" in str(caught.value)


def test_log_analytics_data_export_tree_with_many_hourly_files(tmp_path: Path) -> None:
    base = "WorkspaceResourceId=/subscriptions/s/resourcegroups/rg/providers/microsoft.operationalinsights/workspaces/w"
    for hour, rows in enumerate(([columns_row(0, "Started")], [columns_row(4, "Accepted")], [columns_row(8)])):
        folder = tmp_path / "am-azureactivity" / base / f"y=2026/m=11/d=19/h={hour:02d}/m=00"
        folder.mkdir(parents=True)
        (folder / "PT1H.json").write_text(jsonl(rows), encoding="utf-8")
    ueba = tmp_path / "am-behavioranalytics" / base / "y=2026/m=11/d=19/h=05/m=00"
    ueba.mkdir(parents=True)
    (ueba / "PT1H.json").write_text(jsonl([UEBA_ROW]), encoding="utf-8")
    (tmp_path / "readme.txt").write_text("not an export", encoding="utf-8")
    events, report, rows = read(tmp_path)
    assert_mapped(events, "c-cols", times=["2026-11-19T06:00:00", "2026-11-19T06:00:04", "2026-11-19T06:00:08"])
    assert report.rows_read == {"AzureActivity": 3, "BehaviorAnalytics": 1}
    assert len(rows) == 1


def test_a_corrupt_gz_is_bad_input_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "AzureActivity.jsonl.gz").write_bytes(gzip.compress(jsonl([columns_row(0)]).encode())[:-12])
    ueba_file(tmp_path)
    with pytest.raises(InputError, match=r"AzureActivity\.jsonl\.gz"):
        read(tmp_path, prefilter=False)


# --- 2. order and duplicates -------------------------------------------------------------------------

def test_overlapping_exports_count_each_event_once_in_any_order(tmp_path: Path) -> None:
    rows = [columns_row(s, st) for s, st in ((0, "Started"), (4, "Accepted"), (8, "Succeeded"))]
    rows += [{**columns_row(20, "Succeeded"), "CorrelationId": "c-other", "Caller": "bob@contoso.com"}]
    single = tmp_path / "single"
    single.mkdir()
    (single / "AzureActivity.jsonl").write_text(jsonl(rows), encoding="utf-8")
    ueba_file(single)
    _, single_report, expected = read(single)
    assert single_report.duplicates_skipped == 0
    for seed in range(3):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        overlap = tmp_path / f"overlap{seed}"
        overlap.mkdir()
        (overlap / "AzureActivity-day1.jsonl").write_text(jsonl(shuffled[:3]), encoding="utf-8")
        # the second export overlaps the first by two events
        (overlap / "AzureActivity-day2.jsonl").write_text(jsonl(shuffled[1:]), encoding="utf-8")
        ueba_file(overlap)
        for prefilter in (True, False):
            events, report, got = read(overlap, prefilter=prefilter)
            assert report.duplicates_skipped == 2
            assert len(events) == 4
            assert got == expected


def test_same_event_in_rest_and_column_exports_is_one_event(tmp_path: Path) -> None:
    rest = event(7, "Succeeded", event_id="D-1")
    column = {**columns_row(7, "Succeeded", event_id="d-1"), "CorrelationId": "C-REST",
              "TimeGenerated": "2026-11-19T06:00:07.5000000Z"}
    (tmp_path / "AzureActivity.json").write_text(json.dumps({"value": [rest]}), encoding="utf-8")
    (tmp_path / "AzureActivity-workspace.jsonl").write_text(jsonl([column]), encoding="utf-8")
    ueba_file(tmp_path)
    events, report, _ = read(tmp_path)
    assert len(events) == 1
    assert report.duplicates_skipped == 1


def test_events_without_an_identity_are_never_merged(tmp_path: Path) -> None:
    (tmp_path / "AzureActivity.jsonl").write_text(jsonl([record(1), record(1)]), encoding="utf-8")  # no eventDataId
    ueba_file(tmp_path)
    events, report, _ = read(tmp_path)
    assert len(events) == 2
    assert report.duplicates_skipped == 0


def test_summary_says_how_many_duplicates_were_skipped(tmp_path: Path) -> None:
    (tmp_path / "AzureActivity-a.jsonl").write_text(jsonl([columns_row(0)]), encoding="utf-8")
    (tmp_path / "AzureActivity-b.jsonl").write_text(jsonl([columns_row(0)]), encoding="utf-8")
    ueba_file(tmp_path)
    done = subprocess.run([sys.executable, "-m", "detector", "run", "--data", str(tmp_path), "--at",
                           format_datetime(AT), "--json"], capture_output=True, text=True, cwd=ROOT, check=False)
    assert json.loads(done.stdout)["summary"]["duplicates_skipped"] == 1, done.stderr
    assert done.stderr == ""  # not a terminal: no progress bar


# --- 3. progress -------------------------------------------------------------------------------------

def _run_on_a_terminal(directory: Path, *extra: str) -> tuple[int, str, str]:
    """The CLI with stderr on a pseudo-terminal (as in an interactive shell) and stdout on a pipe."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 40 rows, 160 columns
    proc = subprocess.Popen([sys.executable, "-m", "detector", "run", "--data", str(directory), "--at",
                             format_datetime(AT), "--json", *extra], stdout=subprocess.PIPE, stderr=terminal,
                            cwd=ROOT, env={**os.environ, "COLUMNS": "120"})
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(controller)
    out = proc.communicate(timeout=60)[0].decode()
    return proc.returncode, out, seen.decode(errors="replace")


def _progress_workspace(tmp_path: Path) -> Path:
    for hour in range(3):
        (tmp_path / f"AzureActivity-{hour:02d}.jsonl").write_text(
            jsonl([columns_row(s % 60, event_id=f"h{hour}-{s}") for s in range(2000)]), encoding="utf-8")
    ueba_file(tmp_path)
    return tmp_path


def test_progress_bar_on_a_terminal_shows_files_bytes_and_rows(tmp_path: Path) -> None:
    code, out, terminal = _run_on_a_terminal(_progress_workspace(tmp_path))
    assert code == 0, terminal
    assert "reading 4 files" in terminal, terminal
    assert "B/s" in terminal, terminal
    assert "100%" in terminal, terminal  # every byte and row, counted as read
    assert "6,001 rows" in terminal, terminal
    assert "reading" not in out
    assert json.loads(out)["summary"]["rows_read"]["AzureActivity"] == 6000


def test_quiet_silences_the_progress_bar(tmp_path: Path) -> None:
    code, out, terminal = _run_on_a_terminal(_progress_workspace(tmp_path), "--quiet")
    assert code == 0
    assert terminal == ""
    assert json.loads(out)["summary"]["rows_read"]["AzureActivity"] == 6000
