"""Inversion methods: what is optimised per image, and how it feeds G.

A method is a frozen dataclass (hashable, so the compiled step is keyed on
it) that owns everything particular to it: its name, its default learning
rate, whether it has a content code, any set-up it needs from the generator
(`for_generator`), and how ONE image's state (the engine vmaps over the
batch) is initialised, fed to G, grouped for the optimiser, regularised and
projected after each update. The engine never asks for a method by name; a
new method is one class here, listed in METHODS.
"""

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from sphinx_jax.models.generator import Generator, sample_w
from sphinx_jax.models.heads import ContentProjection, StyleProjection

Array = jax.Array
CONTENT_CHANNELS = 8  # channels of SPHInX's content code s


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
  """The interface every method implements.

  Class attributes: `name` (config.method), `default_lr` (used when the
  config leaves lr unset), `has_content` (whether it optimises a content
  code, saved as content_mean).
  """
  name: ClassVar[str]
  default_lr: ClassVar[float]
  has_content: ClassVar[bool] = False

  @classmethod
  def for_generator(cls, g: Generator) -> 'Method':
    """The method set up for `g` (what it must know of G beyond shapes)."""
    del g
    return cls()

  def init(self, key: Array, g: Generator) -> Any:
    """ONE image's initial state pytree."""
    raise NotImplementedError

  def draw(self, key: Array, g: Generator) -> Any:
    """ONE step's random inputs, a pytree (None: the method draws nothing).
    Kept apart from `feed` so that recorded draws can be replayed
    (`Inverter.invert(draws=...)`)."""
    del key, g
    return None

  def feed(self, state: Any, draw: Any, t: Array, g: Generator) -> tuple:
    """(wplus (n_latent, w_dim), noise, content) for one draw: `noise` a
    list of (r, r, 1) maps or None (G's stored noise), `content` (4, 4, C4)
    or None (G's constant); t in [0, 1] is the fraction of the run done."""
    raise NotImplementedError

  def inputs(self, state: Any, key: Array, t: Array, g: Generator) -> tuple:
    """`feed` of a fresh draw from `key`."""
    return self.feed(state, self.draw(key, g), t, g)

  def labels(self, state: Any, schedule_all: bool) -> Any:
    """Each leaf's optimiser group: 'scheduled' (the learning-rate ramp) or
    'constant'."""
    del schedule_all
    return _all(state, 'scheduled')

  def regularizer(self, state: Any) -> Array:
    del state
    return 0.0

  def post_update(self, state: Any) -> Any:
    return state


@dataclasses.dataclass(frozen=True)
class Sphinx(Method):
  """SPHInX: style head Ps (z+ -> W+), content head Pc (s -> 4x4 input) and
  noise maps; z+ and s drawn afresh at every step (vicinal regularisation)."""
  name = 'sphinx'
  default_lr = 1e-3  # the official SPHInX rate
  has_content = True

  @staticmethod
  def _modules(g):
    return (StyleProjection(g.n_latent, g.w_dim),
            ContentProjection(g.arch.channel(4), CONTENT_CHANNELS))

  def init(self, key, g):
    ps, pc = self._modules(g)
    k_ps, k_pc, k_noise = jax.random.split(key, 3)
    return {
        'ps': ps.init(k_ps, jnp.zeros((g.n_latent, g.w_dim)))['params'],
        'pc': pc.init(k_pc, jnp.zeros((4, 4, CONTENT_CHANNELS)))['params'],
        'noise': _init_noise(k_noise, g),
    }

  def draw(self, key, g):
    k_z, k_s = jax.random.split(key)
    return {'zplus': jax.random.normal(k_z, (g.n_latent, g.w_dim)),
            's': jax.random.normal(k_s, (4, 4, CONTENT_CHANNELS))}

  def feed(self, state, draw, t, g):
    del t
    ps, pc = self._modules(g)
    return (ps.apply({'params': state['ps']}, draw['zplus']), state['noise'],
            pc.apply({'params': state['pc']}, draw['s']))

  def labels(self, state, schedule_all):
    # The official code ramps the learning rate of the Ps group only.
    other = 'scheduled' if schedule_all else 'constant'
    return {'ps': _all(state['ps'], 'scheduled'), 'pc': _all(state['pc'], other),
            'noise': _all(state['noise'], other)}


@dataclasses.dataclass(frozen=True)
class WPlus(Method):
  """Image2StyleGAN: W+ from the average w, G's stored noise."""
  name = 'wplus'
  default_lr = 1e-2  # Image2StyleGAN's rate
  optimise_noise: ClassVar[bool] = False

  def init(self, key, g):
    state = {'wplus': jnp.tile(g.w_avg, (g.n_latent, 1))}
    if self.optimise_noise:
      state['noise'] = _init_noise(key, g)
    return state

  def feed(self, state, draw, t, g):
    del draw, t, g
    return state['wplus'], state.get('noise'), None


@dataclasses.dataclass(frozen=True)
class WPlusNoise(WPlus):
  """Image2StyleGAN++: W+ and noise maps (initialised N(0, 1))."""
  name = 'wplus_noise'
  optimise_noise = True


@dataclasses.dataclass(frozen=True)
class WProjector(Method):
  """NVIDIA's stylegan2-ada projector: one w (from w_avg), lr 0.1, Gaussian
  latent noise ramped to zero over the first 75% of the run, noise maps
  optimised with an autocorrelation penalty and renormalised every step.

  Attributes:
    w_std: spread of the generator's w, sqrt(E|w - w_avg|^2) (set by
      `for_generator`; 0 only where shapes alone matter).
  """
  name = 'w'
  default_lr = 1e-1  # NVIDIA's projector's rate
  w_std: float = 0.0
  initial_noise_factor: float = 0.05
  noise_ramp_length: float = 0.75
  regularize_noise_weight: float = 1e5

  @classmethod
  def for_generator(cls, g, samples: int = 10_000):
    w = sample_w(g, samples)
    return cls(w_std=float(jnp.sqrt(jnp.sum(jnp.square(w - g.w_avg)) /
                                    samples)))

  def init(self, key, g):
    return {'w': g.w_avg, 'noise': _init_noise(key, g)}

  def draw(self, key, g):
    return jax.random.normal(key, (g.w_dim,))  # the latent noise, unscaled

  def feed(self, state, draw, t, g):
    scale = self.w_std * self.initial_noise_factor * jnp.maximum(
        0.0, 1.0 - t / self.noise_ramp_length)**2
    return jnp.tile(state['w'] + scale * draw, (g.n_latent, 1)), state['noise'], None

  def regularizer(self, state):
    return self.regularize_noise_weight * noise_regularization(state['noise'])

  def post_update(self, state):
    noise = [(n - n.mean()) * jax.lax.rsqrt(jnp.mean(jnp.square(n - n.mean())))
             for n in state['noise']]
    return {**state, 'noise': noise}


METHODS: dict[str, type[Method]] = {
    m.name: m for m in (Sphinx, WPlus, WPlusNoise, WProjector)}


def get(name: str) -> type[Method]:
  """The method class called `name`."""
  if name not in METHODS:
    raise ValueError(f'unknown method {name!r} (choose from '
                     f'{", ".join(METHODS)})')
  return METHODS[name]
