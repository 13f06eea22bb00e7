"""The Flax generator against the official SPHInX/rosinality outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sphinx_jax
from conftest import REPO, nhwc, rel_err


@pytest.fixture(scope='module', params=['zip', 'legacy'])
def gen(request, converted):
  return sphinx_jax.load_generator(converted[request.param])


def _noise(golden):
  return [jnp.asarray(nhwc(golden[f'noise_{j}'])) for j in range(7)]


def test_attributes(gen, golden):
  assert (gen.resolution, gen.n_latent, gen.w_dim, gen.z_dim) == (
      int(golden['size']), int(golden['n_latent']), int(golden['style_dim']),
      int(golden['style_dim']))
  assert gen.arch.channels == ((4, 64), (8, 64), (16, 48), (32, 32))
  assert gen.arch.n_mlp == int(golden['n_mlp'])


def test_mapping(gen, golden):
  assert rel_err(gen.mapping(jnp.asarray(golden['z'])), golden['w']) < 1e-4


def test_truncation_moves_towards_w_avg(gen, golden):
  z = jnp.asarray(golden['z'])
  w = gen.mapping(z)
  half = gen.mapping(z, truncation_psi=0.5)
  np.testing.assert_allclose(half, gen.w_avg + 0.5 * (w - gen.w_avg), atol=1e-6)
  np.testing.assert_allclose(gen.mapping(z, truncation_psi=0.0),
                             jnp.broadcast_to(gen.w_avg, w.shape), atol=1e-6)


def test_content_image(gen, golden):
  img = gen.synthesize(jnp.asarray(golden['wplus']), _noise(golden),
                       jnp.asarray(nhwc(golden['content'])))
  assert img.shape == (2, 32, 32, 3)
  assert rel_err(img, nhwc(golden['image'])) < 1e-4


def test_const_image(gen, golden):
  img = gen.synthesize(jnp.asarray(golden['wplus']), _noise(golden))
  assert rel_err(img, nhwc(golden['const_image'])) < 1e-4


def test_gradients(gen, golden):
  r = jnp.asarray(nhwc(golden['R']))

  def objective(wplus, noise, content, g):
    return jnp.sum(g.synthesize(wplus, noise, content) * r)

  g_w, g_noise, g_content = jax.jit(jax.grad(objective, argnums=(0, 1, 2)))(
      jnp.asarray(golden['wplus']), _noise(golden),
      jnp.asarray(nhwc(golden['content'])), gen)
  assert rel_err(g_w, golden['grad_wplus']) < 1e-3
  assert rel_err(g_content, nhwc(golden['grad_content'])) < 1e-3
  for j, g in enumerate(g_noise):
    assert rel_err(g, nhwc(golden[f'grad_noise_{j}'])) < 1e-3, j


def test_noise_modes(gen, golden):
  wplus = jnp.asarray(golden['wplus'])
  stored = gen.synthesize(wplus)
  explicit = gen.synthesize(wplus, [n[None, :, :, None] for n in gen.noise_const])
  np.testing.assert_array_equal(stored, explicit)
  zero = gen.synthesize(wplus, 'zero')
  zeros = gen.synthesize(wplus, [jnp.zeros((1, r, r, 1))
                                 for r in gen.arch.noise_resolutions])
  np.testing.assert_allclose(zero, zeros, atol=1e-6)
  assert float(jnp.abs(stored - zero).max()) > 1e-3  # noise strengths are non-zero


def test_generator_is_a_pytree_for_jit(gen, golden):
  wplus = jnp.asarray(golden['wplus'])
  jitted = jax.jit(lambda g, w: g.synthesize(w))(gen, wplus)
  np.testing.assert_allclose(jitted, gen.synthesize(wplus), atol=1e-5)
  leaves = jax.tree_util.tree_leaves(gen)
  assert sum(x.size for x in leaves) > 100_000  # the weights are traced, not baked


def test_bad_arguments(gen, golden):
  wplus = jnp.asarray(golden['wplus'])
  with pytest.raises(ValueError, match='wplus must have shape'):
    gen.synthesize(wplus[:, :5])
  with pytest.raises(ValueError, match='7 maps'):
    gen.synthesize(wplus, _noise(golden)[:3])
  with pytest.raises(ValueError, match='noise must be'):
    gen.synthesize(wplus, 'random')


def test_shipped_generator_is_the_converted_fixture(golden):
  """ported_weights/rosinality_small (the Quickstart's) loads and matches."""
  g = sphinx_jax.load_generator(str(REPO / 'ported_weights' / 'rosinality_small'))
  assert rel_err(g.mapping(jnp.asarray(golden['z'])), golden['w']) < 1e-4
  img = g.synthesize(jnp.asarray(golden['wplus']), _noise(golden))
  assert rel_err(img, nhwc(golden['const_image'])) < 1e-4


def test_remat_changes_memory_not_results(gen, golden):
  import dataclasses
  r = jnp.asarray(nhwc(golden['R']))
  wplus = jnp.asarray(golden['wplus'])

  @jax.jit
  def grad(g):
    return jax.grad(lambda w: jnp.sum(g.synthesize(w, _noise(golden)) * r))(wplus)

  np.testing.assert_allclose(grad(dataclasses.replace(gen, remat=True)), grad(gen),
                             rtol=1e-5, atol=2e-5)  # the gradient reaches 6


def test_blocks_run_in_two_parts_equal_the_whole_network(converted):
  """From every intermediate layer k: blocks [0, k) then [k, end) give
  synthesize's image, and the features have the layer's resolution."""
  g = sphinx_jax.load_generator(converted['zip'])
  wplus = jax.random.normal(jax.random.key(3), (2, g.n_latent, g.w_dim))
  content = jax.random.normal(jax.random.key(4), (2, 4, 4, g.arch.channel(4)))
  whole = np.asarray(g.synthesize(wplus, content=content))
  for k in range(1, g.num_blocks):
    x, img = g.synthesize_blocks(wplus, content=content, stop=k)
    assert x.shape[1] == img.shape[1] == 4 * 2**(k - 1)
    rest = g.synthesize_blocks(wplus, start=k, hidden=(x, img))
    np.testing.assert_allclose(rest, whole, atol=1e-5, rtol=0)
  with pytest.raises(ValueError, match='hidden is needed'):
    g.synthesize_blocks(wplus, start=1)
