"""python -m sphinx_jax.bench: the JSON line it ends with."""

import json
import sys

from conftest import run_cli
from sphinx_jax import bench
from sphinx_jax.runtime import compile_cache

KEYS = {'image_steps_per_s', 'ms_per_step', 'resolution', 'batch', 'dtype',
        'device', 'flops_per_image_step', 'achieved_gflops', 'peak_memory_bytes'}


def test_json_last_line_on_a_converted_generator(converted, capsys):
  assert bench.main(['--generator', converted['zip'], '--batch', '2', '--steps', '2',
                     '--warmup', '1', '--no-lpips', '--no-matmul']) == 0
  out = capsys.readouterr().out.strip().splitlines()
  result = json.loads(out[-1])
  assert KEYS <= set(result)
  assert result['resolution'] == 32 and result['batch'] == 2
  assert result['dtype'] == 'float32' and result['lpips'] is False
  assert result['image_steps_per_s'] > 0 and result['flops_per_image_step'] > 1e6
  assert abs(result['image_steps_per_s'] * result['ms_per_step'] / 1e3 - 2) < 1e-6
  if sys.platform.startswith('linux'):  # the process's age, from /proc
    assert result['time_to_first_step_s'] > result['compile_s'] > 0
  else:
    assert result['time_to_first_step_s'] is None


def test_random_config_f_generator_and_matmul_peak(capsys):
  assert bench.main(['--resolution', '8', '--batch', '1', '--steps', '1',
                     '--warmup', '1', '--no-lpips', '--method', 'wplus']) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert result['resolution'] == 8 and result['method'] == 'wplus'
  assert result['matmul_peak_gflops'] > 0
  assert 0 < result['fraction_of_matmul_peak']


def test_bad_generator_is_one_line(tmp_path, capsys):
  assert bench.main(['--generator', str(tmp_path / 'nope')]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error:')


def test_a_second_run_compiles_from_the_cache(tmp_path, converted):
  """Cold, then warm: the second process finds the step in the cache."""
  args = ('-m', 'sphinx_jax.bench', '--generator', converted['zip'], '--batch',
          '1', '--steps', '1', '--warmup', '0', '--no-lpips', '--no-matmul',
          '--method', 'wplus')
  env = {compile_cache.ENV: str(tmp_path / 'cache')}
  runs = [run_cli(*args, env=env) for _ in range(2)]
  assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
  results = [json.loads(r.stdout.strip().splitlines()[-1]) for r in runs]
  assert [r['compile_cache'] for r in results] == ['miss', 'hit']
  assert all(r['compile_s'] > 0 for r in results)
