"""Microsoft Teams: Adaptive Cards (version 1.4, Action.OpenUrl only) posted to a Workflows webhook.

Log-derived text (caller, VM, locations, insight values...) is placed only in ``TextRun`` elements
of a ``RichTextBlock``, which Adaptive Cards never treat as markdown, so it cannot inject links,
images or formatting; ``TextBlock`` (markdown) holds only our own constant text. Values are also
cleaned of control characters, length-capped, and ``://`` / ``<at>`` are broken with a zero-width
space so that clients do not autolink or mention. Cards stay under the Teams message limit: long
match lists are cut with a "+N more" line; more alerts than the digest threshold make one digest card.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import requests

from ..model import Alert, DeliveryEvent, RuleRow
from ..rule import RULE
from ..timestamps import TICKS_PER_DAY, format_datetime
from . import Outcome, OutcomeCallback
from .http import PostResult, WebhookDestination

CARD_VERSION = "1.4"
MAX_MESSAGE_BYTES = 28_000  # Teams rejects larger messages with 413
TARGET_BYTES = 26_000  # margin for the service's own envelope
MAX_VALUE_CHARS = 256
USER_INSIGHT_KEYS = ("BlastRadius", "IsDormantAccount", "IsNewAccount", "IsLocalAdmin", "AccountDisplayName")
PORTAL = "https://portal.azure.com/#resource"
_SCOPE = re.compile(r"^/subscriptions/[0-9A-Za-z-]+/resourceGroups/[-\w.()]+/providers/Microsoft\.Compute/"
                    r"virtualMachines/[-\w.]+$", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")
_ZWSP = "\u200b"


def clean(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """Log-derived text made safe to show: no controls or bidi overrides, capped, no autolinks/mentions."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = _CONTROL.sub(" ", text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = re.sub(r"(?i)<(/?at)", "<" + _ZWSP + r"\1", text)
    text = text.replace("://", ":" + _ZWSP + "//")
    return re.sub(r"(?i)\bwww\.", "www" + _ZWSP + ".", text)


def _run(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextRun", "text": text, **style}


def _rich(*runs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "RichTextBlock", "inlines": list(runs), **extra}


def _label(text: str) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "weight": "Bolder", "wrap": True, "isSubtle": True}


def _fact(label: str, value: str, *, mono: bool = False) -> dict[str, Any]:
    """A label/value pair as two columns; the value is a TextRun (never markdown)."""
    style: dict[str, Any] = {"fontType": "Monospace"} if mono else {}
    return {"type": "ColumnSet", "spacing": "None", "columns": [
        {"type": "Column", "width": "auto", "items": [_label(label)]},
        {"type": "Column", "width": "stretch", "items": [_rich(_run(clean(value) or "—", **style))]},
    ]}


def _true_insights(insights: Any) -> list[str]:
    if not isinstance(insights, dict):
        return []
    return [str(k) for k, v in insights.items() if v in ("True", True)]


def _user_insights(insights: Any) -> list[str]:
    if not isinstance(insights, dict):
        return []
    return [f"{k}: {insights[k]}" for k in USER_INSIGHT_KEYS if k in insights and insights[k] not in ("", None)]


def _match_block(row: RuleRow) -> dict[str, Any]:
    runs = [_run(format_datetime(row.ueba_time)[:19].replace("T", " ") + " UTC  ", weight="Bolder"),
            _run(clean(row.ueba_action_type) or "—"), _run("  from  ", isSubtle=True),
            _run(clean(row.ueba_source_location) or "—")]
    items: list[dict[str, Any]] = [_rich(*runs)]
    flags = _true_insights(row.ueba_activity_insights)
    if flags:
        items.append(_rich(_run("Insights: ", isSubtle=True), _run(clean(", ".join(flags), 600))))
    user = _user_insights(row.ueba_users_insights)
    if user:
        items.append(_rich(_run("User: ", isSubtle=True), _run(clean(" · ".join(user), 400))))
    return {"type": "Container", "separator": True, "spacing": "Small", "items": items}


