"""Every rule the detector can run: the seed (Sentinel's) and the opt-in extended rules (this detector's own).

The seed watches one operation, ``Microsoft.Compute/virtualMachines/runCommand/action``. A stolen
session can run code on a machine in other ways the seed never sees; each extended rule applies the
seed's BehaviorAnalytics correlation and window, unchanged, to one of them. Every operation name below
is taken from Microsoft's resource provider operations reference (README, "Extended rules").

What AzureActivity cannot tell (and so what these rules cannot):

* the script or command itself (neither for the seed): only that the operation ran;
* an extension's *type*: ``.../extensions/write`` is the same operation for the Custom Script
  Extension, the Run Command handler, monitoring agents and every other extension, and the
  extension's publisher and type are in the request body, which AzureActivity does not keep. The
  extension rule therefore fires on every successful extension write and shows the extension's
  resource name (chosen by whoever deployed it, so no proof of its type);
* whether a managed Run Command's PUT changed the script or only its metadata (both are ``write``).

Selection: ``DETECTOR_RULES`` / ``--rule`` take rule ids (or ``seed``, or ``all``); the default is the
seed alone, so a deployment that sets nothing behaves exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .errors import UsageError
from .rule import QUERY, RULE, Rule
from .window import DEFAULT_FREQUENCY_HOURS, DEFAULT_PERIOD_HOURS

SEED_ALIAS = "seed"
ALL = "all"

# Everything from the seed's final projection on is shared: the join, the window and the columns.
_SHARED_TAIL = QUERY[QUERY.index("| project StartTime, EndTime, Subscription, VirtualMachineName, CorrelationId"):]


def _in(column: str, values: Sequence[str], *, op: str, many: str) -> str:
    quoted = ", ".join(f'"{v}"' for v in values)
    return f"| where {column} {op} {quoted}" if len(values) == 1 else f"| where {column} {many} ({quoted})"


def _machine(segments: Sequence[int]) -> str:
    parts = [f"tostring(Scope_s[{i}])" for i in segments]
    return parts[0] if len(parts) == 1 else 'strcat_delim("/", ' + ", ".join(parts) + ")"


def extended_query(*, isolate: str, operations: Sequence[str], confirm: str, terms: Sequence[str],
                   machine_comment: str, segments: Sequence[int]) -> str:
    """An extended rule's KQL, line for line in the seed's style: only its filters and machine name differ."""
    return "\n".join([
        "AzureActivity",
        f"// {isolate}",
        _in("OperationNameValue", operations, op="=~", many="in~"),
        f"// {confirm}",
        _in("Authorization", terms, op="has", many="has_any"),
        "// Each operation logs Started, then Accepted and Succeeded (or Failed), under one CorrelationId.",
        "| summarize StartTime=min(TimeGenerated), EndTime=max(TimeGenerated), max(CallerIpAddress), "
        "make_list(ActivityStatusValue) by CorrelationId, Authorization, Caller",
        "// Limit to operations that Succeeded",
        '| where list_ActivityStatusValue has_any ("Success", "Succeeded")',
        "// Extract data from the Authorization field",
        "| extend Authorization_d = parse_json(Authorization)",
        "| extend Scope = Authorization_d.scope",
        '| extend Scope_s = split(Scope, "/")',
        "| extend Subscription = tostring(Scope_s[2])",
        f"// {machine_comment}",
        f"| extend VirtualMachineName = {_machine(segments)}",
    ]) + "\n" + _SHARED_TAIL


def _extended(*, id: str, name: str, description: str, severity: str, operations: tuple[str, ...],
              terms: tuple[str, ...], segments: tuple[int, ...], needle: bytes, action: str, verb: str, isolate: str,
              confirm: str, machine_comment: str) -> Rule:
    return Rule(
        id=id, name=name, version="1.0.0", description=description, severity=severity,
        query_frequency_hours=DEFAULT_FREQUENCY_HOURS, query_period_hours=DEFAULT_PERIOD_HOURS,
        # MITRE ATT&CK T1651 "Cloud Administration Command" is running commands through a cloud's VM agent.
        tactics=("Execution", "LateralMovement"), techniques=("T1651",),
        query=extended_query(isolate=isolate, operations=operations, confirm=confirm, terms=terms,
                             machine_comment=machine_comment, segments=segments),
        operations=operations, authorization_terms=terms, machine_segments=segments, needle=needle,
        action=action, verb=verb, origin="extended")


# Scope of each operation, split on "/": ['', 'subscriptions', <sub>, 'resourceGroups', <rg>, 'providers',
# <namespace>, <type>, <name>, <child type>, <child name>, ...]: index 8 is the machine (or scale set).
VM_MANAGED_RUN_COMMAND = _extended(
    id="ext-vm-managed-run-command",
    name="Managed Run Command created or updated on an Azure VM during suspicious login window",
    description=("Identifies when a managed Run Command (virtualMachines/runCommands) is created or updated, "
                 "which runs its script on the VM, by a user with a recent unusual sign-in flagged by UEBA."),
    severity="High",
    operations=("MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMANDS/WRITE",),
    terms=("virtualMachines",),
    segments=(8,),
    needle=b"runcommand",
    action="Managed Run Command",
    verb="created or updated a managed Run Command on",
    isolate="Isolate managed Run Command creates and updates (each one runs its script)",
    confirm="Confirm that the operation impacted a virtual machine",
    machine_comment="The scope is the run command: .../virtualMachines/<vm>/runCommands/<name>",
)

VMSS_RUN_COMMAND = _extended(
    id="ext-vmss-run-command",
    name="Run Command on an Azure scale set instance during suspicious login window",
    description=("Identifies a Run Command (action or managed) on a virtual machine scale set instance by a "
                 "user with a recent unusual sign-in flagged by UEBA."),
    severity="High",
    operations=("MICROSOFT.COMPUTE/VIRTUALMACHINESCALESETS/VIRTUALMACHINES/RUNCOMMAND/ACTION",
                "MICROSOFT.COMPUTE/VIRTUALMACHINESCALESETS/VIRTUALMACHINES/RUNCOMMANDS/WRITE"),
    terms=("virtualMachineScaleSets",),
    segments=(8, 10),
    needle=b"runcommand",
    action="Scale set Run Command",
    verb="ran a Run Command on scale set instance",
    isolate="Isolate Run Commands on scale set instances, invoked or managed",
    confirm="Confirm that the operation impacted a scale set",
    machine_comment="Scale set and instance: .../virtualMachineScaleSets/<set>/virtualMachines/<instance>",
)

ARC_RUN_COMMAND = _extended(
    id="ext-arc-run-command",
    name="Run Command on an Azure Arc-enabled server during suspicious login window",
    description=("Identifies when a Run Command is created or updated on an Azure Arc-enabled server "
                 "(HybridCompute machines/runCommands) by a user with a recent unusual sign-in flagged by UEBA."),
    severity="High",
    operations=("MICROSOFT.HYBRIDCOMPUTE/MACHINES/RUNCOMMANDS/WRITE",),
    terms=("machines",),
    segments=(8,),
    needle=b"runcommand",
    action="Arc Run Command",
    verb="created or updated a Run Command on Arc-enabled server",
    isolate="Isolate Run Commands on Azure Arc-enabled servers",
    confirm="Confirm that the operation impacted an Arc machine",
    machine_comment="The scope is the run command: .../Microsoft.HybridCompute/machines/<machine>/runCommands/<name>",
)

VM_EXTENSION_WRITE = _extended(
    id="ext-vm-extension-write",
    name="VM or scale set extension (such as Custom Script) written during suspicious login window",
    description=("Identifies when an extension is created or updated on a VM, a scale set or a scale set "
                 "instance by a user with a recent unusual sign-in flagged by UEBA. The Custom Script "
                 "Extension runs any script; AzureActivity does not record the extension's type, so every "
                 "extension write is reported."),
    severity="Medium",
    operations=("MICROSOFT.COMPUTE/VIRTUALMACHINES/EXTENSIONS/WRITE",
                "MICROSOFT.COMPUTE/VIRTUALMACHINESCALESETS/EXTENSIONS/WRITE",
                "MICROSOFT.COMPUTE/VIRTUALMACHINESCALESETS/VIRTUALMACHINES/EXTENSIONS/WRITE"),
    terms=("virtualMachines", "virtualMachineScaleSets"),
    segments=(8,),
    needle=b"extensions",
    action="Extension write",
    verb="created or updated an extension (possibly a Custom Script) on",
    isolate="Isolate extension creates and updates (the extension's type is not in the operation name)",
    confirm="Confirm that the operation impacted a virtual machine or a scale set",
    machine_comment="The VM or scale set: .../<virtualMachines|virtualMachineScaleSets>/<name>/...",
)

EXTENDED: tuple[Rule, ...] = (VM_MANAGED_RUN_COMMAND, VMSS_RUN_COMMAND, ARC_RUN_COMMAND, VM_EXTENSION_WRITE)
ALL_RULES: tuple[Rule, ...] = (RULE, *EXTENDED)
_BY_ID = {rule.id: rule for rule in ALL_RULES}


def by_id(rule_id: str) -> Rule:
    """The rule of an alert (``alert.rule_id``). Raises :class:`UsageError` for an id no rule has."""
    rule = _BY_ID.get(rule_id)
    if rule is None:
        raise UsageError(f"unknown rule {rule_id[:80]!r}; known: {', '.join(_BY_ID)}")
    return rule


def select(names: Iterable[str]) -> tuple[Rule, ...]:
    """Rules from ids, ``seed`` or ``all`` (comma lists allowed), in the registry's order; none given: the seed."""
    wanted: set[str] = set()
    for name in names:
        for part in name.split(","):
            part = part.strip()
            if not part:
                continue
            if part.lower() == ALL:
                wanted.update(_BY_ID)
            elif part.lower() == SEED_ALIAS:
                wanted.add(RULE.id)
            else:
                wanted.add(by_id(part).id)
    return tuple(rule for rule in ALL_RULES if rule.id in wanted) or (RULE,)
