"""Fast scan of JSON Lines exports: find the few lines the rule could use, on every core.

A line is a *candidate* when it holds every needle of its table's :class:`LinePrefilter` (after
lower-casing when asked) or a JSON ``\\u`` escape (which could spell a needle another way); the
file's first line is always a candidate (it plays the header's part). Only candidates are parsed;
every line is counted. Results are exactly those of a full parse, because a line that is not a
candidate cannot pass the rule's row filter.

The search for lines holding the first needle or an escape runs in Hyperscan (a SIMD literal and
regex matcher, ASCII case folding as ``bytes.lower``); each line it finds is then checked by
:meth:`LinePrefilter.wants` in Python, so Hyperscan only narrows the lines to look at and the
decision stays the plain ``in`` test the property tests compare with a full parse.

Large files are cut into byte ranges on line boundaries and scanned by a pool of processes; so are
many files (a folder of hourly exports), one range or more each. The candidates (about 1% of a real
export) come back in order, as they finish, with their line numbers. Memory holds the candidates,
not the file. A ``.gz`` file is one range, decompressed as it is scanned.
"""

from __future__ import annotations

import contextlib
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
    needles: tuple[bytes, ...]
    lower: bool
    # UTF-8 of non-ASCII characters that case-insensitive KQL takes for a needle's letter (U+0131 dotless i
    # for i, U+017F long s for s): ``bytes.lower`` folds ASCII only, so a line holding one is a candidate too
    # (kql.case_twins).
    twins: tuple[bytes, ...] = ()

    def wants(self, line: bytes) -> bool:
        hay = line.lower() if self.lower else line
        return (b"\\u" in line or any(t in line for t in self.twins)
                or all(n in hay for n in self.needles))


@dataclass(frozen=True, slots=True)
class ScanResult:
    lines: int  # lines in the range (a last line without a newline counts)
    candidates: list[tuple[int, bytes]]  # (0-based line index within the range, line without newline)
    size: int = 0  # bytes of the range as stored (compressed for .gz): for progress


_DATABASES: dict[LinePrefilter, hyperscan.Database] = {}


def _database(prefilter: LinePrefilter) -> hyperscan.Database:
    """The first needle (case-folded when the prefilter lower-cases) or a ``\\u``; compiled once per process."""
    db = _DATABASES.get(prefilter)
    if db is None:
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        needle_flags = hyperscan.HS_FLAG_CASELESS if prefilter.lower else 0
        twins = [re.escape(t) for t in prefilter.twins]
        db.compile(expressions=[re.escape(prefilter.needles[0]), rb"\\u", *twins], ids=list(range(2 + len(twins))),
                   flags=[needle_flags, 0, *[0] * len(twins)])
        _DATABASES[prefilter] = db
    return db


class _FirstHit:
    """Hyperscan match callback that stops at the first match and keeps its end offset."""

    __slots__ = ("end",)

    def __init__(self) -> None:
        self.end = -1

    def __call__(self, _id: int, _start: int, end: int, _flags: int, _context: object) -> bool:
        self.end = end
        return True  # stop: the rest of this line is not looked at


def _first_hit(db: hyperscan.Database, view: memoryview, at: int, cut: int) -> int:
    """Absolute end offset of the first match in ``view[at:cut]``, or -1."""
    hit = _FirstHit()
    with contextlib.suppress(hyperscan.ScanTerminated):
        # Hyperscan reads any buffer (its stub says bytes): the slice is a view, not a copy.
        db.scan(cast(bytes, view[at:cut]), match_event_handler=hit)
    return at + hit.end if hit.end >= 0 else -1


_NEWLINE: list[hyperscan.Database] = []


class _LineCounter:
    """Counts newlines with Hyperscan, one callback per line: about 3x ``bytes.count`` on exports' 1-3 KB
    lines. On short lines callbacks cost more than counting bytes, so a range whose lines average under
    ``MIN_AVERAGE_LINE`` bytes switches to ``bytes.count`` for good (the work lost is one piece)."""

    MIN_AVERAGE_LINE = 512
    __slots__ = ("count_bytes", "limit", "lines")

    def __init__(self) -> None:
        self.count_bytes = False
        self.lines = 0
        self.limit = 0
        if not _NEWLINE:
            db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            db.compile(expressions=[rb"\n"], ids=[0], flags=[0])
            _NEWLINE.append(db)

    def __call__(self, _id: int, _start: int, _end: int, _flags: int, _context: object) -> bool:
        self.lines += 1
        return self.lines > self.limit  # too many lines for their bytes: stop, count bytes instead

    def count(self, block: bytearray, view: memoryview, a: int, b: int) -> int:
        if self.count_bytes or b - a < 4096:
            return block.count(b"\n", a, b)
        self.lines, self.limit = 0, (b - a) // self.MIN_AVERAGE_LINE + 1
        try:
            _NEWLINE[0].scan(cast(bytes, view[a:b]), match_event_handler=self)
        except hyperscan.ScanTerminated:
            self.count_bytes = True
            return block.count(b"\n", a, b)
        return self.lines


def _scan_text(block: bytearray, pos: int, cut: int, prefilter: LinePrefilter, base: int,
               out: list[tuple[int, bytes]], first: bool, counter: _LineCounter) -> int:
    """Scan whole lines ``block[pos:cut]``; append candidates; return the number of lines."""
    db = _database(prefilter)
    view = memoryview(block)
    starts: list[int] = [pos] if first else []
    at = pos
    # After a hit the search resumes on the next line, so a line full of needles or escapes costs its
    # length, not its length times its hits (linear scan).
    while at < cut:
        end = _first_hit(db, view, at, cut)
        if end < 0:
            break
        start = block.rfind(b"\n", pos, end) + 1 or pos
        if not starts or starts[-1] != start:
            starts.append(start)
        nl = block.find(b"\n", end, cut)
        at = nl + 1 if nl >= 0 else cut
    counted, line_no = pos, base
    for start in starts:
        line_no += counter.count(block, view, counted, start)
        counted = start
        end = block.find(b"\n", start, cut)
        line = bytes(block[start:end])
        if (first and start == pos) or prefilter.wants(line):
            out.append((line_no, line))
    return line_no - base + counter.count(block, view, counted, cut)


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
        total = 0
        for index, (path, _) in enumerate(jobs):
            size = path.stat().st_size
            total += size
            whole = size < PARALLEL_MIN_BYTES or path.name.lower().endswith(".gz")
            parts = 1 if whole else max(workers(), -(-size // RANGE_BYTES))
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
