"""A simulated 30-day soak of the real pipeline under faults: nothing lost, nothing duplicated,
nothing allowlisted delivered, failed days reported, no period skipped, no secret leaked.

Real parts: Azurite (state), the Log Analytics fake over HTTPS with the real LogsQueryClient, local
webhook servers, the real Teams and Logic App senders, and a separate process that is killed
(SIGKILL) after recording its alerts and before delivering them. Time is simulated: each daily run
gets its run time and a clock; claims and leases follow that clock.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from detector.deliver.http import make_session
from detector.deliver.logicapp import LogicAppDestination
from detector.deliver.teams import TeamsDestination
from detector.errors import SourceError
from detector.pipeline import RunPolicy, redeliver, run_once
from detector.sources.loganalytics import LogAnalyticsSource, make_client
from detector.store.tables import TableStore
from detector.timestamps import TICKS_PER_DAY, TICKS_PER_HOUR, TICKS_PER_MINUTE, format_datetime, parse_datetime
from tests.la_fake import LogAnalyticsFake, StaticCredential, log_analytics_fake
from tests.webhook import Reply, webhook_server

ROOT = Path(__file__).resolve().parents[1]
DAY0 = parse_datetime("2026-10-01T06:00:00Z")
DAYS = 30
SECRET = "s0akSECRETsig"
ALLOW = {"id": "maint", "reason": "maintenance account", "conditions": [
    {"field": "caller", "op": "equals", "value": "svc.maint@contoso.com"}]}
WORKSPACE = "99999999-2222-3333-4444-555555555555"


def auth(vm: str) -> str:
    scope = f"/subscriptions/8d6a3f2e-1c4b-4e7a-9f0d-2b5c6e8a1d3f/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{vm}"
    return json.dumps({"scope": scope, "action": "Microsoft.Compute/virtualMachines/runCommand/action"}, indent=2)


def workspace() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int], set[str]]:
    activity: list[dict[str, Any]] = []
    ueba: list[dict[str, Any]] = []
    expected: dict[str, int] = {}
    allowlisted: set[str] = set()

    def run_command(cid: str, caller: str, start: int, statuses: tuple[str, ...] = ("Started", "Accepted", "Succeeded")) -> None:
        for k, status in enumerate(statuses):
            activity.append({"TimeGenerated": start + k * 10_000_000, "OperationNameValue":
                             "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION", "Authorization": auth(f"vm-{cid}"),
                             "CorrelationId": cid, "Caller": caller, "CallerIpAddress": "20.1.2.3",
                             "ActivityStatusValue": status})

    def login(upn: str, time: int, flag: str = "True") -> None:
        ueba.append({"TimeGenerated": time, "EventSource": "Azure AD", "ActionType": "Sign-in",
                     "UserPrincipalName": upn, "SourceIPLocation": "Lagos, NG",
                     "ActivityInsights": {"ActionUncommonlyPerformedByUser": flag}, "UsersInsights": {"BlastRadius": "High"}})

    for d in range(DAYS):
        base = DAY0 + d * TICKS_PER_DAY
        for k in range(2):  # two true positives a day, one late in the day (seen by two runs)
            cid, user = f"tp-{d:02d}-{k}", f"user{d % 7}{k}@contoso.com"
            start = base + (3 + 14 * k) * TICKS_PER_HOUR
            run_command(cid, user, start)
            login(user, start - 30 * TICKS_PER_MINUTE)
            expected[cid] = start
        cid = f"fp-{d:02d}"
        run_command(cid, "svc.maint@contoso.com", base + 5 * TICKS_PER_HOUR)
        login("svc.maint@contoso.com", base + 4 * TICKS_PER_HOUR)
        allowlisted.add(cid)
        run_command(f"failed-{d:02d}", f"user{d % 7}0@contoso.com", base + 8 * TICKS_PER_HOUR,
                    ("Started", "Accepted", "Failed"))
        login(f"other{d}@contoso.com", base + 9 * TICKS_PER_HOUR, flag="False")
    return activity, ueba, expected, allowlisted


CHILD = """
import json, os, signal, sys
sys.path.insert(0, {root!r})
from tests.la_fake import StaticCredential
from detector.pipeline import run_once, RunPolicy
from detector.sources.loganalytics import LogAnalyticsSource, make_client
from detector.store.tables import TableStore

class Doomed:
    def __init__(self, id):
        self.id = id
    def deliver(self, alerts):
        os.kill(os.getpid(), signal.SIGKILL)  # killed after recording (and claiming), before sending

at = {at}
client = make_client(StaticCredential(), endpoint={endpoint!r}, connection_verify={ca!r})
run_once(source=LogAnalyticsSource(client, {workspace!r}), store=TableStore.from_connection_string({conn!r}),
         destinations=[Doomed("teams-1"), Doomed("logicapp-1")], at=at, clock=lambda: at)
