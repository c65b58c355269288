"""Frozen records that flow through the pipeline.

Input records carry only the columns the rule reads. Times are Kusto ticks (see timestamps.py);
dynamic columns are parsed JSON values. ``to_dict``/``from_dict`` give a stable JSON form used by
the CLI, the run state and the webhook payloads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from .kql import JsonValue
from .timestamps import Ticks, format_datetime, parse_datetime

SEED_RULE_ID = "11bda520-a965-4654-9a45-d09f372f71aa"
"""The seed rule's id (Sentinel's): the rule of rows and alerts that name none (state written before rules)."""

# The rule's final projection, in the query's order (every rule here projects these columns).
RULE_COLUMNS: tuple[str, ...] = (
    "StartTime",
    "EndTime",
    "Subscription",
    "VirtualMachineName",
    "Caller",
    "CallerIpAddress",
    "UEBAEventTime",
    "UEBAActionType",
    "UEBASourceIPLocation",
    "UEBAActivityInsights",
    "UEBAUsersInsights",
    "AccountName",
    "AccountUPNSuffix",
)

# Columns each table must provide to the correlation (file exports and pushdown queries alike).
ACTIVITY_COLUMNS: tuple[str, ...] = (
    "TimeGenerated",
    "OperationNameValue",
    "Authorization",
    "CorrelationId",
    "Caller",
    "CallerIpAddress",
    "ActivityStatusValue",
)
UEBA_COLUMNS: tuple[str, ...] = (
    "TimeGenerated",
    "EventSource",
    "ActionType",
    "UserPrincipalName",
    "SourceIPLocation",
    "ActivityInsights",
    "UsersInsights",
)
# Read when present, never required (older exports lack them): context for the alert, not the rule.
UEBA_OPTIONAL_COLUMNS: tuple[str, ...] = ("SourceIPAddress", "InvestigationPriority")
# Read when present: the column naming one event (AzureActivity's, BehaviorAnalytics'), so an event met twice
# in overlapping exports is read once (sources/records.py: Identities).
IDENTITY_COLUMNS: tuple[str, ...] = ("EventDataId", "SourceRecordId")


@dataclass(frozen=True, slots=True)
class ActivityEvent:
    """One AzureActivity row, reduced to the columns the rule reads."""

    time: Ticks
    operation_name: str
    authorization: str
    correlation_id: str
    caller: str
    caller_ip: str
    status: str


@dataclass(frozen=True, slots=True)
class UebaEvent:
    """One BehaviorAnalytics row, reduced to the columns the rule reads."""

    time: Ticks
    event_source: str
    action_type: str
    user_principal_name: str
    source_ip_location: str
    activity_insights: JsonValue
    users_insights: JsonValue
    # Optional columns: context for the responder only; the rule never reads them.
    source_ip: str = ""
    investigation_priority: int | None = None


class RunCommand(NamedTuple):
    """One ``summarize ... by CorrelationId, Authorization, Caller`` group that succeeded.

    (Immutable like the other records; a NamedTuple because the correlation builds many of these and
    a frozen dataclass's ``__init__`` costs several times more.)
    """

    correlation_id: str
    authorization: str
    caller: str
    start: Ticks
    end: Ticks
    caller_ip: str
    statuses: tuple[str, ...]
    scope: str
    subscription: str
    vm_name: str
    resource_group: str
    rule_id: str = SEED_RULE_ID


class RuleRow(NamedTuple):
    """One row of the rule's result, plus the Run Command it came from (not projected by the rule).

    A NamedTuple for the same reason as :class:`RunCommand`.
    """

    start: Ticks
    end: Ticks
    subscription: str
    vm_name: str
    caller: str
    caller_ip: str
    ueba_time: Ticks
    ueba_action_type: str
    ueba_source_location: str
    ueba_activity_insights: JsonValue
    ueba_users_insights: JsonValue
    account_name: str
    account_upn_suffix: str
    correlation_id: str
    scope: str
    resource_group: str
    # Context carried from the UEBA event (not a column of the rule).
    ueba_source_ip: str = ""
    ueba_investigation_priority: int | None = None
    # The group's exact Authorization text (part of the rule's ``summarize`` key, so of the alert's identity).
    # Not stored per row: the alert holds it once (rows of one alert share it).
    authorization: str = ""
    # The rule that produced the row (not stored per row either: the alert holds it).
    rule_id: str = SEED_RULE_ID

    def to_dict(self) -> dict[str, Any]:
        """The 13 columns of the rule, datetimes as ISO 8601 UTC."""
        return {
            "StartTime": format_datetime(self.start),
            "EndTime": format_datetime(self.end),
            "Subscription": self.subscription,
            "VirtualMachineName": self.vm_name,
            "Caller": self.caller,
            "CallerIpAddress": self.caller_ip,
            "UEBAEventTime": format_datetime(self.ueba_time),
            "UEBAActionType": self.ueba_action_type,
            "UEBASourceIPLocation": self.ueba_source_location,
            "UEBAActivityInsights": self.ueba_activity_insights,
            "UEBAUsersInsights": self.ueba_users_insights,
            "AccountName": self.account_name,
            "AccountUPNSuffix": self.account_upn_suffix,
        }

    def to_state(self) -> dict[str, Any]:
        """The 13 columns plus the hidden ones, for storage."""
        data = self.to_dict()
        data["CorrelationId"] = self.correlation_id
        data["Scope"] = self.scope
        data["ResourceGroup"] = self.resource_group
        data["UEBASourceIPAddress"] = self.ueba_source_ip
        data["UEBAInvestigationPriority"] = self.ueba_investigation_priority
        return data

    def identity(self) -> str:
        """What makes two rows of one alert the same match: everything but the context columns (an alert
        stored before they were read must not gain a duplicate of each row when they appear) and the
        group's StartTime, EndTime and CallerIpAddress, which change when a later window no longer holds
        (or newly holds) some of the Run Command's events: the same sign-in is not new evidence."""
        data = self.to_state()
        for column in ("UEBASourceIPAddress", "UEBAInvestigationPriority", "StartTime", "EndTime", "CallerIpAddress"):
            del data[column]
        return json.dumps(data, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_state(cls, data: dict[str, Any], *, authorization: str = "", rule_id: str = SEED_RULE_ID) -> RuleRow:
        return cls(
            start=parse_datetime(data["StartTime"]),
            end=parse_datetime(data["EndTime"]),
            subscription=data["Subscription"],
            vm_name=data["VirtualMachineName"],
            caller=data["Caller"],
            caller_ip=data["CallerIpAddress"],
            ueba_time=parse_datetime(data["UEBAEventTime"]),
            ueba_action_type=data["UEBAActionType"],
            ueba_source_location=data["UEBASourceIPLocation"],
            ueba_activity_insights=data["UEBAActivityInsights"],
            ueba_users_insights=data["UEBAUsersInsights"],
            account_name=data["AccountName"],
            account_upn_suffix=data["AccountUPNSuffix"],
            correlation_id=data.get("CorrelationId", ""),
            scope=data.get("Scope", ""),
            resource_group=data.get("ResourceGroup", ""),
            ueba_source_ip=data.get("UEBASourceIPAddress") or "",
            ueba_investigation_priority=data.get("UEBAInvestigationPriority"),
            authorization=authorization,
            rule_id=rule_id,
        )


# What a delivery is: the first message of an alert, or an update carrying new evidence for one already sent.
DeliveryEvent = Literal["alert", "update"]


@dataclass(frozen=True, slots=True)
class SignInSighting:
    """A flagged sign-in of the alert's user that is not one of its matches (triage context)."""

    time: Ticks
    action_type: str
    location: str
    source_ip: str

    def to_dict(self) -> dict[str, Any]:
        return {"Time": format_datetime(self.time), "ActionType": self.action_type, "Location": self.location,
                "SourceIPAddress": self.source_ip}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SignInSighting:
        return cls(parse_datetime(data["Time"]), data["ActionType"], data["Location"], data["SourceIPAddress"])


@dataclass(frozen=True, slots=True)
class RunCommandSighting:
    """Another Run Command by the same caller in the window (triage context)."""

    start: Ticks
    vm_name: str
    resource_group: str
    correlation_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"StartTime": format_datetime(self.start), "VirtualMachineName": self.vm_name,
                "ResourceGroup": self.resource_group, "CorrelationId": self.correlation_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunCommandSighting:
        return cls(parse_datetime(data["StartTime"]), data["VirtualMachineName"], data["ResourceGroup"],
                   data["CorrelationId"])


@dataclass(frozen=True, slots=True)
class TriageContext:
    """What the run already read around an alert, kept with it for the card and the payload.

    ``detected_at`` is the run time that found it; ``caller_role`` the role in the Run Command's
    Authorization evidence; the two lists are capped (see detector/triage.py), their full sizes counted.
    """

    detected_at: Ticks
    caller_role: str = ""
    other_sign_ins: tuple[SignInSighting, ...] = ()
    other_sign_ins_total: int = 0
    other_run_commands: tuple[RunCommandSighting, ...] = ()
    other_run_commands_total: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"DetectedAt": format_datetime(self.detected_at), "CallerRole": self.caller_role,
                "OtherSignIns": [s.to_dict() for s in self.other_sign_ins],
                "OtherSignInsTotal": self.other_sign_ins_total,
                "OtherRunCommands": [r.to_dict() for r in self.other_run_commands],
                "OtherRunCommandsTotal": self.other_run_commands_total}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TriageContext:
        return cls(detected_at=parse_datetime(data["DetectedAt"]), caller_role=data.get("CallerRole", ""),
                   other_sign_ins=tuple(SignInSighting.from_dict(s) for s in data.get("OtherSignIns", [])),
                   other_sign_ins_total=int(data.get("OtherSignInsTotal", 0)),
                   other_run_commands=tuple(RunCommandSighting.from_dict(r) for r in data.get("OtherRunCommands", [])),
                   other_run_commands_total=int(data.get("OtherRunCommandsTotal", 0)))


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert per group of the rule's ``summarize``: CorrelationId + Authorization + Caller.

    Two Run Commands under one CorrelationId (a template touching several VMs, a client reusing its
    ``x-ms-correlation-request-id``) are two alerts, each checked by the allowlist and delivered on its
    own. ``rows`` are the rule's rows for this group, ordered by UEBA time. ``omitted_rows`` counts
    matches that are known but not carried (the run state keeps a bounded number; see outbox.py), so
    ``match_count`` is the true number of matches.
    """

    key: str
    rule_id: str
    correlation_id: str
    caller: str
    caller_ip: str
    subscription: str
    resource_group: str
    vm_name: str
    scope: str
    start: Ticks
    end: Ticks
    account_name: str
    account_upn_suffix: str
    rows: tuple[RuleRow, ...] = field(default_factory=tuple)
    context: TriageContext | None = None
    authorization: str = ""
    omitted_rows: int = 0

    @property
    def match_count(self) -> int:
        return len(self.rows) + self.omitted_rows

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "AlertKey": self.key,
            "RuleId": self.rule_id,
            "CorrelationId": self.correlation_id,
            "Caller": self.caller,
            "CallerIpAddress": self.caller_ip,
            "Subscription": self.subscription,
            "ResourceGroup": self.resource_group,
            "VirtualMachineName": self.vm_name,
            "ResourceId": self.scope,
            "StartTime": format_datetime(self.start),
            "EndTime": format_datetime(self.end),
            "AccountName": self.account_name,
            "AccountUPNSuffix": self.account_upn_suffix,
            "Rows": [r.to_state() for r in self.rows],
            "Authorization": self.authorization,
            "OmittedRows": self.omitted_rows,
        }
        if self.context is not None:
            data["Context"] = self.context.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        # Records written before the alert identity included Authorization have neither key: "" and 0.
        authorization = data.get("Authorization", "")
        return cls(
            key=data["AlertKey"],
            rule_id=data["RuleId"],
            correlation_id=data["CorrelationId"],
            caller=data["Caller"],
            caller_ip=data["CallerIpAddress"],
            subscription=data["Subscription"],
            resource_group=data["ResourceGroup"],
            vm_name=data["VirtualMachineName"],
            scope=data["ResourceId"],
            start=parse_datetime(data["StartTime"]),
            end=parse_datetime(data["EndTime"]),
            account_name=data["AccountName"],
            account_upn_suffix=data["AccountUPNSuffix"],
            rows=tuple(RuleRow.from_state(r, authorization=authorization, rule_id=data["RuleId"])
                       for r in data["Rows"]),
            context=TriageContext.from_dict(data["Context"]) if data.get("Context") else None,
            authorization=authorization,
            omitted_rows=int(data.get("OmittedRows", 0)),
        )
