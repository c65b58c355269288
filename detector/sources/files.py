"""Replay exported logs: a folder holding the exports of AzureActivity and BehaviorAnalytics.

Which files belong to which table, ``.gz`` and folder trees: ``tree.py``; the Activity Log's own shapes
and the older AzureActivity schema, mapped to the columns: ``activitylog.py``. Formats, chosen by extension:

* ``.json``: the Log Analytics REST response (``{"tables": [{"columns": [...], "rows": [[...]]}]}``)
  or an array of objects (what ``az monitor log-analytics query`` prints);
* ``.jsonl``: one JSON object per line;
* ``.csv``: the Azure portal's export (``$table`` column, headers ending in `` [UTC]``, times like
  ``4/28/2021, 2:32:14.029 PM``, JSON cells quoted over several lines).

Extra columns are ignored. A required column missing from the header (for objects: from the first
object, which plays the header's part) is an :class:`InputError` naming file and column. A row that
cannot be read is counted and reported with its line (or item) number, and reading goes on.

JSON Lines files are, by default, scanned rather than parsed whole (``scan.py``): only lines that
could pass the rule's row filter are parsed, on every core; the result is the same, and a malformed
line that could never have matched is counted as read but not reported (``prefilter=False``, the
CLI's ``--check-all-rows``, parses and reports every line).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import re
import zlib
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .. import kql
from ..errors import InputError
from ..model import ACTIVITY_COLUMNS, IDENTITY_COLUMNS, UEBA_COLUMNS, UEBA_OPTIONAL_COLUMNS, ActivityEvent
from ..timestamps import DATE_ORDERS, PORTAL, format_datetime, parse_portal_datetime, portal_date_evidence
from ..window import SEED_SELECTION, ActivitySelection, Window
from . import MalformedRow, Progress, ReadReport, SourceData, activitylog
from .records import Identities, RowError, activity_event, ueba_event, ueba_identity
from .scan import LinePrefilter, ScanResult, ScanStream, open_bytes
from .tree import find_tables, format_of, is_records, json_is_lines, open_text

ACTIVITY_TABLE = "AzureActivity"
UEBA_TABLE = "BehaviorAnalytics"

_T = TypeVar("_T")
RowStream = Iterator[tuple[str, Mapping[str, Any]]]
"""(where in the file, column -> value) for each readable row."""
_SUFFIX = re.compile(r"^(.*?)\s*\[([^\]]*)\]$")
# A quoted CSV cell may span lines (pretty-printed JSON); one running longer than this is taken as an
# unterminated quote.
MAX_RECORD_LINES = 2000


def normalize_header(name: str, path: str, required: tuple[str, ...]) -> str:
    """Strip a BOM, whitespace and the portal's `` [UTC]`` suffix; refuse local-time exports."""
    name = name.strip().lstrip("\ufeff").strip()
    m = _SUFFIX.match(name)
    if m:
        base, zone = m.group(1), m.group(2).strip()
        if zone.upper() != "UTC" and base in required:
            raise InputError(
                f"times are exported in {zone!r}; export them in UTC (portal: Settings > Time zone > UTC)",
                path=path, column=name,
            )
        return base
    return name


def _column_index(columns: list[str], required: tuple[str, ...]) -> list[tuple[str, int]]:
    """Where each required column is, plus the optional context and identity columns that are present."""
    return [(name, columns.index(name)) for name in required] + [
        (name, columns.index(name)) for name in UEBA_OPTIONAL_COLUMNS + IDENTITY_COLUMNS
        if name in columns and name not in required]


def _check_columns(columns: list[str], required: tuple[str, ...], path: str) -> None:
    present = set(columns)
    if len(present) != len(columns):
        duplicate = next(c for i, c in enumerate(columns) if c in columns[:i])
        raise InputError("the column appears more than once; keep one", path=path, column=duplicate)
    for column in required:
        if column not in present:
            raise InputError("required column is missing", path=path, column=column)


