"""Learning a new attribute from transformed copies of one image (SPHInX,
"Learning a new attribute"; docs/editing.md).

K targets x_k = T(x, a_k) (a_0 the identity) are reconstructed together by
one set of SPHInX heads Ps, Pc and noise maps B, through K codes
w+_k = w+ + alpha_k * D_normalised: w+ comes from Ps on a fresh z+ draw and
the content from Pc on a fresh s draw at every step, exactly as
`methods.Sphinx` feeds G; D (n_latent, w_dim) has its rows normalised to
unit length before use; alpha_0 = 0 is fixed and alpha_1..alpha_{K-1} are
learned (initialised at 0). A monotonic penalty spaces the alphas out, so
that walking alpha along D replays the transformation.
"""

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sphinx_jax.inversion import methods, metrics, objective
from sphinx_jax.models import lpips
from sphinx_jax.errors import SphinxError
from sphinx_jax.models.generator import Generator

Array = jax.Array

# Each transformation and its identity level a_0.
IDENTITY = {'rotation': 0.0, 'brightness': 1.0, 'zoom': 1.0}
# How rotation and zoom read the source image: `bilinear` (ours), or
# `nearest` (torchvision's rotate, which the official code uses).
RESAMPLING = ('bilinear', 'nearest')
_SPHINX = methods.Sphinx()
_features = jax.jit(lpips.features)


def _sample(image: np.ndarray, rows: np.ndarray, cols: np.ndarray,
            resample: str, fill: float) -> np.ndarray:
  """Samples of an (H, W, 3) image at (H, W) source coordinates; `fill`
  where they fall outside it."""
  if resample == 'nearest':
    h, w = image.shape[:2]
    # torch's grid_sample rounds with std::nearbyint: half to even, as rint.
    r, c = np.rint(rows).astype(np.int64), np.rint(cols).astype(np.int64)
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    picked = image[np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)]
    return np.where(inside[..., None], picked, np.float32(fill))
  sample = lambda channel: jax.scipy.ndimage.map_coordinates(
      channel, [rows, cols], order=1, mode='constant', cval=fill)
  return np.stack([np.asarray(sample(image[..., c]))
                   for c in range(image.shape[-1])], axis=-1)


def transform(image: np.ndarray, name: str, level: float,
              resample: str = 'bilinear', fill: float = -1.0) -> np.ndarray:
  """T(x, a): one (H, W, 3) image in [-1, 1], transformed.

  Args:
    image: the input image.
    name: 'rotation' (level in degrees, counter-clockwise about the centre),
      'brightness' (level multiplies the [0, 1] intensities, clipped) or
      'zoom' (level magnifies about the centre; below 1 it shrinks).
    level: the transformation's strength; `IDENTITY[name]` returns the image
      unchanged.
    resample: rotation and zoom: one of RESAMPLING.
    fill: rotation and zoom: the value of pixels uncovered outside the
      source image (-1 black, 0 mid-grey as torchvision's rotate).
  """
  if level == IDENTITY[name]:
    return image
  if name == 'brightness':
    return np.clip((image + 1.0) * level - 1.0, -1.0, 1.0).astype(np.float32)
  h, w = image.shape[:2]
  # Pixel centres about ((w - 1) / 2, (h - 1) / 2), as torchvision's affine
  # grid (align_corners=False) places them.
  cy, cx = (h - 1) / 2, (w - 1) / 2
  dy, dx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing='ij')
  angle = np.deg2rad(level) if name == 'rotation' else 0.0
  scale = level if name == 'zoom' else 1.0
  # Each output pixel reads the source pixel the inverse map sends it to.
  cos, sin = np.cos(angle), np.sin(angle)
  rows = cy + (sin * dx + cos * dy) / scale
  cols = cx + (cos * dx - sin * dy) / scale
  return _sample(image, rows.astype(np.float32), cols.astype(np.float32),
                 resample, fill).astype(np.float32)


