"""Triage for an on-call responder: why an alert fired, how urgent it looks, what to do first.

Pure functions over an :class:`Alert` (and, once per run, the correlation's own intermediate results),
used by the Teams card and the Logic App payload alike, so both say the same thing. Nothing here
changes the rule's rows: the rule keeps severity High; the *triage priority* ranks alerts beside it
from corroborating signals the logs carry.

Priority signals (each adds the points shown; documented in README "Delivery"):

* ``same IP`` (2): the Run Command's caller IP equals a matched sign-in's ``SourceIPAddress`` — the
  command likely came from the suspicious session itself (the rule's description promises this
  check; its query never makes it);
* ``UEBA investigation priority`` (1): a matched sign-in has ``InvestigationPriority`` >= 7 (0-10 scale);
* ``blast radius`` (1): ``UsersInsights.BlastRadius`` is High;
* ``first connection from the country`` (1): ``FirstTimeUserConnectedFromCountry`` is "True";
* ``privileged role`` (1): the Authorization evidence names Owner, User Access Administrator or
  Role Based Access Control Administrator (roles that can also grant access);
* ``priority resource group`` (1): the VM's resource group is listed in DETECTOR_PRIORITY_RESOURCE_GROUPS.

3 points or more is P1 (Urgent), 1-2 is P2 (Elevated), none is P3 (Review).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from . import kql
from .correlate import Correlation
from .model import Alert, RuleRow, RunCommandSighting, SignInSighting, TriageContext
from .rules import by_id
from .timestamps import MAX_TICKS, TICKS_PER_DAY, TICKS_PER_SECOND, Ticks, format_datetime

MAX_LISTED = 10  # per context list, so a busy account never bloats the stored alert or the card
HIGH_INVESTIGATION_PRIORITY = 7
PRIVILEGED_ROLES = frozenset({"owner", "user access administrator", "role based access control administrator"})
EXCEPTION_DAYS = 30
PLACEHOLDER_REASON = "<why this is known-good>"

# Plain-English names for the UEBA insight keys (Microsoft's documented ActivityInsights/UsersInsights).
INSIGHT_NAMES: dict[str, str] = {
    "ActionUncommonlyPerformedByUser": "unusual action for this user",
    "ActionUncommonlyPerformedAmongPeers": "unusual action among peers",
    "FirstTimeUserPerformedAction": "first time this user did this",
    "FirstTimeUserConnectedFromCountry": "first sign-in from this country",
    "CountryUncommonlyConnectedFromByUser": "country rarely used by this user",
    "CountryUncommonlyConnectedFromAmongPeers": "country rarely used among peers",
    "FirstTimeUserConnectedViaISP": "first sign-in via this ISP",
    "ISPUncommonlyUsedByUser": "ISP rarely used by this user",
    "ISPUncommonlyUsedAmongPeers": "ISP rarely used among peers",
    "FirstTimeUserUsedApp": "first use of this app",
    "AppUncommonlyUsedByUser": "app rarely used by this user",
    "FirstTimeUserConnectedFromDevice": "first sign-in from this device",
    "DeviceUncommonlyUsedByUser": "device rarely used by this user",
    "BrowserUncommonlyUsedByUser": "browser rarely used by this user",
    "UnusualNumberOfFailedSignInAttempts": "unusual number of failed sign-ins",
}
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True, slots=True)
class Priority:
    level: str  # P1 | P2 | P3
    word: str  # Urgent | Elevated | Review
    score: int
    reasons: tuple[str, ...]


def _is_true(value: Any) -> bool:
    return value == "True" or value is True


def _insights(row: RuleRow) -> dict[str, Any]:
    value = row.ueba_activity_insights
    return value if isinstance(value, dict) else {}


def _users(row: RuleRow) -> dict[str, Any]:
    value = row.ueba_users_insights
    return value if isinstance(value, dict) else {}


def same_ip(alert: Alert, row: RuleRow) -> bool | None:
    """Whether the sign-in came from the Run Command's caller IP; None when either is unknown."""
    if not row.ueba_source_ip or not alert.caller_ip:
        return None
    try:
        return ipaddress.ip_address(row.ueba_source_ip.strip()) == ipaddress.ip_address(alert.caller_ip.strip())
    except ValueError:
        return row.ueba_source_ip.strip().lower() == alert.caller_ip.strip().lower()


