"""Activity Log events in the shapes Azure hands them out, mapped to the AzureActivity columns the rule reads.

The mapping follows Microsoft's "Azure Activity Log event schema" (learn.microsoft.com/azure/azure-monitor/
essentials/activity-log-schema; its last table maps the storage / event hub record to the REST event) and the
"Data structure changes" table of the Activity log page (old -> new AzureActivity columns):

====================  ===========================================  =============================================
AzureActivity column  storage account / event hub record           REST API, ``az monitor activity-log list``,
                      (``PT1H.json``, ``{"records": [...]}``)      PowerShell ``Get-AzLog | ConvertTo-Json``
====================  ===========================================  =============================================
TimeGenerated         ``time``                                     ``eventTimestamp``
OperationNameValue    ``operationName``                            ``operationName.value``
Authorization         ``identity.authorization``                   ``authorization``
CorrelationId         ``correlationId``                            ``correlationId``
Caller                ``identity.claims`` UPN claim, else appid    ``caller``
CallerIpAddress       ``callerIpAddress``                          ``httpRequest.clientIpAddress``
ActivityStatusValue   ``resultType``                               ``status.value``
EventDataId           (not in the record)                          ``eventDataId``
====================  ===========================================  =============================================

The record has no ``caller``: the schema page defines the caller as "UPN claim, or SPN claim based on
availability", so it is the ``.../claims/upn`` claim, else the ``appid`` claim (a service principal).
PowerShell writes the REST fields in PascalCase (``EventTimestamp``, ``Authorization.Scope``), and Windows
PowerShell 5.1 writes times as ``/Date(ms)/``: keys are matched without regard to case, the authorization's
keys are given the REST spelling (the rule reads ``scope``), and ``/Date(ms)/`` is read as milliseconds
since 1970 UTC.

The older AzureActivity schema (``OperationName``, ``ActivityStatus``, no ``OperationNameValue``) maps
``ActivityStatus`` to ``ActivityStatusValue`` (the old values ``Success``/``Start``/``Failure`` keep their
meaning: the rule's status test accepts ``success``) and ``OperationName`` to ``OperationNameValue`` only
where it holds the operation's identifier (``Microsoft.Compute/virtualMachines/runCommand/action``). Where
it holds a display name ("Run Command on Virtual Machine", localised), no documented mapping gives the
identifier back, so the file is refused with how to convert it.

A file's shape is decided by its first object, as its columns are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import InputError
from ..model import ActivityEvent
from ..timestamps import Ticks

Row = Mapping[str, Any]
Mapper = Callable[[Row], dict[str, Any]]

UPN_CLAIM = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
_OPERATION_ID = re.compile(r"[A-Za-z0-9.]+(/[^/\s]+)+")
_MS_DATE = re.compile(r"/Date\((-?[0-9]+)([+-][0-9]{4})?\)/")  # ASCII digits: see timestamps.py
OLDER_SCHEMA_FIX = (
    "this is the older AzureActivity schema, and OperationName holds a display name ({value!r}) that no "
    "documented mapping turns back into the operation's identifier. Re-export from the workspace with "
    "OperationNameValue (Log Analytics fills it for old rows too: AzureActivity | project TimeGenerated, "
    "OperationNameValue, Authorization, CorrelationId, Caller, CallerIpAddress, ActivityStatusValue), or export "
    "the events with az monitor activity-log list, which this reader also takes")


def _lower_keys(obj: Row) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in obj.items()}


def _value(field: Any) -> Any:
    """A REST ``{"value", "localizedValue"}`` pair gives its (never localised) value; anything else as is."""
    if isinstance(field, dict):
        return _lower_keys(field).get("value")
    return field


def _member(obj: Any, key: str) -> Any:
    return _lower_keys(obj).get(key) if isinstance(obj, dict) else None


def _rest_spelling(authorization: Any) -> Any:
    """PowerShell's ``{"Action", "Scope", ...}`` as the REST API spells it: ``{"action", "scope", ...}``."""
    if isinstance(authorization, dict):
        return {(k[:1].lower() + k[1:]) if isinstance(k, str) else k: v for k, v in authorization.items()}
    return authorization


