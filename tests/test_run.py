"""python -m sphinx_jax.run end to end on the fixture generator."""

import csv
import json
import shutil
import types

import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from conftest import REPO, load_config, run_cli
from sphinx_jax import run
from sphinx_jax.errors import SphinxError

SAMPLES = REPO / 'samples'


@pytest.fixture()
def inputs(tmp_path):
  d = tmp_path / 'inputs'
  d.mkdir()
  shutil.copy(SAMPLES / 'astronaut.jpg', d)
  shutil.copy(SAMPLES / 'cameraman.png', d)  # grayscale, replicated to RGB
  return d


_SMALL = dict(steps=3, batch_size=2, num_vicinal=2, save_every=1)


def _cli(generator, inputs, outdir, *overrides):
  """The command line itself, in a subprocess."""
  return run_cli('-m', 'sphinx_jax.run', '--config', 'configs/invert.py',
                 f'--config.generator={generator}', f'--config.inputs={inputs}',
                 f'--config.outdir={outdir}',
                 *[f'--config.{k}={v}' for k, v in _SMALL.items()], *overrides)


def _run(capsys, generator, inputs, outdir, **overrides):
  """The same run in-process, through the command's own door."""
  config = load_config('invert', generator=str(generator), inputs=str(inputs),
                       outdir=str(outdir), **{**_SMALL, **overrides})
  code = run.main(config)
  out = capsys.readouterr()
  return types.SimpleNamespace(returncode=code, stdout=out.out,
                               stderr=out.err)


def test_the_command_line_end_to_end(tmp_path, converted, inputs):
  result = _cli(converted['zip'], inputs, tmp_path / 'out')
  assert result.returncode == 0, result.stderr
  assert 'Traceback' not in result.stderr
  assert 'astronaut' in result.stdout and 'cameraman' in result.stdout
  assert (tmp_path / 'out' / 'cameraman' / 'codes' / 'config.json').exists()


@pytest.mark.parametrize('method', ['sphinx', 'wplus', 'wplus_noise', 'w'])
def test_every_method_end_to_end(tmp_path, converted, inputs, method, capsys):
  out = tmp_path / 'out'
  result = _run(capsys, converted['zip'], inputs, out, method=method)
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


def test_broken_file_is_skipped_and_the_rest_finishes(tmp_path, converted, inputs,
                                                      capsys):
  (inputs / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
  out = tmp_path / 'out'
  result = _run(capsys, converted['zip'], inputs, out, method='wplus')
  assert result.returncode == 1
  skipped = [l for l in result.stderr.splitlines() if l.startswith('skipped')]
  assert len(skipped) == 1 and 'broken.png' in skipped[0]
  assert 'Traceback' not in result.stderr
  rows = list(csv.DictReader(open(out / 'metrics.csv')))
  assert sorted(r['image'] for r in rows) == ['astronaut', 'cameraman']


def test_reference_images_are_used_for_metrics(tmp_path, converted, inputs,
                                               capsys):
  refs = tmp_path / 'refs'
  refs.mkdir()
  Image.new('RGB', (32, 32), (0, 0, 0)).save(refs / 'astronaut.png')
  out = tmp_path / 'out'
  result = _run(capsys, converted['zip'], inputs, out, method='wplus',
                references=str(refs))
  assert result.returncode == 0, result.stderr
  plain = _run(capsys, converted['zip'], inputs, tmp_path / 'plain',
               method='wplus')
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
])
def test_bad_command_line_is_one_line(tmp_path, converted, inputs, override,
                                      message):
  result = _cli(converted['zip'], inputs, tmp_path / 'out', override)
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error:') and message in lines[0], \
      result.stderr
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('override,message', [
    (dict(batch_size=-1), 'config.batch_size = -1: must be at least 1, or 0'),
    (dict(generator='/nonexistent'), 'no such generator directory'),
    (dict(inputs='/nonexistent/*.png'), 'no image files'),
    (dict(lr=-1.0), 'config.lr = -1.0: must be positive'),
    (dict(method='pti', pivot='z'), "config.pivot = 'z': must be 'w' or"),
    (dict(method='ilo', ilo_radius_hidden=(1.0, -2.0)),
     'config.ilo_radius_hidden = .*: must be a tuple of positive numbers'),
    (dict(method='ilo', steps=3), 'config.steps = 3: method ilo runs 4 stages'),
])
def test_bad_config_is_one_error(tmp_path, converted, inputs, override, message,
                                 capsys):
  args = {'generator': converted['zip'], 'inputs': inputs, **override}
  with pytest.raises(SphinxError, match=message):
    _run(capsys, args.pop('generator'), args.pop('inputs'), tmp_path / 'out',
         **args)
  assert not (tmp_path / 'out' / 'metrics.csv').exists()
  assert not (tmp_path / 'out' / 'run.json').exists()
