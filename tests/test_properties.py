"""Property-based tests (hypothesis): hostile and arbitrary input never crashes a run, never makes a
card too big or injectable, never lets an allowlist entry match everything."""

from __future__ import annotations

import gzip
import ipaddress
import json
import re
import shlex
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector import kql
from detector import rules as registry
from detector.alerts import build_alerts
from detector.allowlist import Allowlist
from detector.correlate import correlate, is_run_command, is_suspicious_login
from detector.deliver.teams import MAX_MESSAGE_BYTES, allowlist_command, build_alert_card, build_digest_card
from detector.errors import InputError
from detector.model import Alert
from detector.rule import RULE, Rule, selection_of
from detector.sources.files import FileSource
from detector.timestamps import format_datetime, parse_datetime
from detector.window import Window
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


LOCATION = re.compile(r"(line|row|item) [1-9][0-9]*")


def _run(activity_name: str, activity: bytes, ueba_name: str, ueba_body: bytes, prefilter: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / activity_name).write_bytes(activity)
        (d / ueba_name).write_bytes(ueba_body)
        error: InputError | None = None
        try:
            source = FileSource(d, prefilter=prefilter)
            data = source.fetch(Window.ending_at(AT))
            result = correlate(data.activity, data.ueba, Window.ending_at(AT))
        except InputError as exc:
            error = exc
        if error is not None:  # a clear error naming the file (or the folder): allowed
            assert error.path is not None
            assert str(error).startswith(error.path)
            return
        # Every malformed row is kept with its file and location (these inputs stay under the report's cap).
        assert data.report.malformed_count == len(data.report.malformed)
        for bad in data.report.malformed:
            assert bad.path in (str(d / activity_name), str(d / ueba_name))
            assert LOCATION.fullmatch(bad.location), bad.location
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
    # "+# more UEBA matches" has a singular twin ("+1 more UEBA match") that no fixed alert above shows.
    texts |= {t.replace(" matches ", " match ") for t in texts if "more UEBA matches" in t}
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


# --- hostile shapes reach every parser: 100k-deep nesting, UTF-16, huge lines ----------------------

DEEP = "[" * 100_000 + "]" * 100_000
ACTIVITY_LINE = json.dumps({"TimeGenerated": "2026-11-19T06:00:00Z", "OperationNameValue": "x/RUNCOMMAND/ACTION",
                            "Authorization": "{}", "CorrelationId": "c", "Caller": "a@b.c", "CallerIpAddress": "",
                            "ActivityStatusValue": "Succeeded"})
HOSTILE_LINES = st.sampled_from([
    DEEP, '{"x": ' + DEEP + ', "runcommand": 1}', ACTIVITY_LINE.replace('"c"', DEEP),
    ACTIVITY_LINE.replace('"{}"', json.dumps(DEEP)), ACTIVITY_LINE.replace('"c"', "NaN"),
    ACTIVITY_LINE.replace('"c"', "-Infinity"), ACTIVITY_LINE.replace('"c"', "1e999"),
    ACTIVITY_LINE.replace('"a@b.c"', json.dumps("runcommand " * 300_000)),  # a 3 MB line
    "runcommand" * 200_000, "\\u" * 500_000,  # 2-3 MB lines with a needle or escapes all along
])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.one_of(HOSTILE_LINES, st.just(ACTIVITY_LINE)), min_size=1, max_size=4),
       st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-32"]), st.sampled_from(["jsonl", "json", "csv"]),
       st.booleans())
def test_deep_nesting_foreign_encodings_and_huge_lines_never_crash(lines: list[str], encoding: str, ext: str,
                                                                    prefilter: bool) -> None:
    body = "\n".join(lines) if ext != "csv" else HEADER + "\r\n" + "\r\n".join(lines)
    if ext == "json":
        body = "[" + ",".join(lines) + "]"
    _run(f"AzureActivity.{ext}", body.encode(encoding), "BehaviorAnalytics.jsonl", b"", prefilter)


# --- the JSON Lines prefilter is exactly a full parse ------------------------------------------------

