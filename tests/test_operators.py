"""Forward operators for restoration, alone and through `sphinx_jax.run`."""

import csv
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import sphinx_jax
from sphinx_jax.files import images
from sphinx_jax.files.inputs import load_image
from sphinx_jax.inversion import engine, metrics, operators
from sphinx_jax.models import lpips
from sphinx_jax import run
from sphinx_jax.errors import SphinxError
from conftest import REPO, load_config, run_cli

R = 32


def _image(seed):
  return jax.random.uniform(jax.random.key(seed), (R, R, 3), minval=-1.0)


def _operator(name, **fields):
  cfg = load_config('invert').operator
  cfg.update(name=name, **fields)
  op = run.operator_from_config(cfg)
  op.check(R)
  return op


def test_cs_takes_the_fraction_of_measurements_reproducibly_and_linearly():
  op = _operator('cs', fraction=0.01)
  n = R * R * 3
  params = op.params(seed=0, identity=5, resolution=R)
  x, y = _image(0), _image(1)
  ax = op.apply(params, x)
  assert ax.shape == (round(0.01 * n),)
  assert len(set(params['index'].tolist())) == ax.shape[0]  # no repeats
  # The seed fixes the operator, for every image; another seed changes it.
  again = op.params(seed=0, identity=9, resolution=R)
  np.testing.assert_array_equal(op.apply(again, x), ax)
  other = op.params(seed=1, identity=5, resolution=R)
  assert not np.allclose(op.apply(other, x), ax)
  # Linear: A(2x - 3y) = 2Ax - 3Ay.
  np.testing.assert_allclose(op.apply(params, 2 * x - 3 * y),
                             2 * ax - 3 * op.apply(params, y), atol=1e-5)
  # A measurement has the scale of a pixel (filter variance 1/n).
  assert 0.1 < float(jnp.std(ax)) / float(jnp.std(x)) < 10
  # The picture of y is the back-projection A^T y, in [-1, 1].
  view = op.view(params, ax)
  assert view.shape == (R, R, 3)
  assert float(jnp.abs(view).max()) == pytest.approx(1.0, abs=1e-6)


def test_cs_fraction_one_measures_every_value():
  op = _operator('cs', fraction=1.0)
  assert op.apply(op.params(0, 0, R), _image(0)).shape == (R * R * 3,)


@pytest.mark.parametrize('mask_file', [False, True])
def test_inpainting_loss_sees_only_observed_pixels(tmp_path, mask_file):
  fields = {}
  if mask_file:
    mask = np.full((64, 64), 255, np.uint8)
    mask[:32, 10:40] = 0  # resized to 32 px: rows 0-15, columns 5-19
    Image.fromarray(mask).save(tmp_path / 'mask.png')
    fields['mask'] = str(tmp_path / 'mask.png')
  op = _operator('inpaint', box=0.25, **fields)
  params = op.params(seed=0, identity=3, resolution=R)
  observed = params['mask'][..., 0] == 1
  if mask_file:
    assert not observed[:16, 5:20].any() and observed[16:].all()
  else:
    assert (~observed).sum() == 8 * 8  # a hole of 0.25 x 32 pixels a side
    assert not np.array_equal(op.params(0, 4, R)['mask'], params['mask'])
  y = op.observe(params, _image(1), None)
  grad = jax.grad(lambda x: jnp.mean((op.apply(params, x) - y)**2))(_image(2))
  assert np.all(grad[~observed] == 0)
  assert np.all(grad[observed] != 0)


