"""Building blocks of the generator."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sphinx_jax.models import stylegan2

NHWC = ('NHWC', 'HWIO', 'NHWC')


def reference_blur(y, pad, lhs_dilation=1):
  """[1, 3, 3, 1] blur as XLA's depthwise convolution, differentiated by
  XLA's own transpose rules: the reference for the generator's shifted-add
  blur and its hand-written gradient."""
  c = y.shape[-1]
  kernel = jnp.tile(jnp.asarray(stylegan2.UP_FIR)[:, :, None, None],
                    (1, 1, 1, c))
  return jax.lax.conv_general_dilated(
      y, kernel, (1, 1), ((pad, pad), (pad, pad)),
      lhs_dilation=(lhs_dilation, lhs_dilation), dimension_numbers=NHWC,
      feature_group_count=c)


def grouped_modulated_conv(x, weight, style, up, demodulate):
  """The official form: one convolution per sample with its own weight."""
  k, _, in_ch, _ = weight.shape
  w = weight[None] * (1 / math.sqrt(in_ch * k * k)) * style[:, None, None, :, None]
  if demodulate:
    w = w * jax.lax.rsqrt(jnp.sum(w * w, axis=(1, 2, 3), keepdims=True) + 1e-8)
  outs = []
  for n in range(x.shape[0]):
    if up:
      y = jax.lax.conv_general_dilated(x[n:n + 1], w[n], (1, 1), ((2, 2), (2, 2)),
                                       lhs_dilation=(2, 2),
                                       dimension_numbers=NHWC)
      y = reference_blur(y, pad=1)
    else:
      y = jax.lax.conv_general_dilated(x[n:n + 1], w[n], (1, 1), 'SAME',
                                       dimension_numbers=NHWC)
    outs.append(y)
  return jnp.concatenate(outs)


@pytest.mark.parametrize('up,demodulate,k', [(False, True, 3), (True, True, 3),
                                             (False, False, 1)])
def test_shared_weight_modconv_equals_grouped(up, demodulate, k):
  kx, kw, ks = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (3, 8, 8, 16))
  weight = jax.random.normal(kw, (k, k, 16, 12))
  style = 1 + 0.5 * jax.random.normal(ks, (3, 16))
  shared = stylegan2.modulated_conv(x, weight, style, up=up, demodulate=demodulate)
  grouped = grouped_modulated_conv(x, weight, style, up, demodulate)
  assert shared.shape == (3, 16 if up else 8, 16 if up else 8, 12)
  np.testing.assert_allclose(shared, grouped, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('up', [True, False])
def test_modconv_gradients_equal_the_grouped_forms(up):
  """With respect to the input, the styles and the weight (PTI tunes it):
  the up-sampling path's blur has a hand-written gradient."""
  kx, kw, ks, kr = jax.random.split(jax.random.key(1), 4)
  x = jax.random.normal(kx, (2, 8, 8, 6))
  weight = jax.random.normal(kw, (3, 3, 6, 5))
  style = 1 + 0.5 * jax.random.normal(ks, (2, 6))
  r = jax.random.normal(kr, (2, 16 if up else 8, 16 if up else 8, 5))
  grads = [jax.jit(jax.grad(lambda *a: jnp.sum(f(*a, up, True) * r),
                            argnums=(0, 1, 2)))(x, weight, style)
           for f in (stylegan2.modulated_conv, grouped_modulated_conv)]
  for ours, reference in zip(*grads):
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)


def test_skip_upsampling_and_its_gradient_equal_the_zero_insertion_form():
  img = jax.random.normal(jax.random.key(2), (2, 5, 5, 3))
  r = jax.random.normal(jax.random.key(3), (2, 10, 10, 3))
  np.testing.assert_allclose(stylegan2.upsample_2x(img),
                             reference_blur(img, 2, lhs_dilation=2), atol=1e-5)
  ours, reference = (jax.grad(lambda i: jnp.sum(f(i) * r))(img) for f in (
      stylegan2.upsample_2x, lambda i: reference_blur(i, 2, lhs_dilation=2)))
  np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_upsample_is_bilinear_like_and_preserves_constants():
  img = jnp.ones((1, 4, 4, 3))
  up = stylegan2.upsample_2x(img)
  assert up.shape == (1, 8, 8, 3)
  np.testing.assert_allclose(up[:, 1:-1, 1:-1], 1.0, rtol=1e-6)  # gain 4 * sum 1/4


def test_architecture_validation():
  with pytest.raises(ValueError, match='power of two'):
    stylegan2.Architecture(24, 8, 8, 2, ((4, 8),))
  with pytest.raises(ValueError, match='every resolution'):
    stylegan2.Architecture(16, 8, 8, 2, ((4, 8), (16, 8)))
  arch = stylegan2.Architecture(16, 8, 8, 2, ((4, 8), (8, 6), (16, 4)))
  assert arch.n_latent == 6 and arch.noise_resolutions == (4, 8, 8, 16, 16)
  assert arch.truncated(8).channels == ((4, 8), (8, 6))
  with pytest.raises(ValueError, match='cannot truncate'):
    arch.truncated(32)
