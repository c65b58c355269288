"""Health messages about the detector itself: a Teams card unlike any alert card, and a Logic App
payload described by its own versioned schema (``schemas/health-v1.schema.json``).

They go out through the destinations' own ``send`` (same session, retries, time cap and
redaction as alerts). Every text that comes from an error passes through ``redact`` (no ``sig=``,
no query strings) and ``clean`` (no markdown, links or mentions); values sit in ``TextRun``s only.
"""

from __future__ import annotations

from typing import Any

from ..health import EVENT_FAILING, EVENT_NOT_RUN, EVENT_RECOVERED, HealthEvent
from ..model import SEED_RULE_ID
from ..redact import redact
from ..rule import Rule
from ..rules import by_id
from ..timestamps import Ticks, format_datetime
from . import Destination, Outcome
from .http import encode_json
from .logicapp import LogicAppDestination
from .teams import TeamsDestination, adaptive_card, clean, teams_message

SCHEMA_VERSION = "1.0"
KIND = "DetectorHealth"


def _when(value: Ticks | None) -> str:
    return format_datetime(value)[:19].replace("T", " ") + " UTC" if value is not None else "never"


def headline(event: HealthEvent) -> str:
    """One sentence that says it all (the card's title, the payload's ``text``)."""
    if event.kind == EVENT_FAILING:
        stage = event.failure.stage if event.failure is not None else "run"
        return f"Detector failing since {_when(event.since)}: the daily run failed ({stage})"
    if event.kind == EVENT_RECOVERED:
        runs = "run" if event.missed_runs == 1 else "runs"
        return (f"Detector recovered, {event.missed_runs} {runs} missed, the window caught up from "
                f"{_when(event.caught_up_start)} to {_when(event.caught_up_end)}")
    return f"Detector has not completed a run since {_when(event.since)}"


def _safe(text: str, limit: int = 600) -> str:
    return clean(redact(text), limit)


def _fact(label: str, value: str) -> dict[str, Any]:
    return {"type": "ColumnSet", "spacing": "None", "columns": [
        {"type": "Column", "width": "auto", "items": [
            {"type": "TextBlock", "text": label, "weight": "Bolder", "isSubtle": True, "wrap": True}]},
        {"type": "Column", "width": "stretch", "items": [
            {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": _safe(value) or "—"}]}]},
    ]}


def _detector_rule() -> Rule:
    # The detector's health is one state for every rule it runs, keyed (like its watermark) by the seed
    # rule's id: health messages name the seed rule, as they did before there were several rules.
    return by_id(SEED_RULE_ID)


def build_health_card(event: HealthEvent) -> dict[str, Any]:
    """The Teams message for a health event: a 'good' or 'warning' banner that says it is not an alert."""
    good = event.kind == EVENT_RECOVERED
    status = {EVENT_FAILING: "failing", EVENT_RECOVERED: "recovered", EVENT_NOT_RUN: "not running"}[event.kind]
    facts = [_fact("Rule", _detector_rule().name), _fact("Status", status)]
    if event.failure is not None:
        facts += [_fact("What failed", event.failure.stage), _fact("Error code", event.failure.code)]
    if event.kind != EVENT_RECOVERED:
        facts.append(_fact("Since", _when(event.since)))
    facts.append(_fact("Last successful run", _when(event.last_success)))
    if event.kind == EVENT_RECOVERED:
        facts += [_fact("Failed attempts", str(event.failed_runs)), _fact("Runs missed", str(event.missed_runs)),
                  _fact("Window caught up", f"{_when(event.caught_up_start)} to {_when(event.caught_up_end)}")]
    body: list[dict[str, Any]] = [
        {"type": "Container", "style": "good" if good else "warning", "bleed": True, "items": [
            {"type": "TextBlock", "text": "Detector health · not a security alert", "size": "Small",
             "weight": "Bolder", "color": "Good" if good else "Warning", "wrap": True},
            {"type": "RichTextBlock", "inlines": [
                {"type": "TextRun", "text": _safe(headline(event)), "size": "Medium", "weight": "Bolder"}]},
        ]},
        {"type": "Container", "spacing": "Medium", "items": facts},
    ]
    if event.failure is not None and event.kind == EVENT_FAILING:
        body += [
            {"type": "TextBlock", "text": "Error", "weight": "Bolder", "wrap": True, "spacing": "Medium"},
            {"type": "RichTextBlock", "inlines": [
                {"type": "TextRun", "text": _safe(event.failure.message) or "—", "fontType": "Monospace",
                 "size": "Small"}]},
            {"type": "TextBlock", "text": "Check first", "weight": "Bolder", "wrap": True, "spacing": "Medium"},
            {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": _safe(event.failure.check_first)}]},
        ]
    elif event.kind == EVENT_NOT_RUN:
        body += [
            {"type": "TextBlock", "text": "Check first", "weight": "Bolder", "wrap": True, "spacing": "Medium"},
            {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": (
                "that the Function App is running and its detector_daily function is enabled, that the last "
                "deployment succeeded, and the app's invocation log in Application Insights; until a run "
                "completes, Run Commands are not being checked")}]},
        ]
    return teams_message(adaptive_card(body, [], summary=_safe(headline(event))))


def build_health_payload(event: HealthEvent) -> dict[str, Any]:
    """The Logic App JSON for a health event (``schemas/health-v1.schema.json``)."""
    failure = event.failure
    caught_up = ({"start": format_datetime(event.caught_up_start), "end": format_datetime(event.caught_up_end)}
                 if event.caught_up_start is not None and event.caught_up_end is not None else None)
    return {
        "schemaVersion": SCHEMA_VERSION,
        "kind": KIND,
        "event": event.kind,
        "messageId": event.id,
        "rule": {"id": _detector_rule().id, "name": _detector_rule().name},
        "text": redact(headline(event)),
        "at": format_datetime(event.at),
        "since": format_datetime(event.since) if event.since is not None else None,
        "lastSuccess": format_datetime(event.last_success) if event.last_success is not None else None,
        "failure": {"stage": failure.stage, "code": redact(failure.code), "message": redact(failure.message),
                    "checkFirst": failure.check_first} if failure is not None else None,
        "failedRuns": event.failed_runs,
        "missedRuns": event.missed_runs,
        "caughtUp": caught_up,
    }


def send_health(destination: Destination, event: HealthEvent) -> Outcome:
    """Post one health message through the destination's own sender (retries, time cap, redaction)."""
    if isinstance(destination, TeamsDestination):
        return destination.send(encode_json(build_health_card(event)))
    if isinstance(destination, LogicAppDestination):
        return destination.send(encode_json(build_health_payload(event)))
    return Outcome(False, f"{destination.id}: this destination type takes no health messages")
