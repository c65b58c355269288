"""Destinations from settings (filled in with the Teams and Logic App senders)."""

from __future__ import annotations

from ..settings import Settings
from . import Destination


def build_destinations(settings: Settings) -> list[Destination]:
    return []
