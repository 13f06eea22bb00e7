"""`<outdir>/report.html` of a comparison (`python -m sphinx_jax.demo`).

Built from the outdir alone: comparison.csv (its columns are
`<method>_<metric>`) and each method's run in `<outdir>/<method>/`. The
page shows the shared settings, the mean of every metric per group of
inputs with each method in a row, and a row per image with the target,
the observation where there is one, every method's reconstruction, their
metrics and their loss curves in one chart. In each metric of known sense
(PSNR and SSIM: higher is better; LPIPS: lower) the best method is marked.
"""

import os

import numpy as np

from sphinx_jax.errors import SphinxError
from sphinx_jax.files import inputs, outputs
from sphinx_jax.reports import chart, html, run_page

_BETTER = {'psnr': max, 'ssim': max, 'lpips': min, 'robust': max}


def methods(outdir: str) -> list[str]:
  """The methods compared in `outdir`: its folders holding a run that
  comparison.csv has columns of, in their order (all of them, where it has
  no rows yet)."""
  runs = [d for d in sorted(os.listdir(outdir))
          if os.path.exists(os.path.join(outdir, d, 'run.json'))]
  if not runs:
    raise SphinxError(f'{outdir}: holds comparison.csv but no method\'s run '
                      '(<method>/run.json)')
  owners = [m for m, _ in _columns(_rows(outdir), runs).values()]
  return list(dict.fromkeys(owners)) or runs


def _rows(outdir: str) -> list[dict[str, str]]:
  return outputs.read_csv(os.path.join(outdir, 'comparison.csv'))


def _columns(rows: list[dict[str, str]], runs: list[str]
             ) -> dict[str, tuple[str, str]]:
  """comparison.csv's columns as {column: (method, metric)}; a column's
  method is the longest run name it starts with (wplus_noise_psnr is
  wplus_noise's, not wplus's)."""
  columns = {}
  for column in list(rows[0])[1:] if rows else []:
    owners = [m for m in runs if column.startswith(m + '_')]
    if owners:
      method = max(owners, key=len)
      columns[column] = (method, column[len(method) + 1:])
  return columns


def _best(values: list[float], metric: str) -> float | None:
  """The best of `values` for `metric`, None where its sense is unknown."""
  choose = _BETTER.get(metric.split('_')[0])
  finite = [v for v in values if np.isfinite(v)]
  return choose(finite) if choose and finite else None


def _means(rows, names, metrics) -> str:
  """A table per group of inputs: a row per method, a column per metric,
  the best of each column marked."""
  parts = []
  for group in dict.fromkeys(inputs.group(r['image']) for r in rows):
    members = [r for r in rows if inputs.group(r['image']) == group]
    means = {(m, k): float(np.mean([float(r[f'{m}_{k}']) for r in members]))
             for m in names for k in metrics}
    best = {k: _best([means[m, k] for m in names], k) for k in metrics}
    columns = [html.Column('method')] + [html.Column(k, number=True)
                                         for k in metrics]
    table = html.table(columns, [
        [html.Cell(html.escape(m))] +
        [html.number(repr(means[m, k]), run_page.number_format(k),
                     means[m, k] == best[k]) for k in metrics]
        for m in names], id_=f'means-{group}')
    parts.append(f'<h3>{html.escape(group)} ({len(members)} images)</h3>'
                 + table)
  return ''.join(parts)


def _images(outdir, rows, names, metrics) -> str:
  """The sortable table of images: pictures, the loss curves and every
  method's metrics (the best marked in each row)."""
  first = os.path.join(outdir, names[0])
  exists = lambda d, name, picture: os.path.exists(
      os.path.join(outdir, d, name, f'{picture}.png'))
  observed = any(exists(names[0], r['image'], 'observation') for r in rows)
  sharp = run_page.pixelated(os.path.join(first, rows[0]['image']))
  pictures = ([('target', names[0], 'target')] +
              ([('observation', names[0], 'observation')] if observed else [])
              + [(m, m, 'reconstruction') for m in names])
  columns = ([html.Column('image', 'image')] +
             [html.Column(html.escape(title)) for title, _, _ in pictures] +
             [html.Column('loss')] +
             [html.Column(f'{html.escape(m)}<br>{html.escape(k)}',
                          f'{m}_{k}', number=True)
              for k in metrics for m in names])

  def row(r):
    name = r['image']
    cells = [html.Cell(html.escape(name), name)] + [
        html.Cell(html.thumbnail(html.url(d, name, f'{p}.png'), title, sharp)
                  if exists(d, name, p) else '')
        for title, d, p in pictures]
    cells.append(html.Cell(chart.loss_chart([(m, outputs.read_losses(
        os.path.join(outdir, m, name))) for m in names])))
    for k in metrics:
      best = _best([float(r[f'{m}_{k}']) for m in names], k)
      cells += [html.number(r[f'{m}_{k}'], run_page.number_format(k),
                            float(r[f'{m}_{k}']) == best) for m in names]
    return cells

  return html.table(columns, [row(r) for r in rows], sortable=True,
                    id_='images')


def write(outdir: str) -> str:
  """Writes `<outdir>/report.html`; returns its path."""
  names = methods(outdir)
  rows = _rows(outdir)
  columns = _columns(rows, names)
  # The metrics every method has a column of.
  metrics = [k for k in dict.fromkeys(k for _, k in columns.values())
             if all(f'{m}_{k}' in columns for m in names)]
  runs = html.table(
      [html.Column('method'), html.Column('lr used', number=True),
       html.Column('images'), html.Column('skipped or failed'),
       html.Column('its page')],
      [[html.Cell(html.escape(m)),
        html.Cell(html.escape(run_page.read_json(os.path.join(
            outdir, m, 'config.json')).get('lr_used', '')), number=True),
        html.Cell(str(len(run_page.finished_rows(os.path.join(outdir, m))))),
        html.Cell(str(len(run_page.problems(os.path.join(outdir, m))))),
        html.Cell(f'<a href="{html.url(m, html.FILE)}">{html.escape(m)}/'
                  f'{html.FILE}</a>')] for m in names])
  title = f'sphinx_jax comparison: {", ".join(names)}'
  sections = [('Settings', run_page.settings_section(
      os.path.join(outdir, names[0]), leave_out=('method', 'lr used'))),
              ('Methods', runs)]
  if rows:
    sections += [('Means per group', _means(rows, names, metrics)),
                 ('Images', '<p>Click a column heading to sort by it.</p>' +
                  _images(outdir, rows, names, metrics))]
  return html.write(os.path.join(outdir, html.FILE),
                    html.page(title, sections))
