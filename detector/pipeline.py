"""One run, end to end: window -> source -> correlate -> alerts.

(The allowlist, dedup/outbox and delivery stages join here as they are built.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .correlate import Correlation, Window, build_alerts, correlate
from .model import Alert
from .sources import ReadReport, Source
from .timestamps import format_datetime


@dataclass(slots=True)
class RunResult:
    """Everything one run produced, and the summary a person or App Insights reads."""

    window: Window
    source: str
    correlation: Correlation
    report: ReadReport
    alerts: list[Alert]
    duration_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        stats = self.correlation.stats
        return {
            "window": {"start": format_datetime(self.window.start), "end": format_datetime(self.window.end)},
            "source": self.source,
            "rows_read": {"AzureActivity": stats.activity_rows, "BehaviorAnalytics": stats.ueba_rows},
            "malformed_rows": self.report.malformed_count,
            "run_commands": stats.run_commands_succeeded,
            "suspicious_logins": stats.ueba_suspicious,
            "matches": stats.rows,
            "alerts": len(self.alerts),
            "ueba_boolean_flags": stats.ueba_boolean_flags,
            "duration_seconds": round(self.duration_seconds, 3),
            "warnings": list(self.warnings),
        }


def detect(source: Source, window: Window) -> RunResult:
    """Read the window from ``source`` and apply the rule; no side effects."""
    started = time.perf_counter()
    data = source.fetch(window)
    correlation = correlate(data.activity, data.ueba, window)
    alerts = build_alerts(correlation.rows)
    result = RunResult(window=window, source=source.describe(), correlation=correlation,
                       report=data.report, alerts=alerts)
    if data.report.malformed_count:
        result.warnings.append(f"{data.report.malformed_count} malformed row(s) skipped")
    if correlation.stats.ueba_boolean_flags:
        result.warnings.append(
            f"{correlation.stats.ueba_boolean_flags} UEBA row(s) carry ActionUncommonlyPerformedByUser as a JSON "
            "boolean; the rule compares with the string \"True\" and, like Sentinel, does not match them")
    result.duration_seconds = time.perf_counter() - started
    return result
