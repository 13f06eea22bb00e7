"""Image arrays <-> files. Arrays are float NHWC in [-1, 1]."""

import math

import numpy as np
from PIL import Image

from sphinx_jax.files import atomic


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[-1, 1] floats -> uint8, clipping what lies outside (NaN becomes 0)."""
  x = (np.nan_to_num(np.asarray(images, np.float32), nan=-1.0) + 1.0) * 127.5
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
  """(N, H, W, C) -> one (rows*H, columns*W, C) mosaic, blank cells black."""
  n, h, w, c = images.shape
  columns = columns or math.ceil(math.sqrt(n))
  rows = math.ceil(n / columns)
  out = np.zeros((rows * h, columns * w, c), images.dtype)
  for i, img in enumerate(images):
    r, col = divmod(i, columns)
    out[r * h:(r + 1) * h, col * w:(col + 1) * w] = img
  return out


def save_png(image: np.ndarray, path: str) -> None:
  """Writes an (H, W, 3) uint8 array, atomically."""
  atomic.write_file(path, lambda f: Image.fromarray(image).save(f, format='PNG'))
