"""Microsoft Teams: Adaptive Cards (version 1.4) posted to a Workflows webhook, written for a responder
who decides on a phone within 30 seconds.

Layout, top to bottom: the why-line (who ran a Run Command on which VM, how long before/after which
flagged sign-in, from the same IP or not) inside a header coloured by the triage priority; the
priority word and the rule's severity; the optional on-call mention; the flagged sign-ins; first
steps; context the run already read; then a "Details" toggle (``Action.ToggleVisibility``) over
the subscription, correlation id, times, raw insights, more links and the engineers' allowlist
command. At most three buttons sit under the card (Investigate, the VM, Request exception or the
user), all short enough to fit side by side at 360 px.

Safety: log-derived text appears only in ``TextRun`` elements of a ``RichTextBlock``, which Adaptive
Cards never read as markdown; ``TextBlock`` (markdown) holds only our own words (and the mention,
from settings). Values lose control, format (Unicode ``Cf``) and other invisible characters *before*
``://``, ``www.`` and ``<at>`` are broken with a zero-width space, so an invisible character can
never hide a link or mention from the breaker. Messages are serialized once; the size limit is
checked on those bytes, and those bytes are sent.
"""

from __future__ import annotations

import json
import re
import shlex
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import requests

from ..model import Alert, DeliveryEvent, RuleRow
from ..rules import by_id
from ..timestamps import format_datetime
from ..triage import (
    Priority,
    assess,
    closest_match,
    delay,
    duration,
    ip_relation,
    plain_insights,
    proposed_entry,
    relation,
    why_line,
)
from . import Outcome, OutcomeCallback
from .http import PostResult, WebhookDestination, encode_json
from .links import NO_OPTIONS, AlertLinks, DeliveryOptions, alert_links

CARD_VERSION = "1.4"
MAX_MESSAGE_BYTES = 28_000  # Teams rejects larger messages with 413
TARGET_BYTES = 26_000  # margin for the service's own envelope
MAX_VALUE_CHARS = 256
MAX_PRIMARY_ACTIONS = 3
USER_INSIGHT_NAMES = {"BlastRadius": "blast radius", "IsDormantAccount": "dormant account",
                      "IsNewAccount": "new account", "IsLocalAdmin": "local admin"}
# Header colour per triage priority: Teams' container styles whose default text meets 4.5:1 in the
# light and dark host configs (tests/test_cards.py measures it in Chromium).
PRIORITY_STYLE = {"P1": "attention", "P2": "warning", "P3": "accent"}
# Characters that render as nothing (or as a line break) yet would split "://" or "<at>" for the
# breaker: every format (Cf), control, private-use, surrogate, unassigned and line/paragraph
# separator code point, plus the invisible letters and marks Unicode lists as default-ignorable.
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u3164\uffa0\u2800"
                       + "".join(chr(c) for c in range(0xFE00, 0xFE10)))
_ZWSP = "\u200b"
# Values the shell command may show as they are: anything else is not offered as a command. A value
# starting with "-" would be read by argparse as an option ("--when: expected 3 arguments").
_DISPLAYABLE = re.compile(r"^(?!-)[\w.@+\-,:/ ()']{1,256}$")


def _visible(ch: str) -> str:
    if ch in "\t\n\r":
        return " "
    if ch in _INVISIBLE or unicodedata.category(ch) in _REMOVED_CATEGORIES:
        return ""
    if unicodedata.category(ch) == "Zs":
        return " "
    return ch


