"""Dedup, outbox, watermark, catch-up, identity, suppression, lifetime and isolation, on both state backends."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from detector.alerts import alert_key
from detector.correlate import correlate
from detector.deliver import Outcome, OutcomeCallback
from detector.errors import SourceError, StoreError
from detector.model import ActivityEvent, Alert, DeliveryEvent, UebaEvent
from detector.pipeline import RunPolicy, plan_window, redeliver, run_once
from detector.rule import RULE
from detector.sources import SourceData
from detector.sources.memory import MemorySource
from detector.store import DELIVERED, OPEN, PENDING, SUPPRESSED, StateStore, StoredAlert
from detector.store.files import FileStore
from detector.timestamps import TICKS_PER_DAY, TICKS_PER_HOUR, TICKS_PER_MINUTE, Ticks, format_datetime, parse_datetime
from detector.window import Window
from tests.builders import VM_SCOPE, authorization, run_command, ueba

ROOT = Path(__file__).resolve().parents[1]
DAY0 = parse_datetime("2026-11-01T06:00:00Z")
H = TICKS_PER_HOUR
ALLOW_MAINT = {"id": "maint", "reason": "maintenance", "conditions": [
    {"field": "caller", "op": "equals", "value": "svc.maint@contoso.com"}]}


def key(cid: str, caller: str, auth: str | None = None) -> str:
    return alert_key(cid, auth if auth is not None else authorization(), caller)


def vm_auth(vm: str, rg: str = "rg-1") -> str:
    return authorization(VM_SCOPE.replace("rg-1", rg).replace("vm-1", vm))


@dataclass
class Recorder:
    """A destination that records what it was sent; it can fail, be slow, or choke on one alert."""

    id: str = "teams-1"
    received: list[str] = field(default_factory=list)
    updates: list[tuple[str, int]] = field(default_factory=list)
    callers: list[str] = field(default_factory=list)
    fail: bool = False
    delay: float = 0.0
    poison: str = ""  # a CorrelationId whose message cannot be built (raises)
    raised: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def deliver(self, alerts: Sequence[Alert], *, event: DeliveryEvent = "alert",
                on_outcome: OutcomeCallback | None = None) -> list[Outcome]:
        out = []
        for i, alert in enumerate(alerts):
            time.sleep(self.delay)
            if alert.correlation_id == self.poison:
                self.raised += 1
                raise ValueError("cannot build this message")
            outcome = Outcome(False, "HTTP 500 from the webhook") if self.fail else Outcome(True)
            if outcome.ok:
                with self.lock:
                    if event == "alert":
                        self.received.append(alert.correlation_id)
                        self.callers.append(alert.caller)
                    else:
                        self.updates.append((alert.correlation_id, alert.match_count))
            out.append(outcome)
            if on_outcome is not None:
                on_outcome(i, outcome)
        return out


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


def daily(store: StateStore, source: MemorySource, dests: Sequence[Recorder], day: int,
          **policy: Any) -> dict[str, Any]:
    at = DAY0 + day * TICKS_PER_DAY
    result = run_once(source=source, store=store, destinations=dests, at=at, clock=lambda: at,
                      policy=RunPolicy(**policy))
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
    assert sum(int(s["already_known_alerts"]) + int(s["updated_alerts"]) for s in summaries) >= 9
    assert teams.updates == []  # both matches were there at the first sighting: nothing new to say
    stats = store.allowlist_stats()
    assert stats["maint"].hits == 11  # one hit per distinct suppressed Run Command, not per sighting


def test_two_run_commands_under_one_correlation_id_are_two_alerts(store: StateStore) -> None:
    """An allowlisted maintenance Run Command never hides another caller's Run Command on a DC (same CorrelationId)."""
    start = DAY0 + 4 * H
    maint, dc = vm_auth("vm-maint-01", "prod-maintenance"), vm_auth("dc-01", "rg-identity")
    activity = (run_command(start, correlation_id="shared", caller="svc.maint@contoso.com", auth=maint)
                + run_command(start + 60 * 10_000_000, correlation_id="shared", caller="eve@contoso.com", auth=dc))
    logins = [ueba(start - H, upn="svc.maint@contoso.com"), ueba(start - H, upn="eve@contoso.com")]
    store.put_allowlist(ALLOW_MAINT)
    teams = Recorder()
    at = start + 2 * H
    result = run_once(source=MemorySource(activity, logins), store=store, destinations=[teams], at=at,
                      clock=lambda: at)
    summary = result.summary()
    assert (summary["alerts"], summary["suppressed"], summary["delivered"]) == (1, 1, 1)
    assert teams.callers == ["eve@contoso.com"]
    [suppressed] = result.suppressed
    assert (suppressed.alert.caller, suppressed.alert.vm_name, suppressed.entry_ids) == (
        "svc.maint@contoso.com", "vm-maint-01", ("maint",))
    dc_alert = store.get_alert(key("shared", "eve@contoso.com", dc))
    assert dc_alert is not None
    assert (dc_alert.alert.vm_name, dc_alert.status) == ("dc-01", OPEN)


