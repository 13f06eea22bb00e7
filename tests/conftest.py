"""Shared fixtures: the reference files and generators converted from them."""

import atexit
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from sphinx_jax.runtime import xla_flags

# The CLI tests start many processes that compile the same programs: a
# compilation cache shared for this test session compiles each once.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='jax-cache-')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
# The suite's programs are small and run for a few steps, so compiling them
# is most of its time. XLA's cheaper CPU code generation (optimisation level
# 1, the older fusion emitters) compiles them about 3 times faster (a 32-px
# SPHInX run of 200 steps: 17.4 s -> 5.6 s); the results agree with the
# default code to float rounding, and the parity tests hold at their
# tolerances under it. Level 0 compiles faster still but runs some programs
# 16x slower. Subprocesses inherit the flags.
SUITE_XLA_FLAGS = ('--xla_backend_optimization_level=1 '
                   '--xla_cpu_use_fusion_emitters=false')
if SUITE_XLA_FLAGS not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' +
                             SUITE_XLA_FLAGS).strip()
# And the flag the commands set at their door, so that the suite computes
# as they do.
xla_flags.apply()

# One process unless a test starts several: a launcher's variables (a Slurm
# allocation, say) would make sphinx_jax.run start jax.distributed in-process.
for _var in ('JAX_COORDINATOR_ADDRESS', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE',
             'TPU_WORKER_HOSTNAMES'):
  os.environ.pop(_var, None)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from sphinx_jax import convert  # pylint: disable=g-import-not-at-top, wrong-import-position

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
REPO = pathlib.Path(__file__).parent.parent


def rel_err(a, b) -> float:
  """max |a - b| / max |b|: the fixtures' README's tolerance measure."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.abs(a - b).max() / np.abs(b).max())


def nhwc(x):
  return np.asarray(x).transpose(0, 2, 3, 1)


def load_config(name: str, **overrides):
  """configs/<name>.py's get_config(), updated with `overrides`."""
  spec = importlib.util.spec_from_file_location(f'config_{name}',
                                                REPO / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.update_from_flattened_dict(overrides)  # 'operator.sigma' and such
  return config


def run_cli(*args, env=None):
  """Runs `python *args` from the repo root; returns the CompletedProcess."""
  return subprocess.run([sys.executable, *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, **(env or {})})


@pytest.fixture(scope='session')
def golden():
  return dict(np.load(FIXTURES / 'rosinality_small_golden.npz'))


@pytest.fixture(scope='session')
def converted(tmp_path_factory):
  """{'zip': dir, 'legacy': dir}: both rosinality fixtures, converted once."""
  root = tmp_path_factory.mktemp('converted')
  out = {}
  for kind, name in (('zip', 'rosinality_small.pt'),
                     ('legacy', 'rosinality_small_legacy.pt')):
    out[kind] = str(root / kind)
    convert.convert(str(FIXTURES / name), out[kind])
  return out


# The modules whose tests take longest (tens of seconds each, mostly
# compilation) are collected first: xdist hands tests out in collection
# order, and one of them started last would leave the other workers idle.
_LONGEST_FIRST = ('test_staged_methods.py', 'test_demo.py', 'test_resume.py')


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
