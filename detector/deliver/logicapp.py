"""Logic App (or any SOAR) webhook: versioned JSON described by ``schemas/alert-v2.schema.json``.

Version 2 is what a SOAR needs to open an incident or ticket without a lookup: the event type
(``alert`` / ``update``; ``health`` is reserved), ``detectedAt``/``updatedAt``, tenant and workspace
ids, a title and description, the triage priority beside the rule's severity, links, and entities in
Sentinel's alert entity shape (``$id``, ``Type``; Account with Name/UPNSuffix/AadUserId/DisplayName,
Host with AzureID, IP for the caller and each sign-in IP). Each fact appears once: the rule's 13
columns are the ``runCommand`` block plus each ``signIns`` item.

Version 1 (``schemas/alert-v1.schema.json``) is kept as documentation for consumers migrating;
``schemaVersion`` changes major on any breaking change and consumers switch on it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..model import Alert, DeliveryEvent
from ..rules import by_id
from ..timestamps import TICKS_PER_SECOND, Ticks, format_datetime
from ..triage import assess, closest_match, delay, object_id, plain_insights, proposed_entry, same_ip, why_line
from ..triage import display_name as user_display_name
from . import Outcome, OutcomeCallback
from .http import WebhookDestination, encode_json
from .links import NO_OPTIONS, DeliveryOptions, alert_links

SCHEMA_VERSION = "2.0"
SCHEMA_DIR = Path(__file__).parent / "schemas"
SCHEMA_PATH = SCHEMA_DIR / "alert-v2.schema.json"


def _entities(alert: Alert) -> list[dict[str, Any]]:
    account: dict[str, Any] = {"$id": "1", "Type": "account", "Name": alert.account_name,
                               "UPNSuffix": alert.account_upn_suffix, "FullName": alert.caller}
    oid = object_id(alert)
    if oid:
        account["AadUserId"] = oid
    name = user_display_name(alert)
    if name:
        account["DisplayName"] = name
    entities = [account]
    if alert.scope:
        entities.append({"$id": "2", "Type": "host", "HostName": alert.vm_name, "AzureID": alert.scope})
    addresses = [alert.caller_ip] + [r.ueba_source_ip for r in alert.rows]
    seen: set[str] = set()
    for address in addresses:
        if address and address not in seen:
            seen.add(address)
            entities.append({"$id": str(len(entities) + 1), "Type": "ip", "Address": address})
    return entities


def build_payload(alert: Alert, *, event: DeliveryEvent = "alert", options: DeliveryOptions = NO_OPTIONS,
                  updated_at: Ticks | None = None) -> dict[str, Any]:
    """The alert-v2 payload. ``updated_at``: when an update event's alert changed (default: detection)."""
    priority = assess(alert, priority_resource_groups=options.priority_resource_groups)
    detected = alert.context.detected_at if alert.context else alert.end
    lag = delay(alert)
    context = alert.context
    first = closest_match(alert)
    rule = by_id(alert.rule_id)
    return {
        "schemaVersion": SCHEMA_VERSION,
        "eventType": event,
        "kind": "RunCommandDuringSuspiciousLogin",
        "alertId": alert.key,
        "title": rule.title(alert.vm_name, alert.caller),
        "description": why_line(alert),
        "severity": rule.severity,
        "priority": {"level": priority.level, "label": priority.word, "score": priority.score,
                     "reasons": list(priority.reasons)},
        "detectedAt": format_datetime(detected),
        "updatedAt": format_datetime(updated_at if updated_at is not None else detected),
        "detectionDelaySeconds": lag // TICKS_PER_SECOND if lag is not None else None,
        "tenantId": options.tenant_id or None,
        "workspaceId": options.workspace_id or None,
        "matchCount": alert.match_count,  # may exceed len(signIns) when the run state capped the list
        "rule": {"id": rule.id, "name": rule.name, "version": rule.version, "severity": rule.severity,
                 "tactics": list(rule.tactics), "techniques": list(rule.techniques), "origin": rule.origin,
                 "provenance": rule.provenance()},
        "runCommand": {"correlationId": alert.correlation_id, "startTime": format_datetime(alert.start),
                       "endTime": format_datetime(alert.end), "caller": alert.caller,
                       "callerIpAddress": alert.caller_ip, "callerRole": context.caller_role if context else "",
                       "subscription": alert.subscription, "resourceGroup": alert.resource_group,
                       "vmName": alert.vm_name, "resourceId": alert.scope},
        "signIns": [{"time": format_datetime(r.ueba_time), "actionType": r.ueba_action_type,
                     "sourceIpLocation": r.ueba_source_location, "sourceIpAddress": r.ueba_source_ip or None,
                     "sameIpAsCaller": same_ip(alert, r), "secondsBeforeCommand": (alert.start - r.ueba_time)
                     // TICKS_PER_SECOND, "closest": r is first, "investigationPriority": r.ueba_investigation_priority,
                     "insights": plain_insights(r.ueba_activity_insights),
                     "activityInsights": r.ueba_activity_insights, "usersInsights": r.ueba_users_insights}
                    for r in alert.rows],
        "context": {
            "otherSignIns": [s.to_dict() for s in context.other_sign_ins] if context else [],
            "otherSignInsTotal": context.other_sign_ins_total if context else 0,
            "otherRunCommands": [r.to_dict() for r in context.other_run_commands] if context else [],
            "otherRunCommandsTotal": context.other_run_commands_total if context else 0,
        },
        "links": alert_links(alert, options).to_dict(),
        "proposedException": proposed_entry(alert),
        "entities": _entities(alert),
    }


def load_schema(version: int = 2) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / f"alert-v{version}.schema.json").read_text(encoding="utf-8"))
    return schema


class LogicAppDestination(WebhookDestination):
    """A Logic App Request trigger (its callback URL carries a secret ``sig``)."""

    def __init__(self, *args: Any, options: DeliveryOptions = NO_OPTIONS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options = options

    def deliver(self, alerts: Sequence[Alert], *, event: DeliveryEvent = "alert",
                on_outcome: OutcomeCallback | None = None) -> list[Outcome]:
        return self._post_each(
            alerts, lambda alert: encode_json(build_payload(alert, event=event, options=self.options)), on_outcome)
