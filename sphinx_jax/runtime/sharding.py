"""Where a batch lives: per-image arrays split along their leading axis over
a 1-D mesh of devices, weights replicated.

The mesh may span the devices of several processes (jax.distributed): each
process then holds a contiguous block of rows, its own images, and every
call below but `local` must be made by all processes together. Every
transfer here is explicit (`jax.device_put`, `jax.device_get`), so the hot
loop runs under `jax.transfer_guard('disallow')`.
"""

import functools
from typing import Any, Optional

import jax
import numpy as np

P = jax.sharding.PartitionSpec


def batch_mesh(devices: Optional[list] = None) -> jax.sharding.Mesh:
  """A 1-D mesh over `devices` (default: the local ones); images are split
  along its axis."""
  return jax.sharding.Mesh(np.array(devices or jax.local_devices()), ('batch',))


def _local_rows(x) -> np.ndarray:
  if not isinstance(x, jax.Array):
    return np.asarray(x)
  if x.is_fully_addressable:
    return np.asarray(jax.device_get(x))
  shards = sorted((s for s in x.addressable_shards if s.replica_id == 0),
                  key=lambda s: s.index[0].start)
  return np.concatenate([np.asarray(jax.device_get(s.data)) for s in shards])


@functools.partial(jax.jit, static_argnums=0)
def _row(replicated, tree, i):
  return jax.lax.with_sharding_constraint(
      jax.tree_util.tree_map(lambda x: x[i], tree), replicated)


class Placement:
  """Puts batches on a mesh's devices and takes them back.

  Without a mesh everything lives on the default device.
  """

  def __init__(self, mesh: Optional[jax.sharding.Mesh] = None):
    self.mesh = mesh
    if mesh is None:
      self.replicated = self.batched = None
    else:
      self.replicated = jax.sharding.NamedSharding(mesh, P())
      self.batched = jax.sharding.NamedSharding(mesh, P('batch'))

  @property
  def num_devices(self) -> int:
    """The devices this process's rows of a batch are split over."""
    if self.mesh is None:
      return 1
    return sum(d.process_index == jax.process_index()
               for d in self.mesh.devices.flat)

  def padded_batch_size(self, n: int) -> int:
    """The smallest batch >= n that divides evenly over the devices."""
    return -(-n // self.num_devices) * self.num_devices

  def replicate(self, tree):
    """Weights: one copy on every device."""
    return jax.device_put(tree, self.replicated)

  def shard(self, tree):
    """Places this process's rows of per-image host arrays (a pytree) as
    the batch split over the mesh; device arrays pass through as they are."""
    def put(a):
      if isinstance(a, jax.Array):
        return a
      if self.mesh is None:
        return jax.device_put(np.asarray(a))
      return jax.make_array_from_process_local_data(self.batched,
                                                    np.asarray(a))
    return jax.tree_util.tree_map(put, tree)

  @staticmethod
  def local(tree):
    """This process's rows of per-image arrays (a pytree), as numpy: all
    rows in a one-process run."""
    return jax.tree_util.tree_map(_local_rows, tree)

  def row(self, tree, i: int):
    """Row `i` of the batch of every leaf, as numpy on every process
    (gathered from the process that holds it)."""
    if self.mesh is None:
      return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x[i])),
                                    tree)
    return jax.device_get(_row(self.replicated, tree, np.int32(i)))
