"""Hostile and unusual input (issue 12): each example that once hung, crashed, read nothing or misread a
date now gets a clear answer — a one-line error with the documented exit code, or a counted bad row."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from detector.allowlist import Allowlist, AllowlistEntry, InvalidEntry
from detector.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from detector.errors import ConfigError
from detector.model import ACTIVITY_COLUMNS
from detector.settings import Settings
from tests.builders import AT

AT_TEXT = "2026-11-20T06:00:00Z"
RUN_COMMAND = "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION"
SCOPE = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1"
AUTH = json.dumps({"scope": SCOPE})
UEBA_ROW = {"TimeGenerated": "2026-11-19T05:30:00Z", "EventSource": "Azure AD", "ActionType": "Sign-in",
            "UserPrincipalName": "alice@contoso.com", "SourceIPLocation": "Lagos, NG",
            "ActivityInsights": {"ActionUncommonlyPerformedByUser": "True"}, "UsersInsights": {"BlastRadius": "High"}}


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def activity_rows(times: tuple[str, str] = ("2026-11-19T06:00:00Z", "2026-11-19T06:00:30Z")) -> list[dict[str, str]]:
    return [{"TimeGenerated": t, "OperationNameValue": RUN_COMMAND, "Authorization": AUTH, "CorrelationId": "c-1",
             "Caller": "alice@contoso.com", "CallerIpAddress": "20.1.2.3", "ActivityStatusValue": s}
            for t, s in zip(times, ("Started", "Succeeded"), strict=True)]


def jsonl(rows: list[dict[str, object]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def write_exports(directory: Path, activity: str | bytes, ueba: str = jsonl([UEBA_ROW]),
                  activity_name: str = "AzureActivity.jsonl") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / activity_name
    if isinstance(activity, bytes):
        target.write_bytes(activity)
    else:
        target.write_text(activity, encoding="utf-8", newline="")
    (directory / "BehaviorAnalytics.jsonl").write_text(ueba, encoding="utf-8")
    return directory


def run_json(directory: Path, *extra: str) -> tuple[int, dict[str, object], str]:
    code, out, err = call("run", "--data", str(directory), "--at", AT_TEXT, "--json", *extra)
    assert "Traceback" not in err
    return code, (json.loads(out) if out else {}), err


# --- 1. ReDoS --------------------------------------------------------------------------------------

def test_redos_pattern_on_a_10000_character_name_cannot_hang() -> None:
    # With Python's backtracking re a 30-character name took 52 s and each two more characters ~3.4x
    # longer; a 10,000-character name would never finish. The subprocess's timeout turns a hang into a
    # failure (a guard against exponential time, not a speed claim).
    script = (
        "from dataclasses import replace\n"
        "from detector.allowlist import Allowlist\n"
        "from detector.breadth import corpus\n"
        "def alert(vm): return replace(corpus()[0], vm_name=vm)\n"
        "a = Allowlist.load([{'id': 'e', 'reason': 'r', 'conditions': [{'field': 'vm_name', 'op': 'regex',"
        " 'value': r'([a-z0-9-]+)*\\.prod'}]}], now=0)\n"
        "assert not a.problems, a.problems\n"
        "print(a.matching(alert(vm='a' * 10000 + '!')), a.matching(alert(vm='web-01.prod')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] ['e']"


@pytest.mark.parametrize(("pattern", "reason"), [(r"(a)\1", "invalid escape"), (r"vm-(?=1)", "perl operator"),
                                                 (r"x++", "bad repetition")])
def test_features_re2_lacks_are_refused_with_its_reason(pattern: str, reason: str) -> None:
    with pytest.raises(InvalidEntry, match=reason):
        AllowlistEntry.from_dict({"id": "e", "reason": "r",
                                  "conditions": [{"field": "vm_name", "op": "regex", "value": pattern}]})


# --- 2. breadth ------------------------------------------------------------------------------------

@pytest.mark.parametrize("condition", [("vm_name", "regex", "..+"), ("resource_id", "startswith", "/"),
                                       ("caller_ip", "cidr", "0.0.0.0/1,128.0.0.0/1"),
                                       ("ueba_action_type", "equals", "Sign-in"), ("vm_name", "startswith", "web")])
def test_the_issues_broad_entries_are_refused_and_reported(condition: tuple[str, str, str], tmp_path: Path) -> None:
    field, op, value = condition
    raw = {"id": "broad", "reason": "r", "conditions": [{"field": field, "op": op, "value": value}]}
    loaded = Allowlist.load([raw], now=AT)
    assert loaded.active == []
    assert "matches (nearly) everything" in loaded.problems[0].problem
    path = tmp_path / "allowlist.json"
    path.write_text(json.dumps({"entries": [raw]}), encoding="utf-8")
    code, out, _ = call("allowlist", "check", "--file", str(path))
    assert code == EXIT_BAD_INPUT
    assert "NOT IN FORCE broad: invalid, suppresses nothing: matches (nearly) everything" in out
    code, payload, err = run_json(Path(__file__).resolve().parent.parent / "detector" / "sample" / "workspace",
                                  "--allowlist", str(path))
    assert code == EXIT_OK
    assert "allowlist: broad: invalid, suppresses nothing: matches (nearly) everything" in err
    summary = payload["summary"]
    assert isinstance(summary, dict)
    assert summary["suppressed"] == 0


def test_a_broad_condition_next_to_a_narrow_caller_is_allowed() -> None:
    raw = {"id": "ok", "reason": "r", "conditions": [{"field": "caller", "op": "equals", "value": "alice@contoso.com"},
                                                     {"field": "resource_id", "op": "startswith", "value": "/"}]}
    assert [e.id for e in Allowlist.load([raw], now=AT).active] == ["ok"]


@pytest.mark.parametrize("zone", ["localtime", "Factory", "posixrules", "US/Pacific", "GB", "posix/Europe/Berlin"])
def test_maintenance_window_zones_must_be_canonical(zone: str) -> None:
    raw = {"id": "w", "reason": "r", "conditions": [{"field": "caller", "op": "equals", "value": "a@contoso.com"}],
           "window": {"weekdays": ["Sat"], "start": "10:00", "end": "12:00", "timezone": zone}}
    with pytest.raises(InvalidEntry, match="time zone"):
        AllowlistEntry.from_dict(raw)


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "Etc/GMT+5", "UTC"])
def test_canonical_zones_are_accepted(zone: str) -> None:
    raw = {"id": "w", "reason": "r", "conditions": [{"field": "caller", "op": "equals", "value": "a@contoso.com"}],
           "window": {"weekdays": ["Sat"], "start": "10:00", "end": "12:00", "timezone": zone}}
    window = AllowlistEntry.from_dict(raw).window
    assert window is not None
    assert window.timezone == zone


def test_an_unexpected_error_is_one_line_with_its_type_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> int:
        raise RuntimeError("https://hooks.example/x?sig=SECRET")
    monkeypatch.setattr("detector.cli.cmd_rows", broken)
    code, out, err = call("rows")
    assert (code, out) == (EXIT_FAILED, "")
    assert err == ("detector: run failed: internal error RuntimeError (a bug; please report the command that "
                   "caused it)\n")


def test_expiry_before_year_one_is_an_invalid_entry_and_the_run_goes_on(tmp_path: Path) -> None:
    bad = {"id": "old", "reason": "r", "expires_at": "0001-01-01T00:00:00+01:00",
           "conditions": [{"field": "caller", "op": "equals", "value": "alice@contoso.com"}]}
    path = tmp_path / "allowlist.json"
    path.write_text(json.dumps([bad]), encoding="utf-8")
    directory = write_exports(tmp_path / "data", jsonl(activity_rows()))  # type: ignore[arg-type]
    code, payload, err = run_json(directory, "--allowlist", str(path))
    assert code == EXIT_OK
    assert "allowlist: old: invalid, suppresses nothing: expires_at is not an ISO 8601 time" in err
    summary = payload["summary"]
    assert isinstance(summary, dict)
    assert summary["alerts"] == 1


# --- 3. options and settings -----------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["run", "--at", "0001-01-01T00:00:00Z"],
    ["run", "--period-hours", "100000000"],
    ["run", "--period-hours", "-1"],
    ["run", "--state", "x", "--allowlist", "f.json"],
    ["run", "--allowlist", "f.json", "--no-allowlist"],
    ["run", "--data", "d", "--workspace", "11111111-2222-3333-4444-555555555555"],
    ["run", "--workspace", "11111111-2222-3333-4444-555555555555", "--date-order", "dmy"],
    ["run", "--state", "x", "--table-endpoint", "https://a.table.core.windows.net"],
    ["run", "--date-order", "ymd"],
    ["allowlist", "check", "--file", "f.json", "--state", "x"],
    ["allowlist", "add", "--id", "x", "--reason", "r", "--when", "caller", "equals", "a@b.c", "--window-tz", "UTC"],
    ["card", "--html", "x.html", "--digest-threshold", "0"],
])
def test_bad_or_conflicting_options_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = call(*argv)
    captured = capsys.readouterr()
    assert code == EXIT_USAGE
    assert out == ""
    assert "Traceback" not in err + captured.err
    assert "error:" in err + captured.err


@pytest.mark.parametrize(("url", "reason"), [
    ("https://hooks.example:99999/x?sig=SECRET", "invalid port"),
    ("http://hooks.example/x?sig=SECRET", "in clear"),
    ("https://:443/x?sig=SECRET", "no valid host"),
    ("https://bad_host/x?sig=SECRET", "no valid host"),
    ("https://u:p@hooks.example/x?sig=SECRET", "user name"),
    ("https://hooks.example/x y?sig=SECRET", "spaces"),
])
def test_webhook_urls_are_validated_at_start_up(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        Settings.from_env({"DETECTOR_LOGICAPP_WEBHOOK_URLS": f"https://ok.example/a?sig=SECRET\n{url}"})
    assert "entry 2" in str(info.value)
    assert "SECRET" not in str(info.value)


def test_a_bad_webhook_port_stops_the_run_before_anything_is_sent(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETECTOR_TEAMS_WEBHOOK_URLS", "https://hooks.example:99999/x?sig=SECRET")
    code, out, err = call("run", "--state", str(tmp_path / "state"))
    assert (code, out) == (EXIT_FAILED, "")
    assert err == "detector: run failed: setting DETECTOR_TEAMS_WEBHOOK_URLS: entry 1 has an invalid port " \
                  "(must be 1-65535) or host\n"
    assert not (tmp_path / "state").exists()


def test_a_file_allowlist_is_never_silently_ignored_by_a_state_backend(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETECTOR_STATE_DIR", str(tmp_path / "state"))
    for flag in (["--allowlist", "f.json"], ["--no-allowlist"]):
        code, out, err = call("run", *flag)
        assert (code, out) == (EXIT_USAGE, "")
        assert err.startswith("detector: error: --allowlist/--no-allowlist are not used with a state backend")
    assert not (tmp_path / "state").exists()


def test_loopback_http_stays_allowed_for_local_tools() -> None:
    settings = Settings.from_env({"DETECTOR_TEAMS_WEBHOOK_URLS": "http://127.0.0.1:8080/x?sig=s"})
    assert len(settings.teams_urls) == 1


# --- 4. no silent empty runs -----------------------------------------------------------------------

@pytest.mark.parametrize(("encoding", "name"), [("utf-16", "UTF-16"), ("utf-16-le", "NUL bytes"),
                                                ("utf-32", "UTF-32"), ("utf-16-be", "NUL bytes")])
@pytest.mark.parametrize("ext", ["jsonl", "json", "csv"])
def test_utf16_and_utf32_exports_are_bad_input_with_a_fix(tmp_path: Path, encoding: str, name: str, ext: str) -> None:
    rows = activity_rows()
    text = {"jsonl": jsonl(rows),  # type: ignore[arg-type]
            "json": json.dumps(rows),
            "csv": ",".join(ACTIVITY_COLUMNS) + "\r\n" + "".join(
                ",".join(json.dumps(r[c]) for c in ACTIVITY_COLUMNS) + "\r\n" for r in rows)}[ext]
    directory = write_exports(tmp_path, text.encode(encoding), activity_name=f"AzureActivity.{ext}")
    code, _, err = run_json(directory)  # the default scan included
    assert code == EXIT_BAD_INPUT
    assert f"AzureActivity.{ext}: the file is" in err
    assert name in err
    assert "re-save it as UTF-8" in err


def test_a_file_whose_rows_are_all_malformed_is_bad_input(tmp_path: Path) -> None:
    rows = [r | {"TimeGenerated": "sometime"} for r in activity_rows()]
    directory = write_exports(tmp_path, jsonl(rows))  # type: ignore[arg-type]
    code, _, err = run_json(directory)
    assert code == EXIT_BAD_INPUT
    assert "AzureActivity.jsonl: none of its 2 row(s) could be read (first: line 1: TimeGenerated" in err


# --- 5. dates ----------------------------------------------------------------------------------------

def portal_csv(times: list[str]) -> str:
    header = ",".join(f"{c} [UTC]" if c == "TimeGenerated" else c for c in ACTIVITY_COLUMNS)
    lines = [header]
    for i, time in enumerate(times):
        lines.append(f'"{time}",{RUN_COMMAND},"{AUTH.replace(chr(34), chr(34) * 2)}",c-{i},alice@contoso.com,'
                     f"20.1.2.3,Succeeded")
    return "\r\n".join(lines) + "\r\n"


def start_times(directory: Path, *extra: str) -> tuple[int, list[str], str]:
    code, out, err = call("rows", "--data", str(directory), "--at", AT_TEXT, "--period-hours", "8784",
                          *extra)
    return code, sorted(r["StartTime"] for r in json.loads(out)) if out else [], err


@pytest.mark.parametrize(("locale", "times", "expected"), [
    ("en-US", ["4/28/2026, 2:32:14.029 PM", "11/8/2026, 6:36:04.536 AM"],
     ["2026-04-28T14:32:14.029Z", "2026-11-08T06:36:04.536Z"]),
    ("en-GB", ["28/04/2026, 14:32:14.029", "11/08/2026, 06:36:04.536"],
     ["2026-04-28T14:32:14.029Z", "2026-08-11T06:36:04.536Z"]),
    ("en-AU", ["11/08/2026, 6:36:04.536 am", "28/04/2026, 2:32:14.029 pm"],
     ["2026-04-28T14:32:14.029Z", "2026-08-11T06:36:04.536Z"]),
    ("de-DE", ["01.02.2026, 14:32:14.029", "11.08.2026, 06:36:04.536"],
     ["2026-02-01T14:32:14.029Z", "2026-08-11T06:36:04.536Z"]),
])
def test_portal_csv_locales_are_read_with_their_own_day_month_order(tmp_path: Path, locale: str, times: list[str],
                                                                    expected: list[str]) -> None:
    ueba = jsonl([UEBA_ROW | {"TimeGenerated": t} for t in expected])
    directory = write_exports(tmp_path, portal_csv(times), ueba, activity_name="AzureActivity.csv")
    code, starts, err = start_times(directory)
    assert code == EXIT_OK, err
    assert starts == expected, locale


def test_an_ambiguous_file_is_refused_until_the_order_is_given(tmp_path: Path) -> None:
    ueba = jsonl([UEBA_ROW | {"TimeGenerated": "2026-08-11T06:00:00Z"}])
    directory = write_exports(tmp_path, portal_csv(["11/08/2026, 6:36:04.536 am"]), ueba,
                              activity_name="AzureActivity.csv")
    code, _, err = start_times(directory)
    assert code == EXIT_BAD_INPUT
    assert "cannot tell whether TimeGenerated is month/day or day/month" in err
    assert "--date-order" in err
    code, starts, err = start_times(directory, "--date-order", "dmy")
    assert (code, starts) == (EXIT_OK, ["2026-08-11T06:36:04.536Z"]), err
    code, starts, _ = start_times(directory, "--date-order", "mdy")
    assert (code, starts) == (EXIT_OK, [])  # 8 November is after the run time: outside the period


def test_a_foreign_locale_export_read_as_us_would_be_all_malformed_now_reads(tmp_path: Path) -> None:
    # The issue's example: every row of a day-first export was malformed and the run exited 0.
    directory = write_exports(tmp_path, portal_csv(["28/04/2021, 14:32:14.029"] * 3), jsonl([UEBA_ROW]),
                              activity_name="AzureActivity.csv")
    code, _, err = start_times(directory)
    assert code == EXIT_OK
    assert "malformed" not in err


def test_duplicate_csv_columns_are_bad_input_naming_the_column(tmp_path: Path) -> None:
    text = portal_csv(["4/28/2026, 2:32:14.029 PM"]).replace("Caller,", "Caller,Caller,", 1)
    directory = write_exports(tmp_path, text, activity_name="AzureActivity.csv")
    code, _, err = run_json(directory)
    assert code == EXIT_BAD_INPUT
    assert "column 'Caller': the column appears more than once" in err


# --- 6. strict JSON and deep nesting -----------------------------------------------------------------

def _strict(text: str) -> object:
    def refuse(name: str) -> object:
        raise AssertionError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_nan_and_infinity_are_not_numbers_and_output_stays_standard_json(tmp_path: Path) -> None:
    nan_line = json.dumps(activity_rows()[0]).replace('"c-1"', "NaN")  # a line with a bare NaN value
    ueba = (json.dumps(UEBA_ROW | {"UsersInsights": '{"score": Infinity}'}) + "\n"
            + json.dumps(UEBA_ROW).replace('{"BlastRadius": "High"}', '{"x": -Infinity}') + "\n")
    directory = write_exports(tmp_path, jsonl(activity_rows()) + nan_line + "\n", ueba)  # type: ignore[arg-type]
    code, out, err = call("run", "--data", str(directory), "--at", AT_TEXT, "--json", "--check-all-rows")
    assert code == EXIT_OK
    payload = _strict(out)
    assert isinstance(payload, dict)
    assert payload["summary"]["malformed_rows"] == 2  # the bare NaN line and the -Infinity line
    assert "AzureActivity.jsonl, line 3: not JSON: NaN is not a JSON number" in err
    [alert] = payload["alerts"]
    # A dynamic cell holding text that is not standard JSON stays text, as Kusto's parse_json keeps it.
    assert alert["Rows"][0]["UEBAUsersInsights"] == '{"score": Infinity}'


@pytest.mark.parametrize("where", ["document", "line", "cell"])
def test_json_nested_100000_deep_is_a_clear_answer(tmp_path: Path, where: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    if where == "document":
        (tmp_path / "AzureActivity.json").write_text(deep, encoding="utf-8")
        (tmp_path / "BehaviorAnalytics.jsonl").write_text(jsonl([UEBA_ROW]), encoding="utf-8")
        code, _, err = run_json(tmp_path)
        assert code == EXIT_BAD_INPUT
        assert "AzureActivity.json: not a JSON document: JSON nested too deeply" in err
        return
    if where == "line":
        activity = jsonl(activity_rows()) + '{"Caller": "runcommand", "x": ' + deep + "}\n"  # type: ignore[arg-type]
        code, payload, err = run_json(write_exports(tmp_path, activity))
        assert code == EXIT_OK
        assert "AzureActivity.jsonl, line 3: not JSON: JSON nested too deeply" in err
    else:
        ueba = jsonl([UEBA_ROW | {"UsersInsights": deep}])
        code, payload, err = run_json(write_exports(tmp_path, jsonl(activity_rows()), ueba))  # type: ignore[arg-type]
        assert code == EXIT_OK
        [alert] = payload["alerts"]  # type: ignore[misc]
        assert alert["Rows"][0]["UEBAUsersInsights"] == deep  # kept as text, as parse_json does
    assert payload["summary"]["alerts"] == 1  # type: ignore[index]



@pytest.mark.parametrize("depth", [65, 500, 990])
def test_nesting_below_pythons_limit_never_breaks_printing(tmp_path: Path, depth: int) -> None:
    # Deep enough to parse but, embedded in the output, too deep for json.dumps: refused where it enters.
    deep = "[" * depth + "]" * depth
    ueba = (json.dumps(UEBA_ROW | {"UsersInsights": "HERE"}).replace('"HERE"', deep) + "\n"
            + json.dumps(UEBA_ROW | {"UsersInsights": deep}) + "\n")
    code, payload, err = run_json(write_exports(tmp_path, jsonl(activity_rows()), ueba))  # type: ignore[arg-type]
    assert code == EXIT_OK
    assert err.startswith("malformed row: ")
    assert "BehaviorAnalytics.jsonl, line 1: " in err
    [alert] = payload["alerts"]  # type: ignore[misc]
    assert [r["UEBAUsersInsights"] for r in alert["Rows"]] == [deep]  # the text cell stays text
