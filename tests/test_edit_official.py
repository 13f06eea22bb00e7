"""The official SPHInX behaviours `python -m sphinx_jax.edit` offers as
options: torchvision-like learn targets (nearest, grey fill), the official
attribute walk (one draw, the learned alphas and their midpoints), and the
official result file (.pt) as a codes source."""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from conftest import FIXTURES, REPO, load_config, run_cli
import torch_writer
from sphinx_jax import edit
from sphinx_jax.convert import official_heads
from sphinx_jax.errors import SphinxError
from sphinx_jax.files import codes as codes_files, images
from sphinx_jax.files.generator_dir import load_generator
from sphinx_jax.inversion import attribute, edits, methods
from sphinx_jax.jobs import editing

GENERATOR = str(REPO / 'ported_weights' / 'rosinality_small')
_SPHINX = methods.Sphinx()


def _png(path):
  return np.asarray(Image.open(path))


def _rgb(values) -> np.ndarray:
  """(H, W) values as an (H, W, 3) float32 image, the same in every channel."""
  return np.repeat(np.asarray(values, np.float32)[..., None], 3, axis=-1)


# Learn targets.


def test_nearest_rotation_by_90_with_grey_fill():
  # Input (r, c) holds (10 r + c + 1) / 100 on a 4x6 (h x w) image. Output
  # (r, c) reads input (c - 1, 4 - r): columns 0 and 5 fall outside, fill 0.
  x = _rgb((10 * np.arange(4)[:, None] + np.arange(6) + 1) / 100)
  expected = _rgb(np.array([[0, 5, 15, 25, 35, 0],
                            [0, 4, 14, 24, 34, 0],
                            [0, 3, 13, 23, 33, 0],
                            [0, 2, 12, 22, 32, 0]], np.float32) / 100)
  got = attribute.transform(x, 'rotation', 90, resample='nearest', fill=0.0)
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, expected)


def test_nearest_rotation_by_30_only_copies_pixels_or_fills():
  x = _rgb(np.random.default_rng(0).uniform(-1, 1, (9, 7)))
  got = attribute.transform(x, 'rotation', 30, resample='nearest', fill=0.0)
  copied = np.isin(got, x)
  assert np.all(copied | (got == 0))
  assert copied.mean() > 0.7 and (got == 0).any()  # corners uncovered
  bilinear = attribute.transform(x, 'rotation', 30)
  assert not np.isin(bilinear, x).all()


def test_nearest_rounds_half_to_even_and_bilinear_stays_the_default():
  # Zoom 0.5 about the centre of a 1x4 row reads source columns 2c - 1.5:
  # -1.5, 0.5, 2.5, 4.5. Half to even picks columns -2 (outside), 0, 2, 4
  # (outside); bilinear averages the two neighbours or gives the fill.
  a, b, c, d = 0.1, 0.3, 0.5, 0.7
  x = _rgb([[a, b, c, d]])
  np.testing.assert_array_equal(
      attribute.transform(x, 'zoom', 0.5, resample='nearest', fill=0.0),
      _rgb([[0, a, c, 0]]))
  np.testing.assert_allclose(attribute.transform(x, 'zoom', 0.5),
                             _rgb([[-1, (a + b) / 2, (c + d) / 2, -1]]),
                             atol=1e-6)
  np.testing.assert_allclose(
      attribute.transform(x, 'zoom', 0.5, fill=0.0),
      _rgb([[0, (a + b) / 2, (c + d) / 2, 0]]), atol=1e-6)


def test_learn_targets_follow_resample_and_fill():
  settings = edit.settings_from_config(load_config(
      'edit', mode='learn', generator='g', image=str(REPO / 'samples' /
                                                     'cat.jpg'),
      levels='0,30', resample='nearest', fill=0.0))
  assert (settings.resample, settings.fill) == ('nearest', 0.0)
  g = type('G', (), {'resolution': 16})()
  targets = editing.learn_targets(settings, g)
  np.testing.assert_array_equal(targets[1], attribute.transform(
      targets[0], 'rotation', 30, resample='nearest', fill=0.0))