def _escape_some(text: str, picks: list[bool]) -> str:
    """JSON text with some characters of string contents written as \\u escapes (letters of needles too)."""
    out = []
    in_string = False
    escaped = False
    for i, ch in enumerate(text):
        if in_string and not escaped and ch not in '"\\' and picks[i % len(picks)]:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else ch)
            continue
        out.append(ch)
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = in_string
        elif ch == '"':
            in_string = not in_string
    return "".join(out)


OPERATIONS = st.sampled_from(["MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION",
                              "Microsoft.Compute/virtualMachines/runCommand/action",
                              "microsoft.compute/virtualmachines/runcommand/ACTION",
                              "MICROSOFT.COMPUTE/VIRTUALMACHINESCALESETS/VIRTUALMACHINES/RUNCOMMAND/ACTION",
                              "MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE", "Microsoft.Storage/write",
                              # the extension rule's needle, once with KQL case twins (U+017F, U+0131)
                              "Microsoft.Compute/virtualMachines/extensions/write",
                              "MICROSOFT.COMPUTE/VIRTUALMACHINES/EXTEN\u017f\u0131ONS/WRITE"])
AUTHS = st.sampled_from([authorization(), authorization().replace("virtualMachines", "virtualMachineScaleSets"),
                         # without "runCommand" anywhere: an extension write's line must hold "extensions" only
                         authorization().replace("runCommand/action", "extensions/write"), "not json", ""])
ACTIVITY_OBJECTS = st.fixed_dictionaries({
    "TimeGenerated": st.sampled_from(["2026-11-19T06:00:00Z", "2026-11-19T06:00:10Z", "2026-11-19T06:00:20Z",
                                      "2026-11-30T00:00:00Z", "nope"]),
    "OperationNameValue": OPERATIONS, "Authorization": AUTHS, "CorrelationId": st.sampled_from(["c-1", "c-2"]),
    "Caller": st.sampled_from(["alice@contoso.com", "Bob@Contoso.com", "\u00c7a\u011fr\u0131@contoso.com"]),
    "CallerIpAddress": st.sampled_from(["20.1.2.3", ""]),
    "ActivityStatusValue": st.sampled_from(["Started", "Succeeded", "Failed", "Success"])})
UEBA_OBJECTS = st.fixed_dictionaries({
    "TimeGenerated": st.sampled_from(["2026-11-19T05:30:00Z", "2026-11-19T07:00:00Z", "bad"]),
    "EventSource": st.sampled_from(["Azure AD", "azure ad", "AzureAD", "Okta"]),
    "ActionType": st.sampled_from(["Sign-in", "ResourceAccess"]),
    "UserPrincipalName": st.sampled_from(["alice@contoso.com", "bob@contoso.com", "\u00e7a\u011fr\u0131@contoso.com", ""]),
    "SourceIPLocation": st.sampled_from(["Lagos, NG", ""]),
    "ActivityInsights": st.sampled_from([{"ActionUncommonlyPerformedByUser": "True"},
                                         {"ActionUncommonlyPerformedByUser": "False"},
                                         {"ActionUncommonlyPerformedByUser": True},
                                         json.dumps({"ActionUncommonlyPerformedByUser": "True"}), None]),
    "UsersInsights": st.sampled_from([{"BlastRadius": "High"}, None])})


