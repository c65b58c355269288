"""A simulated 30-day soak of the real pipeline under faults: nothing lost, nothing duplicated,
nothing allowlisted delivered, no true positive wrongly suppressed, failed days reported, no period
skipped, no secret leaked.

Real parts: Azurite (state), the Log Analytics fake over HTTPS with the real LogsQueryClient, local
webhook servers, the real Teams and Logic App senders, and separate processes that are killed
(SIGKILL): one after recording its alerts and before delivering them, one by the webhook server when
its (k+1)-th post arrives, which then goes unanswered. Time is simulated: each daily run gets its run time and a clock; claims and leases follow that
clock. Every fault is counted as the fakes observed it (the answers they gave, the posts they got),
not as scheduled, and printed with what was expected and what happened.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from detector.alerts import alert_key
from detector.deliver.http import make_session
from detector.deliver.logicapp import LogicAppDestination
from detector.deliver.teams import TeamsDestination
from detector.errors import SourceError
from detector.outbox import DeliveryStats
from detector.pipeline import RunPolicy, redeliver, run_once
from detector.sources.loganalytics import LogAnalyticsSource, make_client
from detector.store import SUPPRESSED
from detector.store.tables import TableStore
from detector.timestamps import TICKS_PER_DAY, TICKS_PER_HOUR, TICKS_PER_MINUTE, format_datetime, parse_datetime
from tests.la_fake import LogAnalyticsFake, StaticCredential, log_analytics_fake
from tests.webhook import Received, Reply, WebhookServer, alert_message, webhook_server

ROOT = Path(__file__).resolve().parents[1]
DAY0 = parse_datetime("2026-10-01T06:00:00Z")
DAYS = 30
SECRET = "s0akSECRETsig"
ALLOW = [
    {"id": "maint", "reason": "maintenance account", "conditions": [
        {"field": "caller", "op": "equals", "value": "svc.maint@contoso.com"}]},
    {"id": "carol-seattle", "reason": "carol works from the Seattle office", "conditions": [
        {"field": "caller", "op": "equals", "value": "carol@contoso.com"},
        {"field": "ueba_source_location", "op": "equals", "value": "Seattle, US"}]},
]
WORKSPACE = "99999999-2222-3333-4444-555555555555"
RETENTION_DAYS = 17  # more than the 14-day catch-up plus the 2-day period; short enough to expire in a month
POLICY = RunPolicy(lease_minutes=10, retention_days=RETENTION_DAYS)
M = TICKS_PER_MINUTE
H = TICKS_PER_HOUR


def auth(vm: str) -> str:
    scope = f"/subscriptions/8d6a3f2e-1c4b-4e7a-9f0d-2b5c6e8a1d3f/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{vm}"
    return json.dumps({"scope": scope, "action": "Microsoft.Compute/virtualMachines/runCommand/action"}, indent=2)


class Workspace:
    """The month's logs, and what should reach the destinations: alerts by their (unique) VM name."""

    def __init__(self) -> None:
        self.activity: list[dict[str, Any]] = []
        self.ueba: list[dict[str, Any]] = []
        self.expected: Counter[str] = Counter()  # VM -> first messages owed per destination
        self.expected_updates: Counter[str] = Counter()
        self.starts: dict[str, int] = {}
        self.keys: dict[str, str] = {}  # VM -> alert key (to check the stored verdict)
        self.allowlisted: set[str] = set()
        self.late: dict[int, list[dict[str, Any]]] = {}  # day -> sign-ins that reach the workspace after its run

    def run_command(self, cid: str, caller: str, start: int, vm: str, *, statuses: tuple[str, ...] = (
            "Started", "Accepted", "Succeeded"), expected: bool = True) -> None:
        for k, status in enumerate(statuses):
            self.activity.append({"TimeGenerated": start + k * 10_000_000, "OperationNameValue":
                                  "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION", "Authorization": auth(vm),
                                  "CorrelationId": cid, "Caller": caller, "CallerIpAddress": "20.1.2.3",
                                  "ActivityStatusValue": status})
        if expected and "Succeeded" in statuses:
            self.expected[vm] += 1
            self.starts[vm] = start
            self.keys[vm] = alert_key(cid, auth(vm), caller)

    @staticmethod
    def login(upn: str, time: int, flag: str = "True", location: str = "Lagos, NG") -> dict[str, Any]:
        return {"TimeGenerated": time, "EventSource": "Azure AD", "ActionType": "Sign-in", "UserPrincipalName": upn,
                "SourceIPLocation": location, "ActivityInsights": {"ActionUncommonlyPerformedByUser": flag},
                "UsersInsights": {"BlastRadius": "High"}}


