"""Security checks in the test command: bandit on the code, pip-audit on the deployment requirements."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_bandit_finds_nothing_unexplained() -> None:
    done = subprocess.run([str(BIN / "bandit"), "-q", "-r", "detector", "function_app.py", "-f", "json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    report = json.loads(done.stdout)
    totals = report["metrics"]["_totals"]
    assert totals["loc"] > 2000  # it really scanned the code
    findings = [(r["issue_severity"], r["test_id"], r["filename"], r["line_number"]) for r in report["results"]]
    assert findings == []  # not even LOW: asserts are not used for checks, randomness is marked
    # Every "nosec" says which test it silences and why.
    for path in [*ROOT.joinpath("detector").rglob("*.py"), ROOT / "function_app.py"]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if re.search(r"#.*\bnosec\b", line):
                assert re.search(r"nosec B\d{3} - .{10,}", line), f"{path}: {line.strip()}"


def test_pip_audit_finds_no_known_vulnerability() -> None:
    done = subprocess.run([str(BIN / "pip-audit"), "-r", "requirements.txt", "-f", "json", "--progress-spinner",
                           "off"], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.stdout, done.stderr[-2000:]
    report = json.loads(done.stdout)
    vulnerable = {d["name"]: [v["id"] for v in d.get("vulns", [])] for d in report["dependencies"] if d.get("vulns")}
    assert vulnerable == {}, f"known vulnerabilities: {vulnerable}"
    audited = [d for d in report["dependencies"] if not d.get("skip_reason")]
    skipped = [d["name"] for d in report["dependencies"] if d.get("skip_reason")]
    # Some package indexes (this workplace's mirror among them) serve versions that PyPI's vulnerability
    # service does not know; pip-audit then cannot audit them. Say so in the output instead of hiding it.
    print(f"\npip-audit: {len(audited)} dependencies audited, {len(skipped)} not auditable here: {skipped}")
    assert len(report["dependencies"]) >= 5
