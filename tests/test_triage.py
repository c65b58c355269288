"""Triage context read from exports: ``SourceIPAddress`` and ``InvestigationPriority`` are optional columns
(older exports lack them), carried on the UEBA match for context, never changing the rule's rows."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from detector.model import ACTIVITY_COLUMNS, Alert
from detector.outbox import decide
from detector.pipeline import detect
from detector.sample.exports import WRITERS
from detector.sources.files import FileSource
from detector.store import StoredAlert
from detector.window import Window
from tests.builders import AT, T0, run_command
from tests.test_cards import rich_alert

OPTIONAL = ("SourceIPAddress", "InvestigationPriority")


def _activity_rows() -> list[dict[str, Any]]:
    return [{"TimeGenerated": e.time, "OperationNameValue": e.operation_name, "Authorization": e.authorization,
             "CorrelationId": e.correlation_id, "Caller": e.caller, "CallerIpAddress": e.caller_ip,
             "ActivityStatusValue": e.status} for e in run_command(T0)]


def _ueba_rows() -> list[dict[str, Any]]:
    return [{"TimeGenerated": T0 - 3600 * 10_000_000, "EventSource": "Azure AD", "ActionType": "Sign-in",
             "UserPrincipalName": "alice@contoso.com", "SourceIPLocation": "Lagos, NG",
             "ActivityInsights": {"ActionUncommonlyPerformedByUser": "True"}, "UsersInsights": {"BlastRadius": "Low"},
             "SourceIPAddress": "20.1.2.3", "InvestigationPriority": 8}]


def _drop_columns(path: Path, ext: str, names: tuple[str, ...]) -> None:
    """What an older export looks like: the same file without these columns."""
    if ext == "csv":
        with path.open(encoding="utf-8", newline="") as handle:
            records = list(csv.reader(handle))
        keep = [i for i, name in enumerate(records[0]) if name not in names]
        with path.open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle, lineterminator="\r\n").writerows([[r[i] for i in keep] for r in records])
    elif ext == "json":
        body = json.loads(path.read_text(encoding="utf-8"))
        table = body["tables"][0]
        keep = [i for i, c in enumerate(table["columns"]) if c["name"] not in names]
        table["columns"] = [table["columns"][i] for i in keep]
        table["rows"] = [[row[i] for i in keep] for row in table["rows"]]
        path.write_text(json.dumps(body), encoding="utf-8")
    elif ext == "array.json":
        items = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps([{k: v for k, v in o.items() if k not in names} for o in items]), encoding="utf-8")
    else:
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        path.write_text("".join(json.dumps({k: v for k, v in o.items() if k not in names}) + "\n" for o in lines),
                        encoding="utf-8")


@pytest.mark.parametrize("ext", ["csv", "json", "array.json", "jsonl"])
def test_optional_columns_are_read_when_present_and_never_required(tmp_path: Path, ext: str) -> None:
    results = {}
    for present in (True, False):
        folder = tmp_path / str(present)
        folder.mkdir()
        suffix = "json" if ext == "array.json" else ext
        WRITERS[ext](folder / f"AzureActivity.{suffix}", "AzureActivity", _activity_rows())
        WRITERS[ext](folder / f"BehaviorAnalytics.{suffix}", "BehaviorAnalytics", _ueba_rows())
        if not present:
            _drop_columns(folder / f"BehaviorAnalytics.{suffix}", ext, OPTIONAL)
        result = detect(FileSource(folder), Window.ending_at(AT))
        assert result.report.malformed_count == 0
        results[present] = result
    [with_ip] = results[True].correlation.rows
    [without] = results[False].correlation.rows
    assert (with_ip.ueba_source_ip, with_ip.ueba_investigation_priority) == ("20.1.2.3", 8)
    assert (without.ueba_source_ip, without.ueba_investigation_priority) == ("", None)
    assert with_ip.to_dict() == without.to_dict()  # the rule's 13 columns do not change
    [alert] = results[True].alerts
    assert alert.rows[0].ueba_source_ip == alert.caller_ip == "20.1.2.3"
    assert set(ACTIVITY_COLUMNS).isdisjoint(OPTIONAL)


def test_a_stored_alert_keeps_its_context_and_older_state_still_loads() -> None:
    alert = rich_alert()
    data = alert.to_dict()
    assert Alert.from_dict(json.loads(json.dumps(data))) == alert
    data.pop("Context")
    for row in data["Rows"]:
        row.pop("UEBASourceIPAddress")
        row.pop("UEBAInvestigationPriority")
    older = Alert.from_dict(data)
    assert older.context is None
    assert older.rows[0].ueba_source_ip == ""
    # The next run sees the same matches, now with their IPs: nothing new, no duplicated rows.
    stored = StoredAlert(alert=older, first_seen=AT, updated=AT)
    assert decide(stored, alert, None, [], now=AT, send_updates=True).outcome == "unchanged"
    later = replace(alert, rows=(*alert.rows, alert.rows[0]._replace(ueba_time=alert.rows[0].ueba_time + 1)))
    decision = decide(stored, later, None, [], now=AT, send_updates=True)
    assert decision.outcome == "updated"
    assert decision.record is not None
    merged = decision.record.alert
    assert len(merged.rows) == len(older.rows) + 1
    assert merged.context == alert.context  # the newer run's context
    detected_later = replace(later, context=replace(alert.context, detected_at=AT + 1))
    again = decide(decision.record, replace(detected_later, rows=(*later.rows, later.rows[0]._replace(
        ueba_time=later.rows[0].ueba_time + 2))), None, [], now=AT, send_updates=True)
    assert again.record is not None
    assert again.record.alert.context == alert.context
