"""State backends: the same cases on local files and on Table Storage (a real Azurite)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from detector.alerts import build_alerts
from detector.correlate import correlate
from detector.store import DELIVERED, SUPPRESSED, ConflictError, DestinationState, PurgeStats, StateStore, StoredAlert
from detector.window import Window
from tests.builders import AT, T0, run_command, ueba


def stored_alert(correlation_id: str = "c-1", n_rows: int = 1, start: int = T0) -> StoredAlert:
    logins = [ueba(start - i * 10_000_000) for i in range(n_rows)]
    window = Window(start=start - 48 * 36_000_000_000, end=start + 36_000_000_000)
    [alert] = build_alerts(correlate(run_command(start, correlation_id=correlation_id), logins, window).rows)
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


# --- bounds, lifetime, and state files that are not what the detector wrote ------------------------------

def test_table_store_refuses_a_record_over_the_entity_limits_with_a_store_error(table_store: StateStore) -> None:
    from detector.errors import StoreError
    huge = stored_alert("huge", n_rows=1)
    row = huge.alert.rows[0]._replace(ueba_users_insights={"AccountDisplayName": "x" * 1_200_000})
    oversize = huge.with_changes(alert=dataclasses.replace(huge.alert, rows=(row,)))
    with pytest.raises(StoreError, match="over Table Storage's entity limits"):
        table_store.create_alert(oversize)
    assert table_store.get_alert(oversize.key) is None


def test_fit_for_state_caps_rows_and_counts_the_rest() -> None:
    from detector.outbox import fit_for_state
    from detector.store import MAX_ALERT_CHARS
    big = stored_alert("big", n_rows=1500).alert
    fitted = fit_for_state(big)
    assert fitted.match_count == 1500
    assert 0 < len(fitted.rows) < 1500
    assert fitted.rows == big.rows[:len(fitted.rows)]  # the earliest are kept
    assert len(json.dumps(fitted.to_dict(), ensure_ascii=True, separators=(",", ":"))) <= MAX_ALERT_CHARS
    small = stored_alert("small", n_rows=3).alert
    assert fit_for_state(small) is small


def test_purge_removes_old_delivered_and_suppressed_records_only(store: StateStore) -> None:
    day = 24 * 36_000_000_000
    old_done = stored_alert("old-done").with_changes(destinations={"teams-1": DestinationState(DELIVERED, 1, "", AT)})
    old_suppressed = stored_alert("old-suppressed").with_changes(status=SUPPRESSED, destinations={})
    old_pending = stored_alert("old-pending")
    fresh = stored_alert("fresh", start=T0 + 2 * day).with_changes(status=SUPPRESSED, destinations={})
    for s in (old_done, old_suppressed, old_pending, fresh):
        store.create_alert(s)
    store.record_run("r-old", {"status": "succeeded", "window": {"start": "2026-09-01T06:00:00Z",
                                                                  "end": "2026-09-03T06:00:00Z"}})
    store.record_run("r-new", {"status": "succeeded", "window": {"start": "2026-11-18T06:00:00Z",
                                                                  "end": "2026-11-20T06:00:00Z"}})
    # The first three Run Commands ended around T0; a cutoff a day later makes them old, not "fresh".
    stats = store.purge(before=T0 + day)
    assert (stats.alerts, stats.undelivered_kept) == (2, 1)
    assert store.get_alert(fresh.key) is not None
    assert store.get_alert(old_pending.key) is not None  # undelivered: never purged, reported
    assert store.get_alert(old_done.key) is None
    assert store.get_alert(old_suppressed.key) is None
    assert stats.runs == 1
    assert [r["id"] for r in store.list_runs()] == ["r-new"]
    assert store.purge(before=T0 - day) == PurgeStats(0, 0, 0)


BAD_STATE = [
    ("allowlist.json", "[]"),
    ("allowlist.json", '{"entries": {"id": "a"}}'),
    ("allowlist.json", '{"entries": [], "stats": {"a": 5}}'),
    ("allowlist.json", '{"entries": [], "stats": {"a": {"hits": 1, "last_hit": "tuesday"}}}'),
    ("runs.json", '{"runs": {}}'),
    ("runs.json", '{"watermark": 5}'),
    ("runs.json", '{"watermark": "yesterday"}'),
    ("runs.json", '{"runs": [1, 2]}'),
    ("alerts.json", "[]"),
    ("alerts.json", '{"k": {"no": "version"}}'),
    ("alerts/0000.json", '{"key": "k", "version": "1", "record": {}}'),
    ("alerts/0001.json", '{"key": "k", "version": 1, "record": {"status": "open", "pending": true}}'),
    (".lock", None),  # a directory
    ("runs.json", None),  # a directory
]


@pytest.mark.parametrize(("name", "content"), BAD_STATE)
def test_state_files_of_the_wrong_shape_are_one_line_errors_naming_the_file(tmp_path: Path, name: str,
                                                                             content: str | None) -> None:
    """Never a traceback: the CLI says which file is wrong and exits 4 (a store failure fails the run)."""
    import io

    from detector.cli import EXIT_FAILED, main
    state = tmp_path / "state"
    (state / "alerts").mkdir(parents=True)
    target = state / name
    if content is None:
        target.mkdir()
    else:
        target.write_text(content, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    code = main(["run", "--state", str(state)], out=out, err=err)
    assert code == EXIT_FAILED
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("detector: run failed: ")
    assert str(target) in lines[0]
    assert "Traceback" not in err.getvalue()