def workspace() -> Workspace:
    w = Workspace()
    for d in range(DAYS):
        base = DAY0 + d * TICKS_PER_DAY
        for k in range(2):  # two true positives a day, one late in the day (seen by two runs)
            cid, user = f"tp-{d:02d}-{k}", f"user{d % 7}{k}@contoso.com"
            start = base + (3 + 14 * k) * H
            w.run_command(cid, user, start, f"vm-{cid}")
            w.ueba.append(w.login(user, start - 30 * M))
        cid = f"fp-{d:02d}"
        w.run_command(cid, "svc.maint@contoso.com", base + 5 * H, f"vm-{cid}", expected=False)
        w.ueba.append(w.login("svc.maint@contoso.com", base + 4 * H))
        w.allowlisted.add(f"vm-{cid}")
        w.run_command(f"failed-{d:02d}", f"user{d % 7}0@contoso.com", base + 8 * H, f"vm-failed-{d:02d}",
                      statuses=("Started", "Accepted", "Failed"))
        w.ueba.append(w.login(f"other{d}@contoso.com", base + 9 * H, flag="False"))
    # Day 1 and day 22: one CorrelationId, caller and VM reused after the state lifetime: two alerts.
    for d in (1, 22):
        start = DAY0 + d * TICKS_PER_DAY + 12 * H
        w.run_command("reused", "frank@contoso.com", start, "vm-reused")
        w.ueba.append(w.login("frank@contoso.com", start - H))
    # Day 3: a template touches two VMs under one CorrelationId; the maintenance one is allowlisted.
    start = DAY0 + 3 * TICKS_PER_DAY + 10 * H
    w.run_command("shared-03", "svc.maint@contoso.com", start, "vm-maint-03", expected=False)
    w.allowlisted.add("vm-maint-03")
    w.run_command("shared-03", "eve@contoso.com", start + M, "dc-03")
    w.ueba += [w.login("svc.maint@contoso.com", start - H), w.login("eve@contoso.com", start - H)]
    # Day 6: covered by "carol from Seattle" until a Lagos sign-in reaches the workspace after the day's run.
    start = DAY0 + 6 * TICKS_PER_DAY + 10 * H
    w.run_command("late-06", "carol@contoso.com", start, "vm-late-06")
    w.ueba.append(w.login("carol@contoso.com", start - 30 * M, location="Seattle, US"))
    w.late[6] = [w.login("carol@contoso.com", start - 2 * H)]
    # Day 9: one Run Command with 2,000 UEBA matches (over Table Storage's 1 MiB entity if stored whole).
    start = DAY0 + 9 * TICKS_PER_DAY + 10 * H
    w.run_command("big-09", "dave@contoso.com", start, "vm-big-09")
    w.ueba += [w.login("dave@contoso.com", start - H + i * 10_000_000, location=f"City {i}, XX") for i in range(2000)]
    # Day 11: delivered, then a later sign-in arrives: one "new evidence" update per destination.
    start = DAY0 + 11 * TICKS_PER_DAY + 10 * H
    w.run_command("grow-11", "gina@contoso.com", start, "vm-grow-11")
    w.ueba.append(w.login("gina@contoso.com", start - 30 * M))
    w.late[11] = [w.login("gina@contoso.com", start - 3 * H, location="Dublin, IE")]
    w.expected_updates["vm-grow-11"] = 1
    return w