def test_inpainting_ignores_the_target_inside_the_hole(converted):
  """Through the engine: changing the hidden pixels changes nothing."""
  g = sphinx_jax.load_generator(converted['zip'])
  op = _operator('inpaint', box=0.5)
  inv = engine.Inverter(g, engine.Settings(steps=3, num_vicinal=2, operator=op))
  ids = np.array([4])
  params = inv.operator_params(ids)
  hole = params['mask'][0, ..., 0] == 0
  clean = np.asarray(_image(3))[None]
  scribbled = clean.copy()
  scribbled[0][hole] = 1.0
  runs = [inv.invert(inv.observe(x, ids, params), ids) for x in (clean, scribbled)]
  for a, b in zip(jax.tree_util.tree_leaves(runs[0].state),
                  jax.tree_util.tree_leaves(runs[1].state)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('kernel', ['area', 'bicubic'])
@pytest.mark.parametrize('factor', [2, 4, 8])
def test_super_resolution_shapes(kernel, factor):
  op = _operator('sr', factor=factor, kernel=kernel)
  y = op.apply({}, _image(0))
  assert y.shape == (R // factor, R // factor, 3)
  np.testing.assert_allclose(op.apply({}, jnp.full((R, R, 3), 0.25)), 0.25,
                             atol=1e-5)
  assert op.view({}, y).shape == (R, R, 3)
  assert op.load_size(R) == R // factor


def test_area_down_sampling_is_the_block_mean():
  x = np.asarray(_image(0))
  y = _operator('sr', factor=4).apply({}, jnp.asarray(x))
  np.testing.assert_allclose(y[1, 2], x[4:8, 8:12].mean(axis=(0, 1)), atol=1e-6)


def test_denoising_noise_and_the_official_fresh_noise():
  x = _image(0) * 0.5  # inside [-0.5, 0.5]: clipping rare at sigma 0.1
  official, plain = _operator('denoise', sigma=0.1), _operator(
      'denoise', sigma=0.1, fresh_noise=False)
  y = official.observe({}, x, jax.random.key(0))
  assert abs(float(jnp.std(y - x)) - 0.1) < 0.01
  assert float(jnp.abs(y).max()) <= 1.0
  np.testing.assert_array_equal(plain.apply({}, x, jax.random.key(1)), x)
  a, b = (official.apply({}, x, jax.random.key(k)) for k in (1, 2))
  assert not np.allclose(a, b)  # fresh noise each step


def test_grayscale_is_pillows_luma():
  rgb = np.random.default_rng(0).integers(0, 256, (R, R, 3), np.uint8)
  y = _operator('grayscale').apply({}, jnp.asarray(rgb, jnp.float32) / 127.5 - 1)
  luma = np.asarray(Image.fromarray(rgb).convert('L'), np.float32) / 127.5 - 1
  assert y.shape == (R, R, 1)
  np.testing.assert_allclose(y[..., 0], luma, atol=1.5 / 127.5)


@pytest.mark.parametrize('name, fields, message', [
    ('blur', {}, "config.operator.name = 'blur': must be one of identity, "
                 'denoise, cs, inpaint, sr, grayscale'),
    ('denoise', {'sigma': 0.0}, 'config.operator.sigma = 0.0: must be positive'),
    ('cs', {'fraction': 1.5}, r'config.operator.fraction = 1.5: must be in \(0, 1\]'),
    ('sr', {'factor': 3}, 'config.operator.factor = 3: must be at least 2 and '
                          'divide the resolution 32'),
    ('sr', {'kernel': 'nearest'}, "config.operator.kernel = 'nearest'"),
    ('inpaint', {'box': 1.0}, r'config.operator.box = 1.0: must be in \(0, 1\)'),
])
def test_bad_operator_settings_are_one_line(name, fields, message):
  with pytest.raises(SphinxError, match=message):
    _operator(name, **fields)


def test_unreadable_mask_names_the_file(tmp_path):
  (tmp_path / 'mask.png').write_bytes(b'not a png')
  op = _operator('inpaint', mask=str(tmp_path / 'mask.png'))
  with pytest.raises(SphinxError, match='operator.mask .*mask.png.*not a readable'):
    op.params(0, 0, R)


@pytest.fixture()
def inputs(tmp_path):
  d = tmp_path / 'inputs'
  d.mkdir()
  for f in ('astronaut.jpg', 'retina.jpg'):
    shutil.copy(REPO / 'samples' / f, d)
  return d


def _task(task, generator, inputs, outdir, **overrides):
  return load_config(task, generator=generator, inputs=str(inputs),
                     outdir=str(outdir), steps=2, batch_size=2, num_vicinal=2,
                     save_every=2, **overrides)


@pytest.mark.parametrize('task, observation_shape', [
    ('denoise', (32, 32, 3)), ('cs', (32, 32, 3)), ('inpaint', (32, 32, 3)),
    ('sr', (32, 32, 3)), ('colorize', (32, 32, 3))])
def test_each_task_config_runs_end_to_end(tmp_path, converted, inputs, task,
                                          observation_shape):
  out = tmp_path / 'out'
  assert run.main(_task(task, converted['zip'], inputs, out)) == 0
  for name in ('astronaut', 'retina'):
    for f in ('target.png', 'observation.png', 'reconstruction.png', 'mean.png'):
      assert np.asarray(Image.open(out / name / f)).shape == observation_shape
    # target.png is the clean input the metrics compare with.
    clean = load_image(str(REPO / 'samples' / f'{name}.jpg'), R)
    np.testing.assert_array_equal(np.asarray(Image.open(out / name / 'target.png')),
                                  images.to_uint8(clean))
  rows = list(csv.DictReader(open(out / 'metrics.csv')))
  assert [r['image'] for r in rows] == ['astronaut', 'retina']
  assert all(np.isfinite(float(r['psnr'])) for r in rows)
  assert json.load(open(out / 'run.json'))['operator']['name'] == (
      'grayscale' if task == 'colorize' else task)


def test_metrics_are_against_the_clean_image(tmp_path, converted, inputs):
  """Denoising: target.png is the clean input; observation.png is noisier."""
  out = tmp_path / 'out'
  assert run.main(_task('denoise', converted['zip'], inputs, out,
                       **{'operator.sigma': 0.5})) == 0
  target = np.asarray(Image.open(out / 'astronaut' / 'target.png'), np.float32)
  noisy = np.asarray(Image.open(out / 'astronaut' / 'observation.png'), np.float32)
  rows = {r['image']: r for r in csv.DictReader(open(out / 'metrics.csv'))}
  recon = np.asarray(Image.open(out / 'astronaut' / 'reconstruction.png'), np.float32)
  mse = np.mean(((recon - target) / 255.0)**2)
  assert float(rows['astronaut']['psnr']) == pytest.approx(-10 * np.log10(mse), abs=0.05)
  assert np.abs(noisy - target).mean() > 20  # sigma 0.5: about 40 levels


def test_given_low_resolution_observations(tmp_path, converted):
  """observation=given with sr: the inputs are the low-resolution images."""
  d = tmp_path / 'small'
  d.mkdir()
  rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), np.uint8)
  Image.fromarray(rgb).save(d / 'tiny.png')
  out = tmp_path / 'out'
  assert run.main(_task('sr', converted['zip'], d, out, observation='given')) == 0
  shown = np.asarray(Image.open(out / 'tiny' / 'observation.png'))
  np.testing.assert_array_equal(shown[::4, ::4], rgb)  # nearest up-sampling
  np.testing.assert_array_equal(
      np.asarray(Image.open(out / 'tiny' / 'target.png')), shown)


