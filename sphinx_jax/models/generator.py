"""A StyleGAN2 generator with its weights: `mapping` and `synthesize`.

Its directory format (what `convert_weights.py` writes and
`load_generator` reads) is files/generator_dir.py.
"""

from typing import Any, Optional, Sequence, Union

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from sphinx_jax.models.stylegan2 import Architecture, StyleGAN2

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

  # The architecture's sizes, read through G (G.resolution, G.n_latent, ...).
  resolution = property(lambda self: self.arch.resolution)
  n_latent = property(lambda self: self.arch.n_latent)
  w_dim = property(lambda self: self.arch.w_dim)
  z_dim = property(lambda self: self.arch.z_dim)

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

  def tuned(self, delta: Any) -> 'Generator':
    """G with `delta` (a tree shaped like params['synthesis']) added to its
    synthesis weights: one image's tuned generator (PTI), kept as a
    difference. A zero delta leaves every weight as it is."""
    synthesis = jax.tree_util.tree_map(lambda p, d: p + d.astype(p.dtype),
                                       self.params['synthesis'], delta)
    return self.replace(params={**self.params, 'synthesis': synthesis})

  @property
  def num_blocks(self) -> int:
    """Synthesis blocks, one per resolution from 4x4 up."""
    return len(self.arch.resolutions)

  def synthesize_blocks(self, wplus: jax.Array, noise: Noise = None,
                        content: Optional[jax.Array] = None, start: int = 0,
                        stop: Optional[int] = None, hidden=None):
    """Part of `synthesize`: blocks `start` to `stop - 1` of the
    `num_blocks` (block k makes resolution 4 * 2**k). Running blocks [0, k)
    then [k, num_blocks) from what the first part returns gives
    `synthesize`'s image, to float rounding: intermediate layers can be
    read, edited or optimised (as ILO does).

    Args:
      wplus, noise, content: as `synthesize` takes them (all rows and maps;
        each block reads its own).
      start: the first block to run; from start > 0, `hidden` must be what
        a run stopping at `start` returned (content is then unused).
      stop: the block to stop before (None: all).
      hidden: (x, img) after block start - 1.

    Returns:
      The image when the last block ran, else (x, img): the features
      (B, r, r, C) and the RGB skip (B, r, r, 3) after block stop - 1.
    """
    stop = self.num_blocks if stop is None else stop
    if not 0 <= start < stop <= self.num_blocks:
      raise ValueError(f'need 0 <= start < stop <= {self.num_blocks}, got '
                       f'start={start}, stop={stop}')
    if (start > 0) != (hidden is not None):
      raise ValueError('hidden is needed exactly when start > 0')
    return self.module.apply({'params': self.params}, wplus,
                             self._noise_maps(noise), content, start, stop,
                             hidden, method=StyleGAN2.synthesize_blocks)

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


def sample_w(g: Generator, samples: int = 10_000, seed: int = 0) -> jax.Array:
  """(samples, w_dim) w = mapping(z) for z drawn from `seed`: the sample
  behind an estimated w_avg and NVIDIA's w spread."""
  z = jax.random.normal(jax.random.key(seed), (samples, g.z_dim))
  return jax.jit(lambda g, z: g.mapping(z))(g, z)


def w_coordinate_spread(g: Generator, samples: int = 10_000) -> jax.Array:
  """(w_dim,) standard deviation of each coordinate of w = mapping(z)."""
  return jnp.std(sample_w(g, samples), axis=0)