class _CsvRecords:
    """Split CSV text into records: ``(first line number, text)``, or ``(line, None)`` for a record
    whose quote never closes.

    A record is complete when it holds an even number of ``"`` (quotes inside quoted cells are
    doubled), so multi-line JSON cells stay whole. A stray quote shifts that parity for the lines
    after it; :meth:`rescan_after_first_line` then puts back all but the bad record's first line,
    so one broken row costs one row.
    """

    def __init__(self, handle: io.TextIOBase) -> None:
        self._numbered = enumerate(handle, start=1)
        self._pending: deque[tuple[int, str]] = deque()
        self._last: list[tuple[int, str]] = []

    def _next_line(self) -> tuple[int, str] | None:
        if self._pending:
            return self._pending.popleft()
        return next(self._numbered, None)

    def rescan_after_first_line(self) -> None:
        self._pending.extendleft(reversed(self._last[1:]))
        self._last = []

    def last_spanned_lines(self) -> bool:
        return len(self._last) > 1

    def __iter__(self) -> Iterator[tuple[int, str | None]]:
        while True:
            first = self._next_line()
            if first is None:
                return
            buffer = [first]
            quotes = first[1].count('"')
            while quotes % 2 == 1 and len(buffer) < MAX_RECORD_LINES:
                following = self._next_line()
                if following is None:
                    break
                buffer.append(following)
                quotes += following[1].count('"')
            self._last = buffer
            if quotes % 2 == 1:
                self.rescan_after_first_line()
                yield first[0], None
                continue
            yield first[0], "".join(text for _, text in buffer)


def _parse_record(text: str) -> list[str]:
    return next(csv.reader([text], strict=True), [])


def _read_csv(path: Path, required: tuple[str, ...], report: ReadReport) -> Iterator[tuple[str, dict[str, Any]]]:
    with open_text(path, newline="") as handle:
        splitter = _CsvRecords(handle)
        records = iter(splitter)
        header_record = next(records, None)
        while header_record is not None and header_record[1] is not None and not header_record[1].strip():
            header_record = next(records, None)
        if header_record is None:
            return  # an empty file (a zero-byte blob): an empty table, as a header without rows is
        type_line = ""
        if header_record[1] is not None and header_record[1].startswith("#TYPE"):
            type_line = header_record[1]
            header_record = next(records, None)  # PowerShell Export-Csv's type line: the header follows
        if header_record is None or header_record[1] is None:
            raise InputError("no readable CSV header", path=str(path), line=1)
        try:
            header = [normalize_header(h, str(path), required) for h in _parse_record(header_record[1])]
        except csv.Error as exc:
            raise InputError(f"unreadable CSV header: {exc}", path=str(path), line=1) from None
        _refuse_flattened_objects(type_line, header, path)
        header, older = _newer_names(header, required)
        _check_columns(header, required, str(path))
        index = _column_index(header, required)
        width = len(header)
        for line, text in records:
            where = f"line {line}"
            if text is None:
                report.add_malformed(MalformedRow(str(path), where, "a quoted cell is never closed"))
                continue
            if not text.strip():
                continue
            try:
                fields = _parse_record(text)
            except csv.Error as exc:
                report.add_malformed(MalformedRow(str(path), where, f"broken CSV quoting: {exc}"))
                if splitter.last_spanned_lines():
                    # Likely a stray quote that swallowed the next rows: read them again.
                    splitter.rescan_after_first_line()
                continue
            if len(fields) != width:
                report.add_malformed(MalformedRow(
                    str(path), where, f"{len(fields)} fields where the header has {width}"))
                continue
            row = {name: fields[i] for name, i in index}
            if older:
                activitylog.check_older_operation(row["OperationNameValue"], str(path))
            yield where, row


def _newer_names(columns: list[str], required: tuple[str, ...]) -> tuple[list[str], bool]:
    """A header (CSV, query response) with the older AzureActivity schema's columns renamed, and whether it had
    them: then each row's OperationName must be checked (``activitylog.check_older_operation``)."""
    older = required == ACTIVITY_COLUMNS and activitylog.is_older_schema(columns)
    return (activitylog.older_names(columns) if older else columns), older


