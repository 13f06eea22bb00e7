"""PTI, pivotal tuning (Roich et al., 2021), as its official code
(danielroich/PTI, configs/hyperparameters.py, training/coaches/) runs it,
and the same tuning around a SPHInX pivot.

Stage 0 finds the pivot: with `pivot='w'` PTI's W projection, NVIDIA's
projector (methods.WProjector: its latent noise, noise maps and their
regulariser) for 450 of 800 steps at its schedule's rate 0.01 (PTI's
first_inv_lr = 5e-3 only seeds an optimiser whose rate the schedule
overwrites at the first step); with `pivot='sphinx'`, SPHInX itself.
Stage 1 freezes the pivot's codes and tunes this image's own copy of the
synthesis weights, kept as a difference `delta` from the generator's (350
steps, Adam at a constant 3e-4). As PTI, a W pivot is rendered in stage 1
with G's stored noise (its projector optimised noise on a copy of G that it
then drops); a SPHInX pivot keeps its own noise maps and its mean codes over
the vicinal draws.

With `locality`, PTI's locality regulariser joins the tuning stage's loss
(`locality_loss`; off by default, as in PTI). Not carried over (README,
"Methods"): PTI's early stop once LPIPS < 0.06.
"""

import dataclasses

import jax
import jax.numpy as jnp

from sphinx_jax.inversion import methods, objective, stages as stages_lib
from sphinx_jax.models import lpips

Array = jax.Array
STAGES = (450, 350)  # PTI's first_inv_steps, max_pti_steps
# The locality regulariser's settings (PTI's regulizer_alpha, the mapping's
# truncation there, regulizer_l2_lambda = regulizer_lpips_lambda).
LOCALITY_RADIUS = 30.0
LOCALITY_PSI = 0.5
LOCALITY_WEIGHT = 0.1
PIVOTS = ('w', 'sphinx')


