"""The detector's own health, decided from its runs (pure: no I/O, no clock, no Azure).

One :class:`HealthRecord` per deployment holds where the detector stands and the health messages
it still owes. The transitions are small functions from a record to the next record:

* :func:`after_failure` — the first failed run of a streak queues one ``failing`` message; every
  later failure (the platform's retries, the next days) only counts: never one message per retry.
* :func:`after_success` — a success after a ``failing`` or ``silent`` spell queues one ``recovered``
  message: how many scheduled runs were missed and the window the run caught up.
* :func:`check_overdue` — the frequent timer's check: no successful run for longer than the
  frequency plus a grace period queues one ``not_run_since`` message (``silent``). While a failure
  streak is open nothing more is sent: the ``failing`` message already told the same story.

Messages carry the destination ids still owed; :func:`mark_delivered` and :func:`mark_failed` record
what each send did. The record is small and JSON-able (``to_dict``/``from_dict``) so one store row
holds it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from .errors import ConfigError, InputError, SourceError, StoreError
from .timestamps import TICKS_PER_HOUR, Ticks, format_datetime, parse_datetime

HealthStatus = Literal["healthy", "failing", "silent"]
HealthEventKind = Literal["failing", "recovered", "not_run_since"]

HEALTHY: Final = "healthy"
FAILING: Final = "failing"
SILENT: Final = "silent"  # no completed run for longer than frequency + grace, and no failure seen

EVENT_FAILING: Final = "failing"
EVENT_RECOVERED: Final = "recovered"
EVENT_NOT_RUN: Final = "not_run_since"
EVENTS = (EVENT_FAILING, EVENT_RECOVERED, EVENT_NOT_RUN)

MAX_MESSAGES = 10  # the outbox of health messages stays one store row (under 16 KB even with long errors)
MAX_ERROR_CHARS = 500

# What Azure Monitor's alert queries read (infra/modules/monitoring.bicep; a test keeps both in step).
# The Functions Python worker forwards each log record's formatted message to Application Insights
# (`traces.message`) and not its `extra` fields, so the run summary and the run-failure line are
# messages of the form "<prefix> <one-line JSON object>" that the queries parse back.
SUMMARY_PREFIX = "detector run summary"
FAILURE_PREFIX = "detector run failed"


def _time(value: Ticks | None) -> str | None:
    return format_datetime(value) if value is not None else None


def _ticks(value: Any) -> Ticks | None:
    return parse_datetime(value) if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class Failure:
    """What failed, in words an on-call responder acts on. ``message`` comes from a DetectorError,
    whose messages never hold secrets; the card builders redact it once more anyway."""

    stage: str  # settings | source | store | allowlist | run
    code: str
    message: str
    check_first: str

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "code": self.code, "message": self.message, "check_first": self.check_first}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Failure:
        return cls(stage=str(data["stage"]), code=str(data["code"]), message=str(data.get("message", "")),
                   check_first=str(data.get("check_first", "")))


_CHECK_FIRST = {
    "settings": "the Function App's app settings named in the error (a Key Vault reference that does not resolve "
                "shows as its raw @Microsoft.KeyVault text: check the app identity's Key Vault Secrets User role)",
    "source": "the Sentinel workspace: DETECTOR_WORKSPACE_ID is its GUID, the app identity holds Log Analytics "
              "Reader on it, and AzureActivity / BehaviorAnalytics answer a query in the portal",
    "store": "the detector's storage account: the table endpoint setting, the app identity's Storage Table Data "
             "Contributor role, and the account's network rules",
    "allowlist": "the detectorallowlist table (readable by the app identity); no alert is suppressed while the "
                 "allowlist cannot be read, so the run stops instead",
    "run": "the Function App's logs in Application Insights for this invocation (an unexpected error is a bug: "
           "keep the log and report it)",
}
_AUTH_CODES = ("Authorization", "Forbidden", "InsufficientAccess", "Unauthorized", "AuthenticationFailed",
               "InvalidAuthenticationToken", "CredentialUnavailable", "ClientAuthenticationError")


def classify(exc: BaseException) -> Failure:
    """The stage and code of a failed run, and what to check first."""
    message = str(exc)[:MAX_ERROR_CHARS]
    if isinstance(exc, ConfigError):
        return Failure("settings", exc.setting or "ConfigError", message, _CHECK_FIRST["settings"])
    if isinstance(exc, SourceError):
        code = exc.code or "SourceError"
        check = _CHECK_FIRST["source"]
        if any(marker.lower() in code.lower() for marker in _AUTH_CODES):
            check = ("the app identity's access to the workspace: the Log Analytics Reader role assignment "
                     "(a revoked role or a moved workspace answers this code)")
        return Failure("source", code, message, check)
    if isinstance(exc, InputError):
        return Failure("source", "InputError", message,
                       "the export files in DETECTOR_SOURCE_DIR (the error names the file and line)")
    if isinstance(exc, StoreError):
        stage = "allowlist" if "allowlist" in message.lower() else "store"
        return Failure(stage, type(exc).__name__, message, _CHECK_FIRST[stage])
    return Failure("run", type(exc).__name__, message, _CHECK_FIRST["run"])


def partial_run(record_failures: Sequence[str]) -> Failure:
    """A run that returned but could not record some alerts (status ``partial``). Decision: it counts as a
    failed run here, as in ``detector status`` and Azure Monitor's "no successful run" rule: the watermark
    stays, those alerts are neither stored nor sent until a later run records them, and a person may
    have to act (a store limit or a revoked role repeats every day)."""
    first = record_failures[0] if record_failures else "unknown alert"
    return Failure("store", "AlertNotRecorded",
                   f"{len(record_failures)} alert(s) could not be recorded (the others were delivered): {first}"
                   [:MAX_ERROR_CHARS], _CHECK_FIRST["store"])


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """One health message: what the destinations are told."""

    kind: HealthEventKind
    at: Ticks  # when the detector noticed
    since: Ticks | None = None  # failing: the streak's first failure; not_run_since: the last success
    last_success: Ticks | None = None
    failure: Failure | None = None
    failed_runs: int = 0
    missed_runs: int = 0
    caught_up_start: Ticks | None = None
    caught_up_end: Ticks | None = None

    @property
    def id(self) -> str:
        """Stable per event: a retried send of the same event carries the same id (receivers dedupe)."""
        return f"{self.kind}-{format_datetime(self.since if self.since is not None else self.at)}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "at": format_datetime(self.at), "since": _time(self.since),
                "last_success": _time(self.last_success),
                "failure": self.failure.to_dict() if self.failure is not None else None,
                "failed_runs": self.failed_runs, "missed_runs": self.missed_runs,
                "caught_up_start": _time(self.caught_up_start), "caught_up_end": _time(self.caught_up_end)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HealthEvent:
        failure = data.get("failure")
        at = _ticks(data.get("at"))
        kind = data.get("kind")
        if kind not in EVENTS or at is None:
            raise ValueError(f"not a health event: kind {kind!r}")
        return cls(kind=kind, at=at, since=_ticks(data.get("since")),
                   last_success=_ticks(data.get("last_success")),
                   failure=Failure.from_dict(failure) if isinstance(failure, dict) else None,
                   failed_runs=int(data.get("failed_runs", 0)), missed_runs=int(data.get("missed_runs", 0)),
                   caught_up_start=_ticks(data.get("caught_up_start")),
                   caught_up_end=_ticks(data.get("caught_up_end")))


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A health message and the destinations that have not accepted it yet."""

    event: HealthEvent
    owed: tuple[str, ...]
    attempts: int = 0
    last_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event.to_dict(), "owed": list(self.owed), "attempts": self.attempts,
                "last_error": self.last_error}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingMessage:
        return cls(event=HealthEvent.from_dict(data["event"]), owed=tuple(str(d) for d in data.get("owed", [])),
                   attempts=int(data.get("attempts", 0)), last_error=str(data.get("last_error", "")))


