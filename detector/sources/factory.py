"""The one place a source is built, for the CLI and the Function alike.

Export files when a folder is given, Log Analytics otherwise. Both read only what the selected rules
can use (``selection``); the Azure SDK is imported only when a workspace is queried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..window import ActivitySelection
from . import Source


def open_source(*, selection: ActivitySelection, directory: Path | str | None = None, workspace_id: str = "",
                logs_client: Any = None, server_timeout: int = 120, prefilter: bool = True,
                date_order: str | None = None) -> Source:
    """Files in ``directory``, or the workspace ``workspace_id`` (through ``logs_client`` or, when none is
    given, a client on the ambient Azure identity: ``az login`` on a laptop, the managed identity in Azure)."""
    if directory is not None:
        from .files import FileSource
        return FileSource(directory, prefilter=prefilter, date_order=date_order, selection=selection)
    from .loganalytics import LogAnalyticsSource, make_client
    if logs_client is None:
        from ..credential import ambient_credential
        logs_client = make_client(ambient_credential())
    return LogAnalyticsSource(logs_client, workspace_id, server_timeout=server_timeout, selection=selection)
