"""Deterministic generator of the embedded sample workspace.

``python -m detector.sample.generate`` rewrites ``detector/sample/workspace/``: AzureActivity as a
portal CSV export (pretty-printed Authorization JSON over several lines), BehaviorAnalytics as a Log
Analytics REST response, and ``expected.json``, the alerts each scenario was built to raise.

Every scenario below is one case the rule must get right; background noise (other operations,
other UEBA sources, unflagged sign-ins) surrounds them. The same seed always gives the same files.
The extended rules' scenarios (detector/rules.py) come last, after the noise, so the seed rule's part
of the sample (its rows, its alerts and their correlation ids) is what it was before they existed;
``expected.json`` lists their alerts apart, under ``extended_alerts``.
"""

from __future__ import annotations

import argparse
import json
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..timestamps import (
    TICKS_PER_HOUR,
    TICKS_PER_MINUTE,
    TICKS_PER_SECOND,
    Ticks,
    format_datetime,
    parse_datetime,
)
from .exports import write_portal_csv, write_rest_json

SAMPLE_DIR = Path(__file__).parent / "workspace"
SAMPLE_AT = "2026-11-20T06:00:00Z"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
DOMAIN = "contoso.com"
SUB_PROD = "8d6a3f2e-1c4b-4e7a-9f0d-2b5c6e8a1d3f"
SUB_DEV = "3b9e7c1a-5d2f-4a8b-b6c0-e4f1a2d3c5b7"
RUN_COMMAND = "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION"
RUN_COMMAND_MIXED = "Microsoft.Compute/virtualMachines/runCommand/action"
VMSS_RUN_COMMAND = "MICROSOFT.COMPUTE/VIRTUALMACHINESCALESETS/VIRTUALMACHINES/RUNCOMMAND/ACTION"
NEW_STATUSES = ("Started", "Accepted", "Succeeded")
OLD_STATUSES = ("Start", "Accept", "Success")
LOCATIONS = ("Seattle, US", "Dublin, IE", "Amsterdam, NL", "Sao Paulo, BR", "Lagos, NG", "Singapore, SG")
NOISE_OPERATIONS = (
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE", "virtualMachines"),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/START/ACTION", "virtualMachines"),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/DEALLOCATE/ACTION", "virtualMachines"),
    ("MICROSOFT.STORAGE/STORAGEACCOUNTS/LISTKEYS/ACTION", "storageAccounts"),
    ("MICROSOFT.RESOURCES/DEPLOYMENTS/WRITE", "deployments"),
    ("MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/WRITE", "networkSecurityGroups"),
    ("MICROSOFT.KEYVAULT/VAULTS/SECRETS/READ", "vaults"),
)


@dataclass
class Workspace:
    """The generated tables and what they should raise."""

    at: Ticks
    activity: list[dict[str, Any]] = field(default_factory=list)
    ueba: list[dict[str, Any]] = field(default_factory=list)
    expected: list[dict[str, Any]] = field(default_factory=list)
    extended_expected: list[dict[str, Any]] = field(default_factory=list)
    scenarios: list[dict[str, Any]] = field(default_factory=list)


