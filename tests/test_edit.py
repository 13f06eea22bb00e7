"""Editing from inverted codes: directions, interpolation, a learned attribute."""

import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, load_config, run_cli
from sphinx_jax.inversion import attribute
from sphinx_jax import edit, run
from sphinx_jax.files import animation, codes as codes_files, directions, images
from sphinx_jax.inversion import edits
from sphinx_jax.jobs import editing
from sphinx_jax.errors import SphinxError
from sphinx_jax.files.generator_dir import load_generator

GENERATOR = str(REPO / 'ported_weights' / 'rosinality_small')


@pytest.fixture(scope='session')
def inverted(tmp_path_factory):
  """{method: outdir} for sphinx and wplus, each holding the codes of
  astronaut and cameraman after a few steps."""
  root = tmp_path_factory.mktemp('inverted')
  inputs = root / 'inputs'
  inputs.mkdir()
  for name in ('astronaut.jpg', 'cameraman.png'):
    shutil.copy(REPO / 'samples' / name, inputs)
  outdirs = {}
  for method in ('sphinx', 'wplus'):
    outdirs[method] = root / method
    config = load_config('invert', generator=GENERATOR, inputs=str(inputs),
                     outdir=str(outdirs[method]), method=method, steps=4,
                     batch_size=2, num_vicinal=2, save_every=2,
                     steps_per_dispatch=2)
    assert run.main(config) == 0
  return outdirs


@pytest.fixture(scope='session')
def g():
  return load_generator(GENERATOR)


def _codes_dir(inverted, method, name='astronaut'):
  return str(inverted[method] / name / 'codes')


def _png(path):
  return np.asarray(Image.open(path))


@pytest.mark.parametrize('method', ['sphinx', 'wplus'])
def test_zero_strength_reproduces_the_base_exactly(inverted, g, method):
  codes = codes_files.load_codes(_codes_dir(inverted, method), g)
  assert (codes.content is not None) == (method == 'sphinx')
  assert (codes.noise is not None) == (method == 'sphinx')
  direction = np.random.default_rng(0).normal(size=(g.n_latent, g.w_dim))
  frames = edits.direction_frames(codes, g, direction.astype(np.float32),
                                 [0.0, 1.5])
  base = edits.render(g, edits.base_inputs(codes, g))
  assert np.array_equal(frames[0][0], codes.wplus)
  assert np.array_equal(edits.render(g, frames[0]), base)
  assert not np.array_equal(edits.render(g, frames[1]), base)
  # The explicit noise and content are what None selects in G.
  content = None if codes.content is None else jnp.asarray(codes.content)[None]
  direct = jax.jit(lambda g, *args: g.synthesize(*args))(
      g, jnp.asarray(codes.wplus)[None], codes.noise, content)[0]
  np.testing.assert_allclose(base, direct, atol=1e-5)


def test_rows_restrict_the_edit():
  rng = np.random.default_rng(0)
  wplus = rng.normal(size=(8, 64)).astype(np.float32)
  direction = rng.normal(size=(8, 64)).astype(np.float32)
  edited = edits.edit_wplus(wplus, direction, 2.0, rows=[1, 3])
  changed = np.flatnonzero((edited != wplus).any(axis=1))
  assert changed.tolist() == [1, 3]
  np.testing.assert_array_equal(edited[[1, 3]],
                                wplus[[1, 3]] + 2 * direction[[1, 3]])
  assert (edits.edit_wplus(wplus, direction, 2.0) != wplus).any(axis=1).all()
  assert edit.parse_rows('3, 1,1') == (1, 3)
  assert edit.parse_rows('') is None
  with pytest.raises(SphinxError, match='config.rows'):
    edit.parse_rows('x')
  g = type('G', (), {'n_latent': 8})()
  editing.check_rows((1, 7), g)
  for bad in ((8,), (-1, 2)):
    with pytest.raises(SphinxError, match=r'config.rows .* rows in 0..7'):
      editing.check_rows(bad, g)


