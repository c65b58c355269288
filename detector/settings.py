"""Every app setting the detector reads, typed and validated in one place.

The Function App, the CLI and the tests all build :class:`Settings` from an environment mapping. A
missing or invalid setting is a :class:`ConfigError` naming it. Webhook URLs are secrets: they are
kept in :class:`Secret` wrappers whose ``repr``/``str`` never show them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests

from . import rules as registry
from .errors import ConfigError, UsageError
from .rule import RULE, Rule
from .timestamps import parse_whole_number
from .window import DEFAULT_FREQUENCY_HOURS, DEFAULT_PERIOD_HOURS

# name -> one-line description (documented in local.settings.example.json and the README).
SETTINGS: dict[str, str] = {
    "DETECTOR_WORKSPACE_ID": "Log Analytics workspace GUID (customerId) of the Sentinel workspace",
    "DETECTOR_TABLE_ENDPOINT": "Table Storage endpoint, https://<account>.table.core.windows.net (managed identity)",
    "DETECTOR_TABLE_CONNECTION_STRING": "Table Storage connection string, for local use only (secret)",
    "DETECTOR_STATE_DIR": "folder of the local file state backend when no Table Storage is configured",
    "DETECTOR_TEAMS_WEBHOOK_URLS": "Teams Workflows webhook URLs, one per line or comma-separated (secret)",
    "DETECTOR_LOGICAPP_WEBHOOK_URLS": "Logic App HTTP trigger URLs, one per line or comma-separated (secret)",
    "DETECTOR_RULES": "rules to run: comma-separated rule ids, 'seed' or 'all' (default: the seed rule alone; "
                      "see README, Extended rules)",
    "DETECTOR_PERIOD_HOURS": "query period in hours (default 48, as the rule)",
    "DETECTOR_FREQUENCY_HOURS": "hours between scheduled runs (default 24, as the rule)",
    "DETECTOR_MAX_CATCHUP_DAYS": "how far back a run widens its window after missed runs (default 14)",
    "DETECTOR_SCHEDULE": "NCRONTAB schedule of the daily run (default 0 0 6 * * *, UTC)",
    "DETECTOR_REDELIVER_SCHEDULE": "NCRONTAB schedule of the outbox re-send timer (default 0 */15 * * * *)",
    "DETECTOR_DIGEST_THRESHOLD": "more alerts than this in one delivery make one Teams digest card (default 50)",
    "DETECTOR_HTTP_TIMEOUT_SECONDS": "timeout of one webhook request (default 10)",
    "DETECTOR_HTTP_MAX_SECONDS": "cap on the total time spent retrying one webhook message (default 60)",
    "DETECTOR_QUERY_TIMEOUT_SECONDS": "Log Analytics server timeout per query (default 120, max 600)",
    "DETECTOR_SOURCE_DIR": "replay exports from this folder instead of querying Log Analytics (local runs only)",
    "DETECTOR_TENANT_ID": "Entra tenant GUID: put in portal links and the Logic App payload (optional)",
    "DETECTOR_WORKSPACE_RESOURCE_ID": "the Sentinel workspace's ARM resource id, for the card's Investigate link "
                                      "(optional)",
    "DETECTOR_ONCALL_MENTION_ID": "UPN or Entra object id of the on-call person mentioned on every card (optional)",
    "DETECTOR_ONCALL_MENTION_NAME": "display name shown for that mention (default: the id)",
    "DETECTOR_EXCEPTION_REQUEST_URL": "https URL template of the card's Request exception button; {entry}, "
                                      "{alert_id}, {caller}, {vm} are filled in, URL-encoded (optional)",
    "DETECTOR_PRIORITY_RESOURCE_GROUPS": "comma-separated resource groups whose VMs raise an alert's triage priority",
    "DETECTOR_HEALTH_GRACE_HOURS": "hours past the frequency before a missing run is reported (default 2)",
    "DETECTOR_SEND_UPDATES": "send one 'new evidence' update when a delivered alert gains UEBA matches (default true)",
    "DETECTOR_STATE_RETENTION_DAYS": "days alert and run records are kept after their Run Command (default 30; more "
                                     "than DETECTOR_MAX_CATCHUP_DAYS plus the query period)",
}

# Settings for laptops and tests only: the Bicep deployment never sets them (a key-based connection
# string or a local folder has no place in Azure). The contract test checks both lists against infra/.
LOCAL_ONLY: frozenset[str] = frozenset({"DETECTOR_TABLE_CONNECTION_STRING", "DETECTOR_STATE_DIR",
                                        "DETECTOR_SOURCE_DIR"})
DEPLOYED: tuple[str, ...] = tuple(name for name in SETTINGS if name not in LOCAL_ONLY)

_WORKSPACE_RESOURCE = re.compile(r"^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[-\w.()]+/providers/"
                                 r"Microsoft\.OperationalInsights/workspaces/[-\w]+$", re.IGNORECASE)
_TEMPLATE_FIELDS = frozenset({"entry", "alert_id", "caller", "vm"})
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
        value = parse_whole_number(raw)
    except ValueError:
        raise ConfigError(f"must be a whole number, got {raw[:20]!r}", setting=name) from None
    if not low <= value <= high:
        raise ConfigError(f"must be between {low} and {high}, got {value}", setting=name)
    return value


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_host.rstrip(".").split(".")
    return len(ascii_host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def webhook_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook, or None. The reason never quotes the URL (it holds a ``sig``).

    HTTPS only: the URL's ``sig`` is a bearer secret and would travel in clear over HTTP. The one
    exception is a loopback address (local tests and tools), where nothing leaves the machine.
    """
    if any(c.isspace() or not c.isprintable() for c in url):
        return "contains spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when not a number or outside 0..65535
    except ValueError:
        return "has an invalid port (must be 1-65535) or host"
    host = parts.hostname or ""
    if parts.scheme.lower() not in ("https", "http"):
        return "is not an https:// URL"
    if not host or not _valid_host(host):
        return "has no valid host name"
    if port == 0:
        return "has an invalid port (must be 1-65535)"
    if parts.username is not None or parts.password is not None:
        return "carries a user name or password"
    if parts.scheme.lower() == "http" and not _is_loopback(host):
        return "is http://, which would send its sig in clear; use https://"
    try:
        # The sender's own parser (IDNA 2008): a host that Python's IDNA 2003 codec takes but requests
        # refuses (a symbol, a full-width letter) would fail at every send instead of at start-up.
        requests.models.PreparedRequest().prepare_url(url, None)
    except requests.exceptions.RequestException:
        return "has a host name that cannot be sent to (not a valid IDNA name)"
    return None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no"):
        return False
    raise ConfigError(f"must be true or false, got {raw[:20]!r}", setting=name)