class _Builder:
    def __init__(self, seed: int, at: Ticks) -> None:
        self.rng = random.Random(seed)  # noqa: S311  # nosec B311 - reproducible sample data, not secrets
        self.ws = Workspace(at=at)

    def guid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def ip(self) -> str:
        return f"{self.rng.choice((20, 40, 52, 104, 137, 185))}.{self.rng.randrange(256)}." \
               f"{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"

    def scope(self, sub: str, rg: str, kind: str, name: str) -> str:
        provider = {
            "virtualMachines": "Microsoft.Compute/virtualMachines",
            "virtualMachineScaleSets": "Microsoft.Compute/virtualMachineScaleSets",
            "storageAccounts": "Microsoft.Storage/storageAccounts",
            "deployments": "Microsoft.Resources/deployments",
            "networkSecurityGroups": "Microsoft.Network/networkSecurityGroups",
            "vaults": "Microsoft.KeyVault/vaults",
        }[kind]
        return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{provider}/{name}"

    def activity(self, *, time: Ticks, operation: str, scope: str, action: str, caller: str, ip: str,
                 status: str, correlation_id: str, sub: str, rg: str,
                 evidence: dict[str, str] | None = None) -> None:
        # Every event of one operation carries the same Authorization text (it is grouped on).
        authorization = {"scope": scope, "action": action, "evidence": evidence or self.evidence(sub)}
        status_word = {"Start": "Started", "Accept": "Accepted", "Success": "Succeeded",
                       "Failure": "Failed"}.get(status, status)
        properties = {"eventCategory": "Administrative", "entity": scope, "message": action,
                      "hierarchy": f"{TENANT}/{sub}"}
        self.ws.activity.append({
            "TenantId": TENANT, "SourceSystem": "Azure", "CallerIpAddress": ip,
            "CategoryValue": "Administrative", "CorrelationId": correlation_id,
            # The string column arrives pretty-printed over several lines, as in real exports.
            "Authorization": json.dumps(authorization, indent=2),
            "Authorization_d": authorization,
            "Claims": "{}", "Claims_d": {}, "Level": "Informational",
            "OperationNameValue": operation,
            "Properties": json.dumps(properties), "Properties_d": properties,
            "Caller": caller, "EventDataId": self.guid(),
            "EventSubmissionTimestamp": time + 2 * TICKS_PER_SECOND,
            "HTTPRequest": json.dumps({"clientRequestId": self.guid(), "clientIpAddress": ip, "method": "POST"}),
            "OperationId": self.guid(), "ResourceGroup": rg.upper(),
            "ResourceProviderValue": operation.split("/")[0],
            "ActivityStatusValue": status, "ActivitySubstatusValue": "",
            "Hierarchy": f"{TENANT}/{sub}", "TimeGenerated": time, "SubscriptionId": sub,
            "OperationName": action, "ActivityStatus": status_word, "ActivitySubstatus": "",
            "Category": "Administrative", "ResourceId": scope.upper(),
            "ResourceProvider": operation.split("/")[0].title(), "Resource": scope.rsplit("/", 1)[-1],
            "Type": "AzureActivity", "_ResourceId": scope.lower(),
        })

    def evidence(self, sub: str, role: str = "Contributor") -> dict[str, str]:
        return {"role": role, "roleAssignmentScope": f"/subscriptions/{sub}",
                "roleAssignmentId": self.guid().replace("-", ""),
                "roleDefinitionId": self.guid().replace("-", ""),
                "principalId": self.guid().replace("-", ""), "principalType": "User"}

    def run_command(self, *, caller: str, vm: str, start: Ticks, sub: str = SUB_PROD, rg: str = "rg-prod-web",
                    statuses: tuple[str, ...] = NEW_STATUSES, operation: str = RUN_COMMAND,
                    kind: str = "virtualMachines", ip: str | None = None) -> str:
        correlation_id = self.guid()
        ip = ip or self.ip()
        scope = self.scope(sub, rg, kind, vm)
        action = ("Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommand/action"
                  if kind == "virtualMachineScaleSets" else "Microsoft.Compute/virtualMachines/runCommand/action")
        offsets = (0, 1, 47)
        evidence = self.evidence(sub)
        for status, offset in zip(statuses, offsets, strict=False):
            self.activity(time=start + offset * TICKS_PER_SECOND, operation=operation, scope=scope, action=action,
                          caller=caller, ip=ip, status=status, correlation_id=correlation_id, sub=sub, rg=rg,
                          evidence=evidence)
        return correlation_id

    def operation(self, *, caller: str, operation: str, action: str, scope: str, start: Ticks, sub: str, rg: str,
                  statuses: tuple[str, ...] = NEW_STATUSES) -> str:
        """Any ARM operation as AzureActivity logs it: its statuses under one CorrelationId."""
        correlation_id = self.guid()
        ip = self.ip()
        evidence = self.evidence(sub)
        for status, offset in zip(statuses, (0, 1, 63), strict=False):
            self.activity(time=start + offset * TICKS_PER_SECOND, operation=operation, scope=scope, action=action,
                          caller=caller, ip=ip, status=status, correlation_id=correlation_id, sub=sub, rg=rg,
                          evidence=evidence)
        return correlation_id

    def ueba(self, *, upn: str, time: Ticks, flag: Any = "True", source: str = "Azure AD",
             location: str | None = None, action_type: str = "Sign-in", blast_radius: str = "Medium") -> Ticks:
        user = upn.split("@")[0]
        location = location if location is not None else self.rng.choice(LOCATIONS)
        insights = {
            "ActionUncommonlyPerformedByUser": flag,
            "FirstTimeUserConnectedFromCountry": self.rng.choice(("True", "False")),
            "CountryUncommonlyConnectedFromByUser": "True" if flag == "True" else "False",
            "ActionUncommonlyPerformedAmongPeers": "False",
        }
        users = {"AccountDisplayName": user.replace(".", " ").title(), "AccountDomain": DOMAIN,
                 "AccountObjectID": self.guid(), "BlastRadius": blast_radius, "IsDormantAccount": "False",
                 "IsLocalAdmin": "False", "IsNewAccount": "False", "OnPremisesSID": ""}
        self.ws.ueba.append({
            "TenantId": TENANT, "SourceRecordId": self.guid(), "TimeGenerated": time,
            "TimeProcessed": time + 9 * TICKS_PER_MINUTE, "ActivityType": "LogOn", "ActionType": action_type,
            "UserName": user, "UserPrincipalName": upn, "EventSource": source, "SourceIPAddress": self.ip(),
            "SourceIPLocation": location, "SourceDevice": "", "DestinationIPAddress": "",
            "DestinationIPLocation": "", "DestinationDevice": "", "EventVendor": "Microsoft",
            "EventProductVersion": "", "ActorName": "", "ActorPrincipalName": "", "TargetName": "",
            "TargetPrincipalName": "", "Device": "", "UsersInsights": users, "DevicesInsights": {},
            "ActivityInsights": insights, "InvestigationPriority": 4 if flag == "True" else 0,
            "NativeTableName": "SigninLogs", "SourceSystem": "", "Type": "BehaviorAnalytics",
        })
        return time

    def expect(self, scenario: str, correlation_id: str, caller: str, vm: str, ueba_times: list[Ticks],
               *, false_positive: str | None = None) -> None:
        self.ws.expected.append({
            "scenario": scenario, "correlation_id": correlation_id, "caller": caller, "vm": vm,
            "ueba_times": [format_datetime(t) for t in sorted(ueba_times)],
            "false_positive": false_positive,
        })

    def expect_extended(self, rule_id: str, scenario: str, correlation_id: str, caller: str, vm: str,
                        ueba_times: list[Ticks]) -> None:
        self.ws.extended_expected.append({
            "rule": rule_id, "scenario": scenario, "correlation_id": correlation_id, "caller": caller, "vm": vm,
            "ueba_times": [format_datetime(t) for t in sorted(ueba_times)],
        })

    def note(self, scenario: str, expect_alert: bool, why: str) -> None:
        self.ws.scenarios.append({"scenario": scenario, "alert": expect_alert, "why": why})


