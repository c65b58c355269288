"""The rules' query, step for step, in pure Python.

This module is the single implementation of every rule (detector/rule.py, detector/rules.py): the
file source, the Log Analytics source, the parity check and the benchmarks all feed it. Each function
names the KQL lines it ports. It streams: AzureActivity rows are filtered one at a time and only the
groups of the selected rules' operations are held; BehaviorAnalytics rows are filtered one at a time
and only suspicious sign-ins are held (that half, the join and the window are the same for every rule).
The rules run side by side over one pass of the input: an event belongs to at most one rule (their
operations do not overlap), and each rule's groups and rows carry its id.
"""

from __future__ import annotations

import bisect
import operator
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from . import kql
from .model import ActivityEvent, RuleRow, RunCommand, UebaEvent
from .rule import (
    RULE,
    SUCCESS_STATUSES,
    UEBA_EVENT_SOURCE,
    UEBA_INSIGHT,
    UEBA_INSIGHT_VALUE,
    WINDOW_AFTER_HOURS,
    WINDOW_BEFORE_HOURS,
    Rule,
)
from .timestamps import TICKS_PER_HOUR, Ticks
from .window import Window

__all__ = ["Correlation", "CorrelationStats", "correlate", "is_run_command", "is_suspicious_login", "join",
           "select_suspicious_logins", "summarize_run_commands"]

SEED_ONLY: tuple[Rule, ...] = (RULE,)


def is_run_command(event: ActivityEvent, rule: Rule = RULE) -> bool:
    """The rule's row filter; for the seed ``where OperationNameValue =~ "...RUNCOMMAND/ACTION"``
    ``| where Authorization has "virtualMachines"``."""
    return rule.matches(event.operation_name, event.authorization)


class _Group:
    """Running aggregates of one ``summarize`` group."""

    __slots__ = ("end", "ip", "ip_key", "start", "statuses")

    def __init__(self, event: ActivityEvent) -> None:
        self.start = event.time
        self.end = event.time
        self.ip = event.caller_ip
        self.ip_key = kql.ordinal_key(event.caller_ip)
        self.statuses = [event.status]

    def add(self, event: ActivityEvent) -> None:
        if event.time < self.start:
            self.start = event.time
        if event.time > self.end:
            self.end = event.time
        if event.caller_ip != self.ip:
            key = kql.ordinal_key(event.caller_ip)
            if key > self.ip_key:
                self.ip, self.ip_key = event.caller_ip, key
        self.statuses.append(event.status)


_RESOURCE_GROUP = re.compile(r"/resourceGroups/([^/]*)", re.IGNORECASE)


def _resource_group(scope: str) -> str:
    # Not part of the rule's output; the alert and the allowlist want it. Taken from the same scope.
    m = _RESOURCE_GROUP.search(scope)
    return m.group(1) if m else ""


def _finish(key: tuple[Rule, str, str, str], group: _Group) -> RunCommand:
    rule, correlation_id, authorization, caller = key
    # extend Authorization_d = parse_json(Authorization) | extend Scope = Authorization_d.scope
    scope = kql.member(kql.parse_json(authorization), "scope")
    # extend Scope_s = split(Scope, "/") | Subscription = tostring(Scope_s[2]) | VM = tostring(Scope_s[-1])
    # (the seed's index; an extended rule names its own, see Rule.machine)
    parts = kql.split(scope, "/")
    return RunCommand(
        correlation_id=correlation_id,
        authorization=authorization,
        caller=caller,
        start=group.start,
        end=group.end,
        caller_ip=group.ip,
        statuses=tuple(group.statuses),
        scope=kql.tostring(scope),
        subscription=kql.tostring(kql.at(parts, 2)),
        vm_name=rule.machine(parts),
        resource_group=_resource_group(kql.tostring(scope)),
        rule_id=rule.id,
    )


