"""Forward operators A for restoration: the loss compares A(G(...)) with y.

Every operator works on ONE image (the engine vmaps over the batch), an
(R, R, 3) array in [-1, 1], and has the same interface:

  params(seed, identity, R)  -> a pytree of numpy arrays: what the operator
                                needs for this image (a mask, a measurement
                                pattern), drawn from the run's seed (and, for
                                per-image draws, the image's identity)
  apply(params, x, key)      -> A(x), what the loss compares with y; `key`
                                seeds per-step randomness (denoising only)
  observe(params, x, key)    -> y synthesised from a clean image x
  from_file(params, img)     -> y from an observation loaded from a file at
                                `load_size(R)` pixels
  view(params, y)            -> an (R, R, 3) picture of y (observation.png)
  check(R)                   -> raises a SphinxError if A cannot work at R

`lpips` says whether A(x) is an image LPIPS can compare (a full-size image);
elsewhere the loss is the MSE alone, in A's output space.
"""

import dataclasses
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from sphinx_jax.errors import SphinxError

Array = jax.Array
# ITU-R BT.601 luma, as Pillow's convert('L').
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# Streams of the operator's keys, apart from the engine's own draws.
_SEED_STREAM, _IMAGE_STREAM = 0x0B5E, 0x1A6E


def _seed_key(seed: int) -> Array:
  return jax.random.fold_in(jax.random.key(seed), _SEED_STREAM)


def _image_key(seed: int, identity: int) -> Array:
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed),
                                               _IMAGE_STREAM), identity)


@dataclasses.dataclass(frozen=True)
class Identity:
  """Plain inversion: y = x."""
  name = 'identity'
  lpips = True

  def params(self, seed: int, identity: int, resolution: int) -> dict:
    del seed, identity, resolution
    return {}

  def apply(self, params, x: Array, key: Optional[Array] = None) -> Array:
    del params, key
    return x

  def observe(self, params, x: Array, key: Array) -> Array:
    return self.apply(params, x, key)

  def check(self, resolution: int) -> None:
    """Raises a SphinxError if the operator cannot work at `resolution`."""
    del resolution

  def load_size(self, resolution: int) -> int:
    return resolution

  def from_file(self, params, img: Array) -> Array:
    return self.apply(params, img)

  def view(self, params, y: Array) -> Array:
    del params
    return y


@dataclasses.dataclass(frozen=True)
class Denoise(Identity):
  """Gaussian noise: y = clip(x + sigma * n, -1, 1), sigma in [-1, 1] units.

  With `fresh_noise` (the official setting), A adds fresh noise of the same
  sigma to the generated image at every step, so that G matches the noisy
  observation's statistics; without it A is the identity.
  """
  sigma: float = 0.1
  fresh_noise: bool = True
  name = 'denoise'

  def _corrupt(self, x: Array, key: Array) -> Array:
    return jnp.clip(x + self.sigma * jax.random.normal(key, x.shape, x.dtype),
                    -1.0, 1.0)

  def apply(self, params, x: Array, key: Optional[Array] = None) -> Array:
    del params
    return self._corrupt(x, key) if self.fresh_noise and key is not None else x

  def observe(self, params, x: Array, key: Array) -> Array:
    return self._corrupt(x, key)


