from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from detector.store import StateStore
from detector.store.files import FileStore
from tests.services import azurite_tables

# In CI the property tests draw the same examples on every run (a red build must be reproducible);
# locally they explore new ones each time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    with azurite_tables() as connection_string:
        yield connection_string


@pytest.fixture
def table_store(azurite: str) -> Iterator[StateStore]:
    from azure.data.tables import TableServiceClient

    from detector.store.tables import TABLE_NAMES, TableStore
    store = TableStore.from_connection_string(azurite)
    yield store
    service = TableServiceClient.from_connection_string(azurite)
    for name in TABLE_NAMES:
        service.delete_table(name)


@pytest.fixture(params=["file", "table"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    """The same cases on both backends: local files and Table Storage (Azurite)."""
    if request.param == "file":
        return FileStore(tmp_path / "state")
    result: StateStore = request.getfixturevalue("table_store")
    return result
