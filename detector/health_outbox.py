"""The health record in the state store, and delivery of the health messages it owes.

Reads and writes are ETag-conditional (re-read and re-apply on a conflict), so the daily run and the
frequent timer never lose each other's changes. Sending needs a claim on the record (owner + lease),
as alerts do, so two processes never send the same health message at once. Per destination the
messages go out in order, and a failed send holds back the later ones (a "recovered" never arrives
before its "failing"); what is not accepted stays owed and is retried by the next run or timer tick.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from .deliver import Destination, Outcome
from .deliver.health_card import send_health
from .errors import DetectorError
from .health import HealthRecord, drop_destinations, mark_delivered, mark_failed
from .store import MAX_WRITE_RETRIES, ConflictError, StateStore
from .timestamps import Ticks

logger = logging.getLogger("detector")


def load(store: StateStore) -> tuple[HealthRecord, str | None]:
    raw, etag = store.get_health()
    if raw is None:
        return HealthRecord(), None
    try:
        return HealthRecord.from_dict(raw), etag
    except (KeyError, ValueError, TypeError) as exc:
        # An unreadable record is replaced, not fatal: health reporting must not stop the detector.
        logger.warning("detector health record unreadable (%s); starting a new one", exc)
        return HealthRecord(), etag


def update(store: StateStore, change: Callable[[HealthRecord], HealthRecord | None]) -> HealthRecord | None:
    """Apply ``change`` to the stored record under its ETag, retrying when another process wrote first.

    ``change`` answers None to leave the record as it is (then so does this)."""
    for _ in range(MAX_WRITE_RETRIES):
        record, etag = load(store)
        new = change(record)
        if new is None:
            return None
        if new == record and etag is not None:
            return record
        try:
            store.put_health(new.to_dict(), etag=etag)
            return new
        except ConflictError:
            continue
    raise ConflictError("the health record kept changing while being updated")


@dataclass(slots=True)
class HealthDeliveryStats:
    delivered: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    claimed_elsewhere: bool = False
    errors: list[str] = field(default_factory=list)


def _claim(store: StateStore, destination_ids: Sequence[str], *, owner: str, now: Ticks,
           lease: Ticks) -> HealthRecord | None:
    def take(record: HealthRecord) -> HealthRecord | None:
        if not record.messages:
            return None
        if record.claim_owner and record.claim_owner != owner and record.claim_until > now:
            return None
        return replace(drop_destinations(record, destination_ids), claim_owner=owner, claim_until=now + lease)
    try:
        return update(store, take)
    except ConflictError:
        return None


def deliver_health(store: StateStore, destinations: Sequence[Destination], *, owner: str,
                   clock: Callable[[], Ticks], lease: Ticks) -> HealthDeliveryStats:
    """Send every owed health message, in order per destination, and record the outcomes."""
    stats = HealthDeliveryStats()
    by_id = {d.id: d for d in destinations}
    claimed = _claim(store, list(by_id), owner=owner, now=clock(), lease=lease)
    if claimed is None:
        record, _ = load(store)
        stats.claimed_elsewhere = bool(record.messages)
        return stats
    results: list[tuple[str, str, Outcome]] = []
    held_back: set[str] = set()
    for message in claimed.messages:
        for dest_id in message.owed:
            if dest_id in held_back:
                continue
            try:
                outcome = send_health(by_id[dest_id], message.event)
            except DetectorError as exc:
                outcome = Outcome(False, str(exc))
            results.append((message.event.id, dest_id, outcome))
            if outcome.ok:
                stats.delivered[dest_id] += 1
            else:
                held_back.add(dest_id)
                stats.failed[dest_id] += 1
                stats.errors.append(f"health {message.event.id} -> {outcome.detail[:200]}")

    def settle(record: HealthRecord) -> HealthRecord:
        for message_id, dest_id, outcome in results:
            record = (mark_delivered(record, message_id, dest_id) if outcome.ok
                      else mark_failed(record, message_id, dest_id, outcome.detail))
        if record.claim_owner == owner:
            record = replace(record, claim_owner="", claim_until=0)
        return record

    update(store, settle)
    return stats
