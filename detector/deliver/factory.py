"""Destinations from settings, each with its stable id (``teams-<hash>``, ``logicapp-<hash>``: see
:func:`detector.settings.destination_id`), and the positional ids earlier versions gave them."""

from __future__ import annotations

from ..redact import safe_url
from ..settings import Settings, destination_id
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
    for url in settings.teams_urls:
        out.append(TeamsDestination(destination_id("teams", url.reveal()), url.reveal(), session=session,
                                    digest_threshold=settings.digest_threshold,
                                    timeout=settings.http_timeout_seconds, options=options))
    for url in settings.logicapp_urls:
        out.append(LogicAppDestination(destination_id("logicapp", url.reveal()), url.reveal(), session=session,
                                       timeout=settings.http_timeout_seconds, options=options))
    return out


def positional_ids(settings: Settings) -> dict[str, str]:
    """``teams-1``, ``logicapp-2``... (the ids versions before stable ids wrote into the run state, by the
    URL's place in its setting) -> the stable id of the URL at that place now. Recorded once in the state
    (see :func:`detector.outbox.destination_aliases`), so a later reordering cannot change what they mean."""
    return {**{f"teams-{i}": destination_id("teams", u.reveal()) for i, u in enumerate(settings.teams_urls, 1)},
            **{f"logicapp-{i}": destination_id("logicapp", u.reveal())
               for i, u in enumerate(settings.logicapp_urls, 1)}}


def configured_ids(settings: Settings) -> dict[str, str]:
    """Each configured destination's id -> what may be shown of its URL (scheme and host), so a person can
    tell which webhook an id in the state or in ``status`` is."""
    return {**{destination_id("teams", u.reveal()): safe_url(u.reveal()) for u in settings.teams_urls},
            **{destination_id("logicapp", u.reveal()): safe_url(u.reveal()) for u in settings.logicapp_urls}}
