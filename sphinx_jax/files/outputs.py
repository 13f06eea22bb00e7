"""Writing results: per-image files, the metrics table, the progress line.

Every file is written to a temporary name and renamed, and every metrics row
is appended with one write and flushed, so a crash never leaves a half-written
PNG or CSV row.
"""

import json
import os
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image

from sphinx_jax.files import images

METRICS_COLUMNS = ('image', 'method', 'steps', 'psnr', 'ssim', 'lpips',
                   'seconds', 'psnr_mean', 'ssim_mean', 'lpips_mean')
GIF_MAX_SIZE = 256
# std.png shows the per-pixel standard deviation (in [-1, 1] image units)
# times STD_GAIN: white is a standard deviation of 1/STD_GAIN.
STD_GAIN = 2.0


def atomic_write(path: str, write) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-')
  try:
    with os.fdopen(fd, 'wb') as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def save_gif(frames: Sequence[np.ndarray], path: str, ms_per_frame: int = 100
             ) -> None:
  """uint8 (H, W, 3) frames -> an animated GIF, at most GIF_MAX_SIZE px."""
  pics = [Image.fromarray(f) for f in frames]
  if pics[0].width > GIF_MAX_SIZE:
    pics = [p.resize((GIF_MAX_SIZE, GIF_MAX_SIZE), Image.LANCZOS) for p in pics]
  atomic_write(path, lambda f: pics[0].save(
      f, format='GIF', save_all=True, append_images=pics[1:],
      duration=ms_per_frame, loop=0))


def write_json(obj: Any, path: str) -> None:
  atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def write_codes(directory: str, tree: dict[str, Any],
                config_json: dict[str, Any]) -> None:
  """`<directory>/state` (an Orbax checkpoint of `tree`: the optimised
  `state`, `wplus_mean` and, for SPHInX, `content_mean`) and
  `<directory>/config.json`: the codes `sphinx_jax.edit` reads.

  Under jax.distributed every process must call this with the same `tree`:
  Orbax saves host arrays with all processes and writes them from process 0,
  which also writes config.json.
  """
  path = os.path.abspath(directory)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(path, 'state'), tree, force=True)
  checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    write_json(config_json, os.path.join(path, 'config.json'))


def write_image_results(directory: str, target: np.ndarray,
                        reconstruction: np.ndarray, mean: np.ndarray,
                        std: np.ndarray, frames: Sequence[np.ndarray],
                        observation: Optional[np.ndarray] = None) -> None:
  """target.png, reconstruction.png, mean.png, std.png, progress.gif and,
  for restoration, observation.png."""
  pictures = [('target', target), ('reconstruction', reconstruction),
              ('mean', mean)]
  if observation is not None:
    pictures.append(('observation', observation))
  for name, img in pictures:
    images.save_png(images.to_uint8(img), os.path.join(directory, f'{name}.png'))
  images.save_png(images.to_uint8(np.asarray(std) * STD_GAIN * 2 - 1),
                  os.path.join(directory, 'std.png'))
  save_gif(frames, os.path.join(directory, 'progress.gif'))


def _cell(value: Any) -> str:
  return f'{value:.6g}' if isinstance(value, (float, np.floating)) else str(value)


def write_csv(path: str, rows: Sequence[dict[str, Any]],
              columns: Sequence[str] = METRICS_COLUMNS) -> None:
  """Rewrites `path` atomically: the header, then a line per row (a missing
  cell is empty, floats to 6 significant digits)."""
  lines = [','.join(columns)] + [','.join(_cell(r.get(c, '')) for c in columns)
                                 for r in rows]
  atomic_write(path, lambda f: f.write(('\n'.join(lines) + '\n').encode()))


class MetricsTable:
  """`metrics.csv` in append mode; one flushed write per row."""

  def __init__(self, path: str):
    self.path = path
    if not os.path.exists(path) or os.path.getsize(path) == 0:
      self._append(','.join(METRICS_COLUMNS))

  def _append(self, line: str) -> None:
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      os.write(fd, (line + '\n').encode())
      os.fsync(fd)
    finally:
      os.close(fd)

  def add(self, row: dict[str, Any]) -> None:
    self._append(','.join(_cell(row[c]) for c in METRICS_COLUMNS))


def format_table(rows: Sequence[dict[str, Any]]) -> str:
  """The end-of-run summary: one line per image, then the means."""
  cols = ('image', 'method', 'psnr', 'ssim', 'lpips', 'psnr_mean', 'seconds')
  width = max([len('image'), len('mean')] + [len(r['image']) for r in rows])
  lines = [f'{"image":<{width}}  {"method":<11} {"psnr":>7} {"ssim":>6} '
           f'{"lpips":>6} {"psnr(mean)":>10} {"seconds":>8}']
  for r in rows + ([{'image': 'mean', 'method': rows[0]['method'],
                     **{c: float(np.mean([x[c] for x in rows]))
                        for c in cols[2:]}}] if len(rows) > 1 else []):
    lines.append(f'{r["image"]:<{width}}  {r["method"]:<11} {r["psnr"]:7.2f} '
                 f'{r["ssim"]:6.3f} {r["lpips"]:6.3f} {r["psnr_mean"]:10.2f} '
                 f'{r["seconds"]:8.1f}')
  return '\n'.join(lines)


class Progress:
  """A one-line progress display: step, loss and throughput, on stderr."""

  def __init__(self, label: str, steps: int, num_images: int,
               interval: float = 0.5):
    self.label, self.steps, self.num_images = label, steps, num_images
    self.interval = interval
    self.start = self.last = time.perf_counter()
    self.reported = 0
    self.tty = sys.stderr.isatty()

  def update(self, step: int, losses) -> None:
    now = time.perf_counter()
    done = step + 1
    final = done == self.steps
    if self.tty:
      due = now - self.last >= self.interval
    else:  # a log file gets a line per tenth of the run
      tenth = max(1, self.steps // 10)
      due = done // tenth > self.reported // tenth
    self.reported = done
    if not (due or final):
      return
    self.last = now
    rate = self.num_images * done / max(now - self.start, 1e-9)
    line = (f'{self.label} step {done}/{self.steps} '
            f'loss {float(np.mean(np.asarray(losses))):.4f} '
            f'{rate:.1f} image-steps/s ({rate / self.steps:.3f} images/s)')
    sys.stderr.write(('\r' + line + ('\n' if final else '')) if self.tty
                     else line + '\n')
    sys.stderr.flush()
