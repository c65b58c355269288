"""The JSON Lines scan against a full parse, on the inputs a hostile or careless export brings.

The promise (README, ``detector/sources/scan.py``): the scan gives the rows, the malformed-row reports of
candidate lines, the line numbers, the rows-read counts, the duplicates, the warnings and the bad-input
errors of a full parse (``FileSource(prefilter=False)``). Each test builds a small folder and runs both.
Block and range edges are forced with tiny ``CHUNK`` / ``RANGE_BYTES`` instead of large files.
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector import rules as registry
from detector.errors import InputError
from detector.pipeline import detect
from detector.rule import RULE, Rule, selection_of
from detector.sources import scan
from detector.sources.files import FileSource, prefilters
from detector.sources.scan import LinePrefilter, scan_range
from detector.window import Window
from tests.builders import AT, authorization

ACTIVITY: dict[str, Any] = {
    "TimeGenerated": "2026-11-19T06:00:00Z", "OperationNameValue": "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION",
    "Authorization": authorization(), "CorrelationId": "c-1", "Caller": "alice@contoso.com",
    "CallerIpAddress": "20.1.2.3", "ActivityStatusValue": "Succeeded"}
OTHER = {**ACTIVITY, "OperationNameValue": "Microsoft.Storage/storageAccounts/write", "Authorization": "{}",
         "CorrelationId": "c-other"}
UEBA: dict[str, Any] = {
    "TimeGenerated": "2026-11-19T05:30:00Z", "EventSource": "Azure AD", "ActionType": "Sign-in",
    "UserPrincipalName": "alice@contoso.com", "SourceIPLocation": "Lagos, NG",
    "ActivityInsights": {"ActionUncommonlyPerformedByUser": "True"}, "UsersInsights": {"BlastRadius": "High"}}


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


def folder(tmp_path: Path, activity: bytes, ueba: bytes = line(UEBA) + b"\n", *,
           activity_name: str = "AzureActivity.jsonl") -> Path:
    (tmp_path / activity_name).write_bytes(gzip.compress(activity) if activity_name.endswith(".gz") else activity)
    (tmp_path / "BehaviorAnalytics.jsonl").write_bytes(ueba)
    return tmp_path


def outcome(directory: Path, *, prefilter: bool, rules: tuple[Rule, ...] = (RULE,)) -> dict[str, Any]:
    """Everything a run reports about its input: summary figures, warnings, malformed rows, rows; or the error."""
    try:
        result = detect(FileSource(directory, prefilter=prefilter, selection=selection_of(rules)),
                        Window.ending_at(AT), rules=rules)
    except InputError as exc:
        return {"error": str(exc)}
    summary = result.summary()
    return {"rows": [r.to_dict() for r in result.correlation.rows], "warnings": result.warnings,
            "malformed": [(m.location, m.reason) for m in result.report.malformed],
            "malformed_at": [(Path(m.path).name, m.location, m.reason) for m in result.report.malformed],
            **{k: summary[k] for k in ("rows_read", "malformed_rows", "duplicates_skipped", "ueba_boolean_flags")}}


def assert_same(directory: Path, rules: tuple[Rule, ...] = (RULE,)) -> dict[str, Any]:
    """For inputs whose malformed lines are all scan candidates, the two modes agree on everything."""
    full = outcome(directory, prefilter=False, rules=rules)
    assert outcome(directory, prefilter=True, rules=rules) == full
    return full


# --- rows read -------------------------------------------------------------------------------------------

def test_rows_read_counts_every_line_in_both_modes(tmp_path: Path) -> None:
    """Blank, whitespace-only, unparseable and non-object lines: the scan cannot tell them from rows without
    parsing them, so in both modes a JSON Lines file reads as many rows as it has lines."""
    body = b"\n".join([line(OTHER), b"", b"   \t", b"{broken", b"[1, 2]", b"null", line(ACTIVITY), b""]) + b"\n"
    directory = folder(tmp_path, body)
    fast, full = outcome(directory, prefilter=True), outcome(directory, prefilter=False)
    assert fast["rows_read"] == full["rows_read"] == {"AzureActivity": 8, "BehaviorAnalytics": 1}
    assert fast["rows"] == full["rows"]
    assert len(full["rows"]) == 1
    # The full parse also reports the malformed lines that cannot match; the scan leaves them unparsed.
    assert [m[0] for m in full["malformed"]] == ["line 4", "line 5", "line 6"]
    assert fast["malformed"] == []


def test_rows_read_of_empty_and_blank_files_agree(tmp_path: Path) -> None:
    for body in (b"", b"\n", b"\n\n  \n"):
        assert_same(folder(tmp_path, line(ACTIVITY) + b"\n", body))


# --- the header's part -----------------------------------------------------------------------------------

@pytest.mark.parametrize("first", [b"", b"   ", b"{broken", b"[1, 2]", b"null", b'"runcommand"'])
def test_the_first_object_plays_the_header_even_when_line_1_is_not_one(tmp_path: Path, first: bytes) -> None:
    """A full parse checks the columns of the file's first *object*; with line 1 blank or malformed that is
    line 2, which holds no needle. The scan must check the same line, not its first candidate."""
    directory = folder(tmp_path, first + b"\n" + b'{"x": 1}\n' + line(ACTIVITY) + b"\n")
    full = assert_same(directory)
    assert "required column is missing" in full["error"]


def test_a_header_search_across_blocks_and_ranges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(scan, "RANGE_BYTES", 64)
    monkeypatch.setattr(scan, "CHUNK", 16)
    body = b"{broken}\n" * 30 + line(OTHER) + b"\n" + b"\n" * 10 + line(ACTIVITY) + b"\n" + b'["runcommand"]\n' * 20
    full = assert_same(folder(tmp_path, body))
    assert full["rows_read"]["AzureActivity"] == 62
    assert len(full["rows"]) == 1
    assert [m[0] for m in full["malformed"]][:2] == ["line 1", "line 2"]


# --- line breaks and encodings ---------------------------------------------------------------------------

def test_a_lone_carriage_return_is_whitespace_not_a_line_break(tmp_path: Path) -> None:
    """JSON Lines ends a line at \\n (\\r\\n included); a lone \\r between JSON tokens is JSON whitespace. A full
    parse in Python's universal-newline text mode split such a line in two malformed ones."""
    spaced = line(ACTIVITY).replace(b', "Caller"', b',\r"Caller"')
    full = assert_same(folder(tmp_path, line(OTHER) + b"\r\n" + spaced + b"\r\n" + line(ACTIVITY) + b"\n"))
    assert full["rows_read"]["AzureActivity"] == 3
    assert full["malformed"] == []