@dataclass(frozen=True, slots=True)
class HealthRecord:
    status: HealthStatus = HEALTHY
    since: Ticks | None = None
    failed_runs: int = 0
    failure: Failure | None = None
    last_success: Ticks | None = None
    first_seen: Ticks | None = None
    messages: tuple[PendingMessage, ...] = field(default_factory=tuple)
    claim_owner: str = ""
    claim_until: Ticks = 0

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "since": _time(self.since), "failed_runs": self.failed_runs,
                "failure": self.failure.to_dict() if self.failure is not None else None,
                "last_success": _time(self.last_success), "first_seen": _time(self.first_seen),
                "messages": [m.to_dict() for m in self.messages], "claim_owner": self.claim_owner,
                "claim_until": format_datetime(self.claim_until) if self.claim_until else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HealthRecord:
        failure = data.get("failure")
        status = data.get("status", HEALTHY)
        if status not in (HEALTHY, FAILING, SILENT):
            raise ValueError(f"unknown health status {status!r}")
        return cls(status=status, since=_ticks(data.get("since")), failed_runs=int(data.get("failed_runs", 0)),
                   failure=Failure.from_dict(failure) if isinstance(failure, dict) else None,
                   last_success=_ticks(data.get("last_success")), first_seen=_ticks(data.get("first_seen")),
                   messages=tuple(PendingMessage.from_dict(m) for m in data.get("messages", [])),
                   claim_owner=str(data.get("claim_owner") or ""),
                   claim_until=_ticks(data.get("claim_until")) or 0)


