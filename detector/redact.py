"""Webhook URLs are secrets (their ``sig`` is a SAS signature): never print, log or raise them.

``safe_url`` is the only form of a webhook URL that may appear anywhere (scheme and host).
``redact`` scrubs ``sig=...`` (and any other SAS-looking query values) from free text, and
``install_log_redaction`` applies it to every record of the loggers that could echo a URL
(urllib3 logs request lines and retry warnings with the full path and query).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

# A redacted value ends at a backslash too: in a JSON-encoded log line (the run summary and failure lines)
# `sig=x\"` must lose `x`, not the backslash that escapes the quote, or the line stops being JSON.
# (SAS signatures and account keys are base64 or percent-encoded: they hold no backslash.)
_SECRET_QUERY = re.compile(
    r"(?i)\b(sig|signature|sv|se|sp|code|key|accountkey|sharedaccesssignature)=([^&\s'\"<>;\\]+)")
_URL_WITH_QUERY = re.compile(r"(?i)(https?://[^\s'\"<>?]+)\?[^\s'\"<>\\]*")
LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.util.retry", "requests", "azure", "azure.core",
           "azure.core.pipeline.policies.http_logging_policy", "detector", "function_app")


def redact(text: str) -> str:
    """Remove query strings of URLs and any ``sig=``-like values from ``text``."""
    text = _URL_WITH_QUERY.sub(lambda m: m.group(1) + "?REDACTED", text)
    return _SECRET_QUERY.sub(lambda m: f"{m.group(1)}=REDACTED", text)


def safe_url(url: str) -> str:
    """Scheme and host of a URL: what may be shown of a webhook."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error handling
            return True
        clean = redact(message)
        if clean != message:
            record.msg = clean
            record.args = None
        return True


_FILTER = RedactingFilter()


def install_log_redaction() -> None:
    """Attach the redacting filter to the loggers (idempotent) and to the root handlers."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
