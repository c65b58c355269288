"""Sources of AzureActivity and BehaviorAnalytics rows: export files and Log Analytics.

Every source answers ``fetch(window)`` with a :class:`SourceData`: two streams of records (read
lazily, so a large export is never held whole) and a :class:`ReadReport` that fills in as they are
read. A source that fails raises; it never returns empty streams in place of an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ..model import ActivityEvent, UebaEvent
from ..window import Window

MAX_REPORTED_MALFORMED = 200
"""Malformed rows kept with their location; beyond this they are only counted."""


@dataclass(frozen=True, slots=True)
class MalformedRow:
    """A row that could not be read: which file, where in it, and why."""

    path: str
    location: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}, {self.location}: {self.reason}"


@dataclass(slots=True)
class ReadReport:
    """Rows read per table and the malformed rows met, as the streams are consumed."""

    rows_read: dict[str, int] = field(default_factory=dict)
    malformed_count: int = 0
    duplicates_skipped: int = 0  # the same event (identity) met again, in another file or the same one
    malformed: list[MalformedRow] = field(default_factory=list)

    def count_row(self, table: str) -> None:
        self.rows_read[table] = self.rows_read.get(table, 0) + 1

    def add_malformed(self, row: MalformedRow) -> None:
        self.malformed_count += 1
        if len(self.malformed) < MAX_REPORTED_MALFORMED:
            self.malformed.append(row)


class Progress(Protocol):
    """Told of the bytes (as stored) and rows a source has read, as its streams are consumed."""

    def advance(self, *, nbytes: int, rows: int) -> None: ...


@dataclass(slots=True)
class SourceData:
    """What a source hands to the correlation."""

    activity: Iterable[ActivityEvent]
    ueba: Iterable[UebaEvent]
    report: ReadReport


class Source(Protocol):
    """Anything that yields the two tables' rows for a window."""

    def fetch(self, window: Window) -> SourceData: ...

    def describe(self) -> str:
        """A short, secret-free description for summaries and logs."""
        ...
