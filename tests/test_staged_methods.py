"""ILO and PTI (methods that run in stages) and the robustness of codes,
through the Python API and python -m sphinx_jax.run's door."""

import csv
import functools
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sphinx_jax
from conftest import REPO, load_config
from sphinx_jax import cli, run
from sphinx_jax.files import codes as codes_files
from sphinx_jax.inversion import edits, engine, ilo, methods, metrics, stages


@pytest.fixture(scope='module')
def gen(converted):
  return sphinx_jax.load_generator(converted['zip'])


@pytest.fixture(scope='module')
def targets():
  """Two photographs the fixture generator cannot make."""
  from sphinx_jax.files import inputs
  return np.stack([inputs.load_image(str(REPO / 'samples' / f), 32)
                   for f in ('astronaut.jpg', 'cat.jpg')])


def test_stages_split_any_run_in_proportion():
  where = lambda step, steps: [int(x) for x in stages.locate(
      ilo.STAGES, step, steps)]
  # ILO's own 150 steps: 50, 50, 25, 25.
  assert [where(s, 150) for s in (0, 49, 50, 100, 124, 125, 149, 150)] == [
      [0, 0, 50], [0, 0, 50], [1, 50, 50], [2, 100, 25], [2, 100, 25],
      [3, 125, 25], [3, 125, 25], [3, 125, 25]]
  assert where(7, 12) == [1, 4, 4] and where(9, 12) == [2, 8, 2]
  assert stages.empty_stage(ilo.STAGES, 3)
  assert stages.fewest_steps(ilo.STAGES) == 4
  assert stages.fewest_steps((450, 350)) == 2


def test_too_few_steps_for_the_stages_is_one_line(gen):
  with pytest.raises(Exception, match=r'config.steps = 3: method ilo runs 4 '
                     r'stages .*at least 4 steps'):
    engine.Inverter(gen, engine.Settings(method='ilo', steps=3))


def test_ilo_each_stage_continues_the_whole_generator(gen):
  """Entering block k from the features ILO computes at stage k's start
  gives the whole generator's image, to float rounding."""
  method = ilo.Ilo.for_generator(gen)
  key = jax.random.key(0)
  state = method.init(key, gen)
  steps = jnp.int32(150)
  whole = methods.synthesize(gen, method._to_w(state['latent']),
                             state['noise'], None)
  for first in (50, 100, 125):  # stages 1, 2, 3 start
    clock = methods.Clock(jnp.int32(first), steps)
    state = method.begin(state, key, clock, gen)
    image = method.render(state, None, clock, gen)[0]
    np.testing.assert_allclose(image, whole, atol=2e-5)
    assert float(jnp.abs(state['hidden'][int(stages.locate(
        ilo.STAGES, first, 150)[0]) - 1]).max()) > 0


def test_l1_projection_is_the_nearest_point_of_the_ball():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
  inside = ilo.project_l1_ball(x, 100.0)
  np.testing.assert_array_equal(inside, x)
  onto = np.asarray(ilo.project_l1_ball(x, 3.0))
  assert abs(np.abs(onto).sum() - 3.0) < 1e-4
  # Soft thresholding by one theta: the signs kept, every kept entry shrunk
  # by the same amount, the smallest ones zeroed.
  kept = onto != 0
  assert np.all(np.sign(onto[kept]) == np.sign(np.asarray(x)[kept]))
  shrink = np.abs(np.asarray(x))[kept] - np.abs(onto[kept])
  np.testing.assert_allclose(shrink, shrink[0], atol=1e-5)
  assert np.all(np.abs(np.asarray(x))[~kept] <= shrink[0] + 1e-6)


@pytest.fixture(scope='module')
def three(targets):
  """Three images: the two photographs and a third, their mean."""
  return np.concatenate([targets, targets.mean(0, keepdims=True)])


def _same_image(a, i, b, j):
  """Result `a`'s image i equals result `b`'s image j (state and outputs)."""
  for x, y in zip(jax.tree_util.tree_leaves(a.state),
                  jax.tree_util.tree_leaves(b.state)):
    np.testing.assert_allclose(np.asarray(x)[i], np.asarray(y)[j], rtol=1e-4,
                               atol=1e-5)
  np.testing.assert_allclose(a.mean[i], b.mean[j], atol=1e-4)
  np.testing.assert_allclose(a.robustness[i], b.robustness[j], rtol=1e-4)