def test_a_late_sign_in_lifts_a_suppression(store: StateStore) -> None:
    """Day 1: covered by "sign-ins from Seattle". Day 2: a Lagos sign-in arrived late: delivered, with both."""
    start = DAY0 + 4 * H
    activity = run_command(start, correlation_id="c-1")
    seattle = [ueba(start - H, location="Seattle, US")]
    store.put_allowlist({"id": "seattle", "reason": "office", "conditions": [
        {"field": "ueba_source_location", "op": "equals", "value": "Seattle, US"}]})
    teams = Recorder()
    day1 = run_once(source=MemorySource(activity, seattle), store=store, destinations=[teams], at=start + 2 * H,
                    clock=lambda: start)
    assert day1.summary()["suppressed"] == 1
    assert teams.received == []
    late = [*seattle, ueba(start - 3 * H, location="Lagos, NG")]
    at = start + TICKS_PER_DAY
    day2 = run_once(source=MemorySource(activity, late), store=store, destinations=[teams], at=at, clock=lambda: at)
    summary = day2.summary()
    assert teams.received == ["c-1"]
    [item] = summary["unsuppressed"]
    assert "Lagos, NG" in item["reason"]
    assert "seattle" in item["reason"]
    assert (summary["alerts"], summary["suppressed"]) == (1, 0)
    stored = store.get_alert(key("c-1", "alice@contoso.com"))
    assert stored is not None
    assert sorted(r.ueba_source_location for r in stored.alert.rows) == ["Lagos, NG", "Seattle, US"]
    # A third run with the same evidence sends nothing more.
    at3 = at + TICKS_PER_DAY // 2
    run_once(source=MemorySource(activity, late), store=store, destinations=[teams], at=at3, clock=lambda: at3)
    assert teams.received == ["c-1"]
    assert teams.updates == []