def test_a_byte_order_mark_counts_only_at_the_start_of_the_file(tmp_path: Path) -> None:
    """The scan decoded a candidate line as ``json.loads`` decodes bytes, skipping a BOM anywhere (two files
    concatenated); a full parse reads text, where a BOM after line 1 is not JSON."""
    body = b"\xef\xbb\xbf" + line(OTHER) + b"\n\xef\xbb\xbf" + line(ACTIVITY) + b"\n"
    full = assert_same(folder(tmp_path, body))
    assert [m[0] for m in full["malformed"]] == ["line 2"]
    assert full["rows"] == []


def test_a_utf16_line_is_not_read_by_the_scan_alone(tmp_path: Path) -> None:
    """An attacker's line in UTF-16: U+755C U+3030 U+3237 are the bytes ``\\u0072`` (an escaped r, of the needle),
    which make the line a scan candidate, and ``json.loads`` on bytes guesses UTF-16 from the NULs. Read as
    UTF-8 (what the file is), it is not JSON."""
    forged = json.dumps({**ACTIVITY, "Caller": "alice@contoso.com\u755c\u3030\u3237"},
                        ensure_ascii=False).encode("utf-16-le")
    assert b"\\u0072" in forged
    # Enough UTF-8 lines first that the file is not refused as UTF-16 (check_utf8_text reads its head).
    full = assert_same(folder(tmp_path, (line(OTHER) + b"\n") * 20 + forged + b"\n"))
    assert full["rows"] == []
    assert [m[0] for m in full["malformed"]] == ["line 21"]


