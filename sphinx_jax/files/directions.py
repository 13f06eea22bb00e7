"""Edit directions: `.npy` arrays of shape (w_dim,) or (n_latent, w_dim)
(InterFaceGAN, GANSpace, or a learned attribute's `direction.npy`)."""

import numpy as np

from sphinx_jax.errors import SphinxError, one_line
from sphinx_jax.files import atomic
from sphinx_jax.models.generator import Generator


def save_direction(path: str, direction: np.ndarray) -> None:
  atomic.write_file(path, lambda f: np.save(f, direction))


def load_direction(path: str, g: Generator) -> np.ndarray:
  """A `.npy` direction as (n_latent, w_dim); a (w_dim,) one is repeated
  for every row."""
  try:
    d = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise SphinxError(f'{path}: cannot read the direction ({one_line(e)})'
                      ) from None
  shape = (g.n_latent, g.w_dim)
  if d.shape not in (shape[1:], shape) or d.dtype.kind not in 'fiu':
    raise SphinxError(f'{path}: direction of shape {d.shape} and dtype '
                      f'{d.dtype}; expected numbers of shape ({g.w_dim},) or '
                      f'{shape}')
  if not np.isfinite(d).all():
    raise SphinxError(f'{path}: the direction holds NaN or infinite values')
  return np.broadcast_to(d, shape).astype(np.float32)
