"""Benchmarks the inversion step: `python -m sphinx_jax.bench --resolution 64 --batch 4`.

Runs on a random-weight generator with the config-f channel table (`Architecture.standard`) (or a
converted one with --generator), excludes compilation and warm-up, and reports
the median over timed steps, each one dispatch of the multi-step program that
runs use (`Inverter.steps`) with one step. The step's compilation is timed apart
(`compile_s`), with `compile_cache` saying whether the persistent cache
served it ('hit': a warm compile), had to store it ('miss': a cold one) or
is off; `time_to_first_step_s` is the process's age when its first step
starts (imports, set-up and compilation; Linux only). The last line
printed is one JSON object.
"""

import argparse
import json
import os
import statistics
import sys
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sphinx_jax.inversion import engine, methods
from sphinx_jax.errors import SphinxError
from sphinx_jax.files.generator_dir import load_generator
from sphinx_jax.models.generator import Generator
from sphinx_jax.models.stylegan2 import Architecture, StyleGAN2
from sphinx_jax.runtime import compile_cache, xla_flags
from sphinx_jax.runtime.compile_options import jit_run_once


def random_generator(arch: Architecture, seed: int = 0) -> Generator:
  params = jit_run_once(StyleGAN2(arch).init)(
      jax.random.key(seed), jnp.zeros((1, arch.z_dim)))['params']
  return Generator(arch=arch, params=params, w_avg=jnp.zeros(arch.w_dim))


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
  """The device's measured float32 matrix-multiply throughput."""
  a = jax.random.normal(jax.random.key(0), (n, n))
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * n**3 / statistics.median(times) / 1e9


def process_seconds() -> Optional[float]:
  """Seconds since this process started (Linux's /proc), else None."""
  try:
    with open('/proc/self/stat') as f:
      start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])
    with open('/proc/uptime') as f:
      uptime = float(f.read().split()[0])
  except (OSError, ValueError, IndexError):
    return None
  return uptime - start_ticks / os.sysconf('SC_CLK_TCK')


def _cache_entries(directory: Optional[str]) -> set[str]:
  return (set(os.listdir(directory)) if directory and os.path.isdir(directory)
          else set())


def bench(g: Generator, batch: int, steps: int, method: str, use_lpips: bool,
          warmup: int = 2, dtype: str = 'float32', remat: bool = False,
          cache_dir: Optional[str] = None) -> dict:
  """The step's speed, compilation and memory (`cache_dir`: the persistent
  compilation cache's directory, None when it is off)."""
  settings = engine.Settings(method=method, steps=steps + warmup,
                             lpips_weight=1.5 if use_lpips else 0.0,
                             lpips_min_resolution=0, dtype=dtype, remat=remat)
  inv = engine.Inverter(g, settings)
  targets = jax.random.uniform(jax.random.key(1), (batch, g.resolution,
                                                   g.resolution, 3), minval=-1)
  keys, state, opt_state = inv.init(np.arange(batch))
  feats = inv.target_features(targets)
  op_params = inv.operator_params(np.arange(batch))
  before = _cache_entries(cache_dir)
  start = time.perf_counter()
  compiled = inv.lower_steps(state, opt_state, keys, targets, feats,
                             op_params).compile()
  compile_s = time.perf_counter() - start
  cache = ('off' if cache_dir is None else
           'miss' if _cache_entries(cache_dir) - before else 'hit')
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', 0.0)) if cost else 0.0
  memory = compiled.memory_analysis()
  times = []
  to_first_step = process_seconds()
  for step in range(warmup + steps):
    start = time.perf_counter()
    state, opt_state, losses, _ = inv.steps(state, opt_state, keys, targets,
                                            feats, op_params, step, 1)
    losses.block_until_ready()
    if step >= warmup:
      times.append(time.perf_counter() - start)
  seconds = statistics.median(times)
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get('peak_bytes_in_use') or (
      memory.argument_size_in_bytes + memory.output_size_in_bytes +
      memory.temp_size_in_bytes if memory else 0)
  return {
      'image_steps_per_s': batch / seconds, 'ms_per_step': seconds * 1e3,
      'resolution': g.resolution, 'batch': batch, 'method': method,
      'lpips': use_lpips, 'dtype': dtype, 'remat': remat,
      'device': jax.devices()[0].device_kind, 'steps_timed': steps,
      'flops_per_image_step': flops / batch,
      'achieved_gflops': flops / seconds / 1e9,
      'peak_memory_bytes': int(peak),
      'compile_s': compile_s, 'compile_cache': cache,
      'time_to_first_step_s': to_first_step,
  }