def build(seed: int = 20261120, at: str = SAMPLE_AT) -> Workspace:
    """Build the sample workspace in memory."""
    b = _Builder(seed, parse_datetime(at))
    h = TICKS_PER_HOUR
    t0 = b.ws.at - 40 * h  # inside the 2-day period, with room on both sides
    s = TICKS_PER_SECOND

    def upn(name: str) -> str:
        return f"{name}@{DOMAIN}"

    # --- true positives ---------------------------------------------------------------------------
    u = upn("alice.admin")
    t = b.ueba(upn=u, time=t0, location="Lagos, NG", blast_radius="High")
    cid = b.run_command(caller=u, vm="vm-web-01", start=t0 + 2 * h + 13 * s)
    b.expect("suspicious sign-in then run command", cid, u, "vm-web-01", [t])
    b.note("suspicious sign-in then run command", True, "Run Command 2h after a flagged sign-in")

    u = upn("bob.ops")
    t = b.ueba(upn=u, time=t0 + 3 * h)
    cid = b.run_command(caller=u, vm="vm-app-02", start=t0 + 2 * h, rg="rg-prod-app")
    b.expect("run command exactly 1h before the sign-in", cid, u, "vm-app-02", [t])
    b.note("run command exactly 1h before the sign-in", True, "between is inclusive at -1h")

    u = upn("dana.sre")
    b.ueba(upn=u, time=t0 + 4 * h)
    b.run_command(caller=u, vm="vm-app-03", start=t0 + 3 * h - 1 * s, rg="rg-prod-app")
    b.note("run command 1s more than 1h before the sign-in", False, "outside the window by one second")

    u = upn("erin.cloud")
    t = b.ueba(upn=u, time=t0 + 5 * h)
    cid = b.run_command(caller=u, vm="vm-db-01", start=t0 + 11 * h, rg="rg-prod-data")
    b.expect("run command exactly 6h after the sign-in", cid, u, "vm-db-01", [t])
    b.note("run command exactly 6h after the sign-in", True, "between is inclusive at +6h")

    u = upn("frank.dev")
    b.ueba(upn=u, time=t0 + 5 * h)
    b.run_command(caller=u, vm="vm-db-02", start=t0 + 11 * h + 1 * s, rg="rg-prod-data")
    b.note("run command 6h and 1s after the sign-in", False, "outside the window by one second")

    u = upn("grace.lead")
    t1 = b.ueba(upn=u, time=t0 + 6 * h, location="Dublin, IE")
    t2 = b.ueba(upn=u, time=t0 + 8 * h, location="Singapore, SG", action_type="ResourceAccess")
    b.ueba(upn=u, time=t0 + 20 * h, location="Seattle, US")  # too late for this run command
    cid = b.run_command(caller=u, vm="vm-web-02", start=t0 + 9 * h)
    b.expect("several suspicious sign-ins, two in window", cid, u, "vm-web-02", [t1, t2])
    b.note("several suspicious sign-ins, two in window", True, "one alert carrying two UEBA matches")

    u = upn("henry.ops")
    t = b.ueba(upn=u, time=t0 + 10 * h)
    caller = "Henry.Ops@Contoso.com"
    cid = b.run_command(caller=caller, vm="vm-web-03", start=t0 + 10 * h + 30 * TICKS_PER_MINUTE,
                        operation=RUN_COMMAND_MIXED)
    b.expect("caller case differs from the UPN", cid, caller, "vm-web-03", [t])
    b.note("caller case differs from the UPN", True, "join key is lower-cased; operation name is mixed case")

    u = upn("ivan.legacy")
    t = b.ueba(upn=u, time=t0 + 12 * h)
    cid = b.run_command(caller=u, vm="vm-legacy-01", start=t0 + 13 * h, statuses=OLD_STATUSES,
                        sub=SUB_DEV, rg="rg-dev-legacy")
    b.expect("old status vocabulary Start/Accept/Success", cid, u, "vm-legacy-01", [t])
    b.note("old status vocabulary Start/Accept/Success", True, "'Success' counts as success")

    # --- negatives ---------------------------------------------------------------------------------
    u = upn("judy.failed")
    b.ueba(upn=u, time=t0 + 14 * h)
    b.run_command(caller=u, vm="vm-web-04", start=t0 + 15 * h, statuses=("Started", "Accepted", "Failed"))
    b.note("failed run command", False, "no Success/Succeeded status")
    b.run_command(caller=u, vm="vm-web-05", start=t0 + 15 * h + 5 * TICKS_PER_MINUTE, statuses=("Started", "Rejected"))
    b.note("rejected run command", False, "no Success/Succeeded status")

    u = upn("kim.scale")
    kim_time = b.ueba(upn=u, time=t0 + 16 * h)
    kim_cid = b.run_command(caller=u, vm="vmss-batch/virtualMachines/3", start=t0 + 17 * h,
                            operation=VMSS_RUN_COMMAND, kind="virtualMachineScaleSets", rg="rg-prod-batch")
    kim_scale_time = (u, kim_time, kim_cid)
    b.note("run command on a VMSS instance", False, "operation is virtualMachineScaleSets/virtualMachines/runCommand")

    u = upn("leo.other")
    b.ueba(upn=u, time=t0 + 18 * h, source="AzureActivity")
    b.ueba(upn=u, time=t0 + 18 * h + 5 * TICKS_PER_MINUTE, source="azure ad")
    b.run_command(caller=u, vm="vm-web-06", start=t0 + 19 * h)
    b.note("UEBA from another event source", False, "EventSource == 'Azure AD' is case-sensitive")

    u = upn("mia.normal")
    b.ueba(upn=u, time=t0 + 18 * h, flag="False")
    b.ueba(upn=u, time=t0 + 18 * h + 10 * TICKS_PER_MINUTE, flag=True)
    b.run_command(caller=u, vm="vm-web-07", start=t0 + 19 * h)
    b.note("UEBA flag 'False' or JSON true", False,
           "only the string 'True' matches; a JSON boolean is counted as ueba_boolean_flags")

    u = upn("nora.noloc")
    b.ueba(upn=u, time=t0 + 20 * h, location="")
    b.run_command(caller=u, vm="vm-web-08", start=t0 + 21 * h)
    b.note("UEBA without a source location", False, "isnotempty(SourceIPLocation)")

    u = upn("oscar.early")
    b.ueba(upn=u, time=b.ws.at - 49 * h)
    b.run_command(caller=u, vm="vm-web-09", start=b.ws.at - 48 * h - 30 * TICKS_PER_MINUTE)
    b.note("run command before the 2-day period", False, "TimeGenerated < at - 2d")

    u = upn("pat.late")
    b.ueba(upn=u, time=b.ws.at - 1 * h)
    b.run_command(caller=u, vm="vm-web-10", start=b.ws.at + 10 * TICKS_PER_MINUTE)
    b.note("run command after the run time", False, "TimeGenerated >= at")

    # --- the rule documentation's false-positive scenarios (true rule matches, to be allowlisted) ---
    fps = [
        ("maintenance script", "svc.maintenance", "vm-maint-01", "prod-maintenance", SUB_PROD),
        ("admin task via the Azure portal", "portal.admin", "vm-web-11", "rg-prod-web", SUB_PROD),
        ("automated backup job", "backup.operator", "vm-files-01", "backup-vm", SUB_PROD),
        ("patching via Azure Automation", "automation.patching", "vm-patch-01", "rg-prod-app", SUB_PROD),
        ("user-initiated configuration change", "it-support", "vm-cfg-01", "rg-dev-legacy", SUB_DEV),
    ]
    for i, (name, user, vm, rg, sub) in enumerate(fps):
        u = upn(user)
        start = t0 + (22 + 2 * i) * h
        t = b.ueba(upn=u, time=start - 30 * TICKS_PER_MINUTE)
        cid = b.run_command(caller=u, vm=vm, start=start, rg=rg, sub=sub)
        b.expect(f"false positive: {name}", cid, u, vm, [t], false_positive=name)
        b.note(f"false positive: {name}", True, "benign per the rule's documentation; allowlist it")

    # --- background noise ------------------------------------------------------------------------------
    noise_users = [upn(f"user{i:02d}") for i in range(1, 31)]
    weights = [1 / (i + 1) for i in range(len(noise_users))]  # a few busy admins, a long tail
    for _ in range(420):
        caller = b.rng.choices(noise_users, weights)[0]
        operation, kind = b.rng.choice(NOISE_OPERATIONS)
        sub = b.rng.choice((SUB_PROD, SUB_DEV))
        rg = b.rng.choice(("rg-prod-web", "rg-prod-app", "rg-prod-data", "rg-dev-legacy"))
        name = f"{kind[:2].lower()}-{b.rng.randrange(1, 40):02d}"
        time = b.ws.at - b.rng.randrange(1, 55 * 3600) * TICKS_PER_SECOND
        b.activity(time=time, operation=operation, scope=b.scope(sub, rg, kind, name),
                   action=operation.title(), caller=caller, ip=b.ip(), status=b.rng.choice(NEW_STATUSES),
                   correlation_id=b.guid(), sub=sub, rg=rg)
    for i in range(6):  # run commands by people with no suspicious sign-in
        b.run_command(caller=noise_users[i], vm=f"vm-ops-{i:02d}", start=b.ws.at - (5 + 7 * i) * h)
    b.note("run commands by users without a flagged sign-in", False, "no UEBA row to join")
    for _ in range(160):
        user = b.rng.choice(noise_users)
        source = b.rng.choice(("Azure AD", "Azure AD", "AzureActivity", "Security Events"))
        flag = "True" if source != "Azure AD" and b.rng.random() < 0.3 else "False"
        b.ueba(upn=user, time=b.ws.at - b.rng.randrange(1, 55 * 3600) * TICKS_PER_SECOND, flag=flag,
               source=source)

    _extended_scenarios(b, t0, kim_scale_time)
    b.ws.activity.sort(key=lambda r: r["TimeGenerated"])
    b.ws.ueba.sort(key=lambda r: r["TimeGenerated"])
    return b.ws


