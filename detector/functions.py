"""The Function App's two jobs, kept out of function_app.py so that file stays a few lines.

* ``daily_run``: settings -> source (Log Analytics, or exports when DETECTOR_SOURCE_DIR is set) ->
  ``run_once`` -> one summary line for Application Insights. A failed run logs one failure line
  (stage, the service's error code) and raises, so the platform records the failure (and retries it).
* ``redeliver_run``: the frequent timer; sends what the outbox still owes without querying.

Both also watch the detector itself (detector/health.py): a failed run queues one "failing" health
message per streak, the first success after it one "recovered", and the frequent timer one "not run
since" when no run completed for the frequency plus DETECTOR_HEALTH_GRACE_HOURS. Health work comes
after alert work and its errors are logged, never raised: it cannot block or fail an alert.
The summary and failure lines are "<prefix> <one-line JSON>" messages (health.log_message): Application
Insights keeps a log record's message, and Azure Monitor's alert queries (infra/modules/monitoring.bicep)
parse it back.

Azure SDK objects are built lazily here, never at import time (a cold start imports little).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from . import health
from .deliver import Destination
from .deliver.factory import build_destinations, positional_ids
from .deliver.health_card import send_health
from .errors import ConfigError, DetectorError
from .health_outbox import deliver_health, update
from .outbox import destination_aliases
from .pipeline import RunPolicy, RunSummary, redeliver, run_once, wall_clock
from .redact import install_log_redaction
from .rule import selection_of
from .settings import Settings
from .sources import Source
from .sources.factory import open_source
from .store import StateStore
from .store.factory import open_store
from .timestamps import TICKS_PER_MINUTE, Ticks

logger = logging.getLogger("detector")


def _policy(settings: Settings) -> RunPolicy:
    return RunPolicy.from_settings(settings)


def _source(settings: Settings) -> Source:
    selection = selection_of(settings.rules)
    if settings.source_dir:
        return open_source(selection=selection, directory=settings.source_dir)
    return open_source(selection=selection, workspace_id=settings.require_workspace(),
                       server_timeout=settings.query_timeout_seconds)


def daily_run(*, past_due: bool, env: dict[str, str] | None = None,
              clock: Callable[[], Ticks] = wall_clock) -> RunSummary:
    install_log_redaction()
    if past_due:
        logger.warning("detector: the daily timer is past due; running now (the window catches up)")
    at = clock()
    settings: Settings | None = None
    try:
        settings = Settings.from_env(env)
        store = open_store(settings)
        destinations = build_destinations(settings)
        previous_success = store.get_watermark()
        result = run_once(source=_source(settings), store=store, destinations=destinations, at=at,
                          policy=_policy(settings), clock=clock, positional_ids=positional_ids(settings))
    except Exception as exc:
        failure = health.classify(exc)
        logger.error("%s", health.log_message(health.FAILURE_PREFIX, health.failure_fields(failure)))
        if not isinstance(exc, DetectorError):  # a bug: its traceback, on a line of its own
            logger.exception("detector: traceback of the unexpected %s", type(exc).__name__)
        _report_failure(settings, env, failure, at=at, clock=clock)
        raise
    summary = result.summary()
    summary["past_due"] = past_due
    for unrecorded in result.recorded.failed if result.recorded is not None else ():
        logger.error("detector: alert not recorded (retried by the next run): %s", unrecorded)
    logger.info("%s", health.log_message(health.SUMMARY_PREFIX, summary))
    if result.status != "succeeded":
        # Partial (some alert not recorded): a failed run for the health record, as for `status`.
        partial = health.partial_run(result.recorded.failed if result.recorded is not None else [])
        # Also Azure Monitor's "a run failed" line (split by stage and code), so every view agrees.
        logger.error("%s", health.log_message(health.FAILURE_PREFIX,
                                              {**health.failure_fields(partial), "status": result.status}))
        _report_failure(settings, env, partial, at=at, clock=clock)
        return summary
    _guarded("after a successful run", lambda: _health_after_success(
        store, destinations, settings, at=at, window=result.window.start, previous_success=previous_success,
        clock=clock))
    return summary


def redeliver_run(*, past_due: bool, env: dict[str, str] | None = None,
                  clock: Callable[[], Ticks] = wall_clock) -> dict[str, Any]:
    install_log_redaction()
    settings = Settings.from_env(env)
    store = open_store(settings)
    destinations = build_destinations(settings)
    stats = redeliver(store=store, destinations=destinations, policy=_policy(settings), clock=clock,
                      positional_ids=positional_ids(settings))
    summary = {"delivered": stats.delivered_total, "updates": dict(stats.updates), "failed": dict(stats.failed),
               "undelivered": len(stats.undelivered), "claimed_elsewhere": stats.claimed_elsewhere,
               "owed_to_unconfigured": dict(stats.unconfigured), "past_due": past_due}
    logger.info("detector redelivery summary %s", json.dumps(summary, sort_keys=True))
    _guarded("in the frequent check", lambda: _health_check(store, destinations, settings, clock=clock))
    return summary


# --- the detector's own health -----------------------------------------------------------------------

# Enough to reach the destinations and the state when the full settings do not validate.
_HTTP_SETTINGS = ("DETECTOR_HTTP_TIMEOUT_SECONDS", "DETECTOR_HTTP_MAX_SECONDS")
_HEALTH_SETTINGS = ("DETECTOR_TEAMS_WEBHOOK_URLS", "DETECTOR_LOGICAPP_WEBHOOK_URLS", "DETECTOR_TABLE_ENDPOINT",
                    "DETECTOR_TABLE_CONNECTION_STRING", "DETECTOR_STATE_DIR", *_HTTP_SETTINGS)
# Failures sent without the state store (it was unreachable), per process: the platform's retries
# of one failed run usually land on the same warm instance, so they do not repeat the message.
_SENT_WITHOUT_STATE: set[str] = set()
# Per failure key: the failure, its first time and how many runs failed so, until a later success records the
# streak (so it ends with "recovered"). Only keys in _SENT_WITHOUT_STATE (a notice went out) count.
_DIRECT_FAILURES: dict[str, tuple[health.Failure, Ticks, int]] = {}


def _guarded(when: str, work: Callable[[], object]) -> None:
    try:
        work()
    except Exception as exc:  # health reporting never fails a run or hides an alert
        logger.warning("detector health reporting failed %s: %s", when, exc)


def _lease(settings: Settings) -> Ticks:
    return _policy(settings).lease_minutes * TICKS_PER_MINUTE


def _owner() -> str:
    return "health-" + uuid.uuid4().hex


def _health_after_success(store: StateStore, destinations: list[Destination], settings: Settings, *, at: Ticks,
                          window: Ticks, previous_success: Ticks | None, clock: Callable[[], Ticks]) -> None:
    ids = [d.id for d in destinations]
    direct = sorted((v for k, v in _DIRECT_FAILURES.items() if k in _SENT_WITHOUT_STATE), key=lambda v: v[1])

    def change(record: health.HealthRecord) -> health.HealthRecord:
        if direct:
            record = health.failed_unrecorded(record, direct[0][0], since=direct[0][1],
                                              failed_runs=sum(v[2] for v in direct))
        return health.after_success(record, at=at, window_start=window, window_end=at,
                                    previous_success=previous_success, frequency_hours=settings.frequency_hours,
                                    destination_ids=ids)
    update(store, change)
    _DIRECT_FAILURES.clear()
    _SENT_WITHOUT_STATE.clear()
    _send(store, destinations, settings, clock)


def _health_check(store: StateStore, destinations: list[Destination], settings: Settings, *,
                  clock: Callable[[], Ticks]) -> None:
    ids = [d.id for d in destinations]
    now = clock()
    last_success = store.get_watermark()
    update(store, lambda record: health.check_overdue(
        record, now=now, last_success=last_success, frequency_hours=settings.frequency_hours,
        grace_hours=settings.health_grace_hours, destination_ids=ids))
    _send(store, destinations, settings, clock)


def _send(store: StateStore, destinations: list[Destination], settings: Settings,
          clock: Callable[[], Ticks]) -> None:
    stats = deliver_health(store, destinations, owner=_owner(), clock=clock, lease=_lease(settings),
                           aliases=destination_aliases(store, positional_ids(settings)))
    for error in stats.errors:
        logger.warning("detector health message not delivered (retried later): %s", error)


def _report_failure(settings: Settings | None, env: Mapping[str, str] | None, failure: health.Failure, *,
                    at: Ticks, clock: Callable[[], Ticks]) -> None:
    def report() -> None:
        nonlocal settings
        if settings is None:  # the settings themselves failed: use the few that reach people
            settings = _fallback_settings(os.environ if env is None else env)
        destinations = build_destinations(settings)
        try:
            store = open_store(settings)
            ids = [d.id for d in destinations]
            update(store, lambda record: health.after_failure(record, failure, at=at, destination_ids=ids))
        except DetectorError as exc:
            _send_without_state(destinations, failure, at=at, reason=str(exc))
            return
        _send(store, destinations, settings, clock)
    _guarded("after a failed run", report)


def _fallback_settings(source: Mapping[str, str]) -> Settings:
    """The settings that reach people. When the invalid setting is one of the HTTP ones, its default
    serves: a bad timeout must not silence the notice that says the settings are broken."""
    try:
        return Settings.from_env({k: v for k, v in source.items() if k in _HEALTH_SETTINGS})
    except ConfigError:
        return Settings.from_env({k: v for k, v in source.items()
                                  if k in _HEALTH_SETTINGS and k not in _HTTP_SETTINGS})


def _send_without_state(destinations: list[Destination], failure: health.Failure, *, at: Ticks,
                        reason: str) -> None:
    logger.warning("detector health state unavailable (%s); sending the failure notice directly", reason)
    key = f"{failure.stage}:{failure.code}"
    first, since, count = _DIRECT_FAILURES.get(key, (failure, at, 0))
    _DIRECT_FAILURES[key] = (first, since, count + 1)
    if key in _SENT_WITHOUT_STATE:
        return
    event = health.HealthEvent(health.EVENT_FAILING, at=at, since=at, failure=failure, failed_runs=1)
    if all(send_health(d, event).ok for d in destinations):
        _SENT_WITHOUT_STATE.add(key)
