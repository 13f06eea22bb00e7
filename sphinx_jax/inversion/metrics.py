"""Image-quality metrics on (..., H, W, 3) images in [-1, 1], and the 8-bit
quantisation of the images they are computed on."""

import jax
import jax.numpy as jnp
import numpy as np

from sphinx_jax.models import lpips


QUANTIZE = ('round', 'truncate')


def quantize(x: jax.Array, mode: str = 'round') -> jax.Array:
  """The image as its 8-bit PNG holds it, back in [-1, 1]: clipped, mapped
  to [0, 255] and rounded to the nearest level ('round') or truncated, as
  the official make_image's clamp, add(1), div(2), mul(255), uint8 cast
  ('truncate'). NaN stays NaN."""
  levels = (jnp.clip(x, -1, 1) + 1) / 2 * 255
  levels = jnp.round(levels) if mode == 'round' else jnp.floor(levels)
  return levels / 127.5 - 1


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
  """Mean squared error over the last three axes (pixels and channels)."""
  return jnp.mean(jnp.square(a - b), axis=(-3, -2, -1))


def psnr(a: jax.Array, b: jax.Array) -> jax.Array:
  """PSNR in dB, for images mapped to [0, 1] (peak 1), clipped first."""
  a01 = (jnp.clip(a, -1, 1) + 1) / 2
  b01 = (jnp.clip(b, -1, 1) + 1) / 2
  return 10 * jnp.log10(1.0 / jnp.maximum(mse(a01, b01), 1e-12))


def _valid_filter_matrix(n: int, window: int, sigma: float) -> np.ndarray:
  """(n - window + 1, n) matrix applying a normalised Gaussian, 'valid' mode."""
  x = np.arange(window, dtype=np.float64) - (window - 1) / 2
  g = np.exp(-x**2 / (2 * sigma**2))
  g /= g.sum()
  m = np.zeros((n - window + 1, n), np.float32)
  for i in range(n - window + 1):
    m[i, i:i + window] = g
  return m


def ssim(a: jax.Array, b: jax.Array, window: int = 11, sigma: float = 1.5
         ) -> jax.Array:
  """SSIM (Wang et al. 2004) on [0, 1]-mapped images, mean over pixels and channels.

  Gaussian window 11, sigma 1.5, 'valid' filtering, K1 = 0.01, K2 = 0.03: the
  standard definition (as in pytorch_msssim and tf.image.ssim).
  """
  a = (jnp.clip(a, -1, 1) + 1) / 2
  b = (jnp.clip(b, -1, 1) + 1) / 2
  h, w = a.shape[-3], a.shape[-2]
  window = min(window, h, w)
  mh = jnp.asarray(_valid_filter_matrix(h, window, sigma))
  mw = jnp.asarray(_valid_filter_matrix(w, window, sigma))

  def blur(x):
    return jnp.einsum('ih,jw,...hwc->...ijc', mh, mw, x)

  c1, c2 = 0.01**2, 0.03**2
  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a**2
  var_b = blur(b * b) - mu_b**2
  cov = blur(a * b) - mu_a * mu_b
  s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2) /
       ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
  return jnp.mean(s, axis=(-3, -2, -1))


def evaluate(lpips_params, images: jax.Array, references: jax.Array
             ) -> dict[str, jax.Array]:
  """PSNR, SSIM and LPIPS of (B, H, W, 3) images against references."""
  return {'psnr': psnr(images, references), 'ssim': ssim(images, references),
          'lpips': lpips.lpips(lpips_params, images, references)}