# Query parameters that authorise a call rather than name its target: the SAS signature of a Logic App or
# Teams Workflows trigger URL (``sig``) and its companions (``sp`` permissions, ``sv`` version, ``se``/``st``
# expiry and start), the ``api-version``, and an Azure Functions key (``code``). Regenerating a workflow's
# access keys changes ``sig`` only.
CREDENTIAL_PARAMETERS = frozenset({"sig", "sp", "sv", "se", "st", "api-version", "code"})


def webhook_identity(url: str) -> str:
    """What makes two webhook URLs the same destination: scheme, host (case-insensitive), port (the default
    one spelled or not) and path, and any query parameter but ``CREDENTIAL_PARAMETERS``. So a URL whose
    signature was rotated (same workflow, new ``sig``) is the same destination, and two workflows are two.
    The result holds no credential parameter, but still the path (a workflow id): hash it before showing it.

    The URL is first spelled the way the sender puts it on the wire (requests' own preparation: an IDN host as
    its A-label, a percent-escaped unreserved character as the character), so two spellings that reach one
    workflow are one destination. The path's case and its reserved escapes (``%2F``) stay: a server may tell
    them apart.
    """
    request = requests.models.PreparedRequest()
    request.prepare_url(url, None)
    parts = urlsplit(request.url or url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    query = sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                   if k.lower() not in CREDENTIAL_PARAMETERS)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}{parts.path or '/'}?{urlencode(query)}"


def destination_id(kind: str, url: str) -> str:
    """A destination's id in the run state: ``<kind>-`` and 12 hex digits of the SHA-256 of its
    :func:`webhook_identity`. Independent of the order of the settings, unchanged when the signature is
    rotated, and it reveals nothing of the URL (48 bits of a hash of a path that holds a random workflow id)."""
    return f"{kind}-{hashlib.sha256(webhook_identity(url).encode('utf-8')).hexdigest()[:12]}"


