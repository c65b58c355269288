"""Defects found by trying to break the promises of the run state (issue 11) and self-monitoring
(issue 14) as a new user and as an attacker would: each test reproduces one, through the CLI where a
user would meet it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from detector.alerts import alert_key
from detector.cli import main
from detector.pipeline import run_once
from detector.sources.memory import MemorySource
from detector.status import build_status
from detector.store.files import FileStore
from detector.store.tables import TableStore
from detector.timestamps import TICKS_PER_DAY, TICKS_PER_MINUTE, parse_datetime
from tests.builders import AT, T0, activity, authorization, run_command, ueba
from tests.services import azurite_tables
from tests.test_outbox import Recorder


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
    assert "health.json" in err, err
    assert "internal error" not in err, err


def test_status_does_not_call_an_unreadable_health_record_healthy(tmp_path: Path) -> None:
    # A health record that says "failing" but cannot be read (a damaged time) was silently replaced
    # by an empty one, and status answered HEALTHY with exit 0.
    state = tmp_path / "state"
    assert call("run", "--state", str(state))[0] == 0
    record = {"status": "failing", "since": "not a time", "failed_runs": 3}
    (state / "health.json").write_text(json.dumps({"version": 1, "record": record}), encoding="utf-8")
    code, out, _ = call("status", "--state", str(state), "--at", "2026-11-20T07:00:00Z")
    assert code != 0, out
    assert "health record" in out.splitlines()[-1], out


def _alert_files(state: Path) -> list[str]:
    return sorted(p.name for p in (state / "alerts").glob("*.json"))


def test_a_stateful_run_in_the_future_is_refused_before_it_purges_or_moves_the_watermark(tmp_path: Path) -> None:
    # A typo in --at's year against the shared state purged every delivered record (the next real run
    # sent all of them again) and moved the watermark a year ahead, where it never moves back: status
    # and the missed-run check then call a dead detector healthy for a year.
    state = tmp_path / "state"
    assert call("run", "--state", str(state))[0] == 0
    before = _alert_files(state)
    runs = (state / "runs.json").read_text(encoding="utf-8")
    code, _, err = call("run", "--state", str(state), "--at", "2099-11-20T06:00:00Z")
    assert code == 2, err
    assert "--at" in err, err
    assert "future" in err, err
    assert _alert_files(state) == before
    assert (state / "runs.json").read_text(encoding="utf-8") == runs
    code, out, _ = call("run", "--state", str(state), "--json")
    assert code == 0
    assert json.loads(out)["summary"]["new_alerts"] == 0


def test_a_long_run_summary_stays_readable_on_table_storage() -> None:
    # The Table backend cut the summary's JSON at 30,000 characters: a successful run with many
    # unsuppressed alerts (one reason each, listed twice) was read back as "unreadable", and status
    # answered FAILING ("the last run unreadable") on the day of the attack that lifted them.

    reason = "3 new UEBA matches (from Lagos, NG, Manila, PH) not covered by allowlist entry automation-seattle"
    unsuppressed = [{"alert": f"11bda520-a965-4654-9a45-d09f372f71aa:v2:{i:032x}", "reason": reason}
                    for i in range(150)]
    summary = {"run_id": "r1", "status": "succeeded",
               "window": {"start": "2026-11-18T06:00:00Z", "end": "2026-11-20T06:00:00Z"},
               "alerts": 150, "delivered": 300, "unsuppressed": unsuppressed,
               "warnings": [f"alert {u['alert']} is no longer suppressed: {reason}" for u in unsuppressed]}
    assert len(json.dumps(summary)) > 40_000
    with azurite_tables() as connection:
        store = TableStore.from_connection_string(connection)
        store.set_watermark(parse_datetime("2026-11-20T06:00:00Z"))
        store.record_run("r1", summary)
        [run] = store.list_runs()
        assert run.get("status") == "succeeded"
        assert run.get("unsuppressed") == unsuppressed
        report = build_status(store, now=parse_datetime("2026-11-20T07:00:00Z"), frequency_hours=24, grace_hours=2)
        assert report.verdict != "failing", report.verdict_line()


def test_the_next_window_cutting_a_run_command_in_two_sends_no_new_evidence(tmp_path: Path) -> None:
    # The 2-day period overlaps the daily frequency: the next run's window can start between a Run
    # Command's "Started" and "Succeeded" events. Its StartTime then differs, and because a match's
    # fingerprint included the group's StartTime/EndTime/CallerIpAddress, the same sign-in counted as
    # new evidence: a "new evidence" update with no new evidence, and the match stored twice.

    first_at = AT
    second_at = AT + TICKS_PER_DAY
    cut = second_at - 48 * 60 * TICKS_PER_MINUTE  # where the second window starts
    events = [activity(cut - TICKS_PER_MINUTE, status="Started"), activity(cut + TICKS_PER_MINUTE)]
    logins = [ueba(cut + 10 * TICKS_PER_MINUTE)]
    store = FileStore(tmp_path / "state")
    teams = Recorder()
    for at in (first_at, second_at):
        run_once(source=MemorySource(events, logins), store=store, destinations=[teams], at=at,
                 clock=lambda at=at: at)
    assert teams.received == ["c-1"]
    assert teams.updates == []
    stored = store.get_alert(alert_key("c-1", authorization(), "alice@contoso.com"))
    assert stored is not None
    assert len(stored.alert.rows) == 1


def test_a_bad_http_setting_still_gets_its_failing_health_message(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # README: when the settings do not validate, the health message is still sent using only the
    # webhook, storage and HTTP settings. When the bad one WAS an HTTP setting (DETECTOR_HTTP_MAX_SECONDS
    # "60s"), the fallback failed on it too and no health message went out at all: every daily run
    # failed in silence on the alert channel.
    from detector.errors import ConfigError
    from detector.functions import daily_run
    from tests.webhook import webhook_server

    monkeypatch.setattr("detector.functions._SENT_WITHOUT_STATE", set())
    with webhook_server() as server:
        env = {"DETECTOR_STATE_DIR": str(tmp_path / "state"), "DETECTOR_SOURCE_DIR": str(tmp_path / "exports"),
               "DETECTOR_TEAMS_WEBHOOK_URLS": server.url("/teams"),
               "DETECTOR_LOGICAPP_WEBHOOK_URLS": server.url("/logic"), "DETECTOR_HTTP_MAX_SECONDS": "60s"}
        with pytest.raises(ConfigError):
            daily_run(past_due=False, env=env, clock=lambda: AT)
        notices = [b for b in server.accepted("/logic") if b.get("kind") == "DetectorHealth"]
        assert [n["event"] for n in notices] == ["failing"]
        assert notices[0]["failure"]["code"] == "DETECTOR_HTTP_MAX_SECONDS"
        assert len(server.accepted("/teams")) == 1


def test_a_store_outage_streak_ends_with_a_recovered_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With the state store unreachable the "failing" notice goes out directly (README). When the store
    # came back, the next successful run found a healthy record and sent no "recovered": the on-call
    # channel's last word stayed "Detector failing" for good.
    from detector.errors import StoreError
    from detector.functions import daily_run
    from detector.sample.generate import build, write
    from tests.webhook import webhook_server

    monkeypatch.setattr("detector.functions._SENT_WITHOUT_STATE", set())
    monkeypatch.setattr("detector.functions._DIRECT_FAILURES", {})
    write(build(at="2026-11-20T06:00:00Z"), tmp_path / "exports")
    real_get_watermark = FileStore.get_watermark
    real_get_health = FileStore.get_health
    down = {"on": True}

    def watermark(self: FileStore) -> object:
        if down["on"]:
            raise StoreError("Azure Table Storage: read watermark failed (status 403, code AuthorizationFailure)")
        return real_get_watermark(self)

    def health_record(self: FileStore) -> object:
        if down["on"]:
            raise StoreError("Azure Table Storage: read health failed (status 403, code AuthorizationFailure)")
        return real_get_health(self)

    monkeypatch.setattr(FileStore, "get_watermark", watermark)
    monkeypatch.setattr(FileStore, "get_health", health_record)
    with webhook_server() as server:
        env = {"DETECTOR_SOURCE_DIR": str(tmp_path / "exports"), "DETECTOR_STATE_DIR": str(tmp_path / "state"),
               "DETECTOR_TEAMS_WEBHOOK_URLS": server.url("/teams"), "DETECTOR_LOGICAPP_WEBHOOK_URLS": server.url("/logic")}
        for hours in (0, 1, 2):  # the run and the platform's retries
            with pytest.raises(StoreError):
                daily_run(past_due=False, env=env, clock=lambda h=hours: AT + h * 60 * TICKS_PER_MINUTE)
        down["on"] = False
        daily_run(past_due=False, env=env, clock=lambda: AT + TICKS_PER_DAY)
        notices = [b for b in server.accepted("/logic") if b.get("kind") == "DetectorHealth"]
        assert [n["event"] for n in notices] == ["failing", "recovered"]
        teams = [b for b in server.accepted("/teams") if "Detector health" in json.dumps(b)]
        assert len(teams) == 2


def test_a_replay_from_before_the_state_lifetime_is_refused_not_sent_again(tmp_path: Path) -> None:
    # Runs out of order against one state: once a later run has purged a period's records, a replay
    # of that period (an old --at) found them unknown and sent every alert again.
    from detector.sample.generate import build, write

    old = tmp_path / "old"
    write(build(at="2026-09-01T06:00:00Z"), old)
    state = ["--state", str(tmp_path / "state"), "--data", str(old), "--json"]
    code, out, err = call("run", *state, "--at", "2026-09-01T06:00:00Z")
    assert code == 0, err
    assert json.loads(out)["summary"]["new_alerts"] == 11
    code, out, err = call("run", *state, "--at", "2026-11-20T06:00:00Z")
    assert code == 0, err
    assert json.loads(out)["summary"]["purged"]["alerts"] == 11
    code, out, err = call("run", *state, "--at", "2026-09-01T06:00:00Z")
    assert code == 2, out
    assert "--at" in err, err
    assert "purged" in err, err


def _damage_one_pending_record(state: Path) -> Path:
    path = sorted((state / "alerts").glob("*.json"))[0]
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["record"].update(pending=True, alert="{broken")
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_one_unreadable_alert_record_does_not_stop_every_later_delivery(tmp_path: Path) -> None:
    # One damaged record in the outbox made list_pending raise: every later run recorded its alerts and
    # then failed before sending any of them, day after day. Now the others are delivered, and the run
    # still fails (exit 4) with one line naming the file, since the damaged record may hold an alert.
    from detector.sample.generate import build, write
    from tests.webhook import webhook_server

    state = tmp_path / "state"
    old = tmp_path / "old"
    write(build(seed=7, at="2026-11-14T06:00:00Z"), old)
    assert call("run", "--state", str(state), "--data", str(old), "--at", "2026-11-14T06:00:00Z")[0] == 0
    damaged = _damage_one_pending_record(state)
    with webhook_server() as server, pytest.MonkeyPatch.context() as env:
        env.setenv("DETECTOR_LOGICAPP_WEBHOOK_URLS", server.url("/logic"))
        code, _, err = call("run", "--state", str(state))  # the sample: other alerts
        assert code == 4, err
        assert len(err.strip().splitlines()) == 1, err
        assert str(damaged) in err, err
        assert len(server.accepted("/logic")) >= 11  # every readable alert went out
    [*_, last] = json.loads((state / "runs.json").read_text(encoding="utf-8"))["runs"]
    assert last["status"] == "partial"
    assert last["delivered"] == len(server.accepted("/logic"))
    code, out, err = call("status", "--state", str(state), "--at", "2026-11-20T07:00:00Z")
    assert code == 4, (out, err)
    assert damaged.name in out.splitlines()[-1], out


def test_an_unreadable_alert_row_on_table_storage_is_reported_and_skipped() -> None:
    from azure.data.tables import UpdateMode

    from detector.alerts import build_alerts
    from detector.correlate import correlate
    from detector.outbox import deliver_pending
    from detector.store import DestinationState, StoredAlert
    from detector.store.tables import encode_key
    from detector.window import Window

    good, bad = build_alerts(correlate([*run_command(T0, correlation_id="good"), *run_command(T0, correlation_id="bad")],
                                       [ueba(T0)], Window.ending_at(AT)).rows)
    if good.correlation_id != "good":
        good, bad = bad, good
    with azurite_tables() as connection:
        store = TableStore.from_connection_string(connection)
        for alert in (good, bad):
            store.create_alert(StoredAlert(alert=alert, destinations={"teams-1": DestinationState()}))
        entity = store.alerts.get_entity(encode_key(bad.key.split(":")[0]), encode_key(bad.key))
        store.alerts.update_entity({"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"],
                                    "alert_0": "{broken"}, mode=UpdateMode.MERGE)
        teams = Recorder()
        stats = deliver_pending(store, [teams], owner="me", clock=lambda: AT, lease=10 * TICKS_PER_MINUTE)
        assert teams.received == ["good"]
        assert len(stats.unreadable) == 1
        assert "unreadable alert record" in stats.unreadable[0]


def test_a_long_correlation_id_is_recorded_and_delivered_on_table_storage() -> None:
    # CorrelationId can be set by the client (x-ms-correlation-request-id). The lookup of a record
    # under the pre-upgrade key put the raw CorrelationId in the request (no hash): a 20,000-character
    # one failed that read (HTTP 431 on Azurite; Table Storage refuses keys over 1 KiB), so the alert
    # could never be recorded, was never delivered, and held the watermark at every run.
    with azurite_tables() as connection:
        store = TableStore.from_connection_string(connection)
        teams = Recorder()
        result = run_once(source=MemorySource(run_command(T0, correlation_id="c" * 20_000), [ueba(T0)]),
                          store=store, destinations=[teams], at=AT, clock=lambda: AT)
        assert result.summary()["record_failures"] == []
        assert teams.received == ["c" * 20_000]