def _refuse_flattened_objects(type_line: str, header: list[str], path: Path) -> None:
    """``Get-AzLog | Export-Csv`` writes nested objects as .NET type names: the scope is lost, say how to keep it.
    Told by its type line, or, without one (PowerShell 7's default, ``-NoTypeInformation``), by the event's
    ``EventTimestamp`` column, which no AzureActivity export has."""
    if "PSEventData" in type_line or "EventTimestamp" in header:
        raise InputError("Export-Csv of Get-AzLog events writes Authorization and HttpRequest as type names, so "
                         "the scope and the caller's IP are lost; export with Get-AzLog | ConvertTo-Json -Depth 10 "
                         "| Set-Content -Encoding utf8 AzureActivity.json instead", path=str(path), line=1)


def _date_order(path: Path, required: tuple[str, ...]) -> str:
    """The file's day/month order, from its own portal times (a first pass over the file).

    The first time with a day above 12 (or a dotted date) settles it; a file where every time could
    be read either way (``4/5/2021``) is refused unless the order is given.
    """
    ambiguous = ""
    for where, row in _read_csv(path, required, ReadReport()):
        value = row.get("TimeGenerated")
        evidence = portal_date_evidence(value) if isinstance(value, str) else None
        if evidence in DATE_ORDERS:
            return evidence  # later rows that contradict it are malformed rows, each reported
        if evidence == "ambiguous" and not ambiguous:
            ambiguous = f"{where}: {str(value).strip()[:40]!r}"
    if ambiguous:
        raise InputError(f"cannot tell whether TimeGenerated is month/day or day/month: no day above 12 settles it "
                         f"(e.g. {ambiguous}); give --date-order mdy or dmy", path=str(path))
    return "mdy"  # no portal time whose reading depends on the order


def _iter_csv(path: Path, required: tuple[str, ...], report: ReadReport, date_order: str | None = None) -> RowStream:
    """Portal CSV rows; portal times are read with the file's day/month order (given or found)."""
    order = date_order or _date_order(path, required)
    for where, row in _read_csv(path, required, report):
        value = row.get("TimeGenerated")
        if isinstance(value, str) and PORTAL.fullmatch(value.strip()):
            try:
                row["TimeGenerated"] = format_datetime(parse_portal_datetime(value, order))
            except ValueError as exc:
                report.add_malformed(MalformedRow(str(path), where, f"TimeGenerated ({order}): {exc}"))
                continue
        yield where, row


# EventSource == "Azure AD" and the insight == "True": both exact, case-sensitive. The rarer needle drives
# the scan. A JSON ``true`` (a literal: no escape spells it otherwise) never matches but is counted and warned
# about (CorrelationStats.ueba_boolean_flags), so its lines are read too.
UEBA_PREFILTER = LinePrefilter(any_of=(b"True", b"true"), all_of=(b"Azure AD",), lower=False)


def prefilters(selection: ActivitySelection) -> dict[str, LinePrefilter]:
    """Per table, the needles a usable line holds; AzureActivity's: one of the selected rules' needles
    (lower-cased: operation names are compared case-insensitively)."""
    twins = kql.case_twins("".join(n.decode("ascii") for n in selection.needles))
    return {UEBA_TABLE: UEBA_PREFILTER,
            ACTIVITY_TABLE: LinePrefilter(any_of=selection.needles, lower=True,
                                          twins=tuple(ch.encode("utf-8") for ch in twins))}


def _checked_objects(path: Path, items: Iterable[tuple[str, Any]], required: tuple[str, ...],
                     report: ReadReport) -> RowStream:
    """Keep the JSON objects; the first one plays the header's part (its columns are checked)."""
    checked = False
    mapped: activitylog.Mapper | None = None  # an Activity Log shape, decided by the first object
    for where, obj in items:
        if not isinstance(obj, dict):
            report.add_malformed(MalformedRow(str(path), where, "not a JSON object"))
            continue
        if not checked:
            mapped = activitylog.mapper_for(obj, str(path)) if required == ACTIVITY_COLUMNS else None
            _check_columns(list(mapped(obj) if mapped else obj), required, str(path))
            checked = True
        yield where, mapped(obj) if mapped else obj


