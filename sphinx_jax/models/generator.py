"""The converted generator: loading, saving, `mapping` and `synthesize`.

A converted generator is a directory holding `generator.json` (architecture
and provenance) and `params/`, an Orbax checkpoint of
`{'params': <StyleGAN2 tree>, 'w_avg': (w_dim,), 'noise': {'noise_j': (r, r)}}`
(`noise` is absent when the source checkpoint stored no noise maps).
"""

import json
import os
from typing import Any, Optional, Sequence, Union

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from sphinx_jax.errors import SphinxError
from sphinx_jax.models.stylegan2 import Architecture, StyleGAN2

FORMAT = 'sphinx_jax.generator/1'
Noise = Union[None, str, Sequence[jax.Array]]


@flax.struct.dataclass
class Generator:
  """A StyleGAN2 generator with its parameters.

  It is a pytree (parameters are leaves, the architecture is static), so it can
  be passed into `jax.jit`-ed functions as an argument instead of baking the
  weights into the compiled program as constants.

  Attributes:
    arch: the architecture.
    params: the StyleGAN2 module's parameter tree.
    w_avg: (w_dim,) average w, the truncation centre.
    noise_const: stored constant noise maps, each (r, r), in rosinality
      order; None when the checkpoint had none.
    remat: recompute each synthesis block's activations in the backward pass
      rather than storing them (memory for time).
  """
  arch: Architecture = flax.struct.field(pytree_node=False)
  params: Any
  w_avg: jax.Array
  noise_const: Optional[tuple[jax.Array, ...]] = None
  remat: bool = flax.struct.field(pytree_node=False, default=False)

  @property
  def module(self) -> StyleGAN2:
    return StyleGAN2(self.arch, self.remat)

  @property
  def resolution(self) -> int:
    return self.arch.resolution

  @property
  def n_latent(self) -> int:
    return self.arch.n_latent

  @property
  def w_dim(self) -> int:
    return self.arch.w_dim

  @property
  def z_dim(self) -> int:
    return self.arch.z_dim

  @property
  def num_noise(self) -> int:
    return len(self.arch.noise_resolutions)

  def mapping(self, z: jax.Array, truncation_psi: float = 1.0) -> jax.Array:
    """(B, z_dim) -> (B, w_dim), truncated towards `w_avg` by `truncation_psi`."""
    w = self.module.apply({'params': self.params}, z,
                          method=StyleGAN2.mapping)
    if isinstance(truncation_psi, (int, float)) and truncation_psi == 1:
      return w
    return self.w_avg + truncation_psi * (w - self.w_avg)

  def synthesize(self, wplus: jax.Array, noise: Noise = None,
                 content: Optional[jax.Array] = None) -> jax.Array:
    """(B, n_latent, w_dim) W+ -> (B, H, W, 3) image, nominally in [-1, 1].

    Args:
      wplus: W+ codes.
      noise: None for the stored constant noise maps (no noise if there are
        none), "zero" for no noise, or a list of `num_noise` arrays
        broadcastable to (B, r, r, 1), in rosinality order (4x4, then two per
        resolution).
      content: None for the learned 4x4 constant, or (B, 4, 4, C4), the SPHInX
        content code.
    """
    if wplus.ndim != 3 or wplus.shape[1:] != (self.n_latent, self.w_dim):
      raise ValueError(f'wplus must have shape (B, {self.n_latent}, '
                       f'{self.w_dim}), got {wplus.shape}')
    return self.module.apply({'params': self.params}, wplus,
                             self._noise_maps(noise), content,
                             method=StyleGAN2.synthesize)

  def _noise_maps(self, noise: Noise) -> list[Optional[jax.Array]]:
    if noise is None:
      if self.noise_const is None:
        return [None] * self.num_noise
      return [n[None, :, :, None] for n in self.noise_const]
    if isinstance(noise, str):
      if noise != 'zero':
        raise ValueError(f'noise must be None, "zero" or a list, got {noise!r}')
      return [None] * self.num_noise
    if len(noise) != self.num_noise:
      raise ValueError(f'noise must hold {self.num_noise} maps, got {len(noise)}')
    return list(noise)


def _tree(g: Generator) -> dict[str, Any]:
  tree = {'params': g.params, 'w_avg': g.w_avg}
  if g.noise_const is not None:
    tree['noise'] = {f'noise_{j}': n for j, n in enumerate(g.noise_const)}
  return tree


def _expected_tree(arch: Architecture, has_noise: bool) -> dict[str, Any]:
  """Shapes of everything a directory for `arch` must hold."""
  variables = jax.eval_shape(StyleGAN2(arch).init, jax.random.key(0),
                             jnp.zeros((1, arch.z_dim)))
  tree = {'params': variables['params'],
          'w_avg': jax.ShapeDtypeStruct((arch.w_dim,), jnp.float32)}
  if has_noise:
    tree['noise'] = {f'noise_{j}': jax.ShapeDtypeStruct((r, r), jnp.float32)
                     for j, r in enumerate(arch.noise_resolutions)}
  return tree


def check_tree(tree: Any, expected: Any, source: str, what: str) -> None:
  """Raises SphinxError naming the first missing, extra or mis-shaped entry."""
  flat = {jax.tree_util.keystr(k): v
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}
  want = {jax.tree_util.keystr(k): v
          for k, v in jax.tree_util.tree_leaves_with_path(expected)}
  for key in want.keys() - flat.keys():
    raise SphinxError(f'{source}: {what} lacks {key}')
  for key in flat.keys() - want.keys():
    raise SphinxError(f'{source}: {what} has unexpected {key}')
  for key, spec in want.items():
    if tuple(np.shape(flat[key])) != tuple(spec.shape):
      raise SphinxError(f'{source}: {what} {key} has shape '
                        f'{tuple(np.shape(flat[key]))}, expected {tuple(spec.shape)}')


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
  """Writes `g` to the empty or missing directory `out_dir`.

  Args:
    g: the generator.
    out_dir: destination.
    info: provenance recorded in generator.json (source file, sha256, ...).
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  out_dir = os.path.abspath(out_dir)
  meta = {'format': FORMAT, 'architecture': architecture_to_json(g.arch),
          'noise_maps': g.noise_const is not None, **info}
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(out_dir, 'params'),
                    jax.tree_util.tree_map(np.asarray, _tree(g)))
  checkpointer.wait_until_finished()
  with open(os.path.join(out_dir, 'generator.json'), 'w') as f:
    json.dump(meta, f, indent=2)


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


def load_generator(path: str) -> Generator:
  """Loads a directory written by `convert_weights.py`."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(path)
  meta = read_metadata(path)
  try:
    arch = architecture_from_json(meta['architecture'])
  except (KeyError, TypeError, ValueError) as e:
    raise SphinxError(f'{path}/generator.json: bad architecture ({e})') from None
  expected = _expected_tree(arch, bool(meta.get('noise_maps')))
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