def test_ilo_projections_keep_every_variable_in_its_ball(gen, three):
  """...and an image's result does not depend on which images share its
  batch or where it sits in it."""
  radius = {'latent': 3.0, 'noise': 0.5, 'hidden': 2.0}
  inv = engine.Inverter(gen, engine.Settings(
      method='ilo', steps=12, num_vicinal=1, **{
          f'ilo_radius_{k}': (r,) for k, r in radius.items()}))
  l1 = lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).sum())
  seen = []

  def check(step, losses, images, state, opt_state):
    state = jax.device_get(state)
    for i in range(2):
      one = jax.tree_util.tree_map(lambda x, i=i: x[i], state)
      anchor = one['anchor']
      assert l1(one['latent'], anchor['latent']) <= radius['latent'] + 1e-3
      for n, a in zip(one['noise'], anchor['noise']):
        assert l1(n, a) <= radius['noise'] + 1e-3
      for h, a in zip(one['hidden'], anchor['hidden']):
        assert l1(h, a) <= radius['hidden'] + 1e-3
      seen.append(l1(one['latent'], anchor['latent']))

  first = inv.invert(three[:2], np.array([1, 2]), on_step=check)
  assert len(seen) == 24 and max(seen) > radius['latent'] - 1e-2  # it bites
  assert np.isfinite(first.losses).all()
  second = inv.invert(three[[2, 1]], np.array([3, 2]), every=4)
  _same_image(first, 1, second, 1)


@pytest.mark.parametrize('pivot', ['w', 'sphinx'])
def test_pti_tuning_brings_the_image_closer_than_its_pivot(gen, three, pivot):
  """...and an image's result does not depend on which images share its
  batch or where it sits in it."""
  inv = engine.Inverter(gen, engine.Settings(method='pti', pivot=pivot,
                                             steps=40, num_vicinal=2))
  result = inv.invert(three[:2], np.array([1, 2]), every=10)
  state = result.state
  untuned = {**state, 'delta': jax.tree_util.tree_map(np.zeros_like,
                                                      state['delta'])}
  content = result.content_mean
  pivot_images = jax.jit(jax.vmap(
      lambda s, w, c, g: inv.method.decode(s, w, c, g),
      in_axes=(0, 0, 0, None)))(untuned, result.wplus_mean, content, gen)
  tuned = metrics.mse(result.mean, three[:2])
  before = metrics.mse(pivot_images, three[:2])
  assert np.all(tuned < 0.8 * before), (tuned, before)
  assert (content is not None) == (pivot == 'sphinx')
  # The tuning stage is deterministic: the estimate has no spread.
  np.testing.assert_array_equal(result.std, 0)
  other = inv.invert(three[[1, 2]], np.array([2, 3]), every=20)
  _same_image(result, 1, other, 0)


def test_the_locality_regulariser_holds_the_tuned_generator_near_its_own(gen):
  from sphinx_jax.inversion import pti
  from sphinx_jax.models import lpips
  method = pti.Pti.for_generator(gen)
  method = pti.Pti(pivot='w', projector=method.projector, locality=True)
  state = method.init(jax.random.key(0), gen)
  key = jax.random.key(1)
  params = lpips.load_params()
  loss = functools.partial(
      jax.jit(lambda s, g, p: method.locality_loss(s, key, g, p)),
      g=gen, p=params)
  assert float(loss(state)) < 1e-12  # a zero difference: G's own images
  moved = {**state, 'delta': jax.tree_util.tree_map(
      lambda d: d + 0.01, state['delta'])}
  assert float(loss(moved)) > 0
  grads = jax.jit(jax.grad(lambda s, g, p: method.locality_loss(
      s, key, g, p)))(moved, gen, params)['delta']
  assert any(float(jnp.abs(g).max()) > 0
             for g in jax.tree_util.tree_leaves(grads))
  # In the tuning stage it is the regulariser; in the pivot stage it is not.
  tuning = methods.Clock(jnp.int32(700), jnp.int32(800))
  np.testing.assert_allclose(jax.jit(
      lambda s, g, p: method.regularizer(s, tuning, key, g, p))(
          moved, gen, params), loss(moved), rtol=1e-5)


def test_a_zero_tuned_weight_difference_renders_the_base_generator(gen):
  codes = codes_files.Codes('', 'wplus', np.tile(np.asarray(gen.w_avg),
                                                 (gen.n_latent, 1)), None, None)
  frame = edits.base_inputs(codes, gen)
  zero = jax.tree_util.tree_map(np.zeros_like, gen.params['synthesis'])
  np.testing.assert_array_equal(edits.render(gen, frame, zero),
                                edits.render(gen, frame))