def _line_text(number: int, line: bytes) -> str:
    """One JSON Lines line as text, as both modes read it: UTF-8, a BOM skipped on line 1 only (as at the start
    of a text file). ``UnicodeDecodeError`` (a ``ValueError``) when it is not UTF-8."""
    return line.decode("utf-8-sig" if number == 1 else "utf-8")


def _line_error(exc: ValueError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({exc.reason} at byte {exc.start} of the line)"
    return f"not JSON: {exc}"


def _parse_jsonl_lines(path: Path, lines: Iterable[tuple[int, bytes]], required: tuple[str, ...],
                       report: ReadReport, *, count_as: str | None = None) -> RowStream:
    """Numbered JSON Lines -> objects; blank lines are skipped, unparseable ones reported. ``count_as``: the
    table whose rows read are the lines (numbered from 1, every one given) when the stream ends. A line that
    is an event hub message, ``{"records": [...]}``, gives its records (``line N item K``), each a row read.

    Lines end at ``\\n`` only (``\\r\\n`` too: the ``\\r`` is JSON whitespace); a lone ``\\r`` is whitespace
    inside the line, not a break. A line that is not UTF-8 is a malformed row, not the end of the file."""
    def decoded() -> Iterator[tuple[str, Any]]:
        number = records_beyond_lines = 0
        try:
            for number, line in lines:
                try:
                    text = _line_text(number, line)
                    if not text.strip():
                        continue
                    value = kql.loads(text)
                except ValueError as exc:
                    report.add_malformed(MalformedRow(str(path), f"line {number}", _line_error(exc)))
                    continue
                if is_records(value):
                    records_beyond_lines += len(value["records"]) - 1
                    yield from ((f"line {number} item {k}", item) for k, item in enumerate(value["records"], start=1))
                else:
                    yield f"line {number}", value
        finally:
            if count_as is not None:
                _count_lines(report, count_as, number + records_beyond_lines)
    yield from _checked_objects(path, decoded(), required, report)


def _header_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """The file's lines up to its first JSON object, which plays the header's part (usually line 1 alone)."""
    with open_bytes(path) as handle:
        for number, line in enumerate(handle, start=1):
            yield number, line
            if _as_object(number, line) is not None:
                return


def _first_object(path: Path) -> dict[str, Any] | None:
    """The file's first JSON object (None: it has none, or cannot be read; its reader says why)."""
    with contextlib.suppress(OSError, EOFError, zlib.error), open_bytes(path) as handle:
        for number, line in enumerate(handle, start=1):
            value = _as_object(number, line)
            if value is not None:
                return value
    return None


def _as_object(number: int, line: bytes) -> dict[str, Any] | None:
    """The line as a JSON object; None when it is not one (blank, malformed, another JSON value)."""
    try:
        value = kql.loads(_line_text(number, line))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _count_lines(report: ReadReport, table: str, lines: int) -> None:
    """Every line of a JSON Lines file is a row read, in both modes: the scan cannot tell a blank or
    malformed line it does not parse from a row (decision)."""
    if lines:
        report.rows_read[table] = report.rows_read.get(table, 0) + lines


def _iter_scanned(path: Path, required: tuple[str, ...], report: ReadReport, table: str,
                  parts: Iterator[ScanResult], progress: Progress | None) -> RowStream:
    """Parse the candidate lines of a scan (see ``scan.py``) as its ranges arrive; count every line.

    The header's part is the file's first JSON object, as in a full parse: when line 1 (always a
    candidate) is not one, the lines up to the first object are read and parsed too, candidates or not."""
    def numbered() -> Iterator[tuple[int, bytes]]:
        header_through = 1
        for part in parts:
            _count_lines(report, table, part.lines)
            if progress is not None:
                progress.advance(nbytes=part.size, rows=part.lines)
            for index, line in part.candidates:
                number = index + 1
                if 1 < number <= header_through:
                    continue  # read already, as the header's part
                yield number, line
                if number == 1 and _as_object(number, line) is None:
                    for header_through, head_line in itertools.islice(_header_lines(path), 1, None):
                        yield header_through, head_line
    yield from _parse_jsonl_lines(path, numbered(), required, report)


def _iter_jsonl(path: Path, required: tuple[str, ...], report: ReadReport, table: str) -> RowStream:
    with open_bytes(path) as handle:
        yield from _parse_jsonl_lines(path, enumerate(handle, start=1), required, report, count_as=table)


def _iter_json(path: Path, required: tuple[str, ...], report: ReadReport, date_order: str | None = None) -> RowStream:
    with open_text(path) as handle:
        text = handle.read()
        if not text.strip():
            return  # an empty file (a zero-byte blob): an empty table, as an empty ``rows`` list is
        try:
            document = kql.loads(text)
        except ValueError as exc:
            line = getattr(exc, "lineno", None)
            raise InputError(f"not a JSON document: {exc}", path=str(path), line=line) from None
    if isinstance(document, dict) and isinstance(document.get("tables"), list):
        yield from _iter_rest_tables(document["tables"], path, required, report)
        return
    for wrapper in ("value", "records", "Value"):  # REST / az CLI, storage account and event hub, PowerShell 5.1
        if isinstance(document, dict) and isinstance(document.get(wrapper), list):
            document = document[wrapper]
    if isinstance(document, dict) and document and required == ACTIVITY_COLUMNS \
            and activitylog.mapper_for(document, str(path)) is not None:
        document = [document]  # ConvertTo-Json of a single event writes the object, not an array
    if not isinstance(document, list):
        raise InputError("expected a Log Analytics response ({\"tables\": ...}), an array of objects, or an "
                         "Activity Log document ({\"records\": [...]}, {\"value\": [...]})", path=str(path))
    yield from _checked_objects(path, ((f"item {n}", obj) for n, obj in enumerate(document, start=1)), required,
                                report)


def _iter_rest_tables(
    tables: list[Any], path: Path, required: tuple[str, ...], report: ReadReport
) -> RowStream:
    table = next((t for t in tables if isinstance(t, dict) and t.get("name") == "PrimaryResult"), None)
    if table is None:
        table = tables[0] if tables and isinstance(tables[0], dict) else None
    if table is None or not isinstance(table.get("columns"), list) or not isinstance(table.get("rows"), list):
        raise InputError("the response holds no table with columns and rows", path=str(path))
    names, older = _newer_names([normalize_header(str(c.get("name", "")) if isinstance(c, dict) else "", str(path),
                                                  required) for c in table["columns"]], required)
    _check_columns(names, required, str(path))
    index = _column_index(names, required)
    for number, row in enumerate(table["rows"], start=1):
        where = f"row {number}"
        if not isinstance(row, list) or len(row) != len(names):
            report.add_malformed(MalformedRow(str(path), where, f"expected a list of {len(names)} values"))
            continue
        values = {name: row[i] for name, i in index}
        if older:
            activitylog.check_older_operation(values["OperationNameValue"], str(path))
        yield where, values


_READERS = {"csv": _iter_csv, "json": _iter_json}  # JSON Lines: _iter_jsonl (it counts lines, not rows)


# Byte-order marks of encodings other than UTF-8 (UTF-32 first: its little-endian mark starts like UTF-16's).
_FOREIGN_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
                 (b"\xfe\xff", "UTF-16"))