@pytest.mark.parametrize("send_updates", [True, False])
def test_a_delivered_alert_that_gains_matches_sends_one_update(store: StateStore, send_updates: bool) -> None:
    start = DAY0 + 4 * H
    activity = run_command(start, correlation_id="c-1")
    early = [ueba(start - H)]
    teams, logic = Recorder("teams-1"), Recorder("logicapp-1")
    policy = RunPolicy(send_updates=send_updates)
    run_once(source=MemorySource(activity, early), store=store, destinations=[teams, logic], at=start + 2 * H,
             clock=lambda: start, policy=policy)
    # Two sign-ins that arrived late in the workspace (UEBA is computed with a delay): one run, one update.
    late = [*early, ueba(start - 3 * H, location="Dublin, IE"), ueba(start - 2 * H, location="Pune, IN")]
    at = start + TICKS_PER_DAY
    result = run_once(source=MemorySource(activity, late), store=store, destinations=[teams, logic], at=at,
                      clock=lambda: at, policy=policy)
    assert teams.received == logic.received == ["c-1"]  # never a second first message
    assert result.recorded is not None
    assert result.recorded.updated == 1
    if send_updates:
        assert teams.updates == logic.updates == [("c-1", 3)]  # one update carrying every match
        assert result.summary()["updates_by_destination"] == {"teams-1": 1, "logicapp-1": 1}
    else:
        assert teams.updates == logic.updates == []
    # The same evidence again: nothing.
    at2 = at + TICKS_PER_HOUR
    run_once(source=MemorySource(activity, late), store=store, destinations=[teams, logic], at=at2,
             clock=lambda: at2, policy=policy)
    assert len(teams.updates) == (1 if send_updates else 0)
    stored = store.get_alert(key("c-1", "alice@contoso.com"))
    assert stored is not None
    assert [r.ueba_source_location for r in stored.alert.rows] == ["Dublin, IE", "Pune, IN", "Lagos, NG"]
    assert not stored.pending


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
    # The last success ended on day 3 (11-04 06:00); the new window overlaps it by period - frequency.
    assert s["window"] == {"start": "2026-11-03T06:00:00Z", "end": "2026-11-08T06:00:00Z"}
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
    assert s["window"] == {"start": "2026-11-02T06:00:00Z", "end": "2026-11-05T06:00:00Z"}  # widened by a day
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
    for d in range(3):
        stored = store.get_alert(key(f"tp-{d}", f"user{d}@contoso.com"))
        if stored is not None:
            store.replace_alert(stored.with_changes(destinations={"teams-1": DestinationState()}, claim_owner="dead",
                                                    claim_until=at + 10 * TICKS_PER_MINUTE))
    assert redeliver(store=store, destinations=[teams], clock=lambda: at).claimed_elsewhere == 2
    assert teams.received == []
    later = at + 11 * TICKS_PER_MINUTE
    assert redeliver(store=store, destinations=[teams], clock=lambda: later).delivered_total == 2
    assert sorted(teams.received) == ["tp-1", "tp-2"]


# --- item 5: claims renewed, each send marked -----------------------------------------------------------

@dataclass
class SlowWebhook(Recorder):
    """Each send takes 4 simulated minutes; during the 4th, the 15-minute redelivery timer fires."""

    now: list[Ticks] = field(default_factory=lambda: [0])
    store: StateStore | None = None
    sends: int = 0
    timer: Any = None

    def deliver(self, alerts: Sequence[Alert], *, event: DeliveryEvent = "alert",
                on_outcome: OutcomeCallback | None = None) -> list[Outcome]:
        out = []
        for i, alert in enumerate(alerts):
            self.now[0] += 4 * TICKS_PER_MINUTE
            self.sends += 1
            if self.sends == 4 and self.store is not None:
                self.timer = redeliver(store=self.store, destinations=[Recorder("teams-1", self.received)],
                                       clock=lambda: self.now[0], policy=RunPolicy(lease_minutes=10))
            self.received.append(alert.correlation_id)
            out.append(Outcome(True))
            if on_outcome is not None:
                on_outcome(i, out[-1])
        return out


def test_a_delivery_longer_than_the_lease_is_not_taken_over(store: StateStore) -> None:
    activity, logins, _ = workspace(6)
    at = DAY0 + 6 * TICKS_PER_DAY
    hook = SlowWebhook("teams-1", store=store, now=[at])
    result = run_once(source=MemorySource(activity, logins), store=store, destinations=[hook], at=at,
                      clock=lambda: hook.now[0], policy=RunPolicy(lease_minutes=10, period_hours=6 * 24))
    assert hook.now[0] - at > 10 * TICKS_PER_MINUTE  # the run's delivery outlived one lease
    assert hook.timer is not None
    assert hook.timer.delivered_total == 0
    assert hook.timer.claimed_elsewhere == result.summary()["delivered"] - 3  # the ones still ahead of the run
    assert sorted(hook.received) == sorted(set(hook.received))
    assert len(hook.received) == 12  # tp-0..5 and fp-0..5 (no allowlist here)


