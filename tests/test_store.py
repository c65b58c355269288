"""State backends: the same cases on local files and on Table Storage (a real Azurite)."""

from __future__ import annotations

import pytest

from detector.correlate import Window, build_alerts, correlate
from detector.store import DELIVERED, ConflictError, DestinationState, StateStore, StoredAlert
from tests.builders import AT, T0, run_command, ueba


def stored_alert(correlation_id: str = "c-1", n_rows: int = 1) -> StoredAlert:
    logins = [ueba(T0 - i * 10_000_000) for i in range(n_rows)]
    [alert] = build_alerts(correlate(run_command(T0, correlation_id=correlation_id), logins, Window.ending_at(AT)).rows)
    return StoredAlert(alert=alert, destinations={"teams-1": DestinationState()}, first_seen=AT, updated=AT)


def test_alert_create_get_replace_with_etags(store: StateStore) -> None:
    created = store.create_alert(stored_alert())
    assert created.etag
    with pytest.raises(ConflictError):
        store.create_alert(stored_alert())
    fetched = store.get_alert(created.key)
    assert fetched is not None
    assert fetched.alert == created.alert
    assert fetched.pending
    delivered = fetched.with_changes(destinations={"teams-1": DestinationState(DELIVERED, 1, "", AT)})
    updated = store.replace_alert(delivered)
    assert updated.etag != fetched.etag
    # The stale copy can no longer be written: optimistic concurrency.
    with pytest.raises(ConflictError):
        store.replace_alert(fetched)
    again = store.get_alert(created.key)
    assert again is not None
    assert not again.pending
    assert store.list_pending() == []


def test_list_pending_only(store: StateStore) -> None:
    store.create_alert(stored_alert("a"))
    b = store.create_alert(stored_alert("b"))
    store.replace_alert(b.with_changes(destinations={"teams-1": DestinationState(DELIVERED, 1, "", AT)}))
    assert [s.alert.correlation_id for s in store.list_pending()] == ["a"]


def test_large_alert_is_stored_whole(store: StateStore) -> None:
    big = stored_alert("big", n_rows=300)  # well over one 64 KiB table property
    store.create_alert(big)
    fetched = store.get_alert(big.key)
    assert fetched is not None
    assert len(fetched.alert.rows) == 300


def test_allowlist_entries_and_hits(store: StateStore) -> None:
    store.put_allowlist({"id": "a", "reason": "r", "conditions": []})
    store.put_allowlist({"id": "a", "reason": "replaced", "conditions": []})
    store.put_allowlist({"id": "b", "reason": "r", "conditions": []})
    assert sorted((e["id"], e["reason"]) for e in store.list_allowlist()) == [("a", "replaced"), ("b", "r")]
    store.record_hits({"a": 2}, AT)
    store.record_hits({"a": 1, "b": 1}, AT + 5)
    stats = store.allowlist_stats()
    assert (stats["a"].hits, stats["a"].last_hit, stats["b"].hits) == (3, AT + 5, 1)
    assert store.delete_allowlist("a") is True
    assert store.delete_allowlist("a") is False
    assert [e["id"] for e in store.list_allowlist()] == ["b"]


def test_watermark_only_moves_forward(store: StateStore) -> None:
    assert store.get_watermark() is None
    store.set_watermark(AT)
    store.set_watermark(AT - 100)
    assert store.get_watermark() == AT
    store.set_watermark(AT + 100)
    assert store.get_watermark() == AT + 100


def test_runs_are_recorded(store: StateStore) -> None:
    store.record_run("r1", {"status": "succeeded", "window": {"start": "2026-11-18T06:00:00Z", "end": "2026-11-20T06:00:00Z"}})
    store.record_run("r2", {"status": "failed", "window": {"start": "2026-11-19T06:00:00Z", "end": "2026-11-21T06:00:00Z"}})
    assert [(r["id"], r["status"]) for r in store.list_runs()] == [("r1", "succeeded"), ("r2", "failed")]


def test_table_errors_are_translated_without_secrets() -> None:
    from detector.errors import StoreError
    from detector.store.tables import TableStore
    secret = "AccountKey=c2VjcmV0LWtleS12YWx1ZQ=="
    conn = f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;{secret};TableEndpoint=http://127.0.0.1:9/x;"
    with pytest.raises(StoreError) as info:
        TableStore.from_connection_string(conn)
    assert "c2VjcmV0" not in str(info.value)
    with pytest.raises(StoreError, match="not valid"):
        TableStore.from_connection_string("garbage")


def test_sas_connection_string_never_shows_in_errors() -> None:
    from detector.errors import StoreError
    from detector.store.tables import TableStore
    conn = ("TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
            "SharedAccessSignature=sv=2020-08-04&ss=t&srt=sco&sp=rwdlacu&se=2099-01-01&sig=S3CRETsasSIG")
    with pytest.raises(StoreError) as info:
        TableStore.from_connection_string(conn)  # nothing listens on port 9: creating the tables fails
    assert "127.0.0.1:9" in str(info.value)  # the error names where...
    assert "S3CRET" not in str(info.value)  # ...but not the signature
