"""Several processes on one job (multi-host runs).

Each process inverts a deterministic share of the input list on its own
local devices and writes its own images' outputs and its own `manifest` and
`metrics` files (suffixed `.process<i>`); `metrics.csv` is the merge of all of
them, rewritten under a file lock by each process as it finishes, so the last
one to finish leaves it complete. Processes exchange nothing: a slow or
failed host never blocks or corrupts another's results, and a rerun of one
process resumes its own share.

jax.distributed is deliberately not started: nothing is computed across
processes, and with it Orbax treats every checkpoint as a global one, which
per-process checkpoints cannot be: orbax-checkpoint 0.12.8 writes numpy
arrays from process 0 only (NumpyHandler's serialize) and refuses
process-local jax.Arrays, whatever MultiprocessingOptions say. A JAX runtime
that already spans several processes (jax.distributed started by the
caller, a multi-host TPU slice) is therefore refused before any work: every
other process's codes and checkpoints would be silently empty.
"""

import csv
import fcntl
import glob
import os
from typing import Sequence, TypeVar

import jax

from sphinx_jax import outputs
from sphinx_jax.errors import SphinxError

T = TypeVar('T')
# Where launchers put the process's rank and the number of processes.
_ENV = (('JAX_PROCESS_ID', 'JAX_NUM_PROCESSES'),
        ('SLURM_PROCID', 'SLURM_NTASKS'),
        ('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE'))
_process = (0, 1)


def initialize(cfg) -> tuple[int, int]:
  """Sets this process's (index, count) from `config.distributed`
  (num_processes > 0) or else the launcher's environment variables."""
  global _process
  if jax.process_count() > 1:
    raise SphinxError(
        f'this JAX runtime spans {jax.process_count()} processes '
        '(jax.distributed or a multi-host TPU slice), where Orbax saves host '
        'data from process 0 only and the other processes\' outputs would be '
        'lost; start one independent process per host instead (README, '
        '"Several hosts")')
  if cfg.num_processes:
    index, count = cfg.process_id, cfg.num_processes
  else:
    index, count = 0, 1
    for rank_var, size_var in _ENV:
      if rank_var in os.environ and size_var in os.environ:
        try:
          index, count = int(os.environ[rank_var]), int(os.environ[size_var])
        except ValueError as e:
          raise SphinxError(f'bad {rank_var}/{size_var} ({e})') from None
        break
  if not 0 <= index < count:
    raise SphinxError(f'process index {index} is not in [0, {count})')
  _process = (index, count)
  return _process


def share(items: Sequence[T]) -> list[T]:
  """This process's part of the (sorted) input list: every n-th item."""
  index, count = _process
  return list(items[index::count])


def suffix() -> str:
  """'' for a single process, '.process<i>' otherwise (per-process files)."""
  index, count = _process
  return '' if count == 1 else f'.process{index}'


def merge_metrics(outdir: str, order: Sequence[str]) -> None:
  """metrics.csv := the rows of every process's metrics file, input order."""
  if _process[1] == 1:
    return
  with open(os.path.join(outdir, '.metrics.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    rows = {}
    for path in sorted(glob.glob(os.path.join(outdir, 'metrics.process*.csv'))):
      with open(path, newline='') as f:
        rows.update({r['image']: r for r in csv.DictReader(f)})
    rank = {name: i for i, name in enumerate(order)}
    outputs.write_csv(os.path.join(outdir, 'metrics.csv'),
                      sorted(rows.values(),
                             key=lambda r: rank.get(r['image'], len(rank))))
