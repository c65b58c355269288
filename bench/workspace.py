"""Deterministic generator of realistic workspaces for the benchmarks.

``rows(scale)`` yields AzureActivity rows (about 1% Run Command events, three per operation, some
failed; the rest a realistic operation mix) and BehaviorAnalytics rows (several event sources, about 5%
flagged "True"), over 30 days, with caller popularity skewed as in a real tenant (a few busy admins,
a long tail). The same scale always gives the same rows. ``write(scale, folder)`` writes both tables
as JSON Lines and as portal CSV.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from detector.sample.exports import write_jsonl, write_portal_csv
from detector.timestamps import TICKS_PER_DAY, TICKS_PER_SECOND, parse_datetime

AT = parse_datetime("2026-11-20T06:00:00Z")
DAYS = 30
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SUBS = ("8d6a3f2e-1c4b-4e7a-9f0d-2b5c6e8a1d3f", "3b9e7c1a-5d2f-4a8b-b6c0-e4f1a2d3c5b7",
        "5f2e1d0c-9b8a-4766-a5f4-e3d2c1b0a998")
RGS = ("rg-prod-web", "rg-prod-app", "rg-prod-data", "rg-dev", "rg-shared", "rg-batch")
OPERATIONS = (  # (operation, provider kind, weight): a typical administrative mix
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE", "virtualMachines", 12),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/START/ACTION", "virtualMachines", 6),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/DEALLOCATE/ACTION", "virtualMachines", 6),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINESCALESETS/WRITE", "virtualMachineScaleSets", 5),
    ("MICROSOFT.STORAGE/STORAGEACCOUNTS/LISTKEYS/ACTION", "storageAccounts", 10),
    ("MICROSOFT.RESOURCES/DEPLOYMENTS/WRITE", "deployments", 12),
    ("MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/WRITE", "networkSecurityGroups", 8),
    ("MICROSOFT.KEYVAULT/VAULTS/SECRETS/READ", "vaults", 9),
    ("MICROSOFT.AUTHORIZATION/ROLEASSIGNMENTS/WRITE", "roleAssignments", 3),
    ("MICROSOFT.INSIGHTS/DIAGNOSTICSETTINGS/WRITE", "diagnosticSettings", 4),
    ("MICROSOFT.WEB/SITES/WRITE", "sites", 8),
    ("MICROSOFT.SQL/SERVERS/DATABASES/WRITE", "databases", 5),
)
SOURCES = (("Azure AD", 50), ("AzureActivity", 25), ("Security Events", 15), ("Device Logs", 10))
LOCATIONS = ("Seattle, US", "Dublin, IE", "Amsterdam, NL", "Sao Paulo, BR", "Lagos, NG", "Singapore, SG", "Pune, IN")
SCALES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000}


class _Gen:
    def __init__(self, scale: int) -> None:
        self.scale = scale
        self.rng = random.Random(scale)
        n_users = max(50, scale // 500)
        self.users = [f"user{i:05d}@contoso.com" for i in range(n_users)]
        self.weights = [1 / (i + 1) ** 1.1 for i in range(n_users)]  # Zipf-like: few busy callers
        self.start = AT - DAYS * TICKS_PER_DAY

    def guid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def ip(self) -> str:
        r = self.rng
        return f"{r.choice((20, 40, 52, 104, 137))}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"

    def caller(self) -> str:
        return self.rng.choices(self.users, self.weights)[0]

    def time(self) -> int:
        return self.start + self.rng.randrange(DAYS * 86_400 * 1000) * (TICKS_PER_SECOND // 1000)

    def activity_row(self, *, time: int, operation: str, kind: str, caller: str, ip: str, status: str,
                     correlation_id: str, scope: str, evidence: str) -> dict[str, Any]:
        action = operation.title()
        authorization = f'{{\n  "scope": "{scope}",\n  "action": "{action}",\n  "evidence": {evidence}\n}}'
        properties = json.dumps({"eventCategory": "Administrative", "entity": scope, "message": action})
        return {
            "TenantId": TENANT, "SourceSystem": "Azure", "CallerIpAddress": ip, "CategoryValue": "Administrative",
            "CorrelationId": correlation_id, "Authorization": authorization, "Claims": "{}", "Level": "Informational",
            "OperationNameValue": operation, "Properties": properties, "Caller": caller, "EventDataId": self.guid(),
            "EventSubmissionTimestamp": time + 2 * TICKS_PER_SECOND, "OperationId": self.guid(),
            "ResourceGroup": scope.split("/")[4].upper(), "ResourceProviderValue": operation.split("/")[0],
            "ActivityStatusValue": status, "ActivitySubstatusValue": "", "TimeGenerated": time,
            "SubscriptionId": scope.split("/")[2], "OperationName": action, "ActivityStatus": status,
            "Category": "Administrative", "ResourceId": scope.upper(), "ResourceProvider": operation.split("/")[0],
            "Resource": scope.rsplit("/", 1)[-1], "Type": "AzureActivity", "_ResourceId": scope.lower(),
        }

    def scope(self, kind: str) -> str:
        provider = "Microsoft.Compute" if kind.startswith("virtual") else "Microsoft.Other"
        return (f"/subscriptions/{self.rng.choice(SUBS)}/resourceGroups/{self.rng.choice(RGS)}/providers/"
                f"{provider}/{kind}/{kind[:3].lower()}-{self.rng.randrange(1, 300):03d}")

    def evidence(self) -> str:
        return json.dumps({"role": self.rng.choice(("Contributor", "Owner", "Virtual Machine Contributor")),
                           "principalId": self.guid().replace("-", ""), "principalType": "User"})

    def activity(self) -> Iterator[dict[str, Any]]:
        run_command_rows = self.scale // 100
        other = self.scale - run_command_rows
        ops = list(OPERATIONS)
        weights = [w for _, _, w in ops]
        emitted_rc = 0
        for i in range(other):
            if emitted_rc < run_command_rows and i % 99 == 0:
                # One Run Command operation: Started, Accepted (or Rejected), Succeeded (or Failed).
                caller, ip, t = self.caller(), self.ip(), self.time()
                scope, evidence, cid = self.scope("virtualMachines"), self.evidence(), self.guid()
                statuses = self.rng.choice((("Started", "Accepted", "Succeeded"),) * 8 + (
                    ("Started", "Accepted", "Failed"), ("Started", "Rejected"), ("Start", "Accept", "Success")))
                op = self.rng.choice(("MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION",
                                      "Microsoft.Compute/virtualMachines/runCommand/action"))
                for k, status in enumerate(statuses):
                    yield self.activity_row(time=t + k * 20 * TICKS_PER_SECOND, operation=op, kind="virtualMachines",
                                            caller=caller, ip=ip, status=status, correlation_id=cid, scope=scope,
                                            evidence=evidence)
                emitted_rc += len(statuses)
            operation, kind, _ = self.rng.choices(ops, weights)[0]
            yield self.activity_row(time=self.time(), operation=operation, kind=kind, caller=self.caller(),
                                    ip=self.ip(), status=self.rng.choice(("Started", "Succeeded", "Accepted")),
                                    correlation_id=self.guid(), scope=self.scope(kind), evidence=self.evidence())

    def ueba(self) -> Iterator[dict[str, Any]]:
        sources = [s for s, _ in SOURCES]
        weights = [w for _, w in SOURCES]
        for _ in range(self.scale // 5):
            flag = "True" if self.rng.random() < 0.05 else "False"
            user = self.caller()
            yield {
                "TenantId": TENANT, "SourceRecordId": self.guid(), "TimeGenerated": self.time(),
                "ActivityType": "LogOn", "ActionType": self.rng.choice(("Sign-in", "ResourceAccess")),
                "UserName": user.split("@")[0], "UserPrincipalName": user,
                "EventSource": self.rng.choices(sources, weights)[0], "SourceIPAddress": self.ip(),
                "SourceIPLocation": self.rng.choice(LOCATIONS), "EventVendor": "Microsoft",
                "UsersInsights": {"AccountDisplayName": user.split("@")[0], "BlastRadius":
                                  self.rng.choice(("Low", "Medium", "High")), "IsDormantAccount": "False"},
                "DevicesInsights": {}, "ActivityInsights": {
                    "ActionUncommonlyPerformedByUser": flag, "FirstTimeUserConnectedFromCountry": "False",
                    "CountryUncommonlyConnectedFromByUser": flag},
                "InvestigationPriority": 3 if flag == "True" else 0, "NativeTableName": "SigninLogs",
                "Type": "BehaviorAnalytics",
            }


def activity_rows(scale: int) -> Iterator[dict[str, Any]]:
    return _Gen(scale).activity()


def ueba_rows(scale: int) -> Iterator[dict[str, Any]]:
    gen = _Gen(scale)
    gen.rng.seed(scale * 7 + 1)
    return gen.ueba()


def write(scale: int, folder: Path, *, csv: bool = True) -> Path:
    """Write the workspace as JSON Lines (``folder/jsonl``) and portal CSV (``folder/csv``), once."""
    jsonl = folder / "jsonl"
    if not (jsonl / "BehaviorAnalytics.jsonl").exists():
        jsonl.mkdir(parents=True, exist_ok=True)
        write_jsonl(jsonl / "AzureActivity.jsonl", "AzureActivity", activity_rows(scale))
        write_jsonl(jsonl / "BehaviorAnalytics.jsonl", "BehaviorAnalytics", ueba_rows(scale))
    if csv and not (folder / "csv" / "BehaviorAnalytics.csv").exists():
        (folder / "csv").mkdir(parents=True, exist_ok=True)
        write_portal_csv(folder / "csv" / "AzureActivity.csv", "AzureActivity", activity_rows(scale))
        write_portal_csv(folder / "csv" / "BehaviorAnalytics.csv", "BehaviorAnalytics", ueba_rows(scale))
    return jsonl
