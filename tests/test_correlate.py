"""Positive and negative cases for every step of the rule's query."""

from __future__ import annotations

import pytest

from detector.alerts import alert_key, build_alerts
from detector.correlate import correlate, is_run_command, is_suspicious_login, summarize_run_commands
from detector.model import ActivityEvent, UebaEvent
from detector.rule import RULE
from detector.window import Window
from tests.builders import AT, RUN_COMMAND, SUB, T0, VM_SCOPE, H, activity, authorization, run_command, ueba

WINDOW = Window.ending_at(AT)


def rows(activity_events: list[ActivityEvent], ueba_events: list[UebaEvent], window: Window = WINDOW) -> list[dict]:
    return [r.to_dict() for r in correlate(activity_events, ueba_events, window).rows]


# --- where OperationNameValue =~ ... | where Authorization has "virtualMachines" -------------------

@pytest.mark.parametrize(("operation", "auth", "expected"), [
    (RUN_COMMAND, authorization(), True),
    (RUN_COMMAND.lower(), authorization(), True),
    ("Microsoft.Compute/virtualMachines/runCommand/action", authorization(), True),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMANDS/WRITE", authorization(), False),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINESCALESETS/VIRTUALMACHINES/RUNCOMMAND/ACTION", authorization(), False),
    (RUN_COMMAND, authorization("/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/virtualMachineScaleSets/ss",
                                action="Microsoft.Compute/virtualMachineScaleSets/runCommand/action"), False),
    # The action text alone carries the term: the rule looks at the whole Authorization string.
    (RUN_COMMAND, authorization("/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/virtualMachineScaleSets/ss"),
     True),
    (RUN_COMMAND, '{"scope":"/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/VIRTUALMACHINES/x"}', True),
    (RUN_COMMAND, "", False),
    (RUN_COMMAND, "not json but mentions virtualMachines", True),
])
def test_run_command_filter(operation: str, auth: str, expected: bool) -> None:
    assert is_run_command(activity(operation=operation, auth=auth)) is expected


# --- summarize by CorrelationId, Authorization, Caller ---------------------------------------------

def test_summarize_min_max_and_ordinal_ip() -> None:
    events = [activity(T0 + 5, status="Succeeded", ip="10.0.0.10"),
              activity(T0, status="Started", ip="10.0.0.9"),
              activity(T0 + 9, status="Accepted", ip="")]
    [rc] = summarize_run_commands(events, WINDOW)
    assert (rc.start, rc.end, rc.caller_ip) == (T0, T0 + 9, "10.0.0.9")
    assert sorted(rc.statuses) == ["Accepted", "Started", "Succeeded"]


def test_groups_split_on_exact_authorization_and_caller_text() -> None:
    events = [activity(T0, status="Started"), activity(T0 + 1, status="Succeeded", auth=authorization().replace("\n", "\r\n")),
              activity(T0 + 2, status="Succeeded", caller="ALICE@contoso.com")]
    groups = summarize_run_commands(events, WINDOW)
    # The "Started"-only group has no success and is dropped; the other two are separate groups.
    assert sorted(g.caller for g in groups) == ["ALICE@contoso.com", "alice@contoso.com"]
    assert all(g.statuses == ("Succeeded",) for g in groups)


@pytest.mark.parametrize(("statuses", "kept"), [
    (("Started", "Accepted", "Succeeded"), True),
    (("Start", "Accept", "Success"), True),
    (("Started", "Accepted", "Failed"), False),
    (("Started", "Rejected"), False),
    (("Successful",), False),
    (("Started",), False),
])
def test_success_filter(statuses: tuple[str, ...], kept: bool) -> None:
    assert bool(summarize_run_commands(run_command(statuses=statuses), WINDOW)) is kept