def _event_time(value: Any) -> Any:
    if isinstance(value, str):
        m = _MS_DATE.fullmatch(value.strip())
        if m:  # the milliseconds are UTC; the offset only says where it was written
            return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(m.group(1)))
    return value


def from_record(obj: Row) -> dict[str, Any]:
    """A storage account / event hub record (resource log schema) as AzureActivity columns."""
    identity = obj.get("identity")
    claims = _member(identity, "claims")
    caller = _member(claims, UPN_CLAIM) or _member(claims, "appid")
    return {"TimeGenerated": obj.get("time"), "OperationNameValue": obj.get("operationName"),
            "Authorization": _member(identity, "authorization"), "CorrelationId": obj.get("correlationId"),
            "Caller": caller, "CallerIpAddress": obj.get("callerIpAddress"),
            "ActivityStatusValue": obj.get("resultType"), "EventDataId": None}


def from_event(obj: Row) -> dict[str, Any]:
    """A REST API / ``az monitor activity-log list`` / ``Get-AzLog`` event as AzureActivity columns."""
    keys = _lower_keys(obj)
    return {"TimeGenerated": _event_time(keys.get("eventtimestamp")),
            "OperationNameValue": _value(keys.get("operationname")),
            "Authorization": _rest_spelling(keys.get("authorization")), "CorrelationId": keys.get("correlationid"),
            "Caller": keys.get("caller"), "CallerIpAddress": _member(keys.get("httprequest"), "clientipaddress"),
            "ActivityStatusValue": _value(keys.get("status")), "EventDataId": keys.get("eventdataid")}


def check_older_operation(operation: Any, path: str) -> None:
    """An older-schema OperationName must be the operation's identifier (see the module's docstring)."""
    if isinstance(operation, str) and operation.strip() and not _OPERATION_ID.fullmatch(operation.strip()):
        raise InputError(OLDER_SCHEMA_FIX.format(value=operation[:60]), path=path, column="OperationName")


def older_names(columns: list[str]) -> list[str]:
    """Older-schema column names as the new schema names them (the documented pairs the rule reads)."""
    renames = {"OperationName": "OperationNameValue"}
    if "ActivityStatusValue" not in columns:
        renames["ActivityStatus"] = "ActivityStatusValue"
    return [renames.get(c, c) for c in columns]


def older_schema_mapper(path: str) -> Mapper:
    """Rows of the older AzureActivity schema with the new column names; display names are refused."""
    def mapped(obj: Row) -> dict[str, Any]:
        check_older_operation(obj.get("OperationName"), path)
        names = older_names(list(obj))
        return dict(zip(names, obj.values(), strict=True))
    return mapped


def is_older_schema(columns: list[str] | Row) -> bool:
    """AzureActivity columns before OperationNameValue: ``OperationName`` (and ``TimeGenerated``) only."""
    return "OperationNameValue" not in columns and "OperationName" in columns and "TimeGenerated" in columns


def mapper_for(first: Row, path: str) -> Mapper | None:
    """How a file whose first object is ``first`` maps to AzureActivity columns (None: it has them)."""
    if "OperationNameValue" in first:
        return None
    if "eventtimestamp" in _lower_keys(first):  # PowerShell's events have an OperationName too
        return from_event
    if is_older_schema(first):
        return older_schema_mapper(path)
    if "time" in first and "operationName" in first:
        return from_record
    return None


def event_identity(row: Row, event: ActivityEvent) -> tuple[str, str, Ticks] | None:
    """An AzureActivity event's identity: CorrelationId + EventDataId + time (GUIDs compared without case: the
    REST API and the workspace spell them differently); None for a row without an EventDataId."""
    event_id = row.get("EventDataId")
    if not isinstance(event_id, str) or not event_id.strip():
        return None
    return event.correlation_id.strip().lower(), event_id.strip().lower(), event.time
