"""Animations: progress GIFs, and an edit's numbered frames, GIF and MP4."""

import glob
import os
import re
import shutil
import subprocess
import sys
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from sphinx_jax.files import atomic, images
from sphinx_jax.errors import one_line

GIF_MAX_SIZE = 256


def gif_frames(frames: np.ndarray) -> np.ndarray:
  """(N, H, W, 3) uint8 frames at most GIF_MAX_SIZE pixels a side (Lanczos):
  what a GIF holds, and what a run keeps of its progress frames."""
  frames = np.asarray(frames)
  if frames.shape[1] <= GIF_MAX_SIZE:
    return frames
  size = (GIF_MAX_SIZE, GIF_MAX_SIZE)
  return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.LANCZOS))
                   for f in frames])


def save_gif(frames: Sequence[np.ndarray], path: str, ms_per_frame: int = 100
             ) -> None:
  """uint8 (H, W, 3) frames -> an animated GIF, at most GIF_MAX_SIZE px."""
  pics = [Image.fromarray(f) for f in gif_frames(np.stack(frames))]
  atomic.write_file(path, lambda f: pics[0].save(
      f, format='GIF', save_all=True, append_images=pics[1:],
      duration=ms_per_frame, loop=0))


def write_mp4(frames: Sequence[np.ndarray], path: str, fps: float) -> bool:
  """Encodes uint8 frames with ffmpeg when it is on PATH; never fails: a
  missing or failing ffmpeg is reported in one line. Returns whether the
  file was written."""
  ffmpeg = shutil.which('ffmpeg')
  if ffmpeg is None:
    print(f'skipped {path}: no ffmpeg on PATH', file=sys.stderr)
    return False
  h, w = frames[0].shape[:2]
  try:
    with atomic.replacing(path, suffix='.mp4') as tmp:
      # yuv420p is what players expect (generator sizes are even, as it needs).
      command = [ffmpeg, '-y', '-loglevel', 'error', '-f', 'rawvideo',
                 '-pix_fmt', 'rgb24', '-s', f'{w}x{h}', '-framerate',
                 f'{fps:g}', '-i', '-', '-pix_fmt', 'yuv420p', tmp]
      result = subprocess.run(command, input=np.stack(frames).tobytes(),
                              capture_output=True, check=False)
      if result.returncode != 0:
        raise OSError(one_line(result.stderr.decode(errors='replace')[-300:])
                      or f'exit status {result.returncode}')
  except OSError as e:
    print(f'skipped {path}: ffmpeg failed ({one_line(e)})', file=sys.stderr)
    return False
  return True


def write_frames(outdir: str, pictures: Sequence[np.ndarray],
                 ms_per_frame: int, base: Optional[np.ndarray] = None) -> None:
  """frame_000.png..., base.png (if given), edit.gif and maybe edit.mp4,
  from [-1, 1] images.

  Frame files a previous run left beyond this run's count are removed, so
  the folder holds one animation.
  """
  frames = [images.to_uint8(p) for p in pictures]
  digits = max(3, len(str(len(frames) - 1)))
  names = [f'frame_{i:0{digits}d}.png' for i in range(len(frames))]
  for name, frame in zip(names, frames):
    images.save_png(frame, os.path.join(outdir, name))
  for stale in glob.glob(os.path.join(outdir, 'frame_*.png')):
    name = os.path.basename(stale)
    if re.fullmatch(r'frame_\d+\.png', name) and name not in names:
      os.unlink(stale)
  if base is not None:
    images.save_png(images.to_uint8(base), os.path.join(outdir, 'base.png'))
  save_gif(frames, os.path.join(outdir, 'edit.gif'), ms_per_frame)
  write_mp4(frames, os.path.join(outdir, 'edit.mp4'), 1000 / ms_per_frame)