CHILD_PRELUDE = """
import os, signal, sys
sys.path.insert(0, {root!r})
from tests.la_fake import StaticCredential
from detector.deliver.http import make_session
from detector.deliver.logicapp import LogicAppDestination
from detector.deliver.teams import TeamsDestination
from detector.pipeline import run_once, RunPolicy
from detector.sources.loganalytics import LogAnalyticsSource, make_client
from detector.store.tables import TableStore

at = {at}
client = make_client(StaticCredential(), endpoint={endpoint!r}, connection_verify={ca!r})
store = TableStore.from_connection_string({conn!r})
source = LogAnalyticsSource(client, {workspace!r})
policy = RunPolicy(retention_days={retention})
"""

KILLED_BEFORE_SENDING = CHILD_PRELUDE + """
class Doomed:
    def __init__(self, id):
        self.id = id
    def deliver(self, alerts, *, event="alert", on_outcome=None):
        os.kill(os.getpid(), signal.SIGKILL)  # killed after recording (and claiming), before sending

run_once(source=source, store=store, destinations=[Doomed("teams-1"), Doomed("logicapp-1")], at=at,
         clock=lambda: at, policy=policy)
"""

SENDING = CHILD_PRELUDE + """
session = make_session(max_seconds=5, backoff=0.01, retries=3)
run_once(source=source, store=store, at=at, clock=lambda: at, policy=policy,
         destinations=[TeamsDestination("teams-1", {teams!r}, session=session),
                       LogicAppDestination("logicapp-1", {logic!r}, session=session)])
"""


def kill_after(k: int, child: list[subprocess.Popen[str]]) -> Callable[[Received], Reply | None]:
    """A webhook hook that lets ``k`` posts through, then SIGKILLs the sender with the next one in flight:
    that post reaches the server and is never answered (so never delivered), as if the process died mid-send."""
    seen = [0]

    def on_request(request: Received) -> Reply | None:
        seen[0] += 1
        if seen[0] <= k:
            return None
        child[0].kill()
        child[0].wait()
        return Reply(answer=False)
    return on_request


def six_minutes_a_post(now: list[int], timer: list[DeliveryStats], store: TableStore, destinations: list[Any]
                       ) -> Callable[[Received], Reply | None]:
    """A webhook hook under which every post takes six simulated minutes; the 15-minute redelivery timer runs,
    once, when twelve have passed, while the run waits for the webhook's answer."""
    started = now[0]
    fired = [False]

    def on_request(request: Received) -> Reply | None:
        now[0] += 6 * M
        if not fired[0] and now[0] - started >= 12 * M:
            fired[0] = True  # the timer's own posts (it should make none) do not fire it again
            timer.append(redeliver(store=store, destinations=destinations, clock=lambda: now[0], policy=POLICY))
        return None
    return on_request


def classify(hooks: WebhookServer, path: str, labels: set[str]) -> tuple[Counter[str], Counter[str], int]:
    """(first messages, updates) per VM label among the accepted posts, and posts about no known label."""
    alerts: Counter[str] = Counter()
    updates: Counter[str] = Counter()
    unknown = 0
    for body in hooks.accepted(path):
        found = alert_message(body)
        if found is None or found[0] not in labels:
            unknown += 1
            continue
        vm, event = found
        (updates if event == "update" else alerts)[vm] += 1
    return alerts, updates, unknown


def about(vm: str, bodies: list[Any]) -> Any:
    """The first accepted alert message about ``vm``."""
    return next(b for b in bodies if (alert_message(b) or ("", ""))[0] == vm)


