"""Dedup and outbox: each alert is recorded before it is sent, and each send is marked as it completes.

* **Identity**: an alert is one group of the rule's ``summarize`` (CorrelationId + Authorization +
  Caller, hashed into its key). A later run that sees the same group (the 2-day period overlaps the
  daily frequency) merges its matches into the stored alert.
* **Suppression follows evidence**: when a run adds matches to a stored alert, the allowlist is
  evaluated again on the whole alert. A suppressed alert that is no longer covered is delivered with
  all its matches (the run summary says why); an alert already delivered owes each destination one
  "new evidence" update (``send_updates``), never a second first message. Runs that bring nothing new
  change nothing.
* **Bounded records**: the stored alert keeps what fits ``MAX_ALERT_CHARS`` (earliest matches first,
  the rest counted) and the fingerprints of up to ``MAX_EVIDENCE`` matches. The allowlist is always
  evaluated on the run's full alert, never on the cut one. Beyond ``MAX_EVIDENCE`` distinct matches an
  alert gets no further updates (documented limit).
* **Isolation**: an alert that cannot be recorded is reported and the others are recorded and sent; the
  run keeps its watermark so the next run retries it. A send that raises is retried alone, so one
  poison alert fails only itself.
* **Outbox**: alerts are written with every destination ``pending``; each destination's result is
  written as soon as that send completes, so a process killed after k accepted posts re-sends at most
  the one in flight.
* **Claims**: sending needs an ETag-conditional claim (owner, lease). Of two racing runs only one claim
  write succeeds. A claim is renewed whenever less than half its lease is left (after each send and
  before each batch), and the lease is sized to more than twice the longest single send, so a live
  run is never taken over; a claim whose lease ran out (a dead process) is taken over by a later run.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from .alerts import build_alerts, legacy_alert_key
from .allowlist import Allowlist, Suppression
from .deliver import Destination, Outcome
from .errors import StoreError
from .model import SEED_RULE_ID, Alert, DeliveryEvent, RuleRow, TriageContext
from .store import (
    DELIVERED,
    FAILED,
    MAX_ALERT_CHARS,
    MAX_EVIDENCE,
    MAX_WRITE_RETRIES,
    OPEN,
    PENDING,
    SUPPRESSED,
    ConflictError,
    DestinationState,
    StateStore,
    StoredAlert,
)
from .timestamps import Ticks

logger = logging.getLogger("detector")


# --- evidence and bounds (pure) -------------------------------------------------------------------------

def fingerprint(row: RuleRow) -> str:
    """A row's identity across runs (64 bits of SHA-256 of ``RuleRow.identity``: the context columns such as
    the sign-in's source IP do not count, so a record written before they were read gains no duplicates)."""
    return hashlib.sha256(row.identity().encode("utf-8")).hexdigest()[:16]


def evidence_of(rows: Iterable[RuleRow]) -> tuple[str, ...]:
    """Distinct fingerprints in row order, at most ``MAX_EVIDENCE``."""
    return tuple(dict.fromkeys(fingerprint(r) for r in rows))[:MAX_EVIDENCE]


def _chars(data: object) -> int:
    return len(json.dumps(data, ensure_ascii=True, separators=(",", ":")))


def fit_for_state(alert: Alert) -> Alert:
    """The alert with the rows that fit ``MAX_ALERT_CHARS`` (earliest kept), the others counted as omitted."""
    if _chars(alert.to_dict()) <= MAX_ALERT_CHARS:
        return alert
    budget = MAX_ALERT_CHARS - _chars(replace(alert, rows=()).to_dict()) - 16
    kept: list[RuleRow] = []
    for row in alert.rows:
        cost = _chars(row.to_state()) + 1
        if cost > budget:
            break
        kept.append(row)
        budget -= cost
    return replace(alert, rows=tuple(kept), omitted_rows=alert.omitted_rows + len(alert.rows) - len(kept))


def _covering(allowlist: Allowlist | None, alert: Alert) -> tuple[str, ...]:
    return tuple(allowlist.matching(alert)) if allowlist is not None else ()


