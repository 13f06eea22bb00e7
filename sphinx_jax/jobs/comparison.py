"""Methods side by side on the same inputs: `compare(CompareSettings)`,
what `python -m sphinx_jax.demo` does.

Runs a folder inversion (jobs/folder.py) once per method on the same inputs,
steps and loss (each into `<outdir>/<method>/`, resumable as any run), then
writes `<outdir>/comparison.png` (a row per image: the target, the
observation where there is one, then each method's reconstruction; columns
and rows labelled), `<outdir>/comparison.csv` and the page
`<outdir>/report.html` (reports/comparison_page.py), and prints the
table: PSNR (of the reconstruction, the official output, and of the mean
image over vicinal draws), LPIPS and the codes' robustness (`robust`: the
mean PSNR between the image of the codes and of the codes perturbed,
engine.Inverter.robustness) per image and method, and their means over each
group of inputs (the inputs' first directory level, e.g. in_domain /
out_of_domain).
"""

import dataclasses
import os
import sys
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sphinx_jax.files import images, inputs, outputs
from sphinx_jax.jobs import folder
from sphinx_jax.reports import comparison_page

# comparison.png: each picture at CELL px (a 32-px image enlarged 4x with
# nearest neighbours), GAP px apart, under a HEADER px row of column titles
# and beside a column of image names.
CELL, GAP, HEADER = 128, 2, 20


def _metrics(outdir: str) -> dict[str, dict[str, str]]:
  return {r['image']: r
          for r in outputs.read_csv(os.path.join(outdir, 'metrics.csv'))}


# The printed columns of each method: the official output (the last step's
# image), the mean over vicinal draws (mean.png), LPIPS and the robustness of
# the codes; and whether a higher value is better.
_SHOWN = (('psnr', 'psnr', '.2f', True), ('psnr_mean', 'psnr(mean)', '.2f', True),
          ('lpips', 'lpips', '.3f', False), ('robust_psnr', 'robust', '.2f', True))


def summarize(rows: list[dict[str, Any]], methods: list[str]) -> str:
  """The printed table, a line per image and method, then each group's
  means per method with the best method's value in each column starred."""
  def line(label, method, values, best=()):
    return f'{label:<32}{method:<13}' + ''.join(
        f'{format(v, fmt) + ("*" if key in best else " "):>12}'
        for v, (key, _, fmt, _) in zip(values, _SHOWN))

  lines = [f'{"image":<32}{"method":<13}' + ''.join(
      f'{title:>11} ' for _, title, _, _ in _SHOWN)]
  lines += [line(r['image'], m, [r[f'{m}_{k}'] for k, *_ in _SHOWN])
            for r in rows for m in methods]
  for group in dict.fromkeys(inputs.group(r['image']) for r in rows):
    members = [r for r in rows if inputs.group(r['image']) == group]
    means = {m: [float(np.mean([r[f'{m}_{k}'] for r in members]))
                 for k, *_ in _SHOWN] for m in methods}
    best = {}
    for i, (key, _, _, higher) in enumerate(_SHOWN):
      pick = max if higher else min
      best[key] = pick(methods, key=lambda m, i=i: means[m][i])
    for m in methods:
      lines.append(line(f'mean {group} ({len(members)})', m, means[m],
                        [k for k, winner in best.items() if winner == m]))
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
  kinds = ('psnr', 'ssim', 'lpips', 'psnr_mean', 'ssim_mean', 'lpips_mean',
           'robust_psnr')
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
