"""Render Teams cards into one local HTML page with the official Adaptive Cards JavaScript renderer.

The page is self-contained (the renderer from npm ``adaptivecards`` is inlined) and opens offline, so
analysts can preview and tune cards on a laptop. The renderer comes from ``node_modules`` (``npm ci``)
or from the path in ``DETECTOR_ADAPTIVECARDS_JS``.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError

_RELATIVE = Path("node_modules") / "adaptivecards" / "dist" / "adaptivecards.min.js"


def find_renderer() -> Path:
    override = os.environ.get("DETECTOR_ADAPTIVECARDS_JS")
    if override:
        path = Path(override)
        if not path.is_file():
            raise ConfigError(f"no file at {path}", setting="DETECTOR_ADAPTIVECARDS_JS")
        return path
    for base in (Path.cwd(), *Path(__file__).resolve().parents):
        candidate = base / _RELATIVE
        if candidate.is_file():
            return candidate
    raise ConfigError("the Adaptive Cards renderer is not installed: run `npm ci` in the repository "
                      "(or point DETECTOR_ADAPTIVECARDS_JS at adaptivecards.min.js)")


def script_json(value: Any) -> str:
    """JSON inside <script>, inert whatever the log text: no ``<``, ``>`` or ``&`` reach the HTML parser.

    Escaping only ``</`` is not enough: ``<!--<script>`` in a value switches the parser into the
    "script data double escaped" state, where ``</script>`` no longer ends the element and the
    rest of the page is swallowed. JSON's ``\\u003c`` escapes keep the same value for JavaScript.
    """
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render_page(messages: Sequence[tuple[str, dict[str, Any]]], *, title: str, renderer: Path | None = None) -> str:
    """``messages``: (caption, Teams message payload). Returns the page's HTML."""
    script = (renderer or find_renderer()).read_text(encoding="utf-8")
    cards = [{"caption": caption, "card": payload["attachments"][0]["content"]} for caption, payload in messages]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: "Segoe UI", system-ui, sans-serif; background: #f5f5f5; margin: 24px; }}
h1 {{ font-size: 18px; }} h2 {{ font-size: 13px; color: #555; margin: 24px 0 6px; }}
.frame {{ max-width: 560px; background: #fff; border-radius: 6px; box-shadow: 0 1px 3px rgba(0,0,0,.2); }}
.errors {{ color: #a80000; font-size: 12px; }}
</style></head>
<body><h1>{html.escape(title)}</h1><div id="cards"></div>
<script>{script}</script>
<script>
const cards = {script_json(cards)};
const host = document.getElementById("cards");
cards.forEach(function (item, index) {{
  const caption = document.createElement("h2");
  caption.textContent = item.caption;
  host.appendChild(caption);
  const card = new AdaptiveCards.AdaptiveCard();
  const context = new AdaptiveCards.SerializationContext();
  card.parse(item.card, context);
  const frame = document.createElement("div");
  frame.className = "frame";
  frame.id = "card-" + index;
  frame.appendChild(card.render());
  host.appendChild(frame);
  if (context.eventCount > 0) {{
    const errors = document.createElement("div");
    errors.className = "errors";
    errors.textContent = context.eventCount + " parse problem(s)";
    host.appendChild(errors);
  }}
}});
document.body.setAttribute("data-rendered", String(cards.length));
</script></body></html>
"""