def _urls(env: Mapping[str, str], name: str) -> tuple[Secret, ...]:
    raw = env.get(name, "")
    urls = [u.strip() for u in re.split(r"[\n,;]", raw) if u.strip()]
    seen: dict[str, int] = {}
    for i, url in enumerate(urls, start=1):
        # Only the position and the reason are named: the URL itself is a secret.
        problem = webhook_url_problem(url)
        if problem is not None:
            raise ConfigError(f"entry {i} {problem}", setting=name)
        identity = webhook_identity(url)
        if identity in seen:
            # One workflow listed twice (e.g. its old and its rotated URL) would get every alert twice.
            raise ConfigError(f"entries {seen[identity]} and {i} are the same destination (they differ only in "
                              f"their signature or version parameters); keep the current one", setting=name)
        seen[identity] = i
    return tuple(Secret(u) for u in urls)


def _template(env: Mapping[str, str], name: str) -> str:
    """An https URL template whose only ``{fields}`` are the documented ones."""
    raw = env.get(name, "").strip()
    if not raw:
        return ""
    if not raw.lower().startswith("https://"):
        raise ConfigError("must be an https:// URL template", setting=name)
    if "{" in urlsplit(raw).netloc:
        # A value from the logs must never choose the host the button opens.
        raise ConfigError("placeholders may appear in the path or query only, not in the host", setting=name)
    fields = set(re.findall(r"{([^{}]*)}", raw))
    unknown = fields - _TEMPLATE_FIELDS
    if unknown:
        raise ConfigError(f"unknown placeholder(s) {sorted(unknown)}; use {sorted(_TEMPLATE_FIELDS)}", setting=name)
    return raw