def portal_links(alert: Alert) -> list[dict[str, Any]]:
    """Buttons to the VM and its activity log; omitted when the scope is not a well-formed VM id."""
    if not _SCOPE.match(alert.scope):
        return []
    resource = quote(alert.scope, safe="/")
    return [
        {"type": "Action.OpenUrl", "title": "Open VM in Azure portal", "url": f"{PORTAL}{resource}/overview"},
        {"type": "Action.OpenUrl", "title": "Activity log of the VM", "url": f"{PORTAL}{resource}/eventlogs"},
    ]


def allowlist_command(alert: Alert, *, table_endpoint: str = "") -> str:
    """The exact command that suppresses this case (values shell-quoted: they come from logs).

    With the deployment's table endpoint it writes to the production allowlist (Azure credentials).
    """
    entry_id = "rc-" + re.sub(r"[^A-Za-z0-9]", "", alert.correlation_id)[:12].lower()
    expires = format_datetime(alert.start + 30 * TICKS_PER_DAY)[:19] + "Z"
    parts = ["python", "-m", "detector", "allowlist", "add", "--id", entry_id or "rc-entry",
             "--reason", "<why this is known-good>",
             "--when", "caller", "equals", alert.caller,
             "--when", "vm_name", "equals", alert.vm_name,
             "--expires", expires]
    if table_endpoint:
        parts[5:5] = ["--table-endpoint", table_endpoint]
    return " ".join(shlex.quote(p) for p in parts)