def _lines(objects: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[list[str]]:
    line = st.one_of(
        st.tuples(objects, st.lists(st.booleans(), min_size=1, max_size=7), st.booleans()).map(
            lambda t: _escape_some(json.dumps(t[0], ensure_ascii=t[2]), t[1])),
        objects.map(lambda o: json.dumps(o, indent=1).replace("\n", " ")),
        st.sampled_from(["", "   ", "{broken", "[1, 2]", '"runcommand"', "{\"x\": NaN, \"runcommand\": 1}", "null"]))
    return st.tuples(objects.map(json.dumps), st.lists(line, max_size=12)).map(lambda t: [t[0], *t[1]])


def _filtered(directory: Path, prefilter: bool, rules: tuple[Rule, ...]) -> tuple[list[Any], list[Any], list[Any]]:
    data = FileSource(directory, prefilter=prefilter, selection=selection_of(rules)).fetch(Window.ending_at(AT))
    activity, ueba_events = list(data.activity), list(data.ueba)
    rows = correlate(activity, ueba_events, Window.ending_at(AT), rules=rules).rows
    return ([e for e in activity if any(is_run_command(e, rule) for rule in rules)],
            [e for e in ueba_events if is_suspicious_login(e)], [r.to_dict() for r in rows])


def _assert_prefilter_agrees(folder: Path, rules: tuple[Rule, ...] = (RULE,)) -> None:
    """The scan with the prefilter gives the rows (or the bad-input error) of a full parse."""
    try:
        full = _filtered(folder, False, rules)
    except InputError:
        with pytest.raises(InputError):
            _filtered(folder, True, rules)
        return
    assert _filtered(folder, True, rules) == full


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_lines(ACTIVITY_OBJECTS), _lines(UEBA_OBJECTS), st.sampled_from([(RULE,), registry.ALL_RULES]))
def test_prefilter_on_and_off_give_identical_rows(activity_lines: list[str], ueba_lines: list[str],
                                                  rules: tuple[Rule, ...]) -> None:
    """The seed alone (one needle) and every rule (needles of which a line holds one: runcommand, extensions)."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "AzureActivity.jsonl").write_text("\n".join(activity_lines) + "\n", encoding="utf-8")
        (d / "BehaviorAnalytics.jsonl").write_text("\n".join(ueba_lines), encoding="utf-8")
        _assert_prefilter_agrees(d, rules)


def _as_record(o: dict[str, Any]) -> dict[str, Any]:
    """The row as the Activity Log's storage / event hub record (see detector/sources/activitylog.py)."""
    return {"time": o["TimeGenerated"], "operationName": o["OperationNameValue"], "resultType": o["ActivityStatusValue"],
            "correlationId": o["CorrelationId"], "callerIpAddress": o["CallerIpAddress"],
            "identity": {"authorization": o["Authorization"],
                         "claims": {"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn": o["Caller"]}}}


def _as_event(o: dict[str, Any]) -> dict[str, Any]:
    """The row as the REST API / az CLI event, with an identity (eventDataId) that repeats across rows."""
    return {"eventTimestamp": o["TimeGenerated"], "operationName": {"value": o["OperationNameValue"]},
            "status": {"value": o["ActivityStatusValue"]}, "correlationId": o["CorrelationId"], "caller": o["Caller"],
            "httpRequest": {"clientIpAddress": o["CallerIpAddress"]}, "authorization": o["Authorization"],
            "eventDataId": f"e-{o['ActivityStatusValue']}"}


SHAPED = {"columns": ACTIVITY_OBJECTS, "record": ACTIVITY_OBJECTS.map(_as_record),
          "event": ACTIVITY_OBJECTS.map(_as_event)}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SHAPED)).flatmap(lambda shape: _lines(SHAPED[shape])), _lines(UEBA_OBJECTS),
       st.integers(min_value=1, max_value=3), st.booleans())
