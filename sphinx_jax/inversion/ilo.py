"""ILO, intermediate layer optimisation (Daras et al., ICML 2021), as its
official code (giannisdaras/ilo, configs/config.yaml) runs it.

Stage 0 optimises per-layer latents z (mapped to W+ by a fitted Gaussian
and a leaky ReLU, ILO's "MappingProxy") and the noise maps through the whole
generator. Stage k >= 1 starts at block k: the features after block k - 1,
computed at the stage's start, become a variable beside the latents, and
the blocks before it are left behind. Each stage has its own Adam and its
own learning-rate ramp, and the noise maps of blocks 0..k+2 are optimised in
stage k (ILO's noise_list). After every update the latents' rows and the
noise maps are put back on their spheres, and each variable optionally onto
an l1 ball around its value at the stage's start (`radius_*`).

Where ours differs from that code (README, "Methods"):
- blocks continue from the features AND the RGB skip after block k - 1 (the
  skip held fixed), so a stage's image is the generator's own; ILO's code
  restarts the skip, dropping the earlier blocks' RGB;
- its geocross term takes `latent_z[2 * start_layer:]`, a slice of the
  batch axis, which is empty after stage 0 for one image: the term acts in
  stage 0 only, and so it does here;
- ILO returns the image of the lowest MSE seen; like every method here the
  reconstruction is the last step's image.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from sphinx_jax.inversion import methods, objective, stages as stages_lib
from sphinx_jax.models.generator import Generator, sample_w

Array = jax.Array
STAGES = (50, 50, 25, 25)  # ILO's steps per layer (lr 0.1 in each)
RAMPDOWN = 0.75  # ILO's get_lr default


def project_l1_ball(x: Array, radius) -> Array:
  """The nearest point to x (as one vector) with l1 norm <= radius (Duchi
  et al. 2008, by sorting)."""
  flat = x.reshape(-1)
  size = jnp.abs(flat)
  desc = jnp.sort(size)[::-1]
  total = jnp.cumsum(desc)
  rank = jnp.arange(1, flat.size + 1, dtype=flat.dtype)
  count = jnp.sum(desc * rank > total - radius)
  theta = (total[jnp.maximum(count, 1) - 1] - radius) / jnp.maximum(count, 1)
  shrunk = jnp.sign(flat) * jnp.maximum(size - theta, 0.0)
  return jnp.where(jnp.sum(size) <= radius, flat, shrunk).reshape(x.shape)


def geocross(latent: Array) -> Array:
  """ILO's (and PULSE's) geodesic cross loss between the (n, d) latents'
  rows: the mean squared angle, times d / 8."""
  diff = latent[:, None] - latent[None]
  same = latent[:, None] + latent[None]
  angle = 2 * jnp.arctan2(jnp.sqrt(jnp.sum(diff**2, -1) + 1e-9),
                          jnp.sqrt(jnp.sum(same**2, -1) + 1e-9))
  return jnp.mean(angle**2 * latent.shape[-1]) / 8.0


def _onto_sphere(x: Array, like: Array, axis) -> Array:
  norm = lambda v: jnp.sqrt(jnp.sum(v**2, axis=axis, keepdims=True) + 1e-9)
  return x / norm(x) * norm(like)


@dataclasses.dataclass(frozen=True)
class Ilo(methods.Method):
  """ILO: stage k optimises the latents, the noise maps and the features
  entering block k.

  Attributes:
    stages: relative stage lengths (stages.py), at most one per block.
    gauss_mean, gauss_std: the fitted Gaussian of W before its last leaky
      ReLU, per coordinate (set by `for_generator`).
    radius_latent, radius_noise, radius_hidden: l1 radii per stage (the
      last repeats; empty: no projection) of the latents, of each noise map
      and of the features, around their values at the stage's start.
    geocross_weight: ILO's geocross weight.
  """
  name = 'ilo'
  default_lr = 0.1  # ILO's rate in every stage
  editable = False  # its image starts from optimised features
  stages: tuple[int, ...] = STAGES
  gauss_mean: tuple[float, ...] = ()
  gauss_std: tuple[float, ...] = ()
  radius_latent: tuple[float, ...] = ()
  radius_noise: tuple[float, ...] = ()
  radius_hidden: tuple[float, ...] = ()
  geocross_weight: float = 0.01

  @classmethod
  def for_generator(cls, g, settings=None, samples: int = 10_000):
    # w = lrelu(u) with slope 0.2: u recovered by slope 5 below zero.
    u = sample_w(g, samples)
    u = jnp.where(u > 0, u, 5.0 * u)
    radii = {} if settings is None else {
        f'radius_{k}': tuple(getattr(settings, f'ilo_radius_{k}'))
        for k in ('latent', 'noise', 'hidden')}
    return cls(stages=STAGES[:g.num_blocks],
               gauss_mean=tuple(map(float, u.mean(0))),
               gauss_std=tuple(map(float, u.std(0, ddof=1))), **radii)

  @classmethod
  def from_record(cls, record, g):
    del record
    return cls(stages=STAGES[:g.num_blocks])

  def _to_w(self, latent: Array) -> Array:
    mean = jnp.asarray(self.gauss_mean or 0.0, jnp.float32)
    std = jnp.asarray(self.gauss_std or 1.0, jnp.float32)
    return jax.nn.leaky_relu(std * latent + mean, 0.2)

  def _stage(self, clock: methods.Clock) -> Array:
    return stages_lib.locate(self.stages, clock.step, clock.steps)[0]

  def init(self, key, g):
    k_latent, k_noise = jax.random.split(key)
    entering = [4 * 2**k for k in range(len(self.stages) - 1)]
    latent = jax.random.normal(k_latent, (g.n_latent, g.w_dim))
    noise = methods.init_noise(k_noise, g)
    hidden = [jnp.zeros((r, r, g.arch.channel(r))) for r in entering]
    return {'latent': latent, 'noise': noise, 'hidden': hidden,
            'skip': [jnp.zeros((r, r, 3)) for r in entering],
            'anchor': {'latent': latent, 'noise': noise, 'hidden': hidden}}

  def _image(self, state, wplus, noise, stage, g) -> Array:
    """The image from block `stage` on (0: the whole generator)."""
    def from_block(k):
      if k == 0:
        return lambda: methods.synthesize(g, wplus, noise, None)
      return lambda: methods.synthesize(
          g, wplus, noise, None, start=k,
          hidden=(state['hidden'][k - 1],
                  jax.lax.stop_gradient(state['skip'][k - 1])))
    return jax.lax.switch(stage, [from_block(k)
                                  for k in range(len(self.stages))])

  def render(self, state, draw, clock, g):
    del draw
    stage = self._stage(clock)
    wplus = self._to_w(state['latent'])
    # Stage k optimises the noise maps of blocks 0..k+2 (ILO's noise_list).
    noise = [jnp.where(i < 5 + 2 * stage, n, jax.lax.stop_gradient(n))
             for i, n in enumerate(state['noise'])]
    return self._image(state, wplus, noise, stage, g), wplus, None

  def decode(self, state, wplus, content, g):
    del content
    return self._image(state, wplus, state['noise'], len(self.stages) - 1, g)

  def begin(self, state, key, clock, g):
    del key
    stage, first, _ = stages_lib.locate(self.stages, clock.step, clock.steps)

    def enter(k):
      def run(state):
        hidden = (None if k == 1 else
                  (state['hidden'][k - 2], state['skip'][k - 2]))
        x, img = methods.synthesize(g, self._to_w(state['latent']),
                                    state['noise'], None, start=k - 1,
                                    stop=k, hidden=hidden)
        state = {**state,
                 'hidden': [x if j == k - 1 else h
                            for j, h in enumerate(state['hidden'])],
                 'skip': [img if j == k - 1 else s
                          for j, s in enumerate(state['skip'])]}
        return {**state, 'anchor': {key: state[key] for key in
                                    ('latent', 'noise', 'hidden')}}
      return run

    def start(state):
      return jax.lax.switch(stage, [lambda s: s] + [
          enter(k) for k in range(1, len(self.stages))], state)

    return jax.lax.cond(clock.step == first, start, lambda s: s, state)

  def regularizer(self, state, clock, key, g, lpips_params):
    del key, g, lpips_params
    return jnp.where(self._stage(clock) == 0,
                     self.geocross_weight * geocross(state['latent']), 0.0)

  def post_update(self, state, clock):
    stage = self._stage(clock)
    anchor = state['anchor']
    latent = _onto_sphere(state['latent'], anchor['latent'], -1)
    noise = [_onto_sphere(n, a, None)
             for n, a in zip(state['noise'], anchor['noise'])]
    hidden = state['hidden']

    def ball(x, centre, radii):
      if not radii:
        return x
      radius = jnp.asarray(radii, jnp.float32)[jnp.minimum(stage,
                                                           len(radii) - 1)]
      return centre + project_l1_ball(x - centre, radius)

    latent = ball(latent, anchor['latent'], self.radius_latent)
    noise = [ball(n, a, self.radius_noise)
             for n, a in zip(noise, anchor['noise'])]
    hidden = [ball(h, a, self.radius_hidden)
              for h, a in zip(hidden, anchor['hidden'])]
    return {**state, 'latent': latent, 'noise': noise, 'hidden': hidden}

  def optimizer(self, lr, steps, schedule_all):
    del schedule_all  # one group, as ILO's

    def rate(stage, first, length, count):
      del stage
      return lr * objective.lr_ramp((count - first) / length, RAMPDOWN)

    return stages_lib.optimizer(
        self.stages, {'scheduled': rate},
        lambda state: methods.label_all(state, 'scheduled'), steps)
