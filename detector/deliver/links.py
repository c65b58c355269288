"""Where a responder goes next: portal, Log Analytics and Entra links, and the exception request.

Every URL is built from validated parts only: the VM link needs a well-formed VM resource id, the
user links a GUID object id, the Investigate link the workspace's resource id from settings. Values
from logs are percent-encoded and travel only inside the compressed query or the query string.

Investigate opens the Azure portal's Logs blade through its query share-link format
(``.../LogsBlade/resourceId/<workspace>/source/LogsBlade.AnalyticsShareLinkToQuery/q/<gzip+base64
query>/timespan/<start>/<end>``) with a time range that contains the Run Command and every matched
sign-in, so the query finds them whatever the portal's default range.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..model import Alert
from ..settings import Settings
from ..sources.kqltext import datetime_literal, string_literal
from ..timestamps import MAX_TICKS, MIN_TICKS, TICKS_PER_HOUR, format_datetime
from ..triage import object_id, proposed_entry

PORTAL = "https://portal.azure.com/"
ENTRA = "https://entra.microsoft.com/"
DEFENDER = "https://security.microsoft.com/"
VM_SCOPE = re.compile(r"^/subscriptions/[0-9A-Za-z-]+/resourceGroups/[-\w.()]+/providers/Microsoft\.Compute/"
                      r"virtualMachines/[-\w.]+$", re.IGNORECASE)
# The Investigate range: an hour either side of the earliest and latest event the alert names.
MARGIN = TICKS_PER_HOUR
MAX_LINK_CHARS = 4096
"""A longer link is left out (five of them still fit a card under Teams' 28 KB)."""


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """What the deployment tells the card and payload builders (all optional; from settings)."""

    tenant_id: str = ""
    workspace_id: str = ""
    workspace_resource_id: str = ""
    table_endpoint: str = ""
    mention_id: str = ""
    mention_name: str = ""
    exception_url_template: str = ""
    priority_resource_groups: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryOptions:
        return cls(tenant_id=settings.tenant_id, workspace_id=settings.workspace_id,
                   workspace_resource_id=settings.workspace_resource_id, table_endpoint=settings.table_endpoint,
                   mention_id=settings.oncall_mention_id, mention_name=settings.oncall_mention_name,
                   exception_url_template=settings.exception_request_url,
                   priority_resource_groups=settings.priority_resource_groups)


NO_OPTIONS = DeliveryOptions()


@dataclass(frozen=True, slots=True)
class AlertLinks:
    """Each link, or "" when the parts it needs are unknown."""

    vm: str = ""
    investigate: str = ""
    user_entra: str = ""
    user_defender: str = ""
    request_exception: str = ""

    def to_dict(self) -> dict[str, str | None]:
        return {"vm": self.vm or None, "investigate": self.investigate or None, "userEntra": self.user_entra or None,
                "userDefender": self.user_defender or None, "requestException": self.request_exception or None}


def _portal(tenant_id: str) -> str:
    return f"{PORTAL}#@{tenant_id}/" if tenant_id else f"{PORTAL}#"


def investigate_range(alert: Alert) -> tuple[int, int]:
    times = [alert.start, alert.end, *(r.ueba_time for r in alert.rows)]
    return max(min(times) - MARGIN, MIN_TICKS), min(max(times) + MARGIN, MAX_TICKS)  # within Kusto's range


def investigate_query(alert: Alert) -> str:
    """AzureActivity for the CorrelationId, and the caller's BehaviorAnalytics around the event."""
    start, end = investigate_range(alert)
    return "\n".join([
        "union withsource=SourceTable",
        f"    (AzureActivity | where CorrelationId == {string_literal(alert.correlation_id)}),",
        f"    (BehaviorAnalytics | where TimeGenerated between ({datetime_literal(start)} .. {datetime_literal(end)})",
        f"        | where tolower(UserPrincipalName) == tolower({string_literal(alert.caller)}))",
        "| project TimeGenerated, SourceTable, Caller, UserPrincipalName, CallerIpAddress, SourceIPAddress, "
        "SourceIPLocation, OperationNameValue, ActivityStatusValue, ActionType, ActivityInsights, UsersInsights, "
        "InvestigationPriority, Authorization, Properties",
        "| sort by TimeGenerated asc",
    ])


def _compressed(query: str) -> str:
    # mtime=0: the same alert always gives the same link.
    return base64.b64encode(gzip.compress(query.encode("utf-8"), mtime=0)).decode("ascii")


def alert_links(alert: Alert, options: DeliveryOptions) -> AlertLinks:
    portal = _portal(options.tenant_id)
    vm = f"{portal}resource{quote(alert.scope, safe='/')}/overview" if VM_SCOPE.match(alert.scope) else ""
    investigate = ""
    if options.workspace_resource_id:
        start, end = investigate_range(alert)
        timespan = f"{format_datetime(start)[:19]}Z/{format_datetime(end)[:19]}Z"
        investigate = (f"{portal}blade/Microsoft_Azure_Monitoring_Logs/LogsBlade/resourceId/"
                       f"{quote(options.workspace_resource_id, safe='')}/source/LogsBlade.AnalyticsShareLinkToQuery/"
                       f"q/{quote(_compressed(investigate_query(alert)), safe='')}/timespan/"
                       f"{quote(timespan, safe='')}")
    oid = object_id(alert)
    entra = defender = ""
    if oid:
        entra = f"{ENTRA}#view/Microsoft_AAD_UsersAndTenants/UserProfileMenuBlade/~/overview/userId/{oid}"
        defender = f"{DEFENDER}user?aad={oid}&upn={quote(alert.caller, safe='@')}"
        if options.tenant_id:
            defender += f"&tid={options.tenant_id}"
    links = (vm, investigate, entra, defender, exception_request_url(alert, options))
    # A link built from a huge log value (percent-encoded CJK takes 9 bytes a character) would not work
    # (servers refuse such URLs) and would push the card past Teams' limit outside the part that is
    # trimmed to fit: it is left out, like a link whose parts are unknown.
    vm, investigate, entra, defender, request = (url if len(url) <= MAX_LINK_CHARS else "" for url in links)
    return AlertLinks(vm=vm, investigate=investigate, user_entra=entra, user_defender=defender,
                      request_exception=request)


def exception_request_url(alert: Alert, options: DeliveryOptions) -> str:
    """The configured template filled with the proposed entry (percent-encoded JSON) and names."""
    if not options.exception_url_template:
        return ""
    values: dict[str, Any] = {
        "entry": json.dumps(proposed_entry(alert), ensure_ascii=False, separators=(",", ":"), allow_nan=False),
        "alert_id": alert.key, "caller": alert.caller, "vm": alert.vm_name}
    return re.sub(r"{(entry|alert_id|caller|vm)}", lambda m: quote(str(values[m.group(1)]), safe=""),
                  options.exception_url_template)
