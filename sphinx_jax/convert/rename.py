"""Rename tables: checkpoint tensors -> the canonical parameter tree.

A table maps each source key to (canonical path 'a/b/c', transform or None).
`convert_tensors` applies one and accounts for every tensor, NVIDIA legacy.py
style: a missing, unexpected or mis-shaped tensor is refused, never skipped.
"""

from typing import Any, Callable, Optional

import numpy as np

from sphinx_jax.errors import SphinxError
from sphinx_jax.models.stylegan2 import Architecture

Table = dict[str, tuple[str, Optional[Callable[[np.ndarray], np.ndarray]]]]


def tensor_shape(tensors: dict[str, np.ndarray], key: str, what: str,
                 source: str) -> tuple[int, ...]:
  """The shape of tensors[key]; a missing key is a one-line SphinxError."""
  if key not in tensors:
    raise SphinxError(f'{source}: {what} lacks {key}')
  return tuple(np.shape(tensors[key]))


def set_path(tree: dict[str, Any], path: str, value: np.ndarray) -> None:
  *parents, leaf = path.split('/')
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def convert_tensors(sd: dict[str, np.ndarray], arch: Architecture, table: Table,
                    noise_keys: list[str], w_avg_key: Optional[str],
                    ignored: Callable[[str, np.ndarray], bool], what: str,
                    source: str):
  """Applies `table`; takes the optional noise maps and w_avg; refuses leftovers.

  Args:
    sd: source key -> tensor.
    arch: the architecture the table was made for.
    table: the rename table.
    noise_keys: the constant noise maps' keys in rosinality order; all or
      none of them may be present.
    w_avg_key: key of the average w, if the format keeps it in `sd`.
    ignored: called on every other key; True to skip it (fixed buffers), False
      to refuse it; may raise itself.
    what: names `sd` in messages ('g_ema', 'G_ema', 'Gs').
    source: the file, for messages.

  Returns:
    (parameter tree, noise maps as (r, r) arrays or None, w_avg or None).
  """
  params = {}
  for key, (path, fn) in table.items():
    if key not in sd:
      raise SphinxError(f'{source}: {what} lacks {key}')
    value = np.asarray(sd[key], np.float32)
    set_path(params, path, np.array(fn(value) if fn else value))  # contiguous copy
  used = set(table)
  noise = None
  if any(k in sd for k in noise_keys):
    missing = [k for k in noise_keys if k not in sd]
    if missing:
      raise SphinxError(f'{source}: {what} lacks {missing[0]}')
    noise = []
    for key, r in zip(noise_keys, arch.noise_resolutions):
      value = np.asarray(sd[key], np.float32)
      if value.size != r * r or value.shape[-2:] != (r, r):  # [r, r] or [1, 1, r, r]
        raise SphinxError(f'{source}: {what} {key} has shape {value.shape}, '
                          f'expected a {r}x{r} map')
      noise.append(np.array(value.reshape(r, r)))
    used.update(noise_keys)
  w_avg = None
  if w_avg_key is not None and w_avg_key in sd:
    w_avg = np.asarray(sd[w_avg_key], np.float32)
    if w_avg.shape != (arch.w_dim,):
      raise SphinxError(f'{source}: {what} {w_avg_key} has shape {w_avg.shape}, '
                        f'expected ({arch.w_dim},)')
    used.add(w_avg_key)
  for key, value in sd.items():
    if key not in used and not ignored(key, value):
      raise SphinxError(f'{source}: {what} has unexpected tensor {key} (not a '
                        'StyleGAN2 skip generator of this layout)')
  return params, noise, w_avg