def _extended_scenarios(b: _Builder, t0: Ticks, kim_scale: tuple[str, Ticks, str]) -> None:
    """Scenarios of the opt-in extended rules (``--rule all``); the seed rule raises none of them."""
    h, m = TICKS_PER_HOUR, TICKS_PER_MINUTE

    def arm(provider: str, path: str, rg: str, sub: str = SUB_PROD) -> str:
        return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{provider}/{path}"

    # The seed's own negative "run command on a VMSS instance" is the scale set rule's positive.
    caller, ueba_time, cid = kim_scale
    b.expect_extended("ext-vmss-run-command", "run command on a VMSS instance", cid, caller, "vmss-batch/3",
                      [ueba_time])

    u = f"quinn.managed@{DOMAIN}"
    t = b.ueba(upn=u, time=t0 + 30 * h, location="Lagos, NG")
    cid = b.operation(caller=u, operation="MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMANDS/WRITE",
                      action="Microsoft.Compute/virtualMachines/runCommands/write",
                      scope=arm("Microsoft.Compute", "virtualMachines/vm-web-12/runCommands/rc-hotfix", "rg-prod-web"),
                      start=t0 + 31 * h, sub=SUB_PROD, rg="rg-prod-web")
    b.expect_extended("ext-vm-managed-run-command", "managed run command created on a VM", cid, u, "vm-web-12", [t])
    b.note("managed run command created on a VM", False, "seed: not its operation; ext-vm-managed-run-command alerts")

    u = f"rita.scale@{DOMAIN}"
    t = b.ueba(upn=u, time=t0 + 31 * h, location="Sao Paulo, BR")
    cid = b.operation(caller=u, operation="Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommands/write",
                      action="Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommands/write",
                      scope=arm("Microsoft.Compute",
                                "virtualMachineScaleSets/vmss-api/virtualMachines/7/runCommands/rc1", "rg-prod-app"),
                      start=t0 + 32 * h, sub=SUB_PROD, rg="rg-prod-app")
    b.expect_extended("ext-vmss-run-command", "managed run command on a VMSS instance", cid, u, "vmss-api/7", [t])
    b.note("managed run command on a VMSS instance", False, "seed: not its operation; ext-vmss-run-command alerts")

    u = f"sam.hybrid@{DOMAIN}"
    t = b.ueba(upn=u, time=t0 + 32 * h, location="Singapore, SG")
    cid = b.operation(caller=u, operation="MICROSOFT.HYBRIDCOMPUTE/MACHINES/RUNCOMMANDS/WRITE",
                      action="Microsoft.HybridCompute/machines/runCommands/write",
                      scope=arm("Microsoft.HybridCompute", "machines/srv-onprem-01/runCommands/collect", "rg-arc"),
                      start=t0 + 33 * h, sub=SUB_PROD, rg="rg-arc")
    b.expect_extended("ext-arc-run-command", "run command on an Arc-enabled server", cid, u, "srv-onprem-01", [t])
    b.note("run command on an Arc-enabled server", False, "seed: not its operation; ext-arc-run-command alerts")

    u = f"tina.ext@{DOMAIN}"
    t = b.ueba(upn=u, time=t0 + 33 * h, location="Amsterdam, NL")
    cid = b.operation(caller=u, operation="MICROSOFT.COMPUTE/VIRTUALMACHINES/EXTENSIONS/WRITE",
                      action="Microsoft.Compute/virtualMachines/extensions/write",
                      scope=arm("Microsoft.Compute", "virtualMachines/vm-app-04/extensions/CustomScriptExtension",
                                "rg-prod-app"),
                      start=t0 + 34 * h, sub=SUB_PROD, rg="rg-prod-app")
    b.expect_extended("ext-vm-extension-write", "custom script extension on a VM", cid, u, "vm-app-04", [t])
    b.note("custom script extension on a VM", False, "seed: not its operation; ext-vm-extension-write alerts")

    u = f"uma.ext@{DOMAIN}"
    t = b.ueba(upn=u, time=t0 + 34 * h, location="Dublin, IE")
    cid = b.operation(caller=u, operation="MICROSOFT.COMPUTE/VIRTUALMACHINESCALESETS/EXTENSIONS/WRITE",
                      action="Microsoft.Compute/virtualMachineScaleSets/extensions/write",
                      scope=arm("Microsoft.Compute", "virtualMachineScaleSets/vmss-batch/extensions/CustomScript",
                                "rg-prod-batch"),
                      start=t0 + 35 * h, sub=SUB_PROD, rg="rg-prod-batch")
    b.expect_extended("ext-vm-extension-write", "custom script extension on a scale set", cid, u, "vmss-batch", [t])
    b.note("custom script extension on a scale set", False, "seed: not its operation; ext-vm-extension-write alerts")

    # Negatives for the extended rules.
    u = f"victor.managed@{DOMAIN}"
    b.ueba(upn=u, time=t0 + 35 * h)
    b.operation(caller=u, operation="MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMANDS/WRITE",
                action="Microsoft.Compute/virtualMachines/runCommands/write",
                scope=arm("Microsoft.Compute", "virtualMachines/vm-web-13/runCommands/rc2", "rg-prod-web"),
                start=t0 + 35 * h + 20 * m, sub=SUB_PROD, rg="rg-prod-web", statuses=("Started", "Failed"))
    b.note("failed managed run command", False, "no Success/Succeeded status")
    u = f"walt.reader@{DOMAIN}"
    b.ueba(upn=u, time=t0 + 36 * h)
    b.operation(caller=u, operation="MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMANDS/READ",
                action="Microsoft.Compute/virtualMachines/runCommands/read",
                scope=arm("Microsoft.Compute", "virtualMachines/vm-web-13/runCommands/rc2", "rg-prod-web"),
                start=t0 + 36 * h + 5 * m, sub=SUB_PROD, rg="rg-prod-web", statuses=("Succeeded",))
    b.operation(caller=u, operation="MICROSOFT.COMPUTE/VIRTUALMACHINES/EXTENSIONS/DELETE",
                action="Microsoft.Compute/virtualMachines/extensions/delete",
                scope=arm("Microsoft.Compute", "virtualMachines/vm-web-13/extensions/CustomScriptExtension",
                          "rg-prod-web"),
                start=t0 + 36 * h + 9 * m, sub=SUB_PROD, rg="rg-prod-web")
    b.note("reading a run command, deleting an extension", False, "not a write that runs code")
    b.operation(caller=f"user01@{DOMAIN}", operation="MICROSOFT.COMPUTE/VIRTUALMACHINES/EXTENSIONS/WRITE",
                action="Microsoft.Compute/virtualMachines/extensions/write",
                scope=arm("Microsoft.Compute", "virtualMachines/vm-ops-01/extensions/AzureMonitorLinuxAgent",
                          "rg-prod-web"),
                start=t0 + 37 * h, sub=SUB_PROD, rg="rg-prod-web")
    b.note("extension write by a user without a flagged sign-in", False, "no UEBA row to join")


def write(ws: Workspace, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_portal_csv(directory / "AzureActivity.csv", "AzureActivity", ws.activity)
    write_rest_json(directory / "BehaviorAnalytics.json", "BehaviorAnalytics", ws.ueba)
    manifest = {"at": format_datetime(ws.at), "alerts": ws.expected, "extended_alerts": ws.extended_expected,
                "scenarios": ws.scenarios}
    (directory / "expected.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the embedded sample workspace.")
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR)
    parser.add_argument("--seed", type=int, default=20261120)
    args = parser.parse_args(argv)
    write(build(args.seed), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
