"""Delivery of alerts to destinations (Teams Workflows webhooks, Logic App HTTP triggers).

A destination takes a batch of alerts and answers one :class:`Outcome` per alert, in order; the
outbox records them per destination. ``id`` is stable and secret-free (``teams-<hash>``, see
:func:`detector.settings.destination_id`), never the URL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..model import Alert, DeliveryEvent

# What an alert delivery announces: a new alert, or new UEBA matches for an alert already sent. The
# alert-v2 schema also reserves "health" (the detector's own health reports; their shape comes later).
AlertEvent = Literal["alert", "update"]


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    detail: str = ""


# Called with (index in the batch, outcome) as soon as each message is answered, so the outbox can mark
# that send before the next one starts (a process killed mid-batch re-sends at most one message).
OutcomeCallback = Callable[[int, "Outcome"], None]


class Destination(Protocol):
    @property
    def id(self) -> str: ...

    def deliver(self, alerts: Sequence[Alert], *, event: DeliveryEvent = "alert",
                on_outcome: OutcomeCallback | None = None) -> list[Outcome]:
        """Send ``alerts`` (``event="update"``: new evidence for alerts already sent); one outcome each."""
        ...
