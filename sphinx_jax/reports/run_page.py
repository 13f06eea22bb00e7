"""`<outdir>/report.html` of a run (`python -m sphinx_jax.run`).

Built from the outdir alone: config.json and run.json (settings,
provenance), the manifests (which images finished), metrics.csv and each
process's metrics file, each image's files and loss.csv, and the problems
files (skipped and failed inputs). So it can be rebuilt after a killed or
multi-host run, and a rerun rewrites it whole.
"""

import json
import os
from typing import Any

from PIL import Image

from sphinx_jax.files import outputs
from sphinx_jax.reports import chart, html
from sphinx_jax.runtime import resume

# Per image, in this order; the optional ones get a column where any image
# has them.
PICTURES = ('target', 'observation', 'reconstruction',
            'reconstruction_observed', 'mean', 'std')
_REQUIRED = ('target', 'reconstruction', 'mean', 'std')
# Columns of metrics.csv that are the same on every row (shown in the
# settings) or are the row's name.
_NOT_METRICS = ('image', 'method', 'steps')


def number_format(column: str) -> str:
  """How a metric is shown (its value in the CSV is sorted by)."""
  kind = column.split('_')[0]
  return {'psnr': '.2f', 'ssim': '.3f', 'lpips': '.3f', 'seconds': '.1f',
          'robust': '.2f'}.get(kind, '.4g')


def read_json(path: str) -> dict[str, Any]:
  """A JSON record of the outdir, or {} where it is missing or damaged (the
  page then says less rather than not being written)."""
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError):
    return {}
  return value if isinstance(value, dict) else {}


def settings_section(outdir: str, leave_out: tuple[str, ...] = ()) -> str:
  """The settings a reader asks first (the generator and where it came
  from, the method, steps, seed and operator), then every setting."""
  config = read_json(os.path.join(outdir, 'config.json'))
  generator = read_json(os.path.join(outdir, 'run.json')).get('generator')
  first = {
      'generator': config.get('generator'),
      'generator source': config.get('generator_provenance'),
      'generator.json sha256': generator,
      'method': config.get('method'), 'steps': config.get('steps'),
      'seed': config.get('seed'), 'operator': config.get('operator'),
      'observation': config.get('observation'), 'lr used': config.get('lr_used'),
  }
  first = {k: v for k, v in first.items()
           if v is not None and k not in leave_out}
  return (html.settings(first) +
          '<details><summary>every setting (config.json)</summary>' +
          html.settings(config) + '</details>')


def pixelated(directory: str) -> bool:
  """Whether an image folder's pictures are enlarged in a thumbnail (then
  shown with sharp pixels) rather than reduced."""
  try:
    with Image.open(os.path.join(directory, 'target.png')) as img:
      return img.width < html.THUMBNAIL
  except OSError:
    return True


def finished_rows(outdir: str) -> list[dict[str, str]]:
  """The metrics rows of the finished images, every process's."""
  done = resume.finished(outdir)
  return [r for name, r in outputs.read_rows(outdir, 'metrics').items()
          if name in done]


def problems(outdir: str) -> list[dict[str, str]]:
  """The skipped and failed files, every process's, but those finished
  since (a rerun retries them)."""
  done = resume.finished(outdir)
  return [r for name, r in outputs.read_rows(outdir, 'problems').items()
          if name not in done]


def _problems_table(rows: list[dict[str, str]]) -> str:
  if not rows:
    return '<p>none</p>'
  columns = [html.Column(c, c) for c in outputs.PROBLEMS_COLUMNS]
  return html.table(columns, [
      [html.Cell(html.escape(r[c]), r[c]) for c in outputs.PROBLEMS_COLUMNS]
      for r in rows], sortable=True, id_='problems')


def _gallery(outdir: str, rows: list[dict[str, str]]) -> str:
  exists = lambda name, picture: os.path.exists(
      os.path.join(outdir, name, f'{picture}.png'))
  shown = [p for p in PICTURES if p in _REQUIRED or
           any(exists(r['image'], p) for r in rows)]
  metrics = [c for c in rows[0] if c not in _NOT_METRICS]
  sharp = pixelated(os.path.join(outdir, rows[0]['image']))
  columns = ([html.Column('image', 'image')] +
             [html.Column(p.replace('_', ' ')) for p in shown] +
             [html.Column('loss')] +
             [html.Column(m, m, number=True) for m in metrics] +
             [html.Column('progress')])

  def row(r):
    name = r['image']
    pictures = [html.Cell(html.thumbnail(html.url(name, f'{p}.png'), p, sharp)
                          if exists(name, p) else '')
                for p in shown]
    curve = chart.loss_chart([(r.get('method', ''), outputs.read_losses(
        os.path.join(outdir, name)))])
    return ([html.Cell(f'<a href="{html.url(name)}/">{html.escape(name)}</a>',
                       name)] + pictures + [html.Cell(curve)] +
            [html.number(r[m], number_format(m)) for m in metrics] +
            [html.Cell(
                f'<a href="{html.url(name, "progress.gif")}">progress.gif</a>')])

  return html.table(columns, [row(r) for r in rows], sortable=True,
                    id_='images')


def write(outdir: str) -> str:
  """Writes `<outdir>/report.html`; returns its path."""
  rows, failures = finished_rows(outdir), problems(outdir)
  config = read_json(os.path.join(outdir, 'config.json'))
  title = f'sphinx_jax run: {os.path.basename(os.path.abspath(outdir))}'
  summary = (f'<p>{len(rows)} images inverted, {len(failures)} skipped or '
             'failed. Click a column heading to sort by it.</p>')
  gallery = (_gallery(outdir, rows) if rows else
             '<p>no finished images yet</p>')
  return html.write(os.path.join(outdir, html.FILE), html.page(title, [
      ('Settings', summary + settings_section(outdir)),
      (f'Images ({config.get("method", "")})', gallery),
      ('Skipped and failed', _problems_table(failures))]))