KILLED_CHILD = """
import os, signal, sys
sys.path.insert(0, {root!r})
from detector.pipeline import RunPolicy, run_once
from detector.sources.memory import MemorySource
from detector.store.files import FileStore
from tests.test_outbox import workspace

class DiesOnPost:
    id = "teams-1"
    def __init__(self):
        self.posts = 0
    def deliver(self, alerts, *, event="alert", on_outcome=None):
        for i, alert in enumerate(alerts):
            self.posts += 1
            with open({accepted!r}, "a") as f:  # the webhook accepted the message...
                f.write(alert.correlation_id + "\\n")
            if self.posts == {k} + 1:
                os.kill(os.getpid(), signal.SIGKILL)  # ...and the process dies before it is marked
            on_outcome(i, __import__("detector.deliver", fromlist=["Outcome"]).Outcome(True))

activity, logins, _ = workspace(8)
at = {at}
run_once(source=MemorySource(activity, logins), store=FileStore({state!r}), destinations=[DiesOnPost()], at=at,
         clock=lambda: at, policy=RunPolicy(period_hours=8 * 24))
"""


def test_a_process_killed_after_k_accepted_posts_resends_at_most_the_one_in_flight(tmp_path: Path) -> None:
    k = 3
    accepted = tmp_path / "accepted.txt"
    at = DAY0 + 8 * TICKS_PER_DAY
    code = KILLED_CHILD.format(root=str(ROOT), accepted=str(accepted), k=k, at=at, state=str(tmp_path / "state"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    first = accepted.read_text().split()
    assert len(first) == k + 1  # k marked, one accepted but in flight when the process died
    teams = Recorder()
    later = at + 11 * TICKS_PER_MINUTE  # the dead run's lease has run out
    redeliver(store=FileStore(tmp_path / "state"), destinations=[teams], clock=lambda: later)
    # 16 alerts in the window (tp-0..7, fp-0..7): each delivered; only the in-flight one twice.
    everything = first + teams.received
    assert set(everything) == {f"{p}-{d}" for p in ("tp", "fp") for d in range(8)}
    assert set(teams.received) & set(first[:k]) == set()
    assert teams.received.count(first[k]) == 1
    assert len(everything) - len(set(everything)) == 1


# --- item 4: isolation ---------------------------------------------------------------------------------

class FlakyStore:
    """A real store whose writes of one alert fail (a store limit, a throttle) until healed; it counts them."""

    def __init__(self, inner: StateStore, failing_key: str) -> None:
        self._inner = inner
        self.failing_key = failing_key
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create_alert(self, stored: StoredAlert) -> StoredAlert:
        if stored.key == self.failing_key:
            self.failures += 1
            raise StoreError(f"alert {stored.key}: status 413, code EntityTooLarge")
        return self._inner.create_alert(stored)


def test_a_store_failure_of_one_alert_is_isolated_and_retried(store: StateStore) -> None:
    activity, logins, _ = workspace(5)
    teams = Recorder()
    source = MemorySource(activity, logins)
    daily(store, source, [teams], 3)
    mark = store.get_watermark()
    flaky = FlakyStore(store, key("tp-3", "user3@contoso.com"))
    summary = daily(flaky, source, [teams], 4)  # type: ignore[arg-type]
    assert flaky.failures == 1  # the fake saw the failure
    assert summary["status"] == "partial"
    assert [f.split(" ")[0] for f in summary["record_failures"]] == [flaky.failing_key]
    assert sorted(teams.received) == ["fp-1", "fp-2", "fp-3", "tp-1", "tp-2"]  # every other alert recorded and sent
    assert store.get_watermark() == mark  # held: the next run covers this window again
    flaky.failing_key = ""
    summary = daily(flaky, source, [teams], 5)  # type: ignore[arg-type]
    assert summary["status"] == "succeeded"
    assert sorted(teams.received) == ["fp-1", "fp-2", "fp-3", "fp-4", "tp-1", "tp-2", "tp-3", "tp-4"]


def test_a_poison_alert_fails_only_itself(store: StateStore) -> None:
    activity, logins, _ = workspace(4)
    teams = Recorder(poison="tp-3")
    summary = daily(store, MemorySource(activity, logins), [teams], 4)
    assert teams.raised >= 1  # the fake saw the poison alert
    assert sorted(teams.received) == ["fp-2", "fp-3", "tp-2"]
    assert summary["undelivered"] == 1
    assert any("ValueError" in e for e in summary["delivery_errors"])
    teams.poison = ""
    assert redeliver(store=store, destinations=[teams], clock=lambda: DAY0).delivered_total == 1
    assert sorted(teams.received) == ["fp-2", "fp-3", "tp-2", "tp-3"]


def test_one_run_command_with_2000_matches_on_azurite(table_store: StateStore, azurite: str) -> None:
    """Over the 1 MiB entity limit if stored whole: stored capped (and counted), delivered, nothing fails."""
    from azure.data.tables import TableServiceClient

    from detector.deliver.logicapp import build_payload, load_schema
    from detector.deliver.teams import MAX_MESSAGE_BYTES, build_alert_card
    start = DAY0 + 10 * H
    activity = run_command(start, correlation_id="big") + run_command(start, correlation_id="small",
                                                                      caller="bob@contoso.com")
    users = {"BlastRadius": "High", "AccountDisplayName": "Alice " + "x" * 200}
    logins = [ueba(start - H + i * 10_000_000, location=f"City {i}, XX", users=users) for i in range(2000)]
    logins.append(ueba(start, upn="bob@contoso.com"))
    teams = Recorder()
    at = start + 2 * H
    result = run_once(source=MemorySource(activity, logins), store=table_store, destinations=[teams], at=at,
                      clock=lambda: at)
    summary = result.summary()
    assert (summary["status"], summary["delivered"], summary["record_failures"]) == ("succeeded", 2, [])
    assert sorted(teams.received) == ["big", "small"]
    stored = table_store.get_alert(key("big", "alice@contoso.com"))
    assert stored is not None
    assert stored.alert.match_count == 2000
    assert 0 < len(stored.alert.rows) < 2000
    assert len(stored.evidence) == 2000
    entity = TableServiceClient.from_connection_string(azurite).get_table_client("detectoralerts").get_entity(
        RULE.id, stored.key)
    size = sum(len(k) * 2 + (len(v.encode("utf-16-le")) if isinstance(v, str) else 8) for k, v in entity.items())
    assert size < 1024 * 1024
    assert len(entity) < 255
    assert all(len(v) <= 32_000 for v in entity.values() if isinstance(v, str))
    # What the destinations get carries what it can, and says how many there are.
    card = build_alert_card(stored.alert)
    assert len(json.dumps(card, ensure_ascii=False).encode()) <= MAX_MESSAGE_BYTES
    # The why-line counts every match (the stored count, not the capped list), and the sign-ins shown plus
    # the "+N more" line add up to 2000.
    assert "(+1999 more flagged sign-ins)" in card["summary"]
    body = card["attachments"][0]["content"]["body"]
    heading = next(i for i, block in enumerate(body) if "Flagged sign-ins (UEBA)" in json.dumps(block))
    [(more, hidden)] = [(i, int(found.group(1))) for i, block in enumerate(body)
                        if (found := re.fullmatch(r"\+(\d+) more UEBA matches .*", block.get("text", "")))]
    shown = body[heading + 1:more]
    assert shown
    assert all(block["type"] == "Container" and "City " in json.dumps(block) for block in shown)
    assert len(shown) + hidden == 2000
    import jsonschema
    payload = build_payload(stored.alert)
    jsonschema.validate(payload, load_schema())
    assert payload["matchCount"] == 2000
    assert 0 < len(payload["signIns"]) < 2000  # the stored (capped) matches; the count says how many there are


# --- item 1: upgrade from the old key scheme ------------------------------------------------------------

def _old_record(cid: str, activity: list[ActivityEvent], logins: list[UebaEvent], at: Ticks, *, status: str,
                teams: str = "", entry: str = "") -> tuple[str, dict[str, Any]]:
    """An alert record exactly as the version keyed by rule id + CorrelationId wrote it."""
    rows = [r for r in correlate(activity, logins, Window.ending_at(at)).rows if r.correlation_id == cid]
    rows.sort(key=lambda r: (r.start, r.ueba_time, r.ueba_action_type, r.ueba_source_location))
    first = rows[0]
    old_key = f"{RULE.id}:{cid}"
    alert = {"AlertKey": old_key, "RuleId": RULE.id, "CorrelationId": cid, "Caller": first.caller,
             "CallerIpAddress": first.caller_ip, "Subscription": first.subscription,
             "ResourceGroup": first.resource_group, "VirtualMachineName": first.vm_name, "ResourceId": first.scope,
             "StartTime": format_datetime(min(r.start for r in rows)), "EndTime": format_datetime(max(r.end for r in rows)),
             "AccountName": first.account_name, "AccountUPNSuffix": first.account_upn_suffix,
             "Rows": [r.to_state() for r in rows]}
    destinations = {"teams-1": {"state": teams, "attempts": 1, "last_error": "",
                                "delivered_at": format_datetime(at) if teams == DELIVERED else None}} if teams else {}
    record = {"alert": json.dumps(alert, ensure_ascii=False, separators=(",", ":")), "status": status,
              "suppressed_by": entry, "destinations": json.dumps(destinations), "first_seen": format_datetime(at),
              "updated": format_datetime(at), "claim_owner": "", "claim_until": format_datetime(0),
              "pending": status == OPEN and teams != DELIVERED}
    return old_key, record


def _write_old_state(backend: str, tmp_path: Path, azurite: Callable[[], str], records: list[tuple[str, dict[str, Any]]]
                     ) -> StateStore:
    if backend == "file":
        folder = tmp_path / "state"
        folder.mkdir()
        (folder / "alerts.json").write_text(json.dumps({k: {**r, "version": 1} for k, r in records}))
        return FileStore(folder)  # opening the folder splits the old single file
    from azure.data.tables import TableServiceClient

    from detector.store.tables import TableStore, encode_key
    conn = azurite()
    store = TableStore.from_connection_string(conn)
    client = TableServiceClient.from_connection_string(conn).get_table_client("detectoralerts")
    for old_key, record in records:
        text = record.pop("alert")
        chunks = {f"alert_{i}": text[i:i + 30_000] for i in range(0, len(text), 30_000)}
        client.create_entity({"PartitionKey": encode_key(RULE.id), "RowKey": encode_key(old_key), **record, **chunks,
                              "alert_chunks": len(chunks)})
    return store


@pytest.mark.parametrize("backend", ["file", "table"])
def test_state_written_by_the_old_key_scheme_keeps_working(backend: str, tmp_path: Path,
                                                            request: pytest.FixtureRequest) -> None:
    start = DAY0 + 4 * H
    maint, dc = vm_auth("vm-maint-01", "prod-maintenance"), vm_auth("dc-01", "rg-identity")
    activity = (run_command(start, correlation_id="c-done")
                + run_command(start, correlation_id="c-pending", caller="carol@contoso.com", auth=vm_auth("vm-2"))
                + run_command(start, correlation_id="shared", caller="svc.maint@contoso.com", auth=maint)
                + run_command(start + 10 * 10_000_000, correlation_id="shared", caller="eve@contoso.com", auth=dc))
    logins = [ueba(start - H), ueba(start - H, upn="carol@contoso.com"), ueba(start - H, upn="svc.maint@contoso.com"),
              ueba(start - H, upn="eve@contoso.com")]
    at = start + 2 * H
    records = [_old_record("c-done", activity, logins, at, status=OPEN, teams=DELIVERED),
               _old_record("c-pending", activity, logins, at, status=OPEN, teams="failed"),
               # The old version merged both Run Commands of "shared" and judged them by the first row: suppressed.
               _old_record("shared", activity, logins, at, status=SUPPRESSED, entry="maint")]
    store = _write_old_state(backend, tmp_path, lambda: request.getfixturevalue("azurite"), records)
    if backend == "file":
        assert not (tmp_path / "state" / "alerts.json").exists()
    store.put_allowlist(ALLOW_MAINT)
    teams = Recorder()
    # The upgraded version's next run sees the same Run Commands (the windows overlap).
    next_at = at + TICKS_PER_DAY
    result = run_once(source=MemorySource(activity, logins), store=store, destinations=[teams], at=next_at,
                      clock=lambda: next_at)
    summary = result.summary()
    # Nothing already delivered is sent again; the old pending one is sent once; the hidden DC one surfaces.
    assert sorted(zip(teams.received, teams.callers, strict=True)) == [
        ("c-pending", "carol@contoso.com"), ("shared", "eve@contoso.com")]
    assert summary["migrated_from_old_keys"] == 4
    [item] = summary["unsuppressed"]
    assert item["alert"] == key("shared", "eve@contoso.com", dc)
    maint_alert = store.get_alert(key("shared", "svc.maint@contoso.com", maint))
    assert maint_alert is not None
    assert maint_alert.status == SUPPRESSED
    # And the run after that: nothing more.
    later = next_at + TICKS_PER_DAY // 2
    run_once(source=MemorySource(activity, logins), store=store, destinations=[teams], at=later, clock=lambda: later)
    assert len(teams.received) == 2
    assert teams.updates == []
    assert store.list_pending() == []


# --- item 3: lifetime -------------------------------------------------------------------------------------

def count_entities(store: StateStore, tmp_path: Path, azurite: Callable[[], str]) -> int:
    if isinstance(store, FileStore):
        runs = json.loads((store.directory / "runs.json").read_text())["runs"]
        return len(list(store.alerts_dir.glob("*.json"))) + len(runs)
    from azure.data.tables import TableServiceClient
    service = TableServiceClient.from_connection_string(azurite())
    return sum(len(list(service.get_table_client(t).list_entities(select=["RowKey"])))
               for t in ("detectoralerts", "detectorruns"))


def test_a_year_of_daily_runs_keeps_state_bounded(store: StateStore, tmp_path: Path,
                                                   request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
                                                   ) -> None:
    """365 days: one alert and one allowlisted Run Command a day; a CorrelationId reused within and after the lifetime."""
    days, retention = 365, 30
    activity: list[ActivityEvent] = []
    logins: list[UebaEvent] = []
    for d in range(days):
        start = DAY0 + d * TICKS_PER_DAY + 4 * H
        cid = "reused" if d in (10, 20, 300) else f"tp-{d}"
        activity += run_command(start, correlation_id=cid, caller="alice@contoso.com")
        activity += run_command(start + H, caller="svc.maint@contoso.com", correlation_id=f"fp-{d}")
        logins += [ueba(start - H), ueba(start, upn="svc.maint@contoso.com")]
    store.put_allowlist(ALLOW_MAINT)
    teams = Recorder()
    source = _DaySource(activity, logins)
    for day in range(1, days + 1):
        daily(store, source, [teams], day, retention_days=retention)
    entities = count_entities(store, tmp_path, lambda: request.getfixturevalue("azurite"))
    print(f"\nstate after {days} simulated days ({type(store).__name__}, lifetime {retention} d): {entities} records "
          f"(alerts and runs; {2 * days} alerts and {days} runs were written)")
    assert entities <= 3 * (retention + 5)  # about one lifetime of alerts and runs, not a year of them
    # Within the lifetime a reused CorrelationId is new evidence for the stored alert (an update);
    # after it, it alerts again.
    assert teams.received.count("reused") == 2
    assert [cid for cid, _ in teams.updates] == ["reused"]
    assert len(teams.received) == days - 1  # the reuse within the lifetime was an update, not an alert
    assert store.allowlist_stats()["maint"].hits == days


class _DaySource(MemorySource):
    """Hands each run only the rows near its window, so a year of runs stays fast (the correlation still filters)."""

    def fetch(self, window: Window) -> SourceData:
        self.fetched.append(window)
        activity = [e for e in self.activity if window.start - TICKS_PER_DAY <= e.time < window.end]
        ueba_rows = [e for e in self.ueba if window.start - TICKS_PER_DAY <= e.time < window.end]
        return MemorySource(activity, ueba_rows).fetch(window)


def test_summary_explains_record_outcomes_on_a_plain_run(store: StateStore) -> None:
    activity, logins, _ = workspace(3)
    store.put_allowlist(ALLOW_MAINT)
    summary = daily(store, MemorySource(activity, logins), [Recorder()], 3)
    for name in ("unsuppressed", "updates_owed", "record_failures", "purged", "migrated_from_old_keys"):
        assert name in summary
    assert summary["purged"] == {"alerts": 0, "runs": 0, "undelivered_kept": 0}
    assert summary["newly_suppressed"] == 2
    stored = store.get_alert(key("tp-1", "user1@contoso.com"))
    assert stored is not None
    assert stored.destinations["teams-1"].state == DELIVERED
    assert PENDING not in {d.state for d in stored.destinations.values()}


# --- settings and the update message --------------------------------------------------------------------

def test_lifetime_and_update_settings_are_validated_and_the_lease_outlasts_two_sends() -> None:
    from detector.errors import ConfigError
    from detector.settings import Settings
    defaults = Settings.from_env({})
    assert (defaults.send_updates, defaults.state_retention_days, defaults.claim_lease_minutes) == (True, 30, 10)
    assert RunPolicy.from_settings(defaults) == RunPolicy()
    assert Settings.from_env({"DETECTOR_SEND_UPDATES": "False"}).send_updates is False
    with pytest.raises(ConfigError, match="DETECTOR_SEND_UPDATES"):
        Settings.from_env({"DETECTOR_SEND_UPDATES": "sometimes"})
    # A lifetime within the catch-up window plus the period could purge a Run Command a later window still sees.
    with pytest.raises(ConfigError, match="DETECTOR_STATE_RETENTION_DAYS"):
        Settings.from_env({"DETECTOR_STATE_RETENTION_DAYS": "16"})
    assert Settings.from_env({"DETECTOR_STATE_RETENTION_DAYS": "17"}).state_retention_days == 17
    with pytest.raises(ConfigError, match="DETECTOR_STATE_RETENTION_DAYS"):
        Settings.from_env({"DETECTOR_STATE_RETENTION_DAYS": "30", "DETECTOR_MAX_CATCHUP_DAYS": "29"})
    slow = Settings.from_env({"DETECTOR_HTTP_MAX_SECONDS": "900", "DETECTOR_HTTP_TIMEOUT_SECONDS": "120"})
    longest_send_minutes = (900 + 120 + 10) / 60
    assert slow.claim_lease_minutes / 2 > longest_send_minutes


def test_the_update_message_is_marked_as_new_evidence() -> None:
    import jsonschema

    from detector.alerts import build_alerts
    from detector.deliver.logicapp import build_payload, load_schema
    from detector.deliver.teams import build_alert_card, build_digest_card
    from detector.triage import why_line
    start = DAY0 + 4 * H
    [alert] = build_alerts(correlate(run_command(start), [ueba(start - H), ueba(start, location="Pune, IN")],
                                     Window.ending_at(start + H)).rows)
    first, update = build_alert_card(alert), build_alert_card(alert, event="update")
    notice = "Update: new flagged sign-ins for an alert already sent."
    assert notice not in json.dumps(first)
    # The update says so in the header, right under the why-line (which stays the card's first text).
    header = update["attachments"][0]["content"]["body"][0]["items"]
    assert "".join(run["text"] for run in header[0]["inlines"]) == why_line(alert) == update["summary"]
    assert (header[1]["text"], header[1]["weight"]) == (notice, "Bolder")
    assert update["attachments"][0]["content"]["body"][1:] == first["attachments"][0]["content"]["body"][1:]
    digest, first_digest = (build_digest_card([alert, alert], event=e) for e in ("update", "alert"))  # type: ignore[arg-type]
    assert digest["summary"].startswith("2 updated alerts: ")
    assert first_digest["summary"].startswith("2 alerts: ")
    for event in ("alert", "update"):
        payload = build_payload(alert, event=event)  # type: ignore[arg-type]
        jsonschema.validate(payload, load_schema())
        assert (payload["eventType"], payload["alertId"], payload["matchCount"]) == (event, alert.key, 2)
        assert len(payload["signIns"]) == 2  # all the matches, not only the new one
    with pytest.raises(jsonschema.ValidationError, match="'resend' is not one of"):
        jsonschema.validate({**build_payload(alert), "eventType": "resend"}, load_schema())
