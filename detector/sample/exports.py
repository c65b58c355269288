"""Write table rows in every export format the file source reads.

Rows are dicts keyed by column name; datetime columns hold ticks, dynamic columns hold JSON values,
everything else strings. Used by the sample generator, the tests (same rows, every format) and the
benchmarks.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..schema import TABLES
from ..timestamps import Ticks, format_datetime, to_datetime

Row = Mapping[str, Any]


def portal_datetime(ticks: Ticks) -> str:
    """The portal's CSV format: ``4/28/2021, 2:32:14.029 PM`` (milliseconds)."""
    dt = to_datetime(ticks)
    hour12 = dt.hour % 12 or 12
    ampm = "AM" if dt.hour < 12 else "PM"
    millis = dt.microsecond // 1000
    return f"{dt.month}/{dt.day}/{dt.year}, {hour12}:{dt.minute:02d}:{dt.second:02d}.{millis:03d} {ampm}"


def _cell(value: Any, kind: str, *, for_csv: bool) -> Any:
    if value is None:
        return "" if for_csv else None
    if kind == "datetime":
        return portal_datetime(value) if for_csv else format_datetime(value)
    if kind == "dynamic":
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if kind in ("int", "long") and for_csv:
        return str(value)
    return value


def write_rest_json(path: Path, table: str, rows: Iterable[Row]) -> None:
    """The Log Analytics query REST response: dynamic values as JSON text."""
    schema = TABLES[table]
    body = {
        "tables": [{
            "name": "PrimaryResult",
            "columns": [{"name": name, "type": kind} for name, kind in schema],
            "rows": [[_cell(row.get(name), kind, for_csv=False) for name, kind in schema] for row in rows],
        }]
    }
    path.write_text(json.dumps(body, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _objects(table: str, rows: Iterable[Row]) -> Iterable[dict[str, Any]]:
    schema = TABLES[table]
    for row in rows:
        obj: dict[str, Any] = {}
        for name, kind in schema:
            value = row.get(name)
            obj[name] = format_datetime(value) if kind == "datetime" and value is not None else value
        yield obj


def write_object_array(path: Path, table: str, rows: Iterable[Row]) -> None:
    """An array of objects, as ``az monitor log-analytics query`` prints."""
    path.write_text(json.dumps(list(_objects(table, rows)), ensure_ascii=False, indent=1) + "\n",
                    encoding="utf-8")


def write_jsonl(path: Path, table: str, rows: Iterable[Row]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for obj in _objects(table, rows):
            handle.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")


def write_portal_csv(path: Path, table: str, rows: Iterable[Row]) -> None:
    """The Azure portal's CSV export: ``$table`` first, `` [UTC]`` on datetime headers."""
    schema = TABLES[table]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(["$table"] + [f"{n} [UTC]" if k == "datetime" else n for n, k in schema])
        for row in rows:
            writer.writerow([table] + [_cell(row.get(n), k, for_csv=True) for n, k in schema])


WRITERS = {
    "json": write_rest_json,
    "array.json": write_object_array,
    "jsonl": write_jsonl,
    "csv": write_portal_csv,
}