def _newer_context(old: TriageContext | None, new: TriageContext | None) -> TriageContext | None:
    """The newer run's triage context (its window saw more); the first detection time stays."""
    if old is None or new is None:
        return new or old
    return replace(new, detected_at=old.detected_at)


def _regroup(rows: Iterable[RuleRow], like: Alert) -> Alert:
    """Rows of one group as one alert (rows read from older records lack the Authorization text)."""
    [alert] = build_alerts(r if r.authorization == like.authorization else r._replace(authorization=like.authorization)
                           for r in rows)
    return alert


def from_legacy(legacy: StoredAlert, seen: Alert) -> StoredAlert | None:
    """The part of a record written under the old key (rule id + CorrelationId) that is ``seen``'s group.

    The old record held every group of the CorrelationId; its rows carry Caller and Scope, which tell
    this group's rows apart. An open legacy record stays in the outbox and sends (or has sent) those rows
    itself, so here its destinations count as delivered: nothing is sent twice, later evidence becomes an
    update. A suppressed one is checked again (``decide(reevaluate=True)``): its verdict was made on
    another group's fields.
    """
    rows = [r for r in legacy.alert.rows if r.caller == seen.caller and r.scope == seen.scope]
    if not rows:
        return None
    alert = _regroup(rows, seen)
    destinations = {}
    if legacy.status == OPEN:
        destinations = {d: DestinationState(DELIVERED, s.attempts, "", s.delivered_at)
                        for d, s in legacy.destinations.items()}
    return StoredAlert(alert=fit_for_state(alert), status=legacy.status, suppressed_by=legacy.suppressed_by,
                       destinations=destinations, first_seen=legacy.first_seen, updated=legacy.updated,
                       evidence=evidence_of(rows))


@dataclass(frozen=True, slots=True)
class Decision:
    """What recording one alert does: the record to write (None: nothing changed) and why."""

    record: StoredAlert | None
    outcome: str  # new | new-suppressed | unchanged | updated | unsuppressed
    reason: str = ""
    updates_owed: int = 0


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def decide(existing: StoredAlert | None, seen: Alert, allowlist: Allowlist | None, destination_ids: Sequence[str],
           *, now: Ticks, send_updates: bool, reevaluate: bool = False) -> Decision:
    """How this run's view of an alert changes its record (pure)."""
    if existing is None:
        entry_ids = _covering(allowlist, seen)
        base = StoredAlert(alert=fit_for_state(seen), first_seen=now, updated=now, evidence=evidence_of(seen.rows))
        if entry_ids:
            return Decision(base.with_changes(status=SUPPRESSED, suppressed_by=entry_ids), "new-suppressed")
        return Decision(base.with_changes(status=OPEN, destinations={d: DestinationState() for d in destination_ids}),
                        "new")
    # The stored rows' fingerprints too: records written before a fingerprint change hold old ones.
    known = set(existing.evidence) | set(evidence_of(existing.alert.rows))
    new_rows: list[RuleRow] = []
    if len(known) < MAX_EVIDENCE:
        fresh: set[str] = set()
        for row in seen.rows:
            fp = fingerprint(row)
            if fp not in known and fp not in fresh:
                fresh.add(fp)
                new_rows.append(row)
    if not new_rows and not reevaluate:
        return Decision(None, "unchanged")
    # The allowlist sees every match this run knows, never the record's cut copy.
    full = replace(_regroup([*existing.alert.rows, *new_rows], seen),
                   context=_newer_context(existing.alert.context, seen.context))
    entry_ids = _covering(allowlist, full)
    merged = fit_for_state(replace(full, omitted_rows=existing.alert.omitted_rows))
    evidence = tuple(dict.fromkeys((*existing.evidence, *evidence_of(existing.alert.rows), *evidence_of(new_rows))))
    changed = existing.with_changes(alert=merged, evidence=evidence[:MAX_EVIDENCE], updated=now)
    if existing.status == SUPPRESSED:
        if entry_ids:
            return Decision(changed.with_changes(suppressed_by=entry_ids), "updated" if new_rows else "unchanged")
        if new_rows:
            places = sorted({r.ueba_source_location for r in new_rows})[:5]
            entries = _plural(len(existing.suppressed_by), "entry", "entries")
            reason = (f"{len(new_rows)} new UEBA {_plural(len(new_rows), 'match', 'matches')} (from "
                      f"{', '.join(places)}) not covered by allowlist {entries} {', '.join(existing.suppressed_by)}")
        else:
            reason = ("was suppressed together with another Run Command of its CorrelationId; "
                      "checked on its own fields now")
        return Decision(changed.with_changes(status=OPEN, suppressed_by=(),
                                             destinations={d: DestinationState() for d in destination_ids}),
                        "unsuppressed", reason)
    if not new_rows:
        return Decision(changed, "unchanged")
    destinations = dict(existing.destinations)
    owed = 0
    if send_updates and not entry_ids:
        for dest_id, state in destinations.items():
            if state.state == DELIVERED and not state.update_owed:
                destinations[dest_id] = replace(state, update_owed=True)
                owed += 1
    return Decision(changed.with_changes(destinations=destinations), "updated", updates_owed=owed)


