"""Property-based tests (hypothesis): hostile and arbitrary input never crashes a run, never makes a
card too big or injectable, never lets an allowlist entry match everything."""

from __future__ import annotations

import json
import re
import shlex
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector import kql
from detector.allowlist import Allowlist
from detector.correlate import Window, build_alerts, correlate
from detector.deliver.teams import MAX_MESSAGE_BYTES, allowlist_command, build_alert_card, build_digest_card
from detector.errors import InputError
from detector.model import Alert
from detector.sources.files import FileSource
from detector.timestamps import format_datetime, parse_datetime
from tests.builders import AT, T0, authorization, run_command, ueba

ASCII = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
TERM = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=12)
ANY_TEXT = st.text(max_size=300)
HOSTILE = st.one_of(ANY_TEXT, st.sampled_from([
    "[x](https://evil.example)", "![i](https://evil.example/a.png)", "<at>General</at>", "**b**", "\u202e", "\x00",
    "https://evil.example/?sig=abc", "www.evil.example", "a" * 5000, "é" * 3000, "`code`", "# h", "\n\n- list",
]))
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- KQL helpers ---------------------------------------------------------------------------------

@FAST
@given(ASCII, TERM)
def test_has_matches_a_reference_term_split(haystack: str, needle: str) -> None:
    terms = [t.lower() for t in re.findall(r"[A-Za-z0-9]+", haystack)]
    assert kql.has(haystack, needle) is (needle.lower() in terms)


@FAST
@given(st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz ABC-_./", max_size=20), max_size=6))
def test_has_any_on_lists_follows_the_element_terms(values: list[str]) -> None:
    terms = {t.lower() for v in values for t in re.findall(r"[A-Za-z0-9]+", v)}
    assert kql.has_any(values, ("Success", "Succeeded")) is bool(terms & {"success", "succeeded"})


@FAST
@given(ANY_TEXT, ANY_TEXT)
def test_equals_ci_is_symmetric_and_reflexive(a: str, b: str) -> None:
    assert kql.equals_ci(a, b) is kql.equals_ci(b, a)
    assert kql.equals_ci(a, a)
    assert kql.equals_ci(a.lower(), a.upper()) if a.isascii() else True


@FAST
@given(st.lists(ANY_TEXT, max_size=8))
def test_max_string_is_the_utf16_maximum(values: list[str]) -> None:
    expected = max(values, key=lambda v: v.encode("utf-16-be", "surrogatepass"), default="")
    assert kql.max_string(values) == expected


@FAST
@given(st.integers(min_value=-(10**17), max_value=10**18))
def test_datetimes_round_trip_to_the_tick(ticks: int) -> None:
    assert parse_datetime(format_datetime(ticks)) == ticks


@FAST
@given(ANY_TEXT, st.sampled_from(["/", "@", ""]))
def test_split_and_index_never_crash(value: str, sep: str) -> None:
    if sep:
        parts = kql.split(value, sep)
        assert sep.join(parts) == value
        assert kql.at(parts, len(parts)) is None
        assert kql.at(parts, -1) == parts[-1]


# --- file parsers ---------------------------------------------------------------------------------

HEADER = "TimeGenerated,OperationNameValue,Authorization,CorrelationId,Caller,CallerIpAddress,ActivityStatusValue"
UEBA_COLS = ["TimeGenerated", "EventSource", "ActionType", "UserPrincipalName", "SourceIPLocation",
             "ActivityInsights", "UsersInsights"]


def _run(activity_name: str, activity: bytes, ueba_name: str, ueba_body: bytes, prefilter: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / activity_name).write_bytes(activity)
        (d / ueba_name).write_bytes(ueba_body)
        try:
            source = FileSource(d, prefilter=prefilter)
            data = source.fetch(Window.ending_at(AT))
            result = correlate(data.activity, data.ueba, Window.ending_at(AT))
        except InputError:
            return  # a clear error naming the file: allowed
        assert data.report.malformed_count >= 0
        build_alerts(result.rows)


@FAST
@given(st.lists(st.one_of(ANY_TEXT, st.sampled_from([
    '"11/19/2026, 6:00:00.000 AM",MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION,"{""scope"":""/a/b/c""}",c,a@b.c,1.1.1.1,Succeeded',
    '"unterminated', '""', ",,,,,,,", "\r\n", '"a""b",x']
)), max_size=12), st.booleans())
def test_csv_never_crashes(lines: list[str], prefilter: bool) -> None:
    body = (HEADER + "\r\n" + "\r\n".join(lines)).encode("utf-8", "surrogatepass")
    _run("AzureActivity.csv", body, "BehaviorAnalytics.jsonl", b"", prefilter)


JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                     ANY_TEXT), lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                        st.dictionaries(ANY_TEXT, inner, max_size=3)),
                           max_leaves=8)


@FAST
@given(st.lists(st.one_of(
    st.dictionaries(st.sampled_from([*UEBA_COLS, "Other"]), JSON_VALUES, max_size=8).map(json.dumps),
    ANY_TEXT.map(lambda t: t.replace("\n", " ")),
    st.just(json.dumps({"TimeGenerated": "2026-11-19T05:00:00Z", "EventSource": "Azure AD", "ActionType": "x",
                        "UserPrincipalName": "a@b.c", "SourceIPLocation": "X",
                        "ActivityInsights": {"ActionUncommonlyPerformedByUser": "True"}, "UsersInsights": None}))),
    max_size=10), st.booleans())
def test_jsonl_with_wrong_types_and_missing_columns_never_crashes(lines: list[str], prefilter: bool) -> None:
    _run("AzureActivity.csv", (HEADER + "\r\n").encode(), "BehaviorAnalytics.jsonl",
         "\n".join(lines).encode("utf-8", "surrogatepass"), prefilter)


