"""Methods side by side on the same inputs: `compare(CompareSettings)`,
what `python -m sphinx_jax.demo` does.

Runs a folder inversion (jobs/folder.py) once per method on the same inputs,
steps and loss (each into `<outdir>/<method>/`, resumable as any run), then
writes `<outdir>/comparison.png` (a row per image: the target, the
observation where there is one, then each method's reconstruction; columns
and rows labelled), `<outdir>/comparison.csv` and the page
`<outdir>/report.html` (reports/comparison_page.py), and prints the
table: PSNR (of the reconstruction, the official output, and of the mean
image over vicinal draws) and LPIPS per image and method, and their means
over each group of inputs (the inputs' first directory level, e.g.
in_domain / out_of_domain).
"""

import dataclasses
import os
import sys
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sphinx_jax.files import images, outputs
from sphinx_jax.jobs import folder
from sphinx_jax.reports import comparison_page

# comparison.png: each picture at CELL px (a 32-px image enlarged 4x with
# nearest neighbours), GAP px apart, under a HEADER px row of column titles
# and beside a column of image names.
CELL, GAP, HEADER = 128, 2, 20


def _metrics(outdir: str) -> dict[str, dict[str, str]]:
  return {r['image']: r
          for r in outputs.read_csv(os.path.join(outdir, 'metrics.csv'))}


def _group(name: str) -> str:
  return name.split('__')[0] if '__' in name else 'all'


# The printed columns of each method: the official output (the last step's
# image) and, for SPHInX, the mean over vicinal draws (mean.png).
_SHOWN = (('psnr', 'psnr', '.2f'), ('psnr_mean', 'psnr(mean)', '.2f'),
          ('lpips', 'lpips', '.3f'))


def summarize(rows: list[dict[str, Any]], methods: list[str]) -> str:
  """The printed table: per image, then the mean of each group."""
  def line(label, value):
    return f'{label:<32}' + ''.join(
        f'{value(m, key):{max(12, len(m) + len(title) + 2)}{fmt}}'
        for m in methods for key, title, fmt in _SHOWN)

  lines = [f'{"image":<32}' + ''.join(
      f'{m + " " + title:>{max(12, len(m) + len(title) + 2)}}'
      for m in methods for _, title, _ in _SHOWN)]
  lines += [line(r['image'], lambda m, k, r=r: r[f'{m}_{k}']) for r in rows]
  for group in dict.fromkeys(_group(r['image']) for r in rows):
    members = [r for r in rows if _group(r['image']) == group]
    lines.append(line(f'mean {group} ({len(members)})', lambda m, k: np.mean(
        [r[f'{m}_{k}'] for r in members])))
  return '\n'.join(lines)


def _comparison_image(outdirs: dict[str, str], names: list[str]) -> np.ndarray:
  """A row per image, its name on the left: the target, the observation
  where the task has one (blank where an image has none), then each
  method's reconstruction; the columns' titles above."""
  first = next(iter(outdirs.values()))
  columns = [('target', first, 'target.png')]
  if any(os.path.exists(os.path.join(first, n, 'observation.png'))
         for n in names):
    columns.append(('observation', first, 'observation.png'))
  columns += [(m, d, 'reconstruction.png') for m, d in outdirs.items()]
  font = ImageFont.load_default()
  measure = ImageDraw.Draw(Image.new('RGB', (1, 1)))
  size = lambda text: measure.textbbox((0, 0), text, font=font)[2:]
  left = max(size(n)[0] for n in names) + 4 * GAP
  sheet = Image.new('RGB', (left + len(columns) * (CELL + GAP),
                            HEADER + len(names) * (CELL + GAP)), 'white')
  draw = ImageDraw.Draw(sheet)
  for j, (title, _, _) in enumerate(columns):
    w, h = size(title)
    draw.text((left + j * (CELL + GAP) + (CELL - w) // 2, (HEADER - h) // 2),
              title, fill='black', font=font)
  for i, name in enumerate(names):
    top = HEADER + i * (CELL + GAP)
    draw.text((2 * GAP, top + (CELL - size(name)[1]) // 2), name, fill='black',
              font=font)
    for j, (_, outdir, file) in enumerate(columns):
      path = os.path.join(outdir, name, file)
      if os.path.exists(path):
        with Image.open(path) as img:
          sheet.paste(img.convert('RGB').resize(
              (CELL, CELL), Image.NEAREST if img.width <= CELL
              else Image.LANCZOS), (left + j * (CELL + GAP), top))
  return np.asarray(sheet)


@dataclasses.dataclass(frozen=True)
class CompareSettings:
  """configs/demo.py, typed: the methods, where they go, and the run every
  method shares (its method and outdir are set per method)."""
  methods: tuple[str, ...]
  outdir: str
  run: folder.RunSettings


def compare(settings: CompareSettings) -> int:
  """Runs every method, then compares them; returns the exit status."""
  methods = settings.methods
  outdirs, status = {}, 0
  for method in methods:
    run = dataclasses.replace(
        settings.run, outdir=os.path.join(settings.outdir, method),
        inversion=dataclasses.replace(settings.run.inversion, method=method))
    print(f'== {method}', file=sys.stderr, flush=True)
    status = max(status, folder.run(run))
    outdirs[method] = run.outdir
  scores = {m: _metrics(d) for m, d in outdirs.items()}
  names = [n for n in scores[methods[0]] if all(n in s for s in scores.values())]
  kinds = ('psnr', 'ssim', 'lpips', 'psnr_mean', 'ssim_mean', 'lpips_mean')
  rows = [{'image': n, **{f'{m}_{k}': float(scores[m][n][k])
                          for m in methods for k in kinds}}
          for n in names]
  columns = ['image'] + [f'{m}_{k}' for m in methods for k in kinds]
  outputs.write_csv(os.path.join(settings.outdir, 'comparison.csv'), rows,
                    columns)
  images.save_png(_comparison_image(outdirs, names),
                  os.path.join(settings.outdir, 'comparison.png'))
  print(f'\n{settings.run.inversion.steps} steps per image; pictures and '
        f'loss curves in {comparison_page.write(settings.outdir)}')
  print(summarize(rows, methods))
  return status
