"""python -m sphinx_jax.sample: the Quickstart's sample grid."""

import numpy as np
from PIL import Image

import sphinx_jax
from sphinx_jax import sample
from conftest import run_cli


def test_cli_writes_grid(tmp_path, converted):
  out = tmp_path / 'grid.png'
  result = run_cli('-m', 'sphinx_jax.sample', '--generator', converted['zip'],
                   '--out', out, '--num', 6)
  assert result.returncode == 0, result.stderr
  grid = np.asarray(Image.open(out))
  assert grid.shape == (64, 96, 3)  # 2 rows x 3 columns of 32 px
  assert grid[:32, :32].std() > 0 and not np.array_equal(grid[:32, :32], grid[:32, 32:64])


def test_cli_missing_generator(tmp_path):
  result = run_cli('-m', 'sphinx_jax.sample', '--generator', tmp_path / 'nope',
                   '--out', tmp_path / 'x.png')
  assert result.returncode == 1
  assert result.stderr.strip().startswith('error: ') and 'Traceback' not in result.stderr
  assert not (tmp_path / 'x.png').exists()


def test_sample_is_deterministic(converted):
  g = sphinx_jax.load_generator(converted['zip'])
  a, b = sample.sample(g, 3, seed=5), sample.sample(g, 3, seed=5)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, sample.sample(g, 3, seed=6))
