"""Open a local HTML file in Debian's headless Chromium through Playwright, the way a reader opens it, and
collect what a test asserts on: console and page errors, every request (anything over the network is
aborted and listed), the tables and chart marks in the page, and a full-page screenshot's pixel spread."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"

READ_PAGE = """() => ({
  tables: Object.fromEntries(Array.from(document.querySelectorAll('table[data-table]')).map(t => [t.dataset.table,
    Array.from(t.tBodies[0].rows).map(r => Object.fromEntries(Array.from(r.cells).map(c => [c.dataset.col,
      [c.querySelector('.v').textContent, c.querySelector('.cov') ? c.querySelector('.cov').textContent : null]])))])),
  marks: Object.fromEntries(Array.from(document.querySelectorAll('figure[data-chart]')).map(f => [f.dataset.chart,
    f.querySelectorAll('svg g.role-mark > path, svg g.role-mark > line, svg g.role-mark > rect').length])),
  toc: Array.from(document.querySelectorAll('nav.toc a')).map(a => a.getAttribute('href')),
  tocPosition: getComputedStyle(document.querySelector('nav.toc')).position,
  flow: Array.from(document.querySelectorAll('.flow .box')).map(b => ({
    kind: b.classList.contains('out') ? 'out' : 'main', step: b.dataset.step, big: b.querySelector('b').textContent})),
  text: document.body.innerText,
  height: document.documentElement.scrollHeight,
})"""

# the screenshot drawn onto a small canvas; the standard deviation of its grey levels (0 for a blank page)
STDDEV = """async (src) => {
  const img = new Image(); img.src = src; await img.decode();
  const w = 200, h = Math.max(1, Math.round(img.height * w / img.width));
  const c = document.createElement('canvas'); c.width = w; c.height = h;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0, w, h);
  const d = g.getImageData(0, 0, w, h).data; let s = 0, s2 = 0, n = 0;
  for (let i = 0; i < d.length; i += 4) { const v = (d[i] + d[i + 1] + d[i + 2]) / 3; s += v; s2 += v * v; n++; }
  return Math.sqrt(s2 / n - (s / n) ** 2);
}"""


@dataclass
class SeenPage:
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    tables: dict = field(default_factory=dict)
    chart_marks: dict = field(default_factory=dict)
    toc_links: list[str] = field(default_factory=list)
    toc_position: str = ""
    flow: list[dict] = field(default_factory=list)
    text: str = ""
    height: int = 0
    screenshot_stddev: float = 0.0


def open_page(path: Path, screenshot: Path | None = None) -> SeenPage:
    """Everything is collected before the browser closes, so callers hold no browser open."""
    from playwright.sync_api import sync_playwright

    seen = SeenPage()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})

            def block(route):
                seen.blocked.append(route.request.url)
                route.abort()

            context.route("http://**/*", block)
            context.route("https://**/*", block)
            page = context.new_page()
            page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: seen.errors.append(str(e)))
            page.on("request", lambda r: seen.requests.append(r.url))
            page.goto(Path(path).resolve().as_uri(), wait_until="load")
            found = page.evaluate(READ_PAGE)
            seen.tables, seen.chart_marks, seen.toc_links = found["tables"], found["marks"], found["toc"]
            seen.toc_position, seen.flow, seen.text, seen.height = (
                found["tocPosition"],
                found["flow"],
                found["text"],
                found["height"],
            )
            png = page.screenshot(full_page=True)
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(png)
            probe = context.new_page()
            seen.screenshot_stddev = probe.evaluate(STDDEV, "data:image/png;base64," + base64.b64encode(png).decode())
        finally:
            browser.close()
    return seen
