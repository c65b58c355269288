"""Every app setting the detector reads, typed and validated in one place.

The Function App, the CLI and the tests all build :class:`Settings` from an environment mapping. A
missing or invalid setting is a :class:`ConfigError` naming it. Webhook URLs are secrets: they are
kept in :class:`Secret` wrappers whose ``repr``/``str`` never show them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ConfigError
from .rule import RULE

# name -> one-line description (documented in local.settings.example.json and the README).
SETTINGS: dict[str, str] = {
    "DETECTOR_WORKSPACE_ID": "Log Analytics workspace GUID (customerId) of the Sentinel workspace",
    "DETECTOR_TABLE_ENDPOINT": "Table Storage endpoint, https://<account>.table.core.windows.net (managed identity)",
    "DETECTOR_TABLE_CONNECTION_STRING": "Table Storage connection string, for local use only (secret)",
    "DETECTOR_STATE_DIR": "folder of the local file state backend when no Table Storage is configured",
    "DETECTOR_TEAMS_WEBHOOK_URLS": "Teams Workflows webhook URLs, one per line or comma-separated (secret)",
    "DETECTOR_LOGICAPP_WEBHOOK_URLS": "Logic App HTTP trigger URLs, one per line or comma-separated (secret)",
    "DETECTOR_PERIOD_HOURS": "query period in hours (default 48, as the rule)",
    "DETECTOR_FREQUENCY_HOURS": "hours between scheduled runs (default 24, as the rule)",
    "DETECTOR_MAX_CATCHUP_DAYS": "how far back a run widens its window after missed runs (default 14)",
    "DETECTOR_SCHEDULE": "NCRONTAB schedule of the daily run (default 0 0 6 * * *, UTC)",
    "DETECTOR_REDELIVER_SCHEDULE": "NCRONTAB schedule of the outbox re-send timer (default 0 */15 * * * *)",
    "DETECTOR_DIGEST_THRESHOLD": "more alerts than this in one delivery make one Teams digest card (default 50)",
    "DETECTOR_HTTP_TIMEOUT_SECONDS": "timeout of one webhook request (default 10)",
    "DETECTOR_HTTP_MAX_SECONDS": "cap on the total time spent retrying one webhook message (default 60)",
    "DETECTOR_QUERY_TIMEOUT_SECONDS": "Log Analytics server timeout per query (default 180, max 600)",
    "DETECTOR_SOURCE_DIR": "replay exports from this folder instead of querying Log Analytics (local runs only)",
    "DETECTOR_SEND_UPDATES": "send one 'new evidence' update when a delivered alert gains UEBA matches (default true)",
    "DETECTOR_STATE_RETENTION_DAYS": "days alert and run records are kept after their Run Command (default 30; more "
                                     "than DETECTOR_MAX_CATCHUP_DAYS plus the query period)",
}

# Settings for laptops and tests only: the Bicep deployment never sets them (a key-based connection
# string or a local folder has no place in Azure). The contract test checks both lists against infra/.
LOCAL_ONLY: frozenset[str] = frozenset({"DETECTOR_TABLE_CONNECTION_STRING", "DETECTOR_STATE_DIR",
                                        "DETECTOR_SOURCE_DIR"})
DEPLOYED: tuple[str, ...] = tuple(name for name in SETTINGS if name not in LOCAL_ONLY)

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class Secret:
    """A string that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"must be a whole number, got {raw[:20]!r}", setting=name) from None
    if not low <= value <= high:
        raise ConfigError(f"must be between {low} and {high}, got {value}", setting=name)
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no"):
        return False
    raise ConfigError(f"must be true or false, got {raw[:20]!r}", setting=name)


def _urls(env: Mapping[str, str], name: str) -> tuple[Secret, ...]:
    raw = env.get(name, "")
    urls = [u.strip() for u in re.split(r"[\n,;]", raw) if u.strip()]
    for i, url in enumerate(urls, start=1):
        # Only the scheme and position are named: the URL itself is a secret.
        if not url.lower().startswith(("https://", "http://")):
            raise ConfigError(f"entry {i} is not an http(s) URL", setting=name)
    return tuple(Secret(u) for u in urls)


