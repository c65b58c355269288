"""Destinations from settings: ``teams-1..N`` and ``logicapp-1..N`` in the order the URLs are listed."""

from __future__ import annotations

from ..settings import Settings
from . import Destination
from .http import make_session
from .links import DeliveryOptions
from .logicapp import LogicAppDestination
from .teams import TeamsDestination


def build_destinations(settings: Settings) -> list[Destination]:
    if not settings.teams_urls and not settings.logicapp_urls:
        return []
    session = make_session(max_seconds=settings.http_max_seconds)
    options = DeliveryOptions.from_settings(settings)
    out: list[Destination] = []
    for i, url in enumerate(settings.teams_urls, start=1):
        out.append(TeamsDestination(f"teams-{i}", url.reveal(), session=session,
                                    digest_threshold=settings.digest_threshold,
                                    timeout=settings.http_timeout_seconds, options=options))
    for i, url in enumerate(settings.logicapp_urls, start=1):
        out.append(LogicAppDestination(f"logicapp-{i}", url.reveal(), session=session,
                                       timeout=settings.http_timeout_seconds, options=options))
    return out
