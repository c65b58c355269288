"""infra/: every Bicep file parses (pycep-parser) and passes the static checker (tests/bicep_check.py:
references without cycles, bodies type-checked against the compiler's resource types), which is proven
on fixtures that must fail; checkov finds nothing unexplained; the app settings the code reads are exactly
those the Bicep sets; the function timeout covers the worst-case run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from detector.settings import DEPLOYED, LOCAL_ONLY, SETTINGS, Settings
from detector.sources.loganalytics import CALLERS_PER_QUERY, make_client
from tests import bicep_check

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
FIXTURES = ROOT / "tests" / "fixtures" / "bicep"
# shared/ sits beside the repository (here and in CI's fresh clone).
TYPES = bicep_check.default_types_root()


def parse(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = BicepParser().parse(text=path.read_text(encoding="utf-8"))
    return result


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_parses(path: Path) -> None:
    tree = parse(path)
    assert tree["resources"]


def test_pycep_can_fail() -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 - any parse error will do
        BicepParser().parse(text="resource x 'Microsoft.Web/sites@2024-04-01' = {\n  name: \n")


def main_bicep() -> bicep_check.BicepFile:
    return bicep_check.parse_file(INFRA / "main.bicep")


def resource(bicep: bicep_check.BicepFile, name: str) -> bicep_check.Decl:
    return next(d for d in bicep.decls if d.name == name)


def app_settings() -> dict[str, bicep_check.Node]:
    """The one place settings live: the sites/config 'appsettings' resource."""
    config = resource(main_bicep(), "appSettings")
    assert config.type_name.startswith("Microsoft.Web/sites/config@")
    assert isinstance(config.value, bicep_check.Obj)
    properties = config.value.get("properties")
    assert isinstance(properties, bicep_check.Obj)
    return {name: value for name, value, _ in properties.items}


def test_static_checker_passes_every_bicep_file() -> None:
    files = [*BICEP_FILES, *sorted(INFRA.rglob("*.bicepparam"))]
    problems = bicep_check.check_files(files, TYPES)
    assert [str(p) for p in problems] == []


# Each fixture holds exactly one fault; the checker must report exactly that one.
FIXTURE_FAULTS = {
    "unknown_property.bicep": "unknown property 'allowSharedKeyAcess'",
    "wrong_literal_type.bicep": "supportsHttpsTrafficOnly: expects bool, got 'true'",
    "wrong_literal_value.bicep": "accessTier: expects 'Hot' | 'Cool' | 'Premium' | 'Cold', got 'Warm'",
    "missing_required_property.bicep": "required property 'sku' is missing",
    "read_only_property.bicep": "property 'provisioningState' is read-only",
    "unknown_api_version.bicep": "unknown resource type or API version 'Microsoft.Storage/storageAccounts@2099-01-01'",
    "unknown_resource_type.bicep": "unknown resource type or API version 'Microsoft.Storage/storageAcounts@2023-05-01'",
    "cycle.bicep": "reference cycle: app -> access -> app",
    "runtime_value_in_name.bicep": "name must be known at the start of the deployment, but reads app.identity.principalId",
    "module_missing_param.bicep": "required param 'principalId' not given",
    "unknown_name.bicep": "unknown name 'locaton'",
    "lambda_unknown_name.bicep": "unknown name 'ulr'",
    "app_setting_not_a_string.bicep": "DETECTOR_PERIOD_HOURS: expects string, got int",
    "output_type_mismatch.bicep": "output retryCount: declared string, but the value is int",
    "property_read_typo.bicep": "insights.properties.ConnectionStrng: no such property",
    "write_only_read.bicep": "vault.properties.createMode: the property is write-only",
}


@pytest.mark.parametrize("fixture", sorted(FIXTURE_FAULTS))
def test_static_checker_catches_each_fault(fixture: str) -> None:
    problems = [p.message for p in bicep_check.check_files([FIXTURES / fixture], TYPES)]
    assert len(problems) == 1, problems
    assert FIXTURE_FAULTS[fixture] in problems[0]


def test_every_fixture_is_named_in_the_fault_table() -> None:
    assert {p.name for p in FIXTURES.glob("*.bicep")} == set(FIXTURE_FAULTS)


def test_static_checker_reads_every_syntax_form_without_a_false_problem() -> None:
    """Comments, namespaced decorators, escapes, multi-line strings, safe access, ??, ternaries, indexed loops."""
    assert [str(p) for p in bicep_check.check_files([FIXTURES / "valid" / "syntax.bicep"], TYPES)] == []


def test_a_variable_is_checked_by_its_value(tmp_path: Path) -> None:
    text = (FIXTURES / "valid" / "syntax.bicep").read_text()
    bad = tmp_path / "bad.bicep"
    bad.write_text(text.replace("var pick = enabled ? 'Hot' : 'Cool'", "var pick = enabled ? 'Hot' : 'Warm'"))
    problems = [p.message for p in bicep_check.check_files([bad], TYPES)]
    assert problems == ["resource storage.properties.accessTier: expects 'Hot' | 'Cool' | 'Premium' | 'Cold', "
                        "got 'Warm'"]


def test_checker_reports_a_syntax_error_with_its_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.bicep"
    broken.write_text("param a string\nresource x 'Microsoft.Web/sites@2024-04-01' = {\n  name: \n")
    problems = bicep_check.check_files([broken], TYPES)
    assert len(problems) == 1
    assert "broken.bicep" in str(problems[0])


def test_every_setting_the_code_reads_is_deployed_and_every_deployed_one_is_read() -> None:
    deployed = {name for name in app_settings() if name.startswith("DETECTOR_")}
    assert deployed
    assert deployed == set(DEPLOYED)
    assert not deployed & LOCAL_ONLY
    # And SETTINGS is complete: every DETECTOR_* name the code mentions is declared there.
    mentioned: set[str] = set()
    for path in [*(ROOT / "detector").rglob("*.py"), ROOT / "function_app.py"]:
        mentioned |= set(re.findall(r'"(DETECTOR_[A-Z_]+)"', path.read_text(encoding="utf-8")))
    mentioned |= set(re.findall(r"%(DETECTOR_[A-Z_]+)%", (ROOT / "function_app.py").read_text()))
    mentioned -= {"DETECTOR_ADAPTIVECARDS_JS"}  # the card preview's renderer path, a laptop-only CLI option
    assert mentioned == set(SETTINGS)


def test_local_settings_example_documents_every_setting() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text())
    assert set(SETTINGS) <= set(example["Values"])
    assert set(example["_settings"]) == set(SETTINGS)


def text_of(node: bicep_check.Node) -> str:
    return node.value if isinstance(node, bicep_check.Lit) and isinstance(node.value, str) else ""


def test_deployment_shape() -> None:
    tree = parse(INFRA / "main.bicep")
    resources = tree["resources"]
    plan = resources["plan"]["config"]
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    app = resources["app"]["config"]
    assert app["identity"] == {"type": "SystemAssigned"}
    assert app["properties"]["httpsOnly"] is True
    assert "appSettings" not in app["properties"]["siteConfig"]  # settings live in the sites/config resource
    settings = app_settings()
    # Settings Flex Consumption rejects or replaces with functionAppConfig; a key-based storage connection.
    for rejected in ("FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
                     "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "AzureWebJobsStorage"):
        assert rejected not in settings
    assert "AzureWebJobsStorage__accountName" in settings
    assert text_of(settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]) == "Authorization=AAD"
    for secret, name in (("DETECTOR_TEAMS_WEBHOOK_URLS", "teamsSecretName"),
                         ("DETECTOR_LOGICAPP_WEBHOOK_URLS", "logicAppSecretName")):
        choice = settings[secret]
        assert isinstance(choice, bicep_check.Op)
        assert choice.op == "?:"
        assert text_of(choice.operands[2]) == ""  # delivery turned off: no reference to a missing secret
        value = choice.operands[1]
        assert isinstance(value, bicep_check.Interp)
        assert text_of(value.parts[0]) == "@Microsoft.KeyVault(SecretUri="
        assert {r.name for r in bicep_check.free_refs(value)} == {"vault", name}  # no version: the latest
    storage = resources["storage"]["config"]["properties"]
    assert storage["allowSharedKeyAccess"] is False
    assert storage["allowBlobPublicAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2"
    assert resources["vault"]["config"]["properties"]["enableRbacAuthorization"] is True
    assert resources["insights"]["config"]["properties"]["DisableLocalAuth"] is True
    text = "".join(p.read_text() for p in BICEP_FILES)
    for role in ("73c42c96-874c-492b-b04d-ab87d138a893", "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
                 "b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "4633458b-17de-408a-b874-0445c86b69e6",
                 "3913510d-42f4-4e42-8a64-420c390055eb", "acdd72a7-3385-48ef-bd42-f606fba81ae7"):
        assert role in text
    assert "8e3af657-a8ff-443c-a75c-2fe8c4bcb635" not in text  # no Owner
    assert "b24988ac-6180-42a0-ab88-20f7382dd24c" not in text  # no Contributor
    assert set(tree["outputs"]) >= {"functionAppName", "principalId"}


def assigns_roles(path: Path) -> bool:
    return any(d.kind == "resource" and d.type_name.startswith("Microsoft.Authorization/roleAssignments@")
               for d in bicep_check.parse_file(path).decls)


def test_app_settings_wait_for_every_role_and_secret_they_use() -> None:
    bicep = main_bicep()
    config = resource(bicep, "appSettings")
    assert isinstance(config.value, bicep_check.Obj)
    depends = config.value.get("dependsOn")
    assert isinstance(depends, bicep_check.Arr)
    waited = {item.name for item in depends.items if isinstance(item, bicep_check.Ref)}
    # The role modules are named, and recognised by what they hold (role assignments), so a new module
    # that grants a role cannot be missed and one that grants none (monitoring) is not waited for.
    modules = {d.name: d for d in bicep.decls if d.kind == "module"}
    roles = {name for name, d in modules.items() if assigns_roles(INFRA / d.type_name)}
    assert roles == {"appRoles", "sentinelAccess"}
    assert "monitoring" in modules
    assert waited == roles | {"teamsSecret", "logicAppSecret"}
    # The workspace id is read from an existing resource, not from the module that needs the app's identity.
    assert {r.name for r in bicep_check.free_refs(app_settings()["DETECTOR_WORKSPACE_ID"])} == {"sentinelWorkspace"}
    assert resource(bicep, "sentinelWorkspace").existing


def test_role_assignment_names_come_from_scope_principal_and_role() -> None:
    for path in BICEP_FILES:
        bicep = bicep_check.parse_file(path)
        for decl in bicep.decls:
            if not decl.type_name.startswith("Microsoft.Authorization/roleAssignments@"):
                continue
            body = bicep_check.Checker._body(decl.value)
            assert isinstance(body, bicep_check.Obj)
            name = body.get("name")
            assert isinstance(name, bicep_check.Call), decl.name
            assert name.name == "guid", decl.name
            used = {r.name for r in bicep_check.free_refs(name)}
            principal = body.get("properties")
            assert isinstance(principal, bicep_check.Obj)
            principal_ref = {r.name for r in bicep_check.free_refs(principal.get("principalId") or name)}
            assert principal_ref <= used, f"{path.name}:{decl.line} {decl.name} not named by its principal"
            assert "app" not in used, f"{path.name}:{decl.line} {decl.name} named by the app, not its principal"


def test_secrets_are_written_only_when_a_value_is_given() -> None:
    bicep = main_bicep()
    for name, param in (("teamsSecret", "teamsWebhookUrls"), ("logicAppSecret", "logicAppWebhookUrls")):
        decl = resource(bicep, name)
        assert isinstance(decl.value, bicep_check.IfExpr)
        condition = decl.value.condition
        assert isinstance(condition, bicep_check.Op)
        assert condition.op == "!"
        inner = condition.operands[0]
        assert isinstance(inner, bicep_check.Call)
        assert inner.name == "empty"
        assert [r.name for r in bicep_check.free_refs(inner)] == [param]
        params = {d.name: d for d in bicep.decls if d.kind == "param"}
        assert text_of(params[param].value) == ""  # optional: a redeploy without it keeps the secret


def test_key_vault_name_survives_a_recreated_resource_group() -> None:
    vault = parse(INFRA / "main.bicep")["resources"]["vault"]["config"]["properties"]
    assert vault.get("enablePurgeProtection") in (None, False)  # would reserve the name for 90 days
    assert vault["softDeleteRetentionInDays"] == 7
    bicep = main_bicep()
    name = next(d for d in bicep.decls if d.name == "vaultName").value
    assert name is not None
    assert "keyVaultNameSeed" in {r.name for r in bicep_check.free_refs(name)}


def test_sentinel_read_access_is_table_level_by_default() -> None:
    module = bicep_check.parse_file(INFRA / "modules" / "sentinel-reader.bicep")
    params = {d.name: d for d in module.decls if d.kind == "param"}
    assert text_of(params["access"].value) == "tables"
    tables = params["tableNames"].value
    assert isinstance(tables, bicep_check.Arr)
    assert [text_of(t) for t in tables.items] == ["AzureActivity", "BehaviorAnalytics"]
    role = resource(module, "queryWithoutData")
    body = bicep_check.Checker._body(role.value)
    assert isinstance(body, bicep_check.Obj)
    text = (INFRA / "modules" / "sentinel-reader.bicep").read_text()
    block = text[text.index("actions: ["):text.index("assignableScopes")]
    actions = re.findall(r"'(Microsoft\.[^']+)'", block)
    # Read the workspace and run queries; shared keys excluded; no data action, no table, no wildcard.
    assert actions == ["Microsoft.OperationalInsights/workspaces/read",
                       "Microsoft.OperationalInsights/workspaces/query/read",
                       "Microsoft.OperationalInsights/workspaces/sharedKeys/read"]
    readers = resource(module, "tableReaders")
    assert isinstance(readers.value, bicep_check.ForExpr)
    main = bicep_check.parse_file(INFRA / "main.bicep")
    params_main = {d.name: d for d in main.decls if d.kind == "param"}
    assert text_of(params_main["sentinelReadAccess"].value) == "tables"


def timespan_seconds(text: str) -> int:
    hours, minutes, seconds = (int(x) for x in text.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def test_function_timeout_covers_the_worst_case_queries() -> None:
    """README, Deploy to Azure: a daily run's queries, every attempt timing out, fit in half the timeout."""
    host = json.loads((ROOT / "host.json").read_text())
    timeout = timespan_seconds(host["functionTimeout"])
    assert timeout <= 3600  # Flex Consumption guarantees 60 minutes to a running execution on scale-in
    from azure.core.pipeline.policies import RetryPolicy

    client = make_client(object())
    policies = client._client._pipeline._impl_policies  # the policies the client really runs
    retry = next(p for p in policies if isinstance(p, RetryPolicy))
    attempts = 1 + retry.total_retries
    backoff = sum(min(retry.backoff_factor * 2 ** i, retry.backoff_max) for i in range(retry.total_retries))
    queries = 1 + -(-CALLERS_PER_QUERY // CALLERS_PER_QUERY)  # AzureActivity + one batch of up to 200 callers
    bicep = main_bicep()
    param = next(d for d in bicep.decls if d.name == "queryTimeoutSeconds")
    most = next(c for c in param.decorators if c.name == "maxValue").args[0]
    assert isinstance(most, bicep_check.Lit)
    assert isinstance(most.value, int)
    for query_timeout in (Settings().query_timeout_seconds, most.value):
        worst = queries * (attempts * query_timeout + backoff)
        assert worst <= timeout / 2, (query_timeout, worst, timeout)
    assert Settings().query_timeout_seconds == text_to_int(param.value)


def text_to_int(node: bicep_check.Node | None) -> int:
    assert isinstance(node, bicep_check.Lit)
    assert isinstance(node.value, int)
    return node.value


def test_requirements_and_pyproject_declare_the_same_ranges() -> None:
    requirements = sorted(line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
                          if line.strip() and not line.startswith("#"))
    pyproject = (ROOT / "pyproject.toml").read_text()
    block = pyproject[pyproject.index("dependencies = ["):]
    block = block[:block.index("]")]
    assert sorted(re.findall(r'"([^"]+)"', block)) == requirements
    for line in requirements:
        assert re.match(r"^[A-Za-z0-9_.-]+>=[0-9][0-9.]*,?(<[0-9.]+)?$", line), f"{line}: a floor is required"


def run_checkov() -> dict[str, Any]:
    assert CHECKOV.exists(), "checkov is not installed in .venv-checkov (scripts/test installs it)"
    done = subprocess.run([str(CHECKOV), "-d", str(INFRA), "--framework", "bicep", "--skip-download", "-o", "json",
                           "--quiet", "--compact"], capture_output=True, text=True, timeout=600, check=False)
    data = json.loads(done.stdout)
    report: dict[str, Any] = data[0] if isinstance(data, list) else data
    return report


def test_checkov_finds_no_unexplained_problem() -> None:
    report = run_checkov()
    summary = report["summary"]
    assert summary["parsing_errors"] == 0, "checkov skipped a file it could not parse"
    assert summary["resource_count"] >= 15
    failed = [(c["check_id"], c["resource"]) for c in report.get("results", {}).get("failed_checks", [])]
    assert failed == []
    # Every inline skip gives a reason.
    for path in BICEP_FILES:
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                assert re.search(r"checkov:skip=CKV_[A-Z0-9_]+: .{30,}", line), line.strip()


def imported_modules() -> set[str]:
    """Every absolute import in the code that runs in Azure (detector/ and function_app.py), dotted."""
    import ast

    found: set[str] = set()
    for path in [*(ROOT / "detector").rglob("*.py"), ROOT / "function_app.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return {m for m in found if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "detector"}


def distribution_of(module: str) -> str:
    from importlib import metadata

    top = module.split(".")[0]
    candidates = metadata.packages_distributions().get(top, [])
    path = module.replace(".", "/")
    files = {name: {str(f) for f in metadata.files(name) or []} for name in candidates}
    # The module's own file first: azure-core-tracing-opentelemetry installs files under azure/core/ too,
    # but azure/core/__init__.py is azure-core's.
    owners = [name for name in candidates if {f"{path}/__init__.py", f"{path}.py"} & files[name]]
    if not owners:  # a namespace package: whoever installs files under it
        owners = [name for name in candidates
                  if len(candidates) == 1 or any(f.startswith(f"{path}/") for f in files[name])]
    if not owners:
        raise AssertionError(f"no installed distribution provides {module}")
    return re.sub(r"[-_.]+", "-", owners[0]).lower()


def test_every_runtime_import_is_a_requirement_with_a_floor() -> None:
    required = {re.sub(r"[-_.]+", "-", m.group(1)).lower()
                for line in (ROOT / "requirements.txt").read_text().splitlines()
                if (m := re.match(r"^([A-Za-z0-9_.-]+)>=", line))}
    imported = {distribution_of(module) for module in imported_modules()}
    assert imported <= required, f"imported but not in requirements.txt: {sorted(imported - required)}"
    # tzdata is never imported: zoneinfo falls back to it when the host has no time zone database, and the
    # allowlist reads its zone tables as package data (importlib.resources).
    assert required - imported == {"tzdata"}


def test_readme_tells_the_deployer_the_rights_and_both_ways_to_deploy() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deploy to Azure"):readme.index("## Reliability")]
    for needed in ("Rights the person deploying needs", "Microsoft.Authorization/roleDefinitions/write",
                   "User Access Administrator", "azd up", "az deployment group create -g",
                   "-p infra/main.bicepparam", "bash scripts/package",
                   "az functionapp deployment source config-zip"):
        assert needed in section, needed
    # Every variable the README tells azd or az users to set is one main.bicepparam reads.
    bicepparam = (INFRA / "main.bicepparam").read_text()
    read = set(re.findall(r"readEnvironmentVariable\('([A-Z_]+)'", bicepparam))
    told = set(re.findall(r"\b(SENTINEL_[A-Z_]+|TEAMS_[A-Z_]+|LOGICAPP_[A-Z_]+|DETECTOR_NAME_PREFIX|SECRETS_[A-Z_]+)"
                          r"(?==|`| )", section))
    assert told
    assert told <= read, sorted(told - read)
