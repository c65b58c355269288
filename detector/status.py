"""``python -m detector status``: the detector's health at a glance, read from its state (either backend).

One verdict, with an exit code a script can use:

* **failing** (exit 4): no successful run recorded, the last successful run is older than the
  frequency plus the grace period (the watermark is late), the last run failed or was partial (an
  alert it could not record), or a failure streak is open in the health record;
* **degraded** (exit 1): the runs are fine but something needs a person: the allowlist over its budget
  (its broadest entries set aside: fail closed, but a sign of a careless or hostile edit; named first),
  alerts pending or failed for a destination, or owed to a destination no longer configured (sent if it
  comes back, else purged a state lifetime after it went), health messages not yet delivered, allowlist
  entries that are invalid, expire within 7 days, or have not suppressed anything for 90 days (entries
  younger than 90 days are not stale);
* **healthy** (exit 0): none of the above.

Reading only: nothing here writes to the state or sends anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .allowlist import Allowlist, AllowlistBudget
from .health import FAILING as HEALTH_FAILING
from .health import HealthRecord, overdue_after
from .store import DELIVERED, FAILED, StateStore
from .timestamps import TICKS_PER_DAY, TICKS_PER_HOUR, Ticks, format_datetime, parse_datetime

HEALTHY = "healthy"
DEGRADED = "degraded"
FAILING = "failing"
EXIT_CODES = {HEALTHY: 0, DEGRADED: 1, FAILING: 4}
EXPIRY_NOTICE_DAYS = 7
UNUSED_AFTER_DAYS = 90
RUNS_SHOWN = 5


def _iso(value: Ticks | None) -> str | None:
    return format_datetime(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class RunLine:
    """One recorded run. Its time is its window's end: the instant the run was scheduled for."""

    run_id: str
    time: str | None
    window_start: str | None
    window_end: str | None
    status: str
    counts: dict[str, int]
    duration_seconds: float | None
    error: str = ""

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RunLine:
        raw_window = record.get("window")
        window: dict[str, Any] = raw_window if isinstance(raw_window, dict) else {}
        counts = {k: int(record[k]) for k in ("alerts", "new_alerts", "suppressed", "delivered", "undelivered")
                  if isinstance(record.get(k), int)}
        duration = record.get("duration_seconds")
        status = "unreadable" if record.get("unreadable") else str(record.get("status", "?"))
        return cls(run_id=str(record.get("run_id") or record.get("id") or "?"), time=window.get("end"),
                   window_start=window.get("start"), window_end=window.get("end"), status=status,
                   counts=counts, duration_seconds=float(duration) if isinstance(duration, int | float) else None,
                   error=str(record.get("error", ""))[:300])

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "time": self.time, "window": {"start": self.window_start,
                                                                     "end": self.window_end},
                "status": self.status, "counts": dict(self.counts), "duration_seconds": self.duration_seconds,
                "error": self.error}


@dataclass(slots=True)
class StatusReport:
    now: Ticks
    backend: str
    runs: list[RunLine]
    watermark: Ticks | None
    overdue_after_hours: int
    destinations: dict[str, dict[str, Any]]
    expiring: list[dict[str, str]]
    unused: list[dict[str, str | None]]
    allowlist_invalid: list[str]
    allowlist_budget: AllowlistBudget
    health: HealthRecord
    # The destinations this command's settings configure: id -> scheme and host (empty without them).
    configured: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, list[str]] = field(default_factory=dict)

    @property
    def late(self) -> bool:
        return self.watermark is None or self.now - self.watermark > self.overdue_after_hours * TICKS_PER_HOUR

    @property
    def verdict(self) -> str:
        if self.reasons.get(FAILING):
            return FAILING
        return DEGRADED if self.reasons.get(DEGRADED) else HEALTHY

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def verdict_line(self) -> str:
        reasons = self.reasons.get(self.verdict, [])
        return f"{self.verdict.upper()}" + (f": {'; '.join(reasons)}" if reasons else ": runs on time, nothing owed")

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict, "exit_code": self.exit_code, "reasons": self.reasons.get(self.verdict, []),
            "now": format_datetime(self.now), "backend": self.backend,
            "runs": [r.to_dict() for r in self.runs],
            "watermark": {"end": _iso(self.watermark), "late": self.late,
                          "overdue_after_hours": self.overdue_after_hours},
            "destinations": self.destinations,
            "configured_destinations": self.configured,
            "allowlist": {"expiring_within_7_days": self.expiring, "no_hit_in_90_days": self.unused,
                          "invalid": self.allowlist_invalid, "budget": self.allowlist_budget.to_dict()},
            "health": {"status": self.health.status, "since": _iso(self.health.since),
                       "failed_runs": self.health.failed_runs,
                       "messages_owed": [{"id": m.event.id, "owed": list(m.owed), "last_error": m.last_error}
                                         for m in self.health.messages]},
        }


