"""The digits prior trainer: steps, discriminator, resume, export, the CLI."""

import dataclasses
import json
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config, run_cli
from sphinx_jax import train_prior
from sphinx_jax.errors import SphinxError
from sphinx_jax.files.generator_dir import load_generator
from sphinx_jax.models.discriminator import Discriminator, minibatch_stddev, r1_penalty
from sphinx_jax.training import digits_score, trainer

# 8 px, a few channels, R1 every other step: every code path in seconds.
TINY = {'resolution': 8, 'z_dim': 16, 'w_dim': 16, 'n_mlp': 2,
        'channel_base': 64, 'channel_max': 16, 'batch_size': 4,
        'r1_interval': 2, 'log_every': 2, 'score_samples': 8,
        'checkpoint_every': 2, 'export_every': 0}


def _config(tmp_path, **overrides):
  return load_config('train_prior', **{
      **TINY, 'workdir': str(tmp_path / 'work'),
      'export_dir': str(tmp_path / 'export'), **overrides})


def _settings(tmp_path, **overrides) -> trainer.TrainSettings:
  return train_prior.settings_from_config(_config(tmp_path, **overrides))


def _flat(tree):
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope='module')
def stepped(tmp_path_factory):
  """(trainer, initial state, state, each step's metrics): 4 steps of the
  TINY run, uninterrupted, taken one by one."""
  model = trainer.Trainer(_settings(tmp_path_factory.mktemp('stepped')))
  reals = jnp.asarray(digits_score.load_digits(8)[0])
  state = start = model.init_state()
  metrics = []
  for step in range(4):
    state, values = model.train_step(state, reals, step)
    metrics.append(values)
  return model, start, state, metrics


@pytest.fixture(scope='module')
def interrupted(tmp_path_factory):
  """(directory, CompletedProcess) of the command line training 2 steps of
  the TINY run into `<directory>/work` and `<directory>/export`. Tests resume
  from copies of the workdir in this process: another one, as a rerun is."""
  root = tmp_path_factory.mktemp('interrupted')
  overrides = [f'--config.{k}={v}' for k, v in TINY.items()]
  result = run_cli('-m', 'sphinx_jax.train_prior', '--config',
                   'configs/train_prior.py', *overrides, '--config.steps=2',
                   f'--config.workdir={root / "work"}',
                   f'--config.export_dir={root / "export"}')
  assert result.returncode == 0, result.stderr
  return root, result


def _resumable(interrupted, tmp_path):
  """A copy of the interrupted run's workdir at `tmp_path/work`."""
  shutil.copytree(interrupted[0] / 'work', tmp_path / 'work')
  return tmp_path


def test_steps_run_and_losses_are_finite(stepped):
  model, start, state, metrics = stepped
  for step, values in enumerate(metrics):  # steps 0 and 2 add the R1 update
    assert set(values) == ({'loss_d', 'loss_g', 'r1'} if step % 2 == 0
                           else {'loss_d', 'loss_g'})
    assert all(np.isfinite(float(v)) for v in values.values()), values
  assert int(state['step']) == 4
  for name, key in (('g', "['synthesis']['const']"),
                    ('g_ema', "['synthesis']['const']"),
                    ('d', "['fromrgb']['weight']")):
    assert not np.array_equal(_flat(state[name])[key], _flat(start[name])[key])
  assert np.all(np.isfinite(state['w_avg'])) and np.any(state['w_avg'] != 0)
  images = model.samples(state, 5)
  assert images.shape == (5, 8, 8, 3) and np.all(np.isfinite(images))


def test_discriminator_shape_and_differentiable_r1():
  d = Discriminator(((4, 16), (8, 16), (16, 8)))
  x = jax.random.normal(jax.random.key(0), (8, 16, 16, 3))
  params = jax.jit(d.init)(jax.random.key(1), x)['params']
  assert set(params) == {'fromrgb', 'b16', 'b8', 'b4'}
  assert jax.jit(d.apply)({'params': params}, x).shape == (8,)

  def r1(p):
    return r1_penalty(lambda im: d.apply({'params': p}, im), x).mean()

  grads = _flat(jax.jit(jax.grad(r1))(params))
  assert all(np.all(np.isfinite(g)) for g in grads.values())
  assert np.abs(grads["['b16']['conv0']['weight']"]).max() > 0


