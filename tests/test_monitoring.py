"""The Azure Monitor path (infra/modules/monitoring.bicep): resource bodies checked against the type
definitions the Bicep compiler loads (../shared/bicep-types), the alert queries analysed by Microsoft's
Kusto language service against Application Insights' ``traces`` schema, the queries reading exactly
the fields the run summary logs, and main.bicep wiring the module."""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from detector import health
from detector.errors import InputError
from detector.functions import daily_run
from detector.sample.generate import build, write
from detector.timestamps import parse_datetime
from tests.test_kql_language_service import ROOT

MODULE = ROOT / "infra" / "modules" / "monitoring.bicep"
TYPES = ROOT.parent / "shared" / "bicep-types"  # beside the repository, as for the general Bicep check
TYPE_FILES = {
    "Microsoft.Insights/actionGroups@2023-01-01": "monitor_1/microsoft.insights/2023-01-01/types.json",
    "Microsoft.Insights/scheduledQueryRules@2023-12-01": "monitor_1/microsoft.insights/2023-12-01/types.json",
}
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


def parse(path: Path) -> dict[str, Any]:
    tree: dict[str, Any] = dict(BicepParser().parse(text=path.read_text(encoding="utf-8")))
    return tree


# --- a focused type check against the compiler's own type definitions ------------------------------

class TypeChecker:
    """Walks a resource body as pycep parsed it against a `types.json` ResourceType (README of bicep-types).

    Expressions (function calls, property access) cannot be typed without the compiler and are skipped;
    a bare identifier is accepted where a scalar is expected only if it names a parameter or variable.
    """

    def __init__(self, types: list[dict[str, Any]], symbols: set[str]) -> None:
        self.types = types
        self.symbols = symbols
        self.errors: list[str] = []

    def ref(self, ref: dict[str, str]) -> dict[str, Any]:
        return self.types[int(ref["$ref"].rsplit("/", 1)[1])]

    def check(self, value: Any, kind: dict[str, Any], path: str) -> None:
        if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("function", value.get("operator")),
                                                                        dict):
            return  # a pycep expression node, not an object literal
        tag = kind["$type"]
        if tag == "AnyType":
            return
        if tag == "UnionType":
            attempts = []
            for element in kind["elements"]:
                sub = TypeChecker(self.types, self.symbols)
                sub.check(value, self.ref(element), path)
                attempts.append(sub.errors)
            if all(attempts):
                self.errors.append(f"{path}: {value!r} matches no allowed value/type")
            return
        if isinstance(value, str) and value in self.symbols and tag != "ObjectType":
            return
        if tag == "ObjectType":
            self.check_object(value, kind, path)
        elif tag == "ArrayType":
            if isinstance(value, dict) and "loop_type" in value:
                self.check(value["config"], self.ref(kind["itemType"]), f"{path}[for]")
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    self.check(item, self.ref(kind["itemType"]), f"{path}[{i}]")
            else:
                self.errors.append(f"{path}: expected an array")
        elif tag == "StringType" and not isinstance(value, str):
            self.errors.append(f"{path}: expected a string, got {value!r}")
        elif tag == "StringLiteralType" and value != kind["value"]:
            self.errors.append(f"{path}: expected {kind['value']!r}, got {value!r}")
        elif tag == "IntegerType" and (not isinstance(value, int) or isinstance(value, bool)):
            self.errors.append(f"{path}: expected an integer, got {value!r}")
        elif tag == "BooleanType" and not isinstance(value, bool):
            self.errors.append(f"{path}: expected a boolean, got {value!r}")

    def check_object(self, value: Any, kind: dict[str, Any], path: str) -> None:
        if not isinstance(value, dict):
            self.errors.append(f"{path}: expected an object")
            return
        properties = {name.lower(): (name, spec) for name, spec in kind.get("properties", {}).items()}
        for key, item in value.items():
            found = properties.get(key.lower())
            if found is None:
                if "additionalProperties" not in kind:
                    self.errors.append(f"{path}.{key}: not a property of this type")
                continue
            name, spec = found
            if spec.get("flags", 0) & 2:
                self.errors.append(f"{path}.{key}: read-only")
                continue
            self.check(item, self.ref(spec["type"]), f"{path}.{name}")
        present = {k.lower() for k in value}
        for name, spec in kind.get("properties", {}).items():
            if spec.get("flags", 0) & 1 and not spec.get("flags", 0) & 2 and name.lower() not in present:
                self.errors.append(f"{path}.{name}: required, missing")


