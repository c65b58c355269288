"""Local file backend: one JSON file per alert in one folder, guarded by an exclusive lock file.

The default when no Azure storage is configured (laptops, the embedded sample, tests). ETags are
version counters, checked under the lock, so racing processes on one machine behave as they do
against Table Storage. One file per alert keeps every operation's cost independent of how many
alerts are stored (a run is linear in its alerts); ``alerts.json``, the single file earlier versions
wrote, is split into per-alert files the first time the folder is opened.

Every file is checked for the shape the detector writes: a file that is valid JSON of another shape,
or a ``.lock`` that is not a file, is a :class:`StoreError` naming the file, never a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from ..errors import StateNotFoundError, StoreError
from ..timestamps import Ticks, format_datetime, parse_datetime
from . import ConflictError, EntryStats, PurgeStats, StoredAlert, abandoned_note, purge_verdict

MAX_RUNS_KEPT = 400
LEGACY_ALERTS = "alerts.json"
# What any detector state folder holds once a command has written to it (``.lock`` alone: a command
# that took the lock and wrote nothing).
STATE_MARKERS = ("runs.json", "allowlist.json", "health.json", "alerts", LEGACY_ALERTS, "destination-ids.json",
                 ".lock")


def _alert_file(key: str) -> str:
    # Keys hold characters no file name may (':' on some systems, '/' from logs): a digest instead.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:40] + ".json"


def _shape_error(path: Path, expected: str) -> StoreError:
    return StoreError(f"{path}: not a detector state file (expected {expected}); move it away or fix it")


class FileStore:
    """``create=False`` (commands that only read: ``status``, ``allowlist list``...): a folder that does
    not exist, or holds no detector state, is a :class:`StateNotFoundError` and nothing is created, so a
    mistyped ``--state`` path is reported instead of read as an empty, freshly made state."""

    def __init__(self, directory: Path | str, *, create: bool = True) -> None:
        self.directory = Path(directory)
        self.alerts_dir = self.directory / "alerts"
        self._thread_lock = threading.RLock()
        self._lock_handle: TextIO | None = None
        if not create:
            if not self.directory.is_dir():
                raise StateNotFoundError(f"state folder {self.directory} does not exist (nothing was created)",
                                         location=str(self.directory))
            if not any((self.directory / name).exists() for name in STATE_MARKERS):
                raise StateNotFoundError(f"{self.directory} holds no detector state (none of "
                                         f"{', '.join(STATE_MARKERS)}; nothing was created)",
                                         location=str(self.directory))
        for folder in (self.directory, self.alerts_dir):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create state folder {folder}: {exc.strerror}") from None
        if (self.directory / LEGACY_ALERTS).exists():
            self._split_legacy_alerts()

    def describe(self) -> str:
        return f"local files in {self.directory}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # flock excludes other processes; the thread lock, other threads of this process (flock is per open
        # file, so threads sharing this store's handle would not exclude each other). The handle stays open:
        # opening it per operation cost more than the operation.
        with self._thread_lock:
            if self._lock_handle is None:
                path = self.directory / ".lock"
                try:
                    self._lock_handle = path.open("a")
                except OSError as exc:
                    what = "it is a directory" if path.is_dir() else exc.strerror
                    raise StoreError(f"cannot open the state lock file {path}: {what}") from None
                weakref.finalize(self, self._lock_handle.close)
            fcntl.flock(self._lock_handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_handle, fcntl.LOCK_UN)

    def _read_path(self, path: Path, default: Any) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return default
        except IsADirectoryError:
            raise StoreError(f"cannot read {path}: it is a directory") from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise StoreError(f"cannot read {path}: not JSON ({exc})") from None

    def _read(self, name: str, default: Any) -> Any:
        return self._read_path(self.directory / name, default)

    def _write_path(self, path: Path, data: Any) -> None:
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(tmp, path)  # atomic: a crash never leaves half a file
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror}") from None

    def _write(self, name: str, data: Any) -> None:
        self._write_path(self.directory / name, data)

    # --- shapes ------------------------------------------------------------------------------------
    def _allowlist_doc(self) -> dict[str, Any]:
        path = self.directory / "allowlist.json"
        data = self._read_path(path, {})
        if not isinstance(data, dict) or not isinstance(data.get("entries", []), list) \
                or not isinstance(data.get("stats", {}), dict):
            raise _shape_error(path, 'an object {"entries": [...], "stats": {...}}')
        stats = data.get("stats", {})
        for entry_id, value in stats.items():
            if not isinstance(value, dict) or not isinstance(value.get("hits"), int) \
                    or not _is_time_or_empty(value.get("last_hit")):
                raise _shape_error(path, f'stats.{entry_id} as {{"hits": <int>, "last_hit": <time>}}')
        return data

    def _runs_doc(self) -> dict[str, Any]:
        path = self.directory / "runs.json"
        data = self._read_path(path, {})
        if not isinstance(data, dict) or not isinstance(data.get("runs", []), list) \
                or not isinstance(data.get("watermark") or "", str) \
                or not all(isinstance(r, dict) for r in data.get("runs", [])):
            raise _shape_error(path, 'an object {"watermark": <time>, "runs": [{...}]}')
        return data

    def _alert_doc(self, path: Path) -> dict[str, Any] | None:
        data = self._read_path(path, None)
        if data is None:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("key"), str) \
                or not isinstance(data.get("version"), int) or not isinstance(data.get("record"), dict):
            raise _shape_error(path, 'an object {"key": ..., "version": <int>, "record": {...}}')
        return data

    def _stored(self, path: Path, doc: dict[str, Any]) -> StoredAlert:
        try:
            return StoredAlert.from_record(doc["record"], str(doc["version"]))
        except StoreError as exc:
            raise StoreError(f"{path}: {exc}") from None

    def _split_legacy_alerts(self) -> None:
        """Earlier versions kept every alert in one alerts.json: one file per alert from now on."""
        path = self.directory / LEGACY_ALERTS
        with self._locked():
            alerts = self._read_path(path, None)
            if alerts is None:
                return  # another process split it first
            if not isinstance(alerts, dict) or not all(
                    isinstance(r, dict) and isinstance(r.get("version"), int) for r in alerts.values()):
                raise _shape_error(path, 'an object {"<alert key>": {"version": <int>, ...}}')
            for key, record in alerts.items():
                target = self.alerts_dir / _alert_file(key)
                if not target.exists():
                    version = record.pop("version")
                    self._write_path(target, {"key": key, "version": version, "record": record})
            try:
                path.unlink()
            except OSError as exc:
                raise StoreError(f"cannot remove {path} after splitting it: {exc.strerror}") from None

    # --- allowlist -------------------------------------------------------------------------------
    def list_allowlist(self) -> list[dict[str, Any]]:
        with self._locked():
            entries: list[dict[str, Any]] = self._allowlist_doc().get("entries", [])
            return entries

    def put_allowlist(self, entry: dict[str, Any]) -> None:
        with self._locked():
            data = self._allowlist_doc()
            entries = [e for e in data.get("entries", [])
                       if not (isinstance(e, dict) and e.get("id") == entry.get("id"))]
            entries.append(entry)
            data["entries"] = entries
            self._write("allowlist.json", data)

    def delete_allowlist(self, entry_id: str) -> bool:
        with self._locked():
            data = self._allowlist_doc()
            entries = data.get("entries", [])
            kept = [e for e in entries if not (isinstance(e, dict) and e.get("id") == entry_id)]
            if len(kept) == len(entries):
                return False
            data["entries"] = kept
            data.get("stats", {}).pop(entry_id, None)
            self._write("allowlist.json", data)
            return True

    def allowlist_stats(self) -> dict[str, EntryStats]:
        with self._locked():
            stats = self._allowlist_doc().get("stats", {})
        return {k: EntryStats(v["hits"], parse_datetime(v["last_hit"]) if v.get("last_hit") else None)
                for k, v in stats.items()}

    def record_hits(self, hits: dict[str, int], at: Ticks) -> None:
        if not hits:
            return
        with self._locked():
            data = self._allowlist_doc()
            stats = data.setdefault("stats", {})
            for entry_id, count in hits.items():
                current = stats.get(entry_id, {"hits": 0})
                stats[entry_id] = {"hits": current["hits"] + count, "last_hit": format_datetime(at)}
            self._write("allowlist.json", data)

    # --- alerts ------------------------------------------------------------------------------------
    def get_alert(self, key: str) -> StoredAlert | None:
        path = self.alerts_dir / _alert_file(key)
        with self._locked():
            doc = self._alert_doc(path)
        return self._stored(path, doc) if doc is not None else None

    def create_alert(self, stored: StoredAlert) -> StoredAlert:
        path = self.alerts_dir / _alert_file(stored.key)
        with self._locked():
            if path.exists():
                raise ConflictError(f"alert {stored.key} already exists")
            self._write_path(path, {"key": stored.key, "version": 1, "record": stored.to_record()})
        return stored.with_changes(etag="1")

    def replace_alert(self, stored: StoredAlert) -> StoredAlert:
        path = self.alerts_dir / _alert_file(stored.key)
        with self._locked():
            current = self._alert_doc(path)
            if current is None or str(current["version"]) != stored.etag:
                raise ConflictError(f"alert {stored.key} changed since it was read")
            version = current["version"] + 1
            self._write_path(path, {"key": stored.key, "version": version, "record": stored.to_record()})
        return stored.with_changes(etag=str(version))

    def _alert_docs(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        for path in sorted(self.alerts_dir.glob("*.json")):
            doc = self._alert_doc(path)
            if doc is not None:
                yield path, doc

    def list_pending(self, *, unreadable: list[str] | None = None) -> list[StoredAlert]:
        pending: list[StoredAlert] = []
        with self._locked():
            for path in sorted(self.alerts_dir.glob("*.json")):
                try:
                    doc = self._alert_doc(path)
                    if doc is not None and doc["record"].get("pending"):
                        pending.append(self._stored(path, doc))
                except StoreError as exc:
                    if unreadable is None:
                        raise
                    unreadable.append(str(exc))
        return pending

    def purge(self, *, before: Ticks) -> PurgeStats:
        alerts = kept = 0
        abandoned: list[str] = []
        with self._locked():
            for path, doc in list(self._alert_docs()):
                verdict = purge_verdict(doc["record"], before)
                if verdict in ("purge", "abandoned"):
                    path.unlink()
                    alerts += 1
                    if verdict == "abandoned":
                        abandoned.append(abandoned_note(doc["key"], doc["record"]))
                elif verdict == "undelivered":
                    kept += 1
            data = self._runs_doc()
            runs = data.get("runs", [])
            fresh = [r for r in runs if not _run_ended_before(r, before)]
            if len(fresh) != len(runs):
                data["runs"] = fresh
                self._write("runs.json", data)
        return PurgeStats(alerts=alerts, runs=len(runs) - len(fresh), undelivered_kept=kept,
                          abandoned=tuple(abandoned))

    # --- runs --------------------------------------------------------------------------------------
    def _watermark(self, data: dict[str, Any]) -> Ticks | None:
        value = data.get("watermark")
        try:
            return parse_datetime(value) if value else None
        except ValueError:
            raise _shape_error(self.directory / "runs.json", "watermark as an ISO 8601 time") from None

    def get_watermark(self) -> Ticks | None:
        with self._locked():
            return self._watermark(self._runs_doc())

    def set_watermark(self, end: Ticks) -> None:
        with self._locked():
            data = self._runs_doc()
            current = self._watermark(data)
            if current is None or current < end:  # never moves back
                data["watermark"] = format_datetime(end)
                self._write("runs.json", data)

    def record_run(self, run_id: str, summary: Mapping[str, Any]) -> None:
        with self._locked():
            data = self._runs_doc()
            runs = data.setdefault("runs", [])
            runs.append({"id": run_id, **summary})
            del runs[:-MAX_RUNS_KEPT]
            self._write("runs.json", data)

    def list_runs(self) -> list[dict[str, Any]]:
        with self._locked():
            runs: list[dict[str, Any]] = self._runs_doc().get("runs", [])
            return runs

    # --- destination ids (written once) -------------------------------------------------------------
    def get_destination_aliases(self) -> dict[str, str] | None:
        path = self.directory / "destination-ids.json"
        with self._locked():
            data = self._read_path(path, None)
        if data is None:
            return None
        aliases = data.get("aliases") if isinstance(data, dict) else None
        if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
            raise _shape_error(path, 'an object {"aliases": {"teams-1": "teams-<hash>", ...}}')
        return {str(k): v for k, v in aliases.items()}

    def create_destination_aliases(self, aliases: Mapping[str, str]) -> None:
        path = self.directory / "destination-ids.json"
        with self._locked():
            if path.exists():
                raise ConflictError("the destination ids were recorded meanwhile")
            self._write_path(path, {"aliases": dict(aliases)})

    # --- health (one record, its version as ETag) ---------------------------------------------------
    def _health_doc(self) -> dict[str, Any] | None:
        path = self.directory / "health.json"
        data = self._read_path(path, None)
        if data is not None and not (isinstance(data, dict) and isinstance(data.get("version"), int)
                                     and isinstance(data.get("record"), dict)):
            raise _shape_error(path, 'an object {"version": <int>, "record": {...}}')
        return data

    def get_health(self) -> tuple[dict[str, Any] | None, str | None]:
        with self._locked():
            data = self._health_doc()
        return (data["record"], str(data["version"])) if data else (None, None)

    def put_health(self, record: dict[str, Any], *, etag: str | None) -> str:
        with self._locked():
            current = self._health_doc()
            if (current is None) != (etag is None) or (current is not None and str(current["version"]) != etag):
                raise ConflictError("the health record changed since it was read")
            version = 1 if current is None else int(current["version"]) + 1
            self._write("health.json", {"version": version, "record": record})
        return str(version)

def _is_time_or_empty(value: Any) -> bool:
    if value in (None, ""):
        return True
    try:
        parse_datetime(value)
    except (ValueError, TypeError):
        return False
    return True


def _run_ended_before(run: dict[str, Any], before: Ticks) -> bool:
    end = run.get("window", {}).get("end") if isinstance(run.get("window"), dict) else None
    try:
        return isinstance(end, str) and parse_datetime(end) < before
    except ValueError:
        return False
