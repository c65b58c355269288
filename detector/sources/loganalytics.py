"""Log Analytics source: pushdown queries through azure-monitor-query's ``LogsQueryClient``.

* The window is pinned once per run; both tables are queried for the same period.
* AzureActivity is filtered server-side exactly as the rule's first lines and only the correlation's
  columns come back; BehaviorAnalytics is asked only for the callers the first query returned
  (as they are, lower-cased by Kusto on both sides as in the rule's join; in chunks). When the first
  query returns nothing, the second is not sent.
* A partial result or an error raises :class:`SourceError` with the service's code: a failed query
  never reads as "no findings". A result at the service limits (500,000 rows / ~64 MB) is split: the
  time range is halved and each half queried until each fits.
* 429 and transient 5xx are retried by azure-core's RetryPolicy (configured in ``make_client``,
  honouring Retry-After), and every query carries a server timeout.

The Python correlation stays the single implementation of the rule: rows from here go through the
same ``records`` conversion and ``correlate`` as rows from export files.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.monitor.query import LogsQueryClient, LogsQueryPartialResult

from ..credential import failure_line
from ..errors import SourceError
from ..model import UebaEvent
from ..timestamps import TICKS_PER_MINUTE, Ticks, to_datetime
from ..window import SEED_SELECTION, ActivitySelection, Window
from . import MalformedRow, ReadReport, SourceData
from .kqltext import activity_query, parity_query, ueba_query
from .records import RowError, activity_event, ueba_event

_T = TypeVar("_T")
MAX_ROWS = 500_000
# A query is a POST but only reads: safe to retry on every transient status, 502 included (azure-core
# retries a POST only on 500/503/504 unless the call names its methods; the option is per call).
RETRY_ON_METHODS = ("GET", "POST")
CALLERS_PER_QUERY = 200
MIN_SPLIT_TICKS = TICKS_PER_MINUTE
_LIMIT_TEXT = re.compile(r"(?i)E_QUERY_RESULT_SET_TOO_LARGE|result set has exceeded|exceeded the internal record count|"
                         r"data size limit|exceeded.{0,40}limit|ResultSetTooLarge|QueryResultTooLarge")


def make_client(credential: Any, *, endpoint: str | None = None, retries: int = 4, **transport: Any) -> LogsQueryClient:
    """A LogsQueryClient whose azure-core RetryPolicy retries 429 and transient 5xx with backoff."""
    options: dict[str, Any] = {
        "retry_total": retries, "retry_status": retries, "retry_backoff_factor": 1.0, "retry_backoff_max": 60,
        "retry_on_status_codes": [429, 500, 502, 503, 504],
    }
    if endpoint:
        options["endpoint"] = endpoint
    options.update(transport)
    return LogsQueryClient(credential, **options)


def _activity_for(selection: ActivitySelection, start: Ticks, end: Ticks) -> str:
    return activity_query(start, end, selection)


def _ueba_for(callers: list[str], start: Ticks, end: Ticks) -> str:
    return ueba_query(start, end, callers)


class _ResultTooLarge(Exception):
    pass


def _error_text(error: Any) -> str:
    if error is None:
        return ""
    parts = [str(getattr(error, "code", "")), str(getattr(error, "message", ""))]
    details = getattr(error, "details", None)
    if details:
        parts.append(json.dumps(details, default=str))
    return " ".join(parts)


def _rows(tables: Any) -> Iterator[dict[str, Any]]:
    for table in tables or []:
        columns = list(table.columns)
        for row in table.rows:
            yield dict(zip(columns, list(row), strict=False))


class LogAnalyticsSource:
    def __init__(self, client: LogsQueryClient, workspace_id: str, *, server_timeout: int = 180,
                 max_rows: int = MAX_ROWS, selection: ActivitySelection = SEED_SELECTION) -> None:
        self.client = client
        self.selection = selection
        self.workspace_id = workspace_id
        self.server_timeout = server_timeout
        self.max_rows = max_rows
        self.queries_sent: list[str] = []
        self.rows_transferred = 0

    def describe(self) -> str:
        return f"Log Analytics workspace {self.workspace_id}"

    # --- raw querying ----------------------------------------------------------------------------
    def _ask(self, text: str, start: Ticks, end: Ticks) -> list[dict[str, Any]]:
        """One query over ``start .. end``, its rows; every failure is a SourceError (or _ResultTooLarge)."""
        self.queries_sent.append(text)
        try:
            result = self.client.query_workspace(
                self.workspace_id, text, timespan=(to_datetime(start), to_datetime(end)),
                server_timeout=self.server_timeout, retry_on_methods=list(RETRY_ON_METHODS))
        except ClientAuthenticationError:
            raise SourceError("authentication to Log Analytics failed (check the identity and its "
                              "Log Analytics Reader role)", code="AuthenticationFailed") from None
        except HttpResponseError as exc:
            if isinstance(exc.__context__, ClientAuthenticationError):
                # The client re-raises a credential failure as a bare HttpResponseError (status None).
                raise SourceError(f"authentication to Log Analytics failed: {failure_line(exc.__context__)}",
                                  code="AuthenticationFailed") from None
            code = getattr(getattr(exc, "error", None), "code", None) or f"HTTP{exc.status_code}"
            if _LIMIT_TEXT.search(str(exc.message or "")):
                raise _ResultTooLarge() from None
            raise SourceError(f"Log Analytics query failed (HTTP {exc.status_code})", code=str(code)) from None
        except ServiceRequestError as exc:
            raise SourceError(f"Log Analytics unreachable: {type(exc).__name__}", code="ServiceRequestError") from None
        if isinstance(result, LogsQueryPartialResult):
            if _LIMIT_TEXT.search(_error_text(result.partial_error)):
                raise _ResultTooLarge()
            code = getattr(result.partial_error, "code", None) or "PartialError"
            message = getattr(result.partial_error, "message", "") or ""
            raise SourceError(f"Log Analytics returned a partial result: {message[:300]}", code=str(code))
        return list(_rows(result.tables))

    def _query_once(self, text: str, start: Ticks, end: Ticks) -> list[dict[str, Any]]:
        rows = self._ask(text, start, end)
        if len(rows) >= self.max_rows:
            raise _ResultTooLarge()
        self.rows_transferred += len(rows)
        return rows

    def query(self, build: Callable[[Ticks, Ticks], str], window: Window) -> list[dict[str, Any]]:
        """Run ``build(start, end)`` over the window, halving the range while a result is at the limits."""
        pending = [(window.start, window.end)]
        out: list[dict[str, Any]] = []
        while pending:
            start, end = pending.pop(0)
            try:
                out.extend(self._query_once(build(start, end), start, end))
            except _ResultTooLarge:
                if end - start <= MIN_SPLIT_TICKS:
                    raise SourceError("a single minute holds more rows than one query may return",
                                      code="ResultTooLarge") from None
                middle = start + (end - start) // 2
                pending[0:0] = [(start, middle), (middle, end)]
        return out

    # --- the source interface --------------------------------------------------------------------
    def fetch(self, window: Window) -> SourceData:
        report = ReadReport()
        activity_rows = self.query(functools.partial(_activity_for, self.selection), window)
        activity = list(_convert(activity_rows, activity_event, "AzureActivity", report))
        # Exact strings, not lower-cased here: the query lower-cases them with Kusto's own tolower.
        callers = sorted({e.caller for e in activity if e.caller})
        ueba: list[UebaEvent] = []
        for i in range(0, len(callers), CALLERS_PER_QUERY):
            chunk = callers[i:i + CALLERS_PER_QUERY]
            rows = self.query(functools.partial(_ueba_for, chunk), window)
            ueba.extend(_convert(rows, ueba_event, "BehaviorAnalytics", report))
        return SourceData(activity=activity, ueba=ueba, report=report)

    def rule_rows(self, window: Window, rule_query: str) -> list[dict[str, Any]]:
        """A rule's KQL, verbatim, over the window (parity)."""
        try:
            return self._ask(parity_query(rule_query), window.start, window.end)
        except _ResultTooLarge:
            raise SourceError("the rule's query result is over the service's limits",
                              code="ResultTooLarge") from None


def _convert(rows: Iterable[Mapping[str, Any]], convert: Callable[[Mapping[str, Any]], _T], table: str,
             report: ReadReport) -> Iterator[_T]:
    for number, row in enumerate(rows, start=1):
        report.count_row(table)
        try:
            yield convert(row)
        except RowError as exc:
            report.add_malformed(MalformedRow(f"{table} (Log Analytics)", f"row {number}", str(exc)))

