"""Fast scan of JSON Lines exports: find the few lines the rule could use, on every core.

A line is a *candidate* when it holds every needle of its table's :class:`LinePrefilter` (after
lower-casing when asked) or a JSON ``\\u`` escape (which could spell a needle another way); the
file's first line is always a candidate (it plays the header's part). Only candidates are parsed;
every line is counted. Results are exactly those of a full parse, because a line that is not a
candidate cannot pass the rule's row filter.

Large files are cut into byte ranges on line boundaries and scanned by a pool of processes (the
scan is bytes.lower/find/count, so it is CPU-bound); the candidates (about 1% of a real export) come
back in order with their line numbers. Memory holds the candidates, not the file.
"""

from __future__ import annotations

import itertools
import os
import re
from concurrent.futures import Executor, ProcessPoolExecutor
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
    escaped = [block.rfind(b"\n", pos, m.start()) + 1 or pos for m in _ESCAPE.finditer(block, pos, cut)]
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
    carry = b""
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
                    carry += block
                    continue
                line = carry + block[:nl]
                if (first and lines == 0) or prefilter.wants(line):
                    out.append((lines, line))
                lines += 1
                first = False if lines else first
                carry, pos = b"", nl + 1
            cut = block.rfind(b"\n") + 1
            if cut > pos:
                hay = block.lower() if prefilter.lower else block
                lines += _scan_text(block, pos, cut, hay, prefilter, lines, out, first and lines == 0)
                first = False
            carry = block[max(cut, pos):]
    if carry:
        if (first and lines == 0) or prefilter.wants(carry):
            out.append((lines, carry))
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


def scan_files(jobs: list[tuple[Path, LinePrefilter]], *, executor: Executor | None = None) -> list[ScanResult]:
    """Scan several files (in parallel when they are large); one merged result per file."""
    ranges: list[tuple[int, int, int]] = []  # (job index, start, end)
    for index, (path, _) in enumerate(jobs):
        parts = workers() if path.stat().st_size >= PARALLEL_MIN_BYTES else 1
        ranges += [(index, a, b) for a, b in split_ranges(path, parts)]
    tasks = [(str(jobs[i][0]), a, b, jobs[i][1], a == 0) for i, a, b in ranges]
    if executor is None and len(tasks) > len(jobs):
        with ProcessPoolExecutor(max_workers=workers()) as pool:
            partials = list(pool.map(_scan_task, tasks))
    elif executor is not None:
        partials = list(executor.map(_scan_task, tasks))
    else:
        partials = [_scan_task(t) for t in tasks]
    merged: list[ScanResult] = [ScanResult(0, []) for _ in jobs]
    for (index, _, _), part in zip(ranges, partials, strict=True):
        done = merged[index]
        done.candidates.extend((done.lines + i, line) for i, line in part.candidates)
        merged[index] = ScanResult(done.lines + part.lines, done.candidates)
    return merged


def _scan_task(task: tuple[str, int, int, LinePrefilter, bool]) -> ScanResult:
    return scan_range(*task)