def test_the_door_checks_the_new_fields():
  config = lambda **overrides: load_config('edit', direction='d.npy',
                                           **overrides)
  defaults = edit.settings_from_config(config())
  assert (defaults.resample, defaults.fill, defaults.walk) == (
      'bilinear', -1.0, 'mean')
  for field, value in (('resample', 'cubic'), ('fill', 1.5), ('walk', 'x')):
    with pytest.raises(SphinxError, match=f'config.{field} = '):
      edit.settings_from_config(config(**{field: value}))
  for overrides in ({'codes': 'result.pt'},
                    {'mode': 'interpolate', 'codes_b': 'result.pt'}):
    with pytest.raises(SphinxError, match='config.generator .* official .pt'):
      edit.settings_from_config(config(**overrides))
  assert edit.settings_from_config(config(codes='result.pt', generator='g'))


# The attribute walk.


def test_official_walk_alphas_insert_the_midpoints():
  a1, a2 = 1.25, 3.5
  np.testing.assert_allclose(
      attribute.official_walk_alphas(np.array([0, a1, a2])),
      [0, a1 / 2, a1, (a1 + a2) / 2, a2])
  np.testing.assert_allclose(
      attribute.official_walk_alphas(np.array([0, a1])), [0, a1 / 2, a1])


def test_official_walk_renders_one_draw(tmp_path):
  out = tmp_path / 'walk'
  config = load_config('edit', mode='learn', generator=GENERATOR,
                       image=str(REPO / 'samples' / 'cat.jpg'),
                       levels='0,20,40', steps=3, num_vicinal=2, seed=5,
                       walk='official', outdir=str(out))
  assert edit.main(config) == 0
  info = json.loads((out / 'edit.json').read_text())
  assert info['frame_alphas'] == attribute.official_walk_alphas(
      np.array(info['alphas'])).tolist()
  assert sorted(p.name for p in out.glob('frame_*.png')) == [
      f'frame_{i:03d}.png' for i in range(5)]
  # Frame 0 (alpha 0) is G(Ps(z+), Pc(s), B) for the draw of the key
  # fold_in(key(seed), 1), from the learned heads saved in codes/.
  g = load_generator(GENERATOR)
  state = ocp.StandardCheckpointer().restore(
      str(out / 'codes' / 'state'))['state']
  key = jax.random.fold_in(jax.random.key(5), 1)
  wplus, noise, content = _SPHINX.feed(state, _SPHINX.draw(key, g), None, g)
  drawn = images.to_uint8(edits.render(g, (np.asarray(wplus), noise,
                                           np.asarray(content))))
  frame = _png(out / 'frame_000.png')
  assert np.abs(frame.astype(int) - drawn).max() <= 1
  # Not the mean-code image.
  mean_w, mean_c = attribute.mean_codes(state, jax.random.key(0), 2, g)
  mean = images.to_uint8(edits.render(g, (np.asarray(mean_w), noise,
                                          np.asarray(mean_c))))
  assert np.abs(frame.astype(int) - mean).max() > 10
  # codes/ holds the draw, so mode direction replays the walk.
  codes = codes_files.load_codes(str(out / 'codes'), g)
  np.testing.assert_allclose(codes.wplus, wplus, atol=1e-5)


# The official result file as codes.


def _official_result(when: str):
  """The official loop's state at `when` ('init' or 'final') as the official
  code's result dict."""
  loop = dict(np.load(FIXTURES / 'sphinx_loop_golden.npz'))

  def torch_dict(head):
    prefix = f'{when}/{head}/'
    return {k[len(prefix):]: v for k, v in loop.items() if k.startswith(prefix)}

  return {'Ps': torch_dict('Ps'), 'Pc': torch_dict('Pc'),
          'noises': [loop[f'{when}/noise_{j}'] for j in range(7)],
          'true_img': loop['target']}


@pytest.fixture(scope='module')
def final_state():
  return _official_result('final')


def _write(result, path):
  torch_writer.save_zip(result, str(path))
  return str(path)


