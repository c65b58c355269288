"""The command line: exit codes, outputs, and errors without tracebacks."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from detector.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE, main
from detector.model import ACTIVITY_COLUMNS, RULE_COLUMNS


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_run_on_the_sample_prints_a_table_and_summary() -> None:
    code, out, _ = call("run")
    assert code == EXIT_OK
    assert "alice.admin@contoso.com" in out
    assert "vm-web-01" in out
    # The sample's example allowlist suppresses its five documented false positives.
    assert "rows read: 524 AzureActivity, 191 BehaviorAnalytics; malformed rows: 0; duplicates skipped: 0; run commands: 22; " \
           "matches: 12; alerts: 6; suppressed: 5" in out
    assert "by allowlist entry maintenance-script-rg" in out


def test_run_without_allowlist_shows_every_match() -> None:
    code, out, _ = call("run", "--no-allowlist")
    assert code == EXIT_OK
    assert "alerts: 11; suppressed: 0" in out


def test_run_json() -> None:
    code, out, _ = call("run", "--json")
    payload = json.loads(out)
    assert code == EXIT_OK
    assert payload["summary"]["alerts"] == len(payload["alerts"]) == 6
    assert len(payload["suppressed"]) == 5
    assert payload["summary"]["window"] == {"start": "2026-11-18T06:00:00Z", "end": "2026-11-20T06:00:00Z"}


def test_rows_prints_the_thirteen_columns() -> None:
    code, out, _ = call("rows", "--at", "2026-11-20T06:00:00Z")
    rows = json.loads(out)
    assert code == EXIT_OK
    assert len(rows) == 12
    assert all(tuple(r) == RULE_COLUMNS for r in rows)


def test_an_earlier_run_time_sees_fewer_alerts() -> None:
    _, out, _ = call("rows", "--at", "2026-11-19T06:00:00Z")
    assert 0 < len(json.loads(out)) < 12


def test_bad_input_exit_code_and_message(tmp_path: Path) -> None:
    code, out, err = call("run", "--data", str(tmp_path))
    assert code == EXIT_BAD_INPUT
    assert "no export of AzureActivity" in err
    assert "Traceback" not in err
    assert out == ""


def test_strict_turns_malformed_rows_into_bad_input(tmp_path: Path) -> None:
    good = json.dumps(dict.fromkeys(ACTIVITY_COLUMNS, "") | {"TimeGenerated": "2026-11-19T06:00:00Z"})
    (tmp_path / "AzureActivity.jsonl").write_text(f"{good}\n{{broken RUNCOMMAND\n", encoding="utf-8")
    (tmp_path / "BehaviorAnalytics.jsonl").write_text("", encoding="utf-8")
    code, _, err = call("run", "--data", str(tmp_path), "--at", "2026-11-20T06:00:00Z")
    assert code == EXIT_OK
    assert "line 2: not JSON" in err
    code, _, _ = call("run", "--data", str(tmp_path), "--at", "2026-11-20T06:00:00Z", "--strict")
    assert code == EXIT_BAD_INPUT


@pytest.mark.parametrize("argv", [[], ["run", "--at", "yesterday"], ["nope"], ["run", "--period-hours", "0"]])
def test_usage_errors(argv: list[str]) -> None:
    code, _, _ = call(*argv)
    assert code == EXIT_USAGE


def test_module_entry_point_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "detector", "run", "--json"], capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary"]["alerts"] == 6


def test_allowlist_commands_on_a_state_folder(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    code, out, _ = call("allowlist", "add", "--state", state, "--id", "maint", "--reason", "maintenance scripts",
                        "--when", "resource_group", "equals", "prod-maintenance", "--expires", "2099-01-01T00:00:00Z")
    assert code == EXIT_OK
    assert "saved allowlist entry maint" in out
    code, out, err = call("allowlist", "add", "--state", state, "--id", "bad", "--reason", "x",
                          "--when", "vm_name", "regex", ".*")
    assert code == EXIT_BAD_INPUT
    assert "not saved" in err
    assert "matches (nearly) everything" in err
    code, out, _ = call("allowlist", "add", "--state", state, "--id", "patch", "--reason", "patching",
                        "--when", "caller", "in", "a@contoso.com,b@contoso.com",
                        "--window-days", "Sat,Sun", "--window-start", "22:00", "--window-end", "04:00",
                        "--window-tz", "Europe/Berlin")
    assert code == EXIT_OK
    assert "during Sat,Sun 22:00-04:00 Europe/Berlin" in out
    code, out, _ = call("allowlist", "list", "--state", state)
    assert "- maint: active; hits 0, last hit never" in out
    code, out, _ = call("allowlist", "disable", "--state", state, "maint")
    assert code == EXIT_OK
    code, out, _ = call("allowlist", "list", "--state", state)
    assert "- maint: disabled" in out
    assert call("allowlist", "remove", "--state", state, "maint")[0] == EXIT_OK
    code, _, err = call("allowlist", "remove", "--state", state, "maint")
    assert code == EXIT_BAD_INPUT
    assert "no allowlist entry 'maint'" in err


def test_allowlist_check_reports_invalid_entries_and_what_would_be_suppressed(tmp_path: Path) -> None:
    from detector.cli import SAMPLE_ALLOWLIST
    code, out, _ = call("allowlist", "check", "--file", str(SAMPLE_ALLOWLIST))
    assert code == EXIT_OK
    assert "5 active, 0 not in force" in out
    assert "maintenance-script-rg: would suppress 1 alert(s)" in out
    bad = tmp_path / "allow.json"
    bad.write_text(json.dumps({"entries": [
        {"id": "old", "reason": "r", "conditions": [{"field": "caller", "op": "equals", "value": "x"}],
         "expires_at": "2020-01-01T00:00:00Z"},
        {"id": "typo", "reason": "r", "conditions": [{"field": "callr", "op": "equals", "value": "x"}]}]}))
    code, out, _ = call("allowlist", "check", "--file", str(bad), "--data", str(SAMPLE_ALLOWLIST.parent / "workspace"),
                        "--at", "2026-11-20T06:00:00Z")
    assert code == EXIT_BAD_INPUT
    assert "NOT IN FORCE old: expired" in out
    assert "NOT IN FORCE typo: invalid, suppresses nothing: condition 1: unknown field 'callr'" in out


def test_stateful_run_records_then_dedups(tmp_path: Path) -> None:
    from detector.cli import SAMPLE_ALLOWLIST
    state = tmp_path / "state"
    state.mkdir()
    (state / "allowlist.json").write_text(SAMPLE_ALLOWLIST.read_text(encoding="utf-8"), encoding="utf-8")
    code, out, _ = call("run", "--state", str(state))
    assert code == EXIT_OK
    assert "new alerts: 6; already known: 0" in out
    code, out, _ = call("run", "--state", str(state))
    assert "new alerts: 0; already known: 6" in out


@pytest.mark.parametrize("argv", [["run", "--period-hours", "100000000"], ["run", "--at", "0001-01-01T00:00:00Z"],
                                  ["run", "--bogus"], ["allowlist", "add", "--when", "caller"],
                                  ["run", "--date-order", "ymd"]])
def test_usage_errors_are_one_line_on_stderr(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "detector", *argv], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "error:" in done.stderr
