"""Rename tables: checkpoint tensors -> a Flax parameter tree.

A table maps each source key to (parameter path 'a/b/c', transform or None).
`apply_table` applies one and accounts for every tensor, NVIDIA legacy.py
style: a missing, unexpected or mis-shaped tensor is refused, never skipped.
Every reader uses it: the generator checkpoints through `generator_tensors`,
which also takes their optional noise maps and w_avg, and SPHInX's heads.
"""

from typing import Any, Callable, Mapping, Optional

import numpy as np
from flax import traverse_util

from sphinx_jax.errors import SphinxError, check_tree
from sphinx_jax.files.generator_dir import expected_tree
from sphinx_jax.models.stylegan2 import Architecture

Table = dict[str, tuple[str, Optional[Callable[[np.ndarray], np.ndarray]]]]
# Called on a key outside the table: True to skip it (a fixed buffer), False
# to refuse it; may raise itself.
Ignored = Callable[[str, np.ndarray], bool]


def tensor_shape(tensors: Mapping[str, Any], key: str, what: str,
                 source: str, ndim: Optional[int] = None) -> tuple[int, ...]:
  """The shape of tensors[key], which must exist (and have `ndim` axes)."""
  if key not in tensors:
    raise SphinxError(f'{source}: {what} lacks {key}')
  shape = tuple(np.shape(tensors[key]))
  if ndim is not None and len(shape) != ndim:
    raise SphinxError(f'{source}: {what} {key} has shape {shape}, expected '
                      f'{ndim} dimensions')
  return shape


def set_path(tree: dict[str, Any], path: str, value: np.ndarray) -> None:
  *parents, leaf = path.split('/')
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def apply_table(tensors: Mapping[str, Any], table: Table, expected: Any,
                what: str, source: str,
                ignored: Optional[Ignored] = None) -> dict[str, Any]:
  """Fills the parameter tree `expected` describes through `table`.

  Args:
    tensors: source key -> array.
    table: the rename table; its paths are `expected`'s leaves.
    expected: the tree's shapes, e.g. `jax.eval_shape(module.init, ...)`'s
      params.
    what: names `tensors` in messages ('g_ema', 'G_ema', 'Gs', 'state dict').
    source: the file, for messages.
    ignored: decides on every key outside `table`; None refuses them all.

  Returns:
    The parameter tree of float32 numpy arrays.

  Raises:
    SphinxError: naming the first key that is missing, unexpected, or whose
      shape does not give its parameter the expected shape.
  """
  shapes = traverse_util.flatten_dict(expected, sep='/')
  params = {}
  for key, (path, fn) in table.items():
    if key not in tensors:
      raise SphinxError(f'{source}: {what} lacks {key}')
    value = np.asarray(tensors[key], np.float32)
    want = tuple(shapes[path].shape)
    try:
      out = np.array(fn(value) if fn else value)  # contiguous copy
    except (ValueError, IndexError):  # an axis the tensor does not have
      out = None
    if out is None or out.shape != want:
      raise SphinxError(f'{source}: {what} {key} has shape {value.shape}, '
                        f'which does not give {path} its shape {want}')
    set_path(params, path, out)
  for key, value in tensors.items():
    if key not in table and not (ignored and ignored(key, value)):
      raise SphinxError(f'{source}: {what} has unexpected tensor {key}')
  # Guards the table itself: it must fill every parameter.
  check_tree(params, expected, source, what)
  return params


def w_avg_vector(value: Any, arch: Architecture, name: str,
                 source: str) -> np.ndarray:
  """The (w_dim,) average w from `value`, which may have leading unit axes."""
  w_avg = np.asarray(value, np.float32)
  if w_avg.size != arch.w_dim or w_avg.shape[-1:] != (arch.w_dim,):
    raise SphinxError(f'{source}: {name} has shape {w_avg.shape}, expected '
                      f'({arch.w_dim},)')
  return w_avg.reshape(arch.w_dim)


def generator_tensors(sd: dict[str, np.ndarray], arch: Architecture,
                      table: Table, noise_keys: list[str],
                      w_avg_key: Optional[str], ignored: Ignored, what: str,
                      source: str) -> tuple[dict[str, Any],
                                            Optional[list[np.ndarray]],
                                            Optional[np.ndarray]]:
  """`apply_table` for a generator, plus its optional noise maps and w_avg.

  Args:
    sd: source key -> tensor.
    arch: the architecture the table was made for.
    table: the rename table.
    noise_keys: the constant noise maps' keys in rosinality order; all or
      none of them may be present.
    w_avg_key: key of the average w, if the format keeps it in `sd`.
    ignored: decides on every other key (see `apply_table`).
    what: names `sd` in messages ('g_ema', 'G_ema', 'Gs').
    source: the file, for messages.

  Returns:
    (parameter tree, noise maps as (r, r) arrays or None, w_avg or None).
  """
  taken = {*noise_keys, w_avg_key}
  params = apply_table({k: v for k, v in sd.items() if k not in taken}, table,
                       expected_tree(arch, False)['params'], what, source,
                       ignored)
  noise = None
  if any(k in sd for k in noise_keys):
    noise = []
    for key, r in zip(noise_keys, arch.noise_resolutions):
      shape = tensor_shape(sd, key, what, source)
      if np.prod(shape) != r * r or shape[-2:] != (r, r):  # [r, r] or [1, 1, r, r]
        raise SphinxError(f'{source}: {what} {key} has shape {shape}, '
                          f'expected a {r}x{r} map')
      noise.append(np.array(np.reshape(sd[key], (r, r)), np.float32))
  w_avg = None
  if w_avg_key is not None and w_avg_key in sd:
    w_avg = w_avg_vector(sd[w_avg_key], arch, f'{what} {w_avg_key}', source)
  return params, noise, w_avg
