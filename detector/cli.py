"""``python -m detector``: run the rule on exports or a workspace, from a laptop or CI.

Exit codes: 0 success; 2 wrong usage; 3 bad input (missing file or column, unreadable data, and
with ``--strict`` any malformed row); 4 the run failed (a source, store or delivery error).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from . import kql
from . import rules as registry
from .allowlist import FIELDS, OPERATORS, Allowlist, AllowlistEntry, InvalidEntry, budget_refusal
from .deliver.factory import build_destinations, configured_ids, positional_ids
from .errors import DetectorError, InputError, StateNotFoundError, UsageError
from .pipeline import RunPolicy, RunResult, detect, plan_window, run_once, wall_clock
from .redact import RedactingFilter
from .rule import RULE, Rule, selection_of
from .sample.generate import SAMPLE_DIR
from .settings import Settings
from .sources import Source
from .sources.factory import open_source
from .sources.files import FileSource
from .window import DEFAULT_PERIOD_HOURS, Window

if TYPE_CHECKING:
    from .sources.loganalytics import LogAnalyticsSource
from .store import EntryStats, StateStore
from .store.factory import open_store
from .timestamps import (
    DATE_ORDERS,
    MIN_TICKS,
    TICKS_PER_DAY,
    TICKS_PER_HOUR,
    Ticks,
    format_datetime,
    parse_datetime,
    parse_whole_number,
)
from .triage import PLACEHOLDER_REASON

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_FAILED = 4


MAX_PERIOD_HOURS = 24 * 366
"""The longest query period the CLI takes (a year of exports); the rule's is 48 hours."""


def _time_arg(text: str) -> Ticks:
    try:
        return parse_datetime(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text[:60]!r} ({exc}; e.g. 2026-11-20T06:00:00Z)") from None


def _hours_arg(text: str) -> int:
    try:
        hours = parse_whole_number(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of hours: {text[:20]!r}") from None
    if not 1 <= hours <= MAX_PERIOD_HOURS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_PERIOD_HOURS} hours, got {hours}")
    return hours


def _positive_int_arg(text: str) -> int:
    try:
        value = parse_whole_number(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text[:20]!r}") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1000000, got {value}")
    return value


def _conflicts(args: argparse.Namespace) -> str | None:
    """Options that cannot go together (one would be silently ignored): the usage error, or None."""
    def given(name: str) -> bool:
        return getattr(args, name, None) not in (None, False)
    pairs = [("data", "workspace", "--data and --workspace pick two different sources"),
             ("allowlist", "no_allowlist", "--allowlist and --no-allowlist contradict each other"),
             ("state", "table_endpoint", "--state and --table-endpoint pick two different state backends"),
             ("file", "state", "--file and --state pick two different allowlists"),
             ("file", "table_endpoint", "--file and --table-endpoint pick two different allowlists"),
             ("workspace", "date_order", "--date-order is for CSV exports (--data), not --workspace"),
             ("workspace", "check_all_rows", "--check-all-rows is for JSON Lines exports (--data), not --workspace")]
    for first, second, why in pairs:
        if given(first) and given(second):
            return why
    window = [n for n in ("window_start", "window_end", "window_tz") if given(n)]
    if window and not given("window_days"):
        return "--window-start/--window-end/--window-tz need --window-days"
    at, hours = getattr(args, "at", None), getattr(args, "period_hours", None)
    if at is not None and hours is not None and at - hours * TICKS_PER_HOUR < MIN_TICKS:
        return f"--at minus --period-hours ({hours} h) falls before 0001-01-01"
    return None


def _sample_at() -> Ticks:
    manifest = json.loads((SAMPLE_DIR / "expected.json").read_text(encoding="utf-8"))
    return parse_datetime(manifest["at"])


SAMPLE_ALLOWLIST = SAMPLE_DIR.parent / "allowlist.json"


def _rules(args: argparse.Namespace) -> tuple[Rule, ...]:
    """``--rule`` (repeatable, comma lists, ``seed``, ``all``); without it DETECTOR_RULES; by default the seed."""
    names = getattr(args, "rule", None) or [os.environ.get("DETECTOR_RULES", "")]
    return registry.select(names)


