"""Rows already in memory (tests, benchmarks, the soak): the same interface as every source."""

from __future__ import annotations

from collections.abc import Sequence

from ..model import ActivityEvent, UebaEvent
from ..window import Window
from . import ReadReport, SourceData


class MemorySource:
    def __init__(self, activity: Sequence[ActivityEvent], ueba: Sequence[UebaEvent], *, label: str = "memory") -> None:
        self.activity = activity
        self.ueba = ueba
        self.label = label
        self.fetched: list[Window] = []

    def describe(self) -> str:
        return self.label

    def fetch(self, window: Window) -> SourceData:
        self.fetched.append(window)
        report = ReadReport(rows_read={"AzureActivity": len(self.activity), "BehaviorAnalytics": len(self.ueba)})
        return SourceData(activity=iter(self.activity), ueba=iter(self.ueba), report=report)