@dataclass(frozen=True, slots=True)
class Settings:
    workspace_id: str = ""
    table_endpoint: str = ""
    table_connection_string: Secret | None = None
    state_dir: str = ""
    teams_urls: tuple[Secret, ...] = field(default_factory=tuple)
    logicapp_urls: tuple[Secret, ...] = field(default_factory=tuple)
    period_hours: int = RULE.query_period_hours
    frequency_hours: int = RULE.query_frequency_hours
    max_catchup_days: int = 14
    schedule: str = "0 0 6 * * *"
    redeliver_schedule: str = "0 */15 * * * *"
    digest_threshold: int = 50
    http_timeout_seconds: int = 10
    http_max_seconds: int = 60
    query_timeout_seconds: int = 180
    source_dir: str = ""
    send_updates: bool = True
    state_retention_days: int = 30

    @property
    def claim_lease_minutes(self) -> int:
        """The outbox claim's lease: 10 minutes, or more than twice the longest single send when that is longer.

        A live run renews a claim when half its lease is left, so half a lease must outlast one send.
        """
        longest_send = self.http_max_seconds + self.http_timeout_seconds + 10  # + connect timeout
        return max(10, -(-2 * longest_send // 60) + 1)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        workspace = env.get("DETECTOR_WORKSPACE_ID", "").strip()
        if workspace and not _GUID.match(workspace):
            raise ConfigError("must be the workspace GUID (properties.customerId), not a resource id",
                              setting="DETECTOR_WORKSPACE_ID")
        endpoint = env.get("DETECTOR_TABLE_ENDPOINT", "").strip()
        if endpoint and not endpoint.lower().startswith(("https://", "http://")):
            raise ConfigError("must be an https:// table endpoint", setting="DETECTOR_TABLE_ENDPOINT")
        conn = env.get("DETECTOR_TABLE_CONNECTION_STRING", "").strip()
        period = _int(env, "DETECTOR_PERIOD_HOURS", RULE.query_period_hours, 1, 24 * 14)
        frequency = _int(env, "DETECTOR_FREQUENCY_HOURS", RULE.query_frequency_hours, 1, 24 * 7)
        if frequency > period:
            raise ConfigError("must not exceed DETECTOR_PERIOD_HOURS, or time would go unchecked",
                              setting="DETECTOR_FREQUENCY_HOURS")
        schedule = env.get("DETECTOR_SCHEDULE", "").strip() or "0 0 6 * * *"
        redeliver = env.get("DETECTOR_REDELIVER_SCHEDULE", "").strip() or "0 */15 * * * *"
        for name, value in (("DETECTOR_SCHEDULE", schedule), ("DETECTOR_REDELIVER_SCHEDULE", redeliver)):
            if len(value.split()) != 6:
                raise ConfigError("must be a 6-field NCRONTAB expression, e.g. '0 0 6 * * *'", setting=name)
        max_catchup_days = _int(env, "DETECTOR_MAX_CATCHUP_DAYS", 14, 1, 90)
        retention = _int(env, "DETECTOR_STATE_RETENTION_DAYS", 30, 2, 3650)
        if retention * 24 <= max_catchup_days * 24 + period:
            raise ConfigError(f"must be longer than DETECTOR_MAX_CATCHUP_DAYS ({max_catchup_days}) plus the query "
                              f"period ({period} h), or a purged alert could be seen, and sent, again",
                              setting="DETECTOR_STATE_RETENTION_DAYS")
        return cls(
            workspace_id=workspace,
            table_endpoint=endpoint,
            table_connection_string=Secret(conn) if conn else None,
            state_dir=env.get("DETECTOR_STATE_DIR", "").strip(),
            teams_urls=_urls(env, "DETECTOR_TEAMS_WEBHOOK_URLS"),
            logicapp_urls=_urls(env, "DETECTOR_LOGICAPP_WEBHOOK_URLS"),
            period_hours=period,
            frequency_hours=frequency,
            max_catchup_days=max_catchup_days,
            schedule=schedule,
            redeliver_schedule=redeliver,
            digest_threshold=_int(env, "DETECTOR_DIGEST_THRESHOLD", 50, 1, 1000),
            http_timeout_seconds=_int(env, "DETECTOR_HTTP_TIMEOUT_SECONDS", 10, 1, 120),
            http_max_seconds=_int(env, "DETECTOR_HTTP_MAX_SECONDS", 60, 1, 900),
            query_timeout_seconds=_int(env, "DETECTOR_QUERY_TIMEOUT_SECONDS", 180, 10, 600),
            source_dir=env.get("DETECTOR_SOURCE_DIR", "").strip(),
            send_updates=_bool(env, "DETECTOR_SEND_UPDATES", True),
            state_retention_days=retention,
        )

    def require_workspace(self) -> str:
        if not self.workspace_id:
            raise ConfigError("is required to query Log Analytics", setting="DETECTOR_WORKSPACE_ID")
        return self.workspace_id
