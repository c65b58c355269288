"""Teams cards: checked by Microsoft's Adaptive Cards library, rendered with Teams' published host configs
(light, dark) in a real headless Chromium at 360 px and desktop width, kept small, immune to injected
markdown, links and mentions, and written for a responder who decides on a phone."""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shlex
import subprocess
import unicodedata
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from detector.alerts import build_alerts
from detector.allowlist import Allowlist, apply
from detector.cli import main
from detector.correlate import correlate
from detector.deliver.links import DeliveryOptions, alert_links, investigate_query, investigate_range
from detector.deliver.teams import (
    MAX_MESSAGE_BYTES,
    PRIORITY_STYLE,
    allowlist_command,
    build_alert_card,
    build_digest_card,
    clean,
)
from detector.model import Alert, UebaEvent
from detector.pipeline import wall_clock
from detector.store.tables import TableStore
from detector.triage import assess, attach_context, proposed_entry, why_line
from detector.window import Window
from tests.builders import AT, SUB, T0, H, activity, authorization, run_command, ueba
from tests.render import THEMES, WIDTHS, host_config, render
from tests.services import ROOT, azurite_tables
from tests.test_delivery import sample_alerts
from tests.test_kql_language_service import analyse

HOSTILE = ("[click me](https://evil.example/x) ![img](https://evil.example/p.png) <at>General</at> **bold** "
           "_it_ `code` # head\n\u202eevil\x00 https://evil.example www.evil.example "
           "http:\u2060//evil.example h\u061cttps:/\u180e/evil.example <\u200dat>x</at> ww\u3164w.evil.example")
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
WORKSPACE = (f"/subscriptions/{SUB}/resourceGroups/soc/providers/Microsoft.OperationalInsights/workspaces/sentinel")
OPTIONS = DeliveryOptions(tenant_id=TENANT, workspace_id="0b9e5d5c-1d2e-4f3a-8b7c-6d5e4f3a2b1c",
                          workspace_resource_id=WORKSPACE, mention_id="oncall@contoso.com", mention_name="On-call SecOps",
                          exception_url_template="https://forms.example.com/exception?entry={entry}&alert={alert_id}",
                          priority_resource_groups=("rg-1",))
OID = "3f1e2d4c-5b6a-4789-8abc-def012345678"


def alert_from(logins: list[UebaEvent], *, caller: str = "alice@contoso.com", scope: str | None = None,
               ip: str = "20.1.2.3", role: str = "Contributor", extra_activity: list[Any] | None = None) -> Alert:
    auth = authorization(scope) if scope else authorization()
    if role != "Contributor":
        auth = auth.replace('"Contributor"', json.dumps(role))
    events = run_command(T0, caller=caller, ip=ip, auth=auth) + (extra_activity or [])
    window = Window.ending_at(AT)
    correlation = correlate(events, logins, window)
    alerts = attach_context(build_alerts(correlation.rows), correlation, detected_at=AT)
    return next(a for a in alerts if a.correlation_id == "c-1")


