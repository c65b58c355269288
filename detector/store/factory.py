"""Pick the state backend from settings: Table Storage when configured, else local files."""

from __future__ import annotations

from pathlib import Path

from ..settings import Settings
from . import StateStore
from .files import FileStore

DEFAULT_STATE_DIR = ".detector-state"


def open_store(settings: Settings, *, state_dir: str | None = None, table_endpoint: str | None = None) -> StateStore:
    endpoint = table_endpoint or settings.table_endpoint
    if state_dir:
        return FileStore(Path(state_dir))
    if endpoint:
        from ..credential import ambient_credential  # imported only when Azure is used
        from .tables import TableStore
        return TableStore.from_endpoint(endpoint, ambient_credential())
    if settings.table_connection_string is not None:
        from .tables import TableStore
        return TableStore.from_connection_string(settings.table_connection_string.reveal())
    return FileStore(Path(settings.state_dir or DEFAULT_STATE_DIR))
