"""Dedup and outbox: each alert is recorded before it is sent and delivered once per destination.

* Alert key = rule id + CorrelationId. A later run that sees the same Run Command (the 2-day period
  overlaps the daily frequency) merges any new UEBA matches into the stored alert and sends nothing.
* Alerts are written to state *before* delivery, with every destination ``pending``; after each send
  the destination is marked ``delivered`` (or keeps its error and is retried by later runs).
* Sending needs a claim: an ETag-conditional write of (owner, lease). Two runs racing on one alert
  both read the same ETag; only one claim write succeeds, the other skips the alert. A claim whose
  lease ran out (a process died mid-delivery) can be taken by a later run, so nothing is lost; if the
  process died after the webhook accepted the message but before it was marked, that one message is
  sent again (at-least-once in that window, exactly-once otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from .allowlist import Suppression
from .correlate import build_alerts
from .deliver import Destination, Outcome
from .errors import DetectorError
from .model import Alert
from .store import (
    DELIVERED,
    FAILED,
    OPEN,
    PENDING,
    SUPPRESSED,
    ConflictError,
    DestinationState,
    StateStore,
    StoredAlert,
)
from .timestamps import Ticks

MAX_WRITE_RETRIES = 5


def _row_identity(alert: Alert) -> set[str]:
    return {r.identity() for r in alert.rows}


def merge_alerts(old: Alert, new: Alert) -> Alert:
    """The stored alert with the new run's rows added (the same Run Command, seen again)."""
    known = _row_identity(old)
    extra = [r for r in new.rows if r.identity() not in known]
    if not extra:
        return old
    [merged] = build_alerts(list(old.rows) + extra)
    # The newer run's triage context (its window saw more); the first detection time stays.
    context = new.context or old.context
    if context is not None and old.context is not None:
        context = replace(context, detected_at=old.context.detected_at)
    return replace(merged, context=context)


@dataclass(slots=True)
class RecordStats:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    # Suppressed alerts seen for the first time (one allowlist hit each); RunResult counts every sighting.
    suppressed_new: int = 0


def record_alerts(store: StateStore, alerts: Sequence[Alert], suppressions: Sequence[Suppression],
                  destination_ids: Sequence[str], *, now: Ticks) -> RecordStats:
    """Write this run's alerts to state (before any delivery) and count suppressions."""
    stats = RecordStats()
    for alert in alerts:
        _record_one(store, alert, destination_ids, now, stats)
    hits: dict[str, int] = {}
    for s in suppressions:
        if store.get_alert(s.alert.key) is not None:
            continue  # already known (delivered or suppressed before): not a new hit
        try:
            store.create_alert(StoredAlert(alert=s.alert, status=SUPPRESSED, suppressed_by=s.entry_ids,
                                           first_seen=now, updated=now))
        except ConflictError:
            continue  # another run recorded it first and counted the hit
        stats.suppressed_new += 1
        for entry_id in s.entry_ids:
            hits[entry_id] = hits.get(entry_id, 0) + 1
    store.record_hits(hits, now)
    return stats


def _record_one(store: StateStore, alert: Alert, destination_ids: Sequence[str], now: Ticks,
                stats: RecordStats) -> None:
    for _ in range(MAX_WRITE_RETRIES):
        existing = store.get_alert(alert.key)
        if existing is None:
            try:
                store.create_alert(StoredAlert(alert=alert, status=OPEN,
                                               destinations={d: DestinationState() for d in destination_ids},
                                               first_seen=now, updated=now))
                stats.new += 1
                return
            except ConflictError:
                continue
        merged = merge_alerts(existing.alert, alert)
        if merged == existing.alert:
            stats.unchanged += 1
            return
        try:
            store.replace_alert(existing.with_changes(alert=merged, updated=now))
            stats.updated += 1
            return
        except ConflictError:
            continue
    raise ConflictError(f"alert {alert.key} kept changing while being recorded")


@dataclass(slots=True)
class DeliveryStats:
    delivered: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    claimed_elsewhere: int = 0
    undelivered: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def delivered_total(self) -> int:
        return sum(self.delivered.values())


def deliver_pending(store: StateStore, destinations: Sequence[Destination], *, owner: str,
                    clock: Callable[[], Ticks], lease: Ticks) -> DeliveryStats:
    """Claim every pending alert, send it to each destination still owed, record the outcome."""
    stats = DeliveryStats()
    by_id = {d.id: d for d in destinations}
    claimed: list[StoredAlert] = []
    now = clock()
    for stored in sorted(store.list_pending(), key=lambda s: (s.alert.start, s.key)):
        if stored.claim_owner and stored.claim_owner != owner and stored.claim_until > now:
            stats.claimed_elsewhere += 1
            continue
        try:
            claimed.append(store.replace_alert(stored.with_changes(claim_owner=owner, claim_until=now + lease)))
        except ConflictError:
            stats.claimed_elsewhere += 1
    outcomes: dict[str, dict[str, Outcome]] = {s.key: {} for s in claimed}
    for dest_id in sorted({d for s in claimed for d in s.destinations}):
        # Destinations are fixed when an alert is recorded: a webhook added later gets new alerts only.
        batch = [s for s in claimed if dest_id in s.destinations and s.destinations[dest_id].state != DELIVERED]
        if not batch:
            continue
        destination = by_id.get(dest_id)
        if destination is None:
            results = [Outcome(False, f"destination {dest_id} is no longer configured")] * len(batch)
        else:
            try:
                results = destination.deliver([s.alert for s in batch])
            except DetectorError as exc:
                results = [Outcome(False, str(exc))] * len(batch)
        for stored, outcome in zip(batch, results, strict=True):
            outcomes[stored.key][dest_id] = outcome
    done = clock()
    for stored in claimed:
        destinations_now = dict(stored.destinations)
        for dest_id, outcome in outcomes[stored.key].items():
            previous = destinations_now[dest_id]
            if outcome.ok:
                destinations_now[dest_id] = DestinationState(DELIVERED, previous.attempts + 1, "", done)
                stats.delivered[dest_id] = stats.delivered.get(dest_id, 0) + 1
            else:
                destinations_now[dest_id] = DestinationState(FAILED, previous.attempts + 1, outcome.detail[:500])
                stats.failed[dest_id] = stats.failed.get(dest_id, 0) + 1
                stats.errors.append(f"{stored.key} -> {dest_id}: {outcome.detail[:200]}")
        final = stored.with_changes(destinations=destinations_now, claim_owner="", claim_until=0, updated=done)
        try:
            store.replace_alert(final)
        except ConflictError:
            stats.errors.append(f"{stored.key}: claim lost while delivering; a later run re-checks it")
        if final.pending:
            stats.undelivered.append(stored.key)
    return stats


__all__ = ["DELIVERED", "FAILED", "PENDING", "DeliveryStats", "RecordStats", "deliver_pending", "merge_alerts",
           "record_alerts"]
