"""Golden tests of the embedded sample: it raises exactly the alerts it was built to hold."""

from __future__ import annotations

import json
from pathlib import Path

from detector.pipeline import detect
from detector.sample.generate import SAMPLE_DIR, build
from detector.sources.files import FileSource
from detector.timestamps import format_datetime, parse_datetime
from detector.window import Window

FIXTURES = Path(__file__).parent / "fixtures"
MANIFEST = json.loads((SAMPLE_DIR / "expected.json").read_text(encoding="utf-8"))


def sample_result():  # type: ignore[no-untyped-def]
    return detect(FileSource(SAMPLE_DIR), Window.ending_at(parse_datetime(MANIFEST["at"])))


def test_alerts_are_exactly_the_built_scenarios() -> None:
    result = sample_result()
    got = {(a.correlation_id, a.caller, a.vm_name, tuple(format_datetime(r.ueba_time) for r in a.rows))
           for a in result.alerts}
    expected = {(e["correlation_id"], e["caller"], e["vm"], tuple(e["ueba_times"])) for e in MANIFEST["alerts"]}
    assert got == expected
    assert result.report.malformed_count == 0


def test_false_positive_scenarios_alert_until_allowlisted() -> None:
    fps = {e["false_positive"] for e in MANIFEST["alerts"] if e["false_positive"]}
    assert fps == {"maintenance script", "admin task via the Azure portal", "automated backup job",
                   "patching via Azure Automation", "user-initiated configuration change"}


def test_sample_holds_every_required_case() -> None:
    names = {s["scenario"] for s in MANIFEST["scenarios"]}
    for needed in ("failed run command", "rejected run command", "run command on a VMSS instance",
                   "UEBA from another event source", "UEBA flag 'False' or JSON true",
                   "run command exactly 1h before the sign-in", "run command 1s more than 1h before the sign-in",
                   "run command exactly 6h after the sign-in", "run command 6h and 1s after the sign-in",
                   "several suspicious sign-ins, two in window", "caller case differs from the UPN"):
        assert needed in names


def test_rows_match_the_golden_file() -> None:
    golden = json.loads((FIXTURES / "sample_rows.json").read_text(encoding="utf-8"))
    assert [r.to_dict() for r in sample_result().correlation.rows] == golden


def test_generator_is_deterministic_and_matches_the_committed_files(tmp_path: Path) -> None:
    from detector.sample.generate import write
    write(build(), tmp_path)
    for name in ("AzureActivity.csv", "BehaviorAnalytics.json", "expected.json"):
        assert (tmp_path / name).read_bytes() == (SAMPLE_DIR / name).read_bytes(), name


def test_sample_looks_like_real_exports() -> None:
    text = (SAMPLE_DIR / "AzureActivity.csv").read_text(encoding="utf-8")
    header = text.splitlines()[0]
    assert header.startswith("$table,")
    assert "TimeGenerated [UTC]" in header
    assert '""scope"": ""/subscriptions/' in text  # pretty-printed JSON in a quoted cell
    assert "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION" in text
    assert "Microsoft.Compute/virtualMachines/runCommand/action" in text
    assert ",Success," in text
    assert ",Succeeded," in text