@dataclasses.dataclass(frozen=True)
class CompressedSensing(Identity):
  """Partial circulant measurements of vec(x) (all R*R*3 values):

    y = P_Omega(IFFT(FFT(sign * vec(x)) * FFT(filter)))

  sign is a random +-1 pattern, filter is Gaussian with variance 1/n (so a
  measurement has the scale of a pixel) and Omega a random subset of
  m = round(fraction * n) indices; all three come from the seed, the same
  for every image. The loss is the MSE between measurement vectors.
  """
  fraction: float = 0.01
  name = 'cs'
  lpips = False

  def params(self, seed: int, identity: int, resolution: int) -> dict:
    del identity
    return _circulant_pattern(self.fraction, seed, resolution)

  def apply(self, params, x: Array, key: Optional[Array] = None) -> Array:
    del key
    v = x.reshape(-1) * params['sign']
    conv = jnp.fft.irfft(jnp.fft.rfft(v) * params['filter_fft'], n=v.shape[0])
    return conv[params['index']]

  def from_file(self, params, img: Array) -> Array:
    raise SphinxError("operator 'cs': measurements cannot be loaded from image "
                      "files; use observation='synthesize' with clean inputs")

  def view(self, params, y: Array) -> Array:
    """The back-projection A^T y, scaled to fill [-1, 1]."""
    n = params['sign'].shape[0]
    r = int(round((n // 3) ** 0.5))
    zero = jnp.zeros((r, r, 3), jnp.float32)
    _, adjoint = jax.vjp(lambda x: self.apply(params, x), zero)
    back = adjoint(y)[0]
    return back / jnp.maximum(jnp.abs(back).max(), 1e-12)


@functools.lru_cache(maxsize=4)
def _circulant_pattern(fraction: float, seed: int, resolution: int) -> dict:
  """CompressedSensing's sign, filter spectrum and indices (drawn once: they
  are the same for every image of a run)."""
  n = resolution * resolution * 3
  m = max(1, round(fraction * n))
  k_sign, k_filter, k_index = jax.random.split(_seed_key(seed), 3)
  sign = jnp.where(jax.random.bernoulli(k_sign, 0.5, (n,)), 1.0, -1.0)
  filt = jax.random.normal(k_filter, (n,)) / np.sqrt(n)
  index = jnp.sort(jax.random.choice(k_index, n, (m,), replace=False))
  return {'sign': np.asarray(sign, np.float32),
          'filter_fft': np.asarray(jnp.fft.rfft(filt)),
          'index': np.asarray(index, np.int32)}


@functools.lru_cache(maxsize=4)
def _mask_file(path: str, resolution: int) -> np.ndarray:
  try:
    with Image.open(path) as img:
      img = img.convert('L').resize((resolution, resolution), Image.NEAREST)
  except (OSError, ValueError) as e:
    raise SphinxError(f'operator.mask {path!r}: not a readable image ({e})'
                      ) from None
  return (np.asarray(img, np.float32) >= 128)[..., None].astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Inpaint(Identity):
  """y = mask * x: only observed pixels (mask 1) enter the loss.

  The mask is an image file (`mask`: white = observed, resized to R with
  nearest neighbours) shared by all images, or else a square hole of side
  `box` * R at a position drawn per image from (seed, the image's name).
  Its picture is y itself: observed pixels as they are, the hole mid-grey.
  """
  mask: str = ''
  box: float = 0.4
  name = 'inpaint'

  def params(self, seed: int, identity: int, resolution: int) -> dict:
    if self.mask:
      return {'mask': _mask_file(self.mask, resolution)}
    side = max(1, round(self.box * resolution))
    top, left = np.asarray(jax.random.randint(
        _image_key(seed, identity), (2,), 0, resolution - side + 1))
    mask = np.ones((resolution, resolution, 1), np.float32)
    mask[top:top + side, left:left + side] = 0.0
    return {'mask': mask}

  def apply(self, params, x: Array, key: Optional[Array] = None) -> Array:
    del key
    return x * params['mask']


@dataclasses.dataclass(frozen=True)
class SuperResolution(Identity):
  """y = x down-sampled by `factor`: 'area' (the mean of each factor x factor
  block) or 'bicubic' (antialiased, jax.image.resize). LPIPS is off: the
  observation is too small for VGG."""
  factor: int = 4
  kernel: str = 'area'
  name = 'sr'
  lpips = False

  def apply(self, params, x: Array, key: Optional[Array] = None) -> Array:
    del params, key
    r, f = x.shape[0], self.factor
    if self.kernel == 'area':
      return x.reshape(r // f, f, r // f, f, 3).mean(axis=(1, 3))
    return jax.image.resize(x, (r // f, r // f, 3), 'bicubic', antialias=True)

  def check(self, resolution: int) -> None:
    if resolution % self.factor:
      raise SphinxError(f'config.operator.factor = {self.factor}: must be at '
                        f'least 2 and divide the resolution {resolution}')

  def load_size(self, resolution: int) -> int:
    return resolution // self.factor

  def from_file(self, params, img: Array) -> Array:
    return img

  def view(self, params, y: Array) -> Array:
    """Nearest-neighbour up-sampling: each observed pixel as a block."""
    del params
    return jnp.repeat(jnp.repeat(y, self.factor, axis=0), self.factor, axis=1)


@dataclasses.dataclass(frozen=True)
class Grayscale(Identity):
  """Colourisation: y = the luma of x, (R, R, 1). LPIPS compares the luma
  replicated to three channels."""
  name = 'grayscale'

  def apply(self, params, x: Array, key: Optional[Array] = None) -> Array:
    del params, key
    return (x @ LUMA)[..., None]

  def view(self, params, y: Array) -> Array:
    del params
    return jnp.broadcast_to(y, y.shape[:2] + (3,))


OPERATORS = {op.name: op for op in (Identity, Denoise, CompressedSensing,
                                    Inpaint, SuperResolution, Grayscale)}


def batch_params(op: Identity, seed: int, identities, resolution: int) -> Any:
  """The operator's parameters for a batch, stacked along a leading axis."""
  per_image = [op.params(seed, int(i), resolution) for i in identities]
  return jax.tree_util.tree_map(lambda *x: np.stack(x), *per_image)


# Streams of each image's key: its observation's noise, and the noise of the
# observed reconstruction (reconstruction_observed.png), a fresh draw.
OBSERVATION_STREAM, RECONSTRUCTION_STREAM = 1, 2


def observation_keys(seed: int, identities,
                     stream: int = OBSERVATION_STREAM) -> Array:
  """(B,) keys of the noise in synthesised observations (of `stream`)."""
  return jax.vmap(lambda i: jax.random.fold_in(_image_key(seed, i), stream))(
      jnp.asarray(identities, jnp.uint32))
