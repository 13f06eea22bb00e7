"""What every report page shares: the page around its sections (inline CSS
and the sorting script), sortable tables, thumbnails and settings lists;
and writing the page, atomically."""

import dataclasses
import html
import math
import time
import urllib.parse
from typing import Any, Optional, Sequence

from sphinx_jax.files import atomic

FILE = 'report.html'
THUMBNAIL = 128  # pixels a side: a 32-px image shown 4x

_CSS = """
body { font-family: sans-serif; font-size: 14px; margin: 1em 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.5em; }
table { border-collapse: collapse; }
th, td { padding: 3px 6px; border-bottom: 1px solid #ddd; text-align: left;
         vertical-align: middle; }
td.number, th.number { text-align: right; font-variant-numeric: tabular-nums;
                       white-space: nowrap; }
table.sortable th[data-key] { cursor: pointer; text-decoration: underline dotted; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
td.best { font-weight: bold; background: #d9f2d9; }
td.best::after { content: " \\2605"; color: #2a2; }
img.thumbnail { display: block; background: #eee; }
img.pixelated { image-rendering: pixelated; }
table.settings td:first-child { color: #555; white-space: nowrap; }
.muted { color: #888; }
summary { cursor: pointer; }
"""

# Sorts a table.sortable by the data-value of its cells with a column's
# data-key: numbers as numbers, else text, blanks last. A click on a
# heading sorts by it (again: the other way); the address's hash sorts on
# load, report.html#sort=psnr ascending, #sort=-psnr descending.
_SCRIPT = """
function sortTable(table, key, descending) {
  const body = table.tBodies[0], rows = Array.from(body.rows);
  const value = row => {
    const cell = row.querySelector('td[data-key="' + key + '"]');
    return cell ? cell.dataset.value : '';
  };
  const numeric = rows.every(r => value(r) === '' || !isNaN(Number(value(r))));
  rows.sort((a, b) => {
    const x = value(a), y = value(b);
    if (x === '' || y === '') return (x === '') - (y === '');
    const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
    return descending ? -order : order;
  });
  rows.forEach(row => body.appendChild(row));
  table.querySelectorAll('th[data-key]').forEach(th =>
    th.toggleAttribute('aria-sort', false));
  table.querySelector('th[data-key="' + key + '"]').setAttribute(
    'aria-sort', descending ? 'descending' : 'ascending');
}
document.querySelectorAll('table.sortable th[data-key]').forEach(th =>
  th.addEventListener('click', () => sortTable(th.closest('table'),
    th.dataset.key, th.getAttribute('aria-sort') === 'ascending')));
const wanted = decodeURIComponent(location.hash).match(/^#sort=(-?)(.+)$/);
if (wanted) document.querySelectorAll('table.sortable').forEach(table => {
  if (table.querySelector('th[data-key="' + wanted[2] + '"]'))
    sortTable(table, wanted[2], wanted[1] === '-');
});
"""


def escape(text: Any) -> str:
  return html.escape(str(text))


def url(*parts: str) -> str:
  """A relative link to a file below the page."""
  return urllib.parse.quote('/'.join(parts))


@dataclasses.dataclass(frozen=True)
class Cell:
  """A table cell: its HTML, what its column sorts it by (None: not
  sortable), whether it is a number (right-aligned) and the best of its
  kind (marked)."""
  html: str
  value: Optional[str] = None
  number: bool = False
  best: bool = False


@dataclasses.dataclass(frozen=True)
class Column:
  """A table column: its heading's HTML and the key its cells sort by
  (None: not sortable)."""
  title: str
  key: Optional[str] = None
  number: bool = False


def number(text: str, fmt: str, best: bool = False) -> Cell:
  """A cell for a number as a CSV holds it: shown as `fmt` says, sorted by
  the CSV's own text (infinities as the script reads them, NaN blank)."""
  value = float(text)
  if math.isnan(value):
    return Cell('nan', '', True)
  sort = (text if math.isfinite(value) else
          'Infinity' if value > 0 else '-Infinity')
  return Cell(escape(format(value, fmt)), sort, True, best)


def table(columns: Sequence[Column], rows: Sequence[Sequence[Cell]],
          sortable: bool = False, id_: str = '') -> str:
  def th(c):
    attrs = (f' data-key="{escape(c.key)}"' if c.key and sortable else '') + (
        ' class="number"' if c.number else '')
    return f'<th{attrs}>{c.title}</th>'

  def td(column, cell):
    classes = ' '.join(n for n, on in (('number', cell.number),
                                       ('best', cell.best)) if on)
    attrs = (f' class="{classes}"' if classes else '') + (
        f' data-key="{escape(column.key)}" data-value="{escape(cell.value)}"'
        if column.key and cell.value is not None else '')
    return f'<td{attrs}>{cell.html}</td>'

  attrs = (f' id="{escape(id_)}"' if id_ else '') + (' class="sortable"' if sortable
                                             else '')
  return (f'<table{attrs}><thead><tr>{"".join(th(c) for c in columns)}</tr>'
          '</thead><tbody>' + ''.join(
              '<tr>' + ''.join(td(c, cell) for c, cell in zip(columns, row))
              + '</tr>' for row in rows) + '</tbody></table>')


def thumbnail(src: str, title: str, pixelated: bool) -> str:
  """An image at THUMBNAIL px, linked to itself; `pixelated` for a small
  image enlarged (its pixels kept sharp)."""
  kind = 'thumbnail pixelated' if pixelated else 'thumbnail'
  return (f'<a href="{src}"><img class="{kind}" src="{src}" '
          f'alt="{escape(title)}" title="{escape(title)}" '
          f'width="{THUMBNAIL}" height="{THUMBNAIL}"></a>')


def settings(values: dict[str, Any]) -> str:
  """A two-column table of settings. A group of a few plain values shows
  on one line, a larger one as a table within, folded away when long."""
  def show(value):
    if isinstance(value, dict):
      if len(value) <= 3 and not any(isinstance(v, (dict, list))
                                     for v in value.values()):
        return escape(', '.join(f'{k}={v}' for k, v in value.items()))
      if len(value) > 8:
        return (f'<details><summary>{len(value)} fields</summary>'
                f'{settings(value)}</details>')
      return settings(value)
    if isinstance(value, list):
      return escape(', '.join(map(str, value)))
    return escape(value)

  return ('<table class="settings"><tbody>' + ''.join(
      f'<tr><td>{escape(k)}</td><td>{show(v)}</td></tr>'
      for k, v in values.items()) + '</tbody></table>')


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
  """The whole page: a heading, then each (heading, body) section."""
  body = ''.join(f'<h2>{escape(h)}</h2>\n{b}\n' for h, b in sections)
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<title>{escape(title)}</title><style>{_CSS}</style></head>\n'
          f'<body><h1>{escape(title)}</h1>\n{body}'
          f'<p class="muted">written by sphinx_jax on '
          f'{time.strftime("%Y-%m-%d %H:%M:%S")}</p>\n'
          f'<script>{_SCRIPT}</script></body></html>\n')


def write(path: str, text: str) -> str:
  atomic.write_file(path, lambda f: f.write(text.encode()))
  return path
