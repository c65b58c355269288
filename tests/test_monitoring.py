"""The Azure Monitor path (infra/modules/monitoring.bicep): the module passes the general Bicep checker
(tests/bicep_check.py: references, lambdas, bodies against the compiler's type definitions), which is
shown to fail on faults planted in this module; the alert queries analyse cleanly with Microsoft's Kusto
language service against Application Insights' ``traces`` schema; every field they read is a key of the
one-line JSON the daily run really logs, found by the prefix the queries look for; and main.bicep wires
the module."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from detector import functions, health
from detector.errors import InputError, SourceError
from detector.functions import daily_run
from detector.sample.generate import build, write
from detector.timestamps import parse_datetime
from tests import bicep_check
from tests.test_kql_language_service import ROOT, analyse

MODULE = ROOT / "infra" / "modules" / "monitoring.bicep"
TYPES = bicep_check.default_types_root()
# Application Insights' classic `traces` table (what a rule scoped to the component queries).
TRACES = [("timestamp", "datetime"), ("message", "string"), ("severityLevel", "int"), ("itemType", "string"),
          ("customDimensions", "dynamic"), ("customMeasurements", "dynamic"), ("operation_Name", "string"),
          ("operation_Id", "string"), ("operation_ParentId", "string"), ("operation_SyntheticSource", "string"),
          ("session_Id", "string"), ("user_Id", "string"), ("user_AuthenticatedId", "string"),
          ("user_AccountId", "string"), ("application_Version", "string"), ("client_Type", "string"),
          ("client_Model", "string"), ("client_OS", "string"), ("client_IP", "string"), ("client_City", "string"),
          ("client_StateOrProvince", "string"), ("client_CountryOrRegion", "string"), ("client_Browser", "string"),
          ("cloud_RoleName", "string"), ("cloud_RoleInstance", "string"), ("appId", "string"), ("appName", "string"),
          ("iKey", "string"), ("sdkVersion", "string"), ("itemId", "string"), ("itemCount", "int")]
AT = "2026-11-20T06:00:00Z"


def module() -> bicep_check.BicepFile:
    return bicep_check.parse_file(MODULE)


def declared(bicep: bicep_check.BicepFile, name: str) -> bicep_check.Decl:
    return next(d for d in bicep.decls if d.name == name)


def body(bicep: bicep_check.BicepFile, name: str) -> bicep_check.Obj:
    value = bicep_check.Checker._body(declared(bicep, name).value)
    assert isinstance(value, bicep_check.Obj)
    return value


def field(obj: bicep_check.Node | None, *path: str) -> bicep_check.Node:
    for key in path:
        assert isinstance(obj, bicep_check.Obj), key
        obj = obj.get(key)
    assert obj is not None, path
    return obj


# --- the general Bicep checker on this module, and proof that it fails on this module's faults ----------

def test_module_passes_the_bicep_checker() -> None:
    types = {d.type_name for d in module().decls if d.kind == "resource"}
    assert types == {"Microsoft.Insights/actionGroups@2023-01-01", "Microsoft.Insights/scheduledQueryRules@2023-12-01"}
    assert [str(p) for p in bicep_check.check_files([MODULE], TYPES)] == []


# Each edit plants faults in a copy of the module; the checker must report exactly these.
PLANTED = {
    "threshold not a number": ("threshold: 1\n", "threshold: 'one'\n", ["threshold: expects int, got 'one'"]),
    "severity as a word": ("severity: 1\n", "severity: 'high'\n", ["severity: expects int, got 'high'"]),
    "misspelt property": ("evaluationFrequency: 'PT1H'\n    windowSize: 'P2D'",
                          "evaluationFrequencyy: 'PT1H'\n    windowSize: 'P2D'",
                          ["unknown property 'evaluationFrequencyy'"]),
    "read-only property": ("autoMitigate: true\n", "autoMitigate: true\n    isLegacyLogAnalyticsRule: true\n",
                           ["property 'isLegacyLogAnalyticsRule' is read-only"]),
    "required property removed": ("    groupShortName: 'detectoroc'\n", "",
                                  ["required property 'groupShortName' is missing"]),
    "misspelt receiver field": ("emailAddress: address", "emailAdress: address",
                                ["unknown property 'emailAdress'", "required property 'emailAddress' is missing"]),
    "lambda reads an unknown name": ("url => !empty(trim(url))", "url => !empty(trim(uri))", ["unknown name 'uri'"]),
}


@pytest.mark.parametrize("fault", sorted(PLANTED))
def test_the_checker_fails_on_faults_planted_in_this_module(fault: str, tmp_path: Path) -> None:
    old, new, expected = PLANTED[fault]
    text = MODULE.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    broken = tmp_path / "monitoring.bicep"
    broken.write_text(text.replace(old, new), encoding="utf-8")
    problems = [p.message for p in bicep_check.check_files([broken], TYPES)]
    assert len(problems) == len(expected), problems
    for message in expected:
        assert any(message in p for p in problems), (message, problems)


def test_receivers_and_thresholds_are_parameters() -> None:
    bicep = module()
    params = {d.name: d for d in bicep.decls if d.kind == "param"}
    assert params["emailAddresses"].type_name == "array"
    assert [c.name for c in params["webhookUrls"].decorators] == ["description", "secure"]  # a URL may carry a key
    receivers = field(body(bicep, "onCall"), "properties")
    for key, source in (("emailReceivers", "emailAddresses"), ("webhookReceivers", "webhooks")):
        loop = field(receivers, key)
        assert isinstance(loop, bicep_check.ForExpr)
        assert isinstance(loop.iterable, bicep_check.Ref)
        assert loop.iterable.name == source
    webhooks = declared(bicep, "webhooks").value
    assert isinstance(webhooks, bicep_check.Call)
    assert webhooks.name == "filter"  # blank lines of the parameter are not receivers
    assert {r.name for r in bicep_check.free_refs(webhooks)} == {"webhookUrls"}
    for rule in ("noSuccessfulRun", "failedRun", "allowlistOverBudget"):
        properties = field(body(bicep, rule), "properties")
        scopes = field(properties, "scopes")
        assert isinstance(scopes, bicep_check.Arr)
        assert [r.name for r in scopes.items if isinstance(r, bicep_check.Ref)] == ["appInsightsId"]
        group = field(properties, "actions", "actionGroups")
        assert isinstance(group, bicep_check.Arr)
        assert bicep_check.member_chain(group.items[0]) == ("onCall", ["id"])
    criteria = field(body(bicep, "failedRun"), "properties", "criteria", "allOf")
    assert isinstance(criteria, bicep_check.Arr)
    dimensions = field(criteria.items[0], "dimensions")
    assert isinstance(dimensions, bicep_check.Arr)
    names = [field(d, "name") for d in dimensions.items]
    assert [n.value for n in names if isinstance(n, bicep_check.Lit)] == ["Stage", "Code"]  # one alert per pair
    assert all(f"{name} = " in queries()["failed run"] for name in ("Stage", "Code"))


# --- the alert queries: Kusto language service, and what the daily run really logs -------------------

def queries(silence_hours: int = 26) -> dict[str, str]:
    texts = {}
    for label, name in (("no successful run", "noRunQueryTemplate"), ("failed run", "failedRunQuery"),
                        ("allowlist over budget", "allowlistOverBudgetQuery")):
        value = declared(module(), name).value
        assert isinstance(value, bicep_check.Lit)
        assert isinstance(value.value, str)
        texts[label] = value.value
    texts["no successful run"] = texts["no successful run"].replace("{silenceHours}", str(silence_hours))
    return texts


def test_alert_queries_analyse_cleanly_against_the_traces_schema_and_the_check_can_fail() -> None:
    texts = queries()
    broken = [texts["no successful run"].replace("timestamp", "TimeGenerated"),
              texts["failed run"].replace("| project", "| projekt"),
              queries()["no successful run"].replace("ago(26h)", "ago({silenceHours}h)"),
              texts["failed run"].replace("substring(message,", "substring(messages,"),
              texts["allowlist over budget"].replace("strcat_array(", "strcat_arrays(")]
    results = analyse([*texts.values(), *broken], tables={"traces": TRACES})
    assert results[:3] == [[], [], []]
    assert all(results[3:]), results[3:]


def read_by(query: str) -> tuple[str, set[str]]:
    """The prefix a query looks for (the same in its `startswith` and its `strlen`) and the JSON keys it reads."""
    [prefix] = set(re.findall(r'message startswith "([^"]*)"', query))
    assert re.findall(r'substring\(message, strlen\("([^"]*)"\)\)', query) == [prefix]
    [variable] = re.findall(r"\| extend (\w+) = parse_json\(substring\(message", query)
    return prefix, set(re.findall(rf"\b{variable}\.(\w+)", query))


def kql_startswith(message: str, prefix: str) -> bool:
    return message.lower().startswith(prefix.lower())  # Kusto's startswith ignores case


def parsed(message: str, prefix: str) -> dict[str, Any]:
    """What `parse_json(substring(message, strlen(prefix)))` sees, parsed as strict standard JSON."""
    assert "\n" not in message, message  # one line,
    assert message.isascii(), message  # and no character another parser would split on

    def refuse(constant: str) -> None:
        raise AssertionError(f"not standard JSON: {constant}")

    data = json.loads(message[len(prefix):], parse_constant=refuse)
    assert isinstance(data, dict)
    return data


def logged(caplog: pytest.LogCaptureFixture, prefix: str) -> list[str]:
    """The messages Application Insights gets: the worker's handler formats each record with logging's
    default formatter (the message, plus a traceback when the record has one)."""
    formatter = logging.Formatter()
    return [m for m in (formatter.format(r) for r in caplog.records) if kql_startswith(m, prefix)]


def test_every_field_the_queries_read_is_in_what_the_daily_run_logs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = queries()
    summary_prefix, summary_fields = read_by(texts["no successful run"])
    failure_prefix, failure_fields = read_by(texts["failed run"])
    assert (summary_prefix, failure_prefix) == (health.SUMMARY_PREFIX + " ", health.FAILURE_PREFIX + " ")
    assert summary_fields == {"status"}
    assert failure_fields == {"stage", "code"}
    assert 'tostring(Summary.status) == "succeeded"' in texts["no successful run"]

    write(build(at=AT), tmp_path / "exports")
    caplog.set_level(logging.INFO, logger="detector")
    env = {"DETECTOR_SOURCE_DIR": str(tmp_path / "exports"), "DETECTOR_STATE_DIR": str(tmp_path / "state")}
    daily_run(past_due=False, env=env, clock=lambda: parse_datetime(AT))
    [summary] = logged(caplog, summary_prefix)
    assert not logged(caplog, failure_prefix)
    data = parsed(summary, summary_prefix)
    assert summary_fields <= set(data)
    assert data["status"] == "succeeded"  # the literal the rule compares with
    assert (data["window"]["end"], data["alerts"]) == (AT, 11)

    # A failure whose text holds a line break, quotes, a line separator and non-ASCII letters.
    caplog.clear()
    missing = tmp_path / 'gone "exports"\nLagos\u2028São'
    with pytest.raises(InputError, match="not a folder"):
        daily_run(past_due=False, env={**env, "DETECTOR_SOURCE_DIR": str(missing)},
                  clock=lambda: parse_datetime("2026-11-21T06:00:00Z"))
    [failure] = logged(caplog, failure_prefix)
    assert not logged(caplog, summary_prefix)
    data = parsed(failure, failure_prefix)
    assert failure_fields <= set(data)
    assert (data["stage"], data["code"]) == ("source", "InputError")
    assert str(missing) in data["error"]

    # A service error whose text holds a signed URL and quotes: redacted, and the line is still JSON.
    # A bug (not a DetectorError): its traceback goes on a record of its own, so the failure line stays one line.
    secret = "s3cr3tSIG"
    for error, stage, code in ((SourceError(f'denied at https://x.example/v1?sig={secret}" by "policy"',
                                            code="Forbidden"), "source", "Forbidden"),
                               (KeyError("bug"), "run", "KeyError")):
        caplog.clear()

        def broken(error: Exception = error, **_: object) -> None:
            raise error

        monkeypatch.setattr(functions, "run_once", broken)
        with pytest.raises(type(error)):
            daily_run(past_due=False, env=env, clock=lambda: parse_datetime("2026-11-22T06:00:00Z"))
        [failure] = logged(caplog, failure_prefix)
        data = parsed(failure, failure_prefix)
        assert (data["stage"], data["code"]) == (stage, code)
        assert secret not in caplog.text
    assert any("Traceback" in logging.Formatter().format(r) for r in caplog.records)


def test_the_over_budget_rule_reads_what_a_run_over_budget_logs(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    from detector.store.files import FileStore
    query = queries()["allowlist over budget"]
    prefix, fields = read_by(query)
    assert (prefix, fields) == (health.SUMMARY_PREFIX + " ", {"allowlist_budget"})
    assert "array_length(Summary.allowlist_budget.set_aside) > 0" in query
    write(build(at=AT), tmp_path / "exports")
    env = {"DETECTOR_SOURCE_DIR": str(tmp_path / "exports"), "DETECTOR_STATE_DIR": str(tmp_path / "state")}
    caplog.set_level(logging.INFO, logger="detector")
    daily_run(past_due=False, env=env, clock=lambda: parse_datetime(AT))
    [summary] = logged(caplog, prefix)
    assert parsed(summary, prefix)["allowlist_budget"]["set_aside"] == []  # an empty allowlist: the rule stays quiet
    store = FileStore(tmp_path / "state")
    for i in range(12):  # one IPv4 /7 each: narrow enough alone, together over the budget
        store.put_allowlist({"id": f"net{i}", "reason": "known good",
                             "conditions": [{"field": "caller_ip", "op": "cidr", "value": f"{20 * i}.0.0.0/7"}]})
    caplog.clear()
    daily_run(past_due=False, env=env, clock=lambda: parse_datetime("2026-11-21T06:00:00Z"))
    [summary] = logged(caplog, prefix)
    data = parsed(summary, prefix)
    assert data["status"] == "succeeded"  # the run fails closed and succeeds: only this rule pages anyone
    assert data["allowlist_budget"]["set_aside"]
    assert data["allowlist_budget"]["matched"] <= data["allowlist_budget"]["budget"]


def test_the_field_check_can_fail() -> None:
    """A query reading a key the code does not log, or looking for another prefix, is caught."""
    query = queries()["failed run"]
    _, fields = read_by(query.replace("Failure.code", "Failure.errorCode"))
    assert not fields <= set(health.failure_fields(health.classify(KeyError("x"))))
    prefix, _ = read_by(query.replace('"detector run failed "', '"detector run failure "'))
    assert not kql_startswith(health.log_message(health.FAILURE_PREFIX, {}), prefix)
    with pytest.raises(AssertionError, match="not standard JSON"):
        parsed('detector run summary {"duration_seconds": NaN}', "detector run summary ")


def test_main_bicep_wires_the_module() -> None:
    main = bicep_check.parse_file(ROOT / "infra" / "main.bicep")
    wiring = declared(main, "monitoring")
    assert (wiring.kind, wiring.type_name) == ("module", "modules/monitoring.bicep")
    params = field(bicep_check.Checker._body(wiring.value), "params")
    assert bicep_check.member_chain(field(params, "appInsightsId")) == ("insights", ["id"])
    total = field(params, "silenceHours")
    assert isinstance(total, bicep_check.Op)
    assert total.op == "+"
    assert {r.name for r in bicep_check.free_refs(total)} == {"frequencyHours", "healthGraceHours"}
    defaults = [declared(main, name).value for name in ("frequencyHours", "healthGraceHours")]
    assert sum(d.value for d in defaults if isinstance(d, bicep_check.Lit) and isinstance(d.value, int)) == 26