def test_thirty_days_under_faults(azurite: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    w = workspace()
    fake = LogAnalyticsFake(activity=w.activity, ueba=w.ueba)
    store = TableStore.from_connection_string(azurite)
    for entry in ALLOW:
        store.put_allowlist(entry)
    report: list[tuple[str, str, str]] = []  # (fault, expected, observed)
    outcomes: dict[int, str] = {}
    summaries: dict[int, list[dict[str, Any]]] = {}
    with log_analytics_fake(fake) as (endpoint, ca), webhook_server() as hooks:
        client = make_client(StaticCredential(), endpoint=endpoint, connection_verify=ca, retry_backoff_factor=0.01,
                             retries=2)
        source = LogAnalyticsSource(client, WORKSPACE)
        session = make_session(max_seconds=5, backoff=0.01, retries=3)
        teams_url, logic_url = hooks.url("/teams", SECRET), hooks.url("/logic", SECRET)
        teams = TeamsDestination("teams-1", teams_url, session=session)
        logic = LogicAppDestination("logicapp-1", logic_url, session=session)
        destinations: list[Any] = [teams, logic]

        def day_run(day: int, *, clock: Any = None) -> None:
            at = DAY0 + day * TICKS_PER_DAY + TICKS_PER_DAY  # the run after day `day`
            try:
                result = run_once(source=source, store=store, destinations=destinations, at=at,
                                  clock=clock or (lambda: at), policy=POLICY)
                summaries.setdefault(day, []).append(result.summary())
                outcomes[day] = "succeeded"
            except SourceError as exc:
                outcomes[day] = f"failed: {exc}"

        def answers(path: str, status: int, since: int) -> int:
            return sum(1 for r in hooks.received[since:] if r.path == path and r.status == status)

        def child(template: str, day: int, *, killer: Callable[[list[subprocess.Popen[str]]], Any] | None = None,
                  **extra: Any) -> int:
            """Run one day in a separate process that is SIGKILLed: by itself (``template``), or by the webhook
            server's hook that ``killer`` makes from it."""
            at = DAY0 + (day + 1) * TICKS_PER_DAY
            code = template.format(root=str(ROOT), at=at, endpoint=endpoint, ca=ca, workspace=WORKSPACE, conn=azurite,
                                   retention=RETENTION_DAYS, **extra)
            process: list[subprocess.Popen[str]] = []
            hooks.on_request = killer(process) if killer is not None else None
            try:
                process.append(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True,
                                                env={**os.environ, "PYTHONPATH": str(ROOT)}))
                _, stderr = process[0].communicate(timeout=120)
            finally:
                hooks.on_request = None
            assert process[0].returncode == -9, stderr[-2000:]
            outcomes[day] = "killed"
            return process[0].returncode

        for day in range(DAYS):
            mark = len(hooks.received)
            faults = len(fake.served_faults)
            if day in (5, 6):  # a Teams outage of two days
                hooks.script("/teams", *[Reply(503)] * 400)
                day_run(day)
                hooks.script("/teams")
                report.append((f"teams outage (day {day})", "Teams answers 503; Logic App unaffected; re-sent later",
                               f"{answers('/teams', 503, mark)} x 503 served, {answers('/logic', 202, mark)} Logic "
                               f"App posts accepted"))
            elif day == 8:  # a storm of 429s with Retry-After, then the webhook recovers
                hooks.script("/teams", *[Reply(429, {"Retry-After": "1"})] * 2)
                day_run(day)
                report.append(("429 storm", "Retry-After honoured, then delivered",
                               f"{answers('/teams', 429, mark)} x 429 then {answers('/teams', 202, mark)} accepted"))
            elif day == 10:  # the Logic App answers 500 all day
                hooks.script("/logic", *[Reply(500)] * 400)
                day_run(day)
                hooks.script("/logic")
                report.append(("logic app 500", "given up after retries; re-sent next run",
                               f"{answers('/logic', 500, mark)} x 500 served"))
            elif day == 12:  # a partial query result: the run must fail, not read as "no findings"
                fake.partial_error_on = "BehaviorAnalytics"
                day_run(day)
                fake.partial_error_on = None
                report.append(("partial query result", "run fails, recorded as failed",
                               f"{fake.served_faults[faults:]} served; run {outcomes[day][:40]}"))
            elif day == 13:  # persistent 5xx from Log Analytics (beyond azure-core's retries)
                fake.failures = [(503, {}, {"error": {"code": "ServiceUnavailable", "message": "down"}})] * 3
                day_run(day)
                fake.failures = []
                report.append(("query 5xx outage", "retried, then the run fails",
                               f"{fake.served_faults[faults:]} served; run {outcomes[day][:40]}"))
            elif day == 14:  # one transient 5xx: retried by azure-core, the run succeeds
                fake.failures = [(502, {}, {"error": {"code": "BadGateway", "message": "blip"}})]
                day_run(day)
                report.append(("transient query 5xx", "retried, run succeeds",
                               f"{fake.served_faults[faults:]} served; run {outcomes[day]}"))
            elif day == 15:  # killed after its k-th accepted post, the (k+1)-th in flight
                k = 2
                child(SENDING, day, killer=functools.partial(kill_after, k), teams=teams_url, logic=logic_url)
                got = hooks.received[mark:]
                report.append((f"killed after accepted post k={k}", f"{k} posts accepted, the next one in flight when "
                               "killed; it and the rest (and none of the first again) by the next run",
                               f"{sum(1 for r in got if r.status == 202)} posts accepted, then SIGKILL with "
                               f"{sum(1 for r in got if r.status == 0)} unanswered"))
                assert [r.status for r in got] == [202] * k + [0]
            elif day in (17, 18, 19):  # three missed runs in a row
                outcomes[day] = "missed"
                report.append((f"missed run (day {day})", "no query; the next window reaches back",
                               f"{len(fake.requests)} queries so far, none for this day"))
            elif day == 21:  # two runs overlapping in time
                threads = [threading.Thread(target=day_run, args=(day,)) for _ in range(2)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                both = summaries.get(day, [])
                report.append(("overlapping runs", "ETag claims: each alert is sent by the one run that claimed it",
                               f"{len(both)} runs; claims refused: {sum(s['claimed_elsewhere'] for s in both)}; "
                               f"sent: {[s['delivered'] for s in both]}"))
            elif day == 24:  # a process killed between recording alerts and delivering them
                child(KILLED_BEFORE_SENDING, day)
                report.append(("process killed before sending", "alerts stay pending; the next run takes them over",
                               f"SIGKILL; {len(hooks.received) - mark} posts from it"))
            elif day == 26:  # a delivery longer than the lease: the 15-minute timer fires mid-run
                now = [DAY0 + (day + 1) * TICKS_PER_DAY]
                timer: list[DeliveryStats] = []
                hooks.on_request = six_minutes_a_post(now, timer, store, destinations)
                try:
                    day_run(day, clock=lambda now=now: now[0])
                finally:
                    hooks.on_request = None
                elapsed = (now[0] - DAY0 - (day + 1) * TICKS_PER_DAY) // M
                [t] = timer
                report.append(("delivery longer than the lease", "claims renewed: the timer takes nothing over",
                               f"run delivered for {elapsed} min (lease 10); timer: {t.claimed_elsewhere} claimed "
                               f"elsewhere, {t.delivered_total} sent"))
                assert elapsed > 10
            else:
                day_run(day)
            for row in w.late.get(day, []):  # sign-ins that reach the workspace after the day's run
                with fake.lock:
                    fake.ueba.append(row)
        # After the last day: the 15-minute redelivery timer has run at least once.
        last = DAY0 + DAYS * TICKS_PER_DAY + TICKS_PER_HOUR
        redeliver(store=store, destinations=destinations, clock=lambda: last, policy=POLICY)
        labels = set(w.expected) | w.allowlisted
        teams_alerts, teams_updates, teams_unknown = classify(hooks, "/teams", labels)
        logic_alerts, logic_updates, logic_unknown = classify(hooks, "/logic", labels)
        big_card = about("vm-big-09", hooks.accepted("/teams"))
        big_payload = about("vm-big-09", hooks.accepted("/logic"))

    last_end = DAY0 + DAYS * TICKS_PER_DAY
    want = Counter({vm: n for vm, n in w.expected.items() if w.starts[vm] < last_end})
    lost = duplicated = 0
    for got in (teams_alerts, logic_alerts):
        lost += sum((want - got).values())
        duplicated += sum((got - want).values())
    for got in (teams_updates, logic_updates):
        lost += sum((w.expected_updates - got).values())
        duplicated += sum((got - w.expected_updates).values())
    allowlisted_delivered = sum(n for vm, n in (teams_alerts + logic_alerts).items() if vm in w.allowlisted)
    wrongly_suppressed = 0
    for vm in want:
        stored = store.get_alert(w.keys[vm])
        wrongly_suppressed += stored is not None and stored.status == SUPPRESSED
    # Per-fault evidence for the cases, as the fakes saw them.
    dc = summaries.get(3, [])
    report.append(("shared CorrelationId, one allowlisted", "the DC Run Command alerts; the maintenance one does not",
                   f"dc-03 sent {teams_alerts['dc-03']}+{logic_alerts['dc-03']}, vm-maint-03 sent "
                   f"{teams_alerts['vm-maint-03']}+{logic_alerts['vm-maint-03']}; day-3 run suppressed "
                   f"{dc[0]['suppressed'] if dc else '?'}"))
    lifted = [u for s in summaries.get(7, []) for u in s["unsuppressed"]]
    report.append(("late sign-in breaks a suppression", "day 6 suppressed; day 7 delivers with both matches",
                   f"day-6 suppressed {summaries[6][0]['suppressed']}; day 7 lifted {len(lifted)} "
                   f"({lifted[0]['reason'][:60] if lifted else ''}); vm-late-06 sent "
                   f"{teams_alerts['vm-late-06']}+{logic_alerts['vm-late-06']}"))
    report.append(("2,000-match alert", "stored capped, delivered once: card under 28 KB, payload counts 2000",
                   f"card {len(json.dumps(big_card).encode())} bytes, payload matchCount {big_payload['matchCount']}, "
                   f"{len(big_payload['signIns'])} sign-ins carried; sent {teams_alerts['vm-big-09']}"
                   f"+{logic_alerts['vm-big-09']}"))
    purged = sum(s["purged"]["alerts"] for day in range(19, 23) for s in summaries.get(day, []))
    report.append(("CorrelationId reused after the lifetime", "alerts again (2 alerts per destination)",
                   f"{purged} records purged days 19-22; vm-reused sent {teams_alerts['vm-reused']}"
                   f"+{logic_alerts['vm-reused']}"))
    report.append(("new evidence for a delivered alert", "one update per destination",
                   f"updates: teams {dict(teams_updates)}, logic app {dict(logic_updates)}"))
    failed_days = sum(1 for o in outcomes.values() if o.startswith("failed"))
    line = (f"soak: {DAYS} days; faults: {len(report)}; alerts expected: {sum(want.values())} x 2 destinations; "
            f"delivered: teams {sum(teams_alerts.values())}, logic app {sum(logic_alerts.values())}; updates: "
            f"{sum(teams_updates.values()) + sum(logic_updates.values())}; lost: {lost}; duplicated: {duplicated}; "
            f"wrongly suppressed: {wrongly_suppressed}; allowlisted delivered: {allowlisted_delivered}; "
            f"failed days reported: {failed_days}")
    text = "\n".join([line, *(f"  {f}: expected {e}; observed {o}" for f, e, o in report)])
    print("\n" + text)
    (ROOT / "out").mkdir(exist_ok=True)
    (ROOT / "out" / "soak-figures.txt").write_text(text + "\n", encoding="utf-8")  # scripts/test prints it
    assert (lost, duplicated, wrongly_suppressed, allowlisted_delivered) == (0, 0, 0, 0), text
    assert teams_unknown == logic_unknown == 0
    assert lifted, text
    assert big_payload["matchCount"] == 2000
    assert len(json.dumps(big_card, ensure_ascii=False).encode()) <= 28_000
    assert timer[0].delivered_total == 0
    assert timer[0].claimed_elsewhere > 0
    # Failed days are reported as failed...
    runs = store.list_runs()
    failed_windows = [r["window"]["end"] for r in runs if r.get("status") == "failed"]
    assert failed_windows == [format_datetime(DAY0 + (d + 1) * TICKS_PER_DAY) for d in (12, 13)], outcomes
    # ...and no period is skipped: the successful windows tile the month (older run records are purged).
    spans = sorted((parse_datetime(r["window"]["start"]), parse_datetime(r["window"]["end"]))
                   for r in runs if r.get("status") in ("succeeded", "partial"))
    covered_until = spans[0][0]
    for start, end in spans:
        assert start <= covered_until, f"gap before {format_datetime(start)}"
        covered_until = max(covered_until, end)
    assert spans[0][0] <= last_end - RETENTION_DAYS * TICKS_PER_DAY
    assert covered_until == last_end
    # No secret in any log line or test output.
    assert SECRET not in caplog.text
    assert SECRET not in capsys.readouterr().err
