"""LPIPS (VGG16, v0.1) against distances from richzhang's `lpips` package."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sphinx_jax.models import lpips
from sphinx_jax.errors import SphinxError

GOLDEN = os.path.join(os.path.dirname(__file__), 'fixtures',
                      'lpips_vgg_golden.npz')
NAMES = ('ex_ref_p0', 'ex_ref_p1', 'noise_32', 'noise_64', 'noise_256')
# The same-size pairs, so they can be stacked into one batch.
NAMES_64 = ('ex_ref_p0', 'ex_ref_p1', 'noise_64')

# Compiling is most of the cost on a CPU: tests share these jitted functions,
# mostly on shapes another test already compiled.
LPIPS = jax.jit(lpips.lpips)
FEATURES = jax.jit(lpips.features)
DISTANCE = jax.jit(lpips.distance_from_features)


@pytest.fixture(scope='module')
def params():
  return lpips.load_params()


@pytest.fixture(scope='module')
def golden():
  with np.load(GOLDEN) as f:
    return dict(f)


def _random_images(seed, shape):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.mark.parametrize('name', NAMES)
def test_matches_reference(params, golden, name):
  d = LPIPS(params, golden[f'{name}_a'][None], golden[f'{name}_b'][None])
  assert d.shape == (1,)
  np.testing.assert_allclose(d[0], golden[f'{name}_lpips'], rtol=0, atol=1e-5)


def test_identical_images_have_zero_distance(params, golden):
  a = golden['ex_ref_p0_a'][None]
  # Zero to float rounding, not exactly: XLA compiles the two images' VGG
  # passes as separate fusions, which may round differently (measured
  # 3.6e-16 with XLA's own CPU convolutions; distinct images are > 1e-3).
  assert abs(float(LPIPS(params, a, a)[0])) < 1e-12


def test_batch_equals_single_images(params, golden):
  a = np.stack([golden[f'{n}_a'] for n in NAMES_64])
  b = np.stack([golden[f'{n}_b'] for n in NAMES_64])
  batched = LPIPS(params, a, b)
  singles = [LPIPS(params, a[i:i + 1], b[i:i + 1])[0]
             for i in range(len(NAMES_64))]
  np.testing.assert_allclose(batched, singles, rtol=0, atol=1e-6)


def test_features_then_distance_equals_lpips(params, golden):
  a, b = golden['noise_32_a'][None], golden['noise_32_b'][None]
  feats_a = FEATURES(params, a)
  assert len(feats_a) == 5
  norms = jnp.linalg.norm(feats_a[0], axis=-1)
  np.testing.assert_allclose(norms[norms > 0], 1., atol=1e-5)
  d = DISTANCE(params, feats_a, FEATURES(params, b))
  np.testing.assert_allclose(d, LPIPS(params, a, b), rtol=0, atol=1e-7)


def test_large_images_are_area_downsampled(params):
  a, b = _random_images(0, (2, 1, 512, 512, 3))
  pooled = [x.reshape(1, 256, 2, 256, 2, 3).mean(axis=(2, 4)) for x in (a, b)]
  np.testing.assert_allclose(LPIPS(params, a, b),
                             LPIPS(params, *pooled), rtol=0, atol=1e-6)


def test_area_resize_matches_adaptive_average_pooling():
  x = _random_images(1, (1, 11, 7, 3))
  expected = np.zeros((1, 4, 4, 3), np.float32)
  # torch's adaptive_avg_pool2d bins, written out.
  for i in range(4):
    for j in range(4):
      rows = slice(i * 11 // 4, math.ceil((i + 1) * 11 / 4))
      cols = slice(j * 7 // 4, math.ceil((j + 1) * 7 / 4))
      expected[0, i, j] = x[0, rows, cols].mean(axis=(0, 1))
  np.testing.assert_allclose(lpips.area_resize(x, 4), expected, atol=1e-6)


def test_gradient_is_finite_and_nonzero(params, golden):
  a, b = golden['noise_32_a'][None], golden['noise_32_b'][None]
  grad = jax.jit(jax.grad(lambda x: LPIPS(params, x, b).sum()))(a)
  assert np.all(np.isfinite(grad))
  assert np.any(grad != 0)


def test_missing_package_is_a_sphinx_error(monkeypatch):
  monkeypatch.setattr(lpips, '_PACKAGE', 'no_such_package_for_lpips')
  with pytest.raises(SphinxError, match='not installed'):
    lpips.load_params()


def test_missing_weights_file_is_a_sphinx_error(monkeypatch):
  monkeypatch.setattr(lpips, '_WEIGHTS_FILE', 'weights/missing.ckpt')
  with pytest.raises(SphinxError, match='missing.ckpt: LPIPS weights file not'):
    lpips.load_params()


def test_bfloat16_features_stay_close(golden):
  """The bfloat16 compute path (inversion's `dtype`) agrees to ~1e-2."""
  params = lpips.load_params()
  half = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), params)
  a, b = golden['noise_64_a'][None], golden['noise_64_b'][None]
  full = lpips.lpips(params, a, b)
  low = lpips.distance_from_features(
      half, lpips.features(half, jnp.asarray(a, jnp.bfloat16)),
      lpips.features(half, jnp.asarray(b, jnp.bfloat16)))
  assert abs(float(low[0]) - float(full[0])) < 0.02 * float(full[0])
