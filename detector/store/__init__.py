"""Run state and allowlist storage: one interface, two backends (Azure Table Storage and local files).

Records are plain JSON-able dicts at this boundary, so both backends store the same thing. Every
alert record carries an ETag; ``replace_alert`` succeeds only when the record has not changed since
it was read, so two runs racing on one alert cannot both claim it (optimistic concurrency).

Records are bounded whatever the logs hold (Table Storage: 1 MiB per entity, 64 KiB per property,
255 properties): an alert keeps at most ``MAX_ALERT_CHARS`` of JSON (its rows are cut, earliest
kept, and the rest counted in ``Alert.omitted_rows``) and at most ``MAX_EVIDENCE`` row fingerprints.
Both backends apply the same bounds, so they behave alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, Protocol

from ..errors import StoreError
from ..model import Alert
from ..timestamps import Ticks, format_datetime, parse_datetime, parse_whole_number

DeliveryState = Literal["pending", "delivered", "failed"]
AlertStatus = Literal["open", "suppressed"]
PurgeVerdict = Literal["purge", "keep", "undelivered"]

PENDING: Final = "pending"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"

OPEN: Final = "open"
SUPPRESSED: Final = "suppressed"

# Bounds of one alert record (see the module docstring). The alert JSON is measured ASCII-escaped, the
# form Table Storage keeps (one character = one UTF-16 unit); 250,000 + 10,000 x 17 characters stay
# under 1 MiB as UTF-16 with room for the other properties.
MAX_ALERT_CHARS = 250_000
MAX_EVIDENCE = 10_000


class ConflictError(StoreError):
    """The record changed (or appeared) since it was read; re-read and decide again."""


# How many times a writer re-reads and decides again on ConflictError before it gives up.
MAX_WRITE_RETRIES = 5


@dataclass(frozen=True, slots=True)
class DestinationState:
    """One destination's view of one alert: the first message, then any "new evidence" update owed."""

    state: DeliveryState = PENDING
    attempts: int = 0
    last_error: str = ""
    delivered_at: Ticks | None = None
    update_owed: bool = False
    updates_sent: int = 0

    @property
    def owes(self) -> bool:
        return self.state != DELIVERED or self.update_owed

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "attempts": self.attempts, "last_error": self.last_error,
                "delivered_at": format_datetime(self.delivered_at) if self.delivered_at is not None else None,
                "update_owed": self.update_owed, "updates_sent": self.updates_sent}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DestinationState:
        at = data.get("delivered_at")
        return cls(state=data["state"], attempts=int(data.get("attempts", 0)), last_error=data.get("last_error", ""),
                   delivered_at=parse_datetime(at) if at else None, update_owed=bool(data.get("update_owed", False)),
                   updates_sent=int(data.get("updates_sent", 0)))


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """An alert in the outbox: what it is, where it must go, and who is sending it now."""

    alert: Alert
    status: AlertStatus = OPEN
    suppressed_by: tuple[str, ...] = ()
    destinations: dict[str, DestinationState] = field(default_factory=dict)
    first_seen: Ticks = 0
    updated: Ticks = 0
    claim_owner: str = ""
    claim_until: Ticks = 0
    # Fingerprints of every match ever seen (kept or omitted), so a later run knows which are new.
    evidence: tuple[str, ...] = ()
    etag: str | None = None

    @property
    def key(self) -> str:
        return self.alert.key

    @property
    def pending(self) -> bool:
        return self.status == OPEN and any(d.owes for d in self.destinations.values())

    def with_changes(self, **changes: Any) -> StoredAlert:
        return replace(self, **changes)

    def to_record(self) -> dict[str, Any]:
        return {
            "alert": json.dumps(self.alert.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False),
            "status": self.status,
            "suppressed_by": ",".join(self.suppressed_by),
            "destinations": json.dumps({k: v.to_dict() for k, v in self.destinations.items()}),
            "first_seen": format_datetime(self.first_seen),
            "updated": format_datetime(self.updated),
            "claim_owner": self.claim_owner,
            "claim_until": format_datetime(self.claim_until),
            "pending": self.pending,
            "evidence": ",".join(self.evidence),
            # Fixed width, so the purge can compare it as text; the Run Command's last event.
            "alert_end": f"{self.alert.end:019d}",
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], etag: str | None) -> StoredAlert:
        try:
            return cls(
                alert=Alert.from_dict(json.loads(record["alert"])),
                status=record["status"],
                suppressed_by=tuple(x for x in record.get("suppressed_by", "").split(",") if x),
                destinations={k: DestinationState.from_dict(v)
                              for k, v in json.loads(record.get("destinations") or "{}").items()},
                first_seen=parse_datetime(record["first_seen"]),
                updated=parse_datetime(record["updated"]),
                claim_owner=record.get("claim_owner", ""),
                claim_until=parse_datetime(record["claim_until"]) if record.get("claim_until") else 0,
                evidence=tuple(x for x in (record.get("evidence") or "").split(",") if x),
                etag=etag,
            )
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise StoreError(f"unreadable alert record: {type(exc).__name__} {exc}") from None