def monotonic_penalty(alphas: Array) -> Array:
  """The doc's penalty sum_k max(0, 2 - alpha_k) + max(0, 2 - (alpha_{k+1} -
  alpha_k)), indexed as the official code indexes it.

  Args:
    alphas: (K - 1,) the learned alpha_1..alpha_{K-1} (alpha_0 = 0 is not an
      argument and enters no term).

  Returns:
    For K >= 3: sum over k = 1..K-2 of max(0, 2 - alpha_k) +
    max(0, 2 - (alpha_{k+1} - alpha_k)); the last alpha thus has no bound of
    its own and is pushed only by its gap to the one before. For K = 2 (one
    learned alpha): max(0, 2 - alpha_1).
  """
  if alphas.shape[0] == 1:
    return jax.nn.relu(2.0 - alphas[0])
  low, high = alphas[:-1], alphas[1:]
  return jnp.sum(jax.nn.relu(2.0 - low) + jax.nn.relu(2.0 - (high - low)))


def normalize_rows(direction: Array) -> Array:
  """D with every row scaled to unit Euclidean length."""
  return direction / jnp.linalg.norm(direction, axis=-1, keepdims=True)


def all_alphas(learned: Array) -> Array:
  """(K,) alpha_0 = 0 followed by the learned alpha_1..alpha_{K-1}."""
  return jnp.concatenate([jnp.zeros((1,), learned.dtype), learned])


