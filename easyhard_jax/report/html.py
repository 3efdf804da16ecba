"""A self-contained HTML page and a Markdown summary from report sections.

The page has no external resources: CSS is inline and every figure is a PNG
embedded as a ``data:image/png;base64`` URI, so ``index.html`` can be mailed
or opened from any directory. A small inline script marks ``<body>`` once the
page has loaded: ``data-figures-loaded="N"`` when all N images decoded
(``complete && naturalWidth > 0``), else ``data-figures-broken`` lists the
alt texts of those that did not. Headless browser checks read that marker.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
from typing import Any, Sequence

STATUS_OK = 'ok'
STATUS_NOT_RUN = 'not run'
STATUS_ERROR = 'error'


@dataclasses.dataclass
class FigureItem:
  """One figure: file stem (for figures/NAME.png), PNG bytes, caption."""
  name: str
  png: bytes
  caption: str = ''


@dataclasses.dataclass
class Section:
  """One report section.

  Attributes:
    key: HTML id and anchor.
    title: heading.
    explanation: one sentence on what the figures show.
    figures: the section's figures, in order.
    body_html: extra HTML after the figures (tables, lists), already escaped.
    status: STATUS_OK, STATUS_NOT_RUN or STATUS_ERROR.
    note: why a section is not run or failed (plain text).
  """
  key: str
  title: str
  explanation: str
  figures: list[FigureItem] = dataclasses.field(default_factory=list)
  body_html: str = ''
  status: str = STATUS_OK
  note: str = ''


def not_run(sec: Section, note: str) -> Section:
  """``sec`` marked "not run" because of ``note`` (its inputs are missing)."""
  sec.status, sec.note = STATUS_NOT_RUN, note
  return sec


def esc(text: Any) -> str:
  return html.escape(str(text), quote=True)


def data_uri(png: bytes) -> str:
  return 'data:image/png;base64,' + base64.b64encode(png).decode('ascii')


def table(header: Sequence[str] | None, rows: Sequence[Sequence[Any]],
          caption: str = '') -> str:
  """An HTML table of escaped cells; floats are shown with 4 significant digits.

  Args:
    header: column names; None for a key-value table without a header row.
    rows: cell values.
    caption: optional caption above the table.

  Returns:
    HTML text.
  """
  def cell(v):
    if isinstance(v, float):
      return esc(f'{v:.4g}')
    return esc('-' if v is None else v)
  out = ['<table>' if header else '<table class="kv">']
  if caption:
    out.append(f'<caption>{esc(caption)}</caption>')
  if header:
    out.append('<tr>' + ''.join(f'<th>{esc(h)}</th>' for h in header) +
               '</tr>')
  for r in rows:
    out.append('<tr>' + ''.join(f'<td>{cell(v)}</td>' for v in r) + '</tr>')
  out.append('</table>')
  return '\n'.join(out)


def paragraph(text: str) -> str:
  return f'<p>{esc(text)}</p>'


def details(summary: str, text: str) -> str:
  """A collapsed block of preformatted text."""
  return (f'<details><summary>{esc(summary)}</summary>'
          f'<pre>{esc(text)}</pre></details>')


_CSS = """
body { font-family: -apple-system, 'Segoe UI', Roboto, Helvetica, Arial,
       sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #23395d; color: white; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 22px; }
header p { margin: 0; opacity: 0.85; font-size: 14px; }
nav { padding: 10px 32px; background: #e9edf3; font-size: 13px;
      line-height: 1.9; }
nav a { margin-right: 14px; color: #23395d; text-decoration: none; }
nav a.not-run { color: #999; }
main { padding: 8px 32px 40px 32px; max-width: 1200px; }
section { background: white; border: 1px solid #ddd; border-radius: 6px;
          padding: 8px 20px 16px 20px; margin: 18px 0; }
section h2 { font-size: 18px; margin: 10px 0 4px 0; }
p.explain { color: #444; margin: 4px 0 12px 0; }
p.status { color: #8a6d3b; background: #fcf8e3; padding: 6px 10px;
           border-radius: 4px; }
p.status.error { color: #a94442; background: #f2dede; }
/* inline-table + table-caption: side by side, captions as wide as images. */
figure { display: inline-table; vertical-align: top;
         margin: 10px 18px 18px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { display: table-caption; caption-side: bottom; font-size: 13px;
             color: #555; margin-top: 4px; }
table { border-collapse: collapse; margin: 8px 0 14px 0; font-size: 13px; }
caption { text-align: left; font-weight: 600; padding-bottom: 4px; }
th, td { border: 1px solid #ddd; padding: 3px 9px; text-align: right; }
th { background: #f0f2f5; }
td:first-child, th:first-child { text-align: left; }
table.kv td { text-align: left; }
table.kv td:first-child { font-weight: 600; background: #f7f8fa; }
pre { background: #f6f8fa; padding: 10px; font-size: 12px; overflow-x: auto; }
details summary { cursor: pointer; color: #23395d; }
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) {
    return !(i.complete && i.naturalWidth > 0);
  });
  if (broken.length === 0) {
    document.body.setAttribute('data-figures-loaded', String(imgs.length));
  } else {
    document.body.setAttribute('data-figures-broken', broken.map(
        function (i) { return i.alt; }).join('|'));
  }
});
"""


def _section_html(s: Section) -> str:
  out = [f'<section id="{esc(s.key)}">', f'<h2>{esc(s.title)}</h2>',
         f'<p class="explain">{esc(s.explanation)}</p>']
  if s.status != STATUS_OK:
    css = 'status error' if s.status == STATUS_ERROR else 'status'
    note = f': {s.note}' if s.note else ''
    out.append(f'<p class="{css}">{esc(s.status)}{esc(note)}</p>')
  for f in s.figures:
    out.append(f'<figure><img alt="{esc(f.name)}" src="{data_uri(f.png)}">'
               + (f'<figcaption>{esc(f.caption)}</figcaption>'
                  if f.caption else '') + '</figure>')
  if s.body_html:
    out.append(s.body_html)
  out.append('</section>')
  return '\n'.join(out)


def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
  """The whole report page.

  Args:
    title: page title and heading.
    subtitle: one line under the heading (dataset, members, date).
    sections: the sections in order.

  Returns:
    The HTML document as text.
  """
  nav = ' '.join(
      f'<a href="#{esc(s.key)}"'
      + ('' if s.status == STATUS_OK else ' class="not-run"')
      + f'>{esc(s.title)}</a>' for s in sections)
  body = '\n'.join(_section_html(s) for s in sections)
  return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>
<nav>{nav}</nav>
<main>
{body}
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def markdown_text(text: str) -> str:
  """``text`` (a path, say) as literal Markdown: one line, no markup."""
  text = ' '.join(str(text).splitlines())
  return ''.join('\\' + c if c in '\\`*_[]<>#&!' else c for c in text)


def render_summary(title: str, subtitle: str,
                   blocks: Sequence[tuple[str, Sequence[str]]],
                   sections: Sequence[Section]) -> str:
  """A short Markdown summary: headline numbers and what ran.

  Args:
    title: document title.
    subtitle: one line under the title.
    blocks: (heading, bullet lines) pairs of findings.
    sections: the report's sections, listed with their status.

  Returns:
    Markdown text.
  """
  out = [f'# {title}', '', markdown_text(subtitle), '']
  for heading, bullets in blocks:
    if not bullets:
      continue
    out += [f'## {heading}', ''] + [f'- {b}' for b in bullets] + ['']
  out += ['## Sections', '']
  for s in sections:
    state = s.status + (f' ({s.note})' if s.note and s.status != STATUS_OK
                        else '')
    out.append(f'- {s.title}: {state}')
  out += ['', 'Figures and tables: `index.html` beside this file.', '']
  return '\n'.join(out)


def number(x: Any) -> float | None:
  """A JSON number as float, or None for null / 'inf' / NaN."""
  try:
    v = float(x)
  except (TypeError, ValueError):
    return None
  return v if math.isfinite(v) else None