# --- recording ------------------------------------------------------------------------------------------

@dataclass(slots=True)
class RecordStats:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    # Suppressed alerts seen for the first time (one allowlist hit each).
    suppressed_new: int = 0
    # Groups first recorded from a record written under the old key scheme.
    migrated: int = 0
    updates_owed: int = 0
    unsuppressed: list[dict[str, str]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # This run's alerts by their verdict after recording (stored state taken into account).
    open: list[Alert] = field(default_factory=list)
    suppressed: list[Suppression] = field(default_factory=list)


def record_alerts(store: StateStore, alerts: Sequence[Alert], destination_ids: Sequence[str], *,
                  allowlist: Allowlist | None, now: Ticks, send_updates: bool = True) -> RecordStats:
    """Write this run's alerts (all of them, allowlisted or not) to state before any delivery."""
    stats = RecordStats()
    hits: Counter[str] = Counter()
    for alert in alerts:
        try:
            _record_one(store, alert, destination_ids, allowlist, now, send_updates, stats, hits)
        except StoreError as exc:
            stats.failed.append(f"{alert.key} (CorrelationId {alert.correlation_id[:80]}): {exc}")
            logger.error("detector: alert %s could not be recorded: %s", alert.key, exc)
    try:
        store.record_hits(hits, now)
    except StoreError as exc:
        stats.warnings.append(f"allowlist hit counts not saved: {exc}")
    return stats


def _record_one(store: StateStore, alert: Alert, destination_ids: Sequence[str], allowlist: Allowlist | None,
                now: Ticks, send_updates: bool, stats: RecordStats, hits: Counter[str]) -> None:
    for _ in range(MAX_WRITE_RETRIES):
        existing = store.get_alert(alert.key)
        migrating = False
        if existing is None and alert.rule_id == SEED_RULE_ID:  # only the seed rule had keys before v2
            legacy = store.get_alert(legacy_alert_key(alert.correlation_id))
            existing = from_legacy(legacy, alert) if legacy is not None else None
            migrating = existing is not None
        decision = decide(existing, alert, allowlist, destination_ids, now=now, send_updates=send_updates,
                          reevaluate=migrating)
        record = decision.record if decision.record is not None else (existing if migrating else None)
        try:
            if record is not None and (existing is None or migrating):
                record = store.create_alert(record)
            elif record is not None:
                record = store.replace_alert(record)
        except ConflictError:
            continue  # another run wrote it meanwhile: decide again on what it wrote
        _tally(stats, hits, alert, decision, record if record is not None else existing, migrating)
        return
    raise ConflictError(f"alert {alert.key} kept changing while being recorded")


def _tally(stats: RecordStats, hits: Counter[str], alert: Alert, decision: Decision, final: StoredAlert | None,
           migrating: bool) -> None:
    stats.migrated += migrating
    if decision.outcome == "new":
        stats.new += 1
    elif decision.outcome == "new-suppressed" and decision.record is not None:
        stats.suppressed_new += 1
        for entry_id in decision.record.suppressed_by:
            hits[entry_id] += 1
    elif decision.outcome == "unchanged":
        # Open alerts seen again (a suppressed one seen again is only in ``suppressed``, as before).
        stats.unchanged += final is None or final.status != SUPPRESSED
    else:
        stats.updated += 1
    stats.updates_owed += decision.updates_owed
    if decision.outcome == "unsuppressed":
        stats.unsuppressed.append({"alert": alert.key, "reason": decision.reason})
    if final is not None and final.status == SUPPRESSED:
        stats.suppressed.append(Suppression(alert, final.suppressed_by))
    else:
        stats.open.append(alert)


# --- delivery -------------------------------------------------------------------------------------------

@dataclass(slots=True)
class DeliveryStats:
    delivered: Counter[str] = field(default_factory=Counter)
    updates: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    claimed_elsewhere: int = 0
    undelivered: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Records that could not be read (skipped, so the others are still sent): a person must repair them.
    unreadable: list[str] = field(default_factory=list)

    @property
    def delivered_total(self) -> int:
        return sum(self.delivered.values())


def _owed(state: DestinationState, event: DeliveryEvent) -> bool:
    return state.state != DELIVERED if event == "alert" else state.state == DELIVERED and state.update_owed


class _Claims:
    """The alerts this run holds, each send marked as it completes, leases renewed before they run short."""

    def __init__(self, store: StateStore, owner: str, clock: Callable[[], Ticks], lease: Ticks,
                 stats: DeliveryStats) -> None:
        self.store, self.owner, self.clock, self.lease, self.stats = store, owner, clock, lease, stats
        self.held: dict[str, StoredAlert] = {}
        self.remaining: dict[str, int] = {}
        self._expiry: list[tuple[Ticks, str]] = []  # heap of (claim_until, key); stale entries skipped

    def take(self, stored: StoredAlert) -> None:
        now = self.clock()
        if stored.claim_owner and stored.claim_owner != self.owner and stored.claim_until > now:
            self.stats.claimed_elsewhere += 1
            return
        try:
            claimed = self.store.replace_alert(stored.with_changes(claim_owner=self.owner,
                                                                   claim_until=now + self.lease))
        except ConflictError:
            self.stats.claimed_elsewhere += 1
            return
        except StoreError as exc:
            self.stats.errors.append(f"{stored.key}: could not claim ({exc}); a later run retries")
            return
        self.remaining[stored.key] = sum(1 for s in claimed.destinations.values() if s.owes)
        self._hold(claimed)

    def _hold(self, stored: StoredAlert) -> None:
        self.held[stored.key] = stored
        heapq.heappush(self._expiry, (stored.claim_until, stored.key))

    def _write(self, stored: StoredAlert, *, done: bool) -> None:
        key = stored.key
        try:
            written = self.store.replace_alert(stored)
        except ConflictError:
            self.held.pop(key, None)
            self.stats.errors.append(f"{key}: claim lost while delivering; a later run re-checks it")
            return
        except StoreError as exc:
            self.held.pop(key, None)
            self.stats.errors.append(f"{key}: a delivery result could not be saved ({exc}); it may be sent again")
            return
        if done:
            self.held.pop(key, None)
            if written.pending:
                self.stats.undelivered.append(key)
        else:
            self._hold(written)

    def renew_due(self) -> None:
        now = self.clock()
        while self._expiry and self._expiry[0][0] - now < self.lease // 2:
            until, key = heapq.heappop(self._expiry)
            stored = self.held.get(key)
            if stored is not None and stored.claim_until == until:
                self._write(stored.with_changes(claim_until=now + self.lease), done=False)

    def mark(self, key: str, dest_id: str, event: DeliveryEvent, outcome: Outcome) -> None:
        stored = self.held.get(key)
        if stored is None:
            return  # claim lost earlier (reported then)
        now = self.clock()
        state = stored.destinations[dest_id]
        if outcome.ok:
            if event == "alert":
                # The first message carries every match known: no update is owed after it.
                state = replace(state, state=DELIVERED, attempts=state.attempts + 1, last_error="", delivered_at=now,
                                update_owed=False)
                self.stats.delivered[dest_id] += 1
            else:
                state = replace(state, attempts=state.attempts + 1, last_error="", update_owed=False,
                                updates_sent=state.updates_sent + 1)
                self.stats.updates[dest_id] += 1
        else:
            state = replace(state, state=FAILED if event == "alert" else state.state, attempts=state.attempts + 1,
                            last_error=outcome.detail[:500])
            self.stats.failed[dest_id] += 1
            self.stats.errors.append(f"{key} -> {dest_id} ({event}): {outcome.detail[:200]}")
        self.remaining[key] -= 1
        done = self.remaining[key] <= 0
        self._write(stored.with_changes(destinations={**stored.destinations, dest_id: state}, updated=now,
                                        claim_owner="" if done else self.owner,
                                        claim_until=0 if done else now + self.lease), done=done)

    def release_all(self) -> None:
        for stored in list(self.held.values()):
            self._write(stored.with_changes(claim_owner="", claim_until=0), done=True)


def _as_index(report: Callable[[int, Outcome], None], index: int, _position: int, outcome: Outcome) -> None:
    report(index, outcome)


def _send(claims: _Claims, destination: Destination | None, dest_id: str, keys: list[str],
          event: DeliveryEvent) -> None:
    alerts = [claims.held[k].alert for k in keys]
    reported: set[int] = set()

    def on_outcome(index: int, outcome: Outcome) -> None:
        reported.add(index)
        claims.mark(keys[index], dest_id, event, outcome)
        claims.renew_due()

    claims.renew_due()
    if destination is None:
        for i in range(len(keys)):
            on_outcome(i, Outcome(False, f"destination {dest_id} is no longer configured"))
        return
    try:
        destination.deliver(alerts, event=event, on_outcome=on_outcome)
    except Exception as exc:  # one poison alert must not stop the others: they are retried one by one
        logger.error("detector: %s failed on a batch (%s); sending its alerts one by one", dest_id,
                     type(exc).__name__)
        for i in [i for i in range(len(keys)) if i not in reported]:
            try:
                destination.deliver([alerts[i]], event=event, on_outcome=functools.partial(_as_index, on_outcome, i))
            except Exception as one:  # reported on this alert; the run goes on
                logger.exception("detector: alert %s could not be sent to %s", keys[i], dest_id)
                if i not in reported:
                    on_outcome(i, Outcome(False, f"{dest_id}: {type(one).__name__} while building or sending"))


def deliver_pending(store: StateStore, destinations: Sequence[Destination], *, owner: str,
                    clock: Callable[[], Ticks], lease: Ticks) -> DeliveryStats:
    """Claim every pending alert, send each destination what it is owed, mark each send as it completes."""
    stats = DeliveryStats()
    by_id = {d.id: d for d in destinations}
    claims = _Claims(store, owner, clock, lease, stats)
    for stored in sorted(store.list_pending(unreadable=stats.unreadable), key=lambda s: (s.alert.start, s.key)):
        claims.take(stored)
    for problem in stats.unreadable:
        logger.error("detector: an alert record cannot be read, so it is not delivered: %s", problem)
    for dest_id in sorted({d for s in claims.held.values() for d in s.destinations}):
        # Destinations are fixed when an alert is recorded: a webhook added later gets new alerts only.
        events: tuple[DeliveryEvent, ...] = ("alert", "update")
        for event in events:
            keys = [k for k, s in claims.held.items()
                    if dest_id in s.destinations and _owed(s.destinations[dest_id], event)]
            if keys:
                _send(claims, by_id.get(dest_id), dest_id, keys, event)
    claims.release_all()
    return stats


__all__ = ["DELIVERED", "FAILED", "PENDING", "DeliveryStats", "RecordStats", "decide", "deliver_pending",
           "fit_for_state", "record_alerts"]
