"""The shipped digits prior and python -m sphinx_jax.demo on it."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

import sphinx_jax
from sphinx_jax import demo
from sphinx_jax.jobs import comparison
from sphinx_jax.errors import SphinxError
from conftest import REPO, load_config

PRIOR = REPO / 'ported_weights' / 'digits32'


def test_the_shipped_prior_loads_and_records_its_training():
  g = sphinx_jax.load_generator(str(PRIOR))
  assert (g.resolution, g.z_dim, g.w_dim) == (32, 128, 128)
  meta = json.load(open(PRIOR / 'generator.json'))
  assert meta['source']['trainer'] == 'sphinx_jax.train_prior'
  assert 'confidence' in meta['source']['score']
  size = sum(f.stat().st_size for f in PRIOR.rglob('*') if f.is_file())
  assert size < 5e6


def _config(tmp_path, inputs, **overrides):
  return load_config('demo', outdir=str(tmp_path / 'demo'), **{
      'run.inputs': str(inputs), 'run.steps': 2, 'run.num_vicinal': 2,
      'run.save_every': 2, **overrides})


def test_demo_compares_methods_on_the_same_images(tmp_path, capsys):
  inputs = tmp_path / 'inputs'
  for group, name in (('in_domain', 'digit1'), ('out_of_domain', 'letterA')):
    (inputs / group).mkdir(parents=True)
    (inputs / group / f'{name}.png').write_bytes(
        (REPO / 'demo' / group / f'{name}.png').read_bytes())
  assert demo.main(_config(tmp_path, inputs)) == 0
  out = tmp_path / 'demo'
  rows = list(csv.DictReader(open(out / 'comparison.csv')))
  assert [r['image'] for r in rows] == ['in_domain__digit1',
                                        'out_of_domain__letterA']
  for method in ('sphinx', 'wplus'):
    per_run = {r['image']: r for r in csv.DictReader(
        open(out / method / 'metrics.csv'))}
    for r in rows:
      assert float(r[f'{method}_psnr']) == pytest.approx(
          float(per_run[r['image']]['psnr']), rel=1e-5)
  grid = np.asarray(Image.open(out / 'comparison.png'))
  cell = comparison.CELL + comparison.GAP  # rows: a header, 2 images
  assert grid.shape[0] == comparison.HEADER + 2 * cell
  assert grid.shape[1] > 3 * cell  # image names, target, 2 methods
  table = capsys.readouterr().out
  assert 'mean in_domain (1)' in table and 'mean out_of_domain (1)' in table


def test_demo_refuses_repeated_methods(tmp_path):
  with pytest.raises(SphinxError, match='config.methods'):
    demo.main(_config(tmp_path, REPO / 'demo', methods='wplus,wplus'))
