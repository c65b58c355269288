"""The rule as data: Sentinel's "Azure VM Run Command operation executed during suspicious login window".

Upstream: Azure-Sentinel ``Detections/MultipleDataSources/RunCommandUEBABreach.yaml``, version 1.0.8.
``QUERY`` is the rule's KQL verbatim; ``detector.correlate`` is its Python port, and
``python -m detector parity`` sends ``QUERY`` itself to a workspace to prove they agree.
"""

from __future__ import annotations

from dataclasses import dataclass

RUN_COMMAND_OPERATION = "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION"
AUTHORIZATION_TERM = "virtualMachines"
SUCCESS_STATUSES: tuple[str, ...] = ("Success", "Succeeded")
UEBA_EVENT_SOURCE = "Azure AD"
UEBA_INSIGHT = "ActionUncommonlyPerformedByUser"
UEBA_INSIGHT_VALUE = "True"
WINDOW_BEFORE_HOURS = 1
WINDOW_AFTER_HOURS = 6


@dataclass(frozen=True, slots=True)
class RuleDefinition:
    """Metadata of a scheduled analytics rule."""

    id: str
    name: str
    version: str
    description: str
    severity: str
    query_frequency_hours: int
    query_period_hours: int
    tactics: tuple[str, ...]
    techniques: tuple[str, ...]
    query: str


QUERY = (
    'AzureActivity\n'
    '// Isolate run command actions\n'
    '| where OperationNameValue =~ "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION"\n'
    '// Confirm that the operation impacted a virtual machine\n'
    '| where Authorization has "virtualMachines"\n'
    '// Each runcommand operation consists of three events when successful, Started, Accepted (or Rejected), Successful (or Failed).\n'
    '| summarize StartTime=min(TimeGenerated), EndTime=max(TimeGenerated), max(CallerIpAddress), make_list(ActivityStatusValue) by CorrelationId, Authorization, Caller\n'
    '// Limit to Run Command executions that Succeeded\n'
    '| where list_ActivityStatusValue has_any ("Success", "Succeeded")\n'
    '// Extract data from the Authorization field\n'
    '| extend Authorization_d = parse_json(Authorization)\n'
    '| extend Scope = Authorization_d.scope\n'
    '| extend Scope_s = split(Scope, "/")\n'
    '| extend Subscription = tostring(Scope_s[2])\n'
    '| extend VirtualMachineName = tostring(Scope_s[-1])\n'
    '| project StartTime, EndTime, Subscription, VirtualMachineName, CorrelationId, Caller, CallerIpAddress=max_CallerIpAddress\n'
    '// Create a join key using the Caller (UPN)\n'
    '| extend joinkey = tolower(Caller)\n'
    '// Join the Run Command actions to UEBA data\n'
    '| join kind = inner (\n'
    'BehaviorAnalytics\n'
    '// We are specifically interested in unusual logins\n'
    '| where EventSource == "Azure AD" and ActivityInsights.ActionUncommonlyPerformedByUser == "True"\n'
    '| project UEBAEventTime=TimeGenerated, UEBAActionType=ActionType, UserPrincipalName, UEBASourceIPLocation=SourceIPLocation, UEBAActivityInsights=ActivityInsights, UEBAUsersInsights=UsersInsights\n'
    '| where isnotempty(UserPrincipalName) and isnotempty(UEBASourceIPLocation)\n'
    '| extend joinkey = tolower(UserPrincipalName)\n'
    ') on joinkey\n'
    '// Create a window around the UEBA event times, check to see if the Run Command action was performed within them\n'
    '| extend UEBAWindowStart = UEBAEventTime - 1h, UEBAWindowEnd = UEBAEventTime + 6h\n'
    '| where StartTime between (UEBAWindowStart .. UEBAWindowEnd)\n'
    '| project StartTime, EndTime, Subscription, VirtualMachineName, Caller, CallerIpAddress, UEBAEventTime, UEBAActionType, UEBASourceIPLocation, UEBAActivityInsights, UEBAUsersInsights\n'
    '| extend AccountName = tostring(split(Caller, "@")[0]), AccountUPNSuffix = tostring(split(Caller, "@")[1])\n'
)

RULE = RuleDefinition(
    id="11bda520-a965-4654-9a45-d09f372f71aa",
    name="Azure VM Run Command operation executed during suspicious login window",
    version="1.0.8",
    description=(
        "Identifies when the Azure Run Command operation is executed by a UserPrincipalName and IP Address "
        "that has resulted in a recent user entity behaviour alert."
    ),
    severity="High",
    query_frequency_hours=24,
    query_period_hours=48,
    tactics=("LateralMovement", "CredentialAccess"),
    techniques=("T1570", "T1212"),
    query=QUERY,
)
