"""The programs compiled with RUN_ONCE (sphinx_jax/runtime/compile_options.py)
give bitwise the values XLA's default compilation gives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sphinx_jax import bench
from sphinx_jax.inversion import engine, methods
from sphinx_jax.models.generator import w_coordinate_spread
from sphinx_jax.models.stylegan2 import Architecture, StyleGAN2
from sphinx_jax.runtime.compile_options import RUN_ONCE, jit_run_once

TINY = Architecture.standard(8, z_dim=16, w_dim=16, n_mlp=2, channel_base=64,
                             channel_max=16)
# XLA's defaults, as the commands compile: stated, because the suite's
# XLA_FLAGS change both (conftest.py).
DEFAULT = {'xla_backend_optimization_level': 3,
           'xla_cpu_use_fusion_emitters': True}


# The checks below compile at XLA's default level, which is what RUN_ONCE
# spares the commands: 20 s of a 2-core CI's time. Run by hand: pytest -m slow.
slow = pytest.mark.slow


def _both_ways(fun, *args, **jit_kwargs):
  return tuple(jax.jit(fun, compiler_options=options, **jit_kwargs)(*args)
               for options in (DEFAULT, {**DEFAULT, **RUN_ONCE}))


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


@slow
def test_a_generators_random_initialisation_is_unchanged():
  _assert_bitwise_equal(*_both_ways(StyleGAN2(TINY).init, jax.random.key(3),
                                    jnp.zeros((1, TINY.z_dim))))


@slow
def test_a_sphinx_initial_state_is_unchanged():
  g = bench.random_generator(TINY)
  method = methods.get('sphinx').for_generator(g)
  keys = jax.random.split(jax.random.key(5), 3)
  _assert_bitwise_equal(*_both_ways(
      lambda keys: jax.vmap(lambda k: method.init(k, g))(keys), keys))


@slow
def test_the_codes_robustness_is_unchanged():
  g = bench.random_generator(TINY)
  inv = engine.Inverter(g, engine.Settings(method='sphinx', steps=2))
  keys, state, _ = inv.init(np.arange(2))
  _, _, wplus, content = inv.estimate(state, keys)
  # The program `Inverter.robustness` runs (jax refuses a nested jit with
  # options of its own, so the undecorated function is jitted here).
  default, run_once = _both_ways(
      engine._robustness.__wrapped__, inv.plan, state, wplus, content, keys,
      np.float32(engine.ROBUST_EPS) * w_coordinate_spread(inv.g),
      inv.g_compute, static_argnums=0)
  assert np.all(np.isfinite(run_once)) and np.all(run_once > 10)
  np.testing.assert_array_equal(np.asarray(run_once), np.asarray(default))