def test_prefilter_on_and_off_give_identical_rows_over_shapes_files_and_gz(
        activity_lines: list[str], ueba_lines: list[str], files: int, compressed: bool) -> None:
    """Issue 17's paths: Activity Log records and REST events, several files per table (duplicates across
    them), .gz: the scan still changes nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for k in range(files):
            body = ("\n".join(activity_lines[k::files]) + "\n").encode("utf-8")
            name = f"AzureActivity-{k}.jsonl"
            if compressed:
                (d / f"{name}.gz").write_bytes(gzip.compress(body))
            else:
                (d / name).write_bytes(body)
        (d / "BehaviorAnalytics.jsonl").write_text("\n".join(ueba_lines), encoding="utf-8")
        _assert_prefilter_agrees(d)


def test_escape_helper_hides_needles() -> None:
    hidden = _escape_some(json.dumps({"OperationNameValue": "RUNCOMMAND"}), [True])
    assert "RUNCOMMAND" not in hidden
    assert json.loads(hidden) == {"OperationNameValue": "RUNCOMMAND"}


# --- allowlist breadth: broad entries are always refused, narrow ones never --------------------------

NEVER_EMPTY = ("caller", "subscription", "resource_group", "vm_name", "resource_id", "correlation_id",
               "ueba_action_type", "ueba_source_location")
V4_HALVES = ["0.0.0.0/1,128.0.0.0/1", "0.0.0.0/2,64.0.0.0/2,128.0.0.0/2,192.0.0.0/2",
             ",".join(f"{i * 32}.0.0.0/3" for i in range(8))]
BROAD_CONDITIONS = st.one_of(
    st.tuples(st.sampled_from(NEVER_EMPTY), st.just("regex"),
              st.sampled_from([".+", "..+", ".{1,}", "(?s).+", "[^\\x00]+", "(.)+", ".+|x", "\\PC+|.+", ".*."])),
    st.tuples(st.just("resource_id"), st.just("startswith"), st.sampled_from(["/", "/subscriptions/", "/SUBSCRIPTIONS"])),
    st.tuples(st.just("resource_id"), st.just("contains"),
              st.sampled_from(["/", "microsoft.compute", "/virtualMachines/", "resourcegroups"])),
    st.tuples(st.sampled_from(["subscription", "correlation_id"]), st.just("contains"), st.just("-")),
    st.tuples(st.just("caller_ip"), st.just("cidr"), st.sampled_from(V4_HALVES)),
)
NARROW_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=8, max_size=20)
NARROW_CONDITIONS = st.one_of(
    st.tuples(st.sampled_from((*NEVER_EMPTY, "account_upn_suffix")), st.sampled_from(["equals", "startswith",
                                                                                      "contains", "endswith"]),
              NARROW_TEXT),
    st.tuples(st.sampled_from(NEVER_EMPTY), st.just("in"), st.lists(NARROW_TEXT, min_size=1, max_size=5)),
    st.tuples(st.just("vm_name"), st.just("regex"), NARROW_TEXT.map(lambda t: t + "-[0-9]{2}")),
    st.tuples(st.just("caller_ip"), st.just("cidr"),
              st.tuples(st.integers(0, 2**32 - 1), st.integers(20, 32)).map(
                  lambda t: f"{ipaddress.IPv4Address(t[0])}/{t[1]}")),
)
WEEKEND = {"weekdays": ["Sat", "Sun"], "start": "00:00", "end": "23:59", "timezone": "Europe/Berlin"}


def _entry(conditions: list[tuple[str, str, Any]], window: bool) -> dict[str, Any]:
    raw: dict[str, Any] = {"id": "e", "reason": "r",
                           "conditions": [{"field": f, "op": o, "value": v} for f, o, v in conditions]}
    if window:
        raw["window"] = WEEKEND  # a window bounds when, not what: it never makes a broad entry narrow
    return raw


@settings(max_examples=150, deadline=None)
@given(st.lists(BROAD_CONDITIONS, min_size=1, max_size=3), st.booleans())
def test_broad_entries_are_never_accepted(conditions: list[tuple[str, str, Any]], window: bool) -> None:
    loaded = Allowlist.load([_entry(conditions, window)], now=AT)
    assert loaded.active == []
    [problem] = loaded.problems
    assert "matches (nearly) everything" in problem.problem


@settings(max_examples=150, deadline=None)
@given(NARROW_CONDITIONS, st.lists(st.one_of(BROAD_CONDITIONS, NARROW_CONDITIONS), max_size=2), st.booleans())
def test_narrow_entries_are_never_refused(narrow: tuple[str, str, Any], others: list[tuple[str, str, Any]],
                                          window: bool) -> None:
    loaded = Allowlist.load([_entry([*others, narrow], window)], now=AT)
    assert loaded.problems == []
    assert [e.id for e in loaded.active] == ["e"]
