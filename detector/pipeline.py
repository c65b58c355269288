"""One run, end to end: window -> source -> correlate -> allowlist -> dedup/outbox -> deliver.

``detect`` is the pure half (no state, no delivery), used by ``rows``, previews and parity.
``run_once`` is a production run: it plans the window from the watermark, records alerts before
sending them, delivers what is owed (this run's alerts, updates, and older undelivered ones), moves
the watermark and purges records older than the state lifetime. A run whose source fails records
itself as failed and raises: it never reads as "no findings", and the watermark stays where it was so
the next run covers the gap. A run where some alert could not be recorded delivers every other one,
reports it (status ``partial``) and keeps the watermark, so the next run retries that alert.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, TypedDict

from .alerts import build_alerts
from .allowlist import Allowlist, BudgetSummary, Suppression, apply
from .correlate import SEED_ONLY, Correlation, correlate
from .deliver import Destination
from .errors import DetectorError, StoreError
from .model import Alert
from .outbox import NO_ALIASES, DeliveryStats, RecordStats, deliver_pending, destination_aliases, record_alerts
from .rule import Rule
from .settings import Settings
from .sources import ReadReport, Source
from .store import PurgeStats, StateStore
from .timestamps import TICKS_PER_DAY, TICKS_PER_MINUTE, Ticks, format_datetime, from_datetime
from .triage import attach_context
from .window import DEFAULT_FREQUENCY_HOURS, DEFAULT_PERIOD_HOURS, Window, plan_window

logger = logging.getLogger("detector")

__all__ = ["FailedRunSummary", "RunPolicy", "RunResult", "RunStatus", "RunSummary", "detect", "plan_window",
           "redeliver", "run_once", "wall_clock"]

RunStatus = Literal["succeeded", "partial", "failed"]
"""``partial``: some alert could not be recorded (the watermark stays); ``failed``: the run raised."""


class WindowSummary(TypedDict):
    start: str
    end: str


class RowsRead(TypedDict):
    AzureActivity: int
    BehaviorAnalytics: int


class PurgeSummary(TypedDict):
    alerts: int
    runs: int
    undelivered_kept: int
    abandoned: list[str]


class _DetectSummary(TypedDict):
    run_id: str
    status: RunStatus
    window: WindowSummary
    source: str
    rules: list[str]
    rows_read: RowsRead
    malformed_rows: int
    duplicates_skipped: int
    run_commands: int
    run_commands_by_rule: dict[str, int]
    suspicious_logins: int
    matches: int
    matches_by_rule: dict[str, int]
    alerts: int
    alerts_by_rule: dict[str, int]
    suppressed: int
    suppressed_by: dict[str, int]
    allowlist_problems: list[str]
    allowlist_budget: BudgetSummary | None  # None: the run used no allowlist
    ueba_boolean_flags: int
    duration_seconds: float
    warnings: list[str]


class RunSummary(_DetectSummary, total=False):
    """What one run reports (the run record, the CLI's --json, App Insights' custom dimensions).

    The keys after ``warnings`` appear only for production runs (state and delivery)."""

    new_alerts: int
    updated_alerts: int
    already_known_alerts: int
    newly_suppressed: int
    unsuppressed: list[dict[str, str]]
    updates_owed: int
    migrated_from_old_keys: int
    record_failures: list[str]
    delivered: int
    delivered_by_destination: dict[str, int]
    updates_by_destination: dict[str, int]
    failed_by_destination: dict[str, int]
    undelivered: int
    claimed_elsewhere: int
    delivery_errors: list[str]
    owed_to_unconfigured: dict[str, int]
    unreadable_records: list[str]
    error: str
    purged: PurgeSummary
    past_due: bool  # the Function's timer fired late (added by detector/functions.py)


class FailedRunSummary(TypedDict):
    """The run record of a run that raised."""

    run_id: str
    status: Literal["failed"]
    error: str
    window: WindowSummary


def wall_clock() -> Ticks:
    return from_datetime(datetime.now(UTC))


@dataclass(slots=True)
class RunResult:
    """Everything one run produced, and the summary a person or App Insights reads."""

    window: Window
    source: str
    correlation: Correlation
    report: ReadReport
    alerts: list[Alert]
    rules: tuple[Rule, ...] = SEED_ONLY
    suppressed: list[Suppression] = field(default_factory=list)
    allowlist_problems: list[str] = field(default_factory=list)
    allowlist_budget: BudgetSummary | None = None
    recorded: RecordStats | None = None
    delivery: DeliveryStats | None = None
    purged: PurgeStats | None = None
    run_id: str = ""
    status: RunStatus = "succeeded"
    duration_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> RunSummary:
        stats = self.correlation.stats
        suppressed_by = Counter(entry_id for s in self.suppressed for entry_id in s.entry_ids)
        out: RunSummary = {
            "run_id": self.run_id,
            "status": self.status,
            "window": {"start": format_datetime(self.window.start), "end": format_datetime(self.window.end)},
            "source": self.source,
            "rules": [rule.id for rule in self.rules],
            "rows_read": {"AzureActivity": self.report.rows_read.get("AzureActivity", stats.activity_rows),
                          "BehaviorAnalytics": self.report.rows_read.get("BehaviorAnalytics", stats.ueba_rows)},
            "malformed_rows": self.report.malformed_count,
            "duplicates_skipped": self.report.duplicates_skipped,
            "run_commands": stats.run_commands_succeeded,
            "run_commands_by_rule": dict(stats.groups_by_rule),
            "suspicious_logins": stats.ueba_suspicious,
            "matches": stats.rows,
            "matches_by_rule": dict(stats.rows_by_rule),
            "alerts": len(self.alerts),
            "alerts_by_rule": dict(Counter(a.rule_id for a in self.alerts)),
            "suppressed": len(self.suppressed),
            "suppressed_by": dict(suppressed_by),
            "allowlist_problems": list(self.allowlist_problems),
            "allowlist_budget": self.allowlist_budget,
            "ueba_boolean_flags": stats.ueba_boolean_flags,
            "duration_seconds": round(self.duration_seconds, 3),
            "warnings": list(self.warnings),
        }
        if self.recorded is not None:
            out["new_alerts"] = self.recorded.new
            out["updated_alerts"] = self.recorded.updated
            out["already_known_alerts"] = self.recorded.unchanged
            out["newly_suppressed"] = self.recorded.suppressed_new
            out["unsuppressed"] = list(self.recorded.unsuppressed)
            out["updates_owed"] = self.recorded.updates_owed
            out["migrated_from_old_keys"] = self.recorded.migrated
            out["record_failures"] = self.recorded.failed[:20]
            if self.recorded.failed:
                out["error"] = f"{len(self.recorded.failed)} alert(s) could not be recorded: " \
                               f"{self.recorded.failed[0]}"[:1000]
        if self.delivery is not None:
            out["delivered"] = self.delivery.delivered_total
            out["delivered_by_destination"] = dict(self.delivery.delivered)
            out["updates_by_destination"] = dict(self.delivery.updates)
            out["failed_by_destination"] = dict(self.delivery.failed)
            out["undelivered"] = len(self.delivery.undelivered)
            out["claimed_elsewhere"] = self.delivery.claimed_elsewhere
            out["delivery_errors"] = self.delivery.errors[:20]
            out["owed_to_unconfigured"] = dict(self.delivery.unconfigured)
            if self.delivery.unreadable:
                out["unreadable_records"] = self.delivery.unreadable[:20]
                out["error"] = f"{len(self.delivery.unreadable)} unreadable alert record(s): " \
                               f"{self.delivery.unreadable[0]}"[:1000]
        if self.purged is not None:
            out["purged"] = {"alerts": self.purged.alerts, "runs": self.purged.runs,
                             "undelivered_kept": self.purged.undelivered_kept,
                             "abandoned": list(self.purged.abandoned[:20])}
        return out


def detect(source: Source, window: Window, *, allowlist: Allowlist | None = None,
           rules: Sequence[Rule] = SEED_ONLY) -> RunResult:
    """Read the window from ``source``, apply the rules and (optionally) the allowlist; no side effects."""
    started = time.perf_counter()
    data = source.fetch(window)
    correlation = correlate(data.activity, data.ueba, window, rules=rules)
    alerts = attach_context(build_alerts(correlation.rows), correlation, detected_at=window.end)
    suppressed: list[Suppression] = []
    problems: list[str] = []
    if allowlist is not None:
        alerts, suppressed = apply(allowlist, alerts)
        problems = [str(p) for p in allowlist.problems]
    result = RunResult(window=window, source=source.describe(), correlation=correlation, report=data.report,
                       alerts=alerts, rules=tuple(rules), suppressed=suppressed, allowlist_problems=problems,
                       allowlist_budget=allowlist.budget.to_dict() if allowlist is not None else None)
    if allowlist is not None and allowlist.budget.exceeded:
        result.warnings.append(f"allowlist {allowlist.budget.describe()}")
    if data.report.malformed_count:
        result.warnings.append(f"{data.report.malformed_count} malformed row(s) skipped")
    if correlation.stats.selected_outside_window and not correlation.stats.run_command_rows:
        # Most likely a replay whose period ends now (no --at) while the export is older: say so, since
        # "no alerts" would read as a clean result. Only rows the rules select count: a file scan reads
        # little else, and an export without any cannot alert in any window.
        result.warnings.append(
            f"none of the AzureActivity rows the rules select falls in the window {format_datetime(window.start)} "
            f".. {format_datetime(window.end)}; for a replay, give --at the export's run time")
    if correlation.stats.ueba_boolean_flags:
        result.warnings.append(
            f"{correlation.stats.ueba_boolean_flags} UEBA row(s) carry ActionUncommonlyPerformedByUser as a "
            "JSON boolean; the rule compares with the string \"True\" and, like Sentinel, does not match them")
    result.duration_seconds = time.perf_counter() - started
    return result


@dataclass(frozen=True, slots=True)
class RunPolicy:
    """Which rules run, and how runs are scheduled and caught up (settings)."""

    rules: tuple[Rule, ...] = SEED_ONLY
    period_hours: int = DEFAULT_PERIOD_HOURS
    frequency_hours: int = DEFAULT_FREQUENCY_HOURS
    max_catchup_days: int = 14
    lease_minutes: int = 10
    send_updates: bool = True
    retention_days: int = 30

    @classmethod
    def from_settings(cls, settings: Settings, *, period_hours: int | None = None) -> RunPolicy:
        period = period_hours if period_hours is not None else settings.period_hours
        return cls(rules=settings.rules, period_hours=period, frequency_hours=min(settings.frequency_hours, period),
                   max_catchup_days=settings.max_catchup_days, lease_minutes=settings.claim_lease_minutes,
                   send_updates=settings.send_updates, retention_days=settings.state_retention_days)


def run_once(*, source: Source, store: StateStore, destinations: Sequence[Destination], at: Ticks,
             policy: RunPolicy = RunPolicy(), clock: Callable[[], Ticks] = wall_clock,
             run_id: str | None = None, positional_ids: Mapping[str, str] = NO_ALIASES) -> RunResult:
    """One production run. Raises :class:`DetectorError` when the run fails (after recording it).

    ``positional_ids``: the destination ids earlier versions wrote -> the destinations' ids (the
    upgrade; ``deliver.factory.positional_ids``)."""
    run_id = run_id or uuid.uuid4().hex
    started = time.perf_counter()
    window = plan_window(at, store.get_watermark(), policy)
    try:
        aliases = destination_aliases(store, positional_ids)
        allowlist = Allowlist.load(store.list_allowlist(), now=at)
        result = detect(source, window, allowlist=allowlist, rules=policy.rules)
        result.run_id = run_id
        # Every alert is recorded, allowlisted or not: a later match can lift a suppression (outbox.decide).
        seen = [*result.alerts, *(s.alert for s in result.suppressed)]
        recorded = record_alerts(store, seen, [d.id for d in destinations], allowlist=allowlist, now=at,
                                 send_updates=policy.send_updates, aliases=aliases)
    except DetectorError as exc:
        failed: FailedRunSummary = {"run_id": run_id, "status": "failed", "error": str(exc)[:1000],
                                    "window": {"start": format_datetime(window.start),
                                               "end": format_datetime(window.end)}}
        store.record_run(run_id, failed)
        raise
    result.recorded = recorded
    result.alerts = sorted(recorded.open, key=lambda a: (a.start, a.caller, a.correlation_id, a.vm_name, a.key))
    result.suppressed = recorded.suppressed
    result.warnings += recorded.warnings
    for item in recorded.unsuppressed:
        result.warnings.append(f"alert {item['alert']} is no longer suppressed: {item['reason']}")
    if recorded.failed:
        # Held watermark: the next run's window covers this one again and retries what failed.
        result.status = "partial"
        result.warnings.append(f"{len(recorded.failed)} alert(s) could not be recorded; the watermark stays so "
                               "the next run retries them")
    else:
        # Every alert of this window is recorded: the window is done, whatever delivery does next
        # (undelivered alerts stay in the outbox and are retried).
        store.set_watermark(window.end)
    result.delivery = deliver_pending(store, destinations, owner=run_id, clock=clock,
                                      lease=policy.lease_minutes * TICKS_PER_MINUTE, aliases=aliases)
    if result.delivery.undelivered:
        result.warnings.append(f"{len(result.delivery.undelivered)} alert(s) not yet delivered; later runs retry")
    for dest_id, count in sorted(result.delivery.unconfigured.items()):
        result.warnings.append(f"{count} alert(s) owed to destination {dest_id}, which is no longer configured: "
                               f"kept, sent if it is configured again, purged {policy.retention_days} days after "
                               "it went")
    try:
        result.purged = store.purge(before=at - policy.retention_days * TICKS_PER_DAY)
    except DetectorError as exc:
        result.warnings.append(f"old records not purged this run: {exc}")
    if result.purged is not None and result.purged.abandoned:
        logger.error("detector: %d undelivered alert(s) purged, owed only to destinations removed from the settings "
                     "%d days ago or more: %s", len(result.purged.abandoned), policy.retention_days,
                     "; ".join(result.purged.abandoned[:20]))
        result.warnings.append(f"{len(result.purged.abandoned)} alert(s) never delivered were purged: they were owed "
                               f"only to destinations removed from the settings {policy.retention_days} days ago or "
                               f"more ({result.purged.abandoned[0]})")
    if result.purged is not None and result.purged.undelivered_kept:
        result.warnings.append(f"{result.purged.undelivered_kept} alert(s) older than the state lifetime are still "
                               "undelivered (kept, never purged): check the destinations")
    unreadable = result.delivery.unreadable
    if unreadable:
        result.status = "partial"
        result.warnings.append(f"{len(unreadable)} alert record(s) cannot be read and are not delivered")
    result.duration_seconds = time.perf_counter() - started
    store.record_run(run_id, result.summary())
    if unreadable:
        # Every other alert went out; the run still fails loudly, since a damaged record may hold an alert.
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise StoreError(f"{unreadable[0]}{more}")
    return result


def redeliver(*, store: StateStore, destinations: Sequence[Destination], policy: RunPolicy = RunPolicy(),
              clock: Callable[[], Ticks] = wall_clock, positional_ids: Mapping[str, str] = NO_ALIASES) -> DeliveryStats:
    """Send what the outbox still owes (the frequent timer), without querying anything."""
    return deliver_pending(store, destinations, owner="redeliver-" + uuid.uuid4().hex, clock=clock,
                           lease=policy.lease_minutes * TICKS_PER_MINUTE,
                           aliases=destination_aliases(store, positional_ids))
