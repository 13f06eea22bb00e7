"""PSNR and SSIM against scikit-image's reference implementations."""

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from sphinx_jax.inversion import metrics


@pytest.fixture(scope='module')
def pair():
  rng = np.random.default_rng(0)
  a = rng.uniform(-1, 1, (2, 40, 48, 3)).astype(np.float32)
  b = np.clip(a + rng.normal(0, 0.2, a.shape), -1, 1).astype(np.float32)
  return a, b


def test_psnr_matches_skimage(pair):
  a, b = pair
  ours = np.asarray(metrics.psnr(a, b))
  for i in range(2):
    ref = peak_signal_noise_ratio((b[i] + 1) / 2, (a[i] + 1) / 2, data_range=1.0)
    assert abs(ours[i] - ref) < 1e-3


def test_ssim_matches_skimage_gaussian_window(pair):
  a, b = pair
  ours = np.asarray(metrics.ssim(a, b))
  for i in range(2):
    ref = structural_similarity((a[i] + 1) / 2, (b[i] + 1) / 2, data_range=1.0,
                                channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert abs(ours[i] - ref) < 1e-4, (ours[i], ref)


def test_identical_images(pair):
  a, _ = pair
  assert np.allclose(metrics.ssim(a, a), 1.0, atol=1e-5)
  assert np.all(np.asarray(metrics.psnr(a, a)) > 100)


def test_quantize_rounds_or_truncates_as_the_official_make_image():
  # [-1, 1] -> (x + 1) / 2 * 255: 0.999 -> 254.87, 0 -> 127.5, -0.9961 ->
  # 0.497, 1.5 clipped to 255, -3 to 0.
  x = np.array([0.999, 0.0, -0.9961, 1.5, -3.0], np.float32)
  levels = lambda q: np.asarray((q + 1) * 127.5).round(3)
  np.testing.assert_array_equal(levels(metrics.quantize(x, 'round')),
                                [255, 128, 0, 255, 0])  # 127.5: half to even
  np.testing.assert_array_equal(levels(metrics.quantize(x, 'truncate')),
                                [254, 127, 0, 255, 0])
