"""Which files under ``--data`` belong to which table, and what shape a ``.json`` file has.

A file belongs to a table when a folder on its path (below ``--data``) is one Azure writes that table to
(Log Analytics data export: ``am-azureactivity``, ``am-behavioranalytics``; the Activity Log's diagnostic
setting: ``insights-activity-logs``) or when its name starts with the table's name (``AzureActivity.jsonl``,
``AzureActivity-2026-11.csv.gz``). Extensions: ``.jsonl``, ``.json``, ``.csv``, each optionally ``.gz``. Any
number of files per table, in any folder depth; they are read in path order, and the order does not change
the result (the correlation groups and sorts; duplicates across files are dropped, see ``activitylog``).
Other files are ignored; a table with no file is an error naming the folder.

Azure names its hourly blobs ``PT1H.json`` though they hold one JSON object per line: a ``.json`` file is read
as JSON Lines when its first line is a whole JSON object that is not a wrapper (``records``, ``value``,
``tables``), else as one JSON document.
"""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path
from typing import BinaryIO, cast

from .. import kql
from ..errors import InputError
from .scan import open_bytes

EXTENSIONS = ("jsonl", "json", "csv")
TABLE_FOLDERS = {
    "AzureActivity": ("am-azureactivity", "insights-activity-logs"),
    "BehaviorAnalytics": ("am-behavioranalytics",),
}
WRAPPERS = ("records", "value", "tables")


def format_of(path: Path) -> str | None:
    """``jsonl``, ``json`` or ``csv`` from the name (``.gz`` looked through); None when none of them."""
    name = path.name.lower()
    name = name.removesuffix(".gz")
    ext = name.rpartition(".")[2]
    return ext if "." in name and ext in EXTENSIONS else None


def _table_of(relative: Path, tables: tuple[str, ...]) -> str | None:
    folders = [part.lower() for part in relative.parts[:-1]]
    for table in tables:
        if any(folder in TABLE_FOLDERS.get(table, ()) for folder in folders):
            return table
    name = relative.name.lower()
    return next((t for t in tables if name.startswith(t.lower())), None)


def find_tables(directory: Path, tables: tuple[str, ...]) -> dict[str, list[Path]]:
    """Every export file of each table under ``directory``, in path order; an error for a table with none."""
    found: dict[str, list[Path]] = {t: [] for t in tables}
    for folder, subfolders, files in os.walk(directory):
        subfolders.sort()
        for name in sorted(files):
            path = Path(folder) / name
            table = _table_of(path.relative_to(directory), tables) if format_of(path) else None
            if table is not None:
                found[table].append(path)
    for table, paths in found.items():
        if not paths:
            names = ", ".join(f"{table}.{ext}" for ext in EXTENSIONS)
            raise InputError(f"no export of {table} found (expected one of {names}, optionally .gz, or a folder "
                             f"{' or '.join(TABLE_FOLDERS[table])} of them)", path=str(directory))
        _refuse_same_export_twice(table, paths, directory)
    return found


def _refuse_same_export_twice(table: str, paths: list[Path], directory: Path) -> None:
    """``AzureActivity.json`` beside ``AzureActivity.jsonl``: the same export in two formats, most likely."""
    stems: dict[tuple[Path, str], list[Path]] = {}
    for path in paths:
        stem = path.name.lower().removesuffix(".gz").rpartition(".")[0]
        stems.setdefault((path.parent, stem), []).append(path)
    for same in stems.values():
        if len(same) > 1:
            raise InputError(f"several exports of {table} ({', '.join(p.name for p in same)}); keep one",
                             path=str(directory))


def open_text(path: Path, *, newline: str | None = None) -> io.TextIOWrapper:
    """The file as UTF-8 text (a BOM dropped), decompressed when it ends in ``.gz``."""
    return io.TextIOWrapper(cast(BinaryIO, open_bytes(path)), encoding="utf-8-sig", newline=newline)


def first_object(path: Path) -> dict[str, object] | None:
    """The file's first line as a JSON object, when it is one (unreadable text: None; its reader says why)."""
    try:
        with open_text(path) as handle:
            value = kql.loads(handle.readline())
    except (ValueError, OSError, EOFError, zlib.error):  # UnicodeDecodeError is a ValueError
        return None
    return value if isinstance(value, dict) else None


def json_is_lines(path: Path) -> bool:
    """Whether a ``.json`` file holds one JSON object per line (see the module's docstring)."""
    first = first_object(path)
    return first is not None and not any(isinstance(first.get(k), list) for k in WRAPPERS)
