"""What every optimisation here shares (an inversion, a learned attribute):
the learning-rate ramp, Adam per group, and when LPIPS enters the loss."""

import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def lr_ramp(t: Array, rampdown: float = 0.25, rampup: float = 0.05) -> Array:
  """rosinality's (and NVIDIA's) projector schedule, a factor in [0, 1]."""
  ramp = jnp.minimum(1.0, (1.0 - t) / rampdown)
  ramp = 0.5 - 0.5 * jnp.cos(ramp * math.pi)
  return ramp * jnp.minimum(1.0, t / rampup)


# The official code builds its Pc, noise, direction and alpha groups without
# a learning rate, so they keep torch's Adam default whatever --lr is.
CONSTANT_LR = 1e-3


def schedule(lr: float, steps) -> optax.Schedule:
  """The ramped learning rate at each update count: lr * lr_ramp(count /
  steps), so 0 at the first update as in the official loop."""
  return lambda count: lr * lr_ramp(count / steps)


def adam(learning_rate, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8, restart: Optional[Callable[[Array], Array]] = None
         ) -> optax.GradientTransformation:
  """torch's Adam, as the official code runs it.

  optax.adam computes the bias corrections 1 - b**t in float32, where
  1 - 0.999 loses 1e-5 to cancellation; torch computes them in float64, and
  over a run the systematic 1e-5 shows in the state. Here they are
  -expm1(t * log b), accurate in float32. The state is optax's
  ScaleByAdamState, so checkpoints keep their layout.

  `restart(count)` names the update count a stage began at: there the
  moments start afresh, as a new torch optimiser's would (staged methods
  build one per stage).
  """
  log_b1, log_b2 = math.log(b1), math.log(b2)

  def init(params):
    return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32),
                                  mu=optax.tree.zeros_like(params),
                                  nu=optax.tree.zeros_like(params))

  def update(updates, state, params=None):
    del params
    mu, nu, begun = state.mu, state.nu, 0
    if restart is not None:
      begun = restart(state.count)
      fresh = state.count == begun
      mu, nu = jax.tree_util.tree_map(
          lambda m: jnp.where(fresh, jnp.zeros_like(m), m), (mu, nu))
    mu = optax.tree.update_moment(updates, mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, nu, b2, 2)
    count = optax.safe_increment(state.count)
    t = (count - begun).astype(jnp.float32)
    c1, c2 = -jnp.expm1(t * log_b1), -jnp.expm1(t * log_b2)
    updates = jax.tree_util.tree_map(
        lambda m, v: (m / c1) / (jnp.sqrt(v / c2) + eps), mu, nu)
    return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

  return optax.chain(optax.GradientTransformation(init, update),
                     optax.scale_by_learning_rate(learning_rate))


def make_optimizer(labels: Callable[[Any], Any], lr: float, steps
                   ) -> optax.GradientTransformation:
  """`adam` (0.9, 0.999, 1e-8) per group: leaves that `labels(state)` calls
  'scheduled' follow `schedule(lr, steps)`, 'constant' ones keep
  CONSTANT_LR. (`steps` may be traced, so runs of any length share one
  program.)"""
  return optax.multi_transform(
      {'scheduled': adam(schedule(lr, steps)),
       'constant': adam(CONSTANT_LR)}, labels)


def lpips_weight(weight: float, resolution: int, min_resolution: int,
                 on_images: bool = True) -> float:
  """The LPIPS weight in effect: as the official code, LPIPS enters the loss
  only for generators of at least `min_resolution` px, and only where the
  loss compares images (`on_images`: not a forward operator's measurements
  or small observations); 0 where it is off."""
  return weight if on_images and resolution >= min_resolution else 0.0
