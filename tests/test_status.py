"""``python -m detector status`` on both backends (local files and Table Storage on Azurite): the
verdict and its exit code (0 healthy, 1 degraded, 4 failing), what each part of the report reads,
``--json``, and no secret in the output."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detector import health
from detector.cli import main
from detector.errors import SourceError
from detector.health_outbox import update
from detector.status import build_status
from detector.store import FAILED, PENDING, DestinationState, StateStore, StoredAlert
from detector.store.files import FileStore
from detector.store.tables import TableStore
from detector.timestamps import TICKS_PER_DAY, TICKS_PER_HOUR, format_datetime, parse_datetime
from tests.services import AZURITE_KEY, azurite_tables
from tests.test_delivery import one_alert

NOW = parse_datetime("2026-11-20T07:00:00Z")
RUN_AT = parse_datetime("2026-11-20T06:00:00Z")


@pytest.fixture(params=["files", "tables"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[StateStore, list[str], dict[str, str]]]:
    """A store, the CLI options that open it, and the environment the CLI needs."""
    if request.param == "files":
        yield FileStore(tmp_path / "state"), ["--state", str(tmp_path / "state")], {}
    else:
        with azurite_tables() as connection:
            yield TableStore.from_connection_string(connection), [], {"DETECTOR_TABLE_CONNECTION_STRING": connection}


def succeeded(store: StateStore, at: int, run_id: str = "r1") -> None:
    window = {"start": format_datetime(at - 48 * TICKS_PER_HOUR), "end": format_datetime(at)}
    store.record_run(run_id, {"run_id": run_id, "status": "succeeded", "window": window, "alerts": 2,
                              "new_alerts": 1, "suppressed": 1, "delivered": 2, "undelivered": 0,
                              "duration_seconds": 1.25})
    store.set_watermark(at)


def entry(entry_id: str, *, created: int, expires: int | None = None) -> dict[str, Any]:
    return {"id": entry_id, "reason": "known-good", "conditions": [{"field": "caller", "op": "equals",
                                                                    "value": f"{entry_id}@contoso.com"}],
            "created_by": "t", "created_at": format_datetime(created),
            "expires_at": format_datetime(expires) if expires is not None else None, "enabled": True}


def status(store: StateStore, now: int = NOW) -> Any:
    return build_status(store, now=now, frequency_hours=24, grace_hours=2, retention_days=30)


def test_no_run_at_all_is_failing(backend: tuple[StateStore, list[str], dict[str, str]]) -> None:
    report = status(backend[0])
    assert (report.verdict, report.exit_code) == ("failing", 4)
    assert "no successful run recorded" in report.verdict_line()


def test_a_recent_successful_run_and_nothing_owed_is_healthy(backend: tuple[StateStore, list[str],
                                                                             dict[str, str]]) -> None:
    store = backend[0]
    succeeded(store, RUN_AT)
    store.put_allowlist(entry("fresh", created=NOW - 10 * TICKS_PER_DAY))  # young: not stale without hits
    report = status(store)
    assert (report.verdict, report.exit_code) == ("healthy", 0)
    [run] = report.runs
    assert (run.time, run.status, run.counts["alerts"], run.duration_seconds) == (
        "2026-11-20T06:00:00Z", "succeeded", 2, 1.25)
    assert report.late is False


def test_owed_alerts_and_allowlist_to_review_make_it_degraded(backend: tuple[StateStore, list[str],
                                                                             dict[str, str]]) -> None:
    store = backend[0]
    succeeded(store, RUN_AT)
    store.create_alert(StoredAlert(alert=one_alert(), destinations={
        "teams-1": DestinationState(FAILED, 3, "teams-1: HTTP 503 after retries"),
        "logicapp-1": DestinationState(PENDING)}, first_seen=RUN_AT, updated=RUN_AT))
    store.put_allowlist(entry("soon", created=NOW - 10 * TICKS_PER_DAY, expires=NOW + 6 * TICKS_PER_DAY))
    store.put_allowlist(entry("later", created=NOW - 10 * TICKS_PER_DAY, expires=NOW + 8 * TICKS_PER_DAY))
    store.put_allowlist(entry("stale", created=NOW - 200 * TICKS_PER_DAY))
    store.put_allowlist(entry("used", created=NOW - 200 * TICKS_PER_DAY))
    store.put_allowlist(entry("used-long-ago", created=NOW - 200 * TICKS_PER_DAY))
    store.record_hits({"used": 1}, NOW - 30 * TICKS_PER_DAY)
    store.record_hits({"used-long-ago": 1}, NOW - 91 * TICKS_PER_DAY)
    store.put_allowlist({"id": "broken", "reason": "x", "conditions": [{"field": "nope", "op": "equals",
                                                                        "value": "x"}]})
    report = status(store)
    assert (report.verdict, report.exit_code) == ("degraded", 1)
    none = {"not_configured": 0, "not_configured_since": None}
    assert report.destinations == {"logicapp-1": {"pending": 1, "failed": 0, **none},
                                   "teams-1": {"pending": 0, "failed": 1, **none}}
    assert [e["id"] for e in report.expiring] == ["soon"]
    assert sorted(e["id"] for e in report.unused) == ["stale", "used-long-ago"]
    assert [p.split(":")[0] for p in report.allowlist_invalid] == ["broken"]
    line = report.verdict_line()
    for part in ("teams-1: 0 alert(s) pending, 1 failed", "1 allowlist entry expire within 7 days",
                 "2 allowlist entries with no hit in 90 days", "1 invalid allowlist entry"):
        assert part in line


def test_a_late_watermark_a_failed_last_run_or_an_open_streak_is_failing(
        backend: tuple[StateStore, list[str], dict[str, str]]) -> None:
    store = backend[0]
    succeeded(store, RUN_AT)
    assert status(store, RUN_AT + 26 * TICKS_PER_HOUR).verdict == "healthy"  # exactly frequency + grace
    late = status(store, RUN_AT + 26 * TICKS_PER_HOUR + 1)
    assert late.verdict == "failing"
    assert "no successful run since 2026-11-20T06:00:00Z (more than 26 h)" in late.verdict_line()
    store.record_run("r2", {"run_id": "r2", "status": "failed", "error": "query failed (code PartialError)",
                            "window": {"start": "2026-11-19T07:00:00Z", "end": "2026-11-21T07:00:00Z"}})
    failed = status(store, RUN_AT + 2 * TICKS_PER_HOUR)
    assert failed.verdict == "failing"
    assert "the last run failed: query failed (code PartialError)" in failed.verdict_line()
    update(store, lambda r: health.after_failure(r, health.classify(SourceError("x", code="PartialError")),
                                                 at=RUN_AT + TICKS_PER_HOUR, destination_ids=["teams-1"]))
    streak = status(store, RUN_AT + 2 * TICKS_PER_HOUR)
    assert "failing since 2026-11-20T07:00:00Z (1 failed run(s))" in streak.verdict_line()
    assert streak.to_dict()["health"]["messages_owed"][0]["owed"] == ["teams-1"]


def test_the_cli_prints_a_report_or_json_and_exits_with_the_verdict(
        backend: tuple[StateStore, list[str], dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    store, options, env = backend
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out, err = io.StringIO(), io.StringIO()
    assert main(["status", *options, "--at", "2026-11-20T07:00:00Z"], out=out, err=err) == 4
    assert out.getvalue().rstrip().splitlines()[-1] == "FAILING: no successful run recorded"
    succeeded(store, RUN_AT)
    out = io.StringIO()
    assert main(["status", *options, "--json", "--at", "2026-11-20T07:00:00Z"], out=out, err=err) == 0
    data = json.loads(out.getvalue())
    assert (data["verdict"], data["exit_code"], data["watermark"]["late"]) == ("healthy", 0, False)
    assert data["runs"][0]["window"] == {"start": "2026-11-18T06:00:00Z", "end": "2026-11-20T06:00:00Z"}
    store.create_alert(StoredAlert(alert=one_alert(), destinations={"teams-1": DestinationState(PENDING)},
                                   first_seen=RUN_AT, updated=RUN_AT))
    out = io.StringIO()
    assert main(["status", *options, "--at", "2026-11-20T07:00:00Z"], out=out, err=err) == 1
    text = out.getvalue()
    assert "alerts owed per destination: teams-1 pending 1 failed 0" in text
    assert AZURITE_KEY not in text + err.getvalue()


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["allowlist", "list"],
                                     ["allowlist", "check"], ["allowlist", "remove", "x"],
                                     ["allowlist", "disable", "x"]])
def test_a_command_that_only_reads_state_never_creates_it(tmp_path: Path, command: list[str]) -> None:
    # `status --state /typo` used to create /typo (and read it as an empty state: "no successful run").
    typo = tmp_path / "no" / "such-state"
    out, err = io.StringIO(), io.StringIO()
    assert main([*command[:2], "--state", str(typo), *command[2:]], out=out, err=err) == 3
    assert err.getvalue().count("\n") == 1, err.getvalue()
    assert str(typo) in err.getvalue(), err.getvalue()
    assert "does not exist" in err.getvalue()
    assert out.getvalue() == ""
    assert not (tmp_path / "no").exists()
    # A folder that exists but holds no detector state (a typo that names another folder) is refused too.
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    err = io.StringIO()
    assert main([*command[:2], "--state", str(other), *command[2:]], out=io.StringIO(), err=err) == 3
    assert str(other) in err.getvalue(), err.getvalue()
    assert "no detector state" in err.getvalue(), err.getvalue()
    assert sorted(p.name for p in other.iterdir()) == ["cat.jpg"]


def test_status_on_a_storage_account_without_the_tables_creates_none(monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.data.tables import TableServiceClient

    with azurite_tables() as connection:
        monkeypatch.setenv("DETECTOR_TABLE_CONNECTION_STRING", connection)
        err = io.StringIO()
        assert main(["status"], out=io.StringIO(), err=err) == 3
        assert "tables do not exist" in err.getvalue(), err.getvalue()
        assert AZURITE_KEY not in err.getvalue()
        assert list(TableServiceClient.from_connection_string(connection).list_tables()) == []


def test_commands_that_write_state_still_create_it(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    out, err = io.StringIO(), io.StringIO()
    assert main(["allowlist", "add", "--state", str(fresh), "--id", "e1", "--reason", "known-good",
                 "--when", "caller", "equals", "ops@contoso.com"], out=out, err=err) == 0, err.getvalue()
    assert main(["status", "--state", str(fresh), "--at", "2026-11-20T07:00:00Z"], out=io.StringIO(),
                err=err) == 4  # exists now: read, and judged (no run yet)


def test_a_partial_run_is_a_failed_run_for_status_health_and_azure_monitor_alike(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # A partial run (one alert's store write failed) closed the health streak as a success while `status`
    # called it FAILING. Decision: it is a failed run everywhere (the watermark stays, an alert is unsaved).
    from detector.functions import daily_run
    from detector.sample.generate import build, write
    from tests.webhook import webhook_server

    refused: list[str] = []
    create = FileStore.create_alert

    def create_but_one(self: FileStore, stored: StoredAlert) -> StoredAlert:
        if not refused or refused[0] == stored.key:
            refused.append(stored.key)
            raise health.StoreError(f"alert {stored.key}: status 413, code EntityTooLarge")
        return create(self, stored)

    write(build(at="2026-11-20T06:00:00Z"), tmp_path / "exports")
    state = tmp_path / "state"
    with webhook_server() as server:
        env = {"DETECTOR_SOURCE_DIR": str(tmp_path / "exports"), "DETECTOR_STATE_DIR": str(state),
               "DETECTOR_LOGICAPP_WEBHOOK_URLS": server.url("/logic")}
        with monkeypatch.context() as patch:
            patch.setattr(FileStore, "create_alert", create_but_one)
            summary = daily_run(past_due=False, env=env, clock=lambda: RUN_AT)
        assert len(refused) == 1  # the fake refused one alert's write
        assert summary["status"] == "partial"
        assert refused[0] in summary["error"]
        failure_lines = [r.getMessage() for r in caplog.records
                         if r.getMessage().startswith(health.FAILURE_PREFIX + " ")]
        assert len(failure_lines) == 1
        assert '"code": "AlertNotRecorded"' in failure_lines[0]
        record = health.HealthRecord.from_dict(FileStore(state).get_health()[0] or {})
        assert (record.status, record.failure and record.failure.code) == ("failing", "AlertNotRecorded")
        notices = [b for b in server.accepted("/logic") if b.get("kind") == "DetectorHealth"]
        assert [n["event"] for n in notices] == ["failing"]
        # The same run, as `status` sees it: FAILING for the same reason, exit 4.
        out = io.StringIO()
        assert main(["status", "--state", str(state), "--at", "2026-11-20T07:00:00Z"], out=out,
                    err=io.StringIO()) == 4
        verdict = out.getvalue().rstrip().splitlines()[-1]
        assert verdict.startswith("FAILING")
        assert "the last run partial: 1 alert(s) could not be recorded" in verdict
        assert "failing since 2026-11-20T06:00:00Z" in verdict
        # The next run records it: a success everywhere, and one "recovered".
        summary = daily_run(past_due=False, env=env, clock=lambda: RUN_AT + TICKS_PER_HOUR)
        assert summary["status"] == "succeeded"
        assert FileStore(state).get_alert(refused[0]) is not None
        notices = [b for b in server.accepted("/logic") if b.get("kind") == "DetectorHealth"]
        assert [n["event"] for n in notices] == ["failing", "recovered"]
        out = io.StringIO()
        assert main(["status", "--state", str(state), "--at", "2026-11-20T08:00:00Z"], out=out,
                    err=io.StringIO()) == 0, out.getvalue()


def test_status_names_the_configured_destinations_by_id_and_host_only(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Ids in the state are hashes: status tells which webhook each configured one is, never its secret parts.
    from detector.settings import destination_id
    url = ("https://prod-12.westeurope.logic.azure.com:443/workflows/6e3f1c2a9b8d4e7f/triggers/manual/paths/invoke"
           "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=s3cr3tSIGvalue")
    store = FileStore(tmp_path / "state")
    succeeded(store, RUN_AT)
    monkeypatch.setenv("DETECTOR_LOGICAPP_WEBHOOK_URLS", url)
    out = io.StringIO()
    assert main(["status", "--state", str(tmp_path / "state"), "--at", "2026-11-20T07:00:00Z"], out=out,
                err=io.StringIO()) == 0
    text = out.getvalue()
    line = f"destinations configured here: {destination_id('logicapp', url)} " \
           "(https://prod-12.westeurope.logic.azure.com:443/…)"
    assert line in text, text
    for secret in ("s3cr3tSIGvalue", "6e3f1c2a9b8d4e7f", "sig="):
        assert secret not in text


def test_an_allowlist_over_its_budget_is_named_first_and_makes_it_degraded(
        backend: tuple[StateStore, list[str], dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    store, options, env = backend
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    succeeded(store, RUN_AT)
    store.put_allowlist(entry("specific", created=NOW - 10 * TICKS_PER_DAY))
    for i in range(12):  # one IPv4 /7 each: narrow enough alone, together over the budget
        store.put_allowlist({"id": f"net{i}", "reason": "known-good", "created_at": format_datetime(NOW - i * TICKS_PER_DAY),
                             "conditions": [{"field": "caller_ip", "op": "cidr", "value": f"{20 * i}.0.0.0/7"}]})
    report = status(store)
    assert (report.verdict, report.exit_code) == ("degraded", 1)
    assert report.reasons["degraded"][0].startswith("allowlist OVER BUDGET: the active entries together would match")
    assert report.allowlist_budget.set_aside
    assert "specific" not in report.allowlist_budget.set_aside
    out, err = io.StringIO(), io.StringIO()
    assert main(["status", *options, "--json", "--at", "2026-11-20T07:00:00Z"], out=out, err=err) == 1
    budget = json.loads(out.getvalue())["allowlist"]["budget"]
    assert budget["set_aside"] == list(report.allowlist_budget.set_aside)
    assert budget["matched"] <= budget["budget"] == 40 < budget["requested"]
    out = io.StringIO()
    assert main(["status", *options, "--at", "2026-11-20T07:00:00Z"], out=out, err=err) == 1
    assert "allowlist budget: OVER BUDGET" in out.getvalue()
