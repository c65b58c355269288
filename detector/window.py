"""What a run reads: the query period (:class:`Window`) and how a run plans it from the last one.

The first stage of the flow (window -> source -> correlate -> ...): sources, the correlation and the
pipeline all import it, and it imports nothing of theirs, so no source depends on a rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .timestamps import TICKS_PER_DAY, TICKS_PER_HOUR, Ticks

DEFAULT_PERIOD_HOURS = 48
"""The seed rule's queryPeriod (2 days), shared by every rule here (tests/test_rules.py checks each rule's)."""
DEFAULT_FREQUENCY_HOURS = 24
"""The seed rule's queryFrequency (1 day)."""

# The BehaviorAnalytics half every rule shares: ``where EventSource == "Azure AD" and
# ActivityInsights.ActionUncommonlyPerformedByUser == "True"`` (the pushdown query sends the same).
UEBA_EVENT_SOURCE = "Azure AD"
UEBA_INSIGHT = "ActionUncommonlyPerformedByUser"
UEBA_INSIGHT_VALUE = "True"


@dataclass(frozen=True, slots=True)
class Window:
    """The query period: ``start <= TimeGenerated < end`` for both tables."""

    start: Ticks
    end: Ticks

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError("window end must be after its start")

    @classmethod
    def ending_at(cls, at: Ticks, *, hours: int = DEFAULT_PERIOD_HOURS) -> Window:
        return cls(start=at - hours * TICKS_PER_HOUR, end=at)

    def contains(self, time: Ticks) -> bool:
        return self.start <= time < self.end


class Cadence(Protocol):
    """How runs follow each other (the pipeline's RunPolicy)."""

    @property
    def period_hours(self) -> int: ...

    @property
    def frequency_hours(self) -> int: ...

    @property
    def max_catchup_days(self) -> int: ...


def plan_window(at: Ticks, watermark: Ticks | None, cadence: Cadence) -> Window:
    """The rule's period ending at ``at``, widened back after missed runs.

    Normally the previous successful run ended one frequency ago and the period alone is the window.
    When runs were missed, the start moves back so the new window overlaps the last successful one as
    much as a normal run would (``watermark - (period - frequency)``), never beyond
    ``max_catchup_days``. A failed run does not move the watermark, so its gap is covered next time.
    """
    start = at - cadence.period_hours * TICKS_PER_HOUR
    if watermark is not None and watermark < at:
        caught_up = watermark - (cadence.period_hours - cadence.frequency_hours) * TICKS_PER_HOUR
        start = min(start, caught_up)
    start = max(start, at - cadence.max_catchup_days * TICKS_PER_DAY)
    return Window(start=start, end=at)


@dataclass(frozen=True, slots=True)
class ActivitySelection:
    """Which AzureActivity rows the selected rules can use: what sources may narrow their reading to.

    ``operations`` (``OperationNameValue``, compared case-insensitively) and ``authorization_terms``
    (``Authorization has_any``) are the union over the rules; the pushdown query filters on them and
    the correlation then applies each rule's exact filter. ``needles`` is lower-case text of which every
    such line holds at least one (the file prefilter): each rule's needle.
    """

    operations: tuple[str, ...]
    authorization_terms: tuple[str, ...]
    needles: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.operations or not self.authorization_terms or not self.needles:
            raise ValueError("an activity selection needs at least one operation, Authorization term and needle")

    def union(self, other: ActivitySelection) -> ActivitySelection:
        return ActivitySelection(
            operations=tuple(dict.fromkeys((*self.operations, *other.operations))),
            authorization_terms=tuple(dict.fromkeys((*self.authorization_terms, *other.authorization_terms))),
            needles=tuple(dict.fromkeys((*self.needles, *other.needles))))


SEED_SELECTION = ActivitySelection(
    operations=("MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION",),
    authorization_terms=("virtualMachines",),
    # OperationNameValue =~ ".../RUNCOMMAND/ACTION": the letters of "runcommand" in any case.
    needles=(b"runcommand",),
)
"""The seed rule's row filter (detector/rule.py builds the seed from it): what a source reads by default."""
