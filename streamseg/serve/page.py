"""The live view's page: every source's picture, the figures, and the controls the model takes (a text box for
prompts; click to track, right-click to stop)."""

from __future__ import annotations

import html
from urllib.parse import quote

from .control import Controls

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>streamseg</title>
<style>body{{margin:0;background:#111;color:#ddd;font:14px sans-serif}}img{{display:block;max-width:100vw;
max-height:calc(100vh - 2em);margin:auto}}#stats{{padding:.3em 1em}}</style></head>
<body>{images}{controls}<div id="stats">connecting...</div>
<script>
async function prompt(event) {{
  event.preventDefault();
  const r = await fetch("prompt{query}", {{method: "POST", headers: {{"Content-Type": "application/json"}},
                                         body: JSON.stringify({{prompt: document.getElementById("q").value}})}});
  document.getElementById("said").textContent = (await r.json()).message || "";
}}
async function poll() {{
  try {{
    const s = await (await fetch("stats{query}")).json();
    document.getElementById("stats").textContent = s.sources.map(x =>
      `${{x.source}}: ${{x.fps.toFixed(1)}} fps, ${{x.frames_written}} frames, ${{x.frames_dropped}} dropped, ` +
      `${{x.reconnects}} reconnects, latency p50 ${{x.latency_ms.p50.toFixed(0)}} ms`).join(" | ");
  }} catch (e) {{ document.getElementById("stats").textContent = "disconnected"; }}
  setTimeout(poll, 1000);
}}
poll();
</script></body></html>
"""


def page(keys: list[str], model: Controls, query: str, token: str) -> str:
    """The page showing the sources named ``keys``, with the controls ``model`` takes; ``query``: ``?token=...`` or
    empty."""
    controls = ""
    if model.prompts is not None:
        controls = ('<form onsubmit="prompt(event)" style="text-align:center">segment: <input id="q" '
                    f'size="60" value="{html.escape(", ".join(model.prompts.prompts))}"> '
                    '<button>apply</button> <span id="said"></span></form>')
    if model.points is not None:
        controls += ('<script>document.addEventListener("DOMContentLoaded", () => document.querySelectorAll('
                     '"img").forEach((im, n) => {const send = (e, remove) => {e.preventDefault(); fetch('
                     f'"point{query}", {{method: "POST", headers: {{"Content-Type": "application/json"}}, '
                     'body: JSON.stringify({x: e.offsetX * im.naturalWidth / im.clientWidth, y: e.offsetY * '
                     'im.naturalHeight / im.clientHeight, source: n, remove})});}; im.addEventListener('
                     '"click", e => send(e, false)); im.addEventListener("contextmenu", e => send(e, true));'
                     '}));</script><p style="text-align:center">click an object to track it, right-click to stop</p>')
    images = "".join(f'<img src="stream.mjpg?source={quote(key)}{"&" + token if token else ""}" '
                     f'alt="streamseg live view {html.escape(key)}">' for key in keys)
    return _PAGE.format(query=query, images=images, controls=controls)
