"""What every optimisation here shares (an inversion, a learned attribute):
the learning-rate ramp, Adam per group, and when LPIPS enters the loss."""

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def lr_ramp(t: Array, rampdown: float = 0.25, rampup: float = 0.05) -> Array:
  """rosinality's (and NVIDIA's) projector schedule, a factor in [0, 1]."""
  ramp = jnp.minimum(1.0, (1.0 - t) / rampdown)
  ramp = 0.5 - 0.5 * jnp.cos(ramp * math.pi)
  return ramp * jnp.minimum(1.0, t / rampup)


def make_optimizer(labels: Callable[[Any], Any], lr: float, steps
                   ) -> optax.GradientTransformation:
  """Adam(0.9, 0.999, 1e-8) per group: leaves that `labels(state)` calls
  'scheduled' follow the ramp over `steps`, 'constant' ones keep `lr`.
  (`steps` may be traced, so runs of any length share one program.)"""
  schedule = lambda count: lr * lr_ramp(count / steps)
  return optax.multi_transform(
      {'scheduled': optax.adam(schedule), 'constant': optax.adam(lr)}, labels)


def lpips_weight(weight: float, resolution: int, min_resolution: int,
                 on_images: bool = True) -> float:
  """The LPIPS weight in effect: as the official code, LPIPS enters the loss
  only for generators of at least `min_resolution` px, and only where the
  loss compares images (`on_images`: not a forward operator's measurements
  or small observations); 0 where it is off."""
  return weight if on_images and resolution >= min_resolution else 0.0