def test_interpolation_ends_are_the_two_bases(inverted, g):
  a = codes_files.load_codes(_codes_dir(inverted, 'sphinx', 'astronaut'), g)
  for b_dir in (_codes_dir(inverted, 'sphinx', 'cameraman'),
                _codes_dir(inverted, 'wplus', 'cameraman')):  # mixed methods
    b = codes_files.load_codes(b_dir, g)
    frames = edits.interpolation_frames(a, b, g, 3)
    assert len(frames) == 3
    assert np.array_equal(edits.render(g, frames[0]),
                          edits.render(g, edits.base_inputs(a, g)))
    assert np.array_equal(edits.render(g, frames[-1]),
                          edits.render(g, edits.base_inputs(b, g)))
    np.testing.assert_allclose(frames[1][0], (a.wplus + b.wplus) / 2,
                               atol=1e-6)


def test_interpolation_refuses_codes_of_two_generators(inverted, tmp_path):
  other = tmp_path / 'other_generator'
  shutil.copytree(GENERATOR, other)
  meta = json.loads((other / 'generator.json').read_text())
  (other / 'generator.json').write_text(json.dumps({**meta, 'note': 'other'}))
  b = tmp_path / 'codes'
  shutil.copytree(_codes_dir(inverted, 'sphinx', 'cameraman'), b)
  config = json.loads((b / 'config.json').read_text())
  (b / 'config.json').write_text(json.dumps({**config,
                                             'generator': str(other)}))
  with pytest.raises(SphinxError, match='different generators'):
    editing.check_same_generator(_codes_dir(inverted, 'sphinx'), str(b))


def test_learn_end_to_end_and_its_direction_replays_the_walk(tmp_path, g):
  out = tmp_path / 'learn'
  config = load_config('edit', mode='learn', generator=GENERATOR,
                   image=str(REPO / 'samples' / 'cat.jpg'), levels='0,20,40',
                   steps=3, frames=3, num_vicinal=2, outdir=str(out))
  assert edit.main(config) == 0
  info = json.loads((out / 'edit.json').read_text())
  alphas = np.array(info['alphas'])
  assert alphas.shape == (3,) and alphas[0] == 0 and np.isfinite(alphas).all()
  assert np.all(alphas[1:] != 0)  # learned: moved from their initial 0
  direction = np.load(out / 'direction.npy')
  assert direction.shape == (g.n_latent, g.w_dim)
  np.testing.assert_allclose(np.linalg.norm(direction, axis=1), 1, atol=1e-5)
  for name in ('frame_000.png', 'frame_002.png', 'base.png', 'edit.gif',
               'targets.png'):
    assert (out / name).exists(), name
  assert np.array_equal(_png(out / 'frame_000.png'), _png(out / 'base.png'))
  # Mode (a) on the written codes with the saved direction gives the walk.
  codes = codes_files.load_codes(str(out / 'codes'), g)
  frames = edits.direction_frames(codes, g, directions.load_direction(
      str(out / 'direction.npy'), g), info['frame_alphas'])
  for i, frame in enumerate(frames):
    assert np.array_equal(images.to_uint8(edits.render(g, frame)),
                          _png(out / f'frame_{i:03d}.png'))


def test_monotonic_penalty_and_its_indexing():
  penalty = lambda a: float(attribute.monotonic_penalty(jnp.asarray(a)))
  assert penalty([0.5]) == 1.5  # K = 2: max(0, 2 - alpha_1)
  assert penalty([3.0]) == 0.0
  # K = 3: max(0, 2 - alpha_1) + max(0, 2 - (alpha_2 - alpha_1)).
  assert penalty([1.0, 2.5]) == pytest.approx(1.0 + 0.5)
  assert penalty([2.0, 4.0]) == 0.0
  # K = 4: alpha_3 gets no bound of its own, only its gap to alpha_2.
  assert penalty([2.0, 4.0, 5.0]) == pytest.approx(1.0)
  rows = attribute.normalize_rows(jnp.asarray([[3.0, 4.0], [0.0, -2.0]]))
  np.testing.assert_allclose(rows, [[0.6, 0.8], [0.0, -1.0]])


def test_transforms():
  x = np.random.default_rng(0).uniform(-1, 1, (8, 8, 3)).astype(np.float32)
  for name, identity in attribute.IDENTITY.items():
    assert attribute.transform(x, name, identity) is x
  np.testing.assert_allclose(attribute.transform(x, 'rotation', 90),
                             np.rot90(x), atol=1e-6)  # counter-clockwise
  np.testing.assert_allclose(attribute.transform(x, 'brightness', 0.5),
                             (x + 1) / 2 - 1, atol=1e-6)
  zoomed_out = attribute.transform(x, 'zoom', 0.5)
  assert np.all(zoomed_out[0] == -1)  # uncovered pixels are black


