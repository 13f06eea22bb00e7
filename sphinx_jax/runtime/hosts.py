"""Several processes on one job (multi-host runs) under jax.distributed.

Each process takes a deterministic share of the sorted input list (every n-th
file) and the processes invert in lockstep: every step runs on one global
batch, the processes' local batches side by side on a mesh of all devices.
Each process writes its own images' outputs, manifest and metrics file;
process 0 merges `metrics.csv` at the end.

Why lockstep rather than independent processes: once a JAX runtime spans
several processes, orbax-checkpoint (0.12.8, measured) writes numpy data from
process 0 only and refuses process-local device arrays, so no process can
checkpoint on its own. What Orbax saves there is global arrays, written by
every process together, and a lockstep batch is one. Every image's codes are
likewise saved by all processes together (process 0 writes the files).
"""

import dataclasses
import json
import os
import socket
import time
from typing import Any, Mapping, Optional, Sequence, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

from sphinx_jax.errors import SphinxError
from sphinx_jax.files import outputs

T = TypeVar('T')
# Where launchers whose jobs JAX's cluster detection sets up (Slurm, Open MPI)
# put the number of processes.
_LAUNCHER_SIZES = ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE')


@dataclasses.dataclass(frozen=True)
class Distributed:
  """How this process joins a jax.distributed job (README, "Several
  hosts"); unset fields come from the environment."""
  coordinator_address: str = ''  # host:port of process 0
  num_processes: Optional[int] = None  # 1: one process
  process_id: Optional[int] = None
  initialization_timeout: int = 300  # seconds to wait for the others


def _env_int(environ: Mapping[str, str], name: str) -> Optional[int]:
  if name not in environ:
    return None
  try:
    return int(environ[name])
  except ValueError:
    raise SphinxError(f'environment variable {name}={environ[name]!r}: '
                      'must be an integer') from None


def distributed_args(cfg: Distributed, environ: Mapping[str, str]
                     ) -> Optional[dict[str, Any]]:
  """The arguments of jax.distributed.initialize for this job, or None when
  it is one process. None values are left to JAX's cluster detection.

  In order: `cfg` (num_processes = 1: one process, whatever
  the environment); JAX_COORDINATOR_ADDRESS with JAX_NUM_PROCESSES and
  JAX_PROCESS_ID; a Slurm or Open MPI job of several tasks, or a Cloud TPU
  slice of several hosts (TPU_WORKER_HOSTNAMES), set up by JAX itself.
  """
  if cfg.num_processes == 1:
    return None
  if cfg.coordinator_address or cfg.num_processes:
    return dict(coordinator_address=cfg.coordinator_address or None,
                num_processes=cfg.num_processes, process_id=cfg.process_id)
  if environ.get('JAX_COORDINATOR_ADDRESS'):
    return dict(coordinator_address=environ['JAX_COORDINATOR_ADDRESS'],
                num_processes=_env_int(environ, 'JAX_NUM_PROCESSES'),
                process_id=_env_int(environ, 'JAX_PROCESS_ID'))
  for size_var in _LAUNCHER_SIZES:
    if (_env_int(environ, size_var) or 1) > 1:
      return {}
  if ',' in environ.get('TPU_WORKER_HOSTNAMES', ''):
    return {}
  return None


def _wait_for_coordinator(address: str, timeout: float) -> None:
  """Returns once process 0's coordinator accepts connections. JAX's own
  client aborts the process (no Python error) when it cannot connect, so an
  unreachable coordinator is caught here."""
  host, _, port = address.rpartition(':')
  deadline = time.monotonic() + timeout
  while True:
    try:
      socket.create_connection((host.strip('[]'), int(port)), timeout=5).close()
      return
    except (OSError, ValueError) as e:
      if time.monotonic() > deadline or isinstance(e, ValueError):
        raise SphinxError(
            f'cannot reach the jax.distributed coordinator {address} (process '
            f'0) within {timeout:g} s: {getattr(e, "strerror", None) or e}'
        ) from None
      time.sleep(0.5)


def initialize(cfg: Distributed) -> None:
  """Starts jax.distributed when `distributed_args` says so (and no caller
  has started it yet); must run before any JAX computation."""
  args = distributed_args(cfg, os.environ)
  if args is None or jax.distributed.is_initialized():
    return
  # Process 0 hosts the coordinator; only the others can check for it.
  if args.get('coordinator_address') and (args.get('process_id') or 0) > 0:
    _wait_for_coordinator(args['coordinator_address'],
                          cfg.initialization_timeout)
  try:
    jax.distributed.initialize(
        **args, initialization_timeout=cfg.initialization_timeout)
  except Exception as e:  # ValueError, RuntimeError, XlaRuntimeError, ...
    text = ' '.join(str(e).split())[:300]
    raise SphinxError(f'jax.distributed.initialize({args}) failed: {text}'
                      ) from None


def is_primary() -> bool:
  return jax.process_index() == 0


def share(items: Sequence[T]) -> list[T]:
  """This process's part of the (sorted) input list: every n-th item."""
  return list(items[jax.process_index()::jax.process_count()])


def suffix() -> str:
  """'' for a single process, '.process<i>' otherwise (per-process files)."""
  return ('' if jax.process_count() == 1
          else f'.process{jax.process_index()}')


def devices() -> list:
  """Every device of the job, process by process: each process's part of a
  batch sharded over them is a contiguous block of rows."""
  return sorted(jax.devices(), key=lambda d: (d.process_index, d.id))


def barrier(name: str) -> None:
  """Waits until every process has reached `name`."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'sphinx_jax:{name}')


def gather(value: Any) -> list[Any]:
  """Every process's `value` (JSON-able), in process order."""
  if jax.process_count() == 1:
    return [value]
  data = np.frombuffer(json.dumps(value).encode(), np.uint8)
  sizes = multihost_utils.process_allgather(np.array([data.size])).ravel()
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:data.size] = data
  rows = multihost_utils.process_allgather(padded)
  return [json.loads(bytes(row[:n])) for row, n in zip(rows, sizes)]


def raise_if_any(error: Optional[str]) -> None:
  """Raises the first process's error on every process, so that all of them
  stop together rather than some waiting for the others."""
  errors = [e for e in gather(error) if e]
  if errors:
    raise SphinxError(errors[0])


def merge_metrics(outdir: str, order: Sequence[str], finished: set[str]
                  ) -> None:
  """metrics.csv := the rows of the finished images from every process's
  metrics file (those of earlier runs, with other process counts, too) and
  from metrics.csv itself, in input order."""
  rows = [r for name, r in outputs.read_rows(outdir, 'metrics').items()
          if name in finished]
  rank = {name: i for i, name in enumerate(order)}
  outputs.write_csv(os.path.join(outdir, 'metrics.csv'), sorted(
      rows, key=lambda r: rank.get(r['image'], len(rank))))