def _queue(record: HealthRecord, event: HealthEvent, destination_ids: Sequence[str]) -> tuple[PendingMessage, ...]:
    if not destination_ids:
        return record.messages
    return (*record.messages, PendingMessage(event, tuple(destination_ids)))[-MAX_MESSAGES:]


def after_failure(record: HealthRecord, failure: Failure, *, at: Ticks,
                  destination_ids: Sequence[str]) -> HealthRecord:
    """A daily run failed. Only the first failure of a streak queues a message."""
    if record.status == FAILING:
        return replace(record, failed_runs=record.failed_runs + 1)
    event = HealthEvent(EVENT_FAILING, at=at, since=at, last_success=record.last_success, failure=failure,
                        failed_runs=1)
    return replace(record, status=FAILING, since=at, failed_runs=1, failure=failure,
                   messages=_queue(record, event, destination_ids))


def failed_unrecorded(record: HealthRecord, failure: Failure, *, since: Ticks, failed_runs: int) -> HealthRecord:
    """A streak whose ``failing`` message went out directly while the store was unreachable, recorded once
    the store answers again: no message is queued for it, but its end sends ``recovered``."""
    if record.status == FAILING:
        return record
    return replace(record, status=FAILING, since=since, failed_runs=failed_runs, failure=failure)


def missed_runs(previous_success: Ticks | None, at: Ticks, *, frequency_hours: int) -> int:
    """Scheduled runs that did not complete between two successes (0 for back-to-back runs)."""
    if previous_success is None or at <= previous_success:
        return 0
    return max(0, round((at - previous_success) / (frequency_hours * TICKS_PER_HOUR)) - 1)


def after_success(record: HealthRecord, *, at: Ticks, window_start: Ticks, window_end: Ticks,
                  previous_success: Ticks | None, frequency_hours: int,
                  destination_ids: Sequence[str]) -> HealthRecord:
    """A daily run succeeded. After a failing or silent spell, one ``recovered`` message.

    ``previous_success`` is the watermark before this run (the end of the last successful window),
    used when the record has not seen a success yet.
    """
    last = record.last_success if record.last_success is not None else previous_success
    if record.status == HEALTHY:
        return replace(record, last_success=at, failed_runs=0)
    event = HealthEvent(EVENT_RECOVERED, at=at, since=record.since, last_success=last, failure=record.failure,
                        failed_runs=record.failed_runs,
                        missed_runs=missed_runs(last, at, frequency_hours=frequency_hours),
                        caught_up_start=window_start, caught_up_end=window_end)
    return replace(record, status=HEALTHY, since=None, failed_runs=0, failure=None, last_success=at,
                   messages=_queue(record, event, destination_ids))