class _ProgressBar:
    """The replay's progress on a terminal (tqdm, imported here only: the Function App never shows one):
    bytes read as stored, their rate, rows read, and how many files."""

    def __init__(self, stream: TextIO, *, total: int, files: int) -> None:
        from tqdm import tqdm
        self._bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=stream, leave=False,
                         desc=f"reading {files} file{'s' if files != 1 else ''}", dynamic_ncols=True)
        self._bar.set_postfix_str("0 rows")
        self._rows = 0
        self._total = total

    def advance(self, *, nbytes: int, rows: int) -> None:
        self._rows += rows
        self._bar.set_postfix_str(f"{self._rows:,} rows", refresh=False)
        self._bar.update(nbytes)
        if self._bar.n >= self._total:
            self._bar.refresh()  # the final figures, whatever the refresh interval skipped
            self._bar.close()

    def close(self) -> None:
        """Erase the bar (a replay that stopped early): a line written after it must start its own line."""
        self._bar.close()


def _window(args: argparse.Namespace, err: TextIO) -> tuple[FileSource, Ticks]:
    data: Path | None = args.data
    if data is None:
        data = SAMPLE_DIR
        at = args.at if args.at is not None else _sample_at()
    else:
        at = args.at if args.at is not None else wall_clock()
    full_parse = bool(getattr(args, "check_all_rows", False) or getattr(args, "strict", False))
    source = open_source(selection=selection_of(_rules(args)), directory=data, prefilter=not full_parse,
                         date_order=getattr(args, "date_order", None))
    assert isinstance(source, FileSource)  # nosec B101 - open_source's contract for a folder
    if err.isatty() and not getattr(args, "quiet", False):  # never in logs, pipes or --json captures
        source.progress = args.progress_bar = _ProgressBar(
            err, total=source.total_bytes(), files=sum(len(paths) for paths in source.files.values()))
    return source, at


def _read_allowlist_file(path: Path) -> list[dict[str, Any]]:
    try:
        data = kql.loads(path.read_text(encoding="utf-8"), unique_keys=True)
    except OSError as exc:
        raise InputError(f"cannot read allowlist: {exc.strerror}", path=str(path)) from None
    except ValueError as exc:
        raise InputError(f"allowlist is not JSON: {exc}", path=str(path)) from None
    entries = data.get("entries") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise InputError('expected {"entries": [...]} or a list of entries', path=str(path))
    return [e if isinstance(e, dict) else {"id": f"entry #{i + 1}", "invalid": e} for i, e in enumerate(entries)]


def _file_allowlist(args: argparse.Namespace, at: Ticks) -> Allowlist | None:
    """``--allowlist FILE``; for the embedded sample, its example allowlist; none with ``--no-allowlist``."""
    if args.no_allowlist:
        return None
    sample = args.data is None and not getattr(args, "workspace", None)
    path = args.allowlist or (SAMPLE_ALLOWLIST if sample else None)
    return Allowlist.load(_read_allowlist_file(path), now=at) if path is not None else None


def _stateful(args: argparse.Namespace, settings: Settings) -> bool:
    return bool(getattr(args, "state", None) or getattr(args, "table_endpoint", None) or settings.table_endpoint
                or settings.table_connection_string or settings.state_dir)


def _store(args: argparse.Namespace, settings: Settings, *, create: bool) -> StateStore:
    """``create``: only ``run`` and ``allowlist add`` make a state folder or tables; a command that reads
    state pointed at none is exit 3 naming where it looked (a mistyped --state never makes an empty state)."""
    return open_store(settings, state_dir=getattr(args, "state", None),
                      table_endpoint=getattr(args, "table_endpoint", None), create=create)


