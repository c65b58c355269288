"""Local file backend: JSON files in one folder, guarded by an exclusive lock file.

The default when no Azure storage is configured (laptops, the embedded sample, tests). ETags are
version counters, checked under the lock, so racing processes on one machine behave as they do
against Table Storage.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..timestamps import Ticks, format_datetime, parse_datetime
from . import ConflictError, EntryStats, StoredAlert

MAX_RUNS_KEPT = 400


class FileStore:
    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create state folder {self.directory}: {exc.strerror}") from None

    def describe(self) -> str:
        return f"local files in {self.directory}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.directory / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self, name: str, default: Any) -> Any:
        path = self.directory / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read {path}: {exc}") from None

    def _write(self, name: str, data: Any) -> None:
        path = self.directory / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)  # atomic: a crash never leaves half a file

    # --- allowlist -------------------------------------------------------------------------------
    def list_allowlist(self) -> list[dict[str, Any]]:
        with self._locked():
            entries: list[dict[str, Any]] = self._read("allowlist.json", {}).get("entries", [])
            return entries

    def put_allowlist(self, entry: dict[str, Any]) -> None:
        with self._locked():
            data = self._read("allowlist.json", {})
            entries = [e for e in data.get("entries", []) if e.get("id") != entry.get("id")]
            entries.append(entry)
            data["entries"] = entries
            self._write("allowlist.json", data)

    def delete_allowlist(self, entry_id: str) -> bool:
        with self._locked():
            data = self._read("allowlist.json", {})
            entries = data.get("entries", [])
            kept = [e for e in entries if e.get("id") != entry_id]
            if len(kept) == len(entries):
                return False
            data["entries"] = kept
            data.get("stats", {}).pop(entry_id, None)
            self._write("allowlist.json", data)
            return True

    def allowlist_stats(self) -> dict[str, EntryStats]:
        with self._locked():
            stats = self._read("allowlist.json", {}).get("stats", {})
        return {k: EntryStats(v["hits"], parse_datetime(v["last_hit"]) if v.get("last_hit") else None)
                for k, v in stats.items()}

    def record_hits(self, hits: dict[str, int], at: Ticks) -> None:
        if not hits:
            return
        with self._locked():
            data = self._read("allowlist.json", {})
            stats = data.setdefault("stats", {})
            for entry_id, count in hits.items():
                current = stats.get(entry_id, {"hits": 0})
                stats[entry_id] = {"hits": current["hits"] + count, "last_hit": format_datetime(at)}
            self._write("allowlist.json", data)

    # --- alerts ------------------------------------------------------------------------------------
    def get_alert(self, key: str) -> StoredAlert | None:
        with self._locked():
            record = self._read("alerts.json", {}).get(key)
        return StoredAlert.from_record(record, str(record["version"])) if record else None

    def create_alert(self, stored: StoredAlert) -> StoredAlert:
        with self._locked():
            alerts = self._read("alerts.json", {})
            if stored.key in alerts:
                raise ConflictError(f"alert {stored.key} already exists")
            record = stored.to_record()
            record["version"] = 1
            alerts[stored.key] = record
            self._write("alerts.json", alerts)
        return stored.with_changes(etag="1")

    def replace_alert(self, stored: StoredAlert) -> StoredAlert:
        with self._locked():
            alerts = self._read("alerts.json", {})
            current = alerts.get(stored.key)
            if current is None or str(current["version"]) != stored.etag:
                raise ConflictError(f"alert {stored.key} changed since it was read")
            record = stored.to_record()
            record["version"] = current["version"] + 1
            alerts[stored.key] = record
            self._write("alerts.json", alerts)
        return stored.with_changes(etag=str(record["version"]))

    def list_pending(self) -> list[StoredAlert]:
        with self._locked():
            alerts = self._read("alerts.json", {})
        return [StoredAlert.from_record(r, str(r["version"])) for r in alerts.values() if r.get("pending")]

    # --- runs --------------------------------------------------------------------------------------
    def get_watermark(self) -> Ticks | None:
        with self._locked():
            value = self._read("runs.json", {}).get("watermark")
        return parse_datetime(value) if value else None

    def set_watermark(self, end: Ticks) -> None:
        with self._locked():
            data = self._read("runs.json", {})
            current = data.get("watermark")
            if current is None or parse_datetime(current) < end:  # never moves back
                data["watermark"] = format_datetime(end)
                self._write("runs.json", data)

    def record_run(self, run_id: str, summary: dict[str, Any]) -> None:
        with self._locked():
            data = self._read("runs.json", {})
            runs = data.setdefault("runs", [])
            runs.append({"id": run_id, **summary})
            del runs[:-MAX_RUNS_KEPT]
            self._write("runs.json", data)

    def list_runs(self) -> list[dict[str, Any]]:
        with self._locked():
            runs: list[dict[str, Any]] = self._read("runs.json", {}).get("runs", [])
            return runs

    # --- health (one record, its version as ETag) ---------------------------------------------------
    def get_health(self) -> tuple[dict[str, Any] | None, str | None]:
        with self._locked():
            data = self._read("health.json", None)
        return (data["record"], str(data["version"])) if data else (None, None)

    def put_health(self, record: dict[str, Any], *, etag: str | None) -> str:
        with self._locked():
            current = self._read("health.json", None)
            if (current is None) != (etag is None) or (current is not None and str(current["version"]) != etag):
                raise ConflictError("the health record changed since it was read")
            version = 1 if current is None else int(current["version"]) + 1
            self._write("health.json", {"version": version, "record": record})
        return str(version)