def _labels(state: dict[str, Any], schedule_all: bool) -> dict[str, Any]:
  # Like the official code, D and the alphas sit outside the Ps group, so
  # only schedule_all ramps their learning rate.
  heads = {k: state[k] for k in ('ps', 'pc', 'noise')}
  other = 'scheduled' if schedule_all else 'constant'
  return {**_SPHINX.labels(heads, schedule_all), 'direction': other,
          'alphas': other}


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the optimisation needs from the config (see configs/edit.py)."""
  steps: int = 5000
  lr: float = 1e-3
  schedule_all: bool = False  # False: the ramp on Ps only (official)
  mse_weight: float = 1.0
  lpips_weight: float = 0.0  # 0: no LPIPS (the caller applies the threshold)
  penalty_weight: float = 0.5
  num_vicinal: int = 16
  seed: int = 0

  def tx(self, steps) -> optax.GradientTransformation:
    return objective.make_optimizer(
        lambda state: _labels(state, self.schedule_all), self.lr, steps)


def init_state(key: Array, g: Generator, num_targets: int) -> dict[str, Any]:
  """SPHInX's heads and noise maps (as methods.Sphinx initialises them), a
  N(0, 1) direction and the K - 1 learned alphas at 0."""
  k_heads, k_direction = jax.random.split(key)
  return {**_SPHINX.init(k_heads, g),
          'direction': jax.random.normal(k_direction, (g.n_latent, g.w_dim)),
          'alphas': jnp.zeros((num_targets - 1,))}


def _loss(settings: Settings, state, key, targets, target_feats, g,
          lpips_params):
  wplus, noise, content = _SPHINX.inputs(state, key, None, g)
  codes = (wplus + all_alphas(state['alphas'])[:, None, None] *
           normalize_rows(state['direction']))
  k = targets.shape[0]
  images = g.synthesize(codes, noise,
                        jnp.broadcast_to(content, (k,) + content.shape))
  per_target = settings.mse_weight * metrics.mse(images, targets)
  if settings.lpips_weight:
    per_target += settings.lpips_weight * lpips.distance_from_features(
        lpips_params, lpips.features(lpips_params, images), target_feats)
  return (jnp.mean(per_target) +
          settings.penalty_weight * monotonic_penalty(state['alphas']))


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(1, 2))
def _step(settings: Settings, state, opt_state, key, step, targets,
          target_feats, g, lpips_params):
  loss, grads = jax.value_and_grad(functools.partial(_loss, settings))(
      state, jax.random.fold_in(key, step), targets, target_feats, g,
      lpips_params)
  updates, opt_state = settings.tx(settings.steps).update(grads, opt_state,
                                                          state)
  return optax.apply_updates(state, updates), opt_state, loss


@functools.partial(jax.jit, static_argnums=2)
def mean_codes(state: dict[str, Any], key: Array, num_vicinal: int,
               g: Generator) -> tuple[Array, Array]:
  """Mean W+ and content of SPHInX heads ('ps', 'pc') over num_vicinal draws
  of z+ and s, keyed by jax.random.split(key, num_vicinal): deterministic
  codes to render from (as an inversion's wplus_mean/content_mean)."""
  return _SPHINX.mean_codes(state, key, num_vicinal, g)


@jax.jit
def drawn_codes(state: dict[str, Any], key: Array,
                g: Generator) -> tuple[Array, Array]:
  """W+ = Ps(z+) and content = Pc(s) for ONE draw of z+ and s from `key`."""
  return _SPHINX.inputs(state, key, None, g)[::2]


def walk_key(seed: int) -> Array:
  """The key of the official walk's one draw: a stream of its own beside
  the three `learn` splits from the same seed."""
  return jax.random.fold_in(jax.random.key(seed), 1)


def official_walk_alphas(alphas: np.ndarray) -> np.ndarray:
  """The official walk: alpha_0..alpha_{K-1} with the midpoint of each
  neighbouring pair inserted, 2K - 1 values (the official
  utils.interpolate_vector(alphas, 2))."""
  n = len(alphas)
  return np.interp(np.linspace(0, n - 1, 2 * n - 1), np.arange(n), alphas)


@dataclasses.dataclass
class Result:
  """A learned attribute."""
  state: dict[str, Any]  # the SPHInX state: 'ps', 'pc', 'noise'
  direction: np.ndarray  # (n_latent, w_dim), rows of unit length
  alphas: np.ndarray  # (K,) alpha_0 = 0, then the learned ones
  wplus_mean: np.ndarray  # (n_latent, w_dim)
  content_mean: np.ndarray  # (4, 4, C4)
  loss: float  # at the last step


def learn(g: Generator, targets: np.ndarray, settings: Settings,
          on_step: Optional[Callable[[int, Array], None]] = None) -> Result:
  """Optimises the shared heads, noise maps, D and alphas on K targets.

  Args:
    g: the generator.
    targets: (K, H, W, 3) in [-1, 1], K >= 2; targets[0] is the untransformed
      image (alpha_0 = 0).
    settings: the optimisation's settings.
    on_step: called as on_step(step, loss) after every step.

  Raises:
    SphinxError: the loss became NaN or infinite.
  """
  k_init, k_steps, k_mean = jax.random.split(jax.random.key(settings.seed), 3)
  state = init_state(k_init, g, targets.shape[0])
  opt_state = settings.tx(settings.steps).init(state)
  targets = jnp.asarray(targets, jnp.float32)
  lpips_params = lpips.load_params() if settings.lpips_weight else None
  target_feats = (_features(lpips_params, targets)
                  if settings.lpips_weight else None)
  loss = None
  for step in range(settings.steps):
    state, opt_state, loss = _step(settings, state, opt_state, k_steps,
                                   jnp.asarray(step, jnp.int32), targets,
                                   target_feats, g, lpips_params)
    if on_step is not None:
      on_step(step, loss)
  if not np.isfinite(float(loss)):
    raise SphinxError('learn: the loss became NaN or infinite (try a lower '
                      'config.lr)')
  wplus_mean, content_mean = mean_codes(state, k_mean, settings.num_vicinal, g)
  heads = {k: state[k] for k in ('ps', 'pc', 'noise')}
  return Result(state=jax.device_get(heads),
                direction=np.asarray(normalize_rows(state['direction'])),
                alphas=np.asarray(all_alphas(state['alphas'])),
                wplus_mean=np.asarray(wplus_mean),
                content_mean=np.asarray(content_mean), loss=float(loss))