def test_an_interpolation_blends_the_tuned_weight_differences(gen):
  w = np.tile(np.asarray(gen.w_avg), (gen.n_latent, 1))
  delta = jax.tree_util.tree_map(lambda p: np.full(p.shape, 0.01, np.float32),
                                 gen.params['synthesis'])
  tuned = codes_files.Codes('a', 'pti', w, None, None, delta)
  plain = codes_files.Codes('b', 'wplus', w, None, None)
  deltas = edits.interpolation_deltas(tuned, plain, gen, 3)
  leaves = [jax.tree_util.tree_leaves(d) for d in deltas]
  assert all(np.all(x == np.float32(0.01)) for x in leaves[0])
  assert all(np.allclose(x, 0.005) for x in leaves[1])
  assert all(np.all(x == 0) for x in leaves[2])
  frames = edits.interpolation_frames(tuned, plain, gen, 3)
  np.testing.assert_array_equal(edits.render(gen, frames[-1], deltas[-1]),
                                edits.render(gen, edits.base_inputs(plain, gen)))
  assert not np.allclose(edits.render(gen, frames[0], deltas[0]),
                         edits.render(gen, frames[0]), atol=1e-3)
  assert edits.interpolation_deltas(plain, plain, gen, 3) == [None] * 3


def test_robustness_falls_as_the_perturbation_grows(gen, targets):
  inv = engine.Inverter(gen, engine.Settings(method='wplus', steps=2))
  result = inv.invert(targets, np.array([1, 2]))
  small = np.asarray(result.robustness)
  assert np.all(small > 20) and np.all(np.isfinite(small))
  keys = inv.init(np.array([1, 2]))[0]
  np.testing.assert_array_equal(inv.robustness(
      result.state, keys, result.wplus_mean, None, engine.ROBUST_EPS), small)
  big = np.asarray(inv.robustness(result.state, keys, result.wplus_mean, None,
                                  eps=1.0))
  assert np.all(big < small - 10), (big, small)


class Crash(Exception):
  pass


@pytest.mark.parametrize('method,extra', [
    ('ilo', ()), ('pti', ('--config.pivot=sphinx', '--config.pti_locality=True'))])
def test_staged_method_crashes_then_a_rerun_resumes_it(
    tmp_path, converted, method, extra, monkeypatch, capsys):
  """A run killed after a checkpoint mid-stage, then run again, equals an
  uninterrupted run, and its codes edit as they render."""
  inputs = tmp_path / 'inputs'
  inputs.mkdir()
  shutil.copy(REPO / 'samples' / 'cat.jpg', inputs)
  settings = dict(generator=converted['zip'], inputs=str(inputs), steps=8,
                  batch_size=1, num_vicinal=2, save_every=2,
                  checkpoint_every=2, steps_per_dispatch=2, method=method,
                  **{k: {'True': True}.get(v, v) for k, v in (
                      x[len('--config.'):].split('=') for x in extra)})
  outdir = lambda name: str(tmp_path / name)
  assert run.main(load_config('invert', outdir=outdir('whole'),
                              **settings)) == 0
  real = cli.Progress.update

  def crash(self, step, losses):
    if step == 7:  # after checkpoints at steps 2, 4 and 6
      raise Crash()
    real(self, step, losses)

  monkeypatch.setattr(cli.Progress, 'update', crash)
  with pytest.raises(Crash):
    run.main(load_config('invert', outdir=outdir('cut'), **settings))
  monkeypatch.setattr(cli.Progress, 'update', real)
  capsys.readouterr()
  # In-process: the command line's own resume is tested in test_resume.py,
  # and a second process would compile every program again.
  assert run.main(load_config('invert', outdir=outdir('cut'), **settings)) == 0
  assert ('resuming cat from the checkpoint after step 6\n' in
          capsys.readouterr().err)
  for f in ('reconstruction.png', 'mean.png', 'progress.gif'):
    assert ((tmp_path / 'whole' / 'cat' / f).read_bytes() ==
            (tmp_path / 'cut' / 'cat' / f).read_bytes()), f
  rows = {d: list(csv.DictReader(open(tmp_path / d / 'metrics.csv')))
          for d in ('whole', 'cut')}
  assert rows['whole'][0]['psnr'] == rows['cut'][0]['psnr']
  if method == 'pti':
    # The codes keep the tuned weights: an edit at strength 0 renders the
    # run's own image (to 8-bit rounding), not the base generator's.
    from sphinx_jax.jobs import editing
    from PIL import Image
    g = sphinx_jax.load_generator(converted['zip'])
    codes = editing.load_codes(editing.EditSettings(),
                               str(tmp_path / 'cut' / 'cat' / 'codes'), g)
    assert codes.delta is not None
    frame = edits.base_inputs(codes, g)
    mean = np.asarray(Image.open(tmp_path / 'cut' / 'cat' / 'mean.png'),
                      np.int16)
    edited = np.asarray(metrics.quantize(edits.render(g, frame, codes.delta)))
    edited = np.round((edited + 1) * 127.5).astype(np.int16)
    assert np.abs(edited - mean).max() <= 1
    base = np.round((np.asarray(metrics.quantize(edits.render(g, frame))) + 1)
                    * 127.5).astype(np.int16)
    assert np.abs(base - mean).max() > 1
