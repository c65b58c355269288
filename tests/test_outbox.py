"""Dedup, outbox, watermark and catch-up, on both state backends."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from detector.correlate import Window
from detector.deliver import Outcome
from detector.errors import SourceError
from detector.model import ActivityEvent, Alert, UebaEvent
from detector.pipeline import RunPolicy, plan_window, redeliver, run_once
from detector.sources import SourceData
from detector.sources.memory import MemorySource
from detector.store import StateStore
from detector.timestamps import TICKS_PER_DAY, TICKS_PER_HOUR, TICKS_PER_MINUTE, parse_datetime
from tests.builders import run_command, ueba

DAY0 = parse_datetime("2026-11-01T06:00:00Z")
H = TICKS_PER_HOUR
ALLOW_MAINT = {"id": "maint", "reason": "maintenance", "conditions": [
    {"field": "caller", "op": "equals", "value": "svc.maint@contoso.com"}]}


@dataclass
class Recorder:
    """A destination that records what it was sent; it can fail or be slow on demand."""

    id: str = "teams-1"
    received: list[str] = field(default_factory=list)
    fail: bool = False
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def deliver(self, alerts: Sequence[Alert]) -> list[Outcome]:
        time.sleep(self.delay)
        if self.fail:
            return [Outcome(False, "HTTP 500 from the webhook")] * len(alerts)
        with self.lock:
            self.received.extend(a.correlation_id for a in alerts)
        return [Outcome(True)] * len(alerts)


def workspace(days: int) -> tuple[list[ActivityEvent], list[UebaEvent], dict[str, int]]:
    """Each day: one true positive and one allowlisted maintenance run command."""
    activity: list[ActivityEvent] = []
    logins: list[UebaEvent] = []
    expected: dict[str, int] = {}
    for d in range(days):
        start = DAY0 + d * TICKS_PER_DAY + 4 * H
        user = f"user{d}@contoso.com"
        activity += run_command(start, caller=user, correlation_id=f"tp-{d}")
        logins.append(ueba(start - H, upn=user))
        logins.append(ueba(start + 2 * H, upn=user, location="Dublin, IE"))  # a second match, seen later
        expected[f"tp-{d}"] = start
        activity += run_command(start + H, caller="svc.maint@contoso.com", correlation_id=f"fp-{d}")
        logins.append(ueba(start, upn="svc.maint@contoso.com"))
    return activity, logins, expected


def daily(store: StateStore, source: MemorySource, dests: Sequence[Recorder], day: int) -> dict[str, object]:
    at = DAY0 + day * TICKS_PER_DAY
    result = run_once(source=source, store=store, destinations=dests, at=at, clock=lambda: at)
    return result.summary()


def test_ten_daily_runs_deliver_each_alert_exactly_once(store: StateStore) -> None:
    activity, logins, expected = workspace(12)
    source = MemorySource(activity, logins)
    store.put_allowlist(ALLOW_MAINT)
    teams, logic = Recorder("teams-1"), Recorder("logicapp-1")
    summaries = [daily(store, source, [teams, logic], day) for day in range(2, 12)]
    first_start = DAY0 + 2 * TICKS_PER_DAY - 48 * H
    last_end = DAY0 + 11 * TICKS_PER_DAY
    want = sorted(k for k, start in expected.items() if first_start <= start < last_end)
    assert sorted(teams.received) == want
    assert sorted(logic.received) == want
    assert len(want) == 11  # tp-0 .. tp-10: the first window starts on day 0
    assert all(not k.startswith("fp-") for k in teams.received)
    # Overlapping windows see every alert twice; the second sighting is not sent again.
    assert sum(int(s["already_known_alerts"]) + int(s["updated_alerts"]) for s in summaries) >= 9  # type: ignore[call-overload]
    stats = store.allowlist_stats()
    assert stats["maint"].hits == 11  # one hit per distinct suppressed Run Command, not per sighting


def test_new_matches_update_the_stored_alert_without_resending(store: StateStore) -> None:
    start = DAY0 + 4 * H
    activity = run_command(start, correlation_id="c-1")
    early = [ueba(start - H)]
    teams = Recorder()
    run_once(source=MemorySource(activity, early), store=store, destinations=[teams], at=start + 2 * H,
             clock=lambda: start)
    # A sign-in that arrived late in the workspace (UEBA is computed with a delay), 3h before the command.
    late = [*early, ueba(start - 3 * H, location="Dublin, IE")]
    result = run_once(source=MemorySource(activity, late), store=store, destinations=[teams], at=start + TICKS_PER_DAY,
                      clock=lambda: start)
    assert teams.received == ["c-1"]
    assert result.recorded is not None
    assert result.recorded.updated == 1
    stored = store.get_alert("11bda520-a965-4654-9a45-d09f372f71aa:c-1")
    assert stored is not None
    assert [r.ueba_source_location for r in stored.alert.rows] == ["Dublin, IE", "Lagos, NG"]


def test_failed_delivery_is_retried_by_later_runs(store: StateStore) -> None:
    store.put_allowlist(ALLOW_MAINT)
    activity, logins, _ = workspace(3)
    source = MemorySource(activity, logins)
    teams = Recorder(fail=True)
    s1 = daily(store, source, [teams], 2)
    assert s1["undelivered"] == 2
    assert s1["failed_by_destination"] == {"teams-1": 2}
    teams.fail = False
    stats = redeliver(store=store, destinations=[teams], clock=lambda: DAY0)
    assert stats.delivered_total == 2
    s2 = daily(store, source, [teams], 3)
    assert s2["delivered"] == 1  # only the new one: tp-2
    assert sorted(teams.received) == ["tp-0", "tp-1", "tp-2"]


def test_three_missed_runs_are_caught_up(store: StateStore) -> None:
    store.put_allowlist(ALLOW_MAINT)
    activity, logins, expected = workspace(10)
    source = MemorySource(activity, logins)
    teams = Recorder()
    daily(store, source, [teams], 2)
    daily(store, source, [teams], 3)
    # Days 4, 5 and 6 are missed; day 7 widens its window back to the last successful end.
    s = daily(store, source, [teams], 7)
    window = s["window"]
    # The last success ended on day 3 (11-04 06:00); the new window overlaps it by period - frequency.
    assert window == {"start": "2026-11-03T06:00:00Z", "end": "2026-11-08T06:00:00Z"}  # type: ignore[comparison-overlap]
    want = sorted(k for k, start in expected.items() if start < DAY0 + 7 * TICKS_PER_DAY)
    assert sorted(teams.received) == want


def test_catch_up_is_capped() -> None:
    at = DAY0 + 30 * TICKS_PER_DAY
    window = plan_window(at, DAY0, RunPolicy(max_catchup_days=14))
    assert window == Window(start=at - 14 * TICKS_PER_DAY, end=at)
    assert plan_window(at, None, RunPolicy()) == Window.ending_at(at)
    assert plan_window(at, at - TICKS_PER_DAY, RunPolicy()) == Window.ending_at(at)


class FailingSource(MemorySource):
    def fetch(self, window: Window) -> SourceData:
        raise SourceError("query failed", code="ServiceUnavailable")


def test_a_failed_run_is_recorded_and_does_not_move_the_watermark(store: StateStore) -> None:
    store.put_allowlist(ALLOW_MAINT)
    activity, logins, _ = workspace(4)
    teams = Recorder()
    daily(store, MemorySource(activity, logins), [teams], 2)
    mark = store.get_watermark()
    with pytest.raises(SourceError, match="ServiceUnavailable"):
        daily(store, FailingSource(activity, logins), [teams], 3)
    assert store.get_watermark() == mark
    assert [r["status"] for r in store.list_runs()] == ["succeeded", "failed"]
    s = daily(store, MemorySource(activity, logins), [teams], 4)
    assert s["window"] == {"start": "2026-11-02T06:00:00Z", "end": "2026-11-05T06:00:00Z"}  # widened by a day  # type: ignore[comparison-overlap]
    assert sorted(teams.received) == ["tp-0", "tp-1", "tp-2", "tp-3"]


def test_two_racing_runs_deliver_once(store: StateStore) -> None:
    store.put_allowlist(ALLOW_MAINT)
    activity, logins, _ = workspace(6)
    source = MemorySource(activity, logins)
    teams = Recorder(delay=0.3)  # slow webhook: both runs are in flight at once
    at = DAY0 + 6 * TICKS_PER_DAY
    errors: list[BaseException] = []

    def go(run_id: str) -> None:
        try:
            run_once(source=source, store=store, destinations=[teams], at=at, clock=lambda: at, run_id=run_id,
                     policy=RunPolicy(max_catchup_days=14))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=go, args=(f"run-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(teams.received) == sorted(set(teams.received))
    assert len(teams.received) == 2  # tp-4 and tp-5 in the 2-day window


def test_expired_claim_is_taken_over(store: StateStore) -> None:
    """A process that died between claiming and delivering does not lose the alert."""
    activity, logins, _ = workspace(3)
    teams = Recorder()
    at = DAY0 + 3 * TICKS_PER_DAY
    run_once(source=MemorySource(activity, logins), store=store, destinations=[], at=at, clock=lambda: at)
    # Simulate the crash: record pending alerts and a live claim by a dead run.
    from detector.store import DestinationState
    for stored in [s for s in [store.get_alert(f"11bda520-a965-4654-9a45-d09f372f71aa:tp-{d}") for d in range(3)] if s]:
        store.replace_alert(stored.with_changes(destinations={"teams-1": DestinationState()}, claim_owner="dead",
                                                claim_until=at + 10 * TICKS_PER_MINUTE))
    assert redeliver(store=store, destinations=[teams], clock=lambda: at).claimed_elsewhere == 2
    assert teams.received == []
    later = at + 11 * TICKS_PER_MINUTE
    assert redeliver(store=store, destinations=[teams], clock=lambda: later).delivered_total == 2
    assert sorted(teams.received) == ["tp-1", "tp-2"]