@dataclasses.dataclass(frozen=True)
class Pti(methods.Method):
  """Pivotal tuning: a pivot, then the synthesis weights tuned around it.

  Attributes:
    pivot: 'w' (PTI) or 'sphinx' (SPHInX's mean codes).
    projector: the W pivot's projector, set up for the generator.
    tune_lr: the tuning stage's rate (PTI's pti_learning_rate).
    num_vicinal: draws behind a SPHInX pivot's mean codes.
    locality: PTI's locality regulariser in the tuning stage (off, as in
      PTI's defaults).
  """
  name = 'pti'
  pivot: str = 'w'
  projector: methods.WProjector = methods.WProjector()
  tune_lr: float = 3e-4
  num_vicinal: int = 16
  locality: bool = False
  stages = STAGES

  @property
  def default_lr(self) -> float:  # the pivot's
    return 1e-2 if self.pivot == 'w' else methods.Sphinx.default_lr

  @property
  def has_content(self) -> bool:
    return self.pivot == 'sphinx'

  @classmethod
  def for_generator(cls, g, settings=None):
    pivot = 'w' if settings is None else settings.pivot
    return cls(pivot=pivot,
               projector=methods.WProjector(w_std=methods.w_spread(g, 600)),
               num_vicinal=16 if settings is None else settings.num_vicinal,
               locality=False if settings is None else settings.pti_locality)

  @classmethod
  def from_record(cls, record, g):
    del g
    return cls(pivot=record.get('pivot', 'w'))

  def _pivot(self) -> methods.Method:
    return self.projector if self.pivot == 'w' else methods.Sphinx()

  def _stage(self, clock) -> tuple[Array, methods.Clock]:
    """The stage of `clock`'s step, and the clock within that stage (the
    pivot's methods run on it as on a run of their own)."""
    stage, first, length = stages_lib.locate(self.stages, clock.step,
                                             clock.steps)
    return stage, methods.Clock(clock.step - first, length)

  def init(self, key, g):
    state = self._pivot().init(key, g)
    state['delta'] = jax.tree_util.tree_map(jnp.zeros_like,
                                            g.params['synthesis'])
    if self.pivot == 'sphinx':
      state['codes'] = {'wplus': jnp.zeros((g.n_latent, g.w_dim)),
                        'content': jnp.zeros((4, 4, g.arch.channel(4)))}
    return state

  def draw(self, key, g):
    return self._pivot().draw(key, g)

  def noise_of(self, state):
    return None if self.pivot == 'w' else state['noise']

  def _codes(self, state, g):
    """The frozen pivot: (W+, noise maps or None, content or None)."""
    if self.pivot == 'w':
      return jnp.tile(state['w'], (g.n_latent, 1)), None, None
    return (state['codes']['wplus'], state['noise'],
            state['codes']['content'])

  def decode(self, state, wplus, content, g):
    return methods.synthesize(g.tuned(state['delta']), wplus,
                              self.noise_of(state), content)

  def render(self, state, draw, clock, g):
    stage, local = self._stage(clock)

    def pivot():
      return self._pivot().render(state, draw, local, g)

    def tuned():
      wplus, _, content = jax.lax.stop_gradient(self._codes(state, g))
      return self.decode(state, wplus, content, g), wplus, content

    return jax.lax.switch(stage, [pivot, tuned])

  def begin(self, state, key, clock, g):
    if self.pivot == 'w':
      return state
    stage, local = self._stage(clock)

    def freeze(state):
      wplus, content = methods.Sphinx().mean_codes(state, key,
                                                   self.num_vicinal, g)
      return {**state, 'codes': {'wplus': wplus, 'content': content}}

    return jax.lax.cond((local.step == 0) & (stage == 1), freeze,
                        lambda s: s, state)

  def regularizer(self, state, clock, key, g, lpips_params):
    stage, local = self._stage(clock)
    pivot = self._pivot().regularizer(state, local, key, g, lpips_params)
    if not self.locality:
      return jnp.where(stage == 0, pivot, 0.0)
    return jax.lax.cond(stage == 0, lambda: pivot, lambda: self.locality_loss(
        state, key, g, lpips_params))

  def locality_loss(self, state, key, g, lpips_params) -> Array:
    """PTI's locality regulariser: at a w drawn from G's mapping (truncated
    by 0.5) and moved to LOCALITY_RADIUS from the pivot along its direction,
    the tuned G's image (no noise, G's constant) against G's own, by L2 and,
    when the run's loss has it, LPIPS, each weighted 0.1."""
    pivot = jax.lax.stop_gradient(self._codes(state, g)[0])
    w = g.mapping(jax.random.normal(key, (1, g.z_dim)), LOCALITY_PSI)[0]
    away = w - pivot
    code = pivot + LOCALITY_RADIUS * away / jnp.linalg.norm(away)
    zero = [jnp.zeros((r, r, 1)) for r in g.arch.noise_resolutions]
    tuned = methods.synthesize(g.tuned(state['delta']), code, zero, None)
    own = jax.lax.stop_gradient(methods.synthesize(g, code, zero, None))
    loss = LOCALITY_WEIGHT * jnp.mean(jnp.square(tuned - own))
    if lpips_params is not None:
      cast = lambda x: x.astype(jax.tree_util.tree_leaves(lpips_params)[0].dtype)
      loss += LOCALITY_WEIGHT * lpips.lpips(
          lpips_params, cast(tuned), cast(own)).astype(jnp.float32)
    return loss

  def post_update(self, state, clock):
    stage, local = self._stage(clock)
    done = self._pivot().post_update(state, local)
    return jax.tree_util.tree_map(lambda a, b: jnp.where(stage == 0, a, b),
                                  done, state)

  def labels(self, state, schedule_all):
    pivot_keys = [k for k in state if k not in ('delta', 'codes')]
    labels = self._pivot().labels({k: state[k] for k in pivot_keys},
                                  schedule_all)
    return {**labels, **{k: methods.label_all(state[k], 'tune')
                         for k in ('delta', 'codes') if k in state}}

  def optimizer(self, lr, steps, schedule_all):
    def in_stage(which, value):
      return lambda stage, first, length, count: jnp.where(
          stage == which, value(first, length, count), 0.0)

    rates = {
        'scheduled': in_stage(0, lambda first, length, count: lr *
                              objective.lr_ramp((count - first) / length)),
        'constant': in_stage(0, lambda *_: objective.CONSTANT_LR),
        'tune': in_stage(1, lambda *_: self.tune_lr),
    }
    return stages_lib.optimizer(
        self.stages, rates, lambda state: self.labels(state, schedule_all),
        steps)
