"""Fast scan of JSON Lines exports: find the few lines the rule could use, on every core.

A line is a *candidate* when it holds every needle of its table's :class:`LinePrefilter` (after
lower-casing when asked) or a JSON ``\\u`` escape (which could spell a needle another way); the
file's first line is always a candidate (it plays the header's part). Only candidates are parsed;
every line is counted. Results are exactly those of a full parse, because a line that is not a
candidate cannot pass the rule's row filter.

Large files are cut into byte ranges on line boundaries and scanned by a pool of processes (the
scan is bytes.lower/find/count, so it is CPU-bound); the candidates (about 1% of a real export) come
back in order, as they finish, with their line numbers. Memory holds the candidates, not the file.
"""

from __future__ import annotations

import itertools
import os
import re
import weakref
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 19  # 512 KiB: the four passes over a block stay in cache
PARALLEL_MIN_BYTES = 64 << 20  # below this, one process is faster than starting a pool
_ESCAPE = re.compile(rb"\\u")  # regex: much faster than bytes.find for this needle in backslash-rich JSON


@dataclass(frozen=True, slots=True)
class LinePrefilter:
    needles: tuple[bytes, ...]
    lower: bool

    def wants(self, line: bytes) -> bool:
        hay = line.lower() if self.lower else line
        return b"\\u" in line or all(n in hay for n in self.needles)


@dataclass(frozen=True, slots=True)
class ScanResult:
    lines: int  # lines in the range (a last line without a newline counts)
    candidates: list[tuple[int, bytes]]  # (0-based line index within the range, line without newline)


def _scan_text(block: bytes, pos: int, cut: int, hay: bytes, prefilter: LinePrefilter, base: int,
               out: list[tuple[int, bytes]], first: bool) -> int:
    """Scan whole lines ``block[pos:cut]``; append candidates; return the number of lines."""
    needle = prefilter.needles[0]
    starts: list[int] = [pos] if first else []
    at = hay.find(needle, pos, cut)
    while at >= 0:
        starts.append(block.rfind(b"\n", pos, at) + 1 or pos)
        nl = block.find(b"\n", at, cut)
        at = hay.find(needle, nl + 1, cut)
    # Each line is visited once per pattern: after a hit, the search resumes on the next line, so a line
    # full of needles or escapes costs its length, not its length times its hits (linear scan).
    escaped: list[int] = []
    hit = _ESCAPE.search(block, pos, cut)
    while hit is not None:
        escaped.append(block.rfind(b"\n", pos, hit.start()) + 1 or pos)
        nl = block.find(b"\n", hit.end(), cut)
        hit = _ESCAPE.search(block, nl + 1, cut) if nl >= 0 else None
    if escaped or first:
        starts = sorted(set(starts) | set(escaped))
    counted, line_no = pos, base
    for start in starts:
        line_no += block.count(b"\n", counted, start)
        counted = start
        end = block.find(b"\n", start, cut)
        line = block[start:end]
        if (first and start == pos) or prefilter.wants(line):
            out.append((line_no, line))
    return line_no - base + block.count(b"\n", counted, cut)


def scan_range(path: str, start: int, end: int, prefilter: LinePrefilter, first: bool) -> ScanResult:
    """Scan the lines of ``path`` between byte offsets (both on line starts, or the file's end)."""
    out: list[tuple[int, bytes]] = []
    lines = 0
    carry: list[bytes] = []  # pieces of a line that straddles blocks, joined once at its end (linear)
    with open(path, "rb") as handle:
        handle.seek(start)
        remaining = end - start
        while remaining > 0:
            block = handle.read(min(CHUNK, remaining))
            if not block:
                break
            remaining -= len(block)
            pos = 0
            if carry:  # finish the line that straddles two blocks
                nl = block.find(b"\n")
                if nl < 0:
                    carry.append(block)
                    continue
                line = b"".join(carry) + block[:nl]
                if (first and lines == 0) or prefilter.wants(line):
                    out.append((lines, line))
                lines += 1
                first = False if lines else first
                carry, pos = [], nl + 1
            cut = block.rfind(b"\n") + 1
            if cut > pos:
                hay = block.lower() if prefilter.lower else block
                lines += _scan_text(block, pos, cut, hay, prefilter, lines, out, first and lines == 0)
                first = False
            rest = block[max(cut, pos):]
            carry = [rest] if rest else []
    if carry:
        line = b"".join(carry)
        if (first and lines == 0) or prefilter.wants(line):
            out.append((lines, line))
        lines += 1
    return ScanResult(lines, out)


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


RANGE_BYTES = 96 << 20  # ranges this size keep the pool busy while the main process parses earlier ones


class ScanStream:
    """Scan several files on a process pool; hand each file's results out in order, as they arrive.

    The main process parses the candidates of finished ranges while the pool scans later ones. Line
    numbers are made global per file. Results are pulled on demand, one file at a time or interleaved.
    """

    def __init__(self, jobs: list[tuple[Path, LinePrefilter]]) -> None:
        self._ranges: list[tuple[int, int, int]] = []  # (job, start, end)
        for index, (path, _) in enumerate(jobs):
            size = path.stat().st_size
            parts = 1 if size < PARALLEL_MIN_BYTES else max(workers(), -(-size // RANGE_BYTES))
            self._ranges += [(index, a, b) for a, b in split_ranges(path, parts)]
        tasks = [(str(jobs[i][0]), a, b, jobs[i][1], a == 0) for i, a, b in self._ranges]
        self._buffers: list[deque[ScanResult]] = [deque() for _ in jobs]
        self._lines = [0] * len(jobs)
        self._remaining = [sum(1 for r in self._ranges if r[0] == i) for i in range(len(jobs))]
        self._next = 0
        self._pool: ProcessPoolExecutor | None = None
        if len(tasks) > len(jobs):
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
        self._buffers[index].append(ScanResult(part.lines, [(base + i, line) for i, line in part.candidates]))
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
