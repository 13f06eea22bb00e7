"""Orbax checkpoints of work in progress: a pytree of arrays and a JSON
record per step, in one `ocp.CheckpointManager` directory.

The inversion's batch checkpoints (runtime/resume.py) and the prior
trainer's (training/trainer.py) are both this format.
"""

import os
import shutil
from typing import Any, Optional

import orbax.checkpoint as ocp


class Checkpoints:
  """`<directory>/<step>/{arrays,meta}`, the newest `keep` kept.

  Under jax.distributed every process must make the same calls: Orbax
  saves global arrays with all of them.
  """

  def __init__(self, directory: str, keep: int = 2):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, arrays: Any, meta: dict[str, Any]) -> None:
    """Saves `arrays` (a pytree) and `meta` (JSON-able) as step `step`; a
    step already saved is left as it is."""
    if self.manager.latest_step() == step:
      return
    self.manager.save(step, args=ocp.args.Composite(
        arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)))

  def meta(self, step: int) -> dict[str, Any]:
    return self.manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))['meta']

  def restore(self, step: int, abstract: Any) -> Any:
    """The arrays of `step`, shaped, typed and placed as `abstract` (a
    pytree of jax.ShapeDtypeStruct, or of arrays) says."""
    return self.manager.restore(step, args=ocp.args.Composite(
        arrays=ocp.args.StandardRestore(abstract)))['arrays']

  def close(self) -> None:
    """Waits for saves in flight, then releases the directory."""
    self.manager.wait_until_finished()
    self.manager.close()

  def remove(self) -> None:
    """Deletes the directory (call `close` first, on every process)."""
    shutil.rmtree(self.directory, ignore_errors=True)
