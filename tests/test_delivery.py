"""Delivery against real HTTP servers on loopback: retries, throttling, limits, and secrets kept."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import jsonschema
import pytest

from detector.alerts import build_alerts
from detector.correlate import correlate
from detector.deliver.http import encode_json, make_session
from detector.deliver.links import DeliveryOptions
from detector.deliver.logicapp import LogicAppDestination, build_payload, load_schema
from detector.deliver.teams import MAX_MESSAGE_BYTES, TARGET_BYTES, TeamsDestination, alert_message
from detector.errors import ConfigError
from detector.model import Alert
from detector.pipeline import detect
from detector.redact import redact, safe_url
from detector.sample.generate import SAMPLE_DIR
from detector.settings import Settings
from detector.sources.files import FileSource
from detector.timestamps import parse_datetime
from detector.window import Window
from tests.builders import AT, T0, run_command, ueba
from tests.webhook import Reply, WebhookServer, webhook_server

SECRET = "s3cr3tSIGvalue"


@pytest.fixture
def server() -> Iterator[WebhookServer]:
    with webhook_server() as s:
        yield s


def sample_alerts() -> list[Alert]:
    at = parse_datetime(json.loads((SAMPLE_DIR / "expected.json").read_text())["at"])
    return detect(FileSource(SAMPLE_DIR), Window.ending_at(at)).alerts


def one_alert() -> Alert:
    [a] = build_alerts(correlate(run_command(T0), [ueba(T0)], Window.ending_at(AT)).rows)
    return a


def teams(server: WebhookServer, path: str = "/teams", **kwargs: object) -> TeamsDestination:
    session = make_session(max_seconds=float(kwargs.pop("max_seconds", 20)), backoff=0.05)  # type: ignore[arg-type]
    return TeamsDestination("teams-1", server.url(path), session=session, **kwargs)  # type: ignore[arg-type]


def test_202_delivers_the_adaptive_card_envelope(server: WebhookServer) -> None:
    [outcome] = teams(server).deliver([one_alert()])
    assert outcome.ok
    [body] = server.bodies("/teams")
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["content"]["type"] == "AdaptiveCard"
    assert attachment["content"]["version"] == "1.4"


def test_429_with_retry_after_then_202(server: WebhookServer) -> None:
    server.script("/teams", Reply(429, {"Retry-After": "1"}), Reply(202))
    [outcome] = teams(server).deliver([one_alert()])
    assert outcome.ok
    assert len(server.bodies("/teams")) == 2


def test_retry_after_beyond_the_time_cap_gives_up_at_once(server: WebhookServer) -> None:
    server.script("/teams", Reply(429, {"Retry-After": "3600"}))
    [outcome] = teams(server, max_seconds=5).deliver([one_alert()])
    assert not outcome.ok
    assert "429" in outcome.detail
    assert len(server.bodies("/teams")) == 1  # no hour-long sleep: given up, the outbox retries later


def test_repeated_500_is_given_up_and_left_undelivered(server: WebhookServer) -> None:
    server.script("/logic", *[Reply(500)] * 10)
    session = make_session(max_seconds=20, backoff=0.01, retries=3)
    [outcome] = LogicAppDestination("logicapp-1", server.url("/logic"), session=session).deliver([one_alert()])
    assert not outcome.ok
    assert len(server.bodies("/logic")) == 4  # the first try and three retries


def test_400_is_not_retried_and_is_reported(server: WebhookServer) -> None:
    server.script("/teams", Reply(400, body='{"error":"BadRequest: flow not found"}'))
    [outcome] = teams(server).deliver([one_alert()])
    assert not outcome.ok
    assert "HTTP 400 (not retried)" in outcome.detail
    assert len(server.bodies("/teams")) == 1


def test_413_is_reported_not_retried(server: WebhookServer) -> None:
    server.script("/teams", Reply(413))
    [outcome] = teams(server).deliver([one_alert()])
    assert "413" in outcome.detail
    assert len(server.bodies("/teams")) == 1


def test_timeout(server: WebhookServer) -> None:
    server.script("/teams", Reply(202, delay=3))
    [outcome] = teams(server, timeout=1).deliver([one_alert()])
    assert not outcome.ok
    assert "timed out" in outcome.detail


def test_legacy_200_with_429_text_counts_as_throttled(server: WebhookServer) -> None:
    server.script("/teams", Reply(200, body="Microsoft Teams endpoint returned HTTP error 429 with ContextId x"))
    [outcome] = teams(server).deliver([one_alert()])
    assert not outcome.ok
    assert "throttled" in outcome.detail


def test_connection_refused_names_no_secret() -> None:
    url = f"http://127.0.0.1:9/hook?sig={SECRET}"
    dest = TeamsDestination("teams-1", url, session=make_session(max_seconds=3, backoff=0.01, retries=1))
    [outcome] = dest.deliver([one_alert()])
    assert not outcome.ok
    assert SECRET not in outcome.detail
    assert SECRET not in repr(dest)


def test_many_alerts_make_one_digest_card(server: WebhookServer) -> None:
    alerts = (sample_alerts() * 10)[:60]  # 60 > 50
    outcomes = teams(server).deliver(alerts)
    assert len(outcomes) == 60
    assert all(o.ok for o in outcomes)
    [body] = server.bodies("/teams")
    assert "60 alerts" in json.dumps(body)


def test_logic_app_payloads_validate_against_the_schema(server: WebhookServer) -> None:
    alerts = sample_alerts()
    session = make_session(max_seconds=10)
    outcomes = LogicAppDestination("logicapp-1", server.url("/logic"), session=session).deliver(alerts)
    assert all(o.ok for o in outcomes)
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    bodies = server.bodies("/logic")
    assert len(bodies) == len(alerts)
    for body in bodies:
        jsonschema.validate(body, schema)
        assert body["eventType"] == "alert"
        assert body["schemaVersion"] == "2.0"
    account = bodies[0]["entities"][0]
    assert account["Type"] == "account"
    assert account["$id"] == "1"
    assert {"Name", "UPNSuffix", "AadUserId", "DisplayName"} <= set(account)


def _every_payload() -> list[dict[str, Any]]:
    """Every payload shape the code can build: sample and edge alerts, both events, with and without settings."""
    from tests.test_cards import OPTIONS, big_alert, cjk_alert, hostile_alert, rich_alert
    alerts = [*sample_alerts(), one_alert(), rich_alert(), hostile_alert(3), big_alert(40), cjk_alert()]
    bare = replace(one_alert(), context=None)  # stored before triage context existed
    return [build_payload(a, event=event, options=options, updated_at=AT if event == "update" else None)
            for a in [*alerts, bare] for event in ("alert", "update") for options in (OPTIONS, DeliveryOptions())]


def test_every_payload_the_code_can_build_validates_against_alert_v2() -> None:
    validator = jsonschema.Draft202012Validator(load_schema())
    payloads = _every_payload()
    assert len(payloads) > 60
    for payload in payloads:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(payload)]
        assert errors == [], payload["alertId"]
        json.dumps(payload, allow_nan=False)  # standard JSON


def test_payload_v2_carries_what_a_ticket_needs_once() -> None:
    from tests.test_cards import OPTIONS, TENANT, rich_alert
    alert = rich_alert()
    payload = build_payload(alert, event="update", options=OPTIONS, updated_at=AT + 3600 * 10_000_000)
    assert payload["eventType"] == "update"
    assert payload["detectedAt"] == "2026-11-20T06:00:00Z"
    assert payload["updatedAt"] == "2026-11-20T07:00:00Z"
    assert payload["detectionDelaySeconds"] == 24 * 3600
    assert payload["tenantId"] == TENANT
    assert payload["workspaceId"] == OPTIONS.workspace_id
    assert payload["title"].startswith("Run Command on vm-1 by alice@contoso.com")
    assert payload["description"].startswith("Alice Admin (alice@contoso.com) ran a Run Command on vm-1")
    assert payload["severity"] == "High"
    assert payload["priority"]["level"] == "P1"
    assert payload["links"]["investigate"].startswith("https://portal.azure.com/#@")
    assert payload["signIns"][0]["sameIpAsCaller"] is True
    assert payload["signIns"][0]["secondsBeforeCommand"] == 7200
    assert payload["context"]["otherRunCommandsTotal"] == 1
    types = [(e["Type"], e.get("Address") or e.get("AzureID") or e.get("Name")) for e in payload["entities"]]
    assert types == [("account", "alice"), ("host", alert.scope), ("ip", "20.1.2.3")]  # same IP: listed once
    assert [e["$id"] for e in payload["entities"]] == ["1", "2", "3"]
    assert "rows" not in payload
    assert "matches" not in payload
    text = json.dumps(payload)
    assert text.count('"vm-1"') == 3  # runCommand.vmName, the host entity, the proposed exception's condition


def test_schema_rejects_broken_payloads() -> None:
    schema = load_schema()
    for breaking in (lambda p: p["entities"][0].pop("UPNSuffix"), lambda p: p.update(eventType="incident"),
                     lambda p: p.update(tenantId="not-a-guid"), lambda p: p.pop("detectedAt"),
                     lambda p: p["links"].update(vm="javascript:alert(1)")):
        payload = build_payload(one_alert())
        breaking(payload)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(payload, schema)


def test_both_schema_versions_are_documented() -> None:
    for version in (1, 2):
        schema = load_schema(version)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["properties"]["schemaVersion"]["pattern"] == f"^{version}\\.[0-9]+$"
    assert load_schema(2)["properties"]["eventType"]["enum"] == ["alert", "update", "health"]


def test_the_size_limit_is_checked_on_the_bytes_that_are_sent(server: WebhookServer) -> None:
    from tests.test_cards import cjk_alert
    alert = cjk_alert()
    payload, body = alert_message(alert)
    assert body == encode_json(payload)
    [outcome] = teams(server).deliver([alert])
    assert outcome.ok
    [raw] = server.raw_bodies("/teams")
    assert raw == body  # sent as built: not re-serialized as escaped ASCII
    assert len(raw) <= TARGET_BYTES < MAX_MESSAGE_BYTES
    escaped = json.dumps(payload).encode()  # what requests' json= would have sent
    assert len(escaped) > MAX_MESSAGE_BYTES  # the old measure would have passed a message Teams rejects


def test_secrets_never_reach_logs(server: WebhookServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.script("/teams", Reply(500), Reply(429, {"Retry-After": "0"}), Reply(202))
    [outcome] = teams(server).deliver([one_alert()])
    assert outcome.ok
    assert caplog.records, "urllib3 logged nothing: the check would be empty"
    text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert "/teams" in text  # the request lines were logged...
    assert SECRET not in text  # ...without the signature


def test_settings_hold_urls_as_secrets() -> None:
    env = {"DETECTOR_TEAMS_WEBHOOK_URLS": f"https://a.example/x?sig={SECRET}\nhttps://b.example/y?sig=other",
           "DETECTOR_LOGICAPP_WEBHOOK_URLS": f"https://c.example/z?sig={SECRET}"}
    settings = Settings.from_env(env)
    assert len(settings.teams_urls) == 2
    assert SECRET not in repr(settings)
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"DETECTOR_TEAMS_WEBHOOK_URLS": f"ftp://x/?sig={SECRET}"})
    assert SECRET not in str(info.value)
    assert "DETECTOR_TEAMS_WEBHOOK_URLS" in str(info.value)


@pytest.mark.parametrize(("text", "leak"), [
    (f"POST /workflows/abc/triggers/manual/paths/invoke?api-version=1&sig={SECRET} HTTP/1.1", SECRET),
    (f"https://prod-1.westeurope.logic.azure.com:443/workflows/x?sp=%2F&sig={SECRET}&sv=1", SECRET),
    ("AccountKey=abcdEFGH1234==;EndpointSuffix=core.windows.net", "abcdEFGH1234"),
])
def test_redact(text: str, leak: str) -> None:
    assert leak not in redact(text)


@pytest.mark.parametrize("text", [
    f'query failed at https://x.example/v1?sig={SECRET}" then "more"',
    f'AccountKey={SECRET}"; and sig={SECRET}\\ then a backslash',
    f"https://x.example/v1?a=1&sig={SECRET}&b=\u00e9\n",
])
def test_redacting_a_json_encoded_line_keeps_it_json(text: str) -> None:
    """The run summary and failure lines are JSON; the log filter redacts them after encoding."""
    line = json.dumps({"error": text})
    clean = redact(line)
    assert SECRET not in clean
    assert json.loads(clean)["error"].count("REDACTED") >= 1
    assert redact(clean) == clean


def test_safe_url_shows_host_only() -> None:
    assert safe_url(f"https://prod-1.westeurope.logic.azure.com:443/workflows/x?sig={SECRET}") == \
        "https://prod-1.westeurope.logic.azure.com:443/…"


def test_several_destinations_of_each_kind_from_settings() -> None:
    from detector.deliver.factory import build_destinations
    settings = Settings.from_env({
        "DETECTOR_TEAMS_WEBHOOK_URLS": "https://a.example/1?sig=x, https://a.example/2?sig=y",
        "DETECTOR_LOGICAPP_WEBHOOK_URLS": "https://b.example/1?sig=z\nhttps://b.example/2?sig=w\nhttps://b.example/3?sig=v",
        "DETECTOR_DIGEST_THRESHOLD": "7"})
    destinations = build_destinations(settings)
    assert [d.id for d in destinations] == ["teams-1", "teams-2", "logicapp-1", "logicapp-2", "logicapp-3"]
    assert destinations[0].digest_threshold == 7  # type: ignore[attr-defined]
    assert "sig" not in repr(destinations)


@pytest.mark.parametrize(("setting", "value", "problem"), [
    ("DETECTOR_TENANT_ID", "contoso.onmicrosoft.com", "GUID"),
    ("DETECTOR_WORKSPACE_RESOURCE_ID", "0b9e5d5c-1d2e-4f3a-8b7c-6d5e4f3a2b1c", "workspaces/<name>"),
    ("DETECTOR_EXCEPTION_REQUEST_URL", "http://forms.example.com/?e={entry}", "https"),
    ("DETECTOR_EXCEPTION_REQUEST_URL", "https://forms.example.com/?e={script}", "unknown placeholder"),
    ("DETECTOR_EXCEPTION_REQUEST_URL", "https://{caller}.example.com/", "not in the host"),
    ("DETECTOR_ONCALL_MENTION_ID", "<at>x</at>", "plain text"),
    ("DETECTOR_ONCALL_MENTION_NAME", "On call\nteam", "plain text"),
])
def test_delivery_settings_are_validated(setting: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({setting: value})
    assert setting in str(info.value)
    assert problem in str(info.value)


def test_delivery_settings_reach_the_destinations() -> None:
    from detector.deliver.factory import build_destinations
    settings = Settings.from_env({
        "DETECTOR_TEAMS_WEBHOOK_URLS": "https://a.example/1?sig=x", "DETECTOR_LOGICAPP_WEBHOOK_URLS": "https://b.example/1",
        "DETECTOR_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47", "DETECTOR_PRIORITY_RESOURCE_GROUPS": "Prod-Web, db ",
        "DETECTOR_ONCALL_MENTION_ID": "oncall@contoso.com", "DETECTOR_EXCEPTION_REQUEST_URL": "https://f.example/?e={entry}"})
    expected = DeliveryOptions(tenant_id="72f988bf-86f1-41af-91ab-2d7cd011db47", mention_id="oncall@contoso.com",
                               mention_name="oncall@contoso.com", exception_url_template="https://f.example/?e={entry}",
                               priority_resource_groups=("prod-web", "db"))
    assert [d.options for d in build_destinations(settings)] == [expected, expected]  # type: ignore[attr-defined]
