"""Inversion methods: what is optimised per image, and how it feeds G.

Every method works on ONE image's state (the engine vmaps over the batch):
  init(key, G)            -> state pytree
  inputs(state, key, t, G) -> (wplus (n_latent, w_dim), noise, content)
where `noise` is a list of (r, r, 1) maps or None (G's stored constant noise)
and `content` is (4, 4, C4) or None (G's learned constant); t in [0, 1] is the
fraction of the run done. `labels(state, schedule_all)` names each leaf's
optimiser group: 'scheduled' (the learning-rate ramp) or 'constant'.
"""

import dataclasses
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from sphinx_jax.models.generator import Generator
from sphinx_jax.models.heads import ContentProjection, StyleProjection

Array = jax.Array
CONTENT_CHANNELS = 8  # channels of SPHInX's content code s


def lr_ramp(t: Array, rampdown: float = 0.25, rampup: float = 0.05) -> Array:
  """rosinality's (and NVIDIA's) projector schedule, a factor in [0, 1]."""
  ramp = jnp.minimum(1.0, (1.0 - t) / rampdown)
  ramp = 0.5 - 0.5 * jnp.cos(ramp * math.pi)
  return ramp * jnp.minimum(1.0, t / rampup)


def _init_noise(key: Array, g: Generator) -> list[Array]:
  keys = jax.random.split(key, g.num_noise)
  return [jax.random.normal(k, (r, r, 1))
          for k, r in zip(keys, g.arch.noise_resolutions)]


def _all(state: Any, label: str) -> Any:
  return jax.tree_util.tree_map(lambda _: label, state)


def noise_regularization(noise: list[Array]) -> Array:
  """NVIDIA's projector penalty: squared autocorrelation at shifts of one
  pixel, over a pyramid of 2x average-pooled copies down to 8x8."""
  loss = 0.0
  for n in noise:
    n = n[..., 0]
    while True:
      loss += (jnp.mean(n * jnp.roll(n, 1, axis=0))**2 +
               jnp.mean(n * jnp.roll(n, 1, axis=1))**2)
      if n.shape[0] <= 8:
        break
      n = n.reshape(n.shape[0] // 2, 2, n.shape[1] // 2, 2).mean(axis=(1, 3))
  return loss


@dataclasses.dataclass(frozen=True)
class Method:
  """One inversion method; see the module docstring for the interface."""
  name: str
  init: Callable[[Array, Generator], Any]
  inputs: Callable[[Any, Array, Array, Generator], tuple]
  labels: Callable[[Any, bool], Any]
  regularizer: Callable[[Any], Array] = lambda state: 0.0
  post_update: Callable[[Any], Any] = lambda state: state


def sphinx() -> Method:
  """SPHInX: style head Ps (z+ -> W+), content head Pc (s -> 4x4 input) and
  noise maps; z+ and s drawn afresh at every step (vicinal regularisation)."""

  def modules(g):
    return (StyleProjection(g.n_latent, g.w_dim),
            ContentProjection(g.arch.channel(4), CONTENT_CHANNELS))

  def init(key, g):
    ps, pc = modules(g)
    k_ps, k_pc, k_noise = jax.random.split(key, 3)
    return {
        'ps': ps.init(k_ps, jnp.zeros((g.n_latent, g.w_dim)))['params'],
        'pc': pc.init(k_pc, jnp.zeros((4, 4, CONTENT_CHANNELS)))['params'],
        'noise': _init_noise(k_noise, g),
    }

  def inputs(state, key, t, g):
    del t
    ps, pc = modules(g)
    k_z, k_s = jax.random.split(key)
    zplus = jax.random.normal(k_z, (g.n_latent, g.w_dim))
    s = jax.random.normal(k_s, (4, 4, CONTENT_CHANNELS))
    return (ps.apply({'params': state['ps']}, zplus), state['noise'],
            pc.apply({'params': state['pc']}, s))

  def labels(state, schedule_all):
    # The official code ramps the learning rate of the Ps group only.
    other = 'scheduled' if schedule_all else 'constant'
    return {'ps': _all(state['ps'], 'scheduled'), 'pc': _all(state['pc'], other),
            'noise': _all(state['noise'], other)}

  return Method('sphinx', init, inputs, labels)


def wplus(optimise_noise: bool) -> Method:
  """Image2StyleGAN (W+ from the average w) or, with noise, Image2StyleGAN++."""

  def init(key, g):
    state = {'wplus': jnp.tile(g.w_avg, (g.n_latent, 1))}
    if optimise_noise:
      state['noise'] = _init_noise(key, g)
    return state

  def inputs(state, key, t, g):
    del key, t, g
    return state['wplus'], state.get('noise'), None

  return Method('wplus_noise' if optimise_noise else 'wplus', init, inputs,
                lambda state, _: _all(state, 'scheduled'))


def w_projector(w_std: float, initial_noise_factor: float = 0.05,
                noise_ramp_length: float = 0.75,
                regularize_noise_weight: float = 1e5) -> Method:
  """NVIDIA's stylegan2-ada projector: one w (from w_avg), lr 0.1, Gaussian
  latent noise ramped to zero over the first 75% of the run, noise maps
  optimised with an autocorrelation penalty and renormalised every step.

  Args:
    w_std: spread of the generator's w, sqrt(E|w - w_avg|^2).
  """

  def init(key, g):
    return {'w': g.w_avg, 'noise': _init_noise(key, g)}

  def inputs(state, key, t, g):
    scale = w_std * initial_noise_factor * jnp.maximum(
        0.0, 1.0 - t / noise_ramp_length)**2
    w = state['w'] + scale * jax.random.normal(key, state['w'].shape)
    return jnp.tile(w, (g.n_latent, 1)), state['noise'], None

  def regularizer(state):
    return regularize_noise_weight * noise_regularization(state['noise'])

  def post_update(state):
    noise = [(n - n.mean()) * jax.lax.rsqrt(jnp.mean(jnp.square(n - n.mean())))
             for n in state['noise']]
    return {**state, 'noise': noise}

  return Method('w', init, inputs, lambda state, _: _all(state, 'scheduled'),
                regularizer, post_update)


def w_spread(g: Generator, samples: int = 10_000, seed: int = 0) -> float:
  """sqrt(E|w - w_avg|^2) over `samples` mapped z (NVIDIA's w_std)."""
  z = jax.random.normal(jax.random.key(seed), (samples, g.z_dim))
  w = jax.jit(lambda g, z: g.mapping(z))(g, z)
  return float(jnp.sqrt(jnp.sum(jnp.square(w - g.w_avg)) / samples))


# Each method's learning rate when the config leaves `lr` unset: the official
# SPHInX rate, Image2StyleGAN's, and NVIDIA's projector's.
DEFAULT_LR = {'sphinx': 1e-3, 'wplus': 1e-2, 'wplus_noise': 1e-2, 'w': 1e-1}
METHODS = tuple(DEFAULT_LR)


def get(name: str, w_std: Optional[float] = None) -> Method:
  """The method called `name`; 'w' needs the generator's `w_spread`."""
  if name == 'sphinx':
    return sphinx()
  if name in ('wplus', 'wplus_noise'):
    return wplus(optimise_noise=name == 'wplus_noise')
  if name == 'w':
    if w_std is None:
      raise ValueError("method 'w' needs w_std (methods.w_spread(G))")
    return w_projector(w_std)
  raise ValueError(f'unknown method {name!r} (choose from {", ".join(METHODS)})')