def check_utf8_text(path: Path) -> None:
    """Refuse UTF-16/UTF-32 files (a BOM, or the NUL bytes such text has without one) with a fix.

    Windows PowerShell 5.1 writes UTF-16 with ``>`` and ``Out-File``; read as UTF-8 such a file would
    give no usable row at all, which must never look like a clean, empty run.
    """
    try:
        with open_bytes(path) as handle:
            head = handle.read(4096)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read: {getattr(exc, 'strerror', None) or exc}", path=str(path)) from None
    encoding = next((name for bom, name in _FOREIGN_BOMS if head.startswith(bom)), None)
    # Without a BOM: UTF-16/32 text has a NUL in every other (or three of four) byte of its ASCII
    # column names; a stray NUL in one UTF-8 value is a malformed row, not a foreign encoding.
    if encoding is None and head.count(b"\x00") >= max(2, len(head) // 16):
        encoding = "UTF-16 or UTF-32 (NUL bytes)"
    if encoding is not None:
        raise InputError(f"the file is {encoding}, not UTF-8; re-save it as UTF-8 (PowerShell: Get-Content IN | "
                         f"Set-Content -Encoding utf8 OUT, or Out-File -Encoding utf8)", path=str(path))


def _records(path: Path, table: str, rows: RowStream, convert: Callable[[Mapping[str, Any]], _T],
             report: ReadReport, *, count: bool,
             met_before: Callable[[Mapping[str, Any], _T], bool] | None = None) -> Iterator[_T]:
    for where, row in rows:
        if count:
            report.count_row(table)
        try:
            record = convert(row)
        except RowError as exc:
            report.add_malformed(MalformedRow(str(path), where, str(exc)))
            continue
        if met_before is not None and met_before(row, record):
            report.duplicates_skipped += 1
            continue
        yield record


def read_table(path: Path, table: str, required: tuple[str, ...], convert: Callable[[Mapping[str, Any]], _T],
               report: ReadReport, *, scanned: Callable[[], Iterator[ScanResult]] | None = None,
               date_order: str | None = None, met_before: Callable[[Mapping[str, Any], _T], bool] | None = None,
               progress: Progress | None = None) -> Iterator[_T]:
    """Stream one export as records; malformed rows go to ``report``.

    ``scanned`` (JSON Lines only) gives the prefilter scan of the file: only its candidate lines are
    parsed, every line is counted. ``date_order`` (``"mdy"``/``"dmy"``, portal CSV only) overrides
    the order found from the file's times. ``met_before`` (``records.Identities``, one per table) tells an
    event already read, in this file or another: it is skipped and counted (``duplicates_skipped``).

    A file that has rows but none of them readable is an :class:`InputError`: the run must not look clean when
    the data was never read. The caller has refused files in another encoding than UTF-8 already
    (:func:`check_utf8_text`, for every file before any scan starts).
    """
    malformed_before = len(report.malformed), report.malformed_count
    rows_before = report.rows_read.get(table, 0)
    duplicates_before = report.duplicates_skipped
    converted = 0
    try:
        fmt = "jsonl" if scanned is not None else reading_format(path)
        rows: RowStream = (_iter_scanned(path, required, report, table, scanned(), progress) if scanned is not None
                           else _iter_jsonl(path, required, report, table) if fmt == "jsonl"
                           else _READERS[fmt](path, required, report, date_order))
        for record in _records(path, table, rows, convert, report, count=fmt != "jsonl",
                               met_before=met_before):
            converted += 1
            yield record
        if progress is not None and scanned is None:
            progress.advance(nbytes=path.stat().st_size, rows=report.rows_read.get(table, 0) - rows_before)
        if converted or report.duplicates_skipped > duplicates_before:  # a duplicate is a readable row too
            return
        if scanned is None:
            malformed = report.malformed_count - malformed_before[1]
            first = report.malformed[malformed_before[0]:malformed_before[0] + 1]
        else:
            # The scan parsed only the candidate lines: decide as a full parse would (only a file with no
            # usable candidate, i.e. no usable first line, pays for this second pass).
            full = ReadReport()
            if any(True for _ in _records(path, table, _iter_jsonl(path, required, full, table), convert, full,
                                          count=False)):
                return
            malformed, first = full.malformed_count, full.malformed[:1]
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=str(path)) from None
    except (OSError, EOFError, zlib.error) as exc:  # gzip: a truncated or corrupt .gz
        raise InputError(f"cannot read: {getattr(exc, 'strerror', None) or exc}", path=str(path)) from None
    if malformed:
        detail = f"{first[0].location}: {first[0].reason}" if first else "?"
        raise InputError(f"none of its {malformed} row(s) could be read (first: {detail}); nothing was checked",
                         path=str(path))