def test_a_line_that_is_not_utf8_is_a_malformed_row_in_both_modes(tmp_path: Path) -> None:
    """One bad byte costs one row (never the run), the same row in both modes."""
    bad = line(ACTIVITY).replace(b"alice", b"al\xffce")
    full = assert_same(folder(tmp_path, line(OTHER) + b"\n" + bad + b"\n" + line(ACTIVITY) + b"\n"))
    assert [m[0] for m in full["malformed"]] == ["line 2"]
    assert "UTF-8" in full["malformed"][0][1]
    assert len(full["rows"]) == 1
    # Not a candidate: the full parse reports it, the scan does not read it; the rows are the same.
    directory = folder(tmp_path, line(OTHER) + b"\n" + line(OTHER).replace(b"alice", b"al\xffce") + b"\n"
                       + line(ACTIVITY) + b"\n")
    fast, full = outcome(directory, prefilter=True), outcome(directory, prefilter=False)
    assert fast["rows"] == full["rows"]
    assert len(full["rows"]) == 1
    assert [m[0] for m in full["malformed"]] == ["line 2"]
    assert fast["malformed"] == []


def test_a_file_without_one_utf8_line_is_still_bad_input(tmp_path: Path) -> None:
    body = line(ACTIVITY).replace(b"alice", b"al\xe9ce") + b"\n"
    assert "none of its 1 row(s) could be read (first: line 1: not UTF-8" in assert_same(folder(tmp_path, body))["error"]


# --- the UEBA prefilter ----------------------------------------------------------------------------------

def test_a_boolean_insight_flag_is_counted_and_warned_about_with_the_scan_too(tmp_path: Path) -> None:
    """The rule wants the string "True"; a JSON ``true`` never matches but is counted (ueba_boolean_flags) and
    warned about. The scan dropped such lines (no "True" in them), and with them the warning."""
    flagged = line({**UEBA, "ActivityInsights": {"ActionUncommonlyPerformedByUser": True}})
    full = assert_same(folder(tmp_path, line(ACTIVITY) + b"\n", line(UEBA) + b"\n" + flagged + b"\n"))
    assert full["ueba_boolean_flags"] == 1
    assert any("JSON boolean" in w for w in full["warnings"])


def test_ueba_lines_with_only_one_of_the_needles(tmp_path: Path) -> None:
    lines = [line(UEBA), line({**UEBA, "EventSource": "Okta"}),
             line({**UEBA, "ActivityInsights": {"ActionUncommonlyPerformedByUser": "False"}}),
             line({**UEBA, "EventSource": "Azure\u0020AD"}).replace(b"Azure AD", b"Azure\\u0020AD")]
    full = assert_same(folder(tmp_path, line(ACTIVITY) + b"\n", b"\n".join(lines)))
    assert len(full["rows"]) == 2


# --- rules and needles -----------------------------------------------------------------------------------

@pytest.mark.parametrize("rules", [registry.ALL_RULES, (registry.VM_EXTENSION_WRITE,)])
def test_extension_lines_holding_only_extensions_or_its_twins(tmp_path: Path, rules: tuple[Rule, ...]) -> None:
    ext = {**ACTIVITY, "OperationNameValue": "Microsoft.Compute/virtualMachines/extensions/write",
           "Authorization": authorization().replace("runCommand/action", "extensions/write")}
    twin = {**ext, "OperationNameValue": "MICROSOFT.COMPUTE/VIRTUALMACHINES/EXTEN\u017f\u0131ONS/WRITE",
            "CorrelationId": "c-twin"}
    body = b"\n".join([line(OTHER), line(ext), json.dumps(twin, ensure_ascii=False).encode(), b"{extensions"])
    full = assert_same(folder(tmp_path, body + b"\n"), rules)
    assert len(full["rows"]) == 2
    assert [m[0] for m in full["malformed"]] == ["line 4"]