def _shown(text: object) -> str:
    """Log text as a terminal may show it: control and format characters (an ESC sequence that would
    drive the terminal, a bidi override that reverses the text) and other non-printables escaped."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))


def _print_table(result: RunResult, out: TextIO) -> None:
    several = len(result.rules) > 1
    headers = ("Start (UTC)", *(("Rule",) if several else ()), "Caller", "Caller IP", "VM", "Subscription",
               "UEBA matches")
    lines = []
    for alert in result.alerts:
        matches = "; ".join(
            f"{format_datetime(r.ueba_time)[:16]} {r.ueba_action_type} from {r.ueba_source_location}"
            for r in alert.rows)
        rule_column = (alert.rule_id,) if several else ()
        lines.append(tuple(_shown(v) for v in (format_datetime(alert.start)[:19], *rule_column, alert.caller,
                                                alert.caller_ip, alert.vm_name, alert.subscription, matches)))
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(headers[:-1])]

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
    for rule in result.rules:
        origin = "extended rule, not Sentinel's" if rule.extended else "Sentinel rule"
        out.write(f"{rule.name} [{rule.severity}; {origin}{'; ' + rule.id if several else ''}]\n")
    out.write(f"window {format_datetime(result.window.start)} .. {format_datetime(result.window.end)}"
              f" from {result.source}\n\n")
    if lines:
        out.write(fmt(headers) + "\n")
        out.write(fmt(tuple("-" * len(h) for h in headers)) + "\n")
        for line in lines:
            out.write(fmt(line) + "\n")
    else:
        out.write("no alerts\n")
    for s in result.suppressed:
        out.write(f"suppressed: {format_datetime(s.alert.start)[:19]} {_shown(s.alert.caller)} on "
                  f"{_shown(s.alert.vm_name)} by allowlist entry {', '.join(s.entry_ids)}\n")
    summary = result.summary()
    out.write(
        f"\nrows read: {summary['rows_read']['AzureActivity']} AzureActivity, "
        f"{summary['rows_read']['BehaviorAnalytics']} BehaviorAnalytics; malformed rows: {summary['malformed_rows']}; "
        f"duplicates skipped: {summary['duplicates_skipped']}; "
        f"run commands: {summary['run_commands']}; matches: {summary['matches']}; alerts: {summary['alerts']}; "
        f"suppressed: {summary['suppressed']}\n")
    if "delivered" in summary:
        out.write(f"new alerts: {summary['new_alerts']}; already known: {summary['already_known_alerts']}; "
                  f"delivered: {summary['delivered']}; undelivered: {summary['undelivered']}\n")


def _report_problems(result: RunResult, err: TextIO) -> None:
    for row in result.report.malformed:
        err.write(f"malformed row: {_shown(row)}\n")
    hidden = result.report.malformed_count - len(result.report.malformed)
    if hidden > 0:
        err.write(f"... and {hidden} more malformed row(s)\n")
    for problem in result.allowlist_problems:
        err.write(f"allowlist: {_shown(problem)}\n")
    for warning in result.warnings:
        err.write(f"warning: {_shown(warning)}\n")


def _logs_source(args: argparse.Namespace, settings: Settings) -> LogAnalyticsSource:
    from .sources.loganalytics import LogAnalyticsSource
    source = open_source(selection=selection_of(_rules(args)), workspace_id=args.workspace,
                         logs_client=args.logs_client, server_timeout=settings.query_timeout_seconds)
    assert isinstance(source, LogAnalyticsSource)  # nosec B101 - open_source's contract
    return source


MAX_FUTURE_AT_HOURS = 1


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    settings = Settings.from_env(os.environ)
    source: Source
    if args.workspace:
        source = _logs_source(args, settings)
        at = args.at if args.at is not None else wall_clock()
    else:
        source, at = _window(args, err)
    if _stateful(args, settings) and (args.allowlist or args.no_allowlist):
        raise UsageError("--allowlist/--no-allowlist are not used with a state backend (--state, --table-endpoint "
                         "or DETECTOR_* state settings), whose own allowlist applies; import entries with "
                         "'allowlist add' or disable them, or run without state")
    rules = _rules(args)
    policy = replace(RunPolicy.from_settings(settings, period_hours=args.period_hours), rules=rules)
    if _stateful(args, settings):
        if at > wall_clock() + MAX_FUTURE_AT_HOURS * TICKS_PER_HOUR:
            # The state's watermark never moves back and the purge deletes by run time: a run "in the
            # future" would hide missed runs until that time and make the next real run re-send alerts.
            raise UsageError(f"--at {format_datetime(at)} is in the future; a run with state must not be later "
                             f"than now (+{MAX_FUTURE_AT_HOURS} h of clock skew). Replay future times without state")
        store = _store(args, settings, create=True)
        watermark = store.get_watermark()
        if watermark is not None and plan_window(at, watermark, policy).start < \
                watermark - policy.retention_days * TICKS_PER_DAY:
            # Later runs purged this period's records: its alerts would all look new and be sent again.
            raise UsageError(f"--at {format_datetime(at)} reaches back before the state lifetime: records of that "
                             f"period were purged ({policy.retention_days} days before the last run, "
                             f"{format_datetime(watermark)}), so its alerts would be sent again. Replay it without "
                             "state or with a fresh --state folder")
        result = run_once(source=source, store=store, destinations=build_destinations(settings), at=at, policy=policy,
                          positional_ids=positional_ids(settings))
    else:
        result = detect(source, Window.ending_at(at, hours=args.period_hours), allowlist=_file_allowlist(args, at),
                        rules=rules)
    _report_problems(result, err)
    if args.json:
        payload: dict[str, Any] = {"summary": result.summary(), "alerts": [a.to_dict() for a in result.alerts],
                                   "suppressed": [{"alert": s.alert.key, "entries": list(s.entry_ids)}
                                                  for s in result.suppressed],
                                   "malformed": [str(m) for m in result.report.malformed]}
        out.write(json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    else:
        _print_table(result, out)
    if args.strict and result.report.malformed_count:
        return EXIT_BAD_INPUT
    return EXIT_OK


def cmd_parity(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .parity import compare

    settings = Settings.from_env(os.environ)
    source = _logs_source(args, settings)
    window = Window.ending_at(args.at, hours=args.period_hours)
    out.write(f"window {format_datetime(window.start)} .. {format_datetime(window.end)}\n")
    total = 0
    for rule in _rules(args):
        report = compare(source, window, rule)
        out.write(f"rule {rule.id} ({'extended' if rule.extended else 'Sentinel'}): {rule.name}\n")
        counts = (f"parity: {report.workspace_rows} rows from the rule's KQL, {report.port_rows} from "
                  f"the Python port")
        if not report.differences:
            out.write(f"{counts}; no difference\n")
            continue
        out.write(counts + "\n")
        for label, rows in (("only in the workspace (Sentinel's engine)", report.only_workspace),
                            ("only in the Python port", report.only_port)):
            for row, count in sorted(rows.items()):
                out.write(f"{label}{f' x{count}' if count > 1 else ''}: {row}\n")
        out.write(f"parity: {report.differences} difference(s)\n")
        total += report.differences
    return EXIT_FAILED if total else EXIT_OK


def cmd_rows(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The rules' raw rows: for the seed alone exactly its 13 columns; with other rules, each row also names
    its rule (``RuleId``)."""
    source, at = _window(args, err)
    rules = _rules(args)
    result = detect(source, Window.ending_at(at, hours=args.period_hours), rules=rules)
    _report_problems(result, err)
    seed_only = rules == (RULE,)
    out.write(json.dumps([r.to_dict() if seed_only else {**r.to_dict(), "RuleId": r.rule_id}
                          for r in result.correlation.rows], indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    if args.strict and result.report.malformed_count:
        return EXIT_BAD_INPUT
    return EXIT_OK


def cmd_card(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .deliver.links import DeliveryOptions
    from .deliver.preview import render_page
    from .deliver.teams import build_alert_card, build_digest_card

    source, at = _window(args, err)
    rules = _rules(args)
    result = detect(source, Window.ending_at(at, hours=args.period_hours), allowlist=_file_allowlist(args, at),
                    rules=rules)
    _report_problems(result, err)
    options = DeliveryOptions.from_settings(Settings.from_env(os.environ))
    messages = [(f"{a.caller} on {a.vm_name} ({format_datetime(a.start)})", build_alert_card(a, options=options))
                for a in result.alerts]
    if len(result.alerts) > 1:
        messages.append((f"digest card (sent instead when a run has more than {args.digest_threshold} alerts)",
                         build_digest_card(result.alerts, options=options)))
    names = RULE.name if rules == (RULE,) else f"{len(rules)} rules"
    page = render_page(messages, title=f"{names}: {len(result.alerts)} alert card(s)")
    try:
        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write the preview: {exc.strerror}", path=str(args.html)) from None
    out.write(f"wrote {len(messages)} card(s) to {args.html}\n")
    return EXIT_OK


# --- allowlist ------------------------------------------------------------------------------------

def _entries_for(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, EntryStats], str]:
    if args.file is not None:
        return _read_allowlist_file(args.file), {}, str(args.file)
    store = _store(args, Settings.from_env(os.environ), create=False)
    return store.list_allowlist(), store.allowlist_stats(), store.describe()


def cmd_allowlist_add(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    reason = args.reason.strip()
    if reason == PLACEHOLDER_REASON or re.fullmatch(r"<[^<>]*>", reason):
        err.write(f"detector: allowlist entry {args.id!r} not saved: --reason is still a placeholder; "
                  "say why this activity is known-good\n")
        return EXIT_BAD_INPUT
    settings = Settings.from_env(os.environ)
    if not _stateful(args, settings):
        # Never fall back to a local folder here: "saved" would read as if production had changed.
        err.write(f"detector: allowlist entry {args.id!r} not saved: say where, with --table-endpoint URL "
                  "(the deployment's allowlist) or --state DIR (a local state folder); nothing was written\n")
        return EXIT_USAGE
    conditions = [{"field": f, "op": o, "value": v.split(",") if o == "in" else v} for f, o, v in args.when]
    raw: dict[str, Any] = {"id": args.id, "reason": args.reason, "conditions": conditions,
                           "created_by": args.created_by or os.environ.get("USER", "unknown"),
                           "created_at": format_datetime(wall_clock()), "enabled": not args.disabled,
                           "expires_at": args.expires}
    if args.window_days:
        raw["window"] = {"weekdays": args.window_days, "start": args.window_start, "end": args.window_end,
                         "timezone": args.window_tz}
    try:
        entry = AllowlistEntry.from_dict(raw)
    except InvalidEntry as exc:
        err.write(f"detector: allowlist entry {args.id!r} not saved: {exc}\n")
        return EXIT_BAD_INPUT
    if entry.is_expired(wall_clock()):
        err.write(f"detector: allowlist entry {args.id!r} not saved: it has already expired\n")
        return EXIT_BAD_INPUT
    store = _store(args, settings, create=True)
    # The load-time budget still applies to whatever reaches the table another way (or two adds at once).
    refusal = budget_refusal(store.list_allowlist(), entry, now=wall_clock())
    if refusal is not None:
        err.write(f"detector: allowlist entry {args.id!r} not saved: {_shown(refusal)}\n")
        return EXIT_BAD_INPUT
    store.put_allowlist(entry.to_dict())
    out.write(f"saved allowlist entry {entry.id} in {store.describe()}: suppresses alerts where "
              f"{_describe_conditions(entry)}\n")
    return EXIT_OK


def _describe_conditions(entry: AllowlistEntry) -> str:
    parts = [f"{c.field_name} {c.operator} {list(c.value) if isinstance(c.value, tuple) else repr(c.value)}"
             for c in entry.conditions]
    text = " and ".join(parts)
    if entry.window:
        w = entry.window.to_dict()
        text += f", during {','.join(w['weekdays'])} {w['start']}-{w['end']} {w['timezone']}"
    if entry.expires_at is not None:
        text += f", until {format_datetime(entry.expires_at)}"
    return text


def cmd_allowlist_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    entries, stats, where = _entries_for(args)
    now = wall_clock()
    loaded = Allowlist.load(entries, now=now)
    problems = {p.id: p.problem for p in loaded.problems}
    out.write(f"allowlist in {where}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}; "
              f"{loaded.budget.describe()}\n")
    for raw in entries:
        entry_id = str(raw.get("id", "?"))
        state = problems.get(entry_id, "active")
        hit = stats.get(entry_id, EntryStats())
        last = format_datetime(hit.last_hit) if hit.last_hit is not None else "never"
        out.write(f"- {_shown(entry_id)}: {_shown(state)}; hits {hit.hits}, last hit {last}\n"
                  f"  reason: {_shown(raw.get('reason', ''))}\n")
    return EXIT_OK


def cmd_allowlist_remove(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = _store(args, Settings.from_env(os.environ), create=False)
    if not store.delete_allowlist(args.id):
        err.write(f"detector: no allowlist entry {args.id!r} in {store.describe()}\n")
        return EXIT_BAD_INPUT
    out.write(f"removed allowlist entry {args.id}\n")
    return EXIT_OK


def cmd_allowlist_disable(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = _store(args, Settings.from_env(os.environ), create=False)
    for raw in store.list_allowlist():
        if raw.get("id") == args.id:
            raw["enabled"] = False
            store.put_allowlist(raw)
            out.write(f"disabled allowlist entry {args.id}: it suppresses nothing until enabled again\n")
            return EXIT_OK
    err.write(f"detector: no allowlist entry {args.id!r} in {store.describe()}\n")
    return EXIT_BAD_INPUT


def cmd_allowlist_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    entries, _, where = _entries_for(args)
    at = args.at if args.at is not None else (_sample_at() if args.data is None and args.file is not None
                                              and args.file == SAMPLE_ALLOWLIST else wall_clock())
    loaded = Allowlist.load(entries, now=at)
    out.write(f"allowlist in {where}: {len(loaded.active)} active, {len(loaded.problems)} not in force; "
              f"{loaded.budget.describe()}\n")
    for problem in loaded.problems:
        out.write(f"  NOT IN FORCE {_shown(problem)}\n")
    if args.data is not None or args.file == SAMPLE_ALLOWLIST:
        source, at = _window(args, err)
        result = detect(source, Window.ending_at(at, hours=args.period_hours), rules=_rules(args))
        for entry in loaded.active:
            hits = [a for a in result.alerts if entry.matches(a)]
            out.write(f"  {entry.id}: would suppress {len(hits)} alert(s)\n")
            for alert in hits:
                out.write(f"    {format_datetime(alert.start)[:19]} {_shown(alert.caller)} on "
                          f"{_shown(alert.vm_name)}\n")
    return EXIT_BAD_INPUT if any(p.kind in ("invalid", "over_budget") for p in loaded.problems) else EXIT_OK


# --- status ---------------------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .status import build_status, render

    settings = Settings.from_env(os.environ)
    store = _store(args, settings, create=False)
    report = build_status(store, now=args.at if args.at is not None else wall_clock(),
                          frequency_hours=settings.frequency_hours, grace_hours=settings.health_grace_hours,
                          retention_days=settings.state_retention_days, configured=configured_ids(settings))
    out.write(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n" if args.json else render(report))
    return report.exit_code


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors are one line (the documented promise for every error); ``--help`` still shows the usage.

    Subcommand parsers are made of the same class (argparse's default ``parser_class``).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="detector", description=f"{RULE.name} ({RULE.severity}), and opt-in "
                                     "extended rules (--rule).")
    sub = parser.add_subparsers(dest="command", required=True)
    rule_ids = ", ".join(rule.id for rule in registry.ALL_RULES)

    def rule_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--rule", action="append", metavar="ID", help="rule to run; repeat or give a comma list; "
                       f"'seed' or 'all' (default: DETECTOR_RULES, else the seed rule alone). Rules: {rule_ids}")

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", type=Path, help="folder (tree) with the exports of AzureActivity and "
                       "BehaviorAnalytics: .json, .jsonl, .csv, optionally .gz (see README, Data formats; default: "
                       "the embedded sample)")
        p.add_argument("--quiet", action="store_true", help="no progress bar (shown on stderr only when it is a "
                       "terminal)")
        p.add_argument("--at", type=_time_arg, help="run time, ISO 8601; the period ends here "
                       "(default: the sample's run time, or now with --data)")
        rule_option(p)
        p.add_argument("--period-hours", type=_hours_arg, default=DEFAULT_PERIOD_HOURS,
                       help=f"query period in hours, 1-{MAX_PERIOD_HOURS} (default: %(default)s, as the rule)")
        p.add_argument("--date-order", choices=DATE_ORDERS, help="day/month order of a portal CSV export's times "
                       "(default: found from the file; a file where no day is above 12 needs it)")
        p.add_argument("--strict", action="store_true", help="exit 3 when any row is malformed (implies "
                       "--check-all-rows)")
        p.add_argument("--check-all-rows", action="store_true", help="parse every JSON Lines row, reporting "
                       "malformed ones even where they could never match (default: rows that cannot match are "
                       "counted, not parsed)")

    def verbose_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--verbose", action="store_true", help="the detector's debug log on stderr; among it, what "
                       "each Azure credential answered when none gave a token")

    def store_options(p: argparse.ArgumentParser) -> None:
        verbose_option(p)
        p.add_argument("--state", help="local state folder (file backend)")
        p.add_argument("--table-endpoint", help="Table Storage endpoint (Azure credentials; no keys). "
                       "A connection string is read from DETECTOR_TABLE_CONNECTION_STRING only")

    run = sub.add_parser("run", help="apply the rule and the allowlist; with a state backend, record and deliver")
    data_options(run)
    store_options(run)
    run.add_argument("--workspace", help="Log Analytics workspace GUID to query instead of files (Azure credentials)")
    run.add_argument("--json", action="store_true", help="machine-readable output")
    run.add_argument("--allowlist", type=Path, help="allowlist JSON file (runs without a state backend; "
                     "default for the sample: its example allowlist)")
    run.add_argument("--no-allowlist", action="store_true", help="apply no allowlist")
    run.set_defaults(handler=cmd_run)

    rows = sub.add_parser("rows", help="print the rule's raw result rows as JSON")
    data_options(rows)
    rows.set_defaults(handler=cmd_rows)

    parity = sub.add_parser("parity", help="send each selected rule's KQL verbatim and compare its rows with the "
                            "Python port")
    parity.add_argument("--workspace", required=True, help="Log Analytics workspace GUID")
    parity.add_argument("--at", type=_time_arg, required=True, help="run time, ISO 8601")
    parity.add_argument("--period-hours", type=_hours_arg, default=DEFAULT_PERIOD_HOURS)
    rule_option(parity)
    verbose_option(parity)
    parity.set_defaults(handler=cmd_parity)

    card = sub.add_parser("card", help="render the run's Teams cards into a local HTML preview")
    data_options(card)
    card.add_argument("--html", type=Path, required=True, help="output HTML file")
    card.add_argument("--allowlist", type=Path, help="allowlist JSON file (default for the sample: its example)")
    card.add_argument("--no-allowlist", action="store_true")
    card.add_argument("--digest-threshold", type=_positive_int_arg, default=50)
    card.set_defaults(handler=cmd_card)

    status = sub.add_parser("status", help="the detector's health at a glance: last runs, watermark, alerts owed, "
                            "allowlist to review; exit 0 healthy, 1 degraded, 4 failing")
    store_options(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--at", type=_time_arg, help="judge as of this time, ISO 8601 (default: now)")
    status.set_defaults(handler=cmd_status)

    allow = sub.add_parser("allowlist", help="manage allowlist entries").add_subparsers(dest="action", required=True)
    add = allow.add_parser("add", help="add or replace an entry (validated before it is saved)")
    store_options(add)
    add.add_argument("--id", required=True)
    add.add_argument("--reason", required=True, help="why this activity is known-good (required)")
    add.add_argument("--when", nargs=3, action="append", required=True, metavar=("FIELD", "OP", "VALUE"),
                     help="a condition; repeat for more (all must hold). Fields: " + ", ".join(FIELDS)
                     + "; operators: " + ", ".join(OPERATORS) + " ('in' takes a comma-separated list)")
    add.add_argument("--expires", help="expiry, ISO 8601 UTC")
    add.add_argument("--window-days", help="maintenance window weekdays, e.g. Sat,Sun")
    add.add_argument("--window-start", help="HH:MM")
    add.add_argument("--window-end", help="HH:MM (before the start: crosses midnight)")
    add.add_argument("--window-tz", help="IANA time zone, e.g. Europe/Berlin")
    add.add_argument("--created-by")
    add.add_argument("--disabled", action="store_true")
    add.set_defaults(handler=cmd_allowlist_add)

    for name, handler, text in (("list", cmd_allowlist_list, "list entries with their state and hit counts"),
                                ("check", cmd_allowlist_check, "list invalid and expired entries; with --data, "
                                 "what each active entry would suppress")):
        p = allow.add_parser(name, help=text)
        store_options(p)
        p.add_argument("--file", type=Path, help="an allowlist JSON file instead of a state backend")
        if name == "check":
            data_options(p)
        p.set_defaults(handler=handler)
    for name, handler, text in (("remove", cmd_allowlist_remove, "delete an entry"),
                                ("disable", cmd_allowlist_disable, "keep an entry but stop it suppressing")):
        p = allow.add_parser(name, help=text)
        store_options(p)
        p.add_argument("id")
        p.set_defaults(handler=handler)
    return parser


@contextlib.contextmanager
def _debug_log_to(err: TextIO, *, enabled: bool) -> Iterator[None]:
    """``--verbose``: the detector's log, DEBUG and up, on ``err`` for this command (redacted like every log)."""
    if not enabled:
        yield
        return
    detector_logger = logging.getLogger("detector")
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    saved = detector_logger.level
    detector_logger.addHandler(handler)
    detector_logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        detector_logger.removeHandler(handler)
        detector_logger.setLevel(saved)


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         logs_client: Any = None) -> int:
    """``logs_client``: a LogsQueryClient to use instead of one with DefaultAzureCredential (tests)."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    args.logs_client = logs_client
    if args.command == "allowlist" and getattr(args, "window_days", None) is not None:
        args.window_days = [d.strip() for d in args.window_days.split(",") if d.strip()]
        if not args.window_days:  # e.g. --window-days "$DAYS" with DAYS unset: never drop the window silently
            err.write("detector: error: --window-days names no weekday (e.g. Sat,Sun)\n")
            return EXIT_USAGE
    if getattr(args, "expires", None) is not None and not args.expires.strip():
        # A blank expiry would save an entry that never expires.
        err.write("detector: error: --expires is empty; give an ISO 8601 UTC time or leave the option out\n")
        return EXIT_USAGE
    conflict = _conflicts(args)
    if conflict is not None:
        err.write(f"detector: error: {conflict}\n")
        return EXIT_USAGE
    try:
        try:
            with _debug_log_to(err, enabled=getattr(args, "verbose", False)):
                code: int = args.handler(args, out, err)
        finally:
            if getattr(args, "progress_bar", None) is not None:  # an error stopped the replay mid-way
                args.progress_bar.close()
        return code
    except UsageError as exc:
        err.write(f"detector: error: {exc}\n")
        return EXIT_USAGE
    except (InputError, StateNotFoundError) as exc:
        err.write(f"detector: bad input: {exc}\n")
        return EXIT_BAD_INPUT
    except DetectorError as exc:
        err.write(f"detector: run failed: {exc}\n")
        return EXIT_FAILED
    except Exception as exc:  # a bug: one line, never a traceback that could carry a secret (e.g. a URL)
        err.write(f"detector: run failed: internal error {type(exc).__name__} (a bug; please report the command "
                  f"that caused it)\n")
        return EXIT_FAILED
