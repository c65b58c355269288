"""Azure Table Storage backend (azure-data-tables), proven against Azurite in the tests.

In Azure: the account's table endpoint and ``DefaultAzureCredential`` (the Function's managed
identity; no keys). Locally: a connection string (Azurite's development one in tests). Queries keep
to what Azure and Azurite both support: PartitionKey/RowKey equality and string/bool properties with
``parameters=``. Azure exceptions are translated to :class:`StoreError`/:class:`ConflictError` here;
their messages (which may echo request details) are not passed on, only the status and error code.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from ..credential import failure_line
from ..errors import StoreError
from ..model import SEED_RULE_ID
from ..redact import safe_url
from ..timestamps import Ticks, format_datetime, parse_datetime
from . import ConflictError, EntryStats, PurgeStats, StoredAlert, purge_verdict

# Every alert lives in one partition, and the watermark and health rows are keyed the same: the seed rule's
# id, which is what state written before there were several rules uses. An alert's own rule is in its key.
STATE_KEY = SEED_RULE_ID

_T = TypeVar("_T")
ALLOWLIST_TABLE = "detectorallowlist"
ALERTS_TABLE = "detectoralerts"
RUNS_TABLE = "detectorruns"
TABLE_NAMES = (ALLOWLIST_TABLE, ALERTS_TABLE, RUNS_TABLE)
_CHUNK = 30_000  # ASCII characters per string property (the service allows 64 KiB, i.e. 32K UTF-16 units)
# Service limits checked before writing (Azurite does not enforce them all): a record over them is a
# StoreError for that one alert, never a failed run. Sizes as the service counts them: UTF-16 strings.
MAX_ENTITY_BYTES = 1024 * 1024 - 4096  # margin for system properties and per-property overhead
MAX_PROPERTIES = 252  # 255 including PartitionKey, RowKey and Timestamp
_MAX_TICKS = 10**19 - 1
MAX_KEY_CHARS = 1024  # PartitionKey/RowKey: at most 1 KiB
MAX_SUMMARY_CHARS = 15 * _CHUNK  # a run record stays under the 1 MiB entity limit as UTF-16
_FORBIDDEN_KEY_CHARS = re.compile(r"[/\\#?%\x00-\x1f\x7f-\x9f]")


def encode_key(value: str) -> str:
    """A PartitionKey/RowKey-safe form: forbidden characters as %XX."""
    return _FORBIDDEN_KEY_CHARS.sub(lambda m: "%" + "".join(f"{b:02X}" for b in m.group().encode()), value)


def _describe_error(exc: AzureError) -> str:
    if isinstance(exc, ClientAuthenticationError) and exc.status_code is None:
        return failure_line(exc)  # no answer from the service: the credential's own words, not a status
    if isinstance(exc, HttpResponseError):
        code = getattr(exc, "error_code", None) or "none"
        return f"status {exc.status_code}, code {code}"
    return type(exc).__name__


def _split(name: str, text: str) -> dict[str, Any]:
    """One long text as ASCII-only chunks (JSON escapes keep every character one UTF-16 unit)."""
    chunks = [text[i:i + _CHUNK] for i in range(0, len(text), _CHUNK)] or [""]
    props: dict[str, Any] = {f"{name}_{i}": chunk for i, chunk in enumerate(chunks)}
    props[f"{name}_chunks"] = len(chunks)
    return props


def _join(entity: dict[str, Any], name: str) -> str:
    count = entity.get(f"{name}_chunks")
    return "".join(entity[f"{name}_{i}"] for i in range(int(count))) if count is not None else ""


def _summary_text(summary: Mapping[str, Any]) -> str:
    """A run summary as whole JSON (never cut mid-text, which made it unreadable) within one entity:
    ASCII-escaped, so each character is one UTF-16 unit; lists are shortened only when it must."""
    text = json.dumps(summary, ensure_ascii=True, allow_nan=False)
    if len(text) > MAX_SUMMARY_CHARS:
        short = {k: v[:20] if isinstance(v, list) else v for k, v in summary.items()}
        text = json.dumps({**short, "lists_truncated": True}, ensure_ascii=True, allow_nan=False)
    if len(text) > MAX_SUMMARY_CHARS:
        short = {k: v for k, v in summary.items() if not isinstance(v, list | dict) or k == "window"}
        text = json.dumps({**short, "lists_truncated": True}, ensure_ascii=True, allow_nan=False)
    return text


def _entity_bytes(entity: dict[str, Any]) -> int:
    size = 0
    for key, value in entity.items():
        size += 8 + 2 * len(key)
        size += len(value.encode("utf-16-le")) if isinstance(value, str) else 8
    return size


class TableStore:
    """State in three tables of one storage account."""

    def __init__(self, service: TableServiceClient, *, label: str = "Azure Table Storage",
                 create_tables: bool = True) -> None:
        self._service = service
        self._label = label
        self.allowlist: TableClient = service.get_table_client(ALLOWLIST_TABLE)
        self.alerts: TableClient = service.get_table_client(ALERTS_TABLE)
        self.runs: TableClient = service.get_table_client(RUNS_TABLE)
        if create_tables:
            for name in TABLE_NAMES:
                self._create_table(name)

    def _create_table(self, name: str) -> None:
        self._call(f"create table {name}", lambda: self._service.create_table_if_not_exists(name))

    @classmethod
    def from_connection_string(cls, connection_string: str) -> TableStore:
        try:
            service = TableServiceClient.from_connection_string(connection_string)
        except (ValueError, AzureError):
            raise StoreError("the table storage connection string is not valid") from None
        # Host only: a SAS connection string would otherwise leave its signature in the URL.
        return cls(service, label=f"Table Storage at {safe_url(service.url)}")

    @classmethod
    def from_endpoint(cls, endpoint: str, credential: Any) -> TableStore:
        return cls(TableServiceClient(endpoint=endpoint, credential=credential),
                   label=f"Table Storage at {safe_url(endpoint)}")

    def describe(self) -> str:
        return self._label

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except ConflictError:
            raise
        except AzureError as exc:
            raise StoreError(f"{self._label}: {what} failed ({_describe_error(exc)})") from None

    # --- allowlist -------------------------------------------------------------------------------
    def list_allowlist(self) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            out = []
            for entity in self.allowlist.query_entities("PartitionKey eq @pk", parameters={"pk": "entry"}):
                try:
                    out.append(json.loads(entity["entry"]))
                except (KeyError, ValueError):
                    # Kept visible: an unreadable row becomes an entry that fails validation.
                    out.append({"id": entity.get("RowKey", "?"), "unreadable": True})
            return out
        return self._call("list allowlist", run)

    def put_allowlist(self, entry: dict[str, Any]) -> None:
        entity = {"PartitionKey": "entry", "RowKey": encode_key(str(entry["id"])),
                  "entry": json.dumps(entry, ensure_ascii=False, allow_nan=False)}
        self._call("save allowlist entry", lambda: self.allowlist.upsert_entity(entity, mode=UpdateMode.MERGE))

    def delete_allowlist(self, entry_id: str) -> bool:
        key = encode_key(entry_id)

        def run() -> bool:
            try:
                self.allowlist.get_entity("entry", key)
            except ResourceNotFoundError:
                return False
            self.allowlist.delete_entity("entry", key)
            with contextlib.suppress(ResourceNotFoundError):
                self.allowlist.delete_entity("stats", key)
            return True
        return self._call("delete allowlist entry", run)

    def allowlist_stats(self) -> dict[str, EntryStats]:
        def run() -> dict[str, EntryStats]:
            out = {}
            for e in self.allowlist.query_entities("PartitionKey eq @pk", parameters={"pk": "stats"}):
                last = parse_datetime(e["last_hit"]) if e.get("last_hit") else None
                out[e["entry_id"]] = EntryStats(int(e["hits"]), last)
            return out
        return self._call("read allowlist hits", run)

    def _read_modify_write(self, table: TableClient, partition: str, row: str, *, create: dict[str, Any],
                           change: Callable[[Any], bool], what: str) -> None:
        """Create the entity, or change it under an ETag condition, retrying when another run got there first.

        ``change`` edits the entity in place and returns False when nothing needs writing.
        """
        for _ in range(10):
            try:
                current = table.get_entity(partition, row)
            except ResourceNotFoundError:
                try:
                    table.create_entity({"PartitionKey": partition, "RowKey": row, **create})
                    return
                except ResourceExistsError:
                    continue
            if not change(current):
                return
            try:
                table.update_entity(current, mode=UpdateMode.REPLACE, etag=current.metadata["etag"],
                                    match_condition=MatchConditions.IfNotModified)
                return
            except HttpResponseError as exc:
                if exc.status_code != 412:
                    raise
        raise ConflictError(f"could not {what} after 10 tries")

    def record_hits(self, hits: dict[str, int], at: Ticks) -> None:
        for entry_id, count in hits.items():
            self._call("record allowlist hits", functools.partial(self._add_hits, entry_id, count, at))

    def _add_hits(self, entry_id: str, count: int, at: Ticks) -> None:
        def add(entity: Any) -> bool:
            entity["hits"] = int(entity["hits"]) + count
            entity["last_hit"] = format_datetime(at)
            return True
        self._read_modify_write(self.allowlist, "stats", encode_key(entry_id), change=add,
                                create={"entry_id": entry_id, "hits": count, "last_hit": format_datetime(at)},
                                what=f"record hits of {entry_id}")

    # --- alerts ------------------------------------------------------------------------------------
    @staticmethod
    def _entity(stored: StoredAlert) -> dict[str, Any]:
        record = stored.to_record()
        entity: dict[str, Any] = {"PartitionKey": encode_key(STATE_KEY), "RowKey": encode_key(stored.key)}
        entity.update({k: v for k, v in record.items() if k not in ("alert", "evidence")})
        alert_text = json.dumps(json.loads(record["alert"]), ensure_ascii=True, separators=(",", ":"))
        entity.update(_split("alert", alert_text))
        entity.update(_split("evidence", record["evidence"]))
        size = _entity_bytes(entity)
        if size > MAX_ENTITY_BYTES or len(entity) > MAX_PROPERTIES or \
                any(isinstance(v, str) and len(v) > 32_000 for v in entity.values()):
            raise StoreError(f"alert {stored.key}: record of {size} bytes and {len(entity)} properties is over "
                             "Table Storage's entity limits")
        return entity

    @staticmethod
    def _stored(entity: Any) -> StoredAlert:
        record = dict(entity)
        record["alert"] = _join(record, "alert")
        record["evidence"] = _join(record, "evidence")
        return StoredAlert.from_record(record, entity.metadata["etag"])

    def get_alert(self, key: str) -> StoredAlert | None:
        if len(encode_key(key)) > MAX_KEY_CHARS:
            # No such row can exist (the service refuses longer keys); keys from before the hashed scheme
            # held the raw CorrelationId, which a client can make as long as it likes.
            return None

        def run() -> StoredAlert | None:
            try:
                entity = self.alerts.get_entity(encode_key(STATE_KEY), encode_key(key))
            except ResourceNotFoundError:
                return None
            return self._stored(entity)
        return self._call("read alert", run)

    def create_alert(self, stored: StoredAlert) -> StoredAlert:
        def run() -> StoredAlert:
            try:
                meta = self.alerts.create_entity(self._entity(stored))
            except ResourceExistsError:
                raise ConflictError(f"alert {stored.key} already exists") from None
            return stored.with_changes(etag=meta["etag"])
        return self._call("create alert", run)

    def replace_alert(self, stored: StoredAlert) -> StoredAlert:
        def run() -> StoredAlert:
            try:
                meta = self.alerts.update_entity(self._entity(stored), mode=UpdateMode.REPLACE, etag=stored.etag,
                                                 match_condition=MatchConditions.IfNotModified)
            except (ResourceNotFoundError, ResourceExistsError):
                raise ConflictError(f"alert {stored.key} changed since it was read") from None
            except HttpResponseError as exc:
                if exc.status_code in (409, 412):
                    raise ConflictError(f"alert {stored.key} changed since it was read") from None
                raise
            return stored.with_changes(etag=meta["etag"])
        return self._call("update alert", run)

    def list_pending(self, *, unreadable: list[str] | None = None) -> list[StoredAlert]:
        def run() -> list[StoredAlert]:
            query = "PartitionKey eq @pk and pending eq @pending"
            pending: list[StoredAlert] = []
            for entity in self.alerts.query_entities(query, parameters={"pk": encode_key(STATE_KEY), "pending": True}):
                try:
                    pending.append(self._stored(entity))
                except StoreError as exc:
                    if unreadable is None:
                        raise
                    unreadable.append(f"{self._label}: alert row {entity.get('RowKey', '?')}: {exc}")
            return pending
        return self._call("list pending alerts", run)

    def purge(self, *, before: Ticks) -> PurgeStats:
        def run() -> PurgeStats:
            alerts = kept = 0
            # A full scan of a few properties: the table holds one lifetime of alerts (bounded by this purge).
            for entity in self.alerts.query_entities("PartitionKey eq @pk", parameters={"pk": encode_key(STATE_KEY)},
                                                     select=["PartitionKey", "RowKey", "pending", "alert_end",
                                                             "updated"]):
                verdict = purge_verdict(dict(entity), before)
                if verdict == "purge":
                    try:  # only the version judged: a record changed since the scan is left for the next purge
                        self.alerts.delete_entity(entity["PartitionKey"], entity["RowKey"],
                                                  etag=entity.metadata["etag"],
                                                  match_condition=MatchConditions.IfNotModified)
                    except ResourceNotFoundError:
                        continue
                    except HttpResponseError as exc:
                        if exc.status_code != 412:
                            raise
                        continue
                    alerts += 1
                elif verdict == "undelivered":
                    kept += 1
            # Run rows sort newest first (RowKey = max - window end): older ones have larger keys.
            oldest_kept = f"{_MAX_TICKS - before:019d}-~"
            runs = 0
            for entity in self.runs.query_entities("PartitionKey eq @pk and RowKey gt @rk",
                                                   parameters={"pk": "run", "rk": oldest_kept},
                                                   select=["PartitionKey", "RowKey"]):
                with contextlib.suppress(ResourceNotFoundError):
                    self.runs.delete_entity(entity["PartitionKey"], entity["RowKey"])
                runs += 1
            return PurgeStats(alerts=alerts, runs=runs, undelivered_kept=kept)
        return self._call("purge old records", run)

    # --- runs --------------------------------------------------------------------------------------
    def get_watermark(self) -> Ticks | None:
        def run() -> Ticks | None:
            try:
                entity = self.runs.get_entity("watermark", encode_key(STATE_KEY))
            except ResourceNotFoundError:
                return None
            try:
                return parse_datetime(entity["end"])
            except (KeyError, AttributeError, ValueError):  # a row the detector did not write: never a traceback
                raise StoreError(f"{self._label}: read watermark failed (the stored watermark is not an ISO 8601 "
                                 f"time: {str(entity.get('end'))[:40]!r})") from None
        return self._call("read watermark", run)

    def set_watermark(self, end: Ticks) -> None:
        def forward(entity: Any) -> bool:
            if parse_datetime(entity["end"]) >= end:  # never moves back
                return False
            entity["end"] = format_datetime(end)
            return True
        self._call("move watermark", lambda: self._read_modify_write(
            self.runs, "watermark", encode_key(STATE_KEY), create={"end": format_datetime(end)}, change=forward,
            what="move the watermark"))

    def record_run(self, run_id: str, summary: Mapping[str, Any]) -> None:
        end = summary.get("window", {}).get("end")
        order = _MAX_TICKS - (parse_datetime(end) if end else 0)
        entity = {"PartitionKey": "run", "RowKey": encode_key(f"{order:019d}-{run_id}"), "run_id": run_id,
                  **_split("summary", _summary_text(summary))}
        self._call("record run", lambda: self.runs.upsert_entity(entity, mode=UpdateMode.REPLACE))

    def list_runs(self) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            rows = []
            for e in self.runs.query_entities("PartitionKey eq @pk", parameters={"pk": "run"}):
                try:
                    text = _join(e, "summary") if "summary_chunks" in e else e["summary"]
                    rows.append({"id": e["run_id"], **json.loads(text)})
                except (KeyError, ValueError):
                    rows.append({"id": e.get("run_id", "?"), "unreadable": True})
            rows.reverse()  # stored newest first; return oldest first like the file store
            return rows
        return self._call("list runs", run)

    # --- health (one entity in the runs table, ETag-conditional) ------------------------------------
    def get_health(self) -> tuple[dict[str, Any] | None, str | None]:
        def run() -> tuple[dict[str, Any] | None, str | None]:
            try:
                entity = self.runs.get_entity("health", encode_key(STATE_KEY))
            except ResourceNotFoundError:
                return None, None
            try:
                record = json.loads(entity["record"])
            except (KeyError, ValueError):
                record = None
            if not isinstance(record, dict):
                raise StoreError(f"{self._label}: the health record is unreadable") from None
            return record, str(entity.metadata["etag"])
        return self._call("read health", run)

    def put_health(self, record: dict[str, Any], *, etag: str | None) -> str:
        text = json.dumps(record, ensure_ascii=False)
        if len(text) > _CHUNK:  # never cut JSON in half: refuse, and the caller logs it
            raise StoreError(f"{self._label}: the health record is too large ({len(text)} characters)")
        entity = {"PartitionKey": "health", "RowKey": encode_key(STATE_KEY), "record": text}

        def run() -> str:
            try:
                if etag is None:
                    meta = self.runs.create_entity(entity)
                else:
                    meta = self.runs.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                                   match_condition=MatchConditions.IfNotModified)
            except ResourceExistsError:
                raise ConflictError("the health record appeared since it was read") from None
            except HttpResponseError as exc:
                if exc.status_code in (404, 409, 412):
                    raise ConflictError("the health record changed since it was read") from None
                raise
            return str(meta["etag"])
        return self._call("write health", run)
