"""Set-up programs compiled with RUN_ONCE (sphinx_jax/runtime/compile_options.py)
give bitwise the values the default compilation gives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sphinx_jax import bench
from sphinx_jax.inversion import methods
from sphinx_jax.models.stylegan2 import Architecture, StyleGAN2
from sphinx_jax.runtime.compile_options import RUN_ONCE, jit_run_once

TINY = Architecture.standard(8, z_dim=16, w_dim=16, n_mlp=2, channel_base=64,
                             channel_max=16)


def _both_ways(fun, *args):
  default = jax.jit(fun).lower(*args).compile()
  run_once = jit_run_once(fun).lower(*args).compile()
  return default(*args), run_once(*args)


def _assert_bitwise_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_xla_knows_the_option():
  # XLA rejects a name it does not know, so compiling with RUN_ONCE checks it.
  with pytest.raises(Exception, match='no_such_option'):
    jax.jit(lambda x: x, compiler_options={'no_such_option': 1}).lower(
        jnp.ones(3)).compile()
  f = jit_run_once(lambda x: x * 2)
  assert f.lower(jnp.ones(3)).compile()(jnp.ones(3)).tolist() == [2, 2, 2]
  assert RUN_ONCE == {'xla_backend_optimization_level': 1}


def test_a_generators_random_initialisation_is_unchanged():
  _assert_bitwise_equal(*_both_ways(StyleGAN2(TINY).init, jax.random.key(3),
                                    jnp.zeros((1, TINY.z_dim))))


@pytest.mark.parametrize('name', ['sphinx', 'w'])
def test_a_methods_initial_states_are_unchanged(name):
  g = bench.random_generator(TINY)
  method = methods.get(name).for_generator(g)
  keys = jax.random.split(jax.random.key(5), 3)
  _assert_bitwise_equal(*_both_ways(
      lambda keys: jax.vmap(lambda k: method.init(k, g))(keys), keys))
