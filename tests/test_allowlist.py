"""Allowlist entries: every operator, expiry, maintenance windows across DST, failing closed."""

from __future__ import annotations

from typing import Any

import pytest

from detector.alerts import build_alerts
from detector.allowlist import Allowlist, AllowlistEntry, InvalidEntry, apply
from detector.correlate import correlate
from detector.model import Alert
from detector.timestamps import parse_datetime
from detector.window import Window
from tests.builders import AT, T0, run_command, ueba


def alert(**kwargs: Any) -> Alert:
    login_kwargs = {k: kwargs.pop(k) for k in ("location", "action_type") if k in kwargs}
    start = kwargs.pop("start", T0)
    logins = kwargs.pop("logins", None) or [ueba(start, upn=kwargs.get("caller", "alice@contoso.com"), **login_kwargs)]
    [a] = build_alerts(correlate(run_command(start, **kwargs), logins, Window(start=0, end=AT + 10**14)).rows)
    return a


def entry(*conditions: tuple[str, str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": extra.pop("id", "e1"), "reason": extra.pop("reason", "known good"),
            "conditions": [{"field": f, "op": o, "value": v} for f, o, v in conditions], **extra}


@pytest.mark.parametrize(("cond", "matched"), [
    (("caller", "equals", "ALICE@contoso.com"), True),
    (("caller", "equals", "alice"), False),
    (("caller", "contains", "LICE@CONTOSO"), True),
    (("caller", "startswith", "alice@contoso"), True),
    (("caller", "endswith", "@contoso.com"), True),
    (("caller", "endswith", "@fabrikam.com"), False),
    (("caller", "in", ["bob@contoso.com", "Alice@Contoso.com"]), True),
    (("caller", "in", "bob@contoso.com, alice@contoso.com"), True),
    (("caller_ip", "cidr", "20.1.0.0/16"), True),
    (("caller_ip", "cidr", "20.2.0.0/16, 20.1.2.3/32"), True),
    (("caller_ip", "cidr", "20.2.0.0/16"), False),
    (("caller_ip", "cidr", "2001:db8::/32"), False),
    (("vm_name", "regex", "vm-\\d"), True),
    (("vm_name", "regex", "vm"), False),  # anchored: a full match is needed
    (("resource_group", "equals", "rg-1"), True),
    (("subscription", "startswith", "8d6a3f2e"), True),
    (("resource_id", "endswith", "/virtualMachines/vm-1"), True),
    (("account_upn_suffix", "equals", "contoso.com"), True),
    (("ueba_source_location", "equals", "lagos, ng"), True),
    (("ueba_action_type", "equals", "ResourceAccess by runbook"), False),
])
def test_operators(cond: tuple[str, str, Any], matched: bool) -> None:
    allowlist = Allowlist.load([entry(cond)], now=AT)
    assert not allowlist.problems
    assert bool(allowlist.matching(alert())) is matched


def test_all_conditions_must_hold() -> None:
    allowlist = Allowlist.load([entry(("caller", "equals", "alice@contoso.com"), ("vm_name", "equals", "other"))],
                               now=AT)
    assert allowlist.matching(alert()) == []


def test_ueba_fields_must_hold_for_every_match() -> None:
    mixed = alert(logins=[ueba(T0, location="Seattle, US"), ueba(T0, location="Lagos, NG")])
    seattle_only = alert(logins=[ueba(T0, location="Seattle, US")])
    allowlist = Allowlist.load([entry(("ueba_source_location", "equals", "Seattle, US"))], now=AT)
    assert allowlist.matching(seattle_only) == ["e1"]
    assert allowlist.matching(mixed) == []


def test_expiry() -> None:
    raw = entry(("caller", "equals", "alice@contoso.com"), expires_at="2026-11-20T06:00:00Z")
    before = Allowlist.load([raw], now=parse_datetime("2026-11-20T05:59:59Z"))
    after = Allowlist.load([raw], now=parse_datetime("2026-11-20T06:00:00Z"))
    assert before.matching(alert()) == ["e1"]
    assert after.matching(alert()) == []
    assert "expired" in after.problems[0].problem


def test_disabled_entry_suppresses_nothing() -> None:
    allowlist = Allowlist.load([entry(("caller", "equals", "alice@contoso.com"), enabled=False)], now=AT)
    assert allowlist.matching(alert()) == []
    assert allowlist.problems[0].problem == "disabled"


BERLIN_SUNDAY_WINDOW = {"weekdays": ["Sun"], "start": "01:30", "end": "03:30", "timezone": "Europe/Berlin"}


@pytest.mark.parametrize(("start", "inside"), [
    # 2026-03-29: Berlin springs forward at 02:00 CET -> 03:00 CEST. 01:30 CET = 00:30Z; 03:30 CEST = 01:30Z.
    ("2026-03-29T00:29:00Z", False),
    ("2026-03-29T00:30:00Z", True),
    ("2026-03-29T01:29:59Z", True),
    ("2026-03-29T01:30:00Z", False),  # 03:30 CEST: the end, exclusive
    # 2026-10-25: falls back at 03:00 CEST -> 02:00 CET. 01:30 CEST = 23:30Z (Sat); 03:30 CET = 02:30Z.
    ("2026-10-24T23:30:00Z", True),
    ("2026-10-25T02:29:00Z", True),
    ("2026-10-25T02:30:00Z", False),
    # An ordinary Sunday: 01:30-03:30 CET = 00:30Z-02:30Z.
    ("2026-11-22T00:30:00Z", True),
    ("2026-11-22T02:30:00Z", False),
    ("2026-11-21T00:30:00Z", False),  # Saturday
])
def test_maintenance_window_across_dst(start: str, inside: bool) -> None:
    raw = entry(("caller", "equals", "alice@contoso.com"), window=BERLIN_SUNDAY_WINDOW)
    a = alert(start=parse_datetime(start))
    assert bool(Allowlist.load([raw], now=AT).matching(a)) is inside


@pytest.mark.parametrize(("start", "inside"), [
    ("2026-11-21T22:30:00Z", True),   # Sat 22:30 UTC
    ("2026-11-22T03:59:00Z", True),   # Sun 03:59, still Saturday's window
    ("2026-11-22T04:00:00Z", False),
    ("2026-11-22T22:30:00Z", False),  # Sunday night is not in the window
])
def test_window_crossing_midnight(start: str, inside: bool) -> None:
    raw = entry(("caller", "equals", "alice@contoso.com"),
                window={"weekdays": "Sat", "start": "22:00", "end": "04:00", "timezone": "UTC"})
    assert bool(Allowlist.load([raw], now=AT).matching(alert(start=parse_datetime(start)))) is inside


@pytest.mark.parametrize(("raw", "message"), [
    (entry(("hostname", "equals", "x")), "unknown field"),
    (entry(("caller", "like", "x")), "unknown operator"),
    (entry(("vm_name", "regex", "vm-(")), "bad regex"),
    (entry(("vm_name", "regex", ".*")), "matches (nearly) everything"),
    (entry(("vm_name", "regex", ".+")), "matches (nearly) everything"),
    (entry(("vm_name", "regex", "(?s).+")), "matches (nearly) everything"),
    (entry(("caller_ip", "cidr", "300.1.2.0/24")), "not a CIDR range"),
    (entry(("caller_ip", "cidr", "0.0.0.0/0")), "matches every address"),
    (entry(("caller_ip", "cidr", "::/0")), "matches every address"),
    (entry(("caller", "contains", "")), "non-empty string"),
    (entry(("caller", "equals", "  ")), "non-empty string"),
    (entry(("caller", "in", [])), "non-empty list"),
    (entry(("caller", "in", ["a", ""])), "non-empty list"),
    (entry(("caller", "equals", 5)), "non-empty string"),
    (entry(), "at least one condition"),
    (entry(("caller", "equals", "x"), reason=" "), "reason is required"),
    (entry(("caller", "equals", "x"), id="bad id/with slash"), "id must be"),
    (entry(("caller", "equals", "x"), window={"weekdays": ["Sun"], "start": "1:00", "end": "2:00",
                                               "timezone": "Mars/Olympus"}), "unknown time zone"),
    (entry(("caller", "equals", "x"), window={"weekdays": ["Funday"], "start": "1:00", "end": "2:00",
                                               "timezone": "UTC"}), "unknown weekday"),
    (entry(("caller", "equals", "x"), window={"weekdays": ["Sun"], "start": "25:00", "end": "2:00",
                                               "timezone": "UTC"}), "out of range"),
    (entry(("caller", "equals", "x"), expires_at="soon"), "not an ISO 8601 time"),
    (entry(("caller", "equals", "x"), enabled="yes"), "enabled must be"),
])
def test_invalid_entries_fail_closed(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidEntry, match=message.replace("(", r"\(").replace(")", r"\)")):
        AllowlistEntry.from_dict(raw)
    # Loaded among others, it suppresses nothing and is reported; a valid entry still works.
    loaded = Allowlist.load([raw, entry(("caller", "equals", "nobody@x"), id="ok")], now=AT)
    assert [e.id for e in loaded.active] == ["ok"]
    assert len(loaded.problems) == 1
    assert "suppresses nothing" in loaded.problems[0].problem
    keep, suppressed = apply(loaded, [alert()])
    assert (len(keep), suppressed) == (1, [])


def test_duplicate_ids_and_non_objects_fail_closed() -> None:
    raws = [entry(("caller", "equals", "alice@contoso.com")), entry(("caller", "equals", "alice@contoso.com"))]
    loaded = Allowlist.load([*raws, "junk"], now=AT)  # type: ignore[list-item]
    assert loaded.active == []  # neither copy can be told to be the reviewed one
    assert [p.kind for p in loaded.problems] == ["duplicate", "duplicate", "invalid"]


def test_entry_round_trips() -> None:
    raw = entry(("caller", "in", ["a@b.c"]), ("vm_name", "regex", "vm-\\d+"), window=BERLIN_SUNDAY_WINDOW,
                expires_at="2027-01-01T00:00:00Z", created_at="2026-11-01T00:00:00Z", created_by="me")
    parsed = AllowlistEntry.from_dict(raw)
    assert AllowlistEntry.from_dict(parsed.to_dict()) == parsed


def test_sample_allowlist_covers_the_documented_false_positives() -> None:
    import json

    from detector.pipeline import detect
    from detector.sample.generate import SAMPLE_DIR
    from detector.sources.files import FileSource
    raws = json.loads((SAMPLE_DIR.parent / "allowlist.json").read_text(encoding="utf-8"))["entries"]
    manifest = json.loads((SAMPLE_DIR / "expected.json").read_text(encoding="utf-8"))
    at = parse_datetime(manifest["at"])
    result = detect(FileSource(SAMPLE_DIR), Window.ending_at(at), allowlist=Allowlist.load(raws, now=at))
    fp_ids = {e["correlation_id"] for e in manifest["alerts"] if e["false_positive"]}
    tp_ids = {e["correlation_id"] for e in manifest["alerts"] if not e["false_positive"]}
    assert {s.alert.correlation_id for s in result.suppressed} == fp_ids
    assert {a.correlation_id for a in result.alerts} == tp_ids
    assert result.allowlist_problems == []


def test_index_gives_the_same_verdicts_as_checking_every_entry() -> None:
    import random
    rng = random.Random(3)
    callers = [f"u{i}@contoso.com" for i in range(30)]
    raws = []
    for i in range(160):
        kind = i % 5
        if kind == 4:
            width = rng.choice([4, 8, 12, 16, 20, 32])
            conds = [("caller_ip", "cidr", f"20.{rng.randrange(3)}.0.0/{width}, 2001:db8::/{rng.choice([8, 40, 64])}")]
        elif kind == 0:
            conds = [("caller", "equals", rng.choice(callers).upper())]
        elif kind == 1:
            conds = [("caller", "in", rng.sample(callers, 3)), ("vm_name", "startswith", "vm-")]
        elif kind == 2:
            conds = [("ueba_source_location", "equals", rng.choice(["Lagos, NG", "Dublin, IE"]))]
        else:
            conds = [("caller", "contains", str(rng.randrange(10)))]
        raws.append(entry(*conds, id=f"e{i}"))
    allowlist = Allowlist.load(raws, now=AT)
    ips = ["20.1.2.3", "20.0.9.9", "20.2.0.1", "21.1.1.1", "2001:db8::1", "2001:db9::1", "not an ip", ""]
    checked = 0
    for caller in callers:
        for location in ("Lagos, NG", "Dublin, IE"):
            a = alert(caller=caller, location=location, ip=rng.choice(ips))
            assert allowlist.matching(a) == [e.id for e in allowlist.active if e.matches(a)]
            checked += bool(allowlist.matching(a))
    assert checked > 10  # the comparison covers real matches, not only misses
