"""Render Adaptive Cards in Debian's headless Chromium with the official renderer and Teams' host configs,
and measure what a person would see (tests/js/measure.js). Screenshots go to out/ (test artefacts).

Teams' published host configs (light, dark) live in ``shared/teams-hostconfig/`` beside the repository
(``<clone>/../shared``), as CI provides them.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from detector.deliver.preview import script_json

ROOT = Path(__file__).resolve().parents[1]
HOSTCONFIG_DIR = ROOT.parent / "shared" / "teams-hostconfig"
RENDERER = ROOT / "node_modules" / "adaptivecards" / "dist" / "adaptivecards.min.js"
MEASURE = ROOT / "tests" / "js" / "measure.js"
OUT = ROOT / "out"
THEMES = ("light", "dark")
WIDTHS = {"phone": 360, "desktop": 720}


def host_config(theme: str) -> dict[str, Any]:
    path = HOSTCONFIG_DIR / f"microsoft-teams-{theme}.json"
    if not path.is_file():
        raise RuntimeError(f"Teams host config missing: {path} (CI copies shared/ beside the clone)")
    config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return config


def page(cards: list[dict[str, Any]], *, theme: str, width: int) -> str:
    host = host_config(theme)
    page_bg = host["containerStyles"]["default"]["backgroundColor"]
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<style>body {{ margin: 0; padding: 8px; font-family: "Segoe UI", system-ui, sans-serif; }}
.frame {{ margin-bottom: 16px; outline: 1px solid #888; }}</style></head>
<body data-bg="{html.escape(page_bg)}"><div id="cards"></div><pre id="report" style="display:none"></pre>
<script>{RENDERER.read_text(encoding="utf-8")}</script>
<script>const CARDS = {script_json(cards)}; const HOST = {script_json(host)}; const WIDTH = {width};</script>
<script>{MEASURE.read_text(encoding="utf-8")}</script></body></html>"""


def chromium_flags(profile: Path) -> list[str]:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("Debian chromium is required (scripts/test installs it)")
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
            f"--user-data-dir={profile}"]


def render(cards: list[dict[str, Any]], *, theme: str, width: int, workdir: Path,
           screenshot: str | None = None) -> list[dict[str, Any]]:
    """Each card's measurements (collapsed and expanded); a screenshot under out/ when named."""
    target = workdir / f"cards-{theme}-{width}.html"
    target.write_text(page(cards, theme=theme, width=width), encoding="utf-8")
    flags = chromium_flags(workdir / "profile")
    done = subprocess.run([*flags, f"--window-size={width + 40},900", "--virtual-time-budget=10000", "--dump-dom",
                           target.as_uri()], capture_output=True, text=True, timeout=180, check=False)
    found = re.search(r'<pre id="report"[^>]*>(.*?)</pre>', done.stdout, re.DOTALL)
    if not found or not found.group(1):
        raise RuntimeError(f"the page did not report: {done.stderr[-2000:]}")
    report: list[dict[str, Any]] = json.loads(html.unescape(found.group(1)))
    if screenshot:
        OUT.mkdir(exist_ok=True)
        for state, suffix in (("", ""), ("-expanded", "#expanded")):
            shot = OUT / f"{screenshot}{state}.png"
            subprocess.run([*flags, f"--window-size={width + 16},{min(16000, 2200 * len(cards))}",
                            f"--screenshot={shot}", target.as_uri() + suffix], capture_output=True, timeout=180,
                           check=False)
    return report