@dataclass(slots=True)
class CorrelationStats:
    """What the correlation saw; filled as the input streams through."""

    activity_rows: int = 0
    # A row the rules select lies outside the window: with none inside, the run warns (a replay without --at).
    # Counted over selected rows only, so a file scan (which reads little else) sees what a full parse sees.
    selected_outside_window: bool = False
    run_command_rows: int = 0  # rows the rules' filters kept (the benchmark's transfer figure)
    run_commands_succeeded: int = 0
    ueba_rows: int = 0
    ueba_suspicious: int = 0
    # UEBA rows the rule passes over only because the insight flag is a JSON boolean, not "True".
    ueba_boolean_flags: int = 0
    rows: int = 0
    # Succeeded groups and rows per rule id (only rules that found something appear).
    groups_by_rule: Counter[str] = field(default_factory=Counter)
    rows_by_rule: Counter[str] = field(default_factory=Counter)


def _rule_of(event: ActivityEvent, rules: Sequence[Rule]) -> Rule | None:
    return next((rule for rule in rules if rule.matches(event.operation_name, event.authorization)), None)


def summarize_run_commands(
    events: Iterable[ActivityEvent], window: Window, stats: CorrelationStats | None = None, *,
    rules: Sequence[Rule] = SEED_ONLY,
) -> list[RunCommand]:
    """The AzureActivity half of the query, up to the ``project`` before the join, for each rule."""
    stats = stats if stats is not None else CorrelationStats()
    groups: dict[tuple[Rule, str, str, str], _Group] = {}
    # The events of one operation repeat its operation name and Authorization text: decide once per pair.
    verdicts: dict[tuple[str, str], Rule | None] = {}
    start, end = window.start, window.end
    for event in events:
        stats.activity_rows += 1
        if not start <= event.time < end:
            # Checked until one is found, and not cached: a replay's rows may all lie outside the window.
            if not stats.selected_outside_window and _rule_of(event, rules) is not None:
                stats.selected_outside_window = True
            continue
        pair = (event.operation_name, event.authorization)
        if pair in verdicts:
            rule = verdicts[pair]
        else:
            rule = verdicts[pair] = _rule_of(event, rules)
        if rule is None:
            continue
        stats.run_command_rows += 1
        # summarize ... by CorrelationId, Authorization, Caller  (exact strings), within one rule
        key = (rule, event.correlation_id, event.authorization, event.caller)
        group = groups.get(key)
        if group is None:
            groups[key] = _Group(event)
        else:
            group.add(event)
    out = []
    succeeded: dict[tuple[str, ...], bool] = {}  # few distinct status lists: decide each once
    for key, group in groups.items():
        # where list_ActivityStatusValue has_any ("Success", "Succeeded")
        statuses = tuple(group.statuses)
        verdict = succeeded.get(statuses)
        if verdict is None:
            verdict = succeeded[statuses] = kql.has_any(statuses, SUCCESS_STATUSES)
        if verdict:
            out.append(_finish(key, group))
            stats.groups_by_rule[key[0].id] += 1
    stats.run_commands_succeeded += len(out)
    return out


def is_suspicious_login(event: UebaEvent) -> bool:
    """``where EventSource == "Azure AD" and ActivityInsights.ActionUncommonlyPerformedByUser == "True"``
    ``| where isnotempty(UserPrincipalName) and isnotempty(UEBASourceIPLocation)``."""
    return (
        event.event_source == UEBA_EVENT_SOURCE
        and kql.dynamic_equals(kql.member(event.activity_insights, UEBA_INSIGHT), UEBA_INSIGHT_VALUE)
        and kql.isnotempty(event.user_principal_name)
        and kql.isnotempty(event.source_ip_location)
    )


def select_suspicious_logins(
    events: Iterable[UebaEvent], window: Window, stats: CorrelationStats | None = None
) -> list[UebaEvent]:
    """The BehaviorAnalytics half of the query."""
    stats = stats if stats is not None else CorrelationStats()
    out = []
    for event in events:
        stats.ueba_rows += 1
        if not window.contains(event.time):
            continue
        if is_suspicious_login(event):
            out.append(event)
        elif (
            kql.member(event.activity_insights, UEBA_INSIGHT) is True
            and event.event_source == UEBA_EVENT_SOURCE
            and kql.isnotempty(event.user_principal_name)
            and kql.isnotempty(event.source_ip_location)
        ):
            stats.ueba_boolean_flags += 1
    stats.ueba_suspicious += len(out)
    return out


