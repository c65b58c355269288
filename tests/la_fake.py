"""A local stand-in for the Log Analytics query API, served over HTTPS on 127.0.0.1.

It answers the REST shape (POST /v1/workspaces/{id}/query -> tables/columns/rows with datetime,
dynamic and string types) from fixture tables, so the real ``LogsQueryClient`` (azure-core pipeline,
retry policy, bearer-token policy, JSON decoding) is exercised end to end. Only Entra ID is not run
here: ``StaticCredential`` hands out a fixed token, which the server checks.

The fake evaluates the queries the detector sends with its own small implementation (regexes over
the query text, independent of ``detector.kql``), and answers the rule's verbatim query with the rows
a test gives it. It can also answer 429 with Retry-After, 5xx, partial errors, and a result-size
limit (partial result past ``row_limit`` rows).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken

from detector.schema import TABLES
from detector.timestamps import Ticks, format_datetime, parse_datetime

TOKEN = "local-test-token"


class StaticCredential:
    """Stands in for Entra ID (which cannot run here)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(TOKEN, int(dt.datetime.now(dt.UTC).timestamp()) + 3600)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


_DATETIMES = re.compile(r"datetime\(([^)]+)\)")
_LISTED = re.compile(r'(tolower\()?"((?:[^"\\]|\\.)*)"')


def _kusto_tolower(text: str) -> str:
    """A tolower() that, like Kusto's, uses Unicode's simple lower-case mappings: U+0130 (İ) becomes a
    plain ``i``, where Python's str.lower() gives two characters and the detector's kql.tolower keeps
    ``İ``. Modelled here so the pushdown cannot rely on the two mappings agreeing."""
    return "".join("i" if c == "\u0130" else (c.lower() if len(c.lower()) == 1 else c) for c in text)


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_OPERATIONS = re.compile(r"^\| where OperationNameValue (?:=~|in~) (.+)$", re.MULTILINE)
_TERMS = re.compile(r"^\| where Authorization (?:has|has_any) (.+)$", re.MULTILINE)


def _has_term(text: str, term: str) -> bool:
    return re.search(rf"(?<![0-9a-z]){re.escape(term.lower())}(?![0-9a-z])", text.lower()) is not None


@dataclass
class Request:
    workspace: str
    query: str
    timespan: str
    prefer: str
    authorization: str