def overdue_after(*, frequency_hours: int, grace_hours: int) -> Ticks:
    return (frequency_hours + grace_hours) * TICKS_PER_HOUR


def check_overdue(record: HealthRecord, *, now: Ticks, last_success: Ticks | None, frequency_hours: int,
                  grace_hours: int, destination_ids: Sequence[str]) -> HealthRecord:
    """The frequent timer's check: one ``not_run_since`` message when no run completed for too long.

    ``last_success`` is the watermark (the end of the last successful window). A deployment that has
    never completed a run is measured from the first time this check saw it.
    """
    latest = max((t for t in (last_success, record.last_success) if t is not None), default=None)
    first_seen = record.first_seen if record.first_seen is not None else now
    reference = latest if latest is not None else first_seen
    record = replace(record, first_seen=first_seen, last_success=latest)
    if record.status != HEALTHY or now - reference <= overdue_after(frequency_hours=frequency_hours,
                                                                    grace_hours=grace_hours):
        return record
    event = HealthEvent(EVENT_NOT_RUN, at=now, since=reference, last_success=latest)
    return replace(record, status=SILENT, since=reference, messages=_queue(record, event, destination_ids))


def _settle(record: HealthRecord, message_id: str, dest_id: str, *, ok: bool, detail: str) -> HealthRecord:
    kept: list[PendingMessage] = []
    for message in record.messages:
        if message.event.id == message_id and dest_id in message.owed:
            owed = message.owed if not ok else tuple(d for d in message.owed if d != dest_id)
            message = replace(message, owed=owed, attempts=message.attempts + 1,
                              last_error=message.last_error if ok else detail[:MAX_ERROR_CHARS])
        if message.owed:
            kept.append(message)
    return replace(record, messages=tuple(kept))


def mark_delivered(record: HealthRecord, message_id: str, dest_id: str) -> HealthRecord:
    return _settle(record, message_id, dest_id, ok=True, detail="")


def mark_failed(record: HealthRecord, message_id: str, dest_id: str, detail: str) -> HealthRecord:
    return _settle(record, message_id, dest_id, ok=False, detail=detail)


def drop_destinations(record: HealthRecord, configured: Sequence[str],
                      aliases: Mapping[str, str] | None = None) -> HealthRecord:
    """Forget destinations that are no longer configured (their URL was removed). ``aliases`` first renames
    the ids earlier versions wrote (``teams-1``) to stable ones, so an upgrade does not drop a message.
    (A health notice is about the detector, not a security event: unlike an alert, it does not wait for a
    removed destination.)"""
    kept = []
    for message in record.messages:
        owed = tuple(dict.fromkeys(d for d in ((aliases or {}).get(d, d) for d in message.owed) if d in configured))
        if owed:
            kept.append(replace(message, owed=owed))
    return replace(record, messages=tuple(kept))


def log_message(prefix: str, fields: Mapping[str, Any]) -> str:
    """``prefix`` and ``fields`` as one line of standard JSON (ASCII, so no character of the values can
    break the line or be read differently by another parser)."""
    return f"{prefix} {json.dumps(fields, ensure_ascii=True, allow_nan=False, sort_keys=True)}"


def failure_fields(failure: Failure) -> dict[str, str]:
    """The run-failure line's fields: the alert rule splits by ``stage`` and ``code``."""
    return {"status": "failed", "stage": failure.stage, "code": failure.code, "error": failure.message}
