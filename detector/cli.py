"""``python -m detector``: run the rule on exports or a workspace, from a laptop or CI.

Exit codes: 0 success; 2 wrong usage; 3 bad input (missing file or column, unreadable data, and
with ``--strict`` any malformed row); 4 the run failed (a source, store or delivery error).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from .correlate import Window
from .errors import DetectorError, InputError
from .pipeline import RunResult, detect
from .rule import RULE
from .sample.generate import SAMPLE_DIR
from .sources.files import FileSource
from .timestamps import Ticks, format_datetime, from_datetime, parse_datetime

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_FAILED = 4


def _time_arg(text: str) -> Ticks:
    try:
        return parse_datetime(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-20T06:00:00Z)") from None


def _sample_at() -> Ticks:
    manifest = json.loads((SAMPLE_DIR / "expected.json").read_text(encoding="utf-8"))
    return parse_datetime(manifest["at"])


def _resolve(args: argparse.Namespace) -> tuple[FileSource, Window]:
    data: Path | None = args.data
    if data is None:
        data = SAMPLE_DIR
        at = args.at if args.at is not None else _sample_at()
    else:
        at = args.at if args.at is not None else from_datetime(datetime.now(UTC))
    return FileSource(data), Window.ending_at(at, hours=args.period_hours)


def _print_table(result: RunResult, out: TextIO) -> None:
    headers = ("Start (UTC)", "Caller", "Caller IP", "VM", "Subscription", "UEBA matches")
    lines = []
    for alert in result.alerts:
        matches = "; ".join(
            f"{format_datetime(r.ueba_time)[:19]} {r.ueba_action_type} from {r.ueba_source_location}"
            for r in alert.rows)
        lines.append((format_datetime(alert.start)[:19], alert.caller, alert.caller_ip, alert.vm_name,
                      alert.subscription, matches))
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(headers[:-1])]
    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
    out.write(f"{RULE.name} [{RULE.severity}]\n")
    out.write(f"window {format_datetime(result.window.start)} .. {format_datetime(result.window.end)}"
              f" from {result.source}\n\n")
    if lines:
        out.write(fmt(headers) + "\n")
        out.write(fmt(tuple("-" * len(h) for h in headers)) + "\n")
        for line in lines:
            out.write(fmt(line) + "\n")
    else:
        out.write("no alerts\n")
    s = result.summary()
    out.write(
        f"\nrows read: {s['rows_read']['AzureActivity']} AzureActivity, {s['rows_read']['BehaviorAnalytics']} "
        f"BehaviorAnalytics; malformed rows: {s['malformed_rows']}; run commands: {s['run_commands']}; "
        f"matches: {s['matches']}; alerts: {s['alerts']}\n")


def _report_problems(result: RunResult, err: TextIO) -> None:
    for row in result.report.malformed:
        err.write(f"malformed row: {row}\n")
    hidden = result.report.malformed_count - len(result.report.malformed)
    if hidden > 0:
        err.write(f"... and {hidden} more malformed row(s)\n")
    for warning in result.warnings:
        err.write(f"warning: {warning}\n")


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    source, window = _resolve(args)
    result = detect(source, window)
    _report_problems(result, err)
    if args.json:
        payload: dict[str, Any] = {"summary": result.summary(), "alerts": [a.to_dict() for a in result.alerts],
                                   "malformed": [str(m) for m in result.report.malformed]}
        out.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    else:
        _print_table(result, out)
    if args.strict and result.report.malformed_count:
        return EXIT_BAD_INPUT
    return EXIT_OK


def cmd_rows(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    source, window = _resolve(args)
    result = detect(source, window)
    _report_problems(result, err)
    out.write(json.dumps([r.to_dict() for r in result.correlation.rows], indent=2, ensure_ascii=False) + "\n")
    if args.strict and result.report.malformed_count:
        return EXIT_BAD_INPUT
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detector", description=f"{RULE.name} ({RULE.severity}).")
    sub = parser.add_subparsers(dest="command", required=True)

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", type=Path, help="folder with AzureActivity.<json|jsonl|csv> and "
                       "BehaviorAnalytics.<json|jsonl|csv> (default: the embedded sample)")
        p.add_argument("--at", type=_time_arg, help="run time, ISO 8601; the period ends here "
                       "(default: the sample's run time, or now with --data)")
        p.add_argument("--period-hours", type=int, default=RULE.query_period_hours,
                       help="query period in hours (default: %(default)s, as the rule)")
        p.add_argument("--strict", action="store_true", help="exit 3 when any row is malformed")

    run = sub.add_parser("run", help="apply the rule and print the alerts")
    data_options(run)
    run.add_argument("--json", action="store_true", help="machine-readable output")
    run.set_defaults(handler=cmd_run)

    rows = sub.add_parser("rows", help="print the rule's raw result rows as JSON")
    data_options(rows)
    rows.set_defaults(handler=cmd_rows)
    return parser


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if getattr(args, "period_hours", 1) <= 0:
        err.write("detector: --period-hours must be positive\n")
        return EXIT_USAGE
    try:
        code: int = args.handler(args, out, err)
        return code
    except InputError as exc:
        err.write(f"detector: bad input: {exc}\n")
        return EXIT_BAD_INPUT
    except DetectorError as exc:
        err.write(f"detector: run failed: {exc}\n")
        return EXIT_FAILED