def _envelope(card: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


def _size(payload: dict[str, Any]) -> int:
    return len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _card(body: list[dict[str, Any]], actions: list[dict[str, Any]]) -> dict[str, Any]:
    card: dict[str, Any] = {"type": "AdaptiveCard", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                            "version": CARD_VERSION, "body": body, "msteams": {"width": "Full"}}
    if actions:
        card["actions"] = actions
    return card


def _header(title: str) -> dict[str, Any]:
    return {"type": "Container", "style": "attention", "bleed": True, "items": [
        {"type": "TextBlock", "text": f"{RULE.severity} severity · Microsoft Sentinel rule port", "size": "Small",
         "weight": "Bolder", "color": "Attention", "wrap": True},
        {"type": "TextBlock", "text": title, "size": "Medium", "weight": "Bolder", "wrap": True},
    ]}


# Title of a message that brings new evidence for an alert already sent (never a copy of the first message).
UPDATE_TITLE = "New evidence"


def build_alert_card(alert: Alert, *, max_matches: int | None = None, table_endpoint: str = "",
                     event: DeliveryEvent = "alert") -> dict[str, Any]:
    """The Teams message (envelope included) for one alert, under the size limit."""
    limit = len(alert.rows) if max_matches is None else max_matches
    while True:
        payload = _envelope(_alert_card(alert, limit, table_endpoint, event))
        if _size(payload) <= TARGET_BYTES or limit == 0:
            return payload
        limit = max(0, min(limit - 1, limit // 2 if limit > 8 else limit - 1))


def _alert_card(alert: Alert, shown: int, table_endpoint: str, event: DeliveryEvent) -> dict[str, Any]:
    rows = alert.rows[:shown]
    body: list[dict[str, Any]] = [
        _header(f"{UPDATE_TITLE}: {RULE.name}" if event == "update" else RULE.name),
        _rich(_run(clean(alert.caller) or "(no caller)", weight="Bolder"), _run(" ran a VM Run Command on "),
              _run(clean(alert.vm_name) or "(unknown VM)", weight="Bolder"),
              _run(f" within a suspicious sign-in window ({alert.match_count} UEBA match"
                   f"{'es' if alert.match_count != 1 else ''})."), spacing="Medium"),
        {"type": "Container", "spacing": "Medium", "items": [
            _fact("VM", alert.vm_name), _fact("Subscription", alert.subscription),
            _fact("Resource group", alert.resource_group), _fact("Caller", alert.caller),
            _fact("Caller IP", alert.caller_ip),
            _fact("Started", format_datetime(alert.start)[:19].replace("T", " ") + " UTC"),
            _fact("Ended", format_datetime(alert.end)[:19].replace("T", " ") + " UTC"),
            _fact("Correlation id", alert.correlation_id, mono=True),
        ]},
        {"type": "TextBlock", "text": "Suspicious sign-ins (UEBA)", "weight": "Bolder", "spacing": "Medium",
         "wrap": True},
    ]
    body += [_match_block(r) for r in rows]
    hidden = alert.match_count - len(rows)
    if hidden:
        body.append({"type": "TextBlock", "text": f"+{hidden} more UEBA match{'es' if hidden != 1 else ''} "
                     "(see the Logic App payload or the detector's state)", "isSubtle": True, "wrap": True})
    body += [
        {"type": "TextBlock", "text": f"MITRE ATT&CK: {', '.join(RULE.tactics)} · {', '.join(RULE.techniques)}",
         "isSubtle": True, "wrap": True, "spacing": "Medium"},
        {"type": "TextBlock", "text": "Known-good? Suppress this case with:", "weight": "Bolder", "wrap": True,
         "spacing": "Medium"},
        _rich(_run(clean(allowlist_command(alert, table_endpoint=table_endpoint), 2000), fontType="Monospace",
                   size="Small")),
    ]
    return _card(body, portal_links(alert))


def build_digest_card(alerts: Sequence[Alert], *, event: DeliveryEvent = "alert") -> dict[str, Any]:
    """One message standing for many alerts (a flood would be throttled and unreadable)."""
    shown = len(alerts)
    while True:
        payload = _envelope(_digest_card(alerts, shown, event))
        if _size(payload) <= TARGET_BYTES or shown == 0:
            return payload
        shown = shown // 2 if shown > 8 else shown - 1


def _digest_card(alerts: Sequence[Alert], shown: int, event: DeliveryEvent) -> dict[str, Any]:
    prefix = f"{UPDATE_TITLE} for " if event == "update" else ""
    body: list[dict[str, Any]] = [
        _header(f"{prefix}{len(alerts)} alerts: {RULE.name}"),
        {"type": "TextBlock", "text": "Too many alerts in one run for one card each. Every alert is in the Logic App "
         "payload and the detector's state.", "wrap": True, "spacing": "Medium"},
    ]
    for alert in alerts[:shown]:
        body.append({"type": "Container", "separator": True, "spacing": "Small", "items": [_rich(
            _run(format_datetime(alert.start)[:16].replace("T", " ") + "  ", weight="Bolder"),
            _run(clean(alert.caller, 120)), _run("  on  ", isSubtle=True), _run(clean(alert.vm_name, 120)),
            _run(f"  ({alert.match_count} UEBA)", isSubtle=True))]})
    if shown < len(alerts):
        body.append({"type": "TextBlock", "text": f"+{len(alerts) - shown} more alerts", "isSubtle": True,
                     "wrap": True})
    return _card(body, [])


def is_legacy_throttle(status: int | None, body: str) -> bool:
    """Old connectors answered 200 with a 429 text in the body instead of a 429 status."""
    return status == 200 and ("429" in body or "too many requests" in body.lower())


class TeamsDestination(WebhookDestination):
    """A Teams Workflows webhook. ``url`` is a secret and is never shown; ``id`` is."""

    def __init__(self, dest_id: str, url: str, *, session: requests.Session | None = None,
                 digest_threshold: int = 50, timeout: float = 10.0, max_seconds: float = 60.0,
                 table_endpoint: str = "") -> None:
        super().__init__(dest_id, url, session=session, timeout=timeout, max_seconds=max_seconds)
        self.digest_threshold = digest_threshold
        self.table_endpoint = table_endpoint  # not a secret: named in the card's allowlist command

    def _outcome(self, result: PostResult) -> Outcome:
        if result.ok and is_legacy_throttle(result.status, result.body):
            return Outcome(False, f"{self._id}: throttled (HTTP 200 with a 429 text); retried by a later run")
        return super()._outcome(result)

    def deliver(self, alerts: Sequence[Alert], *, event: DeliveryEvent = "alert",
                on_outcome: OutcomeCallback | None = None) -> list[Outcome]:
        if len(alerts) > self.digest_threshold:
            outcome = self._post(build_digest_card(alerts, event=event))
            if on_outcome is not None:
                for index in range(len(alerts)):
                    on_outcome(index, outcome)
            return [outcome] * len(alerts)
        return self._post_each(alerts, lambda a: build_alert_card(a, table_endpoint=self.table_endpoint, event=event),
                               on_outcome)
