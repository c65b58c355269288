"""The detector's health messages over simulated months, through the Function's own entry points
(``daily_run`` and the frequent ``redeliver_run``), with Azurite for state, export files as the source,
local webhook servers and the real Teams and Logic App senders. Messages are counted as the fake
webhooks accepted them.

* a healthy month gives no health message at all, and every alert once per destination;
* each failure streak (a source outage, broken settings), retried by the platform three times a day,
  gives exactly one "failing" and one "recovered" per destination, the recovery naming the runs
  missed and the window caught up;
* a gap with no run at all gives one "not run since" (from the frequent timer) and one "recovered";
* a Teams outage while the first "failing" is sent delays it to a later attempt, never duplicates it;
* alerts are still delivered exactly once.

Time is simulated: the frequent timer ticks every 4 hours here (15 minutes in Azure) to keep the test
short; the decisions depend on elapsed time, not on the tick rate.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detector.errors import DetectorError
from detector.functions import daily_run, redeliver_run
from detector.timestamps import TICKS_PER_DAY, TICKS_PER_HOUR, TICKS_PER_MINUTE, format_datetime, parse_datetime
from tests.services import azurite_tables
from tests.webhook import Reply, WebhookServer, alert_message, webhook_server

DAY1 = parse_datetime("2026-10-01T06:00:00Z")
DAYS = 30
SECRET = "he4lthSOAKsig"
RETRIES = (0, 5, 15, 45)  # minutes: the run and the platform's three retries (exponential backoff)
TICK_HOURS = 4


def at(day: int, minutes: int = 0) -> int:
    return DAY1 + (day - 1) * TICKS_PER_DAY + minutes * TICKS_PER_MINUTE


def write_exports(folder: Path) -> set[str]:
    """One Run Command a day during a suspicious sign-in window (each seen by two daily runs), each on a VM
    of its own: the VM names expected in alerts."""
    activity, ueba, expected = [], [], set()
    for day in range(0, DAYS + 1):
        start = at(day) + 4 * TICKS_PER_HOUR
        cid = f"rc-{day:02d}"
        vm = f"vm-{day:02d}"
        scope = ("/subscriptions/8d6a3f2e-1c4b-4e7a-9f0d-2b5c6e8a1d3f/resourceGroups/rg/providers/"
                 f"Microsoft.Compute/virtualMachines/{vm}")
        for k, status in enumerate(("Started", "Accepted", "Succeeded")):
            activity.append({"TimeGenerated": format_datetime(start + k * 10_000_000),
                             "OperationNameValue": "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION",
                             "Authorization": json.dumps({"scope": scope}), "CorrelationId": cid,
                             "Caller": f"user{day % 5}@contoso.com", "CallerIpAddress": "20.1.2.3",
                             "ActivityStatusValue": status})
        ueba.append({"TimeGenerated": format_datetime(start - 30 * TICKS_PER_MINUTE), "EventSource": "Azure AD",
                     "ActionType": "Sign-in", "UserPrincipalName": f"user{day % 5}@contoso.com",
                     "SourceIPLocation": "Lagos, NG", "ActivityInsights": {"ActionUncommonlyPerformedByUser": "True"},
                     "UsersInsights": {"BlastRadius": "High"}})
        expected.add(vm)
    folder.mkdir(parents=True)
    (folder / "AzureActivity.json").write_text(json.dumps(activity))
    (folder / "BehaviorAnalytics.json").write_text(json.dumps(ueba))
    return expected


def health_messages(server: WebhookServer) -> dict[str, list[dict[str, Any]]]:
    """Health messages each destination accepted (2xx), in order, as the fake observed them."""
    teams = []
    for body in server.accepted("/teams"):
        card = body["attachments"][0]["content"]
        header = card["body"][0]
        if header.get("items", [{}])[0].get("text") == "Detector health · not a security alert":
            teams.append({"title": header["items"][1]["inlines"][0]["text"], "card": card})
    logic = [b for b in server.accepted("/logic") if b.get("kind") == "DetectorHealth"]
    return {"teams": teams, "logic": logic}


def alert_ids(server: WebhookServer) -> dict[str, Counter[str]]:
    """VMs of the alerts each destination accepted, first messages and updates alike (read from the fields
    that name the alert, not from its context, which names the caller's other Run Commands)."""
    out: dict[str, Counter[str]] = {}
    for name, path in (("teams", "/teams"), ("logic", "/logic")):
        counts: Counter[str] = Counter()
        for body in server.accepted(path):
            found = alert_message(body)
            if found is not None:
                counts[found[0]] += 1
        out[name] = counts
    return out


@pytest.fixture
def month(tmp_path: Path) -> Iterator[tuple[dict[str, str], WebhookServer, set[str]]]:
    expected = write_exports(tmp_path / "exports")
    with azurite_tables() as connection, webhook_server() as server:
        env = {"DETECTOR_SOURCE_DIR": str(tmp_path / "exports"), "DETECTOR_TABLE_CONNECTION_STRING": connection,
               "DETECTOR_TEAMS_WEBHOOK_URLS": server.url("/teams", SECRET),
               "DETECTOR_LOGICAPP_WEBHOOK_URLS": server.url("/logic", SECRET),
               "DETECTOR_HTTP_MAX_SECONDS": "1", "DETECTOR_HTTP_TIMEOUT_SECONDS": "5"}
        yield env, server, expected


def simulate(env: dict[str, str], *, broken: dict[int, dict[str, str]], skipped: set[int],
             before_run: dict[int, Any] | None = None) -> list[str]:
    """Run the month: daily runs (retried when they fail) and the frequent timer in time order."""
    events: list[tuple[int, str, int]] = []
    for day in range(1, DAYS + 1):
        if day not in skipped:
            events.append((at(day), "daily", day))
        for hour in range(2, 24, TICK_HOURS):
            events.append((at(day, hour * 60), "tick", day))
    log = []
    for when, kind, day in sorted(events):
        if kind == "tick":
            redeliver_run(past_due=False, env=env, clock=lambda when=when: when)  # type: ignore[misc]
            continue
        if before_run and day in before_run:
            before_run[day]()
        for retry in RETRIES:
            now = when + retry * TICKS_PER_MINUTE
            try:
                daily_run(past_due=False, env={**env, **broken.get(day, {})}, clock=lambda now=now: now)  # type: ignore[misc]
                log.append(f"day {day}: ok")
                break
            except DetectorError as exc:
                log.append(f"day {day}: failed ({type(exc).__name__})")
    return log


def test_a_healthy_month_sends_no_health_message(month: tuple[dict[str, str], WebhookServer, set[str]]) -> None:
    env, server, expected = month
    log = simulate(env, broken={}, skipped=set())
    assert log == [f"day {d}: ok" for d in range(1, DAYS + 1)]
    assert health_messages(server) == {"teams": [], "logic": []}
    alerts = alert_ids(server)
    assert set(alerts["logic"]) == expected - {"vm-30"}  # vm-30's Run Command happens after the last run
    assert max(alerts["logic"].values()) == 1
    assert sum(alerts["teams"].values()) == len(alerts["logic"])
    assert max(alerts["teams"].values()) == 1


def test_failure_streaks_and_a_silent_gap_give_one_message_each_way(
        month: tuple[dict[str, str], WebhookServer, set[str]], caplog: pytest.LogCaptureFixture) -> None:
    env, server, expected = month
    caplog.set_level(logging.DEBUG)
    source_outage = {"DETECTOR_SOURCE_DIR": env["DETECTOR_SOURCE_DIR"] + "-missing"}
    bad_settings = {"DETECTOR_PERIOD_HOURS": "two days"}
    broken = {5: source_outage, 6: source_outage, 7: source_outage, 12: bad_settings, 13: bad_settings}
    teams_outage = {5: lambda: server.script("/teams", *[Reply(503)] * 3)}  # when the first "failing" goes out
    log = simulate(env, broken=broken, skipped={18, 19, 20, 21}, before_run=teams_outage)
    assert log.count("day 5: failed (InputError)") == 4
    assert log.count("day 12: failed (ConfigError)") == 4
    assert "day 8: ok" in log
    assert "day 14: ok" in log
    assert "day 22: ok" in log

    seen = health_messages(server)
    logic = [(m["event"], m["failure"]["stage"] if m["failure"] else None, m["missedRuns"]) for m in seen["logic"]]
    assert logic == [("failing", "source", 0), ("recovered", "source", 3), ("failing", "settings", 0),
                     ("recovered", "settings", 2), ("not_run_since", None, 0), ("recovered", None, 4)]
    titles = [m["title"] for m in seen["teams"]]
    assert [t.split(" ")[1].rstrip(",") for t in titles] == ["failing", "recovered", "failing", "recovered", "has", "recovered"]
    assert titles[1] == ("Detector recovered, 3 runs missed, the window caught up from 2026-10-03 06:00:00 UTC to "
                         "2026-10-08 06:00:00 UTC")
    assert titles[4] == "Detector has not completed a run since 2026-10-17 06:00:00 UTC"
    # 08:00 is exactly 24 h + 2 h of grace after the last success (not yet late): the next tick reports it
    assert seen["logic"][4]["at"] == "2026-10-18T12:00:00Z"
    assert seen["logic"][2]["failure"]["code"] == "DETECTOR_PERIOD_HOURS"
    assert len({m["messageId"] for m in seen["logic"]}) == 6
    # The Teams outage was observed, and the "failing" card went through on a later attempt, once.
    assert [r.status for r in server.received if r.path == "/teams"].count(503) == 3
    assert titles.count(titles[0]) == 1

    alerts = alert_ids(server)
    assert set(alerts["logic"]) == expected - {"vm-30"}
    assert max(alerts["logic"].values()) == 1
    assert max(alerts["teams"].values()) == 1
    assert sum(alerts["teams"].values()) == len(alerts["logic"])
    assert SECRET not in caplog.text
