"""The ambient Azure credential (``DefaultAzureCredential``), with a failure that reads as one line.

When no credential works, ``DefaultAzureCredential`` logs a ~13-line warning (each credential it tried and
why it was unavailable) on the ``azure.identity`` loggers, before the detector's own error; in the Function
App that is 13 log records per failed run (and two INFO records each time one is built). While the detector
builds one and asks it for a token, those loggers are held at ERROR, and a failure is raised again as one
line that says what to set. The SDK's report is not lost: it is logged at DEBUG on ``detector.credential``
(``--verbose`` in the CLI; in the Function App, a Debug log level: ``PYTHON_ENABLE_DEBUG_LOGGING=1`` and
host.json's ``logging.logLevel``).

Only the detector's own token requests are quieted (a lock and a depth count keep concurrent requests
from restoring the level early); the loggers' level is restored after each.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import DefaultAzureCredential

logger = logging.getLogger("detector.credential")
IDENTITY_LOGGER = "azure.identity"
WHAT_TO_SET = ("no Azure credential gave a token: on a laptop run `az login`; in Azure give the Function App its "
               "managed identity; for a service principal set AZURE_TENANT_ID, AZURE_CLIENT_ID and "
               "AZURE_CLIENT_SECRET (the debug log, --verbose, shows what each credential answered)")

_lock = threading.Lock()
_depth = 0
_saved_level = logging.NOTSET


@contextmanager
def _identity_logs_quieted() -> Iterator[None]:
    global _depth, _saved_level
    identity = logging.getLogger(IDENTITY_LOGGER)
    with _lock:
        if _depth == 0:
            _saved_level = identity.level
            identity.setLevel(logging.ERROR)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                identity.setLevel(_saved_level)


class QuietCredential:
    """A token credential that asks ``inner`` with the azure.identity loggers quieted, and fails in one line."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        with _identity_logs_quieted():
            try:
                token: AccessToken = self._inner.get_token(*scopes, **kwargs)
                return token
            except ClientAuthenticationError as exc:
                logger.debug("the Azure credential's own report: %s", exc.message)
                raise ClientAuthenticationError(message=WHAT_TO_SET) from None

    def close(self) -> None:
        self._inner.close()


def ambient_credential() -> QuietCredential:
    """``az login`` on a laptop, the managed identity in Azure (every credential DefaultAzureCredential tries)."""
    with _identity_logs_quieted():  # building it logs too: what each credential found in the environment
        return QuietCredential(DefaultAzureCredential())


def failure_line(exc: BaseException) -> str:
    """What a credential failure says, on one line (ours is one; another credential's may be the SDK's report)."""
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
