"""The automatic batch size (`batch_size=0`): the largest batch whose
compiled step fits the device's memory, found from XLA's memory analysis
of the compiled program rather than by trial and crash."""

import os

import jax

from sphinx_jax.inversion import engine

# The share of the device's memory a batch may take: the rest is left for
# what the analysis does not see (the allocator's fragmentation, the
# metrics and estimate programs, the runtime itself).
MARGIN = 0.1
# On a CPU the "device" is the host: a batch may use up to this share of
# its physical memory, leaving the rest to the OS and the input pipeline.
CPU_SHARE = 0.5


def device_memory_limit() -> int:
  """Bytes one device may hold: the accelerator's own limit, or on a CPU
  CPU_SHARE of the machine's physical memory."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if stats.get('bytes_limit'):
    return int(stats['bytes_limit'])
  return int(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') *
             CPU_SHARE)


def largest_batch(inverter: engine.Inverter, limit: int,
                  most: int) -> tuple[int, int]:
  """(batch, bytes): the largest batch, a multiple of this process's devices
  and at most `most` rounded up to one, whose step needs at most
  (1 - MARGIN) * `limit` bytes per device, and what it needs.

  The step's memory grows linearly with the batch: two compiles give the
  line, one more checks its guess, and each further one moves by a device
  multiple until the batch is the last that fits.

  Raises:
    ValueError: not even one image per device fits.
  """
  unit = inverter.placement.num_devices
  budget = (1 - MARGIN) * limit
  most = inverter.placement.padded_batch_size(max(most, 1))
  need = inverter.step_memory
  if need(unit) > budget:
    raise ValueError(
        f'one image per device needs {need(unit) / 2**30:.2f} GiB, more than '
        f'{budget / 2**30:.2f} GiB (90% of {limit / 2**30:.2f} GiB)')
  if most == unit:
    return unit, need(unit)
  per_unit = max(need(2 * unit) - need(unit), 1)
  batch = unit * int(1 + (budget - need(unit)) // per_unit)
  batch = max(unit, min(batch, most))
  while batch > unit and need(batch) > budget:
    batch -= unit
  while batch + unit <= most and need(batch + unit) <= budget:
    batch += unit
  return batch, need(batch)
