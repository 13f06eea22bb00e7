"""The inversion engine through its Python API, on the fixture generator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sphinx_jax
from sphinx_jax.inversion import engine, methods, objective


@pytest.fixture(scope='module')
def gen(converted):
  return sphinx_jax.load_generator(converted['zip'])


@pytest.fixture(scope='module')
def targets(gen):
  """Three images the generator can make, with distinct content."""
  z = jax.random.normal(jax.random.key(3), (3, gen.z_dim))
  wplus = jnp.repeat(gen.mapping(z)[:, None], gen.n_latent, axis=1)
  return np.asarray(gen.synthesize(wplus))


def _leaf(tree, i):
  return jax.tree_util.tree_map(lambda x: np.asarray(x)[i], tree)


def test_result_does_not_depend_on_batch_company_or_position(gen, targets):
  # Batches of two (the size other tests compile for): image 7 first beside
  # image 5, then second beside image 11.
  inv = engine.Inverter(gen, engine.Settings(steps=4, num_vicinal=2))
  first = inv.invert(targets[[1, 0]], np.array([7, 5]))
  second = inv.invert(targets[[2, 1]], np.array([11, 7]))
  for a, b in zip(jax.tree_util.tree_leaves(_leaf(first.state, 0)),
                  jax.tree_util.tree_leaves(_leaf(second.state, 1))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(first.mean[0], second.mean[1], atol=1e-4)
  np.testing.assert_allclose(first.wplus_mean[0], second.wplus_mean[1],
                             atol=1e-4)


def test_deterministic_for_a_seed(gen, targets):
  runs = [engine.Inverter(gen, engine.Settings(steps=4, num_vicinal=2, seed=s)
                          ).invert(targets[:1], np.array([1]))
          for s in (0, 0, 1)]
  np.testing.assert_array_equal(runs[0].reconstruction, runs[1].reconstruction)
  np.testing.assert_array_equal(runs[0].mean, runs[1].mean)
  assert not np.array_equal(runs[0].reconstruction, runs[2].reconstruction)


def test_sphinx_loss_falls_over_30_steps(gen, targets):
  losses = []
  inv = engine.Inverter(gen, engine.Settings(steps=30, num_vicinal=2))
  result = inv.invert(targets[:1], np.array([1]),
                      on_step=lambda step, loss, *_: losses.append(float(loss[0])))
  assert len(losses) == 30
  assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5]), losses
  assert result.reconstruction.shape == (1, 32, 32, 3)
  assert result.content_mean.shape == (1, 4, 4, 64)
  assert result.wplus_mean.shape == (1, 8, 64)
  # Vicinal draws differ: the estimate has a non-zero spread.
  assert result.std.max() > 1e-4


@pytest.mark.parametrize('schedule', ['official', 'all'])
def test_learning_rate_schedule_groups(gen, targets, schedule):
  """The ramp starts at lr 0: at step 0 only constant-lr groups move."""
  inv = engine.Inverter(gen, engine.Settings(steps=10, num_vicinal=2, lr_schedule=schedule))
  keys, state, opt_state = inv.init(np.array([1]))
  before = jax.device_get(state)
  t = jnp.asarray(targets[:1])
  state, *_ = inv.step(state, opt_state, keys, t, inv.target_features(t),
                       inv.operator_params(np.array([1])), 0)
  moved = {k: any(not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(before[k]), jax.tree_util.tree_leaves(state[k])))
           for k in ('ps', 'pc', 'noise')}
  if schedule == 'official':
    assert moved == {'ps': False, 'pc': True, 'noise': True}
  else:
    assert moved == {'ps': False, 'pc': False, 'noise': False}


@pytest.mark.parametrize('name', ['wplus', 'wplus_noise', 'w'])
def test_baselines(gen, targets, name):
  inv = engine.Inverter(gen, engine.Settings(method=name, steps=12, num_vicinal=3))
  losses = []
  result = inv.invert(targets[:2], np.array([1, 2]),
                      on_step=lambda step, loss, *_: losses.append(np.asarray(loss)))
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-1]) < np.mean(losses[0])
  assert result.content_mean is None
  if name == 'w':
    # NVIDIA's recipe renormalises the noise maps after every step.
    for n in result.state['noise']:
      np.testing.assert_allclose(n.mean(axis=(1, 2, 3)), 0, atol=1e-5)
      np.testing.assert_allclose(n.std(axis=(1, 2, 3)), 1, atol=1e-4)
    rows = result.wplus_mean[0]
    np.testing.assert_allclose(rows, np.broadcast_to(rows[0], rows.shape), atol=1e-6)
  else:  # deterministic: the vicinal estimate is the reconstruction itself
    np.testing.assert_array_equal(result.std, 0)
  assert inv.lr == methods.get(name).default_lr


def test_noise_regularization_penalises_correlation():
  rng = np.random.default_rng(0)
  white = [jnp.asarray(rng.normal(size=(16, 16, 1)), jnp.float32)]
  smooth = [jnp.asarray(np.repeat(np.repeat(rng.normal(size=(8, 8, 1)), 2, 0), 2, 1),
                        jnp.float32)]
  assert methods.noise_regularization(smooth) > 10 * methods.noise_regularization(white)


def test_lr_ramp_matches_the_projector_formula():
  for t in (0.0, 0.01, 0.05, 0.5, 0.8, 0.99):
    ramp = min(1, (1 - t) / 0.25)
    ramp = (0.5 - 0.5 * np.cos(np.pi * ramp)) * min(1, t / 0.05)
    assert abs(float(objective.lr_ramp(t)) - ramp) < 1e-6


def test_several_steps_per_dispatch_match_one(gen, targets):
  inv = engine.Inverter(gen, engine.Settings(steps=10, num_vicinal=2))
  calls = {1: [], 4: []}
  results = {every: inv.invert(targets[:2], np.array([1, 2]),
                               on_step=lambda step, *_: calls[every].append(step),
                               every=every)
             for every in (1, 4)}
  assert calls[1] == list(range(10)) and calls[4] == [3, 7, 9]
  for a, b in zip(jax.tree_util.tree_leaves(results[1].state),
                  jax.tree_util.tree_leaves(results[4].state)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(results[1].reconstruction, results[4].reconstruction,
                             atol=1e-4)


def test_bfloat16_compute_stays_close_to_float32(gen, targets):
  from sphinx_jax.inversion import metrics
  runs = {dt: engine.Inverter(gen, engine.Settings(
      steps=10, num_vicinal=2, dtype=dt)).invert(
          targets[:2], np.array([1, 2]), every=5) for dt in ('float32', 'bfloat16')}
  bf16 = runs['bfloat16']
  assert all(x.dtype == np.float32 for x in jax.tree_util.tree_leaves(bf16.state))
  assert np.isfinite(bf16.losses).all()
  # bf16 keeps ~3 significant digits: the images agree to well above 25 dB.
  assert np.all(np.asarray(metrics.psnr(bf16.mean, runs['float32'].mean)) > 25)


def test_the_hot_loop_makes_no_implicit_transfer(gen):
  """Steps dispatched under jax.transfer_guard('disallow'): every transfer
  between host and devices in the loop must be an explicit one."""
  inv = engine.Inverter(gen, engine.Settings(steps=6, num_vicinal=2))
  ids = np.array([1, 2])
  targets = inv.placement.shard(
      np.zeros((2, gen.resolution, gen.resolution, 3), np.float32))
  keys, state, opt_state = inv.init(ids)
  feats = inv.target_features(targets)
  op_params = inv.operator_params(ids)
  with jax.transfer_guard('disallow'):
    for first in (0, 3):
      state, opt_state, losses, _ = inv.steps(state, opt_state, keys, targets,
                                              feats, op_params, first, 3)
    state, opt_state, losses, _ = inv.step(state, opt_state, keys, targets,
                                           feats, op_params, 5)
    # The guard is armed: passing a host array to the step would be caught.
    with pytest.raises(Exception, match='[Dd]isallowed'):
      inv.steps(state, opt_state, keys, np.asarray(inv.placement.local(targets)),
                feats, op_params, 0, 1)
  assert inv.placement.local(losses).shape == (2,)