def _destinations(store: StateStore, unreadable: list[str]) -> dict[str, dict[str, Any]]:
    """Alerts not yet sent, per destination: ``pending``, ``failed``, and ``not_configured`` (owed to a
    destination the last delivery pass found missing from the settings, with the earliest such time)."""
    out: dict[str, dict[str, Any]] = {}
    for stored in store.list_pending(unreadable=unreadable):
        for dest_id, state in stored.destinations.items():
            if state.state == DELIVERED:
                continue
            counts = out.setdefault(dest_id, {"pending": 0, "failed": 0, "not_configured": 0,
                                              "not_configured_since": None})
            if state.unconfigured_since is not None:
                counts["not_configured"] += 1
                since = counts["not_configured_since"]
                counts["not_configured_since"] = min(state.unconfigured_since, since or state.unconfigured_since)
            else:
                counts["failed" if state.state == FAILED else "pending"] += 1
    for counts in out.values():
        counts["not_configured_since"] = _iso(counts["not_configured_since"])
    return dict(sorted(out.items()))


def build_status(store: StateStore, *, now: Ticks, frequency_hours: int, grace_hours: int,
                 retention_days: int, configured: Mapping[str, str] | None = None) -> StatusReport:
    raw_health, _ = store.get_health()
    unreadable = ""
    try:
        record = HealthRecord.from_dict(raw_health) if raw_health else HealthRecord()
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        # Never read as healthy: the next health update replaces it, and a streak it held is lost.
        record, unreadable = HealthRecord(), f"the health record is unreadable ({type(exc).__name__}: {exc})"[:300]
    unreadable_alerts: list[str] = []
    runs = [RunLine.from_record(r) for r in store.list_runs()]  # oldest first (both backends)
    loaded = Allowlist.load(store.list_allowlist(), now=now)
    stats = store.allowlist_stats()
    expiring = [{"id": e.id, "expires_at": format_datetime(e.expires_at)} for e in loaded.active
                if e.expires_at is not None and e.expires_at - now <= EXPIRY_NOTICE_DAYS * TICKS_PER_DAY]
    unused: list[dict[str, str | None]] = []
    cutoff = now - UNUSED_AFTER_DAYS * TICKS_PER_DAY
    for entry in loaded.active:
        last = stats[entry.id].last_hit if entry.id in stats else None
        if entry.created_at is not None and entry.created_at <= cutoff and (last is None or last <= cutoff):
            unused.append({"id": entry.id, "last_hit": _iso(last)})
    report = StatusReport(
        now=now, backend=store.describe(), runs=runs[-RUNS_SHOWN:], watermark=store.get_watermark(),
        overdue_after_hours=overdue_after(frequency_hours=frequency_hours, grace_hours=grace_hours) // TICKS_PER_HOUR,
        destinations=_destinations(store, unreadable_alerts), expiring=expiring, unused=unused,
        allowlist_invalid=[str(p) for p in loaded.problems if p.kind in ("invalid", "duplicate")],
        allowlist_budget=loaded.budget, health=record, configured=dict(configured or {}))
    failing: list[str] = []
    degraded: list[str] = []
    if report.watermark is None:
        failing.append("no successful run recorded")
    elif report.late:
        failing.append(f"no successful run since {format_datetime(report.watermark)} "
                       f"(more than {report.overdue_after_hours} h)")
    if runs and runs[-1].status != "succeeded":
        failing.append(f"the last run {runs[-1].status}" + (f": {runs[-1].error}" if runs[-1].error else ""))
    if record.status == HEALTH_FAILING and record.since is not None:
        failing.append(f"failing since {format_datetime(record.since)} ({record.failed_runs} failed run(s))")
    if loaded.budget.exceeded:
        degraded.append(f"allowlist {loaded.budget.describe()}")
    for dest_id, counts in report.destinations.items():
        if counts["pending"] or counts["failed"]:
            degraded.append(f"{dest_id}: {counts['pending']} alert(s) pending, {counts['failed']} failed")
        if counts["not_configured"]:
            since = parse_datetime(counts["not_configured_since"])
            degraded.append(f"{dest_id}: {counts['not_configured']} alert(s) owed, but it is no longer configured "
                            f"(since {format_datetime(since)}); sent if it is configured again, else purged (and "
                            f"reported) after {format_datetime(since + retention_days * TICKS_PER_DAY)}")
    if unreadable:
        degraded.append(unreadable)
    if unreadable_alerts:
        degraded.append(f"{len(unreadable_alerts)} unreadable alert record(s), never delivered: "
                        f"{unreadable_alerts[0][:300]}")
    if record.messages:
        degraded.append(f"{len(record.messages)} health message(s) not yet delivered")
    if report.allowlist_invalid:
        degraded.append(f"{len(report.allowlist_invalid)} invalid allowlist entr"
                        f"{'y' if len(report.allowlist_invalid) == 1 else 'ies'}")
    if expiring:
        degraded.append(f"{len(expiring)} allowlist entr{'y' if len(expiring) == 1 else 'ies'} expire within "
                        f"{EXPIRY_NOTICE_DAYS} days")
    if unused:
        degraded.append(f"{len(unused)} allowlist entr{'y' if len(unused) == 1 else 'ies'} with no hit in "
                        f"{UNUSED_AFTER_DAYS} days")
    report.reasons = {FAILING: failing, DEGRADED: degraded}
    return report