# --- blocks, ranges, files -------------------------------------------------------------------------------

def _plain(body: bytes, prefilter: LinePrefilter) -> tuple[int, list[tuple[int, bytes]]]:
    lines = body.split(b"\n")[:-1] if body.endswith(b"\n") or not body else body.split(b"\n")
    return len(lines), [(i, x) for i, x in enumerate(lines) if i == 0 or prefilter.wants(x)]


@pytest.mark.parametrize("body", [
    b"x" * 10 + b"runcommand" + b"y" * 20 + b"\n",       # the needle straddles the first block edge
    b"x" * 15 + b"\\u0041\n" + b"z" * 40,                   # an escape across the edge; no final newline
    b"x" * 15 + b"\n" + b"a" * 31 + b"\n" + b"RUNCOMMAND",   # a line exactly a block long, then a needle
    b"x" * 14 + "ext\u0131".encode() + b"\r\n\r\n",         # a twin's two bytes on either side of the edge
    b"\n" * 40 + b"runCommand\n",                            # many blank lines
])
def test_blocks_edges_change_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: bytes) -> None:
    monkeypatch.setattr(scan, "CHUNK", 16)
    path = tmp_path / "f.jsonl"
    path.write_bytes(body)
    prefilter = LinePrefilter((b"runcommand", b"extensions"), lower=True, twins=("\u0131".encode(), "\u017f".encode()))
    result = scan_range(str(path), 0, len(body), prefilter, True)
    assert (result.lines, result.candidates) == _plain(body, prefilter)


def test_many_files_gz_and_empty_on_the_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(scan, "RANGE_BYTES", 200)
    monkeypatch.setattr(scan, "CHUNK", 64)
    rows = [line({**ACTIVITY, "CorrelationId": f"c-{i % 3}", "ActivityStatusValue": s})
            for i, s in enumerate(["Started", "Succeeded"] * 5)]
    for k in range(4):
        body = b"\n".join([line(OTHER), b"", *rows[k::2], b"{runcommand"]) + b"\r\n"
        (tmp_path / f"AzureActivity-{k}.jsonl").write_bytes(body)
    (tmp_path / "AzureActivity-4.jsonl.gz").write_bytes(gzip.compress(b"\n".join(rows) + b"\n"))
    (tmp_path / "AzureActivity-5.jsonl").write_bytes(b"")
    (tmp_path / "BehaviorAnalytics.jsonl").write_bytes(line(UEBA) + b"\n")
    full = assert_same(tmp_path)
    assert full["rows_read"]["AzureActivity"] == 8 + 8 + 7 + 7 + 10
    assert len(full["malformed"]) == 4


# --- warnings --------------------------------------------------------------------------------------------

def test_the_outside_the_window_warning_is_the_same_with_the_scan(tmp_path: Path) -> None:
    """Run commands only last week, other operations today: a full parse saw rows in the window and stayed
    quiet, the scan saw only the run commands and warned that no row falls in the window (a false alarm
    naming a count of rows it never read). The warning is about the rows the rules select, in both modes."""
    old = line({**ACTIVITY, "TimeGenerated": "2026-11-10T06:00:00Z"})
    body = b"\n".join([old, line(OTHER), line(OTHER), old]) + b"\n"
    assert assert_same(folder(tmp_path, body))["warnings"] == [
        "none of the AzureActivity rows the rules select falls in the window 2026-11-18T06:00:00Z .. "
        "2026-11-20T06:00:00Z; for a replay, give --at the export's run time"]
    # No row any rule selects: no alert is possible in any window, so nothing to warn about.
    assert assert_same(folder(tmp_path, b"\n".join([line(OTHER)] * 3) + b"\n"))["warnings"] == []
    # One selected row in the window: no warning either.
    assert assert_same(folder(tmp_path, body + line(ACTIVITY) + b"\n"))["warnings"] == []