@dataclass(frozen=True, slots=True)
class Settings:
    workspace_id: str = ""
    table_endpoint: str = ""
    table_connection_string: Secret | None = None
    state_dir: str = ""
    teams_urls: tuple[Secret, ...] = field(default_factory=tuple)
    logicapp_urls: tuple[Secret, ...] = field(default_factory=tuple)
    rules: tuple[Rule, ...] = (RULE,)
    period_hours: int = DEFAULT_PERIOD_HOURS
    frequency_hours: int = DEFAULT_FREQUENCY_HOURS
    max_catchup_days: int = 14
    digest_threshold: int = 50
    http_timeout_seconds: int = 10
    http_max_seconds: int = 60
    query_timeout_seconds: int = 120
    source_dir: str = ""
    tenant_id: str = ""
    workspace_resource_id: str = ""
    oncall_mention_id: str = ""
    oncall_mention_name: str = ""
    exception_request_url: str = ""
    priority_resource_groups: tuple[str, ...] = field(default_factory=tuple)
    health_grace_hours: int = 2
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
        endpoint_problem = webhook_url_problem(endpoint) if endpoint else None
        if endpoint_problem is not None:  # the same rules: the managed identity's token must not travel in clear
            raise ConfigError(f"must be an https:// table endpoint with a valid host and port; it {endpoint_problem}",
                              setting="DETECTOR_TABLE_ENDPOINT")
        conn = env.get("DETECTOR_TABLE_CONNECTION_STRING", "").strip()
        try:
            selected = registry.select([env.get("DETECTOR_RULES", "")])
        except UsageError as exc:
            raise ConfigError(str(exc), setting="DETECTOR_RULES") from None
        period = _int(env, "DETECTOR_PERIOD_HOURS", DEFAULT_PERIOD_HOURS, 1, 24 * 14)
        frequency = _int(env, "DETECTOR_FREQUENCY_HOURS", DEFAULT_FREQUENCY_HOURS, 1, 24 * 7)
        if frequency > period:
            raise ConfigError("must not exceed DETECTOR_PERIOD_HOURS, or time would go unchecked",
                              setting="DETECTOR_FREQUENCY_HOURS")
        # Read by the Functions host (function_app.py's "%DETECTOR_SCHEDULE%"), checked here so a bad one
        # fails the run with the setting's name rather than silently never firing.
        schedule = env.get("DETECTOR_SCHEDULE", "").strip() or "0 0 6 * * *"
        redeliver = env.get("DETECTOR_REDELIVER_SCHEDULE", "").strip() or "0 */15 * * * *"
        for name, value in (("DETECTOR_SCHEDULE", schedule), ("DETECTOR_REDELIVER_SCHEDULE", redeliver)):
            if len(value.split()) != 6:
                raise ConfigError("must be a 6-field NCRONTAB expression, e.g. '0 0 6 * * *'", setting=name)
        tenant = env.get("DETECTOR_TENANT_ID", "").strip()
        if tenant and not _GUID.match(tenant):
            raise ConfigError("must be the tenant GUID", setting="DETECTOR_TENANT_ID")
        workspace_resource = env.get("DETECTOR_WORKSPACE_RESOURCE_ID", "").strip()
        if workspace_resource and not _WORKSPACE_RESOURCE.match(workspace_resource):
            raise ConfigError("must be /subscriptions/<guid>/resourceGroups/<rg>/providers/"
                              "Microsoft.OperationalInsights/workspaces/<name>",
                              setting="DETECTOR_WORKSPACE_RESOURCE_ID")
        mention = env.get("DETECTOR_ONCALL_MENTION_ID", "").strip()
        mention_name = env.get("DETECTOR_ONCALL_MENTION_NAME", "").strip()
        for name, value in (("DETECTOR_ONCALL_MENTION_ID", mention), ("DETECTOR_ONCALL_MENTION_NAME", mention_name)):
            # Shown inside <at>...</at> in a markdown TextBlock: plain text only.
            if re.search(r"[<>\[\]*_`\\]|[^\S ]", value):
                raise ConfigError("must be plain text (no markdown, <, > or line breaks)", setting=name)
        max_catchup_days = _int(env, "DETECTOR_MAX_CATCHUP_DAYS", 14, 1, 90)
        retention = _int(env, "DETECTOR_STATE_RETENTION_DAYS", 30, 2, 3650)
        if retention * 24 <= max_catchup_days * 24 + period:
            raise ConfigError(f"must be longer than DETECTOR_MAX_CATCHUP_DAYS ({max_catchup_days}) plus the query "
                              f"period ({period} h), or a purged alert could be seen, and sent, again",
                              setting="DETECTOR_STATE_RETENTION_DAYS")
        return cls(
            rules=selected,
            tenant_id=tenant,
            workspace_resource_id=workspace_resource,
            oncall_mention_id=mention,
            oncall_mention_name=mention_name or mention,
            exception_request_url=_template(env, "DETECTOR_EXCEPTION_REQUEST_URL"),
            priority_resource_groups=tuple(g.strip().lower() for g in
                                           env.get("DETECTOR_PRIORITY_RESOURCE_GROUPS", "").split(",") if g.strip()),
            workspace_id=workspace,
            table_endpoint=endpoint,
            table_connection_string=Secret(conn) if conn else None,
            state_dir=env.get("DETECTOR_STATE_DIR", "").strip(),
            teams_urls=_urls(env, "DETECTOR_TEAMS_WEBHOOK_URLS"),
            logicapp_urls=_urls(env, "DETECTOR_LOGICAPP_WEBHOOK_URLS"),
            period_hours=period,
            frequency_hours=frequency,
            max_catchup_days=max_catchup_days,
            digest_threshold=_int(env, "DETECTOR_DIGEST_THRESHOLD", 50, 1, 1000),
            http_timeout_seconds=_int(env, "DETECTOR_HTTP_TIMEOUT_SECONDS", 10, 1, 120),
            http_max_seconds=_int(env, "DETECTOR_HTTP_MAX_SECONDS", 60, 1, 900),
            query_timeout_seconds=_int(env, "DETECTOR_QUERY_TIMEOUT_SECONDS", 120, 10, 600),
            source_dir=env.get("DETECTOR_SOURCE_DIR", "").strip(),
            health_grace_hours=_int(env, "DETECTOR_HEALTH_GRACE_HOURS", 2, 0, 24 * 7),
            send_updates=_bool(env, "DETECTOR_SEND_UPDATES", True),
            state_retention_days=retention,
        )

    def require_workspace(self) -> str:
        if not self.workspace_id:
            raise ConfigError("is required to query Log Analytics", setting="DETECTOR_WORKSPACE_ID")
        return self.workspace_id
