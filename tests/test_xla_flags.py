"""The XLA flag the commands set at their door (sphinx_jax/runtime/xla_flags.py)."""

import importlib.metadata
import os

import pytest

from conftest import run_cli
from sphinx_jax import bench
from sphinx_jax.runtime import xla_flags

SETTING = f'{xla_flags.FLAG}={xla_flags.VALUE}'
INSTALLED = importlib.metadata.version('jaxlib')


def test_added_to_what_is_there_once():
  environ = {}
  assert xla_flags.apply(environ, '0.10.2')
  assert environ['XLA_FLAGS'] == SETTING
  environ = {'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  assert xla_flags.apply(environ, '0.10.0')
  assert environ['XLA_FLAGS'] == (
      f'--xla_force_host_platform_device_count=4 {SETTING}')
  assert not xla_flags.apply(environ, '0.10.2')
  assert environ['XLA_FLAGS'].count(xla_flags.FLAG) == 1


def test_a_users_own_setting_is_kept():
  own = f'{xla_flags.FLAG}=+individual_convolution'
  environ = {'XLA_FLAGS': own}
  assert not xla_flags.apply(environ, '0.10.2')
  assert environ['XLA_FLAGS'] == own


@pytest.mark.parametrize('version', ['0.9.3', '0.11.0', '1.0.0'])
def test_versions_it_was_not_measured_with_keep_xlas_defaults(version):
  environ = {'XLA_FLAGS': '--xla_cpu_enable_fast_math=false'}
  assert not xla_flags.apply(environ, version)
  assert environ == {'XLA_FLAGS': '--xla_cpu_enable_fast_math=false'}


def test_the_installed_jaxlib_takes_it_and_fuses_nothing_into_ynnpack():
  """XLA aborts on a flag it does not know: the range must hold the flag."""
  environ = {}
  if not xla_flags.apply(environ, INSTALLED):
    assert environ == {}  # outside the measured range: nothing to run
    return
  # Without the flag, XLA hands a convolution of this size to YNNPACK.
  code = ('import jax, jax.numpy as jnp; x = jnp.ones((1, 16, 16, 32)); '
          "w = jnp.ones((3, 3, 32, 2)); f = jax.jit(lambda x, w: jax.nn.relu("
          "jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', "
          "dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + 1.0)); "
          "print(float(f(x, w)[0, 4, 4, 0]), "
          "'__ynn_fusion' in f.lower(x, w).compile().as_text())")
  result = run_cli('-c', code, env={
      'XLA_FLAGS': f'{os.environ.get("XLA_FLAGS", "")} {environ["XLA_FLAGS"]}'})
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ['289.0', 'False']


def test_the_commands_set_it_at_their_door(tmp_path, monkeypatch, capsys):
  expected = xla_flags.apply({}, INSTALLED)
  monkeypatch.setenv('XLA_FLAGS', '')
  assert bench.main(['--generator', str(tmp_path / 'nope')]) == 1
  assert (SETTING in os.environ['XLA_FLAGS']) == expected
  capsys.readouterr()
  # cli.run parses absl's global flags, which other in-process tests define.
  code = ('import os, sys; from sphinx_jax import cli; sys.argv = ["any"]; '
          'cli.run(lambda: print(os.environ["XLA_FLAGS"]) or 0)')
  result = run_cli('-c', code, env={'XLA_FLAGS': ''})
  assert result.returncode == 0, result.stderr
  assert (SETTING in result.stdout) == expected