@dataclass
class LogAnalyticsFake:
    activity: list[dict[str, Any]] = field(default_factory=list)
    ueba: list[dict[str, Any]] = field(default_factory=list)
    parity_rows: list[dict[str, Any]] = field(default_factory=list)
    # A rule's verbatim query is told apart by its first comment line (the seed's: "// Isolate run command
    # actions"); rules not listed here get ``parity_rows``.
    parity_by_comment: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    row_limit: int = 500_000
    failures: list[tuple[int, dict[str, str], dict[str, Any]]] = field(default_factory=list)  # scripted answers
    partial_error_on: str | None = None  # table name whose queries answer a partial error
    requests: list[Request] = field(default_factory=list)
    rows_returned: int = 0
    served_faults: list[str] = field(default_factory=list)  # what the fake actually answered wrong, in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- query evaluation (independent of the detector's code) ------------------------------------
    def _window(self, query: str) -> tuple[Ticks, Ticks]:
        start, end = (parse_datetime(x) for x in _DATETIMES.findall(query)[:2])
        return start, end

    def evaluate(self, query: str) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
        table = query.split("\n", 1)[0].strip()
        if query.startswith("AzureActivity\n// ") and "| join kind = inner" in query:
            answer = self.parity_by_comment.get(query.split("\n")[1], self.parity_rows)
            columns = [(c, "string") for c in answer[0]] if answer else [("StartTime", "string")]
            return columns, answer
        start, end = self._window(query)
        if table == "AzureActivity":
            rows = [r for r in self.activity if start <= r["TimeGenerated"] < end]
            operations, terms = _OPERATIONS.search(query), _TERMS.search(query)
            if operations and terms:
                wanted_ops = {json.loads(f'"{o}"').upper() for o in _QUOTED.findall(operations.group(1))}
                wanted_terms = [json.loads(f'"{t}"') for t in _QUOTED.findall(terms.group(1))]
                rows = [r for r in rows if r["OperationNameValue"].upper() in wanted_ops
                        and any(_has_term(r["Authorization"], t) for t in wanted_terms)]
        elif table == "BehaviorAnalytics":
            rows = [r for r in self.ueba if start <= r["TimeGenerated"] < end]
            if "in (" in query:
                listed = query.split("in (", 1)[1].split("\n", 1)[0]
                wanted = {_kusto_tolower(json.loads(f'"{s}"')) if lowered else json.loads(f'"{s}"')
                          for lowered, s in _LISTED.findall(listed)}
                rows = [r for r in rows if r["EventSource"] == "Azure AD"
                        and isinstance(r["ActivityInsights"], dict)
                        and r["ActivityInsights"].get("ActionUncommonlyPerformedByUser") == "True"
                        and r["UserPrincipalName"] and r["SourceIPLocation"]
                        and _kusto_tolower(r["UserPrincipalName"]) in wanted]
        else:
            raise ValueError(f"the fake does not know table {table!r}")
        schema = dict(TABLES[table])
        project = re.search(r"\| project (.+)$", query, re.MULTILINE)
        if project:
            names = [p.split("=")[0].strip() for p in project.group(1).split(",")]
            columns = [(n, "string" if n == "TimeGenerated" else schema[n]) for n in names]
        else:
            columns = list(TABLES[table])
        return columns, [{n: self._cell(r.get(n), t) for n, t in columns} for r in rows]

    @staticmethod
    def _cell(value: Any, kind: str) -> Any:
        if value is None:
            return None
        if isinstance(value, int) and kind in ("datetime", "string") and not isinstance(value, bool):
            return format_datetime(value)  # ticks -> ISO text (datetime columns and tostring() alike)
        if kind == "dynamic":
            return json.dumps(value, separators=(",", ":"))
        return value

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self.lock:
            if self.failures:
                failure = self.failures.pop(0)
                self.served_faults.append(f"HTTP {failure[0]}")
                return failure
        query = body["query"]
        columns, rows = self.evaluate(query)
        table = query.split("\n", 1)[0].strip()
        result: dict[str, Any] = {"tables": [{"name": "PrimaryResult",
                                              "columns": [{"name": n, "type": t} for n, t in columns],
                                              "rows": [[r.get(n) for n, _ in columns] for r in rows]}]}
        if self.partial_error_on == table:
            with self.lock:
                self.served_faults.append("partial result")
            result["error"] = {"code": "PartialError", "message": "There were some errors when processing your query.",
                               "details": [{"code": "EngineError", "message": "Something went wrong",
                                            "innererror": {"code": "-2133196797", "message": "Query timed out"}}]}
        elif len(rows) > self.row_limit:
            result["tables"][0]["rows"] = result["tables"][0]["rows"][: self.row_limit]
            result["error"] = {"code": "PartialError", "message": "There were some errors when processing your query.",
                               "details": [{"code": "EngineError", "message": "Something went wrong",
                                            "innererror": {"code": "-2133196797", "message":
                                                           "Query result set has exceeded the internal record count "
                                                           "limit 500000 records (E_QUERY_RESULT_SET_TOO_LARGE)."}}]}
        with self.lock:
            self.rows_returned += len(result["tables"][0]["rows"])
        return 200, {}, result


@contextmanager
def log_analytics_fake(fake: LogAnalyticsFake) -> Iterator[tuple[str, str]]:
    """Serve ``fake`` over HTTPS; yield (endpoint, CA certificate path)."""
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_certificate(Path(tmp))

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                m = re.fullmatch(r"/v1/workspaces/([^/]+)/query", self.path.split("?")[0])
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake.lock:
                    fake.requests.append(Request(m.group(1) if m else "", body.get("query", ""),
                                                 body.get("timespan", ""), self.headers.get("Prefer", ""),
                                                 self.headers.get("Authorization", "")))
                if not m or self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    status, headers, payload = 403, {}, {"error": {"code": "Forbidden", "message": "bad path/token"}}
                else:
                    try:
                        status, headers, payload = fake.answer(body)
                    except Exception as exc:  # report fake bugs as a 400 the test will see
                        status, headers, payload = 400, {}, {"error": {"code": "BadArgumentError", "message": str(exc)}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"https://127.0.0.1:{httpd.server_address[1]}", str(cert)
        finally:
            httpd.shutdown()
            httpd.server_close()