def clean(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """Log-derived text made safe to show: only visible characters, capped, no autolinks/mentions."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    # Bound the work first (a value can be megabytes); invisible characters are removed before the cap.
    text = "".join(_visible(ch) for ch in text[: limit * 4])
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = re.sub(r"(?i)<(/?at)", "<" + _ZWSP + r"\1", text)
    text = text.replace("://", ":" + _ZWSP + "//")
    return re.sub(r"(?i)\bwww\.", "www" + _ZWSP + ".", text)


def _run(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextRun", "text": text, **style}


def _rich(*runs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "RichTextBlock", "inlines": list(runs), **extra}


def _heading(text: str) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "weight": "Bolder", "wrap": True, "spacing": "Medium"}


def _utc(ticks: int) -> str:
    return format_datetime(ticks)[:19].replace("T", " ") + " UTC"


def _fact(label: str, value: str, *, mono: bool = False) -> dict[str, Any]:
    style: dict[str, Any] = {"fontType": "Monospace"} if mono else {}
    return _rich(_run(label + ": ", weight="Bolder"), _run(clean(value) or "—", **style), spacing="None")


def _open(title: str, url: str) -> dict[str, Any]:
    return {"type": "Action.OpenUrl", "title": title, "url": url}


def _ip_word(alert: Alert, row: RuleRow) -> str:
    text = ip_relation(alert, row)
    return text[0].upper() + text[1:]


def _sign_in_block(alert: Alert, row: RuleRow) -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        _rich(_run(_utc(row.ueba_time), weight="Bolder"), _run(f" · {relation(alert, row)}")),
        _rich(_run(clean(row.ueba_source_location) or "—", weight="Bolder"), _run(" · "),
              _run(clean(row.ueba_action_type) or "—"), spacing="None"),
        _rich(_run(clean(_ip_word(alert, row))), spacing="None"),
    ]
    flags = plain_insights(row.ueba_activity_insights)
    if flags:
        items.append(_rich(_run(clean("; ".join(flags), 600)), spacing="None"))
    return {"type": "Container", "separator": True, "spacing": "Small", "items": items}


def _user_facts(row: RuleRow) -> list[str]:
    insights = row.ueba_users_insights
    if not isinstance(insights, dict):
        return []
    return [f"{name}: {insights[key]}" for key, name in USER_INSIGHT_NAMES.items()
            if key in insights and insights[key] not in ("", None)]


FIRST_STEPS = (
    "1. If the sign-in was not the user's: revoke their sessions and reset their credentials (Entra ID).",
    "2. Find out what ran: AzureActivity does not record the script. On the VM: Linux keeps Run Command "
    "scripts under /var/lib/waagent/run-command/download; Windows in the Downloads folder of the "
    "RunCommandWindows plugin under C:\\Packages\\Plugins (managed Run Commands: the RunCommandHandler "
    "folders beside them). Check the VM's process and sign-in logs too.",
    "3. If the command is not known-good: isolate the VM (Defender for Endpoint, or an NSG that denies all) "
    "and snapshot its disk.",
)


def allowlist_command(alert: Alert, *, table_endpoint: str = "") -> str:
    """The engineers' command that adds the proposed (narrow) entry; values shell-quoted.

    It carries no invisible character (it is pasted into a shell); the reason is a placeholder that
    ``allowlist add`` refuses, so nobody saves an exception without saying why. With the deployment's
    table endpoint it writes to the production allowlist; otherwise the engineer adds ``--state`` or
    ``--table-endpoint`` (``allowlist add`` refuses to guess).
    """
    entry = proposed_entry(alert)
    lines = ["python -m detector allowlist add" + (f" --table-endpoint {shlex.quote(table_endpoint)}"
                                                   if table_endpoint else ""),
             f"--id {shlex.quote(entry['id'])} --reason {shlex.quote(entry['reason'])}"]
    lines += [f"--when {c['field']} {c['op']} {shlex.quote(str(c['value']))}" for c in entry["conditions"]]
    lines.append(f"--expires {entry['expires_at']}")
    return " \\\n  ".join(lines)


def _command_block(alert: Alert, table_endpoint: str) -> list[dict[str, Any]]:
    entry = proposed_entry(alert)
    values = [str(c["value"]) for c in entry["conditions"]]
    if not all(_DISPLAYABLE.match(v) and "://" not in v and "www." not in v.lower() for v in values):
        return [_rich(_run("The values of this case hold characters a card cannot show safely: the proposed "
                           "entry is in the Logic App payload (proposedException).", isSubtle=True))]
    where = "" if table_endpoint else " Add --state DIR or --table-endpoint URL."
    return [
        _rich(_run("For engineers: replace the reason, then run" + where, weight="Bolder")),
        _rich(_run(allowlist_command(alert, table_endpoint=table_endpoint), fontType="Monospace", size="Small"),
              spacing="Small"),
    ]


def _details(alert: Alert, rows: Sequence[RuleRow], links: AlertLinks, table_endpoint: str) -> dict[str, Any]:
    rule = by_id(alert.rule_id)
    role = alert.context.caller_role if alert.context else ""
    items: list[dict[str, Any]] = [
        _fact("Subscription", alert.subscription), _fact("Resource group", alert.resource_group),
        _fact("VM", alert.vm_name), *([_fact("Resource", alert.scope, mono=True)] if rule.extended else []),
        _fact("Caller IP", alert.caller_ip), _fact("Caller role", role),
        _fact("Correlation id", alert.correlation_id, mono=True),
        _fact("Started", _utc(alert.start)), _fact("Ended", _utc(alert.end)),
        _rich(_run(f"Rule: {rule.name} ({rule.severity}); MITRE {', '.join(rule.tactics)}, "
                   f"{', '.join(rule.techniques)}. {rule.provenance()}", isSubtle=True), spacing="Small"),
    ]
    for row in rows:
        raw = [*plain_insights(row.ueba_activity_insights), *_user_facts(row)]
        if row.ueba_investigation_priority is not None:
            raw.append(f"investigation priority {row.ueba_investigation_priority}/10")
        if raw:
            items.append(_rich(_run(_utc(row.ueba_time) + ": ", weight="Bolder"),
                               _run(clean("; ".join(raw), 600)), spacing="Small"))
    more = [_open(title, url) for title, url in (("User in Entra ID", links.user_entra),
                                                 ("User in Defender", links.user_defender)) if url]
    if more:
        items.append({"type": "ActionSet", "actions": more})
    items += _command_block(alert, table_endpoint)
    return {"type": "Container", "id": "details", "isVisible": False, "spacing": "Small", "items": items}


def _context_block(alert: Alert) -> list[dict[str, Any]]:
    context = alert.context
    if context is None:
        return []
    lag = delay(alert)
    items: list[dict[str, Any]] = [_rich(
        _run("Detected ", isSubtle=False), _run(_utc(context.detected_at), weight="Bolder"),
        _run(f", {duration(lag or 0)} after the command." if lag is not None and lag >= 0 else "."))]
    if context.other_sign_ins_total:
        latest = context.other_sign_ins[-1]
        items.append(_rich(_run(f"Other flagged sign-ins of this user in the period: {context.other_sign_ins_total}"
                                " (latest "), _run(_utc(latest.time)), _run(" from "),
                           _run(clean(latest.location) or "—"), _run(")."), spacing="None"))
    else:
        items.append(_rich(_run("No other flagged sign-ins of this user in the period."), spacing="None"))
    if context.other_run_commands_total:
        last = context.other_run_commands[-1]
        items.append(_rich(_run(f"Other Run Commands by this caller in the window: "
                                f"{context.other_run_commands_total} (latest on "), _run(clean(last.vm_name) or "—"),
                           _run(f" at {_utc(last.start)})."), spacing="None"))
    else:
        items.append(_rich(_run("No other Run Command by this caller in the window."), spacing="None"))
    return [{"type": "Container", "spacing": "Medium", "items": items}]


def _header(alert: Alert, priority: Priority, event: DeliveryEvent) -> dict[str, Any]:
    rule = by_id(alert.rule_id)
    label = f"{priority.level} · {priority.word} · triage priority; rule severity {rule.severity}"
    items: list[dict[str, Any]] = [
        _rich(_run(clean(why_line(alert), 700), weight="Bolder")),
        {"type": "TextBlock", "text": label, "wrap": True, "spacing": "Small"},
    ]
    if rule.extended:
        items.append({"type": "TextBlock", "text": f"Extended rule of this detector, not a Microsoft Sentinel rule: "
                      f"{rule.name}.", "wrap": True, "spacing": "Small", "weight": "Bolder"})
    if event == "update":
        items.insert(1, {"type": "TextBlock", "text": "Update: new flagged sign-ins for an alert already sent.",
                         "wrap": True, "weight": "Bolder", "spacing": "Small"})
    return {"type": "Container", "style": PRIORITY_STYLE[priority.level], "bleed": True, "items": items}


def _primary_actions(links: AlertLinks) -> list[dict[str, Any]]:
    candidates = [("Investigate", links.investigate), ("Open VM", links.vm),
                  ("Request exception", links.request_exception), ("User in Entra", links.user_entra)]
    return [_open(title, url) for title, url in candidates if url][:MAX_PRIMARY_ACTIONS]


def _mention(options: DeliveryOptions) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The card's mention line and its ``msteams.entities`` (opt-in: DETECTOR_ONCALL_MENTION_ID)."""
    if not options.mention_id:
        return [], []
    tag = f"<at>{options.mention_name or options.mention_id}</at>"
    return ([{"type": "TextBlock", "text": f"{tag} please triage", "wrap": True, "spacing": "Small"}],
            [{"type": "mention", "text": tag,
              "mentioned": {"id": options.mention_id, "name": options.mention_name or options.mention_id}}])


def adaptive_card(body: list[dict[str, Any]], actions: list[dict[str, Any]], *, summary: str,
          entities: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    msteams: dict[str, Any] = {"width": "Full"}
    if entities:
        msteams["entities"] = entities
    card: dict[str, Any] = {"type": "AdaptiveCard", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                            "version": CARD_VERSION, "fallbackText": summary, "body": body, "msteams": msteams}
    if actions:
        card["actions"] = actions
    return card


def teams_message(card: dict[str, Any]) -> dict[str, Any]:
    """The Workflows webhook message around a card; its summary is what a notification shows."""
    return {"type": "message", "summary": card["fallbackText"], "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


def _fit(build: Callable[[int], dict[str, Any]], count: int) -> tuple[dict[str, Any], bytes]:
    """The message with the most items (``count`` down to none) whose serialized bytes fit the limit.

    Sizes grow with the items shown, so a binary search finds the largest that fits in a few builds.
    With no item the message is sent whatever its size (the webhook's answer then says why).
    """
    payload = teams_message(build(count))
    body = encode_json(payload)
    if len(body) <= TARGET_BYTES or count == 0:
        return payload, body
    best = teams_message(build(0))
    best_body = encode_json(best)
    low, high = 1, count - 1
    while low <= high and len(best_body) <= TARGET_BYTES:
        middle = (low + high) // 2
        payload = teams_message(build(middle))
        body = encode_json(payload)
        if len(body) <= TARGET_BYTES:
            best, best_body = payload, body
            low = middle + 1
        else:
            high = middle - 1
    return best, best_body


def _alert_card(alert: Alert, shown: int, options: DeliveryOptions, event: DeliveryEvent) -> dict[str, Any]:
    priority = assess(alert, priority_resource_groups=options.priority_resource_groups)
    links = alert_links(alert, options)
    first = closest_match(alert)
    rows = sorted(alert.rows[:shown], key=lambda r: r is not first)
    mention_blocks, entities = _mention(options)
    body: list[dict[str, Any]] = [_header(alert, priority, event), *mention_blocks]
    if priority.reasons:
        body.append(_rich(_run("Why this priority: ", weight="Bolder"), _run(clean("; ".join(priority.reasons), 600)),
                          spacing="Small"))
    body.append(_heading("Flagged sign-ins (UEBA)"))
    body += [_sign_in_block(alert, r) for r in rows]
    hidden = alert.match_count - len(rows)
    if hidden:
        body.append({"type": "TextBlock", "text": f"+{hidden} more UEBA match{'es' if hidden != 1 else ''} "
                     "(see Investigate or the Logic App payload)", "isSubtle": True, "wrap": True})
    body.append(_heading("First steps"))
    body += [_rich(_run(step), spacing="Small") for step in FIRST_STEPS]
    body += _context_block(alert)
    body.append({"type": "ActionSet", "spacing": "Medium", "actions": [
        {"type": "Action.ToggleVisibility", "title": "Details", "targetElements": ["details"]}]})
    body.append(_details(alert, rows, links, options.table_endpoint))
    return adaptive_card(body, _primary_actions(links), summary=clean(why_line(alert), 700), entities=entities)


def alert_message(alert: Alert, *, event: DeliveryEvent = "alert",
                  options: DeliveryOptions = NO_OPTIONS) -> tuple[dict[str, Any], bytes]:
    """The Teams message for one alert and the exact bytes to send, under the size limit."""
    return _fit(lambda shown: _alert_card(alert, shown, options, event), len(alert.rows))


def build_alert_card(alert: Alert, *, event: DeliveryEvent = "alert",
                     options: DeliveryOptions = NO_OPTIONS) -> dict[str, Any]:
    return alert_message(alert, event=event, options=options)[0]


def _rules_named(alerts: Sequence[Alert]) -> str:
    rules = [by_id(rule_id) for rule_id in dict.fromkeys(a.rule_id for a in alerts)]
    if len(rules) == 1:
        return rules[0].name + (" (extended rule, not Sentinel's)" if rules[0].extended else "")
    extended = sum(rule.extended for rule in rules)
    return f"{len(rules)} rules" + (f", {extended} of them extended rules, not Sentinel's" if extended else "")


def _digest_card(alerts: Sequence[Alert], shown: int, options: DeliveryOptions, event: DeliveryEvent) -> dict[str, Any]:
    kind = "updated alerts" if event == "update" else "alerts"
    named = _rules_named(alerts)
    body: list[dict[str, Any]] = [
        {"type": "Container", "style": "attention", "bleed": True, "items": [
            {"type": "TextBlock", "text": f"{len(alerts)} {kind}: {named}", "weight": "Bolder", "wrap": True},
            {"type": "TextBlock", "text": "Too many for one card each; grouped by user, times in UTC. Every alert is "
             "in the Logic App payload and the detector's state.", "wrap": True, "spacing": "Small"}]},
    ]
    by_user: dict[str, list[Alert]] = {}
    for alert in alerts[:shown]:
        by_user.setdefault(alert.caller.lower(), []).append(alert)
    for group in by_user.values():
        items: list[dict[str, Any]] = [_rich(_run(clean(group[0].caller, 120) or "(no caller)", weight="Bolder"),
                                             _run(f" · {len(group)} alert{'s' if len(group) != 1 else ''}"))]
        for alert in group:
            priority = assess(alert, priority_resource_groups=options.priority_resource_groups)
            links = alert_links(alert, options)
            runs = [_run(_utc(alert.start)[:16] + " UTC · "), _run(by_id(alert.rule_id).action + " · "),
                    _run(clean(alert.vm_name, 120) or "—"),
                    _run(f" · {priority.level} {priority.word} · ")]
            # The whole line is the link (a Container's selectAction keeps the host's text colours, which
            # meet the contrast checks; a TextRun link takes the client's link colour).
            target = links.investigate or links.vm
            if target:
                runs.append(_run("Investigate →" if links.investigate else "Open VM →", weight="Bolder"))
            line: dict[str, Any] = {"type": "Container", "spacing": "None", "items": [_rich(*runs)]}
            if target:
                line["selectAction"] = _open("Investigate" if links.investigate else "Open VM", target)
            items.append(line)
        body.append({"type": "Container", "separator": True, "spacing": "Small", "items": items})
    if shown < len(alerts):
        body.append({"type": "TextBlock", "text": f"+{len(alerts) - shown} more alerts", "isSubtle": True,
                     "wrap": True})
    return adaptive_card(body, [], summary=f"{len(alerts)} {kind}: {named}")


def digest_message(alerts: Sequence[Alert], *, event: DeliveryEvent = "alert",
                   options: DeliveryOptions = NO_OPTIONS) -> tuple[dict[str, Any], bytes]:
    """One message standing for many alerts (a flood would be throttled and unreadable)."""
    return _fit(lambda shown: _digest_card(alerts, shown, options, event), len(alerts))


def build_digest_card(alerts: Sequence[Alert], *, event: DeliveryEvent = "alert",
                      options: DeliveryOptions = NO_OPTIONS) -> dict[str, Any]:
    return digest_message(alerts, event=event, options=options)[0]


def is_legacy_throttle(status: int | None, body: str) -> bool:
    """Old connectors answered 200 with a 429 text in the body instead of a 429 status."""
    return status == 200 and ("429" in body or "too many requests" in body.lower())


class TeamsDestination(WebhookDestination):
    """A Teams Workflows webhook. ``url`` is a secret and is never shown; ``id`` is."""

    def __init__(self, dest_id: str, url: str, *, session: requests.Session | None = None,
                 digest_threshold: int = 50, timeout: float = 10.0, max_seconds: float = 60.0,
                 options: DeliveryOptions = NO_OPTIONS) -> None:
        super().__init__(dest_id, url, session=session, timeout=timeout, max_seconds=max_seconds)
        self.digest_threshold = digest_threshold
        self.options = options  # no secrets: ids, names and the table endpoint shown on cards

    def _outcome(self, result: PostResult) -> Outcome:
        if result.ok and is_legacy_throttle(result.status, result.body):
            return Outcome(False, f"{self._id}: throttled (HTTP 200 with a 429 text); retried by a later run")
        return super()._outcome(result)

    def deliver(self, alerts: Sequence[Alert], *, event: DeliveryEvent = "alert",
                on_outcome: OutcomeCallback | None = None) -> list[Outcome]:
        if len(alerts) > self.digest_threshold:
            outcome = self.send(digest_message(alerts, event=event, options=self.options)[1])
            if on_outcome is not None:
                for index in range(len(alerts)):
                    on_outcome(index, outcome)
            return [outcome] * len(alerts)
        return self._post_each(alerts, lambda a: alert_message(a, event=event, options=self.options)[1], on_outcome)

