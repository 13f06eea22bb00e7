"""The converted generator's directory: `generator.json` (architecture and
provenance) and `params/`, an Orbax checkpoint of
`{'params': <StyleGAN2 tree>, 'w_avg': (w_dim,), 'noise': {'noise_j': (r, r)}}`
(`noise` is absent when the source checkpoint stored no noise maps).

`save_generator` writes it (convert_weights.py, the prior trainer's export),
`load_generator` reads it and checks every tensor's shape.
"""

import functools
import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from sphinx_jax.errors import SphinxError, check_tree
from sphinx_jax.files import atomic
from sphinx_jax.models.generator import Generator
from sphinx_jax.models.stylegan2 import Architecture, StyleGAN2

FORMAT = 'sphinx_jax.generator/1'


def _tree(g: Generator) -> dict[str, Any]:
  tree = {'params': g.params, 'w_avg': g.w_avg}
  if g.noise_const is not None:
    tree['noise'] = {f'noise_{j}': n for j, n in enumerate(g.noise_const)}
  return tree


@functools.lru_cache(maxsize=16)
def expected_tree(arch: Architecture, has_noise: bool) -> dict[str, Any]:
  """Shapes of everything a directory for `arch` must hold (cached: tracing
  the generator's initialisation for them takes 0.1-0.4 s; callers only
  read the tree)."""
  variables = jax.eval_shape(StyleGAN2(arch).init, jax.random.key(0),
                             jnp.zeros((1, arch.z_dim)))
  tree = {'params': variables['params'],
          'w_avg': jax.ShapeDtypeStruct((arch.w_dim,), jnp.float32)}
  if has_noise:
    tree['noise'] = {f'noise_{j}': jax.ShapeDtypeStruct((r, r), jnp.float32)
                     for j, r in enumerate(arch.noise_resolutions)}
  return tree


def architecture_to_json(arch: Architecture) -> dict[str, Any]:
  d = {
      'resolution': arch.resolution, 'z_dim': arch.z_dim, 'w_dim': arch.w_dim,
      'n_mlp': arch.n_mlp, 'lr_mul': arch.lr_mul,
      'channels': {str(r): c for r, c in arch.channels},
      'n_latent': arch.n_latent, 'num_noise': len(arch.noise_resolutions),
  }
  # Written only when set, so unclamped generators keep the original layout.
  if arch.conv_clamp is not None:
    d['conv_clamp'] = arch.conv_clamp
  return d


def architecture_from_json(d: dict[str, Any]) -> Architecture:
  conv_clamp = d.get('conv_clamp')  # absent in directories written before it
  return Architecture(
      resolution=int(d['resolution']), z_dim=int(d['z_dim']),
      w_dim=int(d['w_dim']), n_mlp=int(d['n_mlp']), lr_mul=float(d['lr_mul']),
      channels=tuple(sorted((int(r), int(c)) for r, c in d['channels'].items())),
      conv_clamp=None if conv_clamp is None else float(conv_clamp))


def save_generator(g: Generator, out_dir: str, info: dict[str, Any]) -> None:
  """Writes `g` to `out_dir`, replacing what is there once it is complete
  (an interrupted save leaves the old directory, or none).

  Args:
    g: the generator.
    out_dir: destination.
    info: provenance recorded in generator.json (source file, sha256, ...).
  """
  meta = {'format': FORMAT, 'architecture': architecture_to_json(g.arch),
          'noise_maps': g.noise_const is not None, **info}
  with atomic.replacing_dir(out_dir) as tmp:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(tmp, 'params'),
                      jax.tree_util.tree_map(np.asarray, _tree(g)))
    checkpointer.wait_until_finished()
    with open(os.path.join(tmp, 'generator.json'), 'w') as f:
      json.dump(meta, f, indent=2)


def identity(path: str) -> str:
  """A generator directory by content (the sha256 of its generator.json,
  which records its source's sha256), else by its normalised path."""
  try:
    with open(os.path.join(path, 'generator.json'), 'rb') as f:
      return hashlib.sha256(f.read()).hexdigest()
  except OSError:
    return os.path.normpath(path)


def read_metadata(path: str) -> dict[str, Any]:
  meta_path = os.path.join(path, 'generator.json')
  if not os.path.isdir(path):
    raise SphinxError(f'{path}: no such generator directory (convert a '
                      'checkpoint with convert_weights.py first)')
  try:
    with open(meta_path) as f:
      meta = json.load(f)
  except FileNotFoundError:
    raise SphinxError(f'{path}: not a converted generator (no generator.json)'
                      ) from None
  except (OSError, ValueError) as e:
    raise SphinxError(f'{meta_path}: unreadable ({e})') from None
  if not isinstance(meta, dict) or meta.get('format') != FORMAT:
    raise SphinxError(f'{meta_path}: not a {FORMAT} file')
  return meta


def provenance(path: str) -> dict[str, Any]:
  """Where the directory's weights came from, as generator.json records it:
  the source (file, format and sha256, or the trainer and its data), a
  truncation, where w_avg came from."""
  return {k: v for k, v in read_metadata(path).items()
          if k not in ('format', 'architecture', 'noise_maps')}


def load_generator(path: str) -> Generator:
  """Loads a directory written by `convert_weights.py`."""
  path = os.path.abspath(path)
  meta = read_metadata(path)
  try:
    arch = architecture_from_json(meta['architecture'])
  except (KeyError, TypeError, ValueError) as e:
    raise SphinxError(f'{path}/generator.json: bad architecture ({e})') from None
  expected = expected_tree(arch, bool(meta.get('noise_maps')))
  try:
    tree = ocp.StandardCheckpointer().restore(os.path.join(path, 'params'))
  except Exception as e:  # Orbax raises many types for damaged directories.
    raise SphinxError(f'{path}/params: cannot read the parameters '
                      f'({type(e).__name__}: {str(e).splitlines()[0]})') from None
  check_tree(tree, expected, f'{path}/params', 'checkpoint')
  tree = jax.tree_util.tree_map(jnp.asarray, tree)
  noise = tree.get('noise')
  return Generator(
      arch=arch, params=tree['params'], w_avg=tree['w_avg'],
      noise_const=None if noise is None else tuple(
          noise[f'noise_{j}'] for j in range(len(arch.noise_resolutions))))
