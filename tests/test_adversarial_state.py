"""Defects found by trying to break the promises of the run state (issue 11) and self-monitoring
(issue 14) as a new user and as an attacker would: each test reproduces one, through the CLI where a
user would meet it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from detector.cli import main


@pytest.fixture(autouse=True)
def _no_destinations(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DETECTOR_TEAMS_WEBHOOK_URLS", "DETECTOR_LOGICAPP_WEBHOOK_URLS", "DETECTOR_TABLE_ENDPOINT",
                 "DETECTOR_TABLE_CONNECTION_STRING", "DETECTOR_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("content", ['{"x": 1}', '{"version": 1, "record": [1]}', '[1, 2]'])
def test_status_names_a_health_file_of_another_shape(tmp_path: Path, content: str) -> None:
    # README: a state file the detector did not write is a one-line error naming the file (exit 4),
    # never an internal error -- and never a silent "healthy".
    state = tmp_path / "state"
    assert call("run", "--state", str(state))[0] == 0
    (state / "health.json").write_text(content, encoding="utf-8")
    code, out, err = call("status", "--state", str(state), "--at", "2026-11-20T07:00:00Z")
    assert code == 4, (out, err)
    assert "health.json" in err and "internal error" not in err, err


def test_status_does_not_call_an_unreadable_health_record_healthy(tmp_path: Path) -> None:
    # A health record that says "failing" but cannot be read (a damaged time) was silently replaced
    # by an empty one, and status answered HEALTHY with exit 0.
    state = tmp_path / "state"
    assert call("run", "--state", str(state))[0] == 0
    record = {"status": "failing", "since": "not a time", "failed_runs": 3}
    (state / "health.json").write_text(json.dumps({"version": 1, "record": record}), encoding="utf-8")
    code, out, err = call("status", "--state", str(state), "--at", "2026-11-20T07:00:00Z")
    assert code != 0, out
    assert "health record" in out.splitlines()[-1], out
