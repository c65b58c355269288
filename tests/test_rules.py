"""The Rule abstraction and the opt-in extended rules: each rule's filter, machine name, KQL text, selection,
sample scenarios, parity and cards, table-driven."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import jsonschema
import pytest

from detector import rules as registry
from detector.alerts import alert_key, build_alerts
from detector.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from detector.correlate import correlate
from detector.deliver.logicapp import build_payload, load_schema
from detector.deliver.teams import build_alert_card, build_digest_card
from detector.errors import ConfigError, UsageError
from detector.model import SEED_RULE_ID, Alert
from detector.rule import RULE, WINDOW_AFTER_HOURS, WINDOW_BEFORE_HOURS, selection_of
from detector.sample.generate import SAMPLE_DIR
from detector.settings import Settings
from detector.sources.kqltext import activity_query
from detector.window import DEFAULT_FREQUENCY_HOURS, DEFAULT_PERIOD_HOURS, SEED_SELECTION, Window
from tests.builders import AT, SUB, T0, H, authorization, run_command, ueba

ROOT = Path(__file__).resolve().parents[1]
WINDOW = Window.ending_at(AT)
MANIFEST = json.loads((SAMPLE_DIR / "expected.json").read_text(encoding="utf-8"))
COMPUTE = f"/subscriptions/{SUB}/resourceGroups/rg-1/providers/Microsoft.Compute"
HYBRID = f"/subscriptions/{SUB}/resourceGroups/rg-1/providers/Microsoft.HybridCompute"

# (operation name as logged, Authorization scope, Authorization action, statuses) -> the (rule id, machine)
# of the alert every rule together raises, or None.
CASES = [
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION", f"{COMPUTE}/virtualMachines/vm-1",
     "Microsoft.Compute/virtualMachines/runCommand/action", None, (SEED_RULE_ID, "vm-1")),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMANDS/WRITE", f"{COMPUTE}/virtualMachines/vm-1/runCommands/rc",
     "Microsoft.Compute/virtualMachines/runCommands/write", None, ("ext-vm-managed-run-command", "vm-1")),
    ("microsoft.compute/virtualmachines/runcommands/write", f"{COMPUTE}/virtualMachines/vm-2/runCommands/rc",
     "Microsoft.Compute/virtualMachines/runCommands/write", None, ("ext-vm-managed-run-command", "vm-2")),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMANDS/WRITE", f"{COMPUTE}/virtualMachines/vm-1/runCommands/rc",
     "Microsoft.Compute/virtualMachines/runCommands/write", ("Started", "Failed"), None),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMANDS/READ", f"{COMPUTE}/virtualMachines/vm-1/runCommands/rc",
     "Microsoft.Compute/virtualMachines/runCommands/read", None, None),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMANDS/DELETE", f"{COMPUTE}/virtualMachines/vm-1/runCommands/rc",
     "Microsoft.Compute/virtualMachines/runCommands/delete", None, None),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINESCALESETS/VIRTUALMACHINES/RUNCOMMAND/ACTION",
     f"{COMPUTE}/virtualMachineScaleSets/ss-1/virtualMachines/4",
     "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommand/action", None,
     ("ext-vmss-run-command", "ss-1/4")),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINESCALESETS/VIRTUALMACHINES/RUNCOMMANDS/WRITE",
     f"{COMPUTE}/virtualMachineScaleSets/ss-1/virtualMachines/4/runCommands/rc",
     "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommands/write", ("Start", "Success"),
     ("ext-vmss-run-command", "ss-1/4")),
    # The scale set operation with an Authorization that never names a scale set (the check reads the whole
    # Authorization text, as the seed's ``has`` does: scope and action).
    ("MICROSOFT.COMPUTE/VIRTUALMACHINESCALESETS/VIRTUALMACHINES/RUNCOMMAND/ACTION", f"{COMPUTE}/virtualMachines/vm-1",
     "Microsoft.Compute/virtualMachines/runCommand/action", None, None),
    ("MICROSOFT.HYBRIDCOMPUTE/MACHINES/RUNCOMMANDS/WRITE", f"{HYBRID}/machines/srv-1/runCommands/rc",
     "Microsoft.HybridCompute/machines/runCommands/write", None, ("ext-arc-run-command", "srv-1")),
    # "virtualMachines" is one term: it does not hold the term "machines".
    ("MICROSOFT.HYBRIDCOMPUTE/MACHINES/RUNCOMMANDS/WRITE", f"{COMPUTE}/virtualMachines/vm-1",
     "Microsoft.Compute/virtualMachines/runCommand/action", None, None),
    ("MICROSOFT.HYBRIDCOMPUTE/MACHINES/RUNCOMMANDS/READ", f"{HYBRID}/machines/srv-1/runCommands/rc",
     "Microsoft.HybridCompute/machines/runCommands/read", None, None),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/EXTENSIONS/WRITE", f"{COMPUTE}/virtualMachines/vm-1/extensions/CustomScript",
     "Microsoft.Compute/virtualMachines/extensions/write", None, ("ext-vm-extension-write", "vm-1")),
    # Any extension: the type is not in AzureActivity, so a monitoring agent alerts too (documented).
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/EXTENSIONS/WRITE", f"{COMPUTE}/virtualMachines/vm-3/extensions/AMA",
     "Microsoft.Compute/virtualMachines/extensions/write", None, ("ext-vm-extension-write", "vm-3")),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINESCALESETS/EXTENSIONS/WRITE",
     f"{COMPUTE}/virtualMachineScaleSets/ss-1/extensions/CustomScript",
     "Microsoft.Compute/virtualMachineScaleSets/extensions/write", None, ("ext-vm-extension-write", "ss-1")),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINESCALESETS/VIRTUALMACHINES/EXTENSIONS/WRITE",
     f"{COMPUTE}/virtualMachineScaleSets/ss-1/virtualMachines/2/extensions/CustomScript",
     "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/extensions/write", None,
     ("ext-vm-extension-write", "ss-1")),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/EXTENSIONS/DELETE", f"{COMPUTE}/virtualMachines/vm-1/extensions/CustomScript",
     "Microsoft.Compute/virtualMachines/extensions/delete", None, None),
    # Arc extensions are not covered (README): no rule watches them.
    ("MICROSOFT.HYBRIDCOMPUTE/MACHINES/EXTENSIONS/WRITE", f"{HYBRID}/machines/srv-1/extensions/CustomScript",
     "Microsoft.HybridCompute/machines/extensions/write", None, None),
]


@pytest.mark.parametrize(("operation", "scope", "action", "statuses", "expected"), CASES)
def test_each_way_of_running_code_alerts_under_its_own_rule_only(
        operation: str, scope: str, action: str, statuses: tuple[str, ...] | None,
        expected: tuple[str, str] | None) -> None:
    events = run_command(T0, operation=operation, auth=authorization(scope, action=action),
                         **({"statuses": statuses} if statuses else {}))
    everything = correlate(events, [ueba(T0 - H)], WINDOW, rules=registry.ALL_RULES)
    got = [(a.rule_id, a.vm_name) for a in build_alerts(everything.rows)]
    assert got == ([expected] if expected else [])
    for rule in registry.ALL_RULES:  # each rule alone agrees with the side-by-side run
        alone = correlate(events, [ueba(T0 - H)], WINDOW, rules=(rule,))
        assert [(r.rule_id, r.vm_name) for r in alone.rows] == [p for p in got if p[0] == rule.id]


@pytest.mark.parametrize("rule", registry.EXTENDED, ids=lambda r: r.id)
@pytest.mark.parametrize(("offset_hours", "alerts"), [(-1, 1), (6, 1), (-1.01, 0), (6.01, 0)])
def test_extended_rules_use_the_seeds_window(rule: registry.Rule, offset_hours: float, alerts: int) -> None:
    op = rule.operations[0]
    scope = {"ext-arc-run-command": f"{HYBRID}/machines/m/runCommands/r",
             "ext-vmss-run-command": f"{COMPUTE}/virtualMachineScaleSets/s/virtualMachines/1/runCommands/r"}.get(
        rule.id, f"{COMPUTE}/virtualMachines/vm/extensions/x")
    events = run_command(T0 + int(offset_hours * H), operation=op, auth=authorization(scope))
    assert len(correlate(events, [ueba(T0)], WINDOW, rules=(rule,)).rows) == alerts


def test_every_rule_has_its_own_stable_identity_and_the_shared_correlation() -> None:
    ids = [rule.id for rule in registry.ALL_RULES]
    assert len(set(ids)) == len(ids)
    assert RULE.id == SEED_RULE_ID == "11bda520-a965-4654-9a45-d09f372f71aa"
    assert not RULE.extended
    for rule in registry.EXTENDED:
        assert rule.extended
        assert rule.origin == "extended"
        assert re.fullmatch(r"ext-[a-z0-9-]+", rule.id), rule.id  # not a Sentinel GUID
        assert (rule.query_period_hours, rule.query_frequency_hours) == (DEFAULT_PERIOD_HOURS, DEFAULT_FREQUENCY_HOURS)
        assert (rule.query_period_hours, rule.query_frequency_hours) == (RULE.query_period_hours,
                                                                           RULE.query_frequency_hours)
        # The KQL carries the same filters the port applies, and the seed's join, window and projection.
        for operation in rule.operations:
            assert f'"{operation}"' in rule.query
        for term in rule.authorization_terms:
            assert f'"{term}"' in rule.query
        for index in rule.machine_segments:
            assert f"tostring(Scope_s[{index}])" in rule.query
        assert f"UEBAEventTime - {WINDOW_BEFORE_HOURS}h, UEBAWindowEnd = UEBAEventTime + {WINDOW_AFTER_HOURS}h" \
            in rule.query
        assert rule.query.endswith(RULE.query[RULE.query.index("| project StartTime, EndTime, Subscription, "
                                                               "VirtualMachineName, CorrelationId"):])
        assert "not a Microsoft Sentinel rule" in rule.provenance()
    assert "Microsoft Sentinel rule 11bda520" in RULE.provenance()


def test_every_operation_is_cited_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8").lower()
    for rule in registry.ALL_RULES:
        for operation in rule.operations:
            assert operation.lower() in readme, operation
    assert "articles/role-based-access-control/permissions/compute.md" in readme
    assert "articles/role-based-access-control/permissions/hybrid-multicloud.md" in readme


def test_seed_alert_keys_are_those_written_before_rules_existed() -> None:
    # Computed by the version before this change: state written then must still be found.
    auth = '{"scope": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"}'
    assert alert_key("c-1", auth, "Alice@Contoso.com") == \
        "11bda520-a965-4654-9a45-d09f372f71aa:v2:8c9485ea70f678f10fa5f85b239d2bed"
    managed = alert_key("c-1", auth, "Alice@Contoso.com", rule_id="ext-vm-managed-run-command")
    assert managed == "ext-vm-managed-run-command:v2:8c9485ea70f678f10fa5f85b239d2bed"


@pytest.mark.parametrize(("names", "expected"), [
    ([], [SEED_RULE_ID]),
    ([""], [SEED_RULE_ID]),
    (["seed"], [SEED_RULE_ID]),
    (["all"], [r.id for r in registry.ALL_RULES]),
    (["ALL"], [r.id for r in registry.ALL_RULES]),
    (["ext-arc-run-command"], ["ext-arc-run-command"]),
    (["ext-arc-run-command, seed"], [SEED_RULE_ID, "ext-arc-run-command"]),
    (["ext-arc-run-command", "ext-vmss-run-command", "ext-arc-run-command"],
     ["ext-vmss-run-command", "ext-arc-run-command"]),
])
def test_rule_selection(names: list[str], expected: list[str]) -> None:
    assert [r.id for r in registry.select(names)] == expected


def test_unknown_rules_are_refused_with_their_name() -> None:
    with pytest.raises(UsageError, match="ext-nope"):
        registry.select(["seed,ext-nope"])
    with pytest.raises(ConfigError, match="setting DETECTOR_RULES: unknown rule 'ext-nope'"):
        Settings.from_env({"DETECTOR_RULES": "ext-nope"})
    assert Settings.from_env({}).rules == (RULE,)
    assert Settings.from_env({"DETECTOR_RULES": "all"}).rules == registry.ALL_RULES


def test_selection_drives_the_pushdown_and_the_prefilter() -> None:
    assert selection_of((RULE,)) == SEED_SELECTION
    everything = selection_of(registry.ALL_RULES)
    assert everything.needles == (b"runcommand", b"extensions")  # a usable line holds one of them
    assert selection_of(registry.EXTENDED[:3]).needles == (b"runcommand",)
    text = activity_query(WINDOW.start, WINDOW.end, everything)
    assert "| where OperationNameValue in~ (" in text
    assert "| where Authorization has_any (" in text
    for rule in registry.ALL_RULES:
        assert all(f'"{op}"' in text for op in rule.operations)


def call(*argv: str, logs_client: object = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, logs_client=logs_client)
    return code, out.getvalue(), err.getvalue()


def test_rows_without_options_is_the_seed_rules_output() -> None:
    golden = json.loads((ROOT / "tests" / "fixtures" / "sample_rows.json").read_text(encoding="utf-8"))
    code, out, _ = call("rows")
    assert code == EXIT_OK
    assert json.loads(out) == golden
    code, out, _ = call("rows", "--rule", "seed")
    assert code == EXIT_OK
    assert json.loads(out) == golden
    code, out, _ = call("rows", "--rule", "all")
    rows = json.loads(out)
    assert [{k: v for k, v in r.items() if k != "RuleId"} for r in rows if r["RuleId"] == SEED_RULE_ID] == golden
    assert {r["RuleId"] for r in rows} == {r.id for r in registry.ALL_RULES}


def _by_rule(alerts: list[dict[str, object]]) -> set[tuple[object, ...]]:
    return {(a["RuleId"], a["CorrelationId"], a["Caller"], a["VirtualMachineName"]) for a in alerts}


def test_the_sample_shows_the_rules_side_by_side() -> None:
    code, out, _ = call("run", "--rule", "all", "--json", "--no-allowlist")
    assert code == EXIT_OK
    result = json.loads(out)
    expected = {(SEED_RULE_ID, e["correlation_id"], e["caller"], e["vm"]) for e in MANIFEST["alerts"]}
    expected |= {(e["rule"], e["correlation_id"], e["caller"], e["vm"]) for e in MANIFEST["extended_alerts"]}
    assert _by_rule(result["alerts"]) == expected
    assert {e["rule"] for e in MANIFEST["extended_alerts"]} == {r.id for r in registry.EXTENDED}
    assert result["summary"]["rules"] == [r.id for r in registry.ALL_RULES]
    assert result["summary"]["alerts_by_rule"][SEED_RULE_ID] == len(MANIFEST["alerts"])
    assert sum(result["summary"]["matches_by_rule"].values()) == result["summary"]["matches"]
    # Each extended rule's UEBA times too.
    times = {a["CorrelationId"]: [r["UEBAEventTime"] for r in a["Rows"]] for a in result["alerts"]}
    for e in MANIFEST["extended_alerts"]:
        assert times[e["correlation_id"]] == e["ueba_times"], e["scenario"]
    # The seed alone still raises exactly its own alerts.
    code, out, _ = call("run", "--json", "--no-allowlist")
    assert _by_rule(json.loads(out)["alerts"]) == {a for a in expected if a[0] == SEED_RULE_ID}


def test_cli_rule_option_comma_lists_and_errors() -> None:
    code, out, _ = call("run", "--rule", "ext-arc-run-command,ext-vm-extension-write", "--json", "--no-allowlist")
    assert code == EXIT_OK
    assert {a["RuleId"] for a in json.loads(out)["alerts"]} == {"ext-arc-run-command", "ext-vm-extension-write"}
    code, _, err = call("run", "--rule", "sentinel-everything")
    assert code == EXIT_USAGE
    assert "unknown rule 'sentinel-everything'" in err
    code, out, _ = call("run", "--rule", "all")
    assert "extended rule, not Sentinel's" in out
    assert "ext-arc-run-command" in out


def _sample_alerts() -> list[Alert]:
    from detector.pipeline import detect
    from detector.sources.files import FileSource
    from detector.timestamps import parse_datetime
    from detector.window import Window as W
    result = detect(FileSource(SAMPLE_DIR, selection=selection_of(registry.ALL_RULES)),
                    W.ending_at(parse_datetime(MANIFEST["at"])), rules=registry.ALL_RULES)
    return result.alerts


def test_cards_and_payloads_say_whose_rule_it_is() -> None:
    from tests.test_cards import check_with_adaptivecards
    alerts = _sample_alerts()
    schema = load_schema()
    seen = set()
    cards = []
    for alert in alerts:
        rule = registry.by_id(alert.rule_id)
        card = build_alert_card(alert)
        text = json.dumps(card, ensure_ascii=False)
        payload = build_payload(alert)
        jsonschema.validate(payload, schema)
        assert payload["rule"]["id"] == rule.id
        assert payload["severity"] == rule.severity
        assert payload["title"].startswith(rule.action)
        if rule.extended:
            assert "not a Microsoft Sentinel rule" in text
            assert payload["rule"]["origin"] == "extended"
            assert "not a Microsoft Sentinel rule" in payload["rule"]["provenance"]
            assert rule.verb in payload["description"]
            assert payload["runCommand"]["resourceId"] == alert.scope
            assert alert.scope in text
        else:
            assert "not a Microsoft Sentinel rule" not in text
            assert "Extended rule" not in text
            assert payload["rule"]["origin"] == "sentinel"
            assert " ran a Run Command on " in payload["description"]
        seen.add(rule.id)
        cards.append(card["attachments"][0]["content"])
    assert seen == {r.id for r in registry.ALL_RULES}
    digest = build_digest_card(alerts)
    assert "extended rules, not Sentinel's" in json.dumps(digest)
    cards.append(digest["attachments"][0]["content"])
    for report in check_with_adaptivecards(cards):
        assert report["events"] == []
        assert report["failures"] == []


def test_an_allowlist_entry_can_name_a_rule() -> None:
    from detector.allowlist import Allowlist, apply
    from detector.timestamps import parse_datetime
    alerts = _sample_alerts()
    rule_only = {"id": "ext-only", "reason": "extension rollouts by the platform team",
                 "conditions": [{"field": "rule_id", "op": "equals", "value": "ext-vm-extension-write"}]}
    # A rule id alone would silence the whole rule: refused like any entry that matches (nearly) everything.
    loaded = Allowlist.load([rule_only], now=parse_datetime(MANIFEST["at"]))
    assert (loaded.active, [p.kind for p in loaded.problems]) == ([], ["invalid"])
    entry = {**rule_only, "conditions": [*rule_only["conditions"], {
        "field": "caller", "op": "in", "value": ["tina.ext@contoso.com", "uma.ext@contoso.com", "bob.ops@contoso.com"]}]}
    kept, suppressed = apply(Allowlist.load([entry], now=parse_datetime(MANIFEST["at"])), alerts)
    assert {s.alert.rule_id for s in suppressed} == {"ext-vm-extension-write"}  # not bob.ops's seed alert
    assert len(kept) + len(suppressed) == len(alerts)
    assert len(suppressed) == 2


def test_parity_per_rule_against_the_workspace() -> None:
    from detector.pipeline import detect
    from detector.sample.generate import build
    from detector.sources.loganalytics import make_client
    from tests.la_fake import LogAnalyticsFake, StaticCredential, log_analytics_fake
    ws = build()
    window = Window.ending_at(ws.at)
    fake = LogAnalyticsFake(activity=ws.activity, ueba=ws.ueba)
    from detector.sources.files import FileSource
    arc = registry.ARC_RUN_COMMAND
    port = [r.to_dict() for r in detect(FileSource(SAMPLE_DIR, selection=arc.selection), window,
                                        rules=(arc,)).correlation.rows]
    assert len(port) == 1
    fake.parity_by_comment[arc.query.split("\n")[1]] = port  # Sentinel's engine agrees with the port...
    with log_analytics_fake(fake) as (endpoint, ca):
        client = make_client(StaticCredential(), endpoint=endpoint, connection_verify=ca, retry_backoff_factor=0.05)
        code, out, _ = call("parity", "--workspace", "11111111-2222-3333-4444-555555555555", "--at",
                            "2026-11-20T06:00:00Z", "--rule", arc.id, logs_client=client)
        assert code == EXIT_OK, out
        assert f"rule {arc.id} (extended)" in out
        assert "parity: 1 rows from the rule's KQL, 1 from the Python port; no difference" in out
        sent = [r.query for r in fake.requests]
        assert any(q.startswith(arc.query.rstrip("\n")) for q in sent)
        assert any('OperationNameValue =~ "MICROSOFT.HYBRIDCOMPUTE/MACHINES/RUNCOMMANDS/WRITE"' in q for q in sent)
        # ...and a rule whose workspace answer differs is reported.
        managed = registry.VM_MANAGED_RUN_COMMAND
        fake.parity_by_comment[managed.query.split("\n")[1]] = []
        code, out, _ = call("parity", "--workspace", "11111111-2222-3333-4444-555555555555", "--at",
                            "2026-11-20T06:00:00Z", "--rule", f"{arc.id},{managed.id}", logs_client=client)
        assert code == EXIT_FAILED
        assert "only in the Python port" in out
        assert "vm-web-12" in out


def test_the_function_runs_the_rules_its_setting_names(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from detector.functions import daily_run
    from detector.sample.generate import build, write
    from detector.timestamps import format_datetime, from_datetime
    at = from_datetime(datetime.now(UTC).replace(microsecond=0))
    write(build(at=format_datetime(at)), tmp_path / "data")  # the sample, shifted to end now
    env = {"DETECTOR_SOURCE_DIR": str(tmp_path / "data"), "DETECTOR_STATE_DIR": str(tmp_path / "state")}
    seed_only = daily_run(past_due=False, env=env)
    assert seed_only["rules"] == [SEED_RULE_ID]
    assert seed_only["alerts_by_rule"] == {SEED_RULE_ID: len(MANIFEST["alerts"])}
    everything = daily_run(past_due=False, env={**env, "DETECTOR_RULES": "all",
                                                "DETECTOR_STATE_DIR": str(tmp_path / "state2")})
    assert everything["rules"] == [r.id for r in registry.ALL_RULES]
    expected = {SEED_RULE_ID: len(MANIFEST["alerts"])}
    for e in MANIFEST["extended_alerts"]:
        expected[e["rule"]] = expected.get(e["rule"], 0) + 1
    assert everything["alerts_by_rule"] == expected
    assert everything["new_alerts"] == sum(expected.values())


def _detector_imports(path: Path) -> set[str]:
    """The detector modules ``path`` imports (first component under detector/), from its source."""
    import ast
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.relative_to(ROOT / "detector").parts[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package[:len(package) - node.level + 1])
            parts = [*base, *(node.module.split(".") if node.module else [])]
            names = [parts[0]] if parts else [alias.name for alias in node.names]
            out.update(names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("detector."):
            out.add((node.module or "").split(".")[1])
    return out


LATER_THAN = {
    # module (or package) -> detector modules later in the flow that it must never import
    "window.py": {"rule", "rules", "sources", "correlate", "alerts", "allowlist", "outbox", "store", "deliver",
                  "pipeline", "parity", "settings", "cli", "functions", "triage"},
    "sources": {"rule", "rules", "correlate", "alerts", "allowlist", "triage", "outbox", "store", "deliver",
                "pipeline", "parity", "settings", "cli", "functions"},
    "correlate.py": {"alerts", "allowlist", "triage", "outbox", "store", "deliver", "pipeline", "parity", "sources",
                     "settings", "cli", "functions"},
    "alerts.py": {"correlate", "allowlist", "triage", "outbox", "store", "deliver", "pipeline", "parity", "sources"},
    "store": {"deliver", "outbox", "pipeline", "rule", "rules", "cli", "functions"},
    "outbox.py": {"correlate", "pipeline", "cli", "functions"},
    "deliver": {"pipeline", "outbox", "cli", "functions", "correlate"},
}


def test_the_layout_has_no_back_edges() -> None:
    problems = []
    for name, forbidden in LATER_THAN.items():
        target = ROOT / "detector" / name
        for path in ([target] if target.is_file() else sorted(target.rglob("*.py"))):
            bad = _detector_imports(path) & forbidden
            if bad:
                problems.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert problems == []
    # The check sees an edge when there is one.
    assert "correlate" in _detector_imports(ROOT / "detector" / "triage.py")
    assert {"window", "model"} <= _detector_imports(ROOT / "detector" / "sources" / "files.py")


def _hidden_imports(path: Path) -> list[str]:
    """What in ``path`` reaches a module without an import statement (the check above reads statements only)."""
    import ast
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name)):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
            if name in ("import_module", "__import__"):
                found.append(f"line {node.lineno}: {name}()")
    found += [f"line {node.lineno}: module-level __getattr__ (a lazy re-export)" for node in tree.body
              if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"]
    return found


def test_every_detector_import_is_a_statement_the_layout_check_reads(tmp_path: Path) -> None:
    # A lazy re-export (a module __getattr__ calling importlib) would let a stage reach a later one unseen.
    problems = [f"{path.relative_to(ROOT)} {hidden}" for path in sorted((ROOT / "detector").rglob("*.py"))
                for hidden in _hidden_imports(path)]
    assert problems == []
    # The check sees a hidden import when there is one.
    shim = tmp_path / "shim.py"
    shim.write_text("import importlib\n\ndef __getattr__(name):\n"
                    "    return getattr(importlib.import_module('detector.alerts'), name)\n", encoding="utf-8")
    assert _hidden_imports(shim) == ["line 4: import_module()", "line 3: module-level __getattr__ (a lazy re-export)"]


@pytest.mark.parametrize("names", [["all"], ["ext-vm-extension-write"], ["ext-arc-run-command,ext-vmss-run-command"]])
def test_the_jsonl_prefilter_keeps_every_line_the_selected_rules_use(tmp_path: Path, names: list[str]) -> None:
    from detector.pipeline import detect
    from detector.sample.exports import write_jsonl
    from detector.sample.generate import build
    from detector.sources.files import FileSource
    ws = build()
    write_jsonl(tmp_path / "AzureActivity.jsonl", "AzureActivity", ws.activity)
    write_jsonl(tmp_path / "BehaviorAnalytics.jsonl", "BehaviorAnalytics", ws.ueba)
    rules = registry.select(names)
    window = Window.ending_at(ws.at)

    def alerts(prefilter: bool) -> list[tuple[str, str]]:
        source = FileSource(tmp_path, prefilter=prefilter, selection=selection_of(rules))
        return [(a.rule_id, a.key) for a in detect(source, window, rules=rules).alerts]
    fast = alerts(True)
    assert fast == alerts(False)
    assert {rule_id for rule_id, _ in fast} == {r.id for r in rules}


def test_the_jsonl_prefilter_keeps_operation_names_spelled_with_case_twins(tmp_path: Path) -> None:
    # `=~` and `has` compare upper-cased characters, so they take U+017F (long s) for s and U+0131 (dotless i) for i;
    # `bytes.lower` folds ASCII only, so without kql.case_twins the scan would skip such lines and lose alerts.
    from detector.pipeline import detect
    from detector.sample.exports import write_jsonl
    from detector.sample.generate import build
    from detector.sources.files import FileSource
    ws = build()
    write_jsonl(tmp_path / "AzureActivity.jsonl", "AzureActivity", ws.activity)
    write_jsonl(tmp_path / "BehaviorAnalytics.jsonl", "BehaviorAnalytics", ws.ueba)
    # Every "extensions" of every line spelled with the twins, in raw UTF-8 as Log Analytics writes it
    # (a \u escape alone would already make a line a candidate).
    path = tmp_path / "AzureActivity.jsonl"
    twisted = [re.sub("(?i)extensions", lambda m: m.group(0)[:5] + "\u017f\u0131" + m.group(0)[7:],
                      json.dumps(json.loads(line), ensure_ascii=False))
               for line in path.read_text(encoding="utf-8").splitlines()]
    path.write_text("\n".join(twisted) + "\n", encoding="utf-8")
    assert b"extensions" not in path.read_bytes().lower()
    rules = registry.select(["ext-vm-extension-write"])
    window = Window.ending_at(ws.at)

    def alerts(prefilter: bool) -> list[str]:
        source = FileSource(tmp_path, prefilter=prefilter, selection=selection_of(rules))
        return [a.key for a in detect(source, window, rules=rules).alerts]
    full = alerts(False)
    assert full  # the twins do match the rule
    assert alerts(True) == full


NAMED_TUPLE_API = {"_replace", "_asdict", "_fields", "_make"}


def _private_reaches(path: Path) -> list[str]:
    """``x._name`` in ``path`` where ``x`` is another object's: not self/cls/super(), and not an instance of
    the class whose own body defines ``_name`` (as ``__eq__`` reads ``other._value``)."""
    import ast
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def own_names(cls: ast.ClassDef) -> set[str]:
        names = {node.name for node in cls.body if isinstance(node, ast.FunctionDef)}
        for node in ast.walk(cls):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
        return names

    def visit(node: ast.AST, owned: set[str]) -> None:
        if isinstance(node, ast.ClassDef):
            owned = owned | own_names(node)
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and node.attr not in NAMED_TUPLE_API and node.attr not in owned):
            value = node.value
            mine = (isinstance(value, ast.Name) and value.id in ("self", "cls")) or (
                isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super")
            if not mine:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        for child in ast.iter_child_nodes(node):
            visit(child, owned)
    visit(tree, set())
    return found


def test_no_detector_module_reaches_into_another_objects_private_members(tmp_path: Path) -> None:
    # A caller that needs a private member is missing a public method (health messages once posted through
    # WebhookDestination._post).
    problems = [f"{path.relative_to(ROOT)} {reach}" for path in sorted((ROOT / "detector").rglob("*.py"))
                for reach in _private_reaches(path)]
    assert problems == []
    # The check sees a reach when there is one, and lets a class read its own members on another instance.
    sample = tmp_path / "sample.py"
    sample.write_text("class Secret:\n    def __init__(self, v):\n        self._v = v\n"
                      "    def __eq__(self, other):\n        return other._v == self._v\n\n"
                      "def send(destination, body):\n    return destination._post(body)\n", encoding="utf-8")
    assert _private_reaches(sample) == ["line 8: destination._post"]
