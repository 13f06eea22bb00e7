"""Inversion methods: what is optimised per image, and how it feeds G.

A method is a frozen dataclass (hashable, so the compiled step is keyed on
it) that owns everything particular to it: its name, its default learning
rate, whether it has a content code, any set-up it needs from the generator
(`for_generator`), and how ONE image's state (the engine vmaps over the
batch) is initialised, rendered, optimised, regularised and projected after
each update. The engine never asks for a method by name; a new method is one
class here, listed in METHODS.

Methods that run in stages (ILO in ilo.py, PTI in pti.py, both built on
stages.py) read their stage from the `Clock` every hook receives.
"""

import dataclasses
from typing import Any, ClassVar, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax

from sphinx_jax.inversion import objective
from sphinx_jax.models.generator import Generator, sample_w
from sphinx_jax.models.heads import ContentProjection, StyleProjection

Array = jax.Array
CONTENT_CHANNELS = 8  # channels of SPHInX's content code s


@flax.struct.dataclass
class Clock:
  """Where a step is in its run: step `step` of `steps` (int32 scalars,
  traced, so runs of any length share one program); after the last step,
  step == steps (the final estimate)."""
  step: Array
  steps: Array

  @property
  def t(self) -> Array:
    """The fraction of the run done, in [0, 1]."""
    return self.step / self.steps


def synthesize(g: Generator, wplus: Array, noise: Optional[list],
               content: Optional[Array], start: int = 0,
               stop: Optional[int] = None, hidden=None) -> Any:
  """ONE image (float32) from ONE image's inputs, computed in the dtype of
  `g`'s weights (the engine passes compute-dtype copies); with `start` or
  `stop`, blocks start..stop-1 as G.synthesize_blocks runs them (an image,
  or the (features, RGB skip) pair after block stop - 1)."""
  dtype = g.w_avg.dtype
  cast = lambda x: x[None].astype(dtype)
  noise = None if noise is None else list(map(cast, noise))
  content = None if content is None else cast(content)
  if start == 0 and stop is None:
    out = g.synthesize(cast(wplus), noise, content)
  else:
    out = g.synthesize_blocks(
        cast(wplus), noise, content, start, stop,
        None if hidden is None else tuple(map(cast, hidden)))
  return jax.tree_util.tree_map(lambda x: x[0].astype(jnp.float32), out)


def init_noise(key: Array, g: Generator) -> list[Array]:
  keys = jax.random.split(key, g.num_noise)
  return [jax.random.normal(k, (r, r, 1))
          for k, r in zip(keys, g.arch.noise_resolutions)]


def label_all(state: Any, label: str) -> Any:
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
  code, saved as content_mean), `stages` (a staged method's relative stage
  lengths), `editable` (whether its image is G of its codes, which edits
  change).
  """
  name: ClassVar[str]
  default_lr: ClassVar[float]
  has_content: ClassVar[bool] = False
  stages: ClassVar[tuple[int, ...]] = ()  # stages.py; (): one stage
  editable: ClassVar[bool] = True  # whether edits of its codes render it

  @classmethod
  def for_generator(cls, g: Generator, settings: Any = None) -> 'Method':
    """The method set up for `g` (what it must know of G beyond shapes) and
    the inversion's settings (engine.Settings; None: the defaults)."""
    del g, settings
    return cls()

  @classmethod
  def from_record(cls, record: dict[str, Any], g: Generator) -> 'Method':
    """The method as far as the shapes of its state go, from the settings a
    run recorded (codes' config.json)."""
    del record, g
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

  def feed(self, state: Any, draw: Any, clock: Clock, g: Generator) -> tuple:
    """(wplus (n_latent, w_dim), noise, content) for one draw: `noise` a
    list of (r, r, 1) maps or None (G's stored noise), `content` (4, 4, C4)
    or None (G's constant)."""
    raise NotImplementedError

  def inputs(self, state: Any, key: Array, clock: Clock, g: Generator) -> tuple:
    """`feed` of a fresh draw from `key`."""
    return self.feed(state, self.draw(key, g), clock, g)

  def render(self, state: Any, draw: Any, clock: Clock, g: Generator
             ) -> tuple[Array, Array, Optional[Array]]:
    """(image, wplus, content) for one draw: by default G of `feed`'s
    inputs."""
    wplus, noise, content = self.feed(state, draw, clock, g)
    return synthesize(g, wplus, noise, content), wplus, content

  def decode(self, state: Any, wplus: Array, content: Optional[Array],
             g: Generator) -> Array:
    """The final image from codes (W+, content) in place of the state's own:
    what an edit of the codes renders. By default G with the state's noise
    maps (`noise_of`)."""
    return synthesize(g, wplus, self.noise_of(state), content)

  def noise_of(self, state: Any) -> Optional[list]:
    """The noise maps the final image uses (None: G's stored noise)."""
    return state.get('noise')

  def begin(self, state: Any, key: Array, clock: Clock, g: Generator) -> Any:
    """The state a step starts from (a stage's set-up); `key` is the step's
    own."""
    del key, clock, g
    return state

  def labels(self, state: Any, schedule_all: bool) -> Any:
    """Each leaf's optimiser group: 'scheduled' (the learning-rate ramp) or
    'constant'."""
    del schedule_all
    return label_all(state, 'scheduled')

  def optimizer(self, lr: float, steps, schedule_all: bool
                ) -> optax.GradientTransformation:
    """The optimiser of a run of `steps` (traced) at base rate `lr`."""
    return objective.make_optimizer(
        lambda state: self.labels(state, schedule_all), lr, steps)

  def regularizer(self, state: Any, clock: Clock, key: Array, g: Generator,
                  lpips_params: Any) -> Array:
    """A term added to the loss; `key` is its own, `g` the compute-dtype
    generator, `lpips_params` LPIPS's weights when the run's loss uses
    LPIPS (else None)."""
    del state, clock, key, g, lpips_params
    return 0.0

  def post_update(self, state: Any, clock: Clock) -> Any:
    del clock
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
        'noise': init_noise(k_noise, g),
    }

  def draw(self, key, g):
    k_z, k_s = jax.random.split(key)
    return {'zplus': jax.random.normal(k_z, (g.n_latent, g.w_dim)),
            's': jax.random.normal(k_s, (4, 4, CONTENT_CHANNELS))}

  def feed(self, state, draw, clock, g):
    del clock
    ps, pc = self._modules(g)
    return (ps.apply({'params': state['ps']}, draw['zplus']), state['noise'],
            pc.apply({'params': state['pc']}, draw['s']))

  def mean_codes(self, state, key, count: int, g) -> tuple[Array, Array]:
    """Mean W+ and content over `count` draws of z+ and s, keyed by
    jax.random.split(key, count): deterministic codes to render from."""
    wplus, content = jax.vmap(
        lambda k: self.inputs(state, k, None, g)[::2])(
            jax.random.split(key, count))
    return wplus.mean(axis=0), content.mean(axis=0)

  def labels(self, state, schedule_all):
    # The official code ramps the learning rate of the Ps group only.
    other = 'scheduled' if schedule_all else 'constant'
    return {'ps': label_all(state['ps'], 'scheduled'), 'pc': label_all(state['pc'], other),
            'noise': label_all(state['noise'], other)}