def test_mp4_only_with_ffmpeg(tmp_path, monkeypatch, capsys):
  frames = [np.full((4, 4, 3), v, np.uint8) for v in (0, 255)]
  monkeypatch.setenv('PATH', str(tmp_path))
  assert not animation.write_mp4(frames, str(tmp_path / 'a.mp4'), 10)
  assert 'no ffmpeg on PATH' in capsys.readouterr().err
  # A stand-in ffmpeg that stores its input where the output should go.
  fake = tmp_path / 'ffmpeg'
  fake.write_text(f'#!{sys.executable}\nimport sys\n'
                  'open(sys.argv[-1], "wb").write(sys.stdin.buffer.read())\n')
  fake.chmod(0o755)
  assert animation.write_mp4(frames, str(tmp_path / 'b.mp4'), 10)
  assert (tmp_path / 'b.mp4').stat().st_size == 2 * 4 * 4 * 3
  fake.write_text('#!/bin/sh\necho broken >&2\nexit 3\n')
  assert not animation.write_mp4(frames, str(tmp_path / 'c.mp4'), 10)
  assert 'ffmpeg failed (broken)' in capsys.readouterr().err
  assert sorted(os.listdir(tmp_path)) == ['b.mp4', 'ffmpeg']


def test_bad_inputs_raise_one_line_errors(inverted, g, tmp_path):
  codes = _codes_dir(inverted, 'sphinx')
  bad_shape = tmp_path / 'bad.npy'
  np.save(bad_shape, np.zeros((3, g.w_dim)))
  with pytest.raises(SphinxError,
                     match=r'bad.npy: direction of shape \(3, 64\)'):
    directions.load_direction(str(bad_shape), g)
  with pytest.raises(SphinxError, match='cannot read the direction'):
    directions.load_direction(str(tmp_path / 'missing.npy'), g)
  with pytest.raises(SphinxError, match='no such codes directory'):
    codes_files.load_codes(str(tmp_path / 'nowhere'), g)
  corrupt = tmp_path / 'corrupt'
  shutil.copytree(codes, corrupt)
  shutil.rmtree(corrupt / 'state')
  (corrupt / 'state').mkdir()
  with pytest.raises(SphinxError, match='cannot read the codes'):
    codes_files.load_codes(str(corrupt), g)
  with pytest.raises(SphinxError, match='config.mode'):
    edit.main(load_config('edit', mode='magic'))
  with pytest.raises(SphinxError, match='config.levels'):
    edit.settings_from_config(load_config('edit', mode='learn', generator='g',
                                          levels='10,20'))


def test_cli_direction_end_to_end(inverted, tmp_path):
  np.save(tmp_path / 'd.npy', np.ones(64, np.float32))
  out = tmp_path / 'out'
  args = ('-m', 'sphinx_jax.edit', '--config', 'configs/edit.py',
          f'--config.codes={_codes_dir(inverted, "wplus")}',
          f'--config.outdir={out}', '--config.strengths=-1,0,1',
          '--config.rows=0,1')
  result = run_cli(*args, f'--config.direction={tmp_path / "d.npy"}')
  assert result.returncode == 0, result.stderr
  assert 'Traceback' not in result.stderr
  assert [f'frame_00{i}.png' for i in range(3)] == sorted(
      f for f in os.listdir(out) if f.startswith('frame_'))
  assert np.array_equal(_png(out / 'frame_001.png'), _png(out / 'base.png'))
  assert Image.open(out / 'edit.gif').n_frames == 3
  assert json.loads((out / 'edit.json').read_text())['rows'] == [0, 1]
  np.save(tmp_path / 'bad.npy', np.ones((2, 2)))
  result = run_cli(*args, f'--config.direction={tmp_path / "bad.npy"}')
  lines = result.stderr.strip().splitlines()
  assert result.returncode != 0
  assert len(lines) == 1 and lines[0].startswith('error:') and (
      'bad.npy: direction of shape (2, 2)' in lines[0]), result.stderr
