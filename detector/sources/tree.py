"""Which files under ``--data`` belong to which table, and what shape a ``.json`` file has.

A file belongs to a table when a folder on its path (below ``--data``) is one Azure writes that table to
(Log Analytics data export: ``am-azureactivity``, ``am-behavioranalytics``; the Activity Log's diagnostic
setting: ``insights-activity-logs``) or when its name starts with the table's name (``AzureActivity.jsonl``,
``AzureActivity-2026-11.csv.gz``). Extensions: ``.jsonl``, ``.json``, ``.csv``, each optionally ``.gz``. Any
number of files per table, in any folder depth; they are read in path order, and the order does not change
the result (the correlation groups and sorts; duplicates across files are dropped, see ``activitylog``).
Other files are ignored, and so are hidden names (a leading ``.``: macOS's ``._PT1H.json`` twins, ``.git``,
editors' and download tools' temporary files); a table with no file is an error naming the folder. Symbolic
links to folders are followed (a mounted archive linked into the tree), each real folder and file once, so a
link back up cannot loop; a folder that cannot be listed is an error naming it, never a silent gap.

Azure names its hourly blobs ``PT1H.json`` though they hold one JSON object per line: a ``.json`` file is read
as JSON Lines when its first non-blank line is a whole JSON object that is not a document wrapper (``value``,
``tables``; a ``records`` line is an event hub message, whose records are read), or when that line is a broken
object (``{`` but not JSON) and the next non-blank one is such an object (the broken line is then one
malformed row); else as one JSON document (whose lines are never whole objects: ``{``, ``"records": [``).
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
DOCUMENT_WRAPPERS = ("value", "tables")  # an object holding these is a whole document, never a line


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
    # The folders and files met, by device and inode (one stat each, where a real path costs a stat per
    # component): links are followed once, never in a loop.
    seen: set[tuple[int, int]] = set()

    def unlisted(exc: OSError) -> None:
        raise InputError(f"cannot list the folder: {exc.strerror}", path=exc.filename)

    def identity(path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:  # a dangling link: nothing to read there
            return None
        return st.st_dev, st.st_ino

    for folder, subfolders, files in os.walk(directory, onerror=unlisted, followlinks=True):
        here = identity(folder)
        if here is not None:
            seen.add(here)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")
                               and identity(os.path.join(folder, d)) not in seen)
        for name in sorted(files):
            path = Path(folder) / name
            table = _table_of(path.relative_to(directory), tables) if format_of(path) else None
            if table is None or name.startswith("."):
                continue
            real = identity(str(path))
            if real is None or real not in seen:
                if real is not None:
                    seen.add(real)
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


def _leading_lines(path: Path, count: int) -> list[tuple[str, object]]:
    """The file's first ``count`` non-blank lines, each with its JSON value, None when it is not JSON
    (unreadable text ends the list; its reader says why)."""
    lines: list[tuple[str, object]] = []
    try:
        with open_text(path) as handle:
            for line in handle:
                if line.strip():
                    try:
                        lines.append((line.strip(), kql.loads(line)))
                    except ValueError:
                        lines.append((line.strip(), None))
                    if len(lines) == count:
                        break
    except (ValueError, OSError, EOFError, zlib.error):  # UnicodeDecodeError is a ValueError
        pass
    return lines


def first_object(path: Path) -> dict[str, object] | None:
    """The file's first object as the readers take it: its first non-blank line when that is a JSON object, or
    the next one after a broken first object (see the module's docstring); None otherwise."""
    leading = _leading_lines(path, 2)
    if len(leading) > 1 and leading[0][1] is None and leading[0][0].startswith("{"):
        leading = leading[1:]  # a broken first object (a document's lone "{" is followed by no whole object)
    return leading[0][1] if leading and isinstance(leading[0][1], dict) else None


def is_records(value: object) -> bool:
    """An event hub message / storage document: ``{"records": [...]}``."""
    return isinstance(value, dict) and isinstance(value.get("records"), list)


def json_is_lines(path: Path) -> bool:
    """Whether a ``.json`` file holds one JSON object per line (see the module's docstring)."""
    first = first_object(path)
    return first is not None and not any(isinstance(first.get(k), list) for k in DOCUMENT_WRAPPERS)
