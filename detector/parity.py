"""Parity: a rule's own KQL, sent verbatim to a workspace, against the Python port over the same window.

The workspace's rows are Sentinel's engine's answer; the port's rows come from ``detect`` over the same
source. Rows are compared as multisets of the rule's 13 columns in one normal form (times as ISO 8601
UTC with 100 ns precision, dynamic columns parsed, everything else as ``tostring``), so a row repeated
by ``join kind=inner`` must be repeated on both sides.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from . import kql
from .model import RULE_COLUMNS
from .pipeline import detect
from .rule import Rule
from .sources import Source
from .timestamps import format_datetime, parse_datetime
from .window import Window

TIME_COLUMNS = ("StartTime", "EndTime", "UEBAEventTime")
DYNAMIC_COLUMNS = ("UEBAActivityInsights", "UEBAUsersInsights")


class RuleQuerySource(Source, Protocol):
    """A source that can also run a rule's KQL as it is (Log Analytics)."""

    def rule_rows(self, window: Window, rule_query: str) -> list[dict[str, Any]]: ...


def normalize_row(row: dict[str, Any]) -> str:
    """One rule row in a comparable form, whichever side it came from."""
    out: dict[str, Any] = {}
    for column in RULE_COLUMNS:
        value = row.get(column)
        if column in TIME_COLUMNS:
            out[column] = format_datetime(parse_datetime(value)) if isinstance(value, str) and value else value
        elif column in DYNAMIC_COLUMNS:
            out[column] = kql.parse_json(value)
        else:
            out[column] = kql.tostring(value)
    return json.dumps(out, sort_keys=True, ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True, slots=True)
class ParityReport:
    """One rule's comparison: rows only one side returned (with their multiplicity)."""

    rule: Rule
    workspace_rows: int
    port_rows: int
    only_workspace: Counter[str]
    only_port: Counter[str]

    @property
    def differences(self) -> int:
        return self.only_workspace.total() + self.only_port.total()


def compare(source: RuleQuerySource, window: Window, rule: Rule) -> ParityReport:
    """Run ``rule``'s KQL in the workspace and the port over ``source``, and diff their rows."""
    workspace = Counter(normalize_row(r) for r in source.rule_rows(window, rule.query))
    port = Counter(normalize_row(r.to_dict()) for r in detect(source, window, rules=(rule,)).correlation.rows)
    return ParityReport(rule=rule, workspace_rows=workspace.total(), port_rows=port.total(),
                        only_workspace=workspace - port, only_port=port - workspace)