def hostile_alert(n_matches: int = 1) -> Alert:
    scope = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/" + "[x](http://e)"
    logins = [ueba(T0 - i * 10_000_000, upn=HOSTILE + "@contoso.com", location=HOSTILE, action_type=HOSTILE,
                   insights={"ActionUncommonlyPerformedByUser": "True", HOSTILE: "True"},
                   users={"BlastRadius": HOSTILE, "AccountDisplayName": HOSTILE}) for i in range(n_matches)]
    return alert_from(logins, caller=HOSTILE + "@contoso.com", scope=scope, ip=HOSTILE)


def big_alert(n: int) -> Alert:
    return alert_from([ueba(T0 - i * 10_000_000, location="Somewhere quite long, " * 8) for i in range(n)])


def cjk_alert() -> Alert:
    text = "東京都千代田区の非常に長い場所の名前" * 12
    return alert_from([ueba(T0 - i * 10_000_000, location=text, action_type=text,
                            users={"AccountDisplayName": text}) for i in range(200)])


def rich_alert() -> Alert:
    """Every corroborating signal: same IP, high UEBA priority, blast radius, new country, Owner, listed RG."""
    login = replace(ueba(T0 - 2 * H, insights={"ActionUncommonlyPerformedByUser": "True",
                                               "FirstTimeUserConnectedFromCountry": "True"},
                         users={"BlastRadius": "High", "AccountDisplayName": "Alice Admin", "AccountObjectID": OID}),
                    source_ip="20.1.2.3", investigation_priority=9)
    other = replace(ueba(T0 - 20 * H, location="Paris, FR"), source_ip="51.1.1.1")
    second = run_command(T0 + 3 * H, correlation_id="c-2", auth=authorization(
        f"/subscriptions/{SUB}/resourceGroups/rg-2/providers/Microsoft.Compute/virtualMachines/vm-2"))
    return alert_from([login, other], role="Owner", extra_activity=second)


def all_messages() -> dict[str, dict[str, Any]]:
    alerts = sample_alerts()
    messages = {f"sample {i}": build_alert_card(a, options=OPTIONS) for i, a in enumerate(alerts)}
    messages["sample 0, no settings"] = build_alert_card(alerts[0])
    messages["update"] = build_alert_card(rich_alert(), event="update", options=OPTIONS)
    messages["rich"] = build_alert_card(rich_alert(), options=OPTIONS)
    messages["digest"] = build_digest_card(alerts * 20, options=OPTIONS)
    messages["hostile"] = build_alert_card(hostile_alert(3), options=OPTIONS)
    messages["hostile digest"] = build_digest_card([hostile_alert()] * 60, options=OPTIONS)
    messages["500 matches"] = build_alert_card(big_alert(500), options=OPTIONS)
    messages["CJK"] = build_alert_card(cjk_alert(), options=OPTIONS)
    return messages


def content(message: dict[str, Any]) -> dict[str, Any]:
    card: dict[str, Any] = message["attachments"][0]["content"]
    return card


def check_with_adaptivecards(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    done = subprocess.run(["node", str(ROOT / "tests" / "js" / "cards.js")], input=json.dumps(cards),
                          capture_output=True, text=True, check=True, timeout=120)
    reports: list[dict[str, Any]] = json.loads(done.stdout)
    return reports


def test_every_card_parses_with_no_warnings_or_errors() -> None:
    messages = all_messages()
    reports = check_with_adaptivecards([content(m) for m in messages.values()])
    for name, report in zip(messages, reports, strict=True):
        assert report["events"] == [], name
        assert report["failures"] == [], name
        # "msteams" (full width, mentions) is the Teams host's documented extension, which the renderer does not model.
        assert [d for d in report["dropped"] if not d.startswith("$.msteams")] == [], name
        assert "ac-adaptiveCard" in report["html"], name


def test_the_checker_can_fail() -> None:
    bad = {"type": "AdaptiveCard", "version": "1.4", "body": [
        {"type": "TextBlock", "text": "x", "colour": "Attention"}, {"type": "Carousel"}],
        "actions": [{"type": "Action.OpenUrl", "title": "no url"}]}
    [report] = check_with_adaptivecards([bad])
    assert report["events"]
    assert report["failures"]
    assert "$.body[0].colour" in report["dropped"]


def test_cards_stay_under_the_teams_limit_and_say_what_was_cut() -> None:
    for name, message in all_messages().items():
        size = len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode())
        assert size < MAX_MESSAGE_BYTES, name
    text = json.dumps(build_alert_card(big_alert(500)))
    assert re.search(r"\+\d+ more UEBA matches", text)
    assert re.search(r"\+\d+ more alerts", json.dumps(build_digest_card(sample_alerts() * 200)))


# --- what the responder reads first ------------------------------------------------------------------

def _first_text(card: dict[str, Any]) -> str:
    header = card["body"][0]
    first = header["items"][0]
    assert first["type"] == "RichTextBlock"  # log text: TextRuns only, never markdown
    return "".join(run["text"] for run in first["inlines"])


def test_first_text_is_the_why_line_and_the_summary_carries_it() -> None:
    alert = rich_alert()
    message = build_alert_card(alert, options=OPTIONS)
    card = content(message)
    line = _first_text(card)
    assert line == why_line(alert)
    assert line.startswith("Alice Admin (alice@contoso.com) ran a Run Command on vm-1 in rg-1 2 h after a flagged "
                           "sign-in from Lagos, NG")
    assert "from the same IP as the command (20.1.2.3)" in line
    assert message["summary"] == card["fallbackText"] == line


@pytest.mark.parametrize(("sign_in_ip", "offset", "expected"), [
    ("20.1.2.3", -2 * H, "2 h after a flagged sign-in from Lagos, NG, from the same IP as the command (20.1.2.3)"),
    ("41.58.1.2", -90 * 60 * 10_000_000,
     "1 h 30 min after a flagged sign-in from Lagos, NG, from another IP (41.58.1.2; the command came from 20.1.2.3)"),
    ("", 1 * H, "1 h before a flagged sign-in from Lagos, NG, sign-in IP not recorded (the command came from "
                "20.1.2.3)"),
])
def test_why_line_states_the_time_order_and_the_ip_relation(sign_in_ip: str, offset: int, expected: str) -> None:
    alert = alert_from([replace(ueba(T0 + offset), source_ip=sign_in_ip)])
    assert why_line(alert) == f"alice@contoso.com ran a Run Command on vm-1 in rg-1 {expected}."


def test_sign_ins_come_before_first_steps_and_details_hide_behind_a_toggle() -> None:
    card = content(build_alert_card(rich_alert(), options=OPTIONS))
    texts = [json.dumps(item) for item in card["body"]]
    order = [next(i for i, t in enumerate(texts) if needle in t)
             for needle in ("Flagged sign-ins", "First steps", "does not record the script", "Action.ToggleVisibility")]
    assert order == sorted(order)
    details = card["body"][-1]
    assert details["id"] == "details"
    assert details["isVisible"] is False
    hidden = json.dumps(details)
    for needed in (SUB, "Correlation id", "c-1", "Ended", "first sign-in from this country", "blast radius: High",
                   "no Sentinel incident", "python -m detector allowlist add"):
        assert needed in hidden, needed
    assert "Sentinel incident" not in json.dumps(card["body"][:-1])


def test_priority_uses_documented_signals_and_colours_the_header() -> None:
    plain = alert_from([ueba(T0, users={})])
    rich = rich_alert()
    assert assess(plain).level == "P3"
    top = assess(rich, priority_resource_groups=["RG-1"])
    assert (top.level, top.word) == ("P1", "Urgent")
    assert top.score == 7
    assert any("same" in r or "IP" in r for r in top.reasons)
    assert any("Owner" in r for r in top.reasons)
    assert any("rg-1" in r for r in top.reasons)
    assert assess(alert_from([ueba(T0)])).level == "P2"  # blast radius High alone
    for alert, level in ((plain, "P3"), (rich, "P1")):
        card = content(build_alert_card(alert, options=OPTIONS if level == "P1" else DeliveryOptions()))
        assert card["body"][0]["style"] == PRIORITY_STYLE[level]
        header = json.dumps(card["body"][0], ensure_ascii=False)
        assert f"{level} · " in header
        assert "rule severity High" in header


def _luminance(hex_colour: str) -> float:
    digits = hex_colour.lstrip("#")
    digits = digits[-6:]  # #AARRGGBB: the renderer's alpha is opaque ("ff") for the colours used here
    channels = [int(digits[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@pytest.mark.parametrize("theme", THEMES)
def test_header_colours_meet_4_5_to_1_in_the_teams_host_configs(theme: str) -> None:
    styles = host_config(theme)["containerStyles"]
    for level, style in PRIORITY_STYLE.items():
        text = styles[style]["foregroundColors"]["default"]["default"]
        assert text.lower().startswith("#ff") or len(text) == 7, (theme, style, text)
        assert contrast(text, styles[style]["backgroundColor"]) >= 4.5, (theme, level, style)
    # What the old header used (Attention-coloured text on the attention style) fails: the check can fail.
    assert contrast(styles["attention"]["foregroundColors"]["attention"]["default"],
                    styles["attention"]["backgroundColor"]) < 4.5


# --- buttons and links ----------------------------------------------------------------------------

def test_at_most_three_primary_buttons_that_work() -> None:
    alert = rich_alert()
    card = content(build_alert_card(alert, options=OPTIONS))
    titles = [a["title"] for a in card["actions"]]
    assert titles == ["Investigate", "Open VM", "Request exception"]
    links = alert_links(alert, OPTIONS)
    assert links.vm == f"https://portal.azure.com/#@{TENANT}/resource{alert.scope}/overview"
    assert links.user_entra.endswith(f"/userId/{OID}")
    assert f"aad={OID}" in links.user_defender
    assert f"tid={TENANT}" in links.user_defender
    more = json.dumps(card["body"][-1])
    assert "User in Entra ID" in more
    assert "User in Defender" in more
    bare = content(build_alert_card(alert))
    assert [a["title"] for a in bare["actions"]] == ["Open VM", "User in Entra"]  # nothing configured: no dead link
    assert bare["actions"][0]["url"] == f"https://portal.azure.com/#resource{alert.scope}/overview"


def test_investigate_opens_a_query_over_a_range_that_contains_the_event() -> None:
    alert = rich_alert()
    url = alert_links(alert, OPTIONS).investigate
    prefix = (f"https://portal.azure.com/#@{TENANT}/blade/Microsoft_Azure_Monitoring_Logs/LogsBlade/resourceId/"
              f"{WORKSPACE.replace('/', '%2F')}/source/LogsBlade.AnalyticsShareLinkToQuery/q/")
    assert url.startswith(prefix)
    encoded, timespan = url[len(prefix):].split("/timespan/")
    query = gzip.decompress(base64.b64decode(unquote(encoded))).decode()
    assert query == investigate_query(alert)
    assert 'CorrelationId == "c-1"' in query
    assert 'tolower("alice@contoso.com")' in query
    start, end = unquote(timespan).split("/")
    low, high = investigate_range(alert)
    assert start <= "2026-11-19T06:00:00Z" <= end  # the Run Command
    assert start <= "2026-11-19T04:00:00Z"  # its sign-in, 2 h before
    assert high - low < 72 * H
    [diagnostics] = analyse([query])
    assert diagnostics == []


def test_user_links_only_for_a_well_formed_object_id() -> None:
    forged = alert_from([ueba(T0, users={"AccountObjectID": "x/../../evil"})])
    links = alert_links(forged, OPTIONS)
    assert links.user_entra == links.user_defender == ""


def test_request_exception_fills_the_template_with_the_narrow_entry() -> None:
    alert = rich_alert()
    url = alert_links(alert, OPTIONS).request_exception
    query = parse_qs(urlsplit(url).query)
    entry = json.loads(query["entry"][0])
    assert entry == proposed_entry(alert)
    assert query["alert"] == [alert.key]
    assert alert_links(alert, DeliveryOptions()).request_exception == ""


# --- the proposed exception and the engineers' command ---------------------------------------------

def test_proposed_entry_is_narrow_and_expires_within_30_days() -> None:
    alert = rich_alert()
    entry = proposed_entry(alert)
    assert {(c["field"], c["op"]) for c in entry["conditions"]} == {
        ("caller", "equals"), ("vm_name", "equals"), ("ueba_source_location", "equals")}
    assert entry["expires_at"] == "2026-12-20T06:00:00Z"  # detected at AT + 30 days
    entry["reason"] = "admin's approved maintenance"
    allowlist = Allowlist.load([entry], now=AT)
    kept, suppressed = apply(allowlist, [alert])
    assert kept == []
    assert len(suppressed) == 1
    # The same stolen account on the same VM, signing in from somewhere else, still alerts.
    attacker = alert_from([ueba(T0, location="Minsk, BY")])
    kept, _ = apply(allowlist, [attacker])
    assert kept == [attacker]
    two_places = alert_from([ueba(T0, location="Minsk, BY"), ueba(T0 - H, location="Oslo, NO")])
    assert {c["field"]: c["value"] for c in proposed_entry(two_places)["conditions"]}["caller_ip"] == "20.1.2.0/24"


def test_allowlist_command_is_clean_and_round_trips() -> None:
    alert = rich_alert()
    command = allowlist_command(alert, table_endpoint="https://acct.table.core.windows.net/")
    assert all(unicodedata.category(ch) not in ("Cf", "Co", "Cn") for ch in command)
    argv = shlex.split(command)
    assert argv[:7] == ["python", "-m", "detector", "allowlist", "add", "--table-endpoint",
                        "https://acct.table.core.windows.net/"]
    assert argv[argv.index("caller") + 2] == alert.caller
    assert "--table-endpoint" not in allowlist_command(alert)
    card = json.dumps(content(build_alert_card(alert, options=OPTIONS)), ensure_ascii=False)
    assert json.dumps(allowlist_command(alert), ensure_ascii=False)[1:-1] in card  # shown exactly, not "cleaned"


def test_hostile_values_get_no_command_but_a_pointer_to_the_payload() -> None:
    card = json.dumps(content(build_alert_card(hostile_alert(), options=OPTIONS)))
    assert "allowlist add" not in card
    assert "proposedException" in card
    argv = shlex.split(allowlist_command(hostile_alert()))
    assert argv[argv.index("caller") + 2] == hostile_alert().caller  # quoted exactly: no shell injection


def _bash(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_cards_command_works_when_pasted_into_a_shell(tmp_path: Path) -> None:
    alert = rich_alert()
    assert alert.context is not None  # detected now, so the proposed expiry is in the future whenever this runs
    alert = replace(alert, context=replace(alert.context, detected_at=wall_clock()))
    card = content(build_alert_card(alert, options=OPTIONS))
    shown = next(run["text"] for item in card["body"][-1]["items"] if item["type"] == "RichTextBlock"
                 for run in item["inlines"] if run["text"].startswith("python -m detector allowlist add"))
    base = {"PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", "HOME": str(tmp_path),
            "PYTHONPATH": str(ROOT)}
    with azurite_tables() as connection:
        env = {**base, "DETECTOR_TABLE_CONNECTION_STRING": connection}
        verbatim = _bash(shown, env, tmp_path)
        assert verbatim.returncode == 3, verbatim.stderr
        assert "placeholder" in verbatim.stderr
        edited = shown.replace("'<why this is known-good>'", "'approved admin maintenance, CHG-1234'")
        nowhere = _bash(edited, base, tmp_path)
        assert nowhere.returncode == 2, nowhere.stderr
        assert "say where" in nowhere.stderr
        assert "nothing was written" in nowhere.stderr
        assert not (tmp_path / ".detector-state").exists()
        saved = _bash(edited, env, tmp_path)
        assert saved.returncode == 0, saved.stderr
        assert "saved allowlist entry rc-c1" in saved.stdout
        store = TableStore.from_connection_string(connection)
        [raw] = store.list_allowlist()
        assert raw["reason"] == "approved admin maintenance, CHG-1234"
        kept, suppressed = apply(Allowlist.load([raw], now=wall_clock()), [alert])
        assert kept == []
        assert suppressed[0].entry_ids == ("rc-c1",)


def test_allowlist_add_refuses_placeholders_and_implicit_local_state(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("DETECTOR_TABLE_ENDPOINT", "DETECTOR_TABLE_CONNECTION_STRING", "DETECTOR_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    args = ["allowlist", "add", "--id", "x", "--when", "caller", "equals", "a@b.c", "--when", "vm_name", "equals", "v"]
    assert main([*args, "--reason", "<why this is known-good>", "--state", "s"]) == 3
    assert main([*args, "--reason", "  <TODO>  ", "--state", "s"]) == 3
    assert main([*args, "--reason", "known maintenance"]) == 2
    assert list(tmp_path.iterdir()) == []
    assert main([*args, "--reason", "known maintenance", "--state", "s"]) == 0
    assert (tmp_path / "s").is_dir()


# --- notification -------------------------------------------------------------------------------

def test_on_call_mention_is_opt_in_and_well_formed() -> None:
    card = content(build_alert_card(rich_alert(), options=OPTIONS))
    [entity] = card["msteams"]["entities"]
    assert entity == {"type": "mention", "text": "<at>On-call SecOps</at>",
                      "mentioned": {"id": "oncall@contoso.com", "name": "On-call SecOps"}}
    blocks = [b["text"] for b in card["body"] if b.get("type") == "TextBlock"]
    assert any(entity["text"] in text for text in blocks)  # Teams needs the <at> text in the card
    assert "entities" not in content(build_alert_card(rich_alert()))["msteams"]


def test_update_cards_say_so() -> None:
    card = content(build_alert_card(rich_alert(), event="update", options=OPTIONS))
    assert "Update: new flagged sign-ins" in json.dumps(card["body"][0])
    assert _first_text(card) == why_line(rich_alert())


# --- triage context -----------------------------------------------------------------------------

def test_context_lists_other_sign_ins_other_run_commands_and_the_delay() -> None:
    alert = rich_alert()
    assert alert.context is not None
    assert [s.location for s in alert.context.other_sign_ins] == ["Paris, FR"]
    assert [r.vm_name for r in alert.context.other_run_commands] == ["vm-2"]
    assert alert.context.caller_role == "Owner"
    card = json.dumps(content(build_alert_card(alert, options=OPTIONS)), ensure_ascii=False)
    assert "Other flagged sign-ins of this user in the period: 1" in card
    assert "Other Run Commands by this caller in the window: 1" in card
    assert "Detected " in card
    assert "2026-11-20 06:00:00 UTC" in card
    assert "1 d after the command" in card
    lonely = json.dumps(content(build_alert_card(alert_from([ueba(T0)]))))
    assert "No other flagged sign-ins" in lonely
    assert "No other Run Command" in lonely


def test_context_does_not_change_the_rules_rows() -> None:
    logins = [replace(ueba(T0), source_ip="1.1.1.1", investigation_priority=3)]
    plain = correlate([*run_command(T0), activity(T0, correlation_id="c-9")], [ueba(T0)], Window.ending_at(AT))
    rich = correlate([*run_command(T0), activity(T0, correlation_id="c-9")], logins, Window.ending_at(AT))
    assert [r.to_dict() for r in rich.rows] == [r.to_dict() for r in plain.rows]


# --- digest -------------------------------------------------------------------------------------

def test_cards_show_as_much_as_fits() -> None:
    from detector.deliver.http import encode_json
    from detector.deliver.teams import TARGET_BYTES, _digest_card, digest_message, teams_message
    many = sample_alerts() * 20
    payload, body = digest_message(many, options=OPTIONS)
    shown = sum(len(g["items"]) - 1 for g in content(payload)["body"][1:] if g.get("separator"))
    assert len(body) <= TARGET_BYTES
    assert f"+{len(many) - shown} more alerts" in body.decode()
    assert len(encode_json(teams_message(_digest_card(many, shown + 1, OPTIONS, "alert")))) > TARGET_BYTES
    assert shown >= 15  # each line carries its own Investigate link (~1 KB)


def test_digest_groups_by_user_marks_utc_and_links_each_line() -> None:
    alerts = sample_alerts()
    card = content(build_digest_card(alerts, options=OPTIONS))
    assert "times in UTC" in json.dumps(card["body"][0])
    groups = [g for g in card["body"][1:] if g.get("separator")]
    callers = [g["items"][0]["inlines"][0]["text"] for g in groups]
    assert len(callers) == len({c.lower() for c in callers}) == len({a.caller.lower() for a in alerts})
    lines = [line for g in groups for line in g["items"][1:]]
    assert len(lines) == len(alerts)
    for line in lines:
        assert " UTC · " in line["items"][0]["inlines"][0]["text"]
        assert line["items"][0]["inlines"][-1]["text"] == "Investigate →"
        assert "LogsBlade" in line["selectAction"]["url"]


# --- safety ----------------------------------------------------------------------------------------

def _walk(node: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(node, dict):
        kind = node.get("type", "")
        for key, value in node.items():
            if isinstance(value, str) and key in ("text", "title", "value", "url", "fallbackText"):
                out.append((f"{kind}.{key}", value))
            else:
                out += _walk(value)
    elif isinstance(node, list):
        for item in node:
            out += _walk(item)
    return out


@pytest.mark.parametrize("name", ["hostile", "hostile digest"])
def test_log_text_cannot_inject_markdown_links_images_or_mentions(name: str) -> None:
    card = content(all_messages()[name])
    for where, text in _walk(card):
        if where.startswith("TextBlock"):  # markdown is processed here: only our own text may appear
            assert "evil" not in text, where
        assert "<at>" not in text.lower() or text.startswith("<at>On-call"), where
        assert "://evil" not in text, where
        assert "www.evil" not in text or where.endswith(".url"), where
        assert "\u202e" not in text, where
        if where.endswith(".url"):  # only our own hosts; log values travel percent-encoded in the query
            assert urlsplit(text).hostname in ("portal.azure.com", "forms.example.com"), where
    assert not [a for a in card.get("actions", []) if a["title"] == "Open VM"], "a malformed VM id is no link"


@pytest.mark.parametrize("hidden", ["\u2060", "\u061c", "\u180e", "\u200d", "\ufeff", "\u3164", "\U000e0041",
                                    "\u2028", "\U0001d173", "\u034f"])
def test_every_invisible_character_goes_before_the_link_breaker(hidden: str) -> None:
    text = clean(f"http:{hidden}//evil.example <{hidden}at>x</at> w{hidden}ww.evil.example")
    assert hidden not in text
    assert "://" not in text.replace(":\u200b//", "")
    assert "<at>" not in text
    assert "www." not in text
    assert all(unicodedata.category(ch) != "Cf" for ch in text.replace("\u200b", ""))


# --- real rendering ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], list[dict[str, Any]]]:
    messages = all_messages()
    cards = [content(m) for m in messages.values()]
    out = {}
    for theme in THEMES:
        for size, width in WIDTHS.items():
            out[(theme, size)] = render(cards, theme=theme, width=width, workdir=tmp_path_factory.mktemp(theme),
                                        screenshot=f"cards-{theme}-{size}")
    return out


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("size", list(WIDTHS))
def test_cards_render_readably_in_teams_host_configs(rendered: dict[tuple[str, str], list[dict[str, Any]]],
                                                     theme: str, size: str) -> None:
    messages = all_messages()
    for (name, message), report in zip(messages.items(), rendered[(theme, size)], strict=True):
        card = content(message)
        digest = "digest" in name
        for state in ("collapsed", "expanded"):
            seen = report[state]
            assert [b for b in seen["buttons"] if not b["fully_visible"]] == [], (name, state)
            assert seen["lowContrast"] == [], (name, state)
            assert seen["minContrast"] >= 4.5, (name, state)
            assert seen["overflow"] == [], (name, state)
        primary = [a["title"] for a in card.get("actions", [])]
        assert 1 <= len(primary) <= 3 or digest, name
        assert [b["text"] for b in report["collapsed"]["buttons"]][len(report["collapsed"]["buttons"]) - len(primary):] \
            == primary, name
        if not digest:
            assert report["collapsed"]["firstText"] == _first_text(card).strip(), name
            assert report["toggles"] == 1, name
    for state in ("", "-expanded"):
        shot = ROOT / "out" / f"cards-{theme}-{size}{state}.png"
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 20_000


def test_the_rendering_checks_can_fail(tmp_path: Path) -> None:
    bad = {"type": "AdaptiveCard", "version": "1.4", "body": [
        {"type": "TextBlock", "text": "low contrast", "color": "Good"},
        {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": "x" * 200, "fontType": "Monospace"}]}],
        "actions": [{"type": "Action.OpenUrl", "title": f"A rather long button title number {i}",
                     "url": "https://example.com"} for i in range(4)]}
    [report] = render([bad], theme="light", width=360, workdir=tmp_path)
    seen = report["collapsed"]
    assert [b for b in seen["buttons"] if not b["fully_visible"]]
    assert seen["lowContrast"]
    assert seen["minContrast"] < 4.5
    assert seen["overflow"]
    assert seen["firstText"] == "low contrast"


def test_preview_page_shows_hostile_text_as_text_and_every_card(tmp_path: Path) -> None:
    from detector.deliver.preview import render_page
    from tests.render import chromium_flags

    caller = "x<!--<script>@contoso.com"
    alert = alert_from([ueba(T0, upn=caller)], caller=caller)
    messages = [("hostile", build_alert_card(alert)), ("sample", build_alert_card(sample_alerts()[0]))]
    page = tmp_path / "cards.html"
    page.write_text(render_page(messages, title="t"), encoding="utf-8")
    dom = subprocess.run([*chromium_flags(tmp_path / "profile"), "--virtual-time-budget=5000", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert 'data-rendered="2"' in dom.stdout, dom.stderr[-2000:]
    assert dom.stdout.count("ac-adaptiveCard") >= 2
    assert "x&lt;!--&lt;script&gt;@contoso.com" in dom.stdout  # rendered as text


def test_preview_command_renders_in_headless_chromium(tmp_path: Path) -> None:
    from tests.render import chromium_flags

    page = tmp_path / "cards.html"
    assert main(["card", "--html", str(page)]) == 0
    dom = subprocess.run([*chromium_flags(tmp_path / "profile"), "--virtual-time-budget=5000", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert 'data-rendered="7"' in dom.stdout, dom.stderr[-2000:]
    assert dom.stdout.count("ac-adaptiveCard") >= 7
    assert "alice.admin@contoso.com" in dom.stdout
