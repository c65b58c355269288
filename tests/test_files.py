"""The file source: every export format, missing columns, malformed rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector.correlate import correlate
from detector.errors import InputError
from detector.sample.exports import WRITERS
from detector.sample.generate import build
from detector.sources.files import FileSource
from detector.window import Window
from tests.builders import AT

ACTIVITY_HEADER = ("TimeGenerated [UTC],OperationNameValue,Authorization,CorrelationId,Caller,CallerIpAddress,"
                   "ActivityStatusValue,Extra")
UEBA_JSONL = json.dumps({
    "TimeGenerated": "2026-11-19T05:30:00Z", "EventSource": "Azure AD", "ActionType": "Sign-in",
    "UserPrincipalName": "alice@contoso.com", "SourceIPLocation": "Lagos, NG",
    "ActivityInsights": {"ActionUncommonlyPerformedByUser": "True"}, "UsersInsights": {"BlastRadius": "High"},
}) + "\n"
AUTH_CSV = ('"{\n  ""scope"": ""/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/'
            'virtualMachines/vm-1""\n}"')


def csv_row(time: str, status: str, correlation_id: str = "c-1", auth: str = AUTH_CSV) -> str:
    return (f'"{time}",MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION,{auth},{correlation_id},'
            f"alice@contoso.com,20.1.2.3,{status},x\r\n")


def make_dir(tmp_path: Path, activity_csv: str, ueba_jsonl: str = UEBA_JSONL) -> Path:
    (tmp_path / "AzureActivity.csv").write_text(activity_csv, encoding="utf-8", newline="")
    (tmp_path / "BehaviorAnalytics.jsonl").write_text(ueba_jsonl, encoding="utf-8")
    return tmp_path


def run(directory: Path):  # type: ignore[no-untyped-def]
    window = Window.ending_at(AT)
    data = FileSource(directory).fetch(window)
    result = correlate(data.activity, data.ueba, window)
    return result, data.report


def test_portal_csv_with_multiline_json_cells(tmp_path: Path) -> None:
    text = ACTIVITY_HEADER + "\r\n" + csv_row("11/19/2026, 6:00:00.000 AM", "Started") + csv_row(
        "11/19/2026, 6:00:47.123 AM", "Succeeded")
    result, report = run(make_dir(tmp_path, text))
    assert report.malformed_count == 0
    [row] = [r.to_dict() for r in result.rows]
    assert row["VirtualMachineName"] == "vm-1"
    assert row["Subscription"] == "s1"
    assert row["EndTime"] == "2026-11-19T06:00:47.123Z"


def test_malformed_csv_rows_are_counted_and_the_rest_is_read(tmp_path: Path) -> None:
    text = (ACTIVITY_HEADER + "\r\n"
            + csv_row("not a time", "Started")  # lines 2-4 (the JSON cell spans 3 lines)
            + 'x,"broken"quote,3\r\n'  # line 5
            + "only,three,fields\r\n"  # line 6
            + csv_row("11/19/2026, 6:00:00.000 AM", "Started")  # lines 7-9
            + csv_row("11/19/2026, 6:00:01.000 AM", "Succeeded", auth='"{never closed'))  # line 10
    text += csv_row("11/19/2026, 6:00:47.000 AM", "Succeeded")  # lines 11-13
    result, report = run(make_dir(tmp_path, text))
    assert report.malformed_count == 4
    locations = [m.location for m in report.malformed]
    assert locations == ["line 2", "line 5", "line 6", "line 10"]
    assert "TimeGenerated" in report.malformed[0].reason
    assert len(result.rows) == 1  # the good rows still make a match


def test_unterminated_quote_loses_one_row_only(tmp_path: Path) -> None:
    text = (ACTIVITY_HEADER + "\r\n"
            + '"11/19/2026, 6:00:00.000 AM,broken\r\n'
            + csv_row("11/19/2026, 6:00:00.000 AM", "Started")
            + csv_row("11/19/2026, 6:00:47.000 AM", "Succeeded"))
    result, report = run(make_dir(tmp_path, text))
    assert [m.location for m in report.malformed] == ["line 2"]
    assert report.rows_read["AzureActivity"] == 2
    assert len(result.rows) == 1


def test_missing_column_is_an_error_naming_file_and_column(tmp_path: Path) -> None:
    header = ACTIVITY_HEADER.replace("CorrelationId,", "")
    make_dir(tmp_path, header + "\r\n")
    with pytest.raises(InputError, match=r"AzureActivity\.csv.*'CorrelationId'"):
        run(tmp_path)


def test_missing_jsonl_column_is_an_error(tmp_path: Path) -> None:
    bad = json.dumps({"TimeGenerated": "2026-11-19T05:30:00Z", "EventSource": "Azure AD"}) + "\n"
    make_dir(tmp_path, ACTIVITY_HEADER + "\r\n", bad)
    with pytest.raises(InputError, match=r"BehaviorAnalytics\.jsonl.*column 'ActionType'"):
        run(tmp_path)


def test_local_time_export_is_refused(tmp_path: Path) -> None:
    make_dir(tmp_path, ACTIVITY_HEADER.replace("[UTC]", "[Local Time]") + "\r\n")
    with pytest.raises(InputError, match="export them in UTC"):
        run(tmp_path)


def test_malformed_jsonl_lines(tmp_path: Path) -> None:
    lines = UEBA_JSONL + "{broken\n" + "[1, 2]\n" + "\n" + UEBA_JSONL.replace("2026-11-19T05:30:00Z", "yesterday")
    make_dir(tmp_path, ACTIVITY_HEADER + "\r\n", lines)
    window = Window.ending_at(AT)
    full = FileSource(tmp_path, prefilter=False).fetch(window)
    list(full.ueba)
    assert [m.location for m in full.report.malformed] == ["line 2", "line 3", "line 5"]
    # The fast path parses only lines that could match: it reports the bad time (line 5 holds "True"
    # and "Azure AD"), and counts the other two as read without parsing them (they could never match).
    fast = FileSource(tmp_path).fetch(window)
    list(fast.ueba)
    assert [m.location for m in fast.report.malformed] == ["line 5"]


def test_rest_json_with_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "AzureActivity.csv").write_text(ACTIVITY_HEADER + "\r\n", encoding="utf-8")
    columns = [{"name": n, "type": "string"} for n in ("TimeGenerated", "EventSource", "ActionType",
                                                         "UserPrincipalName", "SourceIPLocation",
                                                         "ActivityInsights", "UsersInsights")]
    good = ["2026-11-19T05:30:00Z", "Azure AD", "Sign-in", "a@b.c", "X", '{"ActionUncommonlyPerformedByUser":"True"}', "{}"]
    doc = {"tables": [{"name": "PrimaryResult", "columns": columns, "rows": [good, good[:3], "x", good]}]}
    (tmp_path / "BehaviorAnalytics.json").write_text(json.dumps(doc), encoding="utf-8")
    window = Window.ending_at(AT)
    data = FileSource(tmp_path).fetch(window)
    events = list(data.ueba)
    assert len(events) == 2
    assert events[0].activity_insights == {"ActionUncommonlyPerformedByUser": "True"}
    assert [m.location for m in data.report.malformed] == ["row 2", "row 3"]


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not a JSON document"),
    # one object on one line is a JSON Lines row (Azure's PT1H.json blobs are JSON Lines), checked as one
    ('{"something": 1}', "required column is missing"),
    ('{\n"something": 1}', "expected a Log Analytics response"),
    ('{"tables": []}', "no table with columns and rows"),
])
def test_unreadable_json_documents(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "AzureActivity.json").write_text(content, encoding="utf-8")
    (tmp_path / "BehaviorAnalytics.jsonl").write_text(UEBA_JSONL, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        run(tmp_path)


def test_missing_and_ambiguous_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no export of AzureActivity"):
        FileSource(tmp_path)
    make_dir(tmp_path, ACTIVITY_HEADER + "\r\n")
    (tmp_path / "AzureActivity.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="several exports of AzureActivity"):
        FileSource(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        FileSource(tmp_path / "nope")


def test_non_utf8_file(tmp_path: Path) -> None:
    make_dir(tmp_path, ACTIVITY_HEADER + "\r\n")
    (tmp_path / "AzureActivity.csv").write_bytes(ACTIVITY_HEADER.encode() + b"\r\n\xff\xfe,x\r\n")
    with pytest.raises(InputError, match="not UTF-8"):
        run(tmp_path)


@pytest.mark.parametrize("fmt", ["json", "array.json", "jsonl", "csv"])
def test_every_format_gives_the_same_rows(tmp_path: Path, fmt: str) -> None:
    ws = build()
    ext = "json" if fmt == "array.json" else fmt
    WRITERS[fmt](tmp_path / f"AzureActivity.{ext}", "AzureActivity", ws.activity)
    WRITERS[fmt](tmp_path / f"BehaviorAnalytics.{ext}", "BehaviorAnalytics", ws.ueba)
    window = Window.ending_at(ws.at)
    data = FileSource(tmp_path).fetch(window)
    result = correlate(data.activity, data.ueba, window)
    assert data.report.malformed_count == 0
    reference = FileSource(Path(__file__).parents[1] / "detector" / "sample" / "workspace").fetch(window)
    expected = correlate(reference.activity, reference.ueba, window)
    assert [r.to_dict() for r in result.rows] == [r.to_dict() for r in expected.rows]
    assert len(result.rows) > 5


def _jsonl_dir(tmp_path: Path, activity: list[dict], ueba: list[dict]) -> Path:
    (tmp_path / "AzureActivity.jsonl").write_text("".join(json.dumps(r) + "\n" for r in activity), encoding="utf-8")
    (tmp_path / "BehaviorAnalytics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ueba), encoding="utf-8")
    return tmp_path


def _result(directory: Path, prefilter: bool) -> list[dict]:
    window = Window.ending_at(AT)
    data = FileSource(directory, prefilter=prefilter).fetch(window)
    return [r.to_dict() for r in correlate(data.activity, data.ueba, window).rows]


def test_prefilter_keeps_rows_spelled_with_json_escapes(tmp_path: Path) -> None:
    auth = '{"scope": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/virtualMachines/vm-1"}'
    base = {"TimeGenerated": "2026-11-19T06:00:00Z", "Authorization": auth, "CorrelationId": "c-1",
            "Caller": "alice@contoso.com", "CallerIpAddress": "1.2.3.4", "ActivityStatusValue": "Succeeded"}
    lines = [
        # "RUNCOMMAND" written as JSON escapes: no plain needle in the raw line, yet it must match.
        json.dumps({**base, "OperationNameValue": "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION"},
                   ensure_ascii=False).replace("RUNCOMMAND", "\\u0052UNCOMMAND"),
    ]
    ueba_line = json.dumps(json.loads(UEBA_JSONL)).replace("Azure AD", "Azure\\u0020AD")
    (tmp_path / "AzureActivity.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "BehaviorAnalytics.jsonl").write_text(ueba_line + "\n", encoding="utf-8")
    assert len(_result(tmp_path, prefilter=True)) == 1
    assert _result(tmp_path, prefilter=True) == _result(tmp_path, prefilter=False)


def test_prefilter_gives_the_full_parse_result_on_the_sample(tmp_path: Path) -> None:
    ws = build()
    WRITERS["jsonl"](tmp_path / "AzureActivity.jsonl", "AzureActivity", ws.activity)
    WRITERS["jsonl"](tmp_path / "BehaviorAnalytics.jsonl", "BehaviorAnalytics", ws.ueba)
    window = Window.ending_at(ws.at)
    fast, full = FileSource(tmp_path, prefilter=True).fetch(window), FileSource(tmp_path, prefilter=False).fetch(window)
    fast_rows = [r.to_dict() for r in correlate(fast.activity, fast.ueba, window).rows]
    full_rows = [r.to_dict() for r in correlate(full.activity, full.ueba, window).rows]
    assert fast_rows == full_rows
    assert len(fast_rows) == 12
    assert fast.report.rows_read == full.report.rows_read == {"AzureActivity": 524, "BehaviorAnalytics": 191}


def test_prefilter_reports_malformed_candidate_lines_with_numbers(tmp_path: Path) -> None:
    first = json.dumps(dict.fromkeys(("TimeGenerated", "OperationNameValue", "Authorization", "CorrelationId", "Caller", "CallerIpAddress", "ActivityStatusValue"), "x"))
    good = first.replace('"TimeGenerated": "x"', '"TimeGenerated": "2026-11-19T00:00:00Z"').replace(
        '"OperationNameValue": "x"', '"OperationNameValue": "x/runcommand"')
    (tmp_path / "AzureActivity.jsonl").write_text(
        first + '\n{"not": broken}\n{"OperationNameValue": "x/RunCommand/y", broken\n' + good + "\n",
        encoding="utf-8")
    (tmp_path / "BehaviorAnalytics.jsonl").write_text("", encoding="utf-8")
    data = FileSource(tmp_path).fetch(Window.ending_at(AT))
    assert len(list(data.activity)) == 1
    # Line 1 (the header's part) has a bad time; line 2 cannot match and is not parsed; line 3 is reported.
    assert [m.location for m in data.report.malformed] == ["line 1", "line 3"]
    assert data.report.rows_read["AzureActivity"] == 4


def test_a_jsonl_file_without_one_readable_row_is_bad_input_with_or_without_the_scan(tmp_path: Path) -> None:
    # Only line 1 is a scan candidate; a full parse finds lines 2 and 3 unreadable too: both modes refuse.
    bad_time = json.dumps(dict.fromkeys(("TimeGenerated", "OperationNameValue", "Authorization", "CorrelationId",
                                         "Caller", "CallerIpAddress", "ActivityStatusValue"), "x"))
    (tmp_path / "AzureActivity.jsonl").write_text(f'\n{{"not": broken}}\n{bad_time}\n', encoding="utf-8")
    (tmp_path / "BehaviorAnalytics.jsonl").write_text("", encoding="utf-8")
    for prefilter in (True, False):
        with pytest.raises(InputError, match=r"none of its 2 row\(s\) could be read \(first: line 2: not JSON"):
            list(FileSource(tmp_path, prefilter=prefilter).fetch(Window.ending_at(AT)).activity)


def test_object_array_with_bad_items(tmp_path: Path) -> None:
    good = json.loads(UEBA_JSONL)
    (tmp_path / "AzureActivity.csv").write_text(ACTIVITY_HEADER + "\r\n", encoding="utf-8")
    (tmp_path / "BehaviorAnalytics.json").write_text(json.dumps([good, "text", 5, {**good, "TimeGenerated": ""}, good]),
                                                     encoding="utf-8")
    data = FileSource(tmp_path).fetch(Window.ending_at(AT))
    assert len(list(data.ueba)) == 2
    assert [m.location for m in data.report.malformed] == ["item 2", "item 3", "item 4"]
    (tmp_path / "BehaviorAnalytics.json").write_text(json.dumps([{"TimeGenerated": "x"}]), encoding="utf-8")
    with pytest.raises(InputError, match="column 'EventSource'"):
        list(FileSource(tmp_path).fetch(Window.ending_at(AT)).ueba)


@pytest.mark.parametrize("range_bytes", [997, 20_000])
def test_parallel_scan_in_many_ranges_equals_the_full_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             range_bytes: int) -> None:
    from detector.sources import scan
    ws = build()
    WRITERS["jsonl"](tmp_path / "AzureActivity.jsonl", "AzureActivity", ws.activity)
    WRITERS["jsonl"](tmp_path / "BehaviorAnalytics.jsonl", "BehaviorAnalytics", ws.ueba)
    # Force the process pool and tiny ranges (and blocks) on a small file: many range and block edges.
    monkeypatch.setattr(scan, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(scan, "RANGE_BYTES", range_bytes)
    monkeypatch.setattr(scan, "CHUNK", 4096)
    window = Window.ending_at(ws.at)
    fast, full = FileSource(tmp_path).fetch(window), FileSource(tmp_path, prefilter=False).fetch(window)
    fast_rows = [r.to_dict() for r in correlate(fast.activity, fast.ueba, window).rows]
    full_rows = [r.to_dict() for r in correlate(full.activity, full.ueba, window).rows]
    assert fast_rows == full_rows
    assert fast.report.rows_read == full.report.rows_read


def test_scan_ranges_split_on_line_boundaries(tmp_path: Path) -> None:
    from detector.sources.scan import LinePrefilter, scan_range, split_ranges
    path = tmp_path / "f.jsonl"
    lines = [f'{{"n": {i}, "x": "{"runcommand" if i % 7 == 0 else "other"}"}}' for i in range(500)]
    path.write_text("\n".join(lines), encoding="utf-8")  # no newline at the end
    ranges = split_ranges(path, 9)
    assert ranges[0][0] == 0
    assert ranges[-1][1] == path.stat().st_size
    found, total = [], 0
    for start, end in ranges:
        part = scan_range(str(path), start, end, LinePrefilter((b"runcommand",), lower=True), start == 0)
        found += [(total + i, json.loads(line)["n"]) for i, line in part.candidates]
        total += part.lines
    assert total == 500
    assert [n for _, n in found] == [i for i in range(500) if i % 7 == 0]  # line 0 is also the header line
    assert all(i == n for i, n in found)


@pytest.mark.parametrize("average", [40, 3000])
def test_scan_counts_lines_and_numbers_candidates_like_a_plain_split(tmp_path: Path, average: int) -> None:
    """Long lines are counted by Hyperscan callbacks, short ones by bytes.count: both give the plain count."""
    import random

    from detector.sources.scan import CHUNK, LinePrefilter, scan_range
    rng = random.Random(average)
    lines: list[str] = []
    size = 0
    while size < 3 * CHUNK:
        body = "x" * rng.randrange(0, 2 * average)
        lines.append(rng.choice(["", body, body + " RunCommand ", '{"a": "\\u0041"}' + body]))
        size += len(lines[-1]) + 1
    content = "\n".join(lines).encode()  # no newline at the end: the last line still counts
    path = tmp_path / "AzureActivity.jsonl"
    path.write_bytes(content)
    prefilter = LinePrefilter((b"runcommand",), lower=True)
    result = scan_range(str(path), 0, len(content), prefilter, True)
    assert result.lines == len(lines)
    expected = [(i, x.encode()) for i, x in enumerate(lines) if i == 0 or prefilter.wants(x.encode())]
    assert result.candidates == expected