def closest_match(alert: Alert) -> RuleRow:
    """The sign-in nearest in time to the command, a same-IP one first (the most telling)."""
    return min(alert.rows, key=lambda r: (same_ip(alert, r) is not True, abs(alert.start - r.ueba_time)))


def display_name(alert: Alert) -> str:
    for row in alert.rows:
        name = _users(row).get("AccountDisplayName")
        if isinstance(name, str) and name.strip():
            return name.strip()
    return ""


def object_id(alert: Alert) -> str:
    """The user's Entra object id from UsersInsights, when it is a well-formed GUID."""
    for row in alert.rows:
        oid = _users(row).get("AccountObjectID")
        if isinstance(oid, str) and _GUID.match(oid.strip()):
            return oid.strip().lower()
    return ""


def duration(ticks: Ticks) -> str:
    """``2 h 10 min``, ``45 min``, ``30 s``, ``3 d 4 h``: short, for a phone."""
    seconds = abs(ticks) // TICKS_PER_SECOND
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def relation(alert: Alert, row: RuleRow) -> str:
    """When the sign-in was relative to the command: ``2 h 10 min before the command``."""
    delta = alert.start - row.ueba_time
    if delta == 0:
        return "at the same time as the command"
    return f"{duration(delta)} {'before' if delta > 0 else 'after'} the command"


def ip_relation(alert: Alert, row: RuleRow) -> str:
    verdict = same_ip(alert, row)
    if verdict is True:
        return f"from the same IP as the command ({alert.caller_ip})"
    if verdict is False:
        return f"from another IP ({row.ueba_source_ip}; the command came from {alert.caller_ip})"
    return f"sign-in IP not recorded (the command came from {alert.caller_ip or 'an unknown IP'})"


def why_line(alert: Alert) -> str:
    """One sentence: who did what where, and how the flagged sign-in relates to it."""
    who = alert.caller or "(no caller)"
    name = display_name(alert)
    if name and name.lower() != who.lower():
        who = f"{name} ({who})"
    where = alert.vm_name or "(unknown VM)"
    if alert.resource_group:
        where += f" in {alert.resource_group}"
    row = closest_match(alert)
    delta = alert.start - row.ueba_time
    when = ("at the same time as" if delta == 0
            else f"{duration(delta)} {'after' if delta > 0 else 'before'}")
    more = alert.match_count - 1
    extra = f" (+{more} more flagged sign-in{'s' if more != 1 else ''})" if more else ""
    return (f"{who} {by_id(alert.rule_id).verb} {where} {when} a flagged sign-in from "
            f"{row.ueba_source_location or 'an unknown place'}{extra}, {ip_relation(alert, row)}.")


def plain_insights(insights: Any) -> list[str]:
    """The insight flags that are true, in plain English (unknown keys keep their name)."""
    if not isinstance(insights, dict):
        return []
    return [INSIGHT_NAMES.get(str(k), str(k)) for k, v in insights.items() if _is_true(v)]


def assess(alert: Alert, *, priority_resource_groups: Iterable[str] = ()) -> Priority:
    """The triage priority (see the module docstring for the signals and their weights)."""
    reasons: list[tuple[str, int]] = []
    if any(same_ip(alert, r) is True for r in alert.rows):
        reasons.append(("the command came from the flagged sign-in's IP", 2))
    top = max((r.ueba_investigation_priority or 0 for r in alert.rows), default=0)
    if top >= HIGH_INVESTIGATION_PRIORITY:
        reasons.append((f"UEBA investigation priority {top}/10", 1))
    if any(str(_users(r).get("BlastRadius", "")).lower() == "high" for r in alert.rows):
        reasons.append(("blast radius High", 1))
    if any(_is_true(_insights(r).get("FirstTimeUserConnectedFromCountry")) for r in alert.rows):
        reasons.append(("first sign-in from this country", 1))
    role = alert.context.caller_role if alert.context else ""
    if role.strip().lower() in PRIVILEGED_ROLES:
        reasons.append((f"privileged role ({role})", 1))
    if alert.resource_group.lower() in {g.lower() for g in priority_resource_groups}:
        reasons.append((f"priority resource group {alert.resource_group}", 1))
    score = sum(points for _, points in reasons)
    level, word = ("P1", "Urgent") if score >= 3 else ("P2", "Elevated") if score else ("P3", "Review")
    return Priority(level, word, score, tuple(text for text, _ in reasons))