@FAST
@given(JSON_VALUES)
def test_json_documents_of_any_shape_never_crash(document: Any) -> None:
    _run("AzureActivity.json", json.dumps(document).encode(), "BehaviorAnalytics.jsonl", b"", False)


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash(blob: bytes) -> None:
    _run("AzureActivity.jsonl", blob, "BehaviorAnalytics.csv", blob, True)


# --- allowlist ------------------------------------------------------------------------------------

FIELD = st.sampled_from(["caller", "caller_ip", "subscription", "resource_group", "vm_name", "resource_id",
                         "account_upn_suffix", "correlation_id", "ueba_action_type", "ueba_source_location", "bogus"])
OP = st.sampled_from(["equals", "contains", "startswith", "endswith", "in", "cidr", "regex", "like"])
VALUE = st.one_of(ANY_TEXT, st.lists(ANY_TEXT, max_size=3), st.sampled_from(
    [".*", ".+", "(?s).*", "a|.*", "0.0.0.0/0", "::/0", "10.0.0.0/8", "", " ", "[", "(?i)x*"]), JSON_VALUES)
ENTRY = st.fixed_dictionaries({"id": st.one_of(st.just("e1"), ANY_TEXT), "reason": st.one_of(st.just("r"), ANY_TEXT),
                               "conditions": st.lists(st.fixed_dictionaries({"field": FIELD, "op": OP, "value": VALUE}),
                                                      max_size=3)},
                              optional={"expires_at": st.one_of(ANY_TEXT, st.just("2099-01-01T00:00:00Z")),
                                        "enabled": st.one_of(st.booleans(), ANY_TEXT),
                                        "window": st.one_of(JSON_VALUES, st.just(
                                            {"weekdays": ["Mon"], "start": "00:00", "end": "23:59", "timezone": "UTC"}))})


@FAST
@given(st.lists(st.one_of(ENTRY, JSON_VALUES), max_size=4))
def test_allowlist_never_crashes_and_never_matches_everything(raws: list[Any]) -> None:
    allowlist = Allowlist.load([r if isinstance(r, dict) else {"junk": r} for r in raws], now=AT)
    probe = Alert(key="k", rule_id="r", correlation_id="", caller="", caller_ip="", subscription="", resource_group="",
                  vm_name="", scope="", start=T0, end=T0, account_name="", account_upn_suffix="", rows=())
    # An alert whose every field is empty can only be matched by an entry that matches everything.
    assert allowlist.matching(probe) == []


# --- cards ----------------------------------------------------------------------------------------

def _alert(caller: str, vm: str, location: str, action: str, insights: dict[str, Any], n: int) -> Alert:
    scope = f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{vm}"
    logins = [ueba(T0 - i * 10_000_000, upn=caller + "@x", location=location or "l", action_type=action,
                   insights={"ActionUncommonlyPerformedByUser": "True", **insights}, users=insights)
              for i in range(n)]
    [a] = build_alerts(correlate(run_command(T0, caller=caller + "@x", auth=authorization(scope) + " virtualMachines"),
                                 logins, Window.ending_at(AT)).rows)
    return a


def _benign_text_blocks() -> set[str]:
    benign = _alert("alice", "vm-1", "Lagos, NG", "Sign-in", {"BlastRadius": "High"}, 60)
    one = _alert("bob", "vm-2", "Lagos, NG", "Sign-in", {}, 1)
    wide = _alert("c" * 300, "v" * 300, "Lagos, NG", "Sign-in", {}, 1)
    texts = set()
    for message in (build_alert_card(benign), build_alert_card(one), build_digest_card([benign] * 70),
                    build_digest_card([wide] * 400), build_alert_card(_alert("d", "v", "L" * 300, "S", {}, 300))):
        texts |= {re.sub(r"\d+", "#", t) for w, t in _texts(message["attachments"][0]["content"])
                  if w.startswith("TextBlock")}
    return texts


def _texts(node: Any, kind: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and key in ("text", "title", "url"):
                out.append((f"{node.get('type', kind)}.{key}", value))
            else:
                out += _texts(value, node.get("type", kind))
    elif isinstance(node, list):
        for item in node:
            out += _texts(item, kind)
    return out


OWN_TEXT_BLOCKS: set[str] = set()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(HOSTILE, HOSTILE, HOSTILE, HOSTILE, st.dictionaries(HOSTILE, HOSTILE, max_size=4), st.integers(1, 40))
def test_cards_stay_small_and_uninjectable(caller: str, vm: str, location: str, action: str,
                                           insights: dict[str, Any], n: int) -> None:
    if not OWN_TEXT_BLOCKS:
        OWN_TEXT_BLOCKS.update(_benign_text_blocks())
    alert = _alert(caller, vm, location, action, insights, n)
    for message in (build_alert_card(alert), build_digest_card([alert] * 70)):
        raw = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
        assert len(raw) < MAX_MESSAGE_BYTES
        for where, text in _texts(message["attachments"][0]["content"]):
            assert "<at>" not in text.lower(), where
            assert "\u202e" not in text, where
            assert "\x00" not in text, where
            if where.startswith("TextBlock"):  # markdown is processed here: only our own words
                assert not re.search(r"\[[^\]]*\]\(", text), where
                assert re.sub(r"\d+", "#", text) in OWN_TEXT_BLOCKS, text
            if where.startswith("TextRun"):
                assert "://e" not in text
    argv = shlex.split(allowlist_command(alert))
    assert argv[argv.index("caller") + 2] == alert.caller
