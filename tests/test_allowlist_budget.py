"""The allowlist's budget: entries that are narrow one by one may not add up to a silenced detector.

Each attack below is built the way an attacker with write access to the allowlist (or a careless
engineer) would: only entries that pass the single-entry breadth check, as many as it takes. The
corpus is public (a fixed seed), so the attacker may read it: the many-callers attack lists its callers.
"""

from __future__ import annotations

import ipaddress
import json
import random
import string
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.allowlist import Allowlist, AllowlistEntry, InvalidEntry
from detector.breadth import BUDGET_MATCHES, CORPUS_SIZE, MAX_MATCHES, corpus
from detector.rule import RULE
from detector.timestamps import format_datetime
from tests.builders import AT, H
from tests.test_cli import call


def entry(entry_id: str, *conditions: tuple[str, str, Any], created_at: str | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {"id": entry_id, "reason": "known good",
                           "conditions": [{"field": f, "op": o, "value": v} for f, o, v in conditions]}
    if created_at is not None:
        raw["created_at"] = created_at
    return raw


def passes_alone(raw: dict[str, Any]) -> bool:
    try:
        AllowlistEntry.from_dict(raw)
    except InvalidEntry:
        return False
    return True


def corpus_suppressed(allowlist: Allowlist) -> int:
    """How many corpus alerts the loaded allowlist really suppresses (its own matching, windows included)."""
    return sum(1 for alert in corpus() if allowlist.matching(alert))


# Callers that occur once in the corpus and survive a comma-separated CLI value: exact counts below.
_ONCE = Counter(a.caller.lower() for a in corpus())
SINGLE_CALLERS = [a.caller for a in corpus()
                  if _ONCE[a.caller.lower()] == 1 and set(a.caller) <= set(string.ascii_letters + string.digits + "@.-")]


def slash7_attack() -> list[dict[str, Any]]:
    raws = [entry(f"net{i}", ("caller_ip", "cidr", f"{2 * i}.0.0.0/7")) for i in range(126)]
    return [r for r in raws if passes_alone(r)]  # 124 of them


def prefix_attack() -> list[dict[str, Any]]:
    # Every two-letter prefix the corpus's callers start with (with no corpus at hand, all of [a-z0-9]{2}
    # does the same, in 1,296 entries; these are the ones of them that matter).
    prefixes = sorted({a.caller[:2].lower() for a in corpus() if len(a.caller.strip()) >= 2})
    raws = [entry(f"p{i}", ("caller", "startswith", prefix)) for i, prefix in enumerate(prefixes)]
    return [r for r in raws if passes_alone(r)]


def callers_attack() -> list[dict[str, Any]]:
    callers = [a.caller for a in corpus() if a.caller and "," not in a.caller]
    return [entry(f"who{i}", ("caller", "in", callers[i:i + 10])) for i in range(0, len(callers), 10)]


@pytest.mark.parametrize(("attack", "at_least"), [(slash7_attack, 0.6), (prefix_attack, 0.3), (callers_attack, 0.9)])
def test_entries_broad_only_together_stay_within_the_budget(attack: Any, at_least: float) -> None:
    raws = attack()
    assert all(passes_alone(r) for r in raws)  # every entry alone is narrow enough
    loaded = Allowlist.load(raws, now=AT)
    assert loaded.budget.requested >= at_least * CORPUS_SIZE  # together they would have silenced the detector
    assert loaded.budget.matched <= BUDGET_MATCHES == CORPUS_SIZE * 2 // 100  # the README's 2%
    assert corpus_suppressed(loaded) <= BUDGET_MATCHES
    set_aside = [p for p in loaded.problems if p.kind == "over_budget"]
    assert [p.id for p in set_aside] == list(loaded.budget.set_aside)
    assert len(loaded.active) + len(set_aside) == len(raws)  # every entry is in force or reported
    assert all("suppresses nothing" in p.problem and f"at most {BUDGET_MATCHES} of the {CORPUS_SIZE}" in p.problem
               for p in set_aside)


def test_a_realistic_allowlist_of_200_narrow_entries_is_accepted_whole() -> None:
    rng = random.Random(5)
    raws = []
    for i in range(200):
        conditions: list[tuple[str, str, Any]] = [("caller", "equals", f"svc-{i:03d}@contoso.com"),
                                                  ("vm_name", "equals", f"vm-app-{i:03d}")]
        if i % 4 == 0:
            conditions.append(("caller_ip", "cidr", f"20.{rng.randrange(256)}.{rng.randrange(256)}.0/24"))
        if i % 5 == 0:
            conditions.append(("resource_group", "startswith", "rg-prod-"))
        raws.append(entry(f"narrow-{i}", *conditions, created_at="2026-01-01T00:00:00Z"))
    loaded = Allowlist.load(raws, now=AT)
    assert (len(loaded.active), loaded.problems, loaded.budget.exceeded) == (200, [], False)


def test_a_flood_never_pushes_out_entries_that_name_something_specific() -> None:
    narrow = [entry(f"narrow-{i}", ("caller", "equals", f"svc-{i}@contoso.com"),
                    created_at="2030-01-01T00:00:00Z") for i in range(200)]  # newer than the flood
    flood = [{**r, "created_at": "2001-01-01T00:00:00Z"} for r in slash7_attack()]  # backdated
    loaded = Allowlist.load([*flood, *narrow], now=AT)
    active = {e.id for e in loaded.active}
    assert {r["id"] for r in narrow} <= active
    assert loaded.budget.exceeded


def test_the_broadest_are_set_aside_then_the_newest_never_by_table_order() -> None:
    group = [SINGLE_CALLERS[i:i + 14] for i in range(0, 70, 14)]
    raws = [entry("x-newer", ("caller", "in", group[0]), created_at="2026-03-01T00:00:00Z"),
            entry("y-older", ("caller", "in", group[1]), created_at="2025-01-01T00:00:00Z"),
            entry("z-no-date", ("caller", "in", group[2])),
            entry("w-oldest", ("caller", "in", group[3]), created_at="2024-06-01T00:00:00Z"),
            entry("n-narrow", ("caller", "in", group[4][:5]), created_at="2026-11-01T00:00:00Z")]
    for order in (raws, raws[::-1], [raws[2], raws[0], raws[4], raws[3], raws[1]]):
        loaded = Allowlist.load(order, now=AT)
        # n-narrow (5) first, then the 14s oldest first: 5 + 14 + 14 = 33; a third 14 would make 47 > 40.
        assert sorted(e.id for e in loaded.active) == ["n-narrow", "w-oldest", "y-older"]
        assert loaded.budget.set_aside == ("x-newer", "z-no-date")
        assert (loaded.budget.matched, loaded.budget.requested) == (33, 61)


@pytest.mark.parametrize("conditions", [
    [("rule_id", "equals", RULE.id), ("vm_name", "regex", ".+")],
    [("rule_id", "in", [RULE.id, "ext-anything"]), ("resource_id", "startswith", "/")],
    [("rule_id", "equals", RULE.id)],
])
def test_confining_an_entry_to_a_rule_does_not_hide_its_breadth(conditions: list[tuple[str, str, Any]]) -> None:
    # The corpus alerts carry their own rule id; a rule_id condition used to make any entry match none of them.
    with pytest.raises(InvalidEntry, match="matches \\(nearly\\) everything"):
        AllowlistEntry.from_dict(entry("e", *conditions))
    narrow = entry("e", ("rule_id", "equals", RULE.id), ("caller", "equals", "patch@contoso.com"))
    assert [e.id for e in Allowlist.load([narrow], now=AT).active] == ["e"]


# --- property: no allowlist that loads ever suppresses more than the budget of the corpus -----------------

ALONE_OK = st.one_of(
    st.tuples(st.just("caller_ip"), st.just("cidr"),
              st.tuples(st.integers(0, 2**32 - 1), st.integers(5, 16)).map(
                  lambda t: f"{ipaddress.ip_network((t[0], t[1]), strict=False)}")),
    st.tuples(st.sampled_from(["caller", "vm_name", "resource_group"]), st.sampled_from(["startswith", "contains"]),
              st.text(alphabet=string.ascii_lowercase + string.digits + "-.", min_size=2, max_size=3)),
    st.tuples(st.just("caller"), st.just("in"), st.lists(st.sampled_from(SINGLE_CALLERS), min_size=1, max_size=20)),
    st.tuples(st.just("caller"), st.just("equals"), st.text(alphabet=string.ascii_lowercase, min_size=6, max_size=12)),
    st.tuples(st.just("vm_name"), st.just("regex"), st.sampled_from(["web.*", "[a-c].*-[0-9]+", "db.+", "x.*"])),
)
CREATED = st.one_of(st.none(), st.integers(0, 400).map(lambda d: format_datetime(AT - d * 24 * H)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(ALONE_OK, min_size=1, max_size=2), CREATED, st.booleans()), max_size=40),
       st.randoms(use_true_random=False))