# --- the property: everything but unparsed lines' reports, over mixtures of the lines above ----------------

_EXT = {**ACTIVITY, "OperationNameValue": "Microsoft.Compute/virtualMachines/extensions/write",
        "Authorization": authorization().replace("runCommand/action", "extensions/write"), "CorrelationId": "c-ext"}
ACTIVITY_LINES = [line(ACTIVITY), line({**ACTIVITY, "ActivityStatusValue": "Started"}), line(OTHER), line(_EXT),
                  line({**ACTIVITY, "TimeGenerated": "2026-11-10T06:00:00Z"}), line({**ACTIVITY, "TimeGenerated": "x"}),
                  # (duplicates of lines the scan does not parse are not counted with the scan: README, by design)
                  line({**ACTIVITY, "EventDataId": "e-1"}),
                  line(ACTIVITY).replace(b"RUNCOMMAND", b"RUNCOMM\\u0041ND"), b"", b"  \r", b"{broken", b"{runcommand",
                  b"[1]", b'{"x": 1}', b'{"x": "extensions"}', b"\xef\xbb\xbf" + line(ACTIVITY),
                  line(ACTIVITY).replace(b"alice", b"al\xffce"), line(OTHER).replace(b"alice", b"al\xffce"),
                  line(ACTIVITY).replace(b', "Caller"', b',\r"Caller"'), line(ACTIVITY) + b"\r"]
UEBA_LINES = [line(UEBA), line({**UEBA, "ActivityInsights": {"ActionUncommonlyPerformedByUser": True}}),
              line({**UEBA, "EventSource": "Okta"}), line({**UEBA, "UserPrincipalName": "bob@contoso.com"}),
              line({**UEBA, "TimeGenerated": "bad"}), b"", b"{broken True", b'{"EventSource": "Azure AD"}']


def _parsed_lines(body: bytes, prefilter: LinePrefilter) -> set[int]:
    """The line numbers the scan parses: its candidates and the lines up to the first object."""
    lines = body.split(b"\n")
    wanted = {n for n, raw in enumerate(lines, start=1) if prefilter.wants(raw)}
    for n, raw in enumerate(lines, start=1):
        wanted.add(n)
        try:
            if isinstance(json.loads(raw.decode("utf-8-sig" if n == 1 else "utf-8")), dict):
                break
        except ValueError:
            continue
    return wanted


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(ACTIVITY_LINES), max_size=14), st.lists(st.sampled_from(UEBA_LINES), max_size=6),
       st.sampled_from([b"\n", b"\r\n", b""]), st.sampled_from([(RULE,), registry.ALL_RULES]),
       st.sampled_from([8, 64, 1 << 20]))
def test_scan_and_full_parse_agree_on_everything_they_both_read(
        activity: list[bytes], ueba: list[bytes], end: bytes, rules: tuple[Rule, ...], chunk: int) -> None:
    activity_body = b"\n".join(activity) + (end if activity else b"")
    ueba_body = b"\n".join(ueba) + b"\n"
    saved = scan.CHUNK
    scan.CHUNK = chunk  # not monkeypatch: hypothesis runs many examples in one test call
    try:
        with tempfile.TemporaryDirectory() as tmp:
            directory = folder(Path(tmp), activity_body, ueba_body)
            fast, full = outcome(directory, prefilter=True, rules=rules), outcome(directory, prefilter=False, rules=rules)
    finally:
        scan.CHUNK = saved
    if "error" in full:
        assert fast == full
        return
    table_prefilters = prefilters(selection_of(rules))
    parsed = {"AzureActivity.jsonl": _parsed_lines(activity_body, table_prefilters["AzureActivity"]),
              "BehaviorAnalytics.jsonl": _parsed_lines(ueba_body, table_prefilters["BehaviorAnalytics"])}
    reported = [m for m in full["malformed_at"] if int(m[1].split()[1]) in parsed[m[0]]]
    assert fast["malformed_at"] == reported
    assert fast["malformed_rows"] == len(reported)
    for key in ("rows", "rows_read", "duplicates_skipped", "ueba_boolean_flags"):
        assert fast[key] == full[key], key
    skipped = re.compile(r"\d+ malformed row\(s\) skipped")
    assert [w for w in fast["warnings"] if not skipped.fullmatch(w)] == [
        w for w in full["warnings"] if not skipped.fullmatch(w)]


