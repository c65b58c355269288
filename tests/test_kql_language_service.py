"""Every KQL text the detector can send, and the seed rule itself, analysed by Microsoft's Kusto
language service (npm @kusto/language-service-next, from Node) against the two tables' schemas."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from detector.rule import QUERY, selection_of
from detector.rules import ALL_RULES, EXTENDED
from detector.schema import TABLES
from detector.sources.kqltext import activity_query, parity_query, ueba_query, unfiltered_query
from detector.timestamps import parse_datetime

ROOT = Path(__file__).resolve().parents[1]
START, END = parse_datetime("2026-11-18T06:00:00Z"), parse_datetime("2026-11-20T06:00:00.1234567Z")


def analyse(queries: list[str], *, tables: Mapping[str, Sequence[tuple[str, str]]] = TABLES) -> list[list[dict[str, Any]]]:
    """Diagnostics per query against ``tables`` (by default the rule's two tables)."""
    payload = {"tables": {name: [list(c) for c in columns] for name, columns in tables.items()}, "queries": queries}
    done = subprocess.run(["node", str(ROOT / "tests" / "js" / "kql_check.js")], input=json.dumps(payload),
                          capture_output=True, text=True, check=True, timeout=180)
    result: list[list[dict[str, Any]]] = json.loads(done.stdout)
    return result


def test_every_query_the_code_sends_and_the_seed_rule_analyse_cleanly() -> None:
    hostile = ['alice@contoso.com', 'o"brien@contoso.com', "back\\slash@x.com", "new\nline@x.com", "tab\t@x.com",
               "émile@exemple.fr"]
    queries = {
        "seed rule": QUERY,
        "parity": parity_query(QUERY),
        "activity pushdown": activity_query(START, END),
        "activity pushdown, every rule": activity_query(START, END, selection_of(ALL_RULES)),
        **{f"extended rule {rule.id}": rule.query for rule in EXTENDED},
        **{f"parity {rule.id}": parity_query(rule.query) for rule in EXTENDED},
        **{f"activity pushdown {rule.id}": activity_query(START, END, rule.selection) for rule in EXTENDED},
        "ueba pushdown": ueba_query(START, END, hostile),
        "ueba pushdown, one caller": ueba_query(START, END, ["a@b.c"]),
        "unfiltered AzureActivity": unfiltered_query("AzureActivity", START, END),
        "unfiltered BehaviorAnalytics": unfiltered_query("BehaviorAnalytics", START, END),
    }
    results = analyse(list(queries.values()))
    for name, diagnostics in zip(queries, results, strict=True):
        assert diagnostics == [], f"{name}: {diagnostics}"


def test_the_check_can_fail() -> None:
    broken = activity_query(START, END).replace("OperationNameValue", "OperationNameValu")
    syntax = QUERY.replace("| summarize", "| summarise")
    extended = EXTENDED[1].query.replace("strcat_delim(", "strcat_delimited(")
    results = analyse([broken, syntax, "BehaviorAnalytics | where ActivityInsights.X == ", extended])
    assert all(results), results
    assert any("OperationNameValu" in d["message"] for d in results[0])
