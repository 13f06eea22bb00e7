"""Methods that run in stages (ILO's layers, PTI's pivot then tuning): which
stage a step is in, and an optimiser that begins afresh with each stage.

A method's stages are relative lengths, e.g. ILO's (50, 50, 25, 25): a run
of `steps` gives stage k the steps from floor(steps * c_k / total) on, c_k
the lengths before it, so a run of exactly `total` steps is the original
schedule and longer or shorter runs keep its proportions.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sphinx_jax.inversion import objective

Array = jax.Array
# rate(stage, first step of the stage, its length, count) -> learning rate
Rate = Callable[[Array, Array, Array, Array], Array]


def _starts(stages: tuple[int, ...], steps) -> Array:
  before = np.cumsum((0,) + tuple(stages[:-1]))
  return (jnp.asarray(before, jnp.int32) * steps) // sum(stages)


def locate(stages: tuple[int, ...], step, steps) -> tuple[Array, Array, Array]:
  """(stage, its first step, its length) of `step` in a run of `steps`; the
  step after the last (the final estimate) is in the last stage."""
  starts = _starts(stages, steps)
  index = jnp.sum(step >= starts[1:]).astype(jnp.int32)
  ends = jnp.concatenate([starts[1:], jnp.asarray(steps, jnp.int32)[None]])
  return index, starts[index], ends[index] - starts[index]


def empty_stage(stages: tuple[int, ...], steps: int) -> bool:
  """Whether a run of `steps` leaves some stage without a step."""
  starts = [steps * c // sum(stages)
            for c in np.cumsum((0,) + tuple(stages))]
  return any(b <= a for a, b in zip(starts, starts[1:]))


def fewest_steps(stages: tuple[int, ...]) -> int:
  """The fewest steps from which on no stage is left without one."""
  steps = sum(stages)
  while steps > 1 and not empty_stage(stages, steps - 1):
    steps -= 1
  return steps


def optimizer(stages: tuple[int, ...], rates: dict[str, Rate], labels,
              steps) -> optax.GradientTransformation:
  """Adam per group (`labels(state)` names each leaf's group, a key of
  `rates`), its moments restarted at every stage's first step."""
  where = lambda count: locate(stages, count, steps)

  def schedule(rate):
    return lambda count: rate(*where(count), count)

  return optax.multi_transform(
      {name: objective.adam(schedule(rate), restart=lambda c: where(c)[1])
       for name, rate in rates.items()}, labels)
