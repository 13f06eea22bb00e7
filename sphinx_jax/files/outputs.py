"""An inversion's results: each image's files and the metrics table.

Every file is written to a temporary name and renamed, and every metrics row
is appended with one write and flushed (files/atomic.py), so a crash never
leaves a half-written PNG or CSV row.
"""

import csv
import os
from typing import Any, Optional, Sequence

import numpy as np

from sphinx_jax.files import animation, atomic, images

METRICS_COLUMNS = ('image', 'method', 'steps', 'psnr', 'ssim', 'lpips',
                   'seconds', 'psnr_mean', 'ssim_mean', 'lpips_mean',
                   'robust_psnr')
# std.png shows the per-pixel standard deviation (in [-1, 1] image units)
# times STD_GAIN: white is a standard deviation of 1/STD_GAIN.
STD_GAIN = 2.0


def write_image_results(directory: str, target: np.ndarray,
                        reconstruction: np.ndarray, mean: np.ndarray,
                        std: np.ndarray, frames: Sequence[np.ndarray],
                        observation: Optional[np.ndarray] = None,
                        reconstruction_observed: Optional[np.ndarray] = None
                        ) -> None:
  """target.png, reconstruction.png, mean.png, std.png, progress.gif and,
  where given, observation.png and reconstruction_observed.png."""
  pictures = [('target', target), ('reconstruction', reconstruction),
              ('mean', mean), ('observation', observation),
              ('reconstruction_observed', reconstruction_observed)]
  pictures = [(name, img) for name, img in pictures if img is not None]
  for name, img in pictures:
    images.save_png(images.to_uint8(img), os.path.join(directory, f'{name}.png'))
  images.save_png(images.to_uint8(np.asarray(std) * STD_GAIN * 2 - 1),
                  os.path.join(directory, 'std.png'))
  animation.save_gif(frames, os.path.join(directory, 'progress.gif'))


def _cell(value: Any) -> str:
  return f'{value:.6g}' if isinstance(value, (float, np.floating)) else str(value)


def write_csv(path: str, rows: Sequence[dict[str, Any]],
              columns: Sequence[str] = METRICS_COLUMNS) -> None:
  """Rewrites `path` atomically: the header, then a line per row (a missing
  cell is empty, floats to 6 significant digits)."""
  lines = [','.join(columns)] + [','.join(_cell(r.get(c, '')) for c in columns)
                                 for r in rows]
  atomic.write_file(path,
                    lambda f: f.write(('\n'.join(lines) + '\n').encode()))


class MetricsTable:
  """`metrics.csv` in append mode; one flushed write per row."""

  def __init__(self, path: str):
    self.path = path
    if not os.path.exists(path) or os.path.getsize(path) == 0:
      atomic.append_line(path, ','.join(METRICS_COLUMNS))

  def add(self, row: dict[str, Any]) -> None:
    atomic.append_line(self.path,
                       ','.join(_cell(row[c]) for c in METRICS_COLUMNS))


def read_csv(path: str) -> list[dict[str, str]]:
  """The rows of a CSV file written here (none if it does not exist)."""
  if not os.path.exists(path):
    return []
  with open(path, newline='') as f:
    return list(csv.DictReader(f))