@pytest.mark.parametrize(("auth", "subscription", "vm", "rg"), [
    (authorization(), SUB, "vm-1", "rg-1"),
    ("not json, virtualMachines", "", "", ""),
    ('{"action": "x", "note": "virtualMachines"}', "", "", ""),
    ('{"Scope": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/virtualMachines/v"}', "", "", ""),
    ('{"scope": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/virtualMachines/v/"}', "s", "", "r"),
    ('{"scope": "virtualMachines"}', "", "virtualMachines", ""),
    ('{"scope": 7, "x": "virtualMachines"}', "", "7", ""),
])
def test_scope_extraction(auth: str, subscription: str, vm: str, rg: str) -> None:
    [rc] = summarize_run_commands([activity(auth=auth)], WINDOW)
    assert (rc.subscription, rc.vm_name, rc.resource_group) == (subscription, vm, rg)


# --- BehaviorAnalytics filter ---------------------------------------------------------------------

@pytest.mark.parametrize(("event", "expected"), [
    (ueba(), True),
    (ueba(source="azure ad"), False),
    (ueba(source="AzureActivity"), False),
    (ueba(flag="False"), False),
    (ueba(flag="true"), False),
    (ueba(flag=True), False),  # JSON boolean: tostring gives "true", which is not "True"
    (ueba(insights={}), False),
    (ueba(insights="not json"), False),
    (ueba(insights={"actionUncommonlyPerformedByUser": "True"}), False),  # property names are case-sensitive
    (ueba(upn=""), False),
    (ueba(location=""), False),
    (ueba(location=" "), True),
])
def test_suspicious_login_filter(event: UebaEvent, expected: bool) -> None:
    assert is_suspicious_login(event) is expected


def test_boolean_flags_are_counted_not_matched() -> None:
    result = correlate(run_command(T0), [ueba(T0, flag=True)], WINDOW)
    assert result.rows == []
    assert result.stats.ueba_boolean_flags == 1


# --- join and window --------------------------------------------------------------------------------

@pytest.mark.parametrize(("offset", "matched"), [
    (-1 * H, True), (-1 * H - 1, False), (6 * H, True), (6 * H + 1, False), (0, True), (3 * H, True),
])
def test_window_edges_are_inclusive_to_the_tick(offset: int, matched: bool) -> None:
    login = T0
    assert bool(rows(run_command(login + offset), [ueba(login)])) is matched


def test_window_uses_start_time_not_end_time() -> None:
    # Started 2h before the sign-in, succeeded inside the window: StartTime decides, no match.
    events = [activity(T0 - 2 * H, status="Started"), activity(T0, status="Succeeded")]
    assert rows(events, [ueba(T0)]) == []


def test_join_key_ignores_case() -> None:
    result = rows(run_command(caller="Henry.Ops@Contoso.com"), [ueba(upn="henry.ops@CONTOSO.com")])
    assert [r["Caller"] for r in result] == ["Henry.Ops@Contoso.com"]


def test_inner_join_keeps_every_pair() -> None:
    logins = [ueba(T0 - H), ueba(T0, location="Dublin, IE"), ueba(T0, location="Dublin, IE"), ueba(T0 + 7 * H)]
    result = rows(run_command(T0), logins)
    assert [r["UEBASourceIPLocation"] for r in result] == ["Lagos, NG", "Dublin, IE", "Dublin, IE"]


def test_ip_is_never_compared() -> None:
    assert len(rows(run_command(ip="1.1.1.1"), [ueba()])) == 1


def test_no_match_for_other_users() -> None:
    assert rows(run_command(caller="bob@contoso.com"), [ueba(upn="alice@contoso.com")]) == []


# --- projection ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("caller", "name", "suffix"), [
    ("alice@contoso.com", "alice", "contoso.com"),
    ("svc-principal-guid", "svc-principal-guid", ""),
    ("a@b@c", "a", "b"),
    ("@contoso.com", "", "contoso.com"),
])
def test_account_split(caller: str, name: str, suffix: str) -> None:
    [row] = rows(run_command(caller=caller), [ueba(upn=caller)])
    assert (row["AccountName"], row["AccountUPNSuffix"]) == (name, suffix)


