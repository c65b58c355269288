"""Small builders for core records, so each test states only what it is about."""

from __future__ import annotations

import json
from typing import Any

from detector.model import ActivityEvent, UebaEvent
from detector.timestamps import TICKS_PER_HOUR, Ticks, parse_datetime

AT = parse_datetime("2026-11-20T06:00:00Z")
T0 = AT - 24 * TICKS_PER_HOUR
H = TICKS_PER_HOUR
SUB = "8d6a3f2e-1c4b-4e7a-9f0d-2b5c6e8a1d3f"
VM_SCOPE = f"/subscriptions/{SUB}/resourceGroups/rg-1/providers/Microsoft.Compute/virtualMachines/vm-1"
RUN_COMMAND = "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION"


def authorization(scope: str = VM_SCOPE, **extra: Any) -> str:
    return json.dumps({"scope": scope, "action": "Microsoft.Compute/virtualMachines/runCommand/action",
                       "evidence": {"role": "Contributor"}, **extra}, indent=2)


def activity(time: Ticks = T0, *, status: str = "Succeeded", caller: str = "alice@contoso.com",
             correlation_id: str = "c-1", operation: str = RUN_COMMAND, auth: str | None = None,
             ip: str = "20.1.2.3") -> ActivityEvent:
    return ActivityEvent(time=time, operation_name=operation, authorization=auth if auth is not None else authorization(),
                         correlation_id=correlation_id, caller=caller, caller_ip=ip, status=status)


def run_command(start: Ticks = T0, *, statuses: tuple[str, ...] = ("Started", "Accepted", "Succeeded"),
                **kwargs: Any) -> list[ActivityEvent]:
    return [activity(start + i * 10_000_000, status=s, **kwargs) for i, s in enumerate(statuses)]


def ueba(time: Ticks = T0, *, upn: str = "alice@contoso.com", source: str = "Azure AD", flag: Any = "True",
         location: str = "Lagos, NG", action_type: str = "Sign-in", insights: Any = None,
         users: Any = None) -> UebaEvent:
    return UebaEvent(time=time, event_source=source, action_type=action_type, user_principal_name=upn,
                     source_ip_location=location,
                     activity_insights=insights if insights is not None else {"ActionUncommonlyPerformedByUser": flag},
                     users_insights=users if users is not None else {"BlastRadius": "High"})