def _role(authorization: str) -> str:
    evidence = kql.member(kql.parse_json(authorization), "evidence")
    return kql.tostring(kql.member(evidence, "role"))


def attach_context(alerts: Sequence[Alert], correlation: Correlation, *, detected_at: Ticks) -> list[Alert]:
    """Each alert with its :class:`TriageContext`, from what the correlation already holds."""
    logins_by_user: dict[str, list[SignInSighting]] = {}
    for login in correlation.logins:
        logins_by_user.setdefault(kql.tolower(login.user_principal_name), []).append(
            SignInSighting(login.time, login.action_type, login.source_ip_location, login.source_ip))
    commands_by_caller: dict[str, list[tuple[RunCommandSighting, str]]] = {}
    for rc in correlation.run_commands:
        commands_by_caller.setdefault(kql.tolower(rc.caller), []).append(
            (RunCommandSighting(rc.start, rc.vm_name, rc.resource_group, rc.correlation_id), rc.authorization))
    out = []
    for alert in alerts:
        user = kql.tolower(alert.caller)
        matched = {(r.ueba_time, r.ueba_action_type, r.ueba_source_location) for r in alert.rows}
        others = sorted({s for s in logins_by_user.get(user, [])
                         if (s.time, s.action_type, s.location) not in matched}, key=lambda s: s.time)
        commands = commands_by_caller.get(user, [])
        role = next((_role(auth) for sighting, auth in commands if sighting.correlation_id == alert.correlation_id),
                    "")
        other_commands = sorted({s for s, _ in commands if s.correlation_id != alert.correlation_id},
                                key=lambda s: s.start)
        out.append(replace(alert, context=TriageContext(
            detected_at=detected_at, caller_role=role,
            other_sign_ins=tuple(others[-MAX_LISTED:]), other_sign_ins_total=len(others),
            other_run_commands=tuple(other_commands[-MAX_LISTED:]), other_run_commands_total=len(other_commands))))
    return out


def _ip_range(ip: str) -> str:
    """The caller's /24 (IPv4) or /64 (IPv6), or "" when the text is not an IP address."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ""
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def proposed_entry(alert: Alert) -> dict[str, Any]:
    """A narrow allowlist entry for this case, in the allowlist's JSON shape (reason left to a person).

    Caller + VM, plus the UEBA location when every match shares one (so the same stolen account
    signing in from elsewhere still alerts), else the caller's IP range; expiring 30 days after
    detection.
    """
    conditions: list[dict[str, Any]] = [{"field": "caller", "op": "equals", "value": alert.caller},
                                        {"field": "vm_name", "op": "equals", "value": alert.vm_name}]
    locations = {r.ueba_source_location for r in alert.rows}
    ip_range = _ip_range(alert.caller_ip)
    if len(locations) == 1:
        conditions.append({"field": "ueba_source_location", "op": "equals", "value": locations.pop()})
    elif ip_range:
        conditions.append({"field": "caller_ip", "op": "cidr", "value": ip_range})
    since = alert.context.detected_at if alert.context else alert.start
    entry_id = "rc-" + re.sub(r"[^A-Za-z0-9]", "", alert.correlation_id)[:12].lower()
    return {"id": entry_id if entry_id != "rc-" else "rc-entry", "reason": PLACEHOLDER_REASON,
            "conditions": conditions,
            # Kusto's last instant caps it (an alert in December 9999 would overflow the date).
            "expires_at": format_datetime(min(since + EXCEPTION_DAYS * TICKS_PER_DAY, MAX_TICKS))[:19] + "Z"}


def delay(alert: Alert) -> Ticks | None:
    """From the Run Command's start to its detection."""
    return alert.context.detected_at - alert.start if alert.context else None
