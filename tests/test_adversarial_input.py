"""Adversarial review of issues 12, 13 and 15: inputs that broke a README promise, one test per defect."""

from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError

from detector.allowlist import Allowlist
from detector.cli import EXIT_FAILED, EXIT_USAGE, main
from detector.deliver.http import encode_json
from detector.deliver.links import DeliveryOptions, alert_links
from detector.deliver.teams import MAX_MESSAGE_BYTES, alert_message, allowlist_command, build_alert_card
from detector.errors import ConfigError
from detector.settings import Settings
from detector.sources.loganalytics import make_client
from detector.timestamps import parse_datetime
from detector.triage import PLACEHOLDER_REASON, proposed_entry
from tests.builders import AT
from tests.la_fake import LogAnalyticsFake, log_analytics_fake
from tests.test_package import ROOT, funcignore_keeps

WORKSPACE = "00000000-0000-0000-0000-0000000000aa"


def call(*argv: str, **kw: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, **kw)
    return code, out.getvalue(), err.getvalue()


def saved_entries(state: Path) -> list[dict[str, Any]]:
    path = state / "allowlist.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    entries: list[dict[str, Any]] = data["entries"] if isinstance(data, dict) else data
    return entries


@pytest.mark.parametrize("days", ["", ",", " , "])
def test_an_empty_window_days_is_a_usage_error_not_an_always_on_entry(tmp_path: Path, days: str) -> None:
    # `--window-days "$DAYS"` with DAYS unset used to save the entry without its window: it suppressed
    # around the clock instead of in the maintenance window.
    code, out, err = call("allowlist", "add", "--state", str(tmp_path), "--id", "maint", "--reason", "patching",
                          "--when", "caller", "equals", "a@contoso.com", "--when", "vm_name", "equals", "vm1",
                          "--window-days", days, "--window-start", "22:00", "--window-end", "04:00",
                          "--window-tz", "Europe/Berlin")
    assert code == EXIT_USAGE, out
    assert err.count("\n") == 1
    assert "--window-days" in err
    assert saved_entries(tmp_path) == []


@pytest.mark.parametrize("expires", ["", "  "])
def test_a_blank_expiry_is_a_usage_error_not_a_permanent_entry(tmp_path: Path, expires: str) -> None:
    code, out, err = call("allowlist", "add", "--state", str(tmp_path), "--id", "tmp", "--reason", "migration",
                          "--when", "caller", "equals", "a@contoso.com", "--expires", expires)
    assert code == EXIT_USAGE, out
    assert err.count("\n") == 1
    assert "--expires" in err
    assert saved_entries(tmp_path) == []


@pytest.mark.parametrize("text", ["2026-11-20T06:00:00+99:99", "2026-11-20T06:00:00+24:00",
                                  "2026-11-20T06:00:00-05:60", "2026-11-20T06:00:00+9999"])
def test_an_impossible_utc_offset_is_not_a_time(text: str) -> None:
    # +99:99 used to shift the time by 100 h 39 min, silently: a misread date.
    with pytest.raises(ValueError, match="UTC offset out of range"):
        parse_datetime(text)
    assert parse_datetime("2026-11-20T06:00:00+14:00") == parse_datetime("2026-11-19T16:00:00Z")
    assert parse_datetime("2026-11-20T06:00:00-0930") == parse_datetime("2026-11-20T15:30:00Z")


@pytest.mark.parametrize("url", ["https://\u2603.net/workflows/x?sig=SECRETSIG",
                                 "https://\uff41.example.com/workflows/x?sig=SECRETSIG"])
def test_a_webhook_host_that_requests_cannot_send_to_is_refused_at_start_up(url: str) -> None:
    # Python's IDNA 2003 codec accepted these hosts; requests (IDNA 2008) refuses them at every send, so
    # the destination failed in every run instead of at start-up.
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"DETECTOR_TEAMS_WEBHOOK_URLS": url})
    assert "SECRETSIG" not in str(caught.value)
    assert "DETECTOR_TEAMS_WEBHOOK_URLS" in str(caught.value)
    Settings.from_env({"DETECTOR_TEAMS_WEBHOOK_URLS": "https://fa\u00df.example.de/workflows/x?sig=S"})


