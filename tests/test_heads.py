"""Projection heads: agreement with the official modules, init, conversion."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from sphinx_jax.models import heads
from sphinx_jax.convert import official_heads, torch_files
from sphinx_jax.errors import SphinxError
from conftest import FIXTURES, nhwc, rel_err

# XLA takes seconds on CPU to compile threefry for a dozen draws; the RBG
# generator compiles in a fraction of that and the initialisers' distributions
# do not depend on which generator feeds them.
FAST_KEY = jax.random.key(0, impl='rbg')


@pytest.fixture(scope='module')
def state_dicts():
  return torch_files.load(str(FIXTURES / 'rosinality_small_heads.pt'))


def shapes(tree):
  return jax.tree.map(lambda a: (a.shape, a.dtype), tree)


def test_style_head_matches_reference(state_dicts, golden):
  params = official_heads.style_head_params_from_torch(state_dicts['Ps'])
  out = heads.StyleProjection(8, 64).apply({'params': params}, golden['zplus'])
  assert rel_err(out, golden['ps_out']) < 1e-5


def test_content_head_matches_reference(state_dicts, golden):
  params = official_heads.content_head_params_from_torch(state_dicts['Pc'])
  out = heads.ContentProjection(64).apply({'params': params}, nhwc(golden['s']))
  assert rel_err(out, nhwc(golden['pc_out'])) < 1e-5


def test_style_head_vmaps_over_per_image_params(state_dicts, golden):
  # Inversion optimises one head per image; vmapping must not mix them up.
  module = heads.StyleProjection(8, 64)
  one = official_heads.style_head_params_from_torch(state_dicts['Ps'])
  other = jax.tree.map(lambda a: -a, one)
  both = jax.tree.map(lambda a, b: jnp.stack([a, b]), one, other)
  out = jax.jit(jax.vmap(lambda p, z: module.apply({'params': p}, z)))(
      both, golden['zplus'])
  assert rel_err(out[0], golden['ps_out'][0]) < 1e-5
  expected = module.apply({'params': other}, golden['zplus'][1])
  assert rel_err(out[1], expected) < 1e-5


def test_converters_produce_the_initialised_tree(state_dicts, golden):
  style = jax.eval_shape(heads.StyleProjection(8, 64).init, jax.random.key(0),
                         golden['zplus'])['params']
  content = jax.eval_shape(heads.ContentProjection(64).init, jax.random.key(0),
                           nhwc(golden['s']))['params']
  assert shapes(official_heads.style_head_params_from_torch(
      state_dicts['Ps'])) == shapes(style)
  assert shapes(official_heads.content_head_params_from_torch(
      state_dicts['Pc'])) == shapes(content)


def test_style_head_init_matches_torch_linear_default():
  n_latent, w_dim = 18, 512
  params = jax.jit(heads.StyleProjection(n_latent, w_dim).init)(
      FAST_KEY, jnp.zeros((n_latent, w_dim)))['params']
  fan_ins = {'enc0': w_dim, 'enc1': w_dim // 2, 'enc2': w_dim // 4,
             'dec0': 32, 'dec1': 64, 'dec2': 128}
  for (layer, name), value in traverse_util.flatten_dict(params).items():
    value = np.asarray(value)
    bound = 1 / math.sqrt(fan_ins[layer])
    # Sample std of U(-b, b) has relative standard error ~0.45 / sqrt(size).
    tolerance = 5 * 0.45 / math.sqrt(value.size)
    assert np.abs(value).max() <= bound, (layer, name)
    assert abs(value.std() / (bound / math.sqrt(3)) - 1) < tolerance, (
        layer, name)
    assert abs(value.mean()) < 5 * bound / math.sqrt(3 * value.size), (
        layer, name)
  # Each row's decoder is drawn independently, not one draw broadcast.
  kernel = np.asarray(params['dec0']['kernel'])
  assert not np.allclose(kernel[0], kernel[1])


def test_content_head_init_matches_equalized_lr():
  params = jax.jit(heads.ContentProjection(512).init)(
      FAST_KEY, jnp.zeros((4, 4, 8)))['params']
  for layer in ('conv1', 'conv2', 'conv3'):
    weight = np.asarray(params[layer]['weight'])
    tolerance = 5 / math.sqrt(weight.size)
    assert abs(weight.mean()) < tolerance, layer
    assert abs(weight.std() - 1) < tolerance, layer
  for layer in ('relu1', 'relu2'):
    assert not np.asarray(params[layer]['bias']).any(), layer


def _without(state_dict, key):
  return {k: v for k, v in state_dict.items() if k != key}


def _with(state_dict, key, value):
  return {**state_dict, key: value}


@pytest.mark.parametrize('head, edit, key', [
    ('Ps', lambda sd: _without(sd, 'decs.3.2.bias'), 'decs.3.2.bias'),
    ('Ps', lambda sd: _without(sd, 'enc.0.weight'), 'enc.0.weight'),
    ('Ps', lambda sd: _without(sd, 'decs.7.3.weight'), 'decs.7.3.weight'),
    ('Ps', lambda sd: _with(sd, 'enc.1.weight', np.zeros((32, 32))),
     'enc.1.weight'),
    ('Ps', lambda sd: _with(sd, 'decs.9.0.weight', np.zeros((64, 32))),
     'decs.8.0.weight'),
    ('Ps', lambda sd: _with(sd, 'decs.5.3.weight', np.zeros((64, 127))),
     'decs.5.3.weight'),
    ('Ps', lambda sd: _with(sd, 'enc.3.bias', np.zeros((1, 32))),
     'enc.3.bias'),
    ('Pc', lambda sd: _without(sd, 'relu2.bias'), 'relu2.bias'),
    ('Pc', lambda sd: _without(sd, 'conv3.weight'), 'conv3.weight'),
    ('Pc', lambda sd: _with(sd, 'conv3.bias', np.zeros(64)), 'conv3.bias'),
    ('Pc', lambda sd: _with(sd, 'conv2.weight', np.zeros((128, 32))),
     'conv2.weight'),
    ('Pc', lambda sd: _with(sd, 'conv2.weight', np.zeros((128, 16, 1, 1))),
     'conv2.weight'),
])
def test_bad_state_dict_names_the_key(state_dicts, head, edit, key):
  convert = {'Ps': official_heads.style_head_params_from_torch,
             'Pc': official_heads.content_head_params_from_torch}[head]
  with pytest.raises(SphinxError, match=rf' {re.escape(key)}\b') as error:
    convert(edit(state_dicts[head]))
  assert '\n' not in str(error.value)
