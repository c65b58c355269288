"""Fast scan of JSON Lines exports: find the few lines the rule could use, on every core.

A line is a *candidate* (:meth:`LinePrefilter.wants`) when it holds one of its table's ``any_of``
needles and every ``all_of`` needle (after lower-casing when asked), or a JSON ``\\u`` escape of one
of the needles' characters or a twin (either could spell a needle another way; an escape of anything
else, such as .NET's ``\\u0027`` for ', could not); the file's first line is always a candidate (it
plays the header's part; ``files.py`` reads on to the first JSON object when line 1 is not one).
Only candidates are parsed; every line is counted. Results are exactly those of a full parse,
because a line that is not a candidate cannot pass the rules' row filters.

The search for lines holding an ``any_of`` needle, and separately for escapes and twins, runs in
Hyperscan (a SIMD literal matcher; its caseless matching is ASCII case folding, exactly as
``bytes.lower``); the ``all_of`` needles of the lines it finds are then checked with Python's ``in``,
and the escapes of the lines holding ``\\u`` with one regular expression.
The property tests compare the candidates with :meth:`LinePrefilter.wants` and the rows with a full parse.

Large files are cut into byte ranges on line boundaries and scanned by a pool of processes; so are
many files (a folder of hourly exports), one range or more each. The candidates (about 1% of a real
export) come back in order, as they finish, with their line numbers. Memory holds the candidates,
not the file. A ``.gz`` file is one range, decompressed as it is scanned.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import itertools
import os
import re
import weakref
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import hyperscan

CHUNK = 1 << 20  # 1 MiB blocks: large enough that per-block costs vanish, small enough to stay in cache
PARALLEL_MIN_BYTES = 64 << 20  # below this (all files together), one process is faster than starting a pool
RANGE_BYTES = 96 << 20  # ranges this size keep the pool busy while the main process parses earlier ones


@dataclass(frozen=True, slots=True)
class LinePrefilter:
    any_of: tuple[bytes, ...]  # a usable line holds at least one: each selected rule's needle
    lower: bool
    all_of: tuple[bytes, ...] = ()  # and all of these
    # UTF-8 of non-ASCII characters that case-insensitive KQL takes for a needle's letter (U+0131 dotless i
    # for i, U+017F long s for s): ``bytes.lower`` folds ASCII only, so a line holding one is a candidate too
    # (kql.case_twins).
    twins: tuple[bytes, ...] = ()

    def wants(self, line: bytes) -> bool:
        """Whether the line is a candidate: the definition the scan implements and the tests compare with."""
        hay = self._hay(line)
        return self.escaped(line) or (any(n in hay for n in self.any_of) and all(n in hay for n in self.all_of))

    def escaped(self, line: bytes) -> bool:
        """A twin, or a ``\\u`` escape of one of the needles' characters (either case when the needles are
        compared case-insensitively) or of a twin. JSON's other escapes (``\\"``, ``\\\\``, ``\\/``, ``\\n``...)
        spell no needle character, and an escape of anything else (.NET writes ' as ``\\u0027``) cannot hide a
        needle: such lines need not be read."""
        return any(t in line for t in self.twins) or _spelling_escapes(self).search(line) is not None

    def holds_all_of(self, line: bytes) -> bool:
        return not self.all_of or all(n in self._hay(line) for n in self.all_of)

    def _hay(self, line: bytes) -> bytes:
        return line.lower() if self.lower else line


@dataclass(frozen=True, slots=True)
class ScanResult:
    lines: int  # lines in the range (a last line without a newline counts)
    candidates: list[tuple[int, bytes]]  # (0-based line index within the range, line without newline)
    size: int = 0  # bytes of the range as stored (compressed for .gz): for progress


@functools.cache
def _spelling_escapes(prefilter: LinePrefilter) -> re.Pattern[bytes]:
    """The ``\\u`` escapes that could spell part of a needle (see :meth:`LinePrefilter.escaped`), hex digits in
    either case. One regular expression, searched in C: a line may hold millions of other escapes."""
    chars = {chr(b) for needle in (*prefilter.any_of, *prefilter.all_of) for b in needle}
    if prefilter.lower:
        chars |= {c.upper() for c in chars} | {c.lower() for c in chars}
    chars |= {t.decode("utf-8") for t in prefilter.twins}
    # ``u`` lower-case, as JSON writes it (the scan's Hyperscan search for ``\\u`` is exact); hex digits either case.
    return re.compile(rb"\\u(?i:" + b"|".join(b"%04x" % ord(c) for c in sorted(chars)) + rb")")


_DATABASES: dict[LinePrefilter, tuple[hyperscan.Database, hyperscan.Database]] = {}


def _databases(prefilter: LinePrefilter) -> tuple[hyperscan.Database, hyperscan.Database]:
    """The ``any_of`` needles (case-folded when the prefilter lower-cases); and ``\\u`` or a twin. Compiled once
    per process. Two databases, scanned one after the other, because ``\\`` is frequent in exports (escaped
    quotes of JSON text inside JSON) and a two-byte literal beside the needle slows the needle's search by half
    (``bench.run``'s profile: 150 against 65 + 42 us per MiB)."""
    dbs = _DATABASES.get(prefilter)
    if dbs is None:
        needle = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        needle.compile(expressions=[re.escape(n) for n in prefilter.any_of], ids=list(range(len(prefilter.any_of))),
                       flags=[hyperscan.HS_FLAG_CASELESS if prefilter.lower else 0] * len(prefilter.any_of))
        escapes = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        spellings = [rb"\\u", *(re.escape(t) for t in prefilter.twins)]
        escapes.compile(expressions=spellings, ids=list(range(len(spellings))), flags=[0] * len(spellings))
        dbs = _DATABASES[prefilter] = (needle, escapes)
    return dbs


class _FirstHit:
    """Hyperscan match callback that stops at the first match and keeps its end offset."""

    __slots__ = ("end",)

    def __init__(self) -> None:
        self.end = -1

    def __call__(self, _id: int, _start: int, end: int, _flags: int, _context: object) -> bool:
        self.end = end
        return True  # stop: the rest of this line is not looked at


def _hit_lines(db: hyperscan.Database, block: bytearray, view: memoryview, pos: int, cut: int) -> list[int]:
    """Start offsets of the lines in ``block[pos:cut]`` that hold a match of ``db``, in order.

    After a hit the search resumes on the next line, so a line full of needles or escapes costs its
    length, not its length times its hits (linear scan).
    """
    starts: list[int] = []
    at = pos
    while at < cut:
        hit = _FirstHit()
        with contextlib.suppress(hyperscan.ScanTerminated):
            # Hyperscan reads any buffer (its stub says bytes): the slice is a view, not a copy.
            db.scan(cast(bytes, view[at:cut]), match_event_handler=hit)
        if hit.end < 0:
            break
        end = at + hit.end
        starts.append(block.rfind(b"\n", pos, end) + 1 or pos)
        nl = block.find(b"\n", end, cut)
        at = nl + 1 if nl >= 0 else cut
    return starts


class _LineCounter:
    """Counts newlines with a loop of ``bytes.find`` (memchr, vectorised): on exports' 1-3 KB lines about 4x
    ``bytes.count``, whose byte loop is not. On short lines the loop's per-line cost exceeds counting bytes,
    so once a piece's lines average under ``MIN_AVERAGE_LINE`` bytes the counter switches to ``bytes.count``
    for good (the rest of that piece included: no work is lost)."""

    MIN_AVERAGE_LINE = 512
    __slots__ = ("count_bytes",)

    def __init__(self) -> None:
        self.count_bytes = False

    def count(self, block: bytearray, a: int, b: int) -> int:
        if self.count_bytes or b - a < 4096:
            return block.count(b"\n", a, b)
        limit = (b - a) // self.MIN_AVERAGE_LINE + 1
        find, lines = block.find, 0
        at = find(10, a, b)
        while at >= 0:
            lines += 1
            if lines > limit:
                self.count_bytes = True
                return lines + block.count(b"\n", at + 1, b)
            at = find(10, at + 1, b)
        return lines


def _scan_text(block: bytearray, pos: int, cut: int, prefilter: LinePrefilter, base: int,
               out: list[tuple[int, bytes]], first: bool, counter: _LineCounter) -> int:
    """Scan whole lines ``block[pos:cut]``; append candidates; return the number of lines."""
    view = memoryview(block)
    needle, escapes = _databases(prefilter)
    needled = _hit_lines(needle, block, view, pos, cut)
    # A line found by the needles' database holds an any_of needle (Hyperscan's caseless matching is ASCII
    # folding, as bytes.lower): a candidate when it holds the all_of needles too. One found by the escapes'
    # database holds ``\u`` or a twin: LinePrefilter.escaped, on these few lines only, tells whether it could
    # spell a needle's character (a Hyperscan set of those escapes slowed every byte's scan by half). So each
    # line below is a candidate exactly when LinePrefilter.wants says so.
    escaped = set(_hit_lines(escapes, block, view, pos, cut))
    header = pos if first else -1  # the first line plays the header's part
    starts = sorted({*needled, *escaped, *([header] if first else [])}) if escaped or first else needled
    holds_needle = set(needled) if escaped else None
    counted, line_no = pos, base
    for start in starts:
        line_no += counter.count(block, counted, start)
        counted = start
        end = block.find(b"\n", start, cut)
        line = bytes(block[start:end])
        if start == header or (start in escaped and prefilter.escaped(line)) or (
                (holds_needle is None or start in holds_needle) and prefilter.holds_all_of(line)):
            out.append((line_no, line))
    return line_no - base + counter.count(block, counted, cut)


def open_bytes(path: str | Path) -> io.BufferedIOBase:
    """The file's bytes, decompressed when its name ends in ``.gz``."""
    return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else open(path, "rb")


def scan_range(path: str, start: int, end: int, prefilter: LinePrefilter, first: bool) -> ScanResult:
    """Scan the lines of ``path`` between byte offsets (both on line starts, or the file's end).

    A ``.gz`` file is scanned whole (``start`` must be 0): its offsets are not those of its text.
    """
    out: list[tuple[int, bytes]] = []
    lines = 0
    buffer = bytearray(CHUNK)
    counter = _LineCounter()
    held = 0  # bytes at the front of ``buffer``: the start of a line that straddles blocks
    compressed = path.lower().endswith(".gz")
    remaining = None if compressed else end - start
    with open_bytes(path) as handle:
        if not compressed:
            handle.seek(start)
        while remaining is None or remaining > 0:
            if len(buffer) - held < CHUNK:  # a line longer than a block: grow, never re-copy per block
                buffer.extend(bytes(len(buffer)))
            room = memoryview(buffer)[held:held + (CHUNK if remaining is None else min(CHUNK, remaining))]
            got = handle.readinto(room)
            room.release()
            if not got:
                break
            if remaining is not None:
                remaining -= got
            filled = held + got
            # The held bytes have no newline: look in the new ones only (a huge line costs its length once).
            cut = buffer.rfind(b"\n", held, filled) + 1
            if not cut:
                held = filled
                continue
            lines += _scan_text(buffer, 0, cut, prefilter, lines, out, first and lines == 0, counter)
            first = False
            held = filled - cut
            buffer[:held] = buffer[cut:filled]
    if held:
        line = bytes(buffer[:held])
        if (first and lines == 0) or prefilter.wants(line):
            out.append((lines, line))
        lines += 1
    return ScanResult(lines, out, end - start)


def split_ranges(path: Path, parts: int) -> list[tuple[int, int]]:
    """Byte ranges of roughly equal size, each starting at the start of a line."""
    size = path.stat().st_size
    bounds = [0]
    with path.open("rb") as handle:
        for i in range(1, parts):
            handle.seek(max(size * i // parts, bounds[-1]))
            handle.readline()  # move to the next line start
            bounds.append(min(handle.tell(), size))
    bounds.append(size)
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a] or [(0, 0)]


def workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class ScanStream:
    """Scan several files on a process pool; hand each file's results out in order, as they arrive.

    The main process parses the candidates of finished ranges while the pool scans later ones. Line
    numbers are made global per file. Results are pulled on demand, one file at a time or interleaved.
    """

    def __init__(self, jobs: list[tuple[Path, LinePrefilter]]) -> None:
        self._ranges: list[tuple[int, int, int]] = []  # (job, start, end)
        sizes = [path.stat().st_size for path, _ in jobs]
        total = sum(sizes)
        for index, ((path, _), size) in enumerate(zip(jobs, sizes, strict=True)):
            whole = size < PARALLEL_MIN_BYTES or path.name.lower().endswith(".gz")
            # Ranges of about RANGE_BYTES; a file larger than a worker's share of all the bytes is cut for every
            # worker at least (one big export), while the files of a folder of hourly exports stay whole (the
            # pool is busy with the other files, and every range costs a task).
            share = -(-size // RANGE_BYTES) if size <= total // workers() else max(workers(), -(-size // RANGE_BYTES))
            parts = 1 if whole else share
            self._ranges += [(index, a, b) for a, b in split_ranges(path, parts)]
        tasks = [(str(jobs[i][0]), a, b, jobs[i][1], a == 0) for i, a, b in self._ranges]
        self._buffers: list[deque[ScanResult]] = [deque() for _ in jobs]
        self._lines = [0] * len(jobs)
        self._remaining = [0] * len(jobs)  # ranges per file, counted in one pass (thousands of files)
        for job, _, _ in self._ranges:
            self._remaining[job] += 1
        self._next = 0
        self._pool: ProcessPoolExecutor | None = None
        if len(tasks) > 1 and total >= PARALLEL_MIN_BYTES and workers() > 1:
            self._pool = ProcessPoolExecutor(max_workers=workers())
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
            self._results: Iterator[ScanResult] = self._pool.map(_scan_task, tasks)
        else:
            self._results = map(_scan_task, tasks)

    def _pull(self) -> None:
        index = self._ranges[self._next][0]
        self._next += 1
        part = next(self._results)
        base = self._lines[index]
        self._lines[index] += part.lines
        self._remaining[index] -= 1
        self._buffers[index].append(ScanResult(part.lines, [(base + i, line) for i, line in part.candidates],
                                               part.size))
        if self._next == len(self._ranges) and self._pool is not None:
            self._pool.shutdown(wait=False)

    def parts(self, job: int) -> Iterator[ScanResult]:
        """The scanned ranges of file ``job``, in file order, with file-wide line numbers."""
        while True:
            if self._buffers[job]:
                yield self._buffers[job].popleft()
            elif self._remaining[job] == 0:
                return
            else:
                self._pull()


def _scan_task(task: tuple[str, int, int, LinePrefilter, bool]) -> ScanResult:
    return scan_range(*task)