def test_no_allowlist_ever_suppresses_more_than_the_budget(specs: list[tuple[list[Any], str | None, bool]],
                                                           rng: random.Random) -> None:
    raws = []
    for i, (conditions, created_at, weekend) in enumerate(specs):
        raw = entry(f"e{i}", *conditions, created_at=created_at)
        if weekend:
            raw["window"] = {"weekdays": ["Sat", "Sun"], "start": "00:00", "end": "23:59", "timezone": "UTC"}
        raws.append(raw)
    loaded = Allowlist.load(raws, now=AT)
    assert loaded.budget.matched <= BUDGET_MATCHES
    assert corpus_suppressed(loaded) <= BUDGET_MATCHES
    for active in loaded.active:
        assert sum(1 for a in corpus() if active.matches(a)) <= MAX_MATCHES
    # The verdict depends on the entries, never on the order the table or file lists them in.
    shuffled = rng.sample(raws, len(raws))
    again = Allowlist.load(shuffled, now=AT)
    assert sorted(e.id for e in again.active) == sorted(e.id for e in loaded.active)
    assert again.budget == loaded.budget


# --- where it shows: allowlist add, check, the run summary -----------------------------------------------

def test_allowlist_add_refuses_an_entry_over_the_budget_naming_budget_and_overlap(tmp_path: Path) -> None:
    state = str(tmp_path / "state")

    def add(entry_id: str, callers: list[str]) -> tuple[int, str, str]:
        return call("allowlist", "add", "--state", state, "--id", entry_id, "--reason", "known good",
                    "--when", "caller", "in", ",".join(callers))
    c = SINGLE_CALLERS
    assert add("e1", c[0:15])[0] == 0
    assert add("e2", c[10:25])[0] == 0  # overlaps e1 on 5: 25 matched
    assert add("e3", c[20:35])[0] == 0  # overlaps e2 on 5: 35 matched
    code, out, err = add("e4", c[30:45])  # 10 new: 45 > 40
    assert code == 3
    assert out == ""
    assert "not saved: over the allowlist budget" in err
    assert f"at most {BUDGET_MATCHES} of the {CORPUS_SIZE} breadth-corpus alerts (2%)" in err
    assert "the 3 entries in force match 35; this entry matches 15, 10 of them matched by no entry in force " \
           "(it overlaps e3 on 5); it would be set aside" in err
    listed = call("allowlist", "list", "--state", state)[1]
    assert "e4" not in listed
    assert "3 entries; the entries in force together match 35 of the 2000 breadth-corpus alerts (budget 40, 2%)" \
        in listed
    assert add("e5", c[50:55])[0] == 0  # 5 new: exactly the budget
    code, _, err = add("e6", c[60:63])  # narrower than e1-e3: it would be kept and push e3 out
    assert code == 3
    assert "it would push e3 out of force" in err
    code, out, _ = call("allowlist", "check", "--state", state)
    assert code == 0
    assert "4 active, 0 not in force; the entries in force together match 40 of the 2000 breadth-corpus alerts " \
           "(budget 40, 2%)" in out
    # Replacing an entry is measured without its old version: e5 narrowed to 2 callers fits.
    assert add("e5", c[50:52])[0] == 0


