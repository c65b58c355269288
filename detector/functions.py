"""The Function App's two jobs, kept out of function_app.py so that file stays a few lines.

* ``daily_run``: settings -> source (Log Analytics, or exports when DETECTOR_SOURCE_DIR is set) ->
  ``run_once`` -> one structured summary line for Application Insights. A failed run logs the
  service's error code and raises, so the platform records the failure (and retries it).
* ``redeliver_run``: the frequent timer; sends what the outbox still owes without querying.

Azure SDK objects are built lazily here, never at import time (a cold start imports little).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .deliver.factory import build_destinations
from .deliver.redact import install_log_redaction
from .errors import DetectorError, SourceError
from .pipeline import RunPolicy, redeliver, run_once, wall_clock
from .settings import Settings
from .sources import Source
from .store.factory import open_store

logger = logging.getLogger("detector")


def _policy(settings: Settings) -> RunPolicy:
    return RunPolicy.from_settings(settings)


def _source(settings: Settings) -> Source:
    if settings.source_dir:
        from .sources.files import FileSource
        return FileSource(settings.source_dir)
    from azure.identity import DefaultAzureCredential

    from .sources.loganalytics import LogAnalyticsSource, make_client
    return LogAnalyticsSource(make_client(DefaultAzureCredential()), settings.require_workspace(),
                              server_timeout=settings.query_timeout_seconds)


def daily_run(*, past_due: bool, env: dict[str, str] | None = None) -> dict[str, Any]:
    install_log_redaction()
    if past_due:
        logger.warning("detector: the daily timer is past due; running now (the window catches up)")
    settings = Settings.from_env(env)
    try:
        result = run_once(source=_source(settings), store=open_store(settings),
                          destinations=build_destinations(settings), at=wall_clock(), policy=_policy(settings))
    except DetectorError as exc:
        code = exc.code if isinstance(exc, SourceError) else type(exc).__name__
        logger.error("detector run failed: %s (code %s)", exc, code)
        raise
    summary = result.summary()
    summary["past_due"] = past_due
    for failure in result.recorded.failed if result.recorded is not None else ():
        logger.error("detector: alert not recorded (retried by the next run): %s", failure)
    logger.info("detector run summary %s", json.dumps(summary, ensure_ascii=False, sort_keys=True))
    return summary


def redeliver_run(*, past_due: bool, env: dict[str, str] | None = None) -> dict[str, Any]:
    install_log_redaction()
    settings = Settings.from_env(env)
    stats = redeliver(store=open_store(settings), destinations=build_destinations(settings),
                      policy=_policy(settings))
    summary = {"delivered": stats.delivered_total, "updates": dict(stats.updates), "failed": dict(stats.failed),
               "undelivered": len(stats.undelivered), "claimed_elsewhere": stats.claimed_elsewhere,
               "past_due": past_due}
    logger.info("detector redelivery summary %s", json.dumps(summary, sort_keys=True))
    return summary