@pytest.mark.parametrize("first", [b"", b"{broken"])
def test_an_older_schema_file_is_parsed_whole_even_when_line_1_is_not_an_object(tmp_path: Path, first: bytes) -> None:
    """The older schema's display names hold no needle, so such a file is never scanned; which schema a file
    has is told by its first object, not by line 1 (a blank line 1 made it look scannable)."""
    def older(operation: str) -> bytes:
        row = {k: v for k, v in OTHER.items() if k not in ("OperationNameValue", "ActivityStatusValue")}
        return line({**row, "OperationName": operation, "ActivityStatus": "Succeeded"})
    body = b"\n".join([first, older("Microsoft.Compute/virtualMachines/write"),
                       older("Run Command on Virtual Machine")]) + b"\n"
    assert "az monitor activity-log list" in assert_same(folder(tmp_path, body))["error"]


def test_a_file_that_starts_with_a_bom_and_a_blank_line(tmp_path: Path) -> None:
    full = assert_same(folder(tmp_path, b"\xef\xbb\xbf\r\n" + line(ACTIVITY) + b"\r\n"))
    assert full["malformed"] == []
    assert len(full["rows"]) == 1


# --- escapes that cannot spell a needle --------------------------------------------------------------------

def test_only_escapes_that_could_spell_a_needle_make_a_line_a_candidate(tmp_path: Path) -> None:
    """.NET writes ' as \\u0027 (Azure's error messages are full of them): a line holding only such escapes
    cannot hide a needle, and reading every such line whole cost 7x the scan time and memory growing with the
    file. An escape of a needle's letter (hex digits in either case) or of a twin still counts."""
    prefilter = prefilters(selection_of(registry.ALL_RULES))["AzureActivity"]
    assert not prefilter.wants(b'{"m": "The client \\u0027x\\u0027 has no \\u003cright\\u003e"}')
    assert not prefilter.wants(b'{"m": "C:\\\\users"}')
    for hidden in (b"RUNCOMM\\u0041ND", b"run\\u0063ommand", b"exte\\u006Esions", b"EXTEN\\u017fIONS",
                   b"exten\\u017Fions", b"extens\\u0131ons", b"\\u0072uncommand"):
        assert prefilter.wants(b'{"OperationNameValue": "' + hidden + b'"}'), hidden
    ueba = prefilters(selection_of((RULE,)))["BehaviorAnalytics"]
    assert ueba.wants(b'{"EventSource": "Azure\\u0020AD"}')
    assert not ueba.wants(b'{"EventSource": "Okta", "x": "\\u0027"}')
    body = b"".join(b'{"n": %d, "m": "\\u0027%s"}\n' % (i, b"runcommand" if i % 5 == 0 else b"")
                    for i in range(50))
    path = tmp_path / "f.jsonl"
    path.write_bytes(body)
    assert [i for i, _ in scan_range(str(path), 0, len(body), prefilter, True).candidates] == list(range(0, 50, 5))


def test_an_upper_case_u_is_no_json_escape_for_the_scan_either(tmp_path: Path) -> None:
    """JSON writes ``\\u`` only; LinePrefilter.wants and the scan must agree on ``\\U0041`` (neither wants it)."""
    prefilter = prefilters(selection_of((RULE,)))["AzureActivity"]
    body = b'{"a": 1}\n{"m": "\\U0041"}\n{"m": "\\u004E"}\n'
    path = tmp_path / "f.jsonl"
    path.write_bytes(body)
    assert [i for i, _ in scan_range(str(path), 0, len(body), prefilter, True).candidates] == [0, 2]
    assert not prefilter.wants(b'{"m": "\\U0041"}')