def render(report: StatusReport) -> str:
    lines = [f"detector status ({report.backend}) at {format_datetime(report.now)}", "", "last runs:"]
    if not report.runs:
        lines.append("  none recorded")
    for run in report.runs:
        counts = ", ".join(f"{k} {v}" for k, v in run.counts.items())
        duration = f"{run.duration_seconds:.2f}s" if run.duration_seconds is not None else "-"
        lines.append(f"  {run.time or '?'}  {run.status:<9}  window {run.window_start or '?'} .. "
                     f"{run.window_end or '?'}  {duration}  {counts}".rstrip())
        if run.error:
            lines.append(f"      error: {run.error}")
    late = "LATE" if report.late else "on time"
    lines += ["", f"watermark: {_iso(report.watermark) or 'none'} ({late}; late after {report.overdue_after_hours} h)"]
    lines.append("alerts owed per destination: " + (", ".join(
        f"{d} pending {c['pending']} failed {c['failed']}"
        + (f" not configured {c['not_configured']} (since {c['not_configured_since']})" if c["not_configured"] else "")
        for d, c in report.destinations.items()) or "none"))
    if report.configured:
        lines.append("destinations configured here: " + ", ".join(f"{d} ({where})"
                                                                 for d, where in report.configured.items()))
    lines.append(f"health: {report.health.status}"
                 + (f" since {format_datetime(report.health.since)}" if report.health.since is not None else "")
                 + (f"; {len(report.health.messages)} health message(s) owed" if report.health.messages else ""))
    lines.append("allowlist expiring within 7 days: " + (", ".join(
        f"{e['id']} ({e['expires_at']})" for e in report.expiring) or "none"))
    lines.append("allowlist with no hit in 90 days: " + (", ".join(
        f"{e['id']} (last hit {e['last_hit'] or 'never'})" for e in report.unused) or "none"))
    if report.allowlist_invalid:
        lines.append("allowlist invalid: " + "; ".join(report.allowlist_invalid))
    lines.append(f"allowlist budget: {report.allowlist_budget.describe()}")
    lines += ["", report.verdict_line()]
    return "\n".join(lines) + "\n"