def purge_verdict(record: dict[str, Any], cutoff: Ticks) -> PurgeVerdict:
    """``purge``, ``keep`` or ``undelivered`` for a stored alert record at the purge ``cutoff``.

    A record may go when it is delivered or suppressed and its Run Command ended before ``cutoff``
    (no later window can reach it). Records written before ``alert_end`` existed are judged by their
    last change (always later). An undelivered alert is never purged: it is reported instead.
    """
    end = record.get("alert_end")
    if end:
        old = parse_whole_number(str(end)) < cutoff
    else:
        updated = record.get("updated")
        old = bool(updated) and parse_datetime(str(updated)) < cutoff
    if not old:
        return "keep"
    return "undelivered" if record.get("pending") else "purge"


@dataclass(frozen=True, slots=True)
class PurgeStats:
    alerts: int = 0
    runs: int = 0
    # Undelivered alerts older than the lifetime: kept (never lost silently) and reported.
    undelivered_kept: int = 0


@dataclass(frozen=True, slots=True)
class EntryStats:
    hits: int = 0
    last_hit: Ticks | None = None


class StateStore(Protocol):
    """What the pipeline and the CLI need from storage."""

    def describe(self) -> str: ...

    # allowlist
    def list_allowlist(self) -> list[dict[str, Any]]: ...
    def put_allowlist(self, entry: dict[str, Any]) -> None: ...
    def delete_allowlist(self, entry_id: str) -> bool: ...
    def allowlist_stats(self) -> dict[str, EntryStats]: ...
    def record_hits(self, hits: dict[str, int], at: Ticks) -> None: ...

    # alerts (outbox)
    def get_alert(self, key: str) -> StoredAlert | None: ...
    def create_alert(self, stored: StoredAlert) -> StoredAlert: ...
    def replace_alert(self, stored: StoredAlert) -> StoredAlert: ...
    def list_pending(self, *, unreadable: list[str] | None = None) -> list[StoredAlert]:
        """Alerts that owe a destination something. A record that cannot be read raises, or, given
        ``unreadable``, is reported there and skipped (one damaged record must not stop the others)."""
        ...
    def purge(self, *, before: Ticks) -> PurgeStats:
        """Delete alert records (see :func:`purge_due`) and run records whose window ended before ``before``."""
        ...

    # runs
    def get_watermark(self) -> Ticks | None: ...
    def set_watermark(self, end: Ticks) -> None: ...
    def record_run(self, run_id: str, summary: Mapping[str, Any]) -> None: ...
    def list_runs(self) -> list[dict[str, Any]]: ...

    # the detector's own health (detector/health.py): one record and its ETag; ``put_health`` with
    # ``etag=None`` creates it, and raises ConflictError when it changed (or appeared) since it was read
    def get_health(self) -> tuple[dict[str, Any] | None, str | None]: ...
    def put_health(self, record: dict[str, Any], *, etag: str | None) -> str: ...
