"""The detector's own health: streak decisions (pure), the health card (Microsoft's Adaptive Cards
library), the Logic App health payload (its own JSON Schema), secrets kept out, and the store
records on both backends (files and Azurite)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from detector import health
from detector.deliver.health_card import build_health_card, build_health_payload, headline, send_health
from detector.deliver.http import make_session
from detector.deliver.logicapp import LogicAppDestination
from detector.deliver.teams import TeamsDestination
from detector.errors import ConfigError, InputError, SourceError, StoreError
from detector.health_outbox import deliver_health, load, update
from detector.store import ConflictError, StateStore
from detector.store.files import FileStore
from detector.store.tables import TableStore
from detector.timestamps import TICKS_PER_DAY, TICKS_PER_HOUR, TICKS_PER_MINUTE, parse_datetime
from tests.services import azurite_tables
from tests.test_cards import check_with_adaptivecards
from tests.webhook import Reply, webhook_server

SCHEMA = json.loads((Path(health.__file__).parent / "deliver" / "schemas" / "health-v1.schema.json").read_text())
DAY1 = parse_datetime("2026-11-01T06:00:00Z")
IDS = ("teams-1", "logicapp-1")
SIG = "sig=S3CRETsignature"
FAILURE = health.classify(SourceError("query failed: Forbidden at https://api.loganalytics.io/v1/x?" + SIG,
                                      code="InsufficientAccessError"))


def day(n: int, hours: float = 0) -> int:
    return DAY1 + (n - 1) * TICKS_PER_DAY + int(hours * TICKS_PER_HOUR)


def kinds(record: health.HealthRecord) -> list[str]:
    return [m.event.kind for m in record.messages]


# --- decisions ------------------------------------------------------------------------------------

def test_a_failure_streak_queues_one_failing_message_whatever_the_retries() -> None:
    record = health.after_success(health.HealthRecord(), at=day(1), window_start=day(-1), window_end=day(1),
                                  previous_success=None, frequency_hours=24, destination_ids=IDS)
    assert kinds(record) == []
    for n in (2, 3, 4):
        for retry in range(4):  # the run and the platform's 3 retries
            record = health.after_failure(record, FAILURE, at=day(n, retry * 0.5), destination_ids=IDS)
    assert kinds(record) == ["failing"]
    assert record.failed_runs == 12
    [message] = record.messages
    assert message.owed == IDS
    assert message.event.since == day(2)
    assert message.event.last_success == day(1)
    record = health.after_success(record, at=day(5), window_start=day(0), window_end=day(5),
                                  previous_success=day(1), frequency_hours=24, destination_ids=IDS)
    assert kinds(record) == ["failing", "recovered"]
    recovered = record.messages[1].event
    assert (recovered.missed_runs, recovered.failed_runs) == (3, 12)
    assert (recovered.caught_up_start, recovered.caught_up_end) == (day(0), day(5))
    assert headline(recovered) == ("Detector recovered, 3 runs missed, the window caught up from "
                                   "2026-10-31 06:00:00 UTC to 2026-11-05 06:00:00 UTC")
    assert record.status == health.HEALTHY
    # the next success is ordinary again
    record = health.after_success(record, at=day(6), window_start=day(4), window_end=day(6),
                                  previous_success=day(5), frequency_hours=24, destination_ids=IDS)
    assert kinds(record) == ["failing", "recovered"]


def test_missing_runs_give_one_not_run_since_message_after_frequency_plus_grace() -> None:
    record = health.HealthRecord(last_success=day(1))
    for hours in range(0, 26 + 1):  # 26 h after the last success is still within 24 + 2
        record = health.check_overdue(record, now=day(1, hours), last_success=day(1), frequency_hours=24,
                                      grace_hours=2, destination_ids=IDS)
    assert kinds(record) == []
    for hours in range(27, 24 * 5):
        record = health.check_overdue(record, now=day(1, hours), last_success=day(1), frequency_hours=24,
                                      grace_hours=2, destination_ids=IDS)
    assert kinds(record) == ["not_run_since"]
    assert record.messages[0].event.since == day(1)
    assert headline(record.messages[0].event) == "Detector has not completed a run since 2026-11-01 06:00:00 UTC"
    record = health.after_success(record, at=day(6), window_start=day(0), window_end=day(6),
                                  previous_success=day(1), frequency_hours=24, destination_ids=IDS)
    assert kinds(record) == ["not_run_since", "recovered"]
    assert record.messages[1].event.missed_runs == 4


def test_an_open_failure_streak_is_not_reported_again_as_missing() -> None:
    record = health.after_failure(health.HealthRecord(last_success=day(1)), FAILURE, at=day(2),
                                  destination_ids=IDS)
    record = health.check_overdue(record, now=day(4), last_success=day(1), frequency_hours=24, grace_hours=2,
                                  destination_ids=IDS)
    assert kinds(record) == ["failing"]


def test_a_deployment_that_never_ran_is_measured_from_first_sight() -> None:
    record = health.check_overdue(health.HealthRecord(), now=day(1), last_success=None, frequency_hours=24,
                                  grace_hours=2, destination_ids=IDS)
    assert record.first_seen == day(1)
    assert kinds(record) == []
    record = health.check_overdue(record, now=day(2, 3), last_success=None, frequency_hours=24, grace_hours=2,
                                  destination_ids=IDS)
    assert kinds(record) == ["not_run_since"]
    assert record.messages[0].event.last_success is None


def test_delivery_marks_settle_per_destination_and_drop_delivered_messages() -> None:
    record = health.after_failure(health.HealthRecord(), FAILURE, at=day(2), destination_ids=IDS)
    message_id = record.messages[0].event.id
    record = health.mark_failed(record, message_id, "teams-1", "HTTP 503 after retries")
    assert record.messages[0].owed == IDS
    assert record.messages[0].last_error == "HTTP 503 after retries"
    record = health.mark_delivered(record, message_id, "teams-1")
    assert record.messages[0].owed == ("logicapp-1",)
    record = health.mark_delivered(record, message_id, "logicapp-1")
    assert record.messages == ()
    again = health.after_failure(health.HealthRecord(), FAILURE, at=day(2), destination_ids=IDS)
    assert health.drop_destinations(again, ["logicapp-1"]).messages[0].owed == ("logicapp-1",)
    # Written by a version with positional ids and read after the upgrade: renamed, not dropped.
    upgraded = health.drop_destinations(again, ["teams-0123456789ab", "logicapp-ba9876543210"],
                                        {"teams-1": "teams-0123456789ab", "logicapp-1": "logicapp-ba9876543210"})
    assert upgraded.messages[0].owed == ("teams-0123456789ab", "logicapp-ba9876543210")


def test_the_outbox_stays_one_small_store_row() -> None:
    long = health.classify(SourceError("x" * 5000, code="C" * 300))
    record = health.HealthRecord()
    for n in range(40):  # a flapping detector whose messages never get through
        record = health.after_failure(record, long, at=day(2 * n + 1), destination_ids=IDS)
        record = health.after_success(record, at=day(2 * n + 2), window_start=day(2 * n), window_end=day(2 * n + 2),
                                      previous_success=None, frequency_hours=24, destination_ids=IDS)
        for message in record.messages:
            record = health.mark_failed(record, message.event.id, "teams-1", "y" * 5000)
    assert len(record.messages) == health.MAX_MESSAGES
    assert len(json.dumps(record.to_dict(), ensure_ascii=False)) < 30_000  # TableStore's property budget


def test_records_round_trip_through_json() -> None:
    record = health.after_failure(health.HealthRecord(last_success=day(1), first_seen=day(0)), FAILURE,
                                  at=day(2), destination_ids=IDS)
    record = health.after_success(record, at=day(3), window_start=day(1), window_end=day(3),
                                  previous_success=day(1), frequency_hours=24, destination_ids=IDS)
    assert health.HealthRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    with pytest.raises(ValueError, match="status"):
        health.HealthRecord.from_dict({"status": "fine"})


@pytest.mark.parametrize(("error", "stage", "code", "advice"), [
    (ConfigError("must be a whole number", setting="DETECTOR_PERIOD_HOURS"), "settings", "DETECTOR_PERIOD_HOURS",
     "app settings"),
    (SourceError("partial result", code="PartialError"), "source", "PartialError", "Log Analytics Reader"),
    (SourceError("denied", code="InsufficientAccessError"), "source", "InsufficientAccessError", "role assignment"),
    (InputError("missing file", path="/x/AzureActivity.csv"), "source", "InputError", "DETECTOR_SOURCE_DIR"),
    (StoreError("Table Storage at https://a/…: list allowlist failed (status 403, code AuthorizationFailure)"),
     "allowlist", "StoreError", "detectorallowlist"),
    (StoreError("Table Storage at https://a/…: read watermark failed (status 403)"), "store", "StoreError",
     "Storage Table Data Contributor"),
    (KeyError("bug"), "run", "KeyError", "Application Insights"),
])
def test_failures_say_what_failed_and_what_to_check_first(error: Exception, stage: str, code: str,
                                                          advice: str) -> None:
    failure = health.classify(error)
    assert (failure.stage, failure.code) == (stage, code)
    assert advice in failure.check_first


def test_log_lines_are_a_prefix_and_one_line_of_standard_json() -> None:
    hostile = {"status": "succeeded", "window": {"end": "2026-11-20T06:00:00Z"},
               "warnings": ['line\nbreak "quoted" \u2028separator São Paulo \\ {}']}
    line = health.log_message(health.SUMMARY_PREFIX, hostile)
    assert line.startswith(health.SUMMARY_PREFIX + " {")
    assert line.isascii()
    assert len(line.splitlines()) == 1  # str.splitlines also splits on U+2028
    assert json.loads(line.removeprefix(health.SUMMARY_PREFIX + " ")) == hostile
    with pytest.raises(ValueError, match="Out of range float"):  # NaN is not JSON: never logged as such
        health.log_message(health.SUMMARY_PREFIX, {"duration_seconds": float("nan")})
    failed = health.failure_fields(FAILURE)
    assert failed == {"status": "failed", "stage": "source", "code": "InsufficientAccessError",
                      "error": FAILURE.message}


# --- messages -------------------------------------------------------------------------------------

def events() -> dict[str, health.HealthEvent]:
    hostile = health.classify(ConfigError("[click](https://evil.example/?" + SIG + ") <at>General</at> **x**",
                                          setting="DETECTOR_TEAMS_WEBHOOK_URLS"))
    return {
        "failing": health.HealthEvent("failing", at=day(2), since=day(2), last_success=day(1), failure=FAILURE,
                                      failed_runs=1),
        "failing, hostile error text": health.HealthEvent("failing", at=day(2), since=day(2), failure=hostile,
                                                          failed_runs=1),
        "recovered": health.HealthEvent("recovered", at=day(5), since=day(2), last_success=day(1),
                                        failure=FAILURE, failed_runs=4, missed_runs=3, caught_up_start=day(0),
                                        caught_up_end=day(5)),
        "not run since": health.HealthEvent("not_run_since", at=day(2, 3), since=day(1), last_success=day(1)),
        "never ran": health.HealthEvent("not_run_since", at=day(2, 3), since=day(1)),
    }


def test_every_health_payload_matches_its_schema_and_the_schema_can_fail() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    for _name, event in events().items():
        payload = build_health_payload(event)
        jsonschema.validate(payload, SCHEMA, cls=jsonschema.Draft202012Validator)
        assert payload["event"] == event.kind
        assert payload["messageId"] == event.id
    bad = build_health_payload(events()["failing"])
    for broken in ({**bad, "failure": None}, {**bad, "event": "alert"}, {**bad, "extra": 1},
                   {**bad, "at": "1 Nov 2026"}, {**build_health_payload(events()["recovered"]), "caughtUp": None}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_health_cards_parse_cleanly_and_look_nothing_like_an_alert() -> None:
    cards = {name: build_health_card(event) for name, event in events().items()}
    reports = check_with_adaptivecards([m["attachments"][0]["content"] for m in cards.values()])
    for name, report in zip(cards, reports, strict=True):
        assert report["events"] == [], name
        assert report["failures"] == [], name
        # "msteams" (full-width cards) is the Teams host's extension, which the renderer does not model.
        assert [d for d in report["dropped"] if d != "$.msteams"] == [], name
        assert "ac-adaptiveCard" in report["html"], name
        assert "Detector health · not a security alert" in json.dumps(cards[name], ensure_ascii=False)
    failing = json.dumps(cards["failing"])
    for needed in ("failing", "InsufficientAccessError", "Log Analytics Reader", "2026-11-02 06:00:00 UTC"):
        assert needed in failing
    assert cards["failing"]["attachments"][0]["content"]["body"][0]["style"] == "warning"
    assert cards["recovered"]["attachments"][0]["content"]["body"][0]["style"] == "good"


def test_no_secret_link_or_mention_reaches_a_health_message() -> None:
    for event in events().values():
        for message in (build_health_card(event), build_health_payload(event)):
            text = json.dumps(message, ensure_ascii=False)
            assert "S3CRETsignature" not in text
    card = json.dumps(build_health_card(events()["failing, hostile error text"]), ensure_ascii=False)
    assert "https://evil" not in card
    assert "<at>" not in card


# --- store records and delivery, both backends ------------------------------------------------------

@pytest.fixture(params=["files", "tables"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "files":
        yield FileStore(tmp_path / "state")
    else:
        with azurite_tables() as connection:
            yield TableStore.from_connection_string(connection)


def test_health_record_writes_are_etag_conditional(store: StateStore) -> None:
    assert store.get_health() == (None, None)
    etag = store.put_health({"status": "healthy"}, etag=None)
    with pytest.raises(ConflictError):
        store.put_health({"status": "failing"}, etag=None)  # it exists now
    store.put_health({"status": "failing"}, etag=etag)
    with pytest.raises(ConflictError):
        store.put_health({"status": "healthy"}, etag=etag)  # stale ETag
    assert store.get_health()[0] == {"status": "failing"}
    record = update(store, lambda r: health.after_failure(r, FAILURE, at=day(2), destination_ids=IDS))
    assert load(store)[0] == record


def test_health_messages_go_through_the_real_senders_in_order_and_are_retried(store: StateStore) -> None:
    with webhook_server() as server:
        session = make_session(max_seconds=2, backoff=0.01)
        destinations = [TeamsDestination("teams-1", server.url("/teams"), session=session),
                        LogicAppDestination("logicapp-1", server.url("/logic"), session=session)]
        server.script("/teams", *[Reply(503)] * 6)  # Teams down for this attempt (the sender's retries too)
        update(store, lambda r: health.after_failure(r, FAILURE, at=day(2), destination_ids=IDS))
        update(store, lambda r: health.after_success(r, at=day(3), window_start=day(1), window_end=day(3),
                                                     previous_success=day(1), frequency_hours=24,
                                                     destination_ids=IDS))
        clock = iter(range(day(3), day(4), TICKS_PER_MINUTE)).__next__
        first = deliver_health(store, destinations, owner="a", clock=clock, lease=10 * TICKS_PER_MINUTE)
        assert first.delivered == {"logicapp-1": 2}
        assert first.failed == {"teams-1": 1}
        assert [b["event"] for b in server.accepted("/logic")] == ["failing", "recovered"]
        assert server.accepted("/teams") == []
        second = deliver_health(store, destinations, owner="b", clock=clock, lease=10 * TICKS_PER_MINUTE)
        assert second.delivered == {"teams-1": 2}
        assert second.failed == {}
        titles = [_title(b) for b in server.accepted("/teams")]
        assert titles[0].startswith("Detector failing since")
        assert titles[1].startswith("Detector recovered")
        assert deliver_health(store, destinations, owner="c", clock=clock, lease=10 * TICKS_PER_MINUTE).delivered == {}
        assert load(store)[0].messages == ()
        assert len(server.accepted("/logic")) == 2
        assert len(server.accepted("/teams")) == 2
        assert all(r.query.endswith("sig=s3cr3tSIGvalue") for r in server.received)  # the real URL was used


def _title(message: dict[str, Any]) -> str:
    header = message["attachments"][0]["content"]["body"][0]["items"][1]
    return str(header["inlines"][0]["text"])


def test_a_claimed_health_outbox_is_left_to_its_owner(store: StateStore) -> None:
    update(store, lambda r: health.after_failure(r, FAILURE, at=day(2), destination_ids=IDS))
    record, etag = store.get_health()
    assert record is not None
    store.put_health({**record, "claim_owner": "other", "claim_until": "2026-11-02T06:10:00Z"}, etag=etag)
    with webhook_server() as server:
        destinations = [TeamsDestination("teams-1", server.url("/teams")),
                        LogicAppDestination("logicapp-1", server.url("/logic"))]
        stats = deliver_health(store, destinations, owner="me", clock=lambda: day(2, 0.1), lease=TICKS_PER_MINUTE)
        assert stats.claimed_elsewhere
        assert server.received == []
        stats = deliver_health(store, destinations, owner="me", clock=lambda: day(2, 1), lease=TICKS_PER_MINUTE)
        assert stats.delivered == {"teams-1": 1, "logicapp-1": 1}  # the lease ran out: taken over


def test_send_health_refuses_unknown_destination_kinds() -> None:
    class Other:
        id = "other-1"

        def deliver(self, alerts: Any) -> list[Any]:
            return []

    assert not send_health(Other(), events()["failing"]).ok


def test_health_reporting_errors_never_fail_a_run_or_hold_back_alerts(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from detector.functions import daily_run, redeliver_run
    from detector.sample.generate import build, write

    def broken(*args: Any, **kwargs: Any) -> str:
        raise StoreError("health record unwritable")

    monkeypatch.setattr(FileStore, "put_health", broken)
    monkeypatch.setattr("detector.functions._SENT_WITHOUT_STATE", set())
    write(build(at="2026-11-20T06:00:00Z"), tmp_path / "exports")
    with webhook_server() as server:
        env = {"DETECTOR_SOURCE_DIR": str(tmp_path / "exports"), "DETECTOR_STATE_DIR": str(tmp_path / "state"),
               "DETECTOR_TEAMS_WEBHOOK_URLS": server.url("/teams"), "DETECTOR_LOGICAPP_WEBHOOK_URLS": server.url("/logic")}
        summary = daily_run(past_due=False, env=env, clock=lambda: parse_datetime("2026-11-20T06:00:00Z"))
        assert summary["delivered"] == 22
        assert redeliver_run(past_due=False, env=env, clock=lambda: day(30))["undelivered"] == 0
        # A failing run still raises its own error, not the health reporting's.
        with pytest.raises(InputError):
            daily_run(past_due=False, env={**env, "DETECTOR_SOURCE_DIR": str(tmp_path / "nothing")},
                      clock=lambda: parse_datetime("2026-11-21T06:00:00Z"))
        # With the state unusable, the failure notice goes out directly (once per process and failure).
        notices = [b for b in server.accepted("/logic") if b.get("kind") == "DetectorHealth"]
        assert [n["event"] for n in notices] == ["failing"]