def type_errors(tree: dict[str, Any]) -> list[str]:
    symbols = set(tree.get("parameters", {})) | set(tree.get("variables", {}))
    errors: list[str] = []
    for name, resource in tree["resources"].items():
        key = f"{resource['type']}@{resource['api_version']}"
        assert key in TYPE_FILES, f"{name}: {key} has no type definitions here"
        types = json.loads((TYPES / TYPE_FILES[key]).read_text())
        [resource_type] = [t for t in types if t.get("$type") == "ResourceType" and t["name"] == key]
        checker = TypeChecker(types, symbols)
        checker.check(resource["config"], checker.ref(resource_type["body"]), name)
        errors += checker.errors
    return errors


def test_module_resources_match_the_compilers_type_definitions() -> None:
    tree = parse(MODULE)
    assert {f"{r['type']}@{r['api_version']}" for r in tree["resources"].values()} == set(TYPE_FILES)
    assert type_errors(tree) == []


def test_the_type_check_can_fail() -> None:
    tree = parse(MODULE)
    broken = copy.deepcopy(tree)
    rule = broken["resources"]["noSuccessfulRun"]["config"]["properties"]
    rule["criteria"]["allOf"][0]["threshold"] = "one"
    rule["severity"] = "high"
    rule["evaluationFrequencyy"] = "PT1H"
    rule["isLegacyLogAnalyticsRule"] = True
    del broken["resources"]["onCall"]["config"]["properties"]["groupShortName"]
    receiver = broken["resources"]["onCall"]["config"]["properties"]["emailReceivers"]["config"]
    receiver["emailAdress"] = receiver.pop("emailAddress")
    errors = "\n".join(type_errors(broken))
    for expected in ("threshold", "severity", "evaluationFrequencyy", "isLegacyLogAnalyticsRule: read-only",
                     "groupShortName: required", "emailAdress", "emailAddress: required"):
        assert expected in errors


def test_receivers_and_thresholds_are_parameters() -> None:
    tree = parse(MODULE)
    params = tree["parameters"]
    assert params["emailAddresses"]["type"] == "array"
    assert {"type": "secure"} in params["webhookUrls"]["decorators"]  # a webhook URL may carry a key
    receivers = tree["resources"]["onCall"]["config"]["properties"]
    assert receivers["emailReceivers"]["loop_type"]["detail"]["array_name"] == "emailAddresses"
    assert receivers["webhookReceivers"]["loop_type"]["detail"]["array_name"] == "webhooks"
    for rule in ("noSuccessfulRun", "failedRun"):
        config = tree["resources"][rule]["config"]
        assert config["properties"]["scopes"] == ["appInsightsId"]
        assert config["properties"]["actions"]["actionGroups"][0]["operator"]["operands"]["operand_1"] == "onCall"
    failed = tree["resources"]["failedRun"]["config"]["properties"]["criteria"]["allOf"][0]
    assert [d["name"] for d in failed["dimensions"]] == ["Stage", "Code"]  # one alert per stage and error code
    assert all(f"{d['name']} = " in queries()["failed run"] for d in failed["dimensions"])


# --- the alert queries: Kusto language service, and the fields the run summary logs -----------------

def queries(silence_hours: int = 26) -> dict[str, str]:
    variables = parse(MODULE)["variables"]
    return {"no successful run": variables["noRunQueryTemplate"]["value"].replace("{silenceHours}",
                                                                                   str(silence_hours)),
            "failed run": variables["failedRunQuery"]["value"]}


