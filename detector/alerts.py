"""Alerts from the rules' rows: one alert per group of a rule's ``summarize``, and its stable key.

Downstream of the correlation (it takes rows, whichever rule made them) and upstream of the allowlist
and the outbox, which both build on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from .model import SEED_RULE_ID, Alert, RuleRow


def alert_key(correlation_id: str, authorization: str, caller: str, *, rule_id: str = SEED_RULE_ID) -> str:
    """The dedup key of an alert: the rule's id and its own group (CorrelationId, Authorization, Caller), hashed.

    Hashed so the key has a fixed length and no character Table Storage refuses in a RowKey, whatever
    the logs hold; ``v2`` keeps it apart from the keys written before (``legacy_alert_key``). The seed
    rule's keys are the ones every earlier version wrote.
    """
    group = json.dumps([correlation_id, authorization, caller], ensure_ascii=False)
    return f"{rule_id}:v2:{hashlib.sha256(group.encode('utf-8')).hexdigest()[:32]}"


def legacy_alert_key(correlation_id: str, *, rule_id: str = SEED_RULE_ID) -> str:
    """The key versions before the group identity used (rule id + CorrelationId), read on upgrade only."""
    return f"{rule_id}:{correlation_id}"


def build_alerts(rows: Iterable[RuleRow]) -> list[Alert]:
    """One alert per rule and group of its ``summarize`` (CorrelationId, Authorization, Caller), holding its rows."""
    grouped: dict[tuple[str, str, str, str], list[RuleRow]] = {}
    for row in rows:
        grouped.setdefault((row.rule_id, row.correlation_id, row.authorization, row.caller), []).append(row)
    alerts = []
    for (rule_id, correlation_id, authorization, caller), group in grouped.items():
        group.sort(key=lambda r: (r.start, r.ueba_time, r.ueba_action_type, r.ueba_source_location))
        first = group[0]
        alerts.append(Alert(
            key=alert_key(correlation_id, authorization, caller, rule_id=rule_id),
            rule_id=rule_id,
            correlation_id=correlation_id,
            caller=caller,
            caller_ip=first.caller_ip,
            subscription=first.subscription,
            resource_group=first.resource_group,
            vm_name=first.vm_name,
            scope=first.scope,
            start=min(r.start for r in group),
            end=max(r.end for r in group),
            account_name=first.account_name,
            account_upn_suffix=first.account_upn_suffix,
            rows=tuple(group),
            authorization=authorization,
        ))
    alerts.sort(key=lambda a: (a.start, a.caller, a.correlation_id, a.vm_name, a.key))
    return alerts