def reading_format(path: Path) -> str:
    """The reader for a file: ``jsonl``, ``json`` or ``csv`` (a ``.json`` of one object per line is ``jsonl``)."""
    ext = format_of(path) or "jsonl"
    return "jsonl" if ext == "json" and json_is_lines(path) else ext


def _scannable(path: Path, table: str) -> bool:
    """JSON Lines whose rows the prefilter may skip: not the older schema, whose display names it cannot see,
    nor event hub messages (several records a line: parsed whole, so rows are counted as records either way);
    both told by the first object, as the reader tells it, not by line 1."""
    if reading_format(path) != "jsonl":
        return False
    first = _first_object(path) if table == ACTIVITY_TABLE else None
    return not (first is not None and (activitylog.is_older_schema(first) or is_records(first)))


class FileSource:
    """Exports in a folder (tree); the correlation applies the window.

    ``prefilter`` (default on) skips parsing JSON Lines rows that cannot match; ``False`` parses every
    row (and so reports every malformed row, even one that could never have matched). ``progress`` is told
    of the bytes and rows read as the streams are consumed.
    """

    def __init__(self, directory: Path | str, *, prefilter: bool = True, date_order: str | None = None,
                 progress: Progress | None = None, selection: ActivitySelection = SEED_SELECTION) -> None:
        if date_order is not None and date_order not in DATE_ORDERS:
            raise InputError(f"date order must be one of {', '.join(DATE_ORDERS)}, got {date_order!r}")
        self.prefilter = prefilter
        self.selection = selection
        self.prefilters = prefilters(selection)
        self.date_order = date_order
        self.progress = progress
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise InputError("not a folder", path=str(self.directory))
        self.files = find_tables(self.directory, (ACTIVITY_TABLE, UEBA_TABLE))

    def describe(self) -> str:
        return f"files in {self.directory}"

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for paths in self.files.values() for p in paths)

    def fetch(self, window: Window) -> SourceData:
        report = ReadReport()
        for paths in self.files.values():
            for path in paths:
                check_utf8_text(path)  # before a scan starts: a UTF-16 file must be refused, not skipped
        jobs = [(p, self.prefilters[t]) for t, paths in self.files.items() for p in paths
                if self.prefilter and _scannable(p, t)]
        job_of = {p: index for index, (p, _) in enumerate(jobs)}  # a dict: 10,000 hourly files stay linear
        streams: list[ScanStream] = []

        def scanned_for(path: Path) -> Callable[[], Iterator[ScanResult]] | None:
            if path not in job_of:
                return None

            def get() -> Iterator[ScanResult]:
                if not streams:  # every file shares one process pool, started on first use
                    streams.append(ScanStream(jobs))
                return streams[0].parts(job_of[path])
            return get

        usable_pairs: set[tuple[str, str]] = set()  # an operation's events repeat its pair: decide it once

        def usable_identity(row: Mapping[str, Any], event: ActivityEvent) -> Hashable | None:
            """Only rows a selected rule can use are remembered: the others cannot change a result, and
            remembering every row's identity would make memory grow with the export (290 MB per million rows).
            Only usable pairs are cached, so the cache is no larger than the identities kept."""
            identity = activitylog.event_identity(row, event)
            if identity is None:
                return None
            pair = (event.operation_name, event.authorization)
            if pair in usable_pairs:
                return identity
            if self.selection.wants(*pair):
                usable_pairs.add(pair)
                return identity
            return None

        activity_seen, ueba_seen = Identities(usable_identity), Identities(ueba_identity)
        activity = itertools.chain.from_iterable(
            read_table(p, ACTIVITY_TABLE, ACTIVITY_COLUMNS, activity_event, report, scanned=scanned_for(p),
                       date_order=self.date_order, met_before=activity_seen.met_before,
                       progress=self.progress)
            for p in self.files[ACTIVITY_TABLE])
        ueba = itertools.chain.from_iterable(
            read_table(p, UEBA_TABLE, UEBA_COLUMNS, ueba_event, report, scanned=scanned_for(p),
                       date_order=self.date_order, met_before=ueba_seen.met_before, progress=self.progress)
            for p in self.files[UEBA_TABLE])
        return SourceData(activity=activity, ueba=ueba, report=report)
