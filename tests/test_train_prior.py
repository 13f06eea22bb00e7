"""The digits prior trainer: steps, discriminator, resume, export, the CLI."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config, run_cli
from sphinx_jax.training import digits_score
from sphinx_jax import train_prior
from sphinx_jax.models.discriminator import Discriminator, minibatch_stddev, r1_penalty
from sphinx_jax.errors import SphinxError
from sphinx_jax.files.generator_dir import load_generator

# 8 px, a few channels, R1 every other step: every code path in seconds.
TINY = {'resolution': 8, 'z_dim': 16, 'w_dim': 16, 'n_mlp': 2,
        'channel_base': 64, 'channel_max': 16, 'batch_size': 4,
        'r1_interval': 2, 'log_every': 2, 'score_samples': 8,
        'checkpoint_every': 2, 'export_every': 0}


def _config(tmp_path, **overrides):
  return load_config('train_prior', **{
      **TINY, 'workdir': str(tmp_path / 'work'),
      'export_dir': str(tmp_path / 'export'), **overrides})


def _flat(tree):
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_steps_run_and_losses_are_finite(tmp_path):
  config = _config(tmp_path)
  trainer = train_prior.Trainer(config)
  reals = jnp.asarray(digits_score.load_digits(8)[0])
  state = start = trainer.init_state()
  for step in range(3):  # steps 0 and 2 add the R1 update
    state, metrics = trainer.train_step(state, reals, step)
    assert set(metrics) == ({'loss_d', 'loss_g', 'r1'} if step % 2 == 0
                            else {'loss_d', 'loss_g'})
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
  assert int(state['step']) == 3
  for name, key in (('g', "['synthesis']['const']"),
                    ('g_ema', "['synthesis']['const']"),
                    ('d', "['fromrgb']['weight']")):
    assert not np.array_equal(_flat(state[name])[key], _flat(start[name])[key])
  assert np.all(np.isfinite(state['w_avg'])) and np.any(state['w_avg'] != 0)
  images = trainer.samples(state, 5)
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


def test_resume_equals_uninterrupted_and_export_loads(tmp_path, capsys):
  straight = train_prior.train(_config(tmp_path / 'a', steps=4))
  train_prior.train(_config(tmp_path / 'b', steps=2))
  assert 'resuming' not in capsys.readouterr().err
  resumed = train_prior.train(_config(tmp_path / 'b', steps=4))
  assert 'resuming from the checkpoint after step 2' in capsys.readouterr().err
  for name in ('g', 'd', 'g_ema', 'g_opt', 'd_opt', 'w_avg', 'step'):
    a, b = _flat(straight[name]), _flat(resumed[name])
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=f'{name}{k}')

  g = load_generator(str(tmp_path / 'b' / 'export'))
  assert (g.resolution, g.z_dim, g.w_dim, g.num_noise) == (8, 16, 16, 3)
  flat = _flat(g.params)
  for k, v in _flat(resumed['g_ema']).items():
    np.testing.assert_array_equal(flat[k], v, err_msg=k)
  np.testing.assert_array_equal(g.w_avg, resumed['w_avg'])
  w = g.mapping(jax.random.normal(jax.random.key(0), (2, g.z_dim)), 0.7)
  img = g.synthesize(jnp.repeat(w[:, None], g.n_latent, axis=1))
  assert img.shape == (2, 8, 8, 3) and np.all(np.isfinite(img))
  meta = json.load(open(tmp_path / 'b' / 'export' / 'generator.json'))
  assert meta['source']['steps'] == 4
  assert 'load_digits' in meta['source']['data']
  assert meta['source']['seconds'] > 0


def test_a_changed_setting_is_refused_on_resume(tmp_path):
  train_prior.train(_config(tmp_path, steps=2))
  with pytest.raises(SphinxError, match='seed = 0, this config has 1'):
    train_prior.train(_config(tmp_path, steps=4, seed=1))


def test_cli_end_to_end(tmp_path):
  overrides = [f'--config.{k}={v}' for k, v in TINY.items()]
  result = run_cli('-m', 'sphinx_jax.train_prior', '--config',
                   'configs/train_prior.py', *overrides, '--config.steps=2',
                   f'--config.workdir={tmp_path / "work"}',
                   f'--config.export_dir={tmp_path / "export"}')
  assert result.returncode == 0, result.stderr
  assert 'Traceback' not in result.stderr
  assert 'real digits (held out): confidence' in result.stdout
  assert 'step 2/2' in result.stdout and 'samples: confidence' in result.stdout
  assert load_generator(str(tmp_path / 'export')).resolution == 8


def test_bad_config_is_one_line():
  result = run_cli('-m', 'sphinx_jax.train_prior', '--config',
                   'configs/train_prior.py', '--config.batch_size=6')
  assert result.returncode == 1
  assert result.stderr.strip() == (
      'error: config.batch_size = 6: must be a positive multiple of 4')


@pytest.mark.parametrize('field, value, message', [
    ('resolution', 12, 'must be a power of two >= 8'),
    ('style_mixing_prob', 1.5, r'must be in \[0, 1\]'),
    ('checkpoint_every', -1, 'must be non-negative'),
])
def test_bad_values_are_refused_before_any_work(tmp_path, field, value, message):
  with pytest.raises(SphinxError, match=f'config.{field} = {value}: {message}'):
    train_prior.validate(_config(tmp_path, **{field: value}))
  assert not (tmp_path / 'work').exists()


def test_export_dir_holding_other_files_is_refused(tmp_path):
  (tmp_path / 'export').mkdir()
  (tmp_path / 'export' / 'notes.txt').write_text('mine')
  with pytest.raises(SphinxError, match='not a generator directory'):
    train_prior.validate(_config(tmp_path))


def test_missing_scikit_learn_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, 'sklearn', None)  # makes the import fail
  with pytest.raises(SphinxError, match=r"pip install -e '\.\[train\]'"):
    digits_score.load_digits(8)
