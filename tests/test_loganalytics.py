"""The Log Analytics source: the real LogsQueryClient over HTTPS to a local fake of the query API."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from detector.cli import EXIT_FAILED, EXIT_OK, main
from detector.correlate import correlate
from detector.errors import SourceError
from detector.pipeline import detect
from detector.sample.generate import build
from detector.sources.files import FileSource
from detector.sources.loganalytics import LogAnalyticsSource, make_client
from detector.timestamps import TICKS_PER_HOUR
from detector.window import Window
from tests.la_fake import LogAnalyticsFake, StaticCredential, log_analytics_fake

WORKSPACE = "11111111-2222-3333-4444-555555555555"
WS = build()
WINDOW = Window.ending_at(WS.at)


@pytest.fixture
def fake() -> LogAnalyticsFake:
    return LogAnalyticsFake(activity=WS.activity, ueba=WS.ueba)


@pytest.fixture
def served(fake: LogAnalyticsFake) -> Iterator[tuple[LogAnalyticsFake, LogAnalyticsSource]]:
    with log_analytics_fake(fake) as (endpoint, ca):
        client = make_client(StaticCredential(), endpoint=endpoint, connection_verify=ca, retry_backoff_factor=0.05)
        yield fake, LogAnalyticsSource(client, WORKSPACE, server_timeout=120)


def file_rows() -> list[dict[str, Any]]:
    from detector.sample.generate import SAMPLE_DIR
    return [r.to_dict() for r in detect(FileSource(SAMPLE_DIR), WINDOW).correlation.rows]


def test_same_rows_as_the_file_source(served: tuple[LogAnalyticsFake, LogAnalyticsSource]) -> None:
    _fake, source = served
    result = detect(source, WINDOW)
    assert [r.to_dict() for r in result.correlation.rows] == file_rows()
    assert result.report.malformed_count == 0


def test_queries_timespans_and_pushdown(served: tuple[LogAnalyticsFake, LogAnalyticsSource]) -> None:
    fake, source = served
    detect(source, WINDOW)
    assert [r.workspace for r in fake.requests] == [WORKSPACE, WORKSPACE]
    first, second = fake.requests
    assert first.query.startswith("AzureActivity\n")
    assert 'OperationNameValue =~ "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION"' in first.query
    assert 'Authorization has "virtualMachines"' in first.query
    assert "datetime(2026-11-18T06:00:00Z)" in first.query
    assert "datetime(2026-11-20T06:00:00Z)" in first.query
    assert first.timespan == second.timespan == "2026-11-18T06:00:00.000Z/2026-11-20T06:00:00.000Z"
    assert "wait=120" in first.prefer
    assert second.query.startswith("BehaviorAnalytics\n")
    # Callers travel as they are; Kusto lower-cases both sides, as the rule's join key does.
    assert 'tolower("Henry.Ops@Contoso.com")' in second.query
    assert "| where tolower(UserPrincipalName) in (tolower(" in second.query
    assert 'tolower("user01@contoso.com")' in second.query  # noise run commands are callers too
    assert 'tolower("leo.other@contoso.com")' in second.query
    # Only what the correlation needs travels: Run Command rows and flagged sign-ins of those callers.
    in_window_activity = sum(1 for r in WS.activity if WINDOW.contains(r["TimeGenerated"]))
    assert fake.rows_returned < in_window_activity / 5


def test_no_second_query_when_no_run_command(fake: LogAnalyticsFake) -> None:
    fake.activity = [r for r in WS.activity if "RUNCOMMAND" not in r["OperationNameValue"].upper()]
    with log_analytics_fake(fake) as (endpoint, ca):
        source = LogAnalyticsSource(make_client(StaticCredential(), endpoint=endpoint, connection_verify=ca), WORKSPACE)
        result = detect(source, WINDOW)
    assert result.alerts == []
    assert len(fake.requests) == 1


def test_partial_result_fails_loudly(fake: LogAnalyticsFake) -> None:
    fake.partial_error_on = "BehaviorAnalytics"
    with log_analytics_fake(fake) as (endpoint, ca):
        source = LogAnalyticsSource(make_client(StaticCredential(), endpoint=endpoint, connection_verify=ca), WORKSPACE)
        with pytest.raises(SourceError, match="partial result") as info:
            detect(source, WINDOW)
    assert info.value.code == "PartialError"


def test_429_with_retry_after_is_retried_by_azure_core(fake: LogAnalyticsFake) -> None:
    fake.failures = [(429, {"Retry-After": "1"}, {"error": {"code": "TooManyRequests", "message": "slow down"}}),
                     (503, {}, {"error": {"code": "ServiceUnavailable", "message": "busy"}})]
    with log_analytics_fake(fake) as (endpoint, ca):
        client = make_client(StaticCredential(), endpoint=endpoint, connection_verify=ca, retry_backoff_factor=0.05)
        result = detect(LogAnalyticsSource(client, WORKSPACE), WINDOW)
    assert len(result.alerts) == 11
    assert len(fake.requests) == 4  # 429, 503, then both queries


def test_persistent_errors_fail_with_the_service_code(fake: LogAnalyticsFake) -> None:
    fake.failures = [(400, {}, {"error": {"code": "BadArgumentError", "message": "syntax"}})]
    with log_analytics_fake(fake) as (endpoint, ca):
        client = make_client(StaticCredential(), endpoint=endpoint, connection_verify=ca)
        with pytest.raises(SourceError) as info:
            detect(LogAnalyticsSource(client, WORKSPACE), WINDOW)
    assert info.value.code == "BadArgumentError"


def test_oversized_results_are_split_until_they_fit(fake: LogAnalyticsFake) -> None:
    fake.row_limit = 8  # the sample holds 66 Run Command rows in the window
    with log_analytics_fake(fake) as (endpoint, ca):
        source = LogAnalyticsSource(make_client(StaticCredential(), endpoint=endpoint, connection_verify=ca), WORKSPACE)
        result = detect(source, WINDOW)
    assert [r.to_dict() for r in result.correlation.rows] == file_rows()
    activity_queries = [r for r in fake.requests if r.query.startswith("AzureActivity")]
    assert len(activity_queries) > 8
    # The halves tile the window exactly: no gap, no overlap.
    from detector.timestamps import parse_datetime
    spans = []
    for r in activity_queries:
        text = r.query.split("TimeGenerated >= datetime(")[1]
        start = parse_datetime(text.split(")")[0])
        end = parse_datetime(text.split("TimeGenerated < datetime(")[1].split(")")[0])
        spans.append((start, end))
    fitting = [s for s in spans if not any(o != s and o[0] >= s[0] and o[1] <= s[1] for o in spans)]
    fitting.sort()
    assert fitting[0][0] == WINDOW.start
    assert fitting[-1][1] == WINDOW.end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(fitting))


def call(argv: list[str], **kw: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(argv, out=out, err=err, **kw), out.getvalue(), err.getvalue()


def test_parity_agrees(served: tuple[LogAnalyticsFake, LogAnalyticsSource]) -> None:
    fake, source = served
    fake.parity_rows = file_rows()  # what Sentinel's own engine answers for the rule on this data
    code, out, _ = call(["parity", "--workspace", WORKSPACE, "--at", "2026-11-20T06:00:00Z"], logs_client=source.client)
    assert code == EXIT_OK, out
    assert "parity: 12 rows from the rule's KQL, 12 from the Python port; no difference" in out
    assert fake.requests[0].query.startswith("AzureActivity\n// Isolate run command actions")


def test_parity_reports_differences(served: tuple[LogAnalyticsFake, LogAnalyticsSource]) -> None:
    fake, source = served
    rows = file_rows()
    rows[0] = {**rows[0], "VirtualMachineName": "other-vm"}
    fake.parity_rows = rows[:-1]
    code, out, _ = call(["parity", "--workspace", WORKSPACE, "--at", "2026-11-20T06:00:00Z"], logs_client=source.client)
    assert code == EXIT_FAILED
    assert "only in the workspace" in out
    assert "only in the Python port" in out
    assert "other-vm" in out


def test_run_against_a_workspace(served: tuple[LogAnalyticsFake, LogAnalyticsSource], tmp_path: Any) -> None:
    _fake, source = served
    code, out, _ = call(["run", "--workspace", WORKSPACE, "--at", "2026-11-20T06:00:00Z", "--no-allowlist", "--json"],
                        logs_client=source.client)
    assert code == EXIT_OK
    assert json.loads(out)["summary"]["alerts"] == 11


def test_run_against_a_failing_workspace_exits_non_zero(fake: LogAnalyticsFake) -> None:
    fake.partial_error_on = "AzureActivity"
    with log_analytics_fake(fake) as (endpoint, ca):
        client = make_client(StaticCredential(), endpoint=endpoint, connection_verify=ca)
        code, out, err = call(["run", "--workspace", WORKSPACE, "--at", "2026-11-20T06:00:00Z"], logs_client=client)
    assert code == EXIT_FAILED
    assert "PartialError" in err
    assert out == ""


def test_window_is_pinned_and_configurable(served: tuple[LogAnalyticsFake, LogAnalyticsSource]) -> None:
    fake, source = served
    window = Window.ending_at(WS.at, hours=24)
    data = source.fetch(window)
    correlate(data.activity, data.ueba, window)
    assert {r.timespan for r in fake.requests} == {"2026-11-19T06:00:00.000Z/2026-11-20T06:00:00.000Z"}
    assert window.end - window.start == 24 * TICKS_PER_HOUR


def test_pushdown_keeps_a_caller_whose_case_mappings_differ() -> None:
    """Python lower-cases U+0130 (İ) to two characters (the detector keeps İ); Kusto's simple mapping gives
    ``i``. Lower-casing the callers in Python and comparing with Kusto's tolower(UserPrincipalName) dropped
    this sign-in before the join (the fake lower-cases as Kusto does)."""
    from tests.builders import SUB

    caller = "\u0130T.ADMIN@contoso.com"
    at = WS.at
    scope = f"/subscriptions/{SUB}/resourceGroups/rg-1/providers/Microsoft.Compute/virtualMachines/vm-tr"
    auth = json.dumps({"scope": scope, "action": "Microsoft.Compute/virtualMachines/runCommand/action"})
    activity = [{"TimeGenerated": at - 5 * TICKS_PER_HOUR + i, "OperationNameValue": "MICROSOFT.COMPUTE/VIRTUALMACHINES/"
                 "RUNCOMMAND/ACTION", "Authorization": auth, "CorrelationId": "c-tr", "Caller": caller,
                 "CallerIpAddress": "20.1.2.3", "ActivityStatusValue": status}
                for i, status in enumerate(("Started", "Succeeded"))]
    ueba = [{"TimeGenerated": at - 6 * TICKS_PER_HOUR, "EventSource": "Azure AD", "ActionType": "Sign-in",
             "UserPrincipalName": caller, "SourceIPLocation": "Ankara, TR",
             "ActivityInsights": {"ActionUncommonlyPerformedByUser": "True"}, "UsersInsights": {}}]
    fake = LogAnalyticsFake(activity=activity, ueba=ueba)
    with log_analytics_fake(fake) as (endpoint, ca):
        client = make_client(StaticCredential(), endpoint=endpoint, connection_verify=ca)
        result = detect(LogAnalyticsSource(client, WORKSPACE), WINDOW)
    assert [(r.caller, r.ueba_source_location) for r in result.correlation.rows] == [(caller, "Ankara, TR")]
    assert fake.rows_returned == 3  # two Run Command rows and the one sign-in