class RefusingCredential:
    """What DefaultAzureCredential does without az login or a managed identity: it raises."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")


def test_no_credentials_reads_as_an_authentication_failure_not_http_none() -> None:
    fake = LogAnalyticsFake(activity=[], ueba=[])
    with log_analytics_fake(fake) as (endpoint, ca):
        client = make_client(RefusingCredential(), endpoint=endpoint, connection_verify=ca)
        code, _, err = call("run", "--workspace", WORKSPACE, "--at", "2026-11-20T06:00:00Z", logs_client=client)
    assert code == EXIT_FAILED
    assert err.count("\n") == 1, err
    assert "authentication to Log Analytics failed" in err
    assert "HTTP None" not in err
    assert fake.requests == []


@pytest.mark.parametrize("ranges", ["2000::/5", "2800::/5", "2000::/5,2800::/5", "2000::/3", "2400::/6"])
def test_ipv6_ranges_covering_much_of_the_real_address_space_are_refused(ranges: str) -> None:
    # Real callers' IPv6 addresses are global unicast (2000::/3); the corpus drew them over all 2^128, so
    # 2000::/5 (APNIC, ARIN and 2001::/16) matched almost nothing in it and was accepted.
    loaded = Allowlist.load([{"id": "v6", "reason": "r", "conditions": [
        {"field": "caller_ip", "op": "cidr", "value": ranges}]}], now=AT)
    assert loaded.active == []
    [problem] = loaded.problems
    assert "matches (nearly) everything" in problem.problem


@pytest.mark.parametrize("ranges", ["2001:db8::/32", "2a01:111::/32", "2603:1000::/24,2a01:4180::/48"])
def test_an_organisation_sized_ipv6_range_stays_allowed(ranges: str) -> None:
    loaded = Allowlist.load([{"id": "v6", "reason": "r", "conditions": [
        {"field": "caller_ip", "op": "cidr", "value": ranges}]}], now=AT)
    assert loaded.problems == []


@pytest.mark.parametrize("caller", ["-ops@contoso.com", "alice@contoso.com"])
def test_the_cards_allowlist_command_works_when_pasted_or_is_not_offered(tmp_path: Path, caller: str) -> None:
    # A value starting with "-" is read by argparse as an option: the pasted command failed with
    # "argument --when: expected 3 arguments".
    from tests.builders import ueba
    from tests.test_cards import T0, alert_from
    alert = alert_from([ueba(T0 - 10_000_000, upn=caller)], caller=caller)
    card_text = json.dumps(build_alert_card(alert, options=DeliveryOptions()), ensure_ascii=False)
    command = allowlist_command(alert)
    offered = "python -m detector allowlist add" in card_text
    assert offered == (caller == "alice@contoso.com")
    if offered:
        pasted = command.replace(PLACEHOLDER_REASON, "reviewed: known admin").replace(
            "python -m detector", f"{shlex.quote(sys.executable)} -m detector", 1)
        pasted = re.sub(r"--expires \S+", "--expires 2999-01-01T00:00:00Z", pasted)  # the fixed sample time ages
        done = subprocess.run(["bash", "-c", f"{pasted} --state {shlex.quote(str(tmp_path))}"], capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert [e["id"] for e in saved_entries(tmp_path)] == [proposed_entry(alert)["id"]]
    else:
        assert "proposedException" in card_text


def test_a_card_whose_links_carry_long_log_values_stays_under_the_teams_limit() -> None:
    # The Request exception URL carries the proposed entry percent-encoded (9 bytes per CJK character),
    # outside the part of the card that is trimmed to fit: a 2,000-character location made a 33 KB
    # message that Teams refuses (413) at every retry.
    from tests.builders import ueba
    from tests.test_cards import OPTIONS, T0, alert_from
    long_text = "東京都千代田区" * 300
    alert = alert_from([ueba(T0 - 10_000_000, location=long_text, action_type=long_text)])
    message, body = alert_message(alert, options=OPTIONS)
    assert len(body) <= MAX_MESSAGE_BYTES
    assert body == encode_json(message)
    links = alert_links(alert, OPTIONS)
    assert links.request_exception == ""  # too long to be a working link: left out, not sent broken
    assert links.vm.startswith("https://")
    assert links.investigate.startswith("https://")


def test_log_text_cannot_drive_the_analysts_terminal(tmp_path: Path) -> None:
    # The table printed log values raw: an ESC sequence in a caller cleared the screen, set the window
    # title (OSC; some terminals also write the clipboard with OSC 52), and U+202E reversed the text.
    run_command = "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION"
    caller = "alice\x1b[2J\x1b]52;c;Y3VybA==\x07\u202e@contoso.com"
    scope = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm\x1b[31m-1"
    activity = [{"TimeGenerated": t, "OperationNameValue": run_command, "Authorization": json.dumps({"scope": scope}),
                 "CorrelationId": "c-1", "Caller": caller, "CallerIpAddress": "20.1.2.3", "ActivityStatusValue": s}
                for t, s in (("2026-11-19T06:00:00Z", "Started"), ("2026-11-19T06:00:30Z", "Succeeded"))]
    ueba = {"TimeGenerated": "2026-11-19T05:30:00Z", "EventSource": "Azure AD", "ActionType": "Sign-in",
            "UserPrincipalName": caller, "SourceIPLocation": "Lagos\x1b[5m, NG",
            "ActivityInsights": {"ActionUncommonlyPerformedByUser": "True"}, "UsersInsights": {}}
    (tmp_path / "AzureActivity.jsonl").write_text("".join(json.dumps(r) + "\n" for r in activity), encoding="utf-8")
    (tmp_path / "BehaviorAnalytics.jsonl").write_text(json.dumps(ueba) + "\n", encoding="utf-8")
    allowlist = tmp_path / "allowlist.json"
    allowlist.write_text(json.dumps([{"id": "e1", "reason": "r", "conditions": [
        {"field": "caller", "op": "equals", "value": caller}, {"field": "vm_name", "op": "startswith", "value": "vm"}]}]),
        encoding="utf-8")
    for argv in (["run"], ["run", "--allowlist", str(allowlist)], ["allowlist", "check", "--file", str(allowlist)]):
        code, out, err = call(*argv, "--data", str(tmp_path), "--at", "2026-11-20T06:00:00Z")
        assert code == 0, err
        assert "alice" in out
        for shown in (out, err):
            assert not [ch for ch in shown if ch in "\x1b\x07\u202e"], argv
        assert "\\x1b" in out


@pytest.mark.parametrize("path", [".detector-state/allowlist.json", ".detector-state/alerts/c-1.json",
                                  ".detector-state/runs.json", "out/cards.html", "local.settings.json"])
def test_what_the_readmes_commands_leave_in_the_working_copy_is_never_published_or_committed(path: str) -> None:
    # `python -m detector allowlist add --state .detector-state ...` (README) and every state-less
    # `allowlist list/check` leave alert records (callers, IPs) and the allowlist in .detector-state/,
    # which `func azure functionapp publish` uploaded and `git add -A` committed.
    patterns = [line.strip() for line in (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    assert not funcignore_keeps(path, patterns)
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, check=False)
    assert ignored.returncode == 0, f"{path} is not in .gitignore"


def _export(folder: Path, *, run_at: str, sign_in_at: str) -> Path:
    folder.mkdir()
    scope = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1"
    rows = [{"TimeGenerated": run_at, "OperationNameValue": "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION",
             "Authorization": json.dumps({"scope": scope}), "CorrelationId": "c-1", "Caller": "alice@contoso.com",
             "CallerIpAddress": "20.1.2.3", "ActivityStatusValue": "Succeeded"}]
    ueba = {"TimeGenerated": sign_in_at, "EventSource": "Azure AD", "ActionType": "Sign-in",
            "UserPrincipalName": "alice@contoso.com", "SourceIPLocation": "Lagos, NG",
            "ActivityInsights": {"ActionUncommonlyPerformedByUser": "True"}, "UsersInsights": {}}
    (folder / "AzureActivity.jsonl").write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    (folder / "BehaviorAnalytics.jsonl").write_text(json.dumps(ueba) + "\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize(("run_at", "sign_in_at", "at"), [
    ("9999-12-31T06:00:00Z", "9999-12-31T05:30:00Z", "9999-12-31T23:00:00Z"),
    ("0001-01-01T00:30:00Z", "0001-01-01T00:10:00Z", "0001-01-02T12:00:00Z")])
def test_alerts_at_the_edges_of_kustos_time_range_still_make_cards(tmp_path: Path, run_at: str, sign_in_at: str,
                                                                   at: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The proposed exception (+30 days) and the Investigate range (an hour either side) ran past
    # 9999-12-31 or before 0001-01-01: `card` stopped with "internal error OverflowError".
    monkeypatch.setenv("DETECTOR_WORKSPACE_RESOURCE_ID", "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/soc/providers/"
                       "Microsoft.OperationalInsights/workspaces/sentinel")  # so the Investigate link is built
    data = _export(tmp_path / "data", run_at=run_at, sign_in_at=sign_in_at)
    page = tmp_path / "cards.html"
    code, out, err = call("card", "--data", str(data), "--at", at, "--period-hours", "36", "--html", str(page))
    assert code == 0, err
    assert "wrote 1 card(s)" in out
    assert "LogsBlade" in page.read_text(encoding="utf-8")


def test_an_allowlist_file_with_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    # {"enabled": false, "enabled": true}: a reviewer reading the first key sees a disabled entry, the
    # parser kept the last and the entry suppressed alerts. Which copy counts is ambiguous: refuse it.
    path = tmp_path / "allowlist.json"
    path.write_text('[{"id": "a", "reason": "r", "conditions": [{"field": "caller", "op": "equals", '
                    '"value": "a@contoso.com"}], "enabled": false, "enabled": true}]', encoding="utf-8")
    code, out, err = call("allowlist", "check", "--file", str(path))
    assert code == 3, out
    assert err.count("\n") == 1
    assert "'enabled'" in err
    assert str(path) in err


def test_an_export_entirely_outside_the_window_is_not_a_clean_empty_run(tmp_path: Path) -> None:
    # Without --at, a replay ends the period now: last week's export read 2 rows, found "no alerts" and
    # exited 0 without a word.
    data = _export(tmp_path / "data", run_at="2026-11-19T06:00:00Z", sign_in_at="2026-11-19T05:30:00Z")
    code, out, err = call("run", "--data", str(data), "--at", "2026-12-24T06:00:00Z")
    assert code == 0
    assert "no alerts" in out
    assert "warning: none of the AzureActivity rows the rules select falls in the window" in err
    assert "--at" in err
    code, out, err = call("run", "--data", str(data), "--at", "2026-11-20T06:00:00Z")
    assert code == 0
    assert "none of the" not in err


def test_one_nul_byte_in_a_utf8_export_costs_a_row_not_the_file(tmp_path: Path) -> None:
    # Any NUL in the first 4 KB made the whole file "UTF-16 or UTF-32" (exit 3): one logged value
    # holding a NUL (a user agent, say) stopped every replay of that export.
    data = _export(tmp_path / "data", run_at="2026-11-19T06:00:00Z", sign_in_at="2026-11-19T05:30:00Z")
    with (data / "AzureActivity.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"TimeGenerated": "2026-11-19T07:00:00Z", "HTTPRequest": "agent\x00", "Caller": "x"}\n')
    code, out, err = call("run", "--data", str(data), "--at", "2026-11-20T06:00:00Z", "--check-all-rows")
    assert code == 0, err
    assert "UTF-16" not in err
    assert "line 2" in err
    assert "alice@contoso.com" in out
    utf16 = tmp_path / "utf16"
    utf16.mkdir()
    for name in ("AzureActivity.jsonl", "BehaviorAnalytics.jsonl"):  # UTF-16 without a BOM is still refused
        (utf16 / name).write_bytes((data / name).read_text(encoding="utf-8").encode("utf-16-le"))
    code, _, err = call("run", "--data", str(utf16), "--at", "2026-11-20T06:00:00Z")
    assert code == 3
    assert "UTF-16 or UTF-32" in err


@pytest.mark.parametrize("endpoint", ["http://acct.table.core.windows.net", "https://acct .table.core.windows.net",
                                      "https://acct.table.core.windows.net:99999", "https://u:p@acct.example.net"])
def test_a_table_endpoint_is_validated_at_start_up_like_a_webhook(endpoint: str) -> None:
    # Only the scheme prefix was checked: http:// to a remote host (the managed identity's token in
    # clear), a space, port 99999 or a user name passed and failed at the first store call.
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"DETECTOR_TABLE_ENDPOINT": endpoint})
    assert "DETECTOR_TABLE_ENDPOINT" in str(caught.value)
    Settings.from_env({"DETECTOR_TABLE_ENDPOINT": "http://127.0.0.1:10002/devstoreaccount1"})  # Azurite
    Settings.from_env({"DETECTOR_TABLE_ENDPOINT": "https://acct.table.core.windows.net/"})
