"""A rule as data, and the seed rule: Sentinel's "Azure VM Run Command operation executed during suspicious login window".

A :class:`Rule` carries everything specific to one rule (in the spirit of panther-analysis: metadata,
small pure functions, and its own tests in tests/test_rules.py): identity and metadata, its KQL text,
the AzureActivity row filter (operations and Authorization terms, which the pushdown query and the
file prefilter are built from), how the machine name is taken from the scope, and how its alert is
titled. The BehaviorAnalytics half, the join and the window are the seed's and shared by every rule.

Upstream of the seed: Azure-Sentinel ``Detections/MultipleDataSources/RunCommandUEBABreach.yaml``,
version 1.0.8. ``QUERY`` is its KQL verbatim; ``detector.correlate`` is its Python port, and
``python -m detector parity`` sends a rule's query itself to a workspace to prove they agree.
The extended rules (not Sentinel's) are in detector/rules.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from . import kql
from .model import RULE_COLUMNS, SEED_RULE_ID
from .window import (
    DEFAULT_FREQUENCY_HOURS,
    DEFAULT_PERIOD_HOURS,
    SEED_SELECTION,
    UEBA_EVENT_SOURCE,
    UEBA_INSIGHT,
    UEBA_INSIGHT_VALUE,
    ActivitySelection,
)

[RUN_COMMAND_OPERATION] = SEED_SELECTION.operations
[AUTHORIZATION_TERM] = SEED_SELECTION.authorization_terms
SUCCESS_STATUSES: tuple[str, ...] = ("Success", "Succeeded")
WINDOW_BEFORE_HOURS = 1
WINDOW_AFTER_HOURS = 6

__all__ = ["AUTHORIZATION_TERM", "QUERY", "RULE", "RUN_COMMAND_OPERATION", "SUCCESS_STATUSES", "UEBA_EVENT_SOURCE",
           "UEBA_INSIGHT", "UEBA_INSIGHT_VALUE", "WINDOW_AFTER_HOURS", "WINDOW_BEFORE_HOURS", "Origin", "Rule",
           "selection_of"]

Origin = Literal["sentinel", "extended"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One scheduled analytics rule: metadata, its KQL, and the small pure functions the port needs.

    ``operations`` are matched with ``=~`` (``in~`` when several) on ``OperationNameValue``;
    ``authorization_terms`` with ``has`` (``has_any``) on ``Authorization``; ``machine_segments`` are
    the indexes of ``split(Scope, "/")`` that name the machine, joined with ``/`` (the seed takes
    ``[-1]``). ``needle`` is lower-case text every AzureActivity line the rule can use holds (the file
    prefilter). ``action`` names what the caller did, for titles; ``verb`` says it in a sentence
    (``<caller> <verb> <machine>``, the cards' why-line).
    """

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
    operations: tuple[str, ...]
    authorization_terms: tuple[str, ...]
    machine_segments: tuple[int, ...]
    needle: bytes
    action: str
    verb: str
    origin: Origin = "sentinel"
    columns: tuple[str, ...] = RULE_COLUMNS

    @property
    def selection(self) -> ActivitySelection:
        return ActivitySelection(operations=self.operations, authorization_terms=self.authorization_terms,
                                 needles=(self.needle,))

    @property
    def extended(self) -> bool:
        return self.origin == "extended"

    def matches(self, operation_name: str, authorization: str) -> bool:
        """The rule's row filter: ``where OperationNameValue =~ ... | where Authorization has ...``."""
        return any(kql.equals_ci(operation_name, op) for op in self.operations) and any(
            kql.has(authorization, term) for term in self.authorization_terms)

    def machine(self, scope_parts: Sequence[str]) -> str:
        """``VirtualMachineName``: ``tostring(Scope_s[i])`` for each index, joined with ``/``."""
        return "/".join(kql.tostring(kql.at(scope_parts, i)) for i in self.machine_segments)

    def title(self, machine: str, caller: str) -> str:
        """How an alert of this rule is titled (cards' summaries, the payload's title)."""
        return (f"{self.action} on {machine or ('a machine' if self.extended else 'a VM')} by {caller or 'an unknown caller'} during a "
                "suspicious sign-in window")

    def provenance(self) -> str:
        """One plain sentence saying whose rule this is (every card and payload carries it)."""
        if self.extended:
            return (f"Extended rule {self.id} of this detector, not a Microsoft Sentinel rule: it applies the "
                    "Sentinel rule's sign-in correlation to another way of running code on a machine.")
        return (f"Microsoft Sentinel rule {self.id} (version {self.version}), reproduced by this detector: "
                "no Sentinel incident exists.")


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

RULE = Rule(
    id=SEED_RULE_ID,
    name="Azure VM Run Command operation executed during suspicious login window",
    version="1.0.8",
    description=(
        "Identifies when the Azure Run Command operation is executed by a UserPrincipalName and IP Address "
        "that has resulted in a recent user entity behaviour alert."
    ),
    severity="High",
    query_frequency_hours=DEFAULT_FREQUENCY_HOURS,
    query_period_hours=DEFAULT_PERIOD_HOURS,
    tactics=("LateralMovement", "CredentialAccess"),
    techniques=("T1570", "T1212"),
    query=QUERY,
    operations=(RUN_COMMAND_OPERATION,),
    authorization_terms=(AUTHORIZATION_TERM,),
    machine_segments=(-1,),
    needle=b"runcommand",
    action="Run Command",
    verb="ran a Run Command on",
)


def selection_of(rules: Sequence[Rule]) -> ActivitySelection:
    """What the sources must read for these rules (the union of their row filters)."""
    if not rules:
        raise ValueError("no rule selected")
    selection = rules[0].selection
    for rule in rules[1:]:
        selection = selection.union(rule.selection)
    return selection
