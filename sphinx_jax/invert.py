"""The inversion engine: a jitted step over a batch of images, vmapped.

Each image carries its own state (heads or codes, noise maps) and its own
Adam state; the generator's and LPIPS's parameters are shared. All random
draws come from keys derived from (seed, the image's identity, step), so an
image's result does not depend on which images share its batch or where it
sits in it.
"""

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sphinx_jax import lpips, methods, metrics
from sphinx_jax.generator import Generator

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the engine needs from the config (see configs/invert.py)."""
  method: str = 'sphinx'
  steps: int = 5000
  lr: Optional[float] = None  # None: the method's default
  lr_schedule: str = 'official'  # or 'all'
  mse_weight: float = 1.0
  lpips_weight: float = 1.5
  lpips_min_resolution: int = 256
  num_vicinal: int = 16
  seed: int = 0

  @classmethod
  def from_config(cls, config) -> 'Settings':
    return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls)})


def image_keys(seed: int, identities: np.ndarray) -> Array:
  """(B,) identities -> (B, 3) keys: init, per-step draws, final estimate."""
  base = jax.random.key(seed)
  return jax.vmap(lambda i: jax.random.split(jax.random.fold_in(base, i), 3))(
      jnp.asarray(identities, jnp.uint32))


def make_optimizer(method: methods.Method, lr: float, steps: int,
                   schedule_all: bool) -> optax.GradientTransformation:
  """Adam(0.9, 0.999, 1e-8) per group; 'scheduled' leaves follow the ramp."""
  schedule = lambda count: lr * methods.lr_ramp(count / steps)
  return optax.multi_transform(
      {'scheduled': optax.adam(schedule), 'constant': optax.adam(lr)},
      lambda state: method.labels(state, schedule_all))


@dataclasses.dataclass
class Result:
  """Per-image outputs of one batch (leading axis: the batch)."""
  state: Any
  reconstruction: np.ndarray  # the last step's draw (the official output)
  mean: np.ndarray  # mean image over num_vicinal draws
  std: np.ndarray  # its per-pixel standard deviation
  wplus_mean: np.ndarray
  content_mean: Optional[np.ndarray]
  losses: np.ndarray  # (B,) final loss


class Inverter:
  """Builds the jitted functions for one generator and one setting."""

  def __init__(self, g: Generator, settings: Settings):
    self.g = g
    self.settings = settings
    self.method = methods.get(settings.method, g)
    self.lr = settings.lr if settings.lr is not None else self.method.default_lr
    self.tx = make_optimizer(self.method, self.lr, settings.steps,
                             settings.lr_schedule == 'all')
    self.use_lpips = (settings.lpips_weight > 0 and
                      g.resolution >= settings.lpips_min_resolution)
    self.lpips_params = lpips.load_params()
    self._init = jax.jit(jax.vmap(self._init_one, in_axes=(0, None)))
    self._features = jax.jit(lambda p, x: lpips.features(p, x))
    self._step = jax.jit(
        jax.vmap(self._step_one, in_axes=(0, 0, 0, 0, 0, None, None, None)),
        donate_argnums=(0, 1))
    self._estimate = jax.jit(
        jax.vmap(self._estimate_one, in_axes=(0, 0, None)),
        static_argnames=())

  # Per-image functions (vmapped above).

  def _init_one(self, keys, g):
    state = self.method.init(keys[0], g)
    return state, self.tx.init(state)

  def _render(self, state, key, t, g):
    wplus, noise, content = self.method.inputs(state, key, t, g)
    noise = None if noise is None else [n[None] for n in noise]
    content = None if content is None else content[None]
    return g.synthesize(wplus[None], noise, content)[0], wplus, content

  def _loss(self, state, key, t, target, target_feats, g, lpips_params):
    image, _, _ = self._render(state, key, t, g)
    s = self.settings
    loss = s.mse_weight * metrics.mse(image, target)
    if self.use_lpips:
      loss += s.lpips_weight * lpips.distance_from_features(
          lpips_params, lpips.features(lpips_params, image), target_feats)
    return loss + self.method.regularizer(state), image

  def _step_one(self, state, opt_state, keys, target, target_feats, step, g,
                lpips_params):
    key = jax.random.fold_in(keys[1], step)
    t = step / self.settings.steps
    (loss, image), grads = jax.value_and_grad(self._loss, has_aux=True)(
        state, key, t, target, target_feats, g, lpips_params)
    updates, opt_state = self.tx.update(grads, opt_state, state)
    state = self.method.post_update(optax.apply_updates(state, updates))
    return state, opt_state, loss, image

  def _estimate_one(self, state, keys, g):
    """Mean and std of the image (Welford), and the mean W+ and content,
    over num_vicinal draws of the method's random inputs."""

    def draw(carry, k):
      n, mean, m2, wplus_sum, content_sum = carry
      image, wplus, content = self._render(
          state, jax.random.fold_in(keys[2], k), 1.0, g)
      n = n + 1
      delta = image - mean
      mean = mean + delta / n
      m2 = m2 + delta * (image - mean)
      content_sum = content_sum if content is None else content_sum + content[0]
      return (n, mean, m2, wplus_sum + wplus, content_sum), None

    r = g.resolution
    c4 = g.arch.channel(4)
    init = (0.0, jnp.zeros((r, r, 3)), jnp.zeros((r, r, 3)),
            jnp.zeros((g.n_latent, g.w_dim)), jnp.zeros((4, 4, c4)))
    (n, mean, m2, wplus_sum, content_sum), _ = jax.lax.scan(
        draw, init, jnp.arange(self.settings.num_vicinal))
    return mean, jnp.sqrt(m2 / n), wplus_sum / n, content_sum / n

  # Batch API.

  def init(self, identities: np.ndarray):
    keys = image_keys(self.settings.seed, identities)
    state, opt_state = self._init(keys, self.g)
    return keys, state, opt_state

  def target_features(self, targets: Array):
    return self._features(self.lpips_params, targets) if self.use_lpips else (
        jnp.zeros(targets.shape[:1]),)

  def step(self, state, opt_state, keys, targets, target_feats, step: int):
    """One optimisation step for the whole batch; returns the new state, Adam
    state, (B,) losses and (B, H, W, 3) images generated at this step."""
    return self._step(state, opt_state, keys, targets, target_feats,
                      jnp.asarray(step, jnp.int32), self.g, self.lpips_params)

  def invert(self, targets: np.ndarray, identities: np.ndarray,
             on_step: Optional[Callable[[int, Array, Array], None]] = None
             ) -> Result:
    """Runs all steps on a batch of (B, H, W, 3) targets in [-1, 1].

    Args:
      targets: the images.
      identities: (B,) integers naming the images (seed their random draws).
      on_step: called as on_step(step, losses, images) after every step.
    """
    targets = jnp.asarray(targets, jnp.float32)
    keys, state, opt_state = self.init(identities)
    feats = self.target_features(targets)
    losses = image = None
    for step in range(self.settings.steps):
      state, opt_state, losses, image = self.step(state, opt_state, keys,
                                                  targets, feats, step)
      if on_step is not None:
        on_step(step, losses, image)
    mean, std, wplus_mean, content_mean = self._estimate(state, keys, self.g)
    return Result(
        state=jax.device_get(state), reconstruction=np.asarray(image),
        mean=np.asarray(mean), std=np.asarray(std),
        wplus_mean=np.asarray(wplus_mean),
        content_mean=(np.asarray(content_mean)
                      if self.settings.method == 'sphinx' else None),
        losses=np.asarray(losses))