@dataclasses.dataclass(frozen=True)
class WPlus(Method):
  """Image2StyleGAN: W+ from the average w, G's stored noise."""
  name = 'wplus'
  default_lr = 1e-2  # Image2StyleGAN's rate
  optimise_noise: ClassVar[bool] = False

  def init(self, key, g):
    state = {'wplus': jnp.tile(g.w_avg, (g.n_latent, 1))}
    if self.optimise_noise:
      state['noise'] = init_noise(key, g)
    return state

  def feed(self, state, draw, clock, g):
    del draw, clock, g
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
  def for_generator(cls, g, settings=None):
    del settings
    return cls(w_std=w_spread(g))

  def init(self, key, g):
    return {'w': g.w_avg, 'noise': init_noise(key, g)}

  def draw(self, key, g):
    return jax.random.normal(key, (g.w_dim,))  # the latent noise, unscaled

  def perturbed_w(self, w: Array, draw: Array, t: Array) -> Array:
    """w plus the latent noise, its scale ramped down over t in [0, 1]."""
    scale = self.w_std * self.initial_noise_factor * jnp.maximum(
        0.0, 1.0 - t / self.noise_ramp_length)**2
    return w + scale * draw

  def feed(self, state, draw, clock, g):
    return (jnp.tile(self.perturbed_w(state['w'], draw, clock.t),
                     (g.n_latent, 1)), state['noise'], None)

  def regularizer(self, state, clock, key, g, lpips_params):
    del clock, key, g, lpips_params
    return self.regularize_noise_weight * noise_regularization(state['noise'])

  def post_update(self, state, clock):
    del clock
    return {**state, 'noise': normalized_noise(state['noise'])}


def normalized_noise(noise: list[Array]) -> list[Array]:
  """Each map shifted and scaled to mean 0, variance 1 (NVIDIA's
  projector, after every step)."""
  return [(n - n.mean()) * jax.lax.rsqrt(jnp.mean(jnp.square(n - n.mean())))
          for n in noise]


def w_spread(g: Generator, samples: int = 10_000) -> float:
  """sqrt(E|w - w_avg|^2) over `samples` mapped z: NVIDIA's w_std."""
  w = sample_w(g, samples)
  return float(jnp.sqrt(jnp.sum(jnp.square(w - g.w_avg)) / samples))


# The staged methods build on the classes above, so they are imported last.
from sphinx_jax.inversion import ilo, pti  # pylint: disable=g-import-not-at-top,wrong-import-position

METHODS: dict[str, type[Method]] = {
    m.name: m for m in (Sphinx, WPlus, WPlusNoise, WProjector, ilo.Ilo,
                        pti.Pti)}


def get(name: str) -> type[Method]:
  """The method class called `name`."""
  if name not in METHODS:
    raise ValueError(f'unknown method {name!r} (choose from '
                     f'{", ".join(METHODS)})')
  return METHODS[name]