"""


def test_thirty_days_under_faults(azurite: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    activity, ueba, expected, allowlisted = workspace()
    fake = LogAnalyticsFake(activity=activity, ueba=ueba)
    store = TableStore.from_connection_string(azurite)
    store.put_allowlist(ALLOW)
    figures: Counter[str] = Counter()
    outcomes: dict[int, str] = {}
    with log_analytics_fake(fake) as (endpoint, ca), webhook_server() as hooks:
        client = make_client(StaticCredential(), endpoint=endpoint, connection_verify=ca, retry_backoff_factor=0.01,
                             retries=2)
        source = LogAnalyticsSource(client, WORKSPACE)
        session = make_session(max_seconds=5, backoff=0.01, retries=3)
        teams = TeamsDestination("teams-1", hooks.url("/teams", SECRET), session=session)
        logic = LogicAppDestination("logicapp-1", hooks.url("/logic", SECRET), session=session)
        destinations = [teams, logic]

        def day_run(day: int, *, fault: str = "") -> None:
            at = DAY0 + day * TICKS_PER_DAY + TICKS_PER_DAY  # the run after day `day`
            if fault:
                figures[fault] += 1
            try:
                run_once(source=source, store=store, destinations=destinations, at=at, clock=lambda: at,
                         policy=RunPolicy(lease_minutes=10))
                outcomes[day] = "succeeded"
            except SourceError as exc:
                outcomes[day] = f"failed: {exc}"

        for day in range(DAYS):
            if day in (5, 6):  # a Teams outage of two days
                hooks.script("/teams", *[Reply(503)] * 400)
                day_run(day, fault="teams outage day")
                hooks.script("/teams")
            elif day == 8:  # a storm of 429s with Retry-After, then the webhook recovers
                hooks.script("/teams", *[Reply(429, {"Retry-After": "1"})] * 2)
                day_run(day, fault="429 storm")
            elif day == 10:  # the Logic App answers 500 all day
                hooks.script("/logic", *[Reply(500)] * 400)
                day_run(day, fault="logic app 500")
                hooks.script("/logic")
            elif day == 12:  # a partial query result: the run must fail, not read as "no findings"
                fake.partial_error_on = "BehaviorAnalytics"
                day_run(day, fault="partial query result")
                fake.partial_error_on = None
            elif day == 13:  # persistent 5xx from Log Analytics (beyond azure-core's retries)
                fake.failures = [(503, {}, {"error": {"code": "ServiceUnavailable", "message": "down"}})] * 3
                day_run(day, fault="query 5xx outage")
                fake.failures = []
            elif day == 14:  # one transient 5xx: retried by azure-core, the run succeeds
                fake.failures = [(502, {}, {"error": {"code": "BadGateway", "message": "blip"}})]
                day_run(day, fault="transient query 5xx")
            elif day in (17, 18, 19):  # three missed runs in a row
                figures["missed run"] += 1
                outcomes[day] = "missed"
            elif day == 21:  # two runs overlapping in time
                figures["overlapping runs"] += 1
                threads = [threading.Thread(target=day_run, args=(day,)) for _ in range(2)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            elif day == 24:  # a process killed between recording alerts and delivering them
                figures["process killed mid-run"] += 1
                at = DAY0 + (day + 1) * TICKS_PER_DAY
                code = CHILD.format(root=str(ROOT), at=at, endpoint=endpoint, ca=ca, workspace=WORKSPACE, conn=azurite)
                done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)})
                assert done.returncode == -9, done.stderr[-2000:]
                outcomes[day] = "killed"
            else:
                day_run(day)
        # After the last day: the 15-minute redelivery timer has run at least once.
        last = DAY0 + DAYS * TICKS_PER_DAY + TICKS_PER_HOUR
        redeliver(store=store, destinations=destinations, clock=lambda: last)

        def delivered(path: str) -> Counter[str]:
            seen: Counter[str] = Counter()
            for body in hooks.accepted(path):
                text = json.dumps(body)
                for cid in set(expected) | allowlisted:
                    if f'"{cid}"' in text:
                        seen[cid] += 1
            return seen
        teams_seen, logic_seen = delivered("/teams"), delivered("/logic")

    last_end = DAY0 + DAYS * TICKS_PER_DAY
    want = {cid for cid, start in expected.items() if start < last_end}
    duplicated = sum(c - 1 for c in teams_seen.values() if c > 1) + sum(c - 1 for c in logic_seen.values() if c > 1)
    lost = len(want - set(teams_seen)) + len(want - set(logic_seen))
    line = (f"soak: {DAYS} days; faults injected: {sum(figures.values())} {dict(figures)}; alerts expected: "
            f"{len(want)} x 2 destinations; delivered: teams {sum(teams_seen.values())}, logic app "
            f"{sum(logic_seen.values())}; duplicated: {duplicated}; lost: {lost}; allowlisted delivered: "
            f"{len(allowlisted & (set(teams_seen) | set(logic_seen)))}; failed days reported: "
            f"{sum(1 for o in outcomes.values() if o.startswith('failed'))}")
    print("\n" + line)
    (ROOT / "out").mkdir(exist_ok=True)
    (ROOT / "out" / "soak-figures.txt").write_text(line + "\n", encoding="utf-8")  # scripts/test prints it
    assert set(teams_seen) == want
    assert set(logic_seen) == want
    assert duplicated == 0
    assert not allowlisted & (set(teams_seen) | set(logic_seen))
    # Failed days are reported as failed...
    runs = store.list_runs()
    failed_windows = [r["window"]["end"] for r in runs if r.get("status") == "failed"]
    assert failed_windows == [format_datetime(DAY0 + (d + 1) * TICKS_PER_DAY) for d in (12, 13)], outcomes
    # ...and no period is skipped: the successful windows tile the whole month.
    spans = sorted((parse_datetime(r["window"]["start"]), parse_datetime(r["window"]["end"]))
                   for r in runs if r.get("status") == "succeeded")
    covered_until = spans[0][0]
    for start, end in spans:
        assert start <= covered_until, f"gap before {format_datetime(start)}"
        covered_until = max(covered_until, end)
    assert spans[0][0] <= DAY0
    assert covered_until == last_end
    # No secret in any log line or test output.
    assert SECRET not in caplog.text
    assert SECRET not in capsys.readouterr().err
