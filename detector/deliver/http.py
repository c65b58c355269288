"""One HTTP poster for every webhook: a requests Session with urllib3's Retry, timeouts and a time cap.

* 429 and 5xx are retried with exponential backoff; ``Retry-After`` is honoured (urllib3);
* the whole attempt, sleeps included, is capped (``max_seconds``): a Retry-After beyond the cap, or
  backoff that would cross it, gives up at once and the outbox retries on a later run;
* other 4xx are not retried; a read timeout is not retried either (the webhook may have accepted the
  message; the outbox decides), a connect failure is;
* nothing here ever puts the URL in a message: errors name the host only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ReadTimeoutError, ResponseError
from urllib3.util.retry import Retry

from ..model import Alert
from ..redact import install_log_redaction, redact, safe_url
from . import Outcome, OutcomeCallback

RETRY_STATUSES = (429, 500, 502, 503, 504)
JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


class CappedRetry(Retry):
    """urllib3 Retry that stops when the time spent (including the next sleep) would pass a cap."""

    def __init__(self, *args: Any, max_seconds: float = 60.0, started: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_seconds = max_seconds
        self.started = started

    def new(self, **kw: Any) -> CappedRetry:
        kw.setdefault("max_seconds", self.max_seconds)
        kw.setdefault("started", self.started)
        return super().new(**kw)

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None, error: Any = None,
                  _pool: Any = None, _stacktrace: Any = None) -> CappedRetry:
        started = self.started if self.started is not None else time.monotonic()
        nxt = super().increment(method, url, response, error, _pool, _stacktrace)
        nxt.started = started
        wait = nxt.get_backoff_time()
        if response is not None and self.respect_retry_after_header:
            after = nxt.get_retry_after(response)
            if after is not None:
                wait = max(wait, after)
        if time.monotonic() - started + wait > self.max_seconds:
            raise MaxRetryError(_pool, url or "", ResponseError(f"retry budget of {self.max_seconds:.0f}s exhausted"))
        return nxt


def make_session(*, max_seconds: float = 60.0, retries: int = 5, backoff: float = 0.5) -> requests.Session:
    install_log_redaction()
    retry = CappedRetry(
        total=retries, connect=retries, read=0, status=retries, other=0,
        allowed_methods=frozenset({"POST"}), status_forcelist=RETRY_STATUSES, backoff_factor=backoff,
        backoff_max=30, respect_retry_after_header=True, raise_on_status=False, max_seconds=max_seconds,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


@dataclass(frozen=True, slots=True)
class PostResult:
    ok: bool
    status: int | None
    detail: str
    body: str = ""


def encode_json(payload: Any) -> bytes:
    """The exact bytes a webhook receives: compact UTF-8 JSON, standard (no NaN/Infinity).

    Size limits are checked on these bytes and these bytes are sent (requests' ``json=`` would
    re-serialize as escaped ASCII with spaces, up to twice as large for non-Latin text).
    """
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def post_body(session: requests.Session, url: str, data: bytes, *, timeout: float) -> PostResult:
    """POST JSON bytes (from :func:`encode_json`); the result's text never holds the URL."""
    where = safe_url(url)
    try:
        response = session.post(url, data=data, headers=JSON_HEADERS, timeout=(min(timeout, 10.0), timeout))
    except requests.exceptions.RetryError:
        return PostResult(False, None, f"{where}: gave up after retries (throttled or server errors)")
    except requests.exceptions.Timeout:
        return PostResult(False, None, f"{where}: timed out after {timeout:.0f}s")
    except requests.exceptions.ConnectionError as exc:
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        if isinstance(reason, ReadTimeoutError):
            return PostResult(False, None, f"{where}: timed out after {timeout:.0f}s (not retried: it may have "
                              "been accepted; the outbox retries later)")
        return PostResult(False, None, f"{where}: could not connect")
    except requests.exceptions.RequestException as exc:
        return PostResult(False, None, f"{where}: {type(exc).__name__}")
    body = redact(response.text[:500]) if response.text else ""
    if 200 <= response.status_code < 300:
        return PostResult(True, response.status_code, f"{where}: HTTP {response.status_code}", body)
    if response.status_code == 413:
        return PostResult(False, 413, f"{where}: HTTP 413, message too large")
    if response.status_code in RETRY_STATUSES:
        return PostResult(False, response.status_code, f"{where}: HTTP {response.status_code} after retries")
    return PostResult(False, response.status_code, f"{where}: HTTP {response.status_code} (not retried): {body[:200]}")


class WebhookDestination:
    """A destination reached by POSTing JSON to a secret URL: ``id`` is shown, the URL never is."""

    def __init__(self, dest_id: str, url: str, *, session: requests.Session | None = None, timeout: float = 10.0,
                 max_seconds: float = 60.0) -> None:
        self._id = dest_id
        self._url = url
        self._session = session or make_session(max_seconds=max_seconds)
        self.timeout = timeout

    @property
    def id(self) -> str:
        return self._id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._id!r})"

    def send(self, body: bytes) -> Outcome:
        """POST one prepared message, the exact bytes from :func:`encode_json` (alert, digest or health
        message alike), with this destination's session, retries and time cap; the answer is read as this
        kind of webhook's answers are (:meth:`_outcome`)."""
        return self._outcome(post_body(self._session, self._url, body, timeout=self.timeout))

    def _post_each(self, alerts: Sequence[Alert], build: Callable[[Alert], bytes],
                   on_outcome: OutcomeCallback | None) -> list[Outcome]:
        """One message per alert (``build`` gives the exact bytes), each outcome reported as soon as it is known."""
        outcomes = []
        for index, alert in enumerate(alerts):
            outcome = self.send(build(alert))
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(index, outcome)
        return outcomes

    def _outcome(self, result: PostResult) -> Outcome:
        """How an answer reads for this kind of webhook (Teams adds its legacy throttling)."""
        return Outcome(result.ok, f"{self._id}: {result.detail}")
