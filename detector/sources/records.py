"""Turn one row (a column-name -> value mapping, from any source) into a core record.

Conversion rules, shared by every source so the same rows give the same results:

* string columns: null -> ``""``; non-strings become their Kusto ``tostring`` form (a JSON object
  in the ``Authorization`` string column, as some tools emit it, becomes compact JSON text);
* ``TimeGenerated``: ISO 8601 or a ``datetime`` (the CSV reader turns portal times into ISO 8601 with
  its file's day/month order); missing or unparseable makes the row malformed;
* dynamic columns: JSON text is parsed (``parse_json``, standard JSON only, at most 64 levels deep,
  else it stays text); an empty cell is null; objects pass as is, unless they hold NaN/Infinity (not
  JSON numbers) or nest deeper than 64 levels: then the row is malformed. So everything the detector
  writes later is standard JSON and prints without hitting a recursion limit;
* identity: an event met twice (overlapping exports) is read once when its row names it (:class:`Identities`);
  rows without an identity are never merged, since the rule would join each of them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

from .. import kql
from ..model import ActivityEvent, UebaEvent
from ..timestamps import Ticks, from_datetime, parse_datetime, parse_whole_number

_Event = TypeVar("_Event")


class RowError(ValueError):
    """This row cannot be used; the message says which column and why."""


def _text(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    _check_standard(value, column)
    return kql.tostring(value)


def _check_standard(value: Any, column: str) -> None:
    """Objects, lists and numbers from a source must print as standard JSON: no NaN/Infinity, no extreme nesting."""
    problem = kql.nonstandard(value)
    if problem == "deep":
        raise RowError(f"{column} nests deeper than {kql.MAX_DYNAMIC_DEPTH} levels")
    if problem == "nan":
        raise RowError(f"{column} holds NaN or Infinity, which are not JSON numbers")


def _time(row: Mapping[str, Any], column: str) -> Ticks:
    value = row.get(column)
    if value is None or value == "":
        raise RowError(f"{column} is empty")
    if isinstance(value, datetime):
        return from_datetime(value)
    if not isinstance(value, str):
        raise RowError(f"{column} is not a datetime: {str(value)[:40]!r}")
    try:
        return parse_datetime(value)
    except ValueError as exc:
        raise RowError(f"{column}: {exc}") from None


def _dynamic(row: Mapping[str, Any], column: str) -> kql.JsonValue:
    value = row.get(column)
    if value == "":
        return None
    _check_standard(value, column)
    return kql.parse_json(value)


def activity_event(row: Mapping[str, Any]) -> ActivityEvent:
    return ActivityEvent(
        time=_time(row, "TimeGenerated"),
        operation_name=_text(row, "OperationNameValue"),
        authorization=_text(row, "Authorization"),
        correlation_id=_text(row, "CorrelationId"),
        caller=_text(row, "Caller"),
        caller_ip=_text(row, "CallerIpAddress"),
        status=_text(row, "ActivityStatusValue"),
    )


def ueba_event(row: Mapping[str, Any]) -> UebaEvent:
    return UebaEvent(
        time=_time(row, "TimeGenerated"),
        event_source=_text(row, "EventSource"),
        action_type=_text(row, "ActionType"),
        user_principal_name=_text(row, "UserPrincipalName"),
        source_ip_location=_text(row, "SourceIPLocation"),
        activity_insights=_dynamic(row, "ActivityInsights"),
        users_insights=_dynamic(row, "UsersInsights"),
        source_ip=_text(row, "SourceIPAddress"),
        investigation_priority=_priority(row),
    )


def _priority(row: Mapping[str, Any]) -> int | None:
    """``InvestigationPriority`` (int, optional context): anything but a whole number reads as unknown."""
    value = row.get("InvestigationPriority")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return parse_whole_number(value)
        except ValueError:  # "\u00b2".isdigit() is true, int() reads "\u0667" as 7: neither is an int
            return None
    return None


def ueba_identity(row: Mapping[str, Any], event: UebaEvent) -> tuple[str, Ticks] | None:
    """A BehaviorAnalytics event's identity: ``SourceRecordId`` (the source record it enriches) + time;
    None for a row without one. Compared exactly: BehaviorAnalytics comes only from the workspace, so the
    same row spells it the same in every export."""
    record_id = row.get("SourceRecordId")
    if not isinstance(record_id, str) or not record_id.strip():
        return None
    return record_id, event.time


class Identities(Generic[_Event]):
    """The events of one table read so far, by ``identity`` (None: the row has none, and is never merged)."""

    def __init__(self, identity: Callable[[Mapping[str, Any], _Event], Hashable | None]) -> None:
        self._identity = identity
        self._seen: set[Hashable] = set()

    def met_before(self, row: Mapping[str, Any], event: _Event) -> bool:
        key = self._identity(row, event)
        if key is None:
            return False
        if key in self._seen:
            return True
        self._seen.add(key)
        return False
