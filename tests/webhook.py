"""A real HTTP server on 127.0.0.1 standing in for Teams Workflows and Logic App webhooks.

Each path answers from a script of responses (status, headers, body, delay); when the script runs
out it answers 202. Every request is recorded with its path, query and JSON body. ``on_request``, when
set, sees each request as it arrives, before it is answered (in the server's thread), and may replace
its reply: the soak tests advance their simulated clock there and kill a sender with a post in flight.
A reply with ``answer=False`` closes the connection unanswered (recorded with status 0: not delivered).
``alert_message`` reads which alert a received message is about (for the soak tests' counts).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int = 202
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    delay: float = 0.0
    answer: bool = True


@dataclass
class Received:
    path: str
    query: str
    body: Any
    status: int = 0
    raw: bytes = b""


class WebhookServer:
    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.on_request: Callable[[Received], Reply | None] | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                parts = urlsplit(self.path)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                with outer.lock:
                    script = outer.scripts.get(parts.path, [])
                    reply = script.pop(0) if script else Reply()
                request = Received(parts.path, parts.query, body, reply.status, raw)
                hook = outer.on_request
                reply = (hook(request) if hook is not None else None) or reply
                request.status = reply.status if reply.answer else 0
                with outer.lock:
                    outer.received.append(request)
                if not reply.answer:
                    self.close_connection = True
                    return
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]

    def url(self, path: str, sig: str = "s3cr3tSIGvalue") -> str:
        return f"http://127.0.0.1:{self.port}{path}?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={sig}"

    def script(self, path: str, *replies: Reply) -> None:
        with self.lock:
            self.scripts[path] = list(replies)

    def bodies(self, path: str) -> list[Any]:
        """Every body POSTed to ``path``, whatever the answer."""
        with self.lock:
            return [r.body for r in self.received if r.path == path]

    def raw_bodies(self, path: str) -> list[bytes]:
        """The exact bytes POSTed to ``path``."""
        with self.lock:
            return [r.raw for r in self.received if r.path == path]

    def accepted(self, path: str) -> list[Any]:
        """Bodies POSTed to ``path`` that were answered 2xx, i.e. delivered."""
        with self.lock:
            return [r.body for r in self.received if r.path == path and 200 <= r.status < 300]


def alert_message(body: Any) -> tuple[str, str] | None:
    """(VM name, ``alert`` or ``update``) of one alert message as a destination received it: a Logic App
    alert-v2 payload or a Teams alert card. None for anything else (health messages, digests).

    Read from the fields that name the alert itself, never from the whole text: a message also names
    other Run Commands of the caller (its context), which are not the alert."""
    if not isinstance(body, dict):
        return None
    if body.get("schemaVersion") == "2.0":
        return body["runCommand"]["vmName"], body["eventType"]
    summary = body.get("summary")
    found = re.search(r" ran a Run Command on (\S+)", summary) if isinstance(summary, str) else None
    if body.get("type") != "message" or found is None:
        return None
    header = body["attachments"][0]["content"]["body"][0]["items"]
    update = any(str(item.get("text", "")).startswith("Update: new flagged sign-ins") for item in header)
    return found.group(1), "update" if update else "alert"


@contextmanager
def webhook_server() -> Iterator[WebhookServer]:
    server = WebhookServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
