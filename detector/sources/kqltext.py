"""The KQL texts the detector sends: pushdown queries that filter exactly as the rule's first lines.

Every text built here is parsed and analysed in the tests by Microsoft's Kusto language service
against the two tables' schemas (tests/test_kql_language_service.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..model import ACTIVITY_COLUMNS, UEBA_COLUMNS, UEBA_OPTIONAL_COLUMNS
from ..timestamps import Ticks, format_datetime
from ..window import SEED_SELECTION, UEBA_EVENT_SOURCE, UEBA_INSIGHT, UEBA_INSIGHT_VALUE, ActivitySelection

PARITY_TIME_COLUMNS = ("StartTime", "EndTime", "UEBAEventTime")


def string_literal(value: str) -> str:
    """A KQL double-quoted string literal."""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
               .replace("\t", "\\t"))
    return f'"{escaped}"'


def datetime_literal(ticks: Ticks) -> str:
    return f"datetime({format_datetime(ticks)})"


def _time_filter(start: Ticks, end: Ticks) -> str:
    # Half-open, as the detector's window; the API timespan alone may include its end.
    return f"| where TimeGenerated >= {datetime_literal(start)} and TimeGenerated < {datetime_literal(end)}"


def _project(columns: Sequence[str]) -> str:
    # Times travel as text so Kusto's 100 ns ticks survive (the SDK's datetime conversion stops at 1 µs).
    return "| project " + ", ".join("TimeGenerated = tostring(TimeGenerated)" if c == "TimeGenerated" else c
                                    for c in columns)


def _any_of(column: str, values: tuple[str, ...], one: str, many: str) -> str:
    if len(values) == 1:
        return f"| where {column} {one} {string_literal(values[0])}"
    return f"| where {column} {many} (" + ", ".join(string_literal(v) for v in values) + ")"


def activity_query(start: Ticks, end: Ticks, selection: ActivitySelection = SEED_SELECTION) -> str:
    """AzureActivity rows the rules can use: their own first two filters, server-side (for the seed alone,
    exactly its ``=~`` and ``has`` lines; for several rules the union, ``in~`` and ``has_any``)."""
    return "\n".join([
        "AzureActivity",
        _time_filter(start, end),
        _any_of("OperationNameValue", selection.operations, "=~", "in~"),
        _any_of("Authorization", selection.authorization_terms, "has", "has_any"),
        _project(ACTIVITY_COLUMNS),
    ])


def ueba_query(start: Ticks, end: Ticks, callers: Sequence[str]) -> str:
    """Suspicious sign-ins of the given callers, with the rule's BehaviorAnalytics filters.

    The callers are sent as they are and Kusto lower-cases both sides, exactly as the rule's join key
    (``tolower(Caller) == tolower(UserPrincipalName)``): a caller whose Python and Kusto case mappings
    differ (``İ``) can never drop a sign-in the join would keep.
    """
    names = ", ".join(f"tolower({string_literal(c)})" for c in callers)
    return "\n".join([
        "BehaviorAnalytics",
        _time_filter(start, end),
        f"| where EventSource == {string_literal(UEBA_EVENT_SOURCE)} and "
        f"ActivityInsights.{UEBA_INSIGHT} == {string_literal(UEBA_INSIGHT_VALUE)}",
        "| where isnotempty(UserPrincipalName) and isnotempty(SourceIPLocation)",
        f"| where tolower(UserPrincipalName) in ({names})",
        _project(UEBA_COLUMNS + UEBA_OPTIONAL_COLUMNS),
    ])


def unfiltered_query(table: str, start: Ticks, end: Ticks) -> str:
    """Every row of a table in the window (the benchmark's baseline for transfer)."""
    return "\n".join([table, _time_filter(start, end)])


def parity_query(rule_query: str) -> str:
    """A rule's KQL verbatim, with only a final line that returns its datetimes as text (full precision)."""
    return rule_query.rstrip("\n") + "\n| extend " + ", ".join(f"{c} = tostring({c})" for c in PARITY_TIME_COLUMNS)