def memory_per_image(g: Generator, method: str, use_lpips: bool,
                     dtype: str = 'float32', remat: bool = False,
                     pivot: str = 'w') -> dict:
  """Device bytes of the compiled steps (XLA's memory analysis, nothing
  run) for batches of 1 and 2, and so what each image adds."""
  inv = engine.Inverter(g, engine.Settings(
      method=method, steps=10, lpips_weight=1.5 if use_lpips else 0.0,
      lpips_min_resolution=0, dtype=dtype, remat=remat, pivot=pivot))
  one, two = inv.step_memory(1), inv.step_memory(2)
  return {'resolution': g.resolution, 'method': method, 'pivot': pivot,
          'lpips': use_lpips, 'dtype': dtype, 'remat': remat,
          'step_bytes_batch_1': one, 'step_bytes_batch_2': two,
          'bytes_per_image': two - one}


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m sphinx_jax.bench',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--resolution', type=int, default=64)
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--steps', type=int, default=10, help='timed steps')
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--method', default='sphinx', choices=methods.METHODS)
  parser.add_argument('--no-lpips', action='store_true', help='MSE loss only')
  parser.add_argument('--dtype', default='float32',
                      choices=['float32', 'bfloat16'],
                      help='compute dtype (parameters and Adam stay float32)')
  parser.add_argument('--remat', action='store_true',
                      help='recompute synthesis blocks in the backward pass')
  parser.add_argument('--generator', help='bench a converted generator instead')
  parser.add_argument('--no-matmul', action='store_true',
                      help='skip measuring the matmul peak')
  parser.add_argument('--pivot', default='w', choices=['w', 'sphinx'],
                      help="pti's pivot")
  parser.add_argument('--memory', action='store_true',
                      help='only the memory a batch needs per image (XLA '
                      'memory analysis of the compiled step; nothing runs)')
  args = parser.parse_args(argv)
  xla_flags.apply()
  cache_dir = compile_cache.enable()
  # Every program is stored, so that a hit or miss says what happened.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  try:
    g = (load_generator(args.generator) if args.generator
         else random_generator(Architecture.standard(args.resolution)))
  except (SphinxError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  if args.memory:
    result = memory_per_image(g, args.method, not args.no_lpips, args.dtype,
                              args.remat, args.pivot)
    for key, value in result.items():
      print(f'{key:<22} {value}')
    print(json.dumps(result))
    return 0
  result = bench(g, args.batch, args.steps, args.method, not args.no_lpips,
                 args.warmup, args.dtype, args.remat, cache_dir)
  if not args.no_matmul:
    result['matmul_peak_gflops'] = matmul_gflops()
    result['fraction_of_matmul_peak'] = (result['achieved_gflops'] /
                                         result['matmul_peak_gflops'])
  for key in ('device', 'resolution', 'batch', 'method', 'lpips',
              'ms_per_step', 'image_steps_per_s', 'flops_per_image_step',
              'achieved_gflops', 'matmul_peak_gflops', 'peak_memory_bytes',
              'compile_s', 'compile_cache', 'time_to_first_step_s'):
    if key in result:
      value = result[key]
      print(f'{key:<22} {value:.4g}' if isinstance(value, float)
            else f'{key:<22} {value}')
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