def test_minibatch_stddev_groups_samples_as_nvidia():
  x = np.random.default_rng(0).normal(size=(8, 2, 2, 3)).astype(np.float32)
  y = np.asarray(minibatch_stddev(jnp.asarray(x), 4))
  assert y.shape == (8, 2, 2, 4)
  np.testing.assert_array_equal(y[..., :3], x)
  for i in range(8):  # sample i is grouped with i +- 2, 4, 6 (i mod 2)
    group = x[i % 2::2]
    want = np.sqrt(group.var(axis=0) + 1e-8).mean()
    np.testing.assert_allclose(y[i, :, :, 3], want, rtol=1e-5)


def test_resume_equals_uninterrupted_and_export_loads(tmp_path, stepped,
                                                     interrupted, capsys):
  straight = stepped[2]
  resumed = trainer.train(_settings(_resumable(interrupted, tmp_path), steps=4))
  assert 'resuming from the checkpoint after step 2' in capsys.readouterr().err
  for name in ('g', 'd', 'g_ema', 'g_opt', 'd_opt', 'w_avg', 'step'):
    a, b = _flat(straight[name]), _flat(resumed[name])
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=f'{name}{k}')

  g = load_generator(str(tmp_path / 'export'))
  assert (g.resolution, g.z_dim, g.w_dim, g.num_noise) == (8, 16, 16, 3)
  flat = _flat(g.params)
  for k, v in _flat(resumed['g_ema']).items():
    np.testing.assert_array_equal(flat[k], v, err_msg=k)
  np.testing.assert_array_equal(g.w_avg, resumed['w_avg'])
  w = g.mapping(jax.random.normal(jax.random.key(0), (2, g.z_dim)), 0.7)
  img = g.synthesize(jnp.repeat(w[:, None], g.n_latent, axis=1))
  assert img.shape == (2, 8, 8, 3) and np.all(np.isfinite(img))
  meta = json.load(open(tmp_path / 'export' / 'generator.json'))
  assert meta['source']['steps'] == 4
  assert 'load_digits' in meta['source']['data']
  assert meta['source']['seconds'] > 0
  assert meta['source']['config'] == dataclasses.asdict(
      _settings(tmp_path, steps=4))


@pytest.mark.parametrize('overrides, message', [
    ({'seed': 1}, 'holds a run with seed = 0, this config has 1'),
    # Compared before the checkpoint's arrays, which would not fit.
    ({'resolution': 16}, 'holds a run with resolution = 8, this config has 16'),
    ({'steps': 1}, 'checkpoint is after step 2, beyond config.steps = 1'),
])
def test_a_changed_setting_is_refused_on_resume(tmp_path, interrupted,
                                                overrides, message):
  with pytest.raises(SphinxError, match=message):
    trainer.train(_settings(_resumable(interrupted, tmp_path),
                            **{'steps': 4, **overrides}))
  assert not (tmp_path / 'export').exists()


def test_cli_end_to_end(interrupted):
  root, result = interrupted
  assert 'Traceback' not in result.stderr
  assert 'resuming' not in result.stderr
  assert 'real digits (held out): confidence' in result.stdout
  assert 'step 2/2' in result.stdout and 'samples: confidence' in result.stdout
  assert f'exported step 2 to {root / "export"}' in result.stdout
  assert load_generator(str(root / 'export')).resolution == 8


def test_bad_config_is_one_line():
  result = run_cli('-m', 'sphinx_jax.train_prior', '--config',
                   'configs/train_prior.py', '--config.batch_size=6')
  assert result.returncode == 1
  assert result.stderr.strip() == (
      'error: config.batch_size = 6: must be a positive multiple of 4')


def test_settings_hold_every_config_field(tmp_path):
  config = _config(tmp_path)
  settings = train_prior.settings_from_config(config)
  assert dataclasses.asdict(settings) == config.to_dict()


@pytest.mark.parametrize('field, value, message', [
    ('resolution', 12, 'must be a power of two >= 8'),
    ('style_mixing_prob', 1.5, r'must be in \[0, 1\]'),
    ('checkpoint_every', -1, 'must be non-negative'),
])
def test_bad_values_are_refused_before_any_work(tmp_path, field, value, message):
  config = _config(tmp_path, **{field: value})
  with pytest.raises(SphinxError, match=f'config.{field} = {value}: {message}'):
    train_prior.settings_from_config(config)
  assert not (tmp_path / 'work').exists()


def test_export_dir_holding_other_files_is_refused(tmp_path):
  (tmp_path / 'export').mkdir()
  (tmp_path / 'export' / 'notes.txt').write_text('mine')
  with pytest.raises(SphinxError, match='not a generator directory'):
    train_prior.settings_from_config(_config(tmp_path))


def test_missing_scikit_learn_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, 'sklearn', None)  # makes the import fail
  with pytest.raises(SphinxError, match=r"pip install -e '\.\[train\]'"):
    digits_score.load_digits(8)
