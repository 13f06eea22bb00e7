"""An inversion's results: each image's files (its loss curve, `loss.csv`,
among them), the metrics table and the list of skipped and failed files.

Every file is written to a temporary name and renamed, and every row of a
table is appended with one write and flushed (files/atomic.py), so a crash
never leaves a half-written PNG or CSV row.
"""

import csv
import glob
import io
import os
from typing import Any, Optional, Sequence

import numpy as np

from sphinx_jax.files import animation, atomic, images

METRICS_COLUMNS = ('image', 'method', 'steps', 'psnr', 'ssim', 'lpips',
                   'seconds', 'psnr_mean', 'ssim_mean', 'lpips_mean',
                   'robust_psnr')
# loss.csv: the loss of step `step` (counted from 1: the step whose image is
# the progress frame), at each frame.
LOSS_COLUMNS = ('step', 'loss')
# problems.csv: a file that was skipped (unreadable) or failed (NaN loss).
PROBLEMS_COLUMNS = ('file', 'image', 'problem', 'reason')
# std.png shows the per-pixel standard deviation (in [-1, 1] image units)
# times STD_GAIN: white is a standard deviation of 1/STD_GAIN.
STD_GAIN = 2.0


def write_image_results(directory: str, target: np.ndarray,
                        reconstruction: np.ndarray, mean: np.ndarray,
                        std: np.ndarray, frames: Sequence[np.ndarray],
                        losses: Sequence[tuple[int, float]],
                        observation: Optional[np.ndarray] = None,
                        reconstruction_observed: Optional[np.ndarray] = None
                        ) -> None:
  """target.png, reconstruction.png, mean.png, std.png, progress.gif,
  loss.csv ((step, loss) at each frame) and, where given,
  observation.png and reconstruction_observed.png."""
  pictures = [('target', target), ('reconstruction', reconstruction),
              ('mean', mean), ('observation', observation),
              ('reconstruction_observed', reconstruction_observed)]
  pictures = [(name, img) for name, img in pictures if img is not None]
  for name, img in pictures:
    images.save_png(images.to_uint8(img), os.path.join(directory, f'{name}.png'))
  images.save_png(images.to_uint8(np.asarray(std) * STD_GAIN * 2 - 1),
                  os.path.join(directory, 'std.png'))
  animation.save_gif(frames, os.path.join(directory, 'progress.gif'))
  write_csv(os.path.join(directory, 'loss.csv'),
            [dict(zip(LOSS_COLUMNS, point)) for point in losses], LOSS_COLUMNS)


def read_losses(directory: str) -> list[tuple[int, float]]:
  """An image's (step, loss) points from its loss.csv (none if absent)."""
  return [(int(r['step']), float(r['loss']))
          for r in read_csv(os.path.join(directory, 'loss.csv'))]


def _cell(value: Any) -> str:
  return f'{value:.6g}' if isinstance(value, (float, np.floating)) else str(value)


def _line(cells: Sequence[Any]) -> str:
  """One CSV line, quoted where a cell needs it (a reason with a comma)."""
  out = io.StringIO()
  csv.writer(out, lineterminator='').writerow([_cell(c) for c in cells])
  return out.getvalue()


def write_csv(path: str, rows: Sequence[dict[str, Any]],
              columns: Sequence[str] = METRICS_COLUMNS) -> None:
  """Rewrites `path` atomically: the header, then a line per row (a missing
  cell is empty, floats to 6 significant digits)."""
  lines = [_line(columns)] + [_line([r.get(c, '') for c in columns])
                              for r in rows]
  atomic.write_file(path,
                    lambda f: f.write(('\n'.join(lines) + '\n').encode()))


class Table:
  """A CSV file in append mode (`metrics.csv`, `problems.csv`): the header
  when the file is new, then one flushed write per row."""

  def __init__(self, path: str, columns: Sequence[str] = METRICS_COLUMNS):
    self.path, self.columns = path, columns
    if not os.path.exists(path) or os.path.getsize(path) == 0:
      atomic.append_line(path, _line(columns))

  def add(self, row: dict[str, Any]) -> None:
    atomic.append_line(self.path, _line([row[c] for c in self.columns]))


def read_csv(path: str) -> list[dict[str, str]]:
  """The rows of a CSV file written here (none if it does not exist)."""
  if not os.path.exists(path):
    return []
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def read_rows(outdir: str, prefix: str) -> dict[str, dict[str, str]]:
  """The rows of `<prefix>.csv` and of every process's `<prefix>.process<i>
  .csv` in `outdir`, by image; where an image has several, the last read
  (the per-process files, in name order, come after the merged one)."""
  paths = [os.path.join(outdir, f'{prefix}.csv')] + sorted(
      glob.glob(os.path.join(outdir, f'{prefix}.process*.csv')))
  return {r['image']: r for path in paths for r in read_csv(path)
          if r.get('image')}
