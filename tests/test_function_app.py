"""The Function App: found by the Functions SDK with the right timers, and a past-due call runs the
whole pipeline (file source, local state, local webhook servers) and delivers the sample's alerts."""

from __future__ import annotations

import functools
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from detector.sample.generate import SAMPLE_DIR, build, write
from detector.timestamps import format_datetime, from_datetime
from tests.webhook import webhook_server

SECRET = "s3cr3tSIGvalue"


@functools.cache  # get_functions() may be called once per process
def functions() -> dict[str, Any]:
    import function_app
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def test_timers_are_registered_with_their_schedules() -> None:
    found = functions()
    assert set(found) == {"detector_daily", "detector_redeliver"}
    expected = {"detector_daily": "%DETECTOR_SCHEDULE%", "detector_redeliver": "%DETECTOR_REDELIVER_SCHEDULE%"}
    for name, schedule in expected.items():
        [binding] = json.loads(found[name].get_function_json())["bindings"]
        assert binding["type"] == "timerTrigger"
        assert binding["schedule"] == schedule
        assert binding["runOnStartup"] is False
        assert binding["useMonitor"] is True
    retry = found["detector_daily"].get_setting("retry_policy").get_dict_repr()
    assert retry["strategy"] == "exponential_backoff"
    assert int(retry["max_retry_count"]) >= 1


class Timer:
    past_due = True


def test_past_due_run_delivers_the_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "exports"
    at = from_datetime(datetime.now(UTC).replace(microsecond=0))
    write(build(at=format_datetime(at)), data)  # the sample, shifted to end now
    state = tmp_path / "state"
    state.mkdir()
    allowlist = json.loads((SAMPLE_DIR.parent / "allowlist.json").read_text())
    for entry in allowlist["entries"]:
        entry.pop("window", None)  # the shifted sample no longer falls on Thursday evening in Berlin
    (state / "allowlist.json").write_text(json.dumps(allowlist))
    caplog.set_level(logging.DEBUG)
    with webhook_server() as server:
        for key, value in {
            "DETECTOR_SOURCE_DIR": str(data), "DETECTOR_STATE_DIR": str(state),
            "DETECTOR_TEAMS_WEBHOOK_URLS": server.url("/teams", SECRET),
            "DETECTOR_LOGICAPP_WEBHOOK_URLS": server.url("/logic", SECRET),
        }.items():
            monkeypatch.setenv(key, value)
        functions()["detector_daily"].get_user_function()(Timer())
        teams, logic = server.bodies("/teams"), server.bodies("/logic")
        assert len(teams) == len(logic) == 6  # 11 matches, 5 allowlisted
        assert {b["runCommand"]["caller"] for b in logic} >= {"alice.admin@contoso.com", "Henry.Ops@Contoso.com"}
        functions()["detector_daily"].get_user_function()(Timer())  # the overlapping next run sends nothing
        functions()["detector_redeliver"].get_user_function()(Timer())
        assert len(server.bodies("/teams")) == 6
    messages = [r.getMessage() for r in caplog.records]
    assert any("past due" in m for m in messages)
    [summary_line, *_] = [m for m in messages if m.startswith("detector run summary ")]
    summary = json.loads(summary_line.removeprefix("detector run summary "))
    assert (summary["alerts"], summary["suppressed"], summary["delivered"], summary["undelivered"]) == (6, 5, 12, 0)
    for field in ("window", "rows_read", "run_commands", "matches", "duration_seconds"):
        assert field in summary
    assert SECRET not in caplog.text


def test_a_failed_run_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("DETECTOR_SOURCE_DIR", str(tmp_path / "missing"))
    monkeypatch.setenv("DETECTOR_STATE_DIR", str(tmp_path / "state"))
    from detector.errors import DetectorError
    with pytest.raises(DetectorError):
        functions()["detector_daily"].get_user_function()(Timer())


def test_a_bad_setting_names_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETECTOR_PERIOD_HOURS", "two days")
    monkeypatch.setenv("DETECTOR_STATE_DIR", str(tmp_path / "state"))
    from detector.errors import ConfigError
    with pytest.raises(ConfigError, match="DETECTOR_PERIOD_HOURS"):
        functions()["detector_daily"].get_user_function()(Timer())
    # The failure is still recorded for the health messages, with the settings that do validate.
    health = json.loads((tmp_path / "state" / "health.json").read_text())["record"]
    assert (health["status"], health["failure"]["stage"], health["failure"]["code"]) == (
        "failing", "settings", "DETECTOR_PERIOD_HOURS")
