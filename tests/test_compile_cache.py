"""The persistent compilation cache every command turns on."""

import jax
import pytest

from conftest import run_cli
from sphinx_jax.runtime import compile_cache


@pytest.fixture()
def restore_jax_config():
  saved = (jax.config.jax_enable_compilation_cache,
           jax.config.jax_compilation_cache_dir)
  yield
  jax.config.update('jax_enable_compilation_cache', saved[0])
  jax.config.update('jax_compilation_cache_dir', saved[1])


def test_the_variable_names_the_directory_and_empty_turns_it_off(
    tmp_path, restore_jax_config):
  del restore_jax_config
  assert compile_cache.enable({compile_cache.ENV: str(tmp_path)}) == str(
      tmp_path)
  assert jax.config.jax_compilation_cache_dir == str(tmp_path)
  assert jax.config.jax_enable_compilation_cache
  assert compile_cache.enable({compile_cache.ENV: ''}) is None
  assert not jax.config.jax_enable_compilation_cache


def test_unset_it_lives_in_the_user_cache(tmp_path, restore_jax_config):
  del restore_jax_config
  jax.config.update('jax_compilation_cache_dir', None)
  expected = str(tmp_path / 'sphinx_jax' / 'xla')
  assert compile_cache.enable({'XDG_CACHE_HOME': str(tmp_path)}) == expected
  assert jax.config.jax_compilation_cache_dir == expected


def test_a_command_fills_the_cache_and_a_rerun_reads_it(tmp_path, converted):
  cache = tmp_path / 'cache'
  env = {compile_cache.ENV: str(cache),
         'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}
  args = ('-m', 'sphinx_jax.sample', '--generator', converted['zip'],
          '--num', '2', '--out', tmp_path / 'grid.png')
  assert run_cli(*args, env=env).returncode == 0
  entries = set(p.name for p in cache.iterdir())
  assert entries  # compiled programs
  assert run_cli(*args, env=env).returncode == 0
  assert set(p.name for p in cache.iterdir()) == entries  # nothing new