_row_sort_key = operator.attrgetter("start", "caller", "correlation_id", "ueba_time", "ueba_action_type",
                                    "ueba_source_location")


def join(run_commands: Iterable[RunCommand], logins: Iterable[UebaEvent]) -> list[RuleRow]:
    """``join kind=inner (...) on joinkey`` then the window ``where`` and the final projection.

    Every matching pair is kept (kind=inner, not innerunique), duplicates included. KQL leaves the
    order undefined; rows are sorted by StartTime, Caller, CorrelationId, UEBA time for stable output.
    """
    by_key: dict[str, list[UebaEvent]] = {}
    for login in logins:
        by_key.setdefault(kql.tolower(login.user_principal_name), []).append(login)
    # Each user's sign-ins sorted by time: StartTime between (t - 1h .. t + 6h) is the same as
    # t between (StartTime - 6h .. StartTime + 1h), a range found by bisection (a busy account can
    # have thousands of flagged sign-ins; testing every pair would be quadratic).
    times: dict[str, list[Ticks]] = {}
    for key, events in by_key.items():
        events.sort(key=lambda e: e.time)
        times[key] = [e.time for e in events]
    rows: list[RuleRow] = []
    before = WINDOW_BEFORE_HOURS * TICKS_PER_HOUR
    after = WINDOW_AFTER_HOURS * TICKS_PER_HOUR
    for rc in run_commands:
        key = kql.tolower(rc.caller)
        matches = by_key.get(key)
        if not matches:
            continue
        # extend AccountName = tostring(split(Caller, "@")[0]), AccountUPNSuffix = ...[1]
        caller_parts = kql.split(rc.caller, "@")
        account_name = kql.tostring(kql.at(caller_parts, 0))
        upn_suffix = kql.tostring(kql.at(caller_parts, 1))
        first = bisect.bisect_left(times[key], rc.start - after)
        last = bisect.bisect_right(times[key], rc.start + before)
        for login in matches[first:last]:
            # where StartTime between (UEBAEventTime - 1h .. UEBAEventTime + 6h)
            if not kql.between(rc.start, login.time - before, login.time + after):
                continue
            # Positional, in RuleRow's field order (keyword construction costs twice as much here).
            rows.append(RuleRow(
                rc.start, rc.end, rc.subscription, rc.vm_name, rc.caller, rc.caller_ip,
                login.time, login.action_type, login.source_ip_location, login.activity_insights,
                login.users_insights, account_name, upn_suffix, rc.correlation_id, rc.scope, rc.resource_group,
                login.source_ip, login.investigation_priority,
                rc.authorization, rc.rule_id,
            ))
    rows.sort(key=_row_sort_key)
    return rows


@dataclass(slots=True)
class Correlation:
    """The rule's rows for one window and what was seen on the way."""

    window: Window
    rows: list[RuleRow]
    stats: CorrelationStats = field(default_factory=CorrelationStats)
    # What the rule's two halves kept before the join, for triage context (detector/triage.py).
    run_commands: list[RunCommand] = field(default_factory=list)
    logins: list[UebaEvent] = field(default_factory=list)


def correlate(activity: Iterable[ActivityEvent], ueba: Iterable[UebaEvent], window: Window, *,
              rules: Sequence[Rule] = SEED_ONLY) -> Correlation:
    """The whole query over one window, for each rule: AzureActivity first, then BehaviorAnalytics."""
    stats = CorrelationStats()
    run_commands = summarize_run_commands(activity, window, stats, rules=rules)
    logins = select_suspicious_logins(ueba, window, stats)
    rows = join(run_commands, logins)
    stats.rows = len(rows)
    stats.rows_by_rule.update(row.rule_id for row in rows)
    return Correlation(window=window, rows=rows, stats=stats, run_commands=run_commands, logins=logins)
