"""python -m sphinx_jax.run end to end on the fixture generator."""

import csv
import json
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from conftest import REPO, run_cli

SAMPLES = REPO / 'samples'


@pytest.fixture()
def inputs(tmp_path):
  d = tmp_path / 'inputs'
  d.mkdir()
  shutil.copy(SAMPLES / 'astronaut.jpg', d)
  shutil.copy(SAMPLES / 'cameraman.png', d)  # grayscale, replicated to RGB
  return d


def _run(generator, inputs, outdir, *overrides):
  return run_cli('-m', 'sphinx_jax.run', '--config', 'configs/invert.py',
                 f'--config.generator={generator}', f'--config.inputs={inputs}',
                 f'--config.outdir={outdir}', '--config.steps=3',
                 '--config.batch_size=2', '--config.num_vicinal=2',
                 '--config.save_every=1', *overrides)


@pytest.mark.parametrize('method', ['sphinx', 'wplus', 'wplus_noise', 'w'])
def test_every_method_end_to_end(tmp_path, converted, inputs, method):
  out = tmp_path / 'out'
  result = _run(converted['zip'], inputs, out, f'--config.method={method}')
  assert result.returncode == 0, result.stderr
  assert 'Traceback' not in result.stderr
  assert 'step 3/3' in result.stderr  # the progress line
  for name in ('astronaut', 'cameraman'):
    d = out / name
    for f in ('target.png', 'reconstruction.png', 'mean.png', 'std.png'):
      assert np.asarray(Image.open(d / f)).shape == (32, 32, 3), f
    gif = Image.open(d / 'progress.gif')
    durations = []
    for i in range(gif.n_frames):  # Pillow merges identical frames' durations
      gif.seek(i)
      durations.append(gif.info['duration'])
    assert sum(durations) == 300  # save_every=1: 3 frames of 100 ms
    codes = ocp.StandardCheckpointer().restore(str((d / 'codes' / 'state').resolve()))
    assert codes['wplus_mean'].shape == (8, 64)
    assert ('content_mean' in codes) == (method == 'sphinx')
    assert json.load(open(d / 'codes' / 'config.json'))['method'] == method
  rows = list(csv.DictReader(open(out / 'metrics.csv')))
  assert [r['image'] for r in rows] == ['astronaut', 'cameraman']
  assert list(rows[0])[:7] == ['image', 'method', 'steps', 'psnr', 'ssim',
                               'lpips', 'seconds']
  for r in rows:
    assert r['method'] == method and r['steps'] == '3'
    assert 0 < float(r['psnr']) < 100 and -1 <= float(r['ssim']) <= 1
    assert float(r['lpips']) >= 0
  # The final table names every image.
  assert 'astronaut' in result.stdout and 'cameraman' in result.stdout


def test_broken_file_is_skipped_and_the_rest_finishes(tmp_path, converted, inputs):
  (inputs / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
  out = tmp_path / 'out'
  result = _run(converted['zip'], inputs, out, '--config.method=wplus')
  assert result.returncode == 1
  skipped = [l for l in result.stderr.splitlines() if l.startswith('skipped')]
  assert len(skipped) == 1 and 'broken.png' in skipped[0]
  assert 'Traceback' not in result.stderr
  rows = list(csv.DictReader(open(out / 'metrics.csv')))
  assert sorted(r['image'] for r in rows) == ['astronaut', 'cameraman']


def test_reference_images_are_used_for_metrics(tmp_path, converted, inputs):
  refs = tmp_path / 'refs'
  refs.mkdir()
  Image.new('RGB', (32, 32), (0, 0, 0)).save(refs / 'astronaut.png')
  out = tmp_path / 'out'
  result = _run(converted['zip'], inputs, out, '--config.method=wplus',
                f'--config.references={refs}')
  assert result.returncode == 0, result.stderr
  plain = _run(converted['zip'], inputs, tmp_path / 'plain', '--config.method=wplus')
  rows = {r['image']: r for r in csv.DictReader(open(out / 'metrics.csv'))}
  base = {r['image']: r for r in csv.DictReader(open(tmp_path / 'plain' / 'metrics.csv'))}
  assert plain.returncode == 0
  assert rows['astronaut']['psnr'] != base['astronaut']['psnr']
  assert rows['cameraman']['psnr'] == base['cameraman']['psnr']
  # target.png shows the reference; observation.png what the loss saw.
  assert np.asarray(Image.open(out / 'astronaut' / 'target.png')).max() == 0
  np.testing.assert_array_equal(
      np.asarray(Image.open(out / 'astronaut' / 'observation.png')),
      np.asarray(Image.open(tmp_path / 'plain' / 'astronaut' / 'target.png')))
  assert not (out / 'cameraman' / 'observation.png').exists()


@pytest.mark.parametrize('override,message', [
    ('--config.stepz=3', 'unknown config field'),
    ('--config.steps=abc', 'bad flag'),
    ('--config.method=magic', 'config.method'),
    ('--config.batch_size=0', 'config.batch_size'),
    ('--config.generator=/nonexistent', 'no such generator directory'),
    ('--config.inputs=/nonexistent/*.png', 'no image files'),
])
def test_bad_config_is_one_line(tmp_path, converted, inputs, override, message):
  result = _run(converted['zip'], inputs, tmp_path / 'out', override)
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error:') and message in lines[0], \
      result.stderr
  assert not (tmp_path / 'out' / 'metrics.csv').exists()