def test_an_allowlist_over_budget_warns_in_the_run_and_fails_check(tmp_path: Path) -> None:
    from detector.cli import SAMPLE_ALLOWLIST
    sample = json.loads(SAMPLE_ALLOWLIST.read_text(encoding="utf-8"))["entries"]
    path = tmp_path / "allowlist.json"
    path.write_text(json.dumps({"entries": [*sample, *slash7_attack()]}), encoding="utf-8")
    code, out, err = call("run", "--allowlist", str(path), "--json")
    assert code == 0
    summary = json.loads(out)["summary"]
    budget = summary["allowlist_budget"]
    assert (budget["corpus_alerts"], budget["budget"]) == (CORPUS_SIZE, BUDGET_MATCHES)
    assert budget["matched"] <= BUDGET_MATCHES < budget["requested"]
    assert len(budget["set_aside"]) > 100
    assert summary["suppressed"] == 5  # the sample's specific entries still suppress its five false positives
    assert any(w.startswith("allowlist OVER BUDGET") for w in summary["warnings"])
    assert "warning: allowlist OVER BUDGET: the active entries together would match" in err
    code, out, _ = call("allowlist", "check", "--file", str(path))
    assert code == 3
    assert "NOT IN FORCE net" in out
    assert "over the allowlist budget" in out
    code, out, _ = call("run", "--no-allowlist", "--json")
    assert json.loads(out)["summary"]["allowlist_budget"] is None