def analyse_traces(texts: list[str]) -> list[list[dict[str, Any]]]:
    import subprocess

    payload = {"tables": {"traces": [list(c) for c in TRACES]}, "queries": texts}
    done = subprocess.run(["node", str(ROOT / "tests" / "js" / "kql_check.js")], input=json.dumps(payload),
                          capture_output=True, text=True, check=True, timeout=180)
    result: list[list[dict[str, Any]]] = json.loads(done.stdout)
    return result


def test_alert_queries_analyse_cleanly_against_the_traces_schema_and_the_check_can_fail() -> None:
    texts = queries()
    broken = [texts["no successful run"].replace("timestamp", "TimeGenerated"),
              texts["failed run"].replace("| project", "| projekt"),
              queries()["no successful run"].replace("ago(26h)", "ago({silenceHours}h)")]
    results = analyse_traces([*texts.values(), *broken])
    assert results[:2] == [[], []]
    assert all(results[2:]), results[2:]


def test_the_queries_read_exactly_what_the_run_summary_logs() -> None:
    texts = queries()
    read = set()
    for text in texts.values():
        read |= set(re.findall(r"customDimensions\.(\w+)", text))
    assert read <= set(health.DIMENSIONS), read - set(health.DIMENSIONS)
    succeeded = health.run_dimensions({"status": "succeeded", "run_id": "r"})
    failed = health.run_dimensions({"status": "failed"}, failure=health.classify(KeyError("x")))
    for text in texts.values():
        assert f'customDimensions.detector_event) == "{succeeded["detector_event"]}"' in text
    assert f'detector_status) == "{succeeded["detector_status"]}"' in texts["no successful run"]
    assert f'detector_status) == "{failed["detector_status"]}"' in texts["failed run"]
    assert "ago(26h)" in texts["no successful run"]


def test_main_bicep_wires_the_module_with_every_required_parameter() -> None:
    main = parse(ROOT / "infra" / "main.bicep")
    module = main["modules"]["monitoring"]
    assert module["detail"]["path"] == "modules/monitoring.bicep"
    params = module["config"]["params"]
    required = {name for name, p in parse(MODULE)["parameters"].items() if "default" not in p}
    assert required <= set(params)
    assert set(params) <= set(parse(MODULE)["parameters"])
    assert params["appInsightsId"]["operator"]["operands"] == {"operand_1": "insights", "operand_2": "id"}
    total = params["silenceHours"]["operator"]
    assert total["type"] == "add"
    assert set(total["operands"].values()) == {"frequencyHours", "healthGraceHours"}  # 24 + 2 = 26 by default
    assert main["parameters"]["frequencyHours"]["default"] + main["parameters"]["healthGraceHours"]["default"] == 26


# --- the summary really carries the dimensions on its log record --------------------------------------

def test_daily_run_logs_the_summary_with_its_dimensions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    at = "2026-11-20T06:00:00Z"
    write(build(at=at), tmp_path / "exports")
    caplog.set_level(logging.INFO, logger="detector")
    env = {"DETECTOR_SOURCE_DIR": str(tmp_path / "exports"), "DETECTOR_STATE_DIR": str(tmp_path / "state")}
    daily_run(past_due=False, env=env, clock=lambda: parse_datetime(at))
    [record] = [r for r in caplog.records if r.getMessage().startswith("detector run summary")]
    dims = {name: getattr(record, name) for name in health.DIMENSIONS}
    assert dims["detector_event"] == "run_summary"
    assert dims["detector_status"] == "succeeded"
    assert dims["detector_window_end"] == at
    assert dims["detector_alerts"] == 11
    caplog.clear()
    with pytest.raises(InputError, match="not a folder"):
        daily_run(past_due=False, env={**env, "DETECTOR_SOURCE_DIR": str(tmp_path / "missing")},
                  clock=lambda: parse_datetime("2026-11-21T06:00:00Z"))
    [failed] = [r for r in caplog.records if r.getMessage().startswith("detector run failed")]
    assert [getattr(failed, name) for name in ("detector_status", "detector_error_stage", "detector_error_code")] == [
        "failed", "source", "InputError"]
