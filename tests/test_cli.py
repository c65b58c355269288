"""The command line: exit codes, outputs, and errors without tracebacks."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from detector.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE, main
from detector.model import RULE_COLUMNS


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_run_on_the_sample_prints_a_table_and_summary() -> None:
    code, out, _ = call("run")
    assert code == EXIT_OK
    assert "alice.admin@contoso.com" in out
    assert "vm-web-01" in out
    assert "rows read: 500 AzureActivity, 184 BehaviorAnalytics; malformed rows: 0; run commands: 22; " \
           "matches: 12; alerts: 11" in out


def test_run_json() -> None:
    code, out, _ = call("run", "--json")
    payload = json.loads(out)
    assert code == EXIT_OK
    assert payload["summary"]["alerts"] == len(payload["alerts"]) == 11
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
    (tmp_path / "AzureActivity.jsonl").write_text("{broken\n", encoding="utf-8")
    (tmp_path / "BehaviorAnalytics.jsonl").write_text("", encoding="utf-8")
    code, _, err = call("run", "--data", str(tmp_path), "--at", "2026-11-20T06:00:00Z")
    assert code == EXIT_OK
    assert "line 1: not JSON" in err
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
    assert json.loads(done.stdout)["summary"]["alerts"] == 11
