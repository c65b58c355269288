"""Adversarial review of the allowlist budget and the stable destination ids (each test failed before its fix)."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from detector.allowlist import Allowlist, AllowlistEntry, apply, budget_refusal
from detector.breadth import corpus
from detector.errors import ConfigError
from detector.model import Alert
from detector.settings import Settings, destination_id
from detector.timestamps import parse_datetime

NOW = parse_datetime("2026-11-29T09:00:00Z")
_HOOK = "https://prod-00.westus.logic.azure.com/workflows/{path}/triggers/manual/paths/invoke?api-version=2016-10-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={sig}"


@pytest.mark.parametrize(("first", "second"), [
    # requests sends an unreserved character's percent-encoding as the character (RFC 3986 6.2.2.2): one workflow.
    (_HOOK.format(path="abc123", sig="S3cr3tOne"), _HOOK.format(path="%61bc123", sig="S3cr3tTwo")),
    # An escape's hex digits in either case are one octet (RFC 3986 6.2.2.1); requests upper-cases them.
    (_HOOK.format(path="abc%2f123", sig="S3cr3tOne"), _HOOK.format(path="abc%2F123", sig="S3cr3tTwo")),
    # requests sends an IDN host as its A-label: one host.
    ("https://bücher.example/hook/abc?sig=S3cr3tOne", "https://xn--bcher-kva.example/hook/abc?sig=S3cr3tTwo"),
])
def test_spellings_of_one_webhook_are_one_destination(first: str, second: str) -> None:
    assert destination_id("teams", first) == destination_id("teams", second)
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"DETECTOR_TEAMS_WEBHOOK_URLS": f"{first},{second}"})
    assert "entries 1 and 2 are the same destination" in str(info.value)
    assert "S3cr3t" not in str(info.value)
    assert "bcher" not in str(info.value)


def test_different_workflows_stay_different_destinations() -> None:
    """The normalisation must not merge what the server tells apart: path case and reserved escapes are kept."""
    ids = {destination_id("teams", _HOOK.format(path=p, sig="s")) for p in ("abc123", "ABC123", "abc%2F123")}
    assert len(ids) == 3


def _corpus_ips(version: int) -> list[int]:
    return [int(ipaddress.ip_address(a.caller_ip)) for a in corpus()
            if a.caller_ip and ipaddress.ip_address(a.caller_ip).version == version]


def _slash10(n: int, spelling: str) -> dict[str, str]:
    """The n-th IPv4 /10 as a condition: a CIDR range, or the same addresses as a regex."""
    if spelling == "cidr":
        return {"field": "caller_ip", "op": "cidr", "value": f"{ipaddress.IPv4Address(n << 22)}/10"}
    low = (n & 3) * 64
    second = "|".join(str(b) for b in range(low, low + 64))
    return {"field": "caller_ip", "op": "regex", "value": f"{n >> 2}\\.({second})\\.[0-9]+\\.[0-9]+"}


@pytest.mark.parametrize("spelling", ["cidr", "regex"])
def test_ip_ranges_in_the_corpus_gaps_cannot_silence_a_share_of_the_address_space(spelling: str) -> None:
    """The corpus holds ~1,400 IPv4 addresses: a /10 holds none of them a quarter of the time. Entries of such
    /10s each matched no corpus alert, so none counted against the budget, and together they hid every caller
    from a quarter of the IPv4 space. The budget must weigh an address range by its share of the space."""
    taken = {ip >> 22 for ip in _corpus_ips(4)}
    gaps = [n for n in range(1 << 10) if n not in taken]
    assert len(gaps) > 150  # the attack has material: a fifth of the /10s are empty in the corpus
    raws = [{"id": f"gap-{n}", "reason": "vendor range", "created_by": "x", "created_at": "2026-01-01T00:00:00Z",
             "conditions": [_slash10(n, spelling)]} for n in gaps]
    probe = corpus()[0]
    for n in gaps[:3]:  # the regex spelling is the same range as the CIDR one
        inside = str(ipaddress.IPv4Address((n << 22) + 12345))
        outside = str(ipaddress.IPv4Address(((n + 1) % 1024 << 22) + 12345))
        entry = Allowlist.load([raws[gaps.index(n)]], now=NOW)
        assert entry.matching(dataclasses.replace(probe, caller_ip=inside))
        assert not entry.matching(dataclasses.replace(probe, caller_ip=outside))
    allowlist = Allowlist.load(raws, now=NOW)
    covered = len(allowlist.active) / (1 << 10)
    assert covered <= 0.03, f"{len(allowlist.active)} /10s in force: {covered:.0%} of the IPv4 space suppressed"
    assert allowlist.budget.exceeded


def test_narrow_entries_still_never_count_against_the_budget() -> None:
    """The fix must keep the decision that specific exceptions (one caller on one VM) cost nothing."""
    raws = [{"id": f"one-{i}", "reason": "patching", "created_by": "x",
             "conditions": [{"field": "caller", "op": "equals", "value": f"svc{i}@contoso.com"},
                            {"field": "caller_ip", "op": "cidr", "value": "10.0.0.0/8"},
                            {"field": "vm_name", "op": "equals", "value": f"vm-{i}"}]} for i in range(300)]
    allowlist = Allowlist.load(raws, now=NOW)
    assert len(allowlist.active) == 300
    assert not allowlist.budget.exceeded
    alert = corpus()[0]
    assert isinstance(alert, Alert)
    kept, suppressed = apply(allowlist, [alert])
    assert kept == [alert]
    assert not suppressed


def test_a_duplicated_id_suppresses_nothing_whichever_copy_the_table_lists_first() -> None:
    """Whoever writes the table can add a row under another RowKey whose entry carries a reviewed entry's id: the
    copy the table listed first was kept in force under the reviewed id (and the reviewed one reported as the
    duplicate). Neither copy can be told to be the reviewed one, so neither suppresses (fail closed)."""
    target = corpus()[7]
    reviewed = {"id": "patch-web", "reason": "patching", "created_by": "alice",
                "conditions": [{"field": "caller", "op": "equals", "value": "patch@contoso.com"}]}
    planted = {"id": "patch-web", "reason": "patching", "created_by": "alice",
               "conditions": [{"field": "caller", "op": "equals", "value": target.caller}]}
    for order in ([planted, reviewed], [reviewed, planted]):
        allowlist = Allowlist.load(order, now=NOW)
        assert allowlist.active == []
        assert [(p.id, p.kind) for p in allowlist.problems] == [("patch-web", "duplicate")] * 2
        assert apply(allowlist, [target]) == ([target], [])


def test_allowlist_add_names_what_an_ip_range_costs_not_its_empty_corpus_count() -> None:
    """Refusing a /10 that holds no corpus address said "this entry matches 0" and left the reader guessing."""
    taken = {ip >> 22 for ip in _corpus_ips(4)}
    raws = [{"id": f"gap-{n}", "reason": "vendor range", "conditions": [_slash10(n, "cidr")]}
            for n in range(1 << 10) if n not in taken]
    kept = {e.id for e in Allowlist.load(raws, now=NOW).active}
    in_force = [r for r in raws if r["id"] in kept]
    extra = next(r for r in raws if r not in in_force)
    refusal = budget_refusal(in_force, AllowlistEntry.from_dict(extra), now=NOW)
    assert refusal is not None
    assert "this entry matches 2 (a caller-IP range by its share of the address space), 0 of them" in refusal