def test_row_has_the_thirteen_columns_in_order() -> None:
    [row] = rows(run_command(T0), [ueba(T0)])
    assert list(row) == ["StartTime", "EndTime", "Subscription", "VirtualMachineName", "Caller", "CallerIpAddress",
                         "UEBAEventTime", "UEBAActionType", "UEBASourceIPLocation", "UEBAActivityInsights",
                         "UEBAUsersInsights", "AccountName", "AccountUPNSuffix"]
    assert row["UEBAActivityInsights"] == {"ActionUncommonlyPerformedByUser": "True"}
    assert row["StartTime"] == "2026-11-19T06:00:00Z"
    assert row["EndTime"] == "2026-11-19T06:00:02Z"


# --- query period -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("start", "matched"), [
    (AT - 48 * H, True), (AT - 48 * H - 1, False), (AT - 1, True), (AT, False),
])
def test_period_is_half_open(start: int, matched: bool) -> None:
    events = [activity(start, status="Succeeded")]
    assert bool(rows(events, [ueba(start)])) is matched


def test_period_applies_to_ueba_too() -> None:
    assert rows([activity(AT - 47 * H)], [ueba(AT - 48 * H - 1)]) == []


def test_period_cuts_a_run_command_in_two() -> None:
    # The "Started" event is before the period: StartTime is the first event inside it.
    events = [activity(AT - 48 * H - 5, status="Started"), activity(AT - 48 * H + 5, status="Succeeded")]
    [row] = rows(events, [ueba(AT - 47 * H)])
    assert row["StartTime"] == "2026-11-18T06:00:00.0000005Z"


# --- alerts -------------------------------------------------------------------------------------------

def test_one_alert_per_correlation_id_with_all_matches() -> None:
    events = run_command(T0, correlation_id="c-1") + run_command(T0 + 2 * H, correlation_id="c-2")
    logins = [ueba(T0 - 30 * 60 * 10_000_000), ueba(T0 + H)]
    result = correlate(events, logins, WINDOW)
    alerts = build_alerts(result.rows)
    assert [(a.correlation_id, len(a.rows)) for a in alerts] == [("c-1", 2), ("c-2", 2)]
    assert alerts[0].key == alert_key("c-1", authorization(), "alice@contoso.com")
    assert alerts[0].key.startswith(f"{RULE.id}:v2:")
    assert alerts[0].resource_group == "rg-1"
    assert alerts[0].vm_name == "vm-1"


def test_one_correlation_id_over_two_vms_and_two_callers_is_three_alerts() -> None:
    """The rule's own group (CorrelationId, Authorization, Caller) is the alert: nothing is merged away."""
    dc = authorization(VM_SCOPE.replace("rg-1", "rg-dc").replace("vm-1", "dc-01"))
    events = (run_command(T0, correlation_id="shared") + run_command(T0, correlation_id="shared", auth=dc)
              + run_command(T0, correlation_id="shared", caller="bob@contoso.com", auth=dc))
    logins = [ueba(T0), ueba(T0, upn="bob@contoso.com", location="Seattle, US")]
    alerts = build_alerts(correlate(events, logins, WINDOW).rows)
    assert sorted((a.caller, a.vm_name, a.resource_group) for a in alerts) == [
        ("alice@contoso.com", "dc-01", "rg-dc"), ("alice@contoso.com", "vm-1", "rg-1"),
        ("bob@contoso.com", "dc-01", "rg-dc")]
    assert len({a.key for a in alerts}) == 3
    assert all(a.authorization and all(r.authorization == a.authorization for r in a.rows) for a in alerts)
    # The same group always gets the same key (dedup across runs), whatever the order of the rows.
    again = build_alerts(reversed(correlate(events, logins, WINDOW).rows))
    assert [a.key for a in again] == [a.key for a in alerts]


def test_alert_round_trips_through_dict() -> None:
    [alert] = build_alerts(correlate(run_command(T0), [ueba(T0)], WINDOW).rows)
    from detector.model import Alert
    assert Alert.from_dict(alert.to_dict()) == alert


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="after its start"):
        Window(start=AT, end=AT)
