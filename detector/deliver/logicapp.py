"""Logic App (or any SOAR) webhook: versioned JSON described by ``schemas/alert-v1.schema.json``.

Entities follow Sentinel's shapes (Account: Name, UPNSuffix, FullName; IP: Address; the VM as an
Azure resource id). ``schemaVersion`` changes major on any breaking change; consumers switch on it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..model import Alert, DeliveryEvent
from ..rule import RULE
from ..timestamps import format_datetime
from . import Outcome, OutcomeCallback
from .http import WebhookDestination

SCHEMA_VERSION = "1.1"  # 1.1: event (alert | update) and matchCount
SCHEMA_PATH = Path(__file__).parent / "schemas" / "alert-v1.schema.json"


def build_payload(alert: Alert, *, event: DeliveryEvent = "alert") -> dict[str, Any]:
    entities: list[dict[str, Any]] = [
        {"type": "account", "Name": alert.account_name, "UPNSuffix": alert.account_upn_suffix,
         "FullName": alert.caller},
        {"type": "ip", "Address": alert.caller_ip},
    ]
    if alert.scope:
        entities.append({"type": "azure-resource", "ResourceId": alert.scope})
    return {
        "schemaVersion": SCHEMA_VERSION,
        "kind": "RunCommandDuringSuspiciousLogin",
        "event": event,  # "update": new evidence for an alert already sent (same alertId)
        "alertId": alert.key,
        "matchCount": alert.match_count,  # may exceed len(matches) when the run state capped the list
        "rule": {"id": RULE.id, "name": RULE.name, "version": RULE.version, "severity": RULE.severity,
                 "tactics": list(RULE.tactics), "techniques": list(RULE.techniques)},
        "correlationId": alert.correlation_id,
        "startTime": format_datetime(alert.start),
        "endTime": format_datetime(alert.end),
        "vm": {"name": alert.vm_name, "subscription": alert.subscription, "resourceGroup": alert.resource_group,
               "resourceId": alert.scope},
        "caller": alert.caller,
        "callerIpAddress": alert.caller_ip,
        "entities": entities,
        "matches": [{"time": format_datetime(r.ueba_time), "actionType": r.ueba_action_type,
                     "sourceIpLocation": r.ueba_source_location, "activityInsights": r.ueba_activity_insights,
                     "usersInsights": r.ueba_users_insights} for r in alert.rows],
        "rows": [r.to_dict() for r in alert.rows],
    }


def load_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


class LogicAppDestination(WebhookDestination):
    """A Logic App Request trigger (its callback URL carries a secret ``sig``)."""

    def deliver(self, alerts: Sequence[Alert], *, event: DeliveryEvent = "alert",
                on_outcome: OutcomeCallback | None = None) -> list[Outcome]:
        return self._post_each(alerts, lambda alert: build_payload(alert, event=event), on_outcome)