def test_given_measurements_are_refused_for_cs(tmp_path, converted, inputs):
  with pytest.raises(SphinxError, match="operator 'cs' takes clean inputs"):
    run.main(_task('cs', converted['zip'], inputs, tmp_path / 'out',
                  observation='given'))
  assert not (tmp_path / 'out').exists()


def test_a_changed_operator_is_refused_on_the_same_outdir(tmp_path, converted,
                                                          inputs):
  out = tmp_path / 'out'
  assert run.main(_task('denoise', converted['zip'], inputs, out)) == 0
  with pytest.raises(SphinxError, match='other settings.*operator'):
    run.main(_task('denoise', converted['zip'], inputs, out,
                  **{'operator.sigma': 0.3}))


def test_a_task_from_the_command_line_with_a_baseline(tmp_path, converted,
                                                      inputs):
  """Nested operator fields override from flags; baselines restore too."""
  out = tmp_path / 'out'
  result = run_cli('-m', 'sphinx_jax.run', '--config', 'configs/sr.py',
                   f'--config.generator={converted["zip"]}',
                   f'--config.inputs={inputs}', f'--config.outdir={out}',
                   '--config.steps=2', '--config.num_vicinal=2',
                   '--config.method=wplus', '--config.operator.factor=2',
                   '--config.operator.kernel=bicubic')
  assert result.returncode == 0, result.stderr
  assert 'Traceback' not in result.stderr
  shown = np.asarray(Image.open(out / 'retina' / 'observation.png'))
  np.testing.assert_array_equal(shown[::2, ::2], shown[1::2, 1::2])  # 2x2 blocks
  assert json.load(open(out / 'run.json'))['operator']['factor'] == 2
  rows = list(csv.DictReader(open(out / 'metrics.csv')))
  assert [r['method'] for r in rows] == ['wplus', 'wplus']


def test_a_bad_operator_from_the_command_line_is_one_line(tmp_path):
  result = run_cli('-m', 'sphinx_jax.run', '--config', 'configs/sr.py',
                   '--config.operator.factor=5', f'--config.outdir={tmp_path}/o')
  assert result.returncode == 1
  assert result.stderr.strip() == ('error: config.operator.factor = 5: must be '
                                   'at least 2 and divide the resolution 32')


def test_metrics_are_on_the_saved_images_and_the_observed_reconstruction(
    tmp_path, converted, inputs):
  """Official quantisation (truncate): every metric equals the one computed
  from the PNGs on disk; denoising also saves the reconstruction seen
  through the operator (the official pros_gen.png)."""
  out = tmp_path / 'out'
  assert run.main(_task('denoise', converted['zip'], inputs, out,
                       quantize='truncate')) == 0
  rows = {r['image']: r for r in csv.DictReader(open(out / 'metrics.csv'))}
  lpips_params = lpips.load_params()
  for name in ('astronaut', 'retina'):
    png = lambda f: np.asarray(Image.open(out / name / f), np.float32)[None] / 127.5 - 1
    scores = metrics.evaluate(lpips_params, png('reconstruction.png'),
                              png('target.png'))
    for key, value in scores.items():
      assert float(rows[name][key]) == pytest.approx(float(value[0]), rel=1e-5)
    observed = png('reconstruction_observed.png')
    # A fresh sigma-0.1 draw on the reconstruction: about 10 levels away.
    assert 5 < np.abs(observed - png('reconstruction.png')).mean() * 127.5 < 20


def test_a_plain_inversion_saves_no_observed_reconstruction(tmp_path, converted,
                                                            inputs):
  out = tmp_path / 'out'
  assert run.main(_task('invert', converted['zip'], inputs, out)) == 0
  assert not (out / 'astronaut' / 'reconstruction_observed.png').exists()