def test_an_official_result_is_a_codes_source(converted, final_state,
                                              tmp_path):
  path = _write(final_state, tmp_path / 'result.pt')
  direction = tmp_path / 'd.npy'
  np.save(direction, np.ones(64, np.float32))
  settings = edit.settings_from_config(load_config(
      'edit', codes=path, generator=converted['zip'], direction=str(direction),
      strengths='0,1', num_vicinal=3, outdir=str(tmp_path / 'out')))
  g = load_generator(converted['zip'])
  codes = editing.load_codes(settings, path, g)
  assert codes.method == 'sphinx' and len(codes.noise) == 7
  for got, official in zip(codes.noise, final_state['noises']):
    np.testing.assert_array_equal(got, official[0].transpose(1, 2, 0))
  # The mean over 3 draws of the file's heads, keys split from key(seed 0).
  heads = {'ps': official_heads.style_head_params_from_torch(final_state['Ps']),
           'pc': official_heads.content_head_params_from_torch(
               final_state['Pc']),
           'noise': codes.noise}
  fed = [_SPHINX.feed(heads, _SPHINX.draw(k, g), None, g)
         for k in jax.random.split(jax.random.key(0), 3)]
  np.testing.assert_allclose(codes.wplus, np.mean([f[0] for f in fed], 0),
                             atol=1e-5)
  np.testing.assert_allclose(codes.content, np.mean([f[2] for f in fed], 0),
                             atol=1e-5)
  assert editing.edit(settings) == 2
  base = images.to_uint8(edits.render(g, edits.base_inputs(codes, g)))
  out = tmp_path / 'out'
  assert np.array_equal(_png(out / 'base.png'), base)
  assert np.array_equal(_png(out / 'frame_000.png'), base)


def test_interpolation_between_official_results(converted, final_state,
                                                tmp_path):
  a = _write(_official_result('init'), tmp_path / 'init.pt')
  b = _write(final_state, tmp_path / 'final.pth')
  out = tmp_path / 'out'
  settings = edit.settings_from_config(load_config(
      'edit', mode='interpolate', codes=a, codes_b=b, frames=3,
      generator=converted['zip'], num_vicinal=2, outdir=str(out)))
  assert editing.edit(settings) == 3
  g = load_generator(converted['zip'])
  for path, frame in ((a, 'frame_000.png'), (b, 'frame_002.png')):
    codes = editing.load_codes(settings, path, g)
    assert np.array_equal(_png(out / frame), images.to_uint8(
        edits.render(g, edits.base_inputs(codes, g))))


@pytest.mark.parametrize('damage, message', [
    (lambda r: {k: v for k, v in r.items() if k != 'Ps'},
     r'not an official SPHInX result \(Ps missing'),
    (lambda r: {**r, 'noises': r['noises'][:3] + [np.zeros((1, 1, 8, 8))] +
                r['noises'][4:]},
     r'noises\[3\] has shape \(1, 1, 8, 8\); the generator needs '
     r'\(1, 1, 16, 16\)'),
    (lambda r: {**r, 'noises': r['noises'][:6]},
     '6 noise maps; the generator has 7'),
    (lambda r: {**r, 'Ps': {k: v for k, v in r['Ps'].items()
                            if not k.startswith('decs.7.')}},
     'Ps gives 7 W[+] rows of 64; the generator takes 8 of 64'),
])
def test_official_results_that_do_not_fit_are_refused(converted, final_state,
                                                      tmp_path, damage,
                                                      message):
  path = _write(damage(final_state), tmp_path / 'bad.pt')
  with pytest.raises(SphinxError, match=message):
    codes_files.read_official_result(path, load_generator(converted['zip']))


def test_an_unreadable_result_is_one_error_line(converted, tmp_path):
  bad = tmp_path / 'bad.pt'
  bad.write_bytes(b'not a torch file')
  result = run_cli('-m', 'sphinx_jax.edit', '--config', 'configs/edit.py',
                   f'--config.codes={bad}',
                   f'--config.generator={converted["zip"]}',
                   f'--config.direction={tmp_path / "d.npy"}',
                   f'--config.outdir={tmp_path / "out"}')
  lines = result.stderr.strip().splitlines()
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert len(lines) == 1 and lines[0].startswith(f'error: {bad}: not a torch '
                                                 'checkpoint'), result.stderr