def test_a_regex_entry_meets_a_lone_surrogate_without_stopping_the_run() -> None:
    # JSON may carry "\ud800"; re2 encoded such a str strictly and raised UnicodeEncodeError mid-run.
    from dataclasses import replace
    odd = replace(corpus()[0], vm_name="web-\ud800", caller="patch@contoso.com")
    loaded = Allowlist.load([entry("any-web", ("caller", "equals", "patch@contoso.com"), ("vm_name", "regex", "web-.*")),
                             entry("web-n", ("caller", "equals", "patch@contoso.com"), ("vm_name", "regex", "web-\\d+"))],
                            now=AT)
    assert loaded.matching(odd) == ["any-web"]


# --- the corpus is measured exactly: the fast paths agree with testing every alert ------------------------

def _escaped(text: str) -> str:
    return "".join(ch if ch.isalnum() else "\\" + ch for ch in text)


@st.composite
def field_patterns(draw: Any) -> tuple[str, str]:
    """A field and a pattern built on the start of one of its corpus values, so that it matches a few alerts
    (or many: ``web.*``), with the case, alternation and ``.`` shapes that RE2's match range must bound."""
    field = draw(st.sampled_from(["vm_name", "caller", "resource_group", "subscription", "ueba_source_location"]))
    alert = corpus()[draw(st.integers(0, CORPUS_SIZE - 1))]
    value = alert.rows[0].ueba_source_location if field == "ueba_source_location" else getattr(
        alert, field)
    head = value[:draw(st.integers(0, min(len(value), 6)))]
    head = draw(st.sampled_from([head, head.upper(), head.swapcase(), head[:-1] + "." if head else "."]))
    tail = draw(st.sampled_from([".*", ".+", "[^x]*", "(?s:.*)", "\\d*.*", "", "-.*", "[a-z0-9]+"]))
    other = draw(st.sampled_from(["", "|web.*", "|x", "|(?i:DB).+"]))
    pattern = f"{_escaped(head) if not head.endswith('.') else _escaped(head[:-1]) + '.'}{tail}{other}"
    return field, draw(st.sampled_from([pattern, f"(?s){pattern}", f"(?:{pattern})"]))


@settings(max_examples=200, deadline=None)
@given(field_patterns(), st.sampled_from(["regex", "startswith", "contains", "endswith"]))
def test_breadth_counts_agree_with_testing_every_corpus_alert(field_pattern: tuple[str, str], op: str) -> None:
    from detector.allowlist import parse_condition
    field, pattern = field_pattern
    value = pattern if op == "regex" else pattern.replace("\\", "").split("|")[0].rstrip(".*+")
    raw_condition = {"field": field, "op": op, "value": value}
    try:
        condition = parse_condition(raw_condition, 0)
    except InvalidEntry:
        return  # not a condition at all (an empty value, a pattern RE2 refuses or that matches "")
    every = sum(1 for a in corpus() if condition.holds(a))
    raw = {"id": "e", "reason": "r", "conditions": [raw_condition]}
    if every > MAX_MATCHES:
        with pytest.raises(InvalidEntry, match="matches \\(nearly\\) everything"):
            AllowlistEntry.from_dict(raw)
    else:
        assert Allowlist.load([raw], now=AT).budget.requested == every
