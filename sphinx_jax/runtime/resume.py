"""What makes a run resumable: its fingerprint, the manifest of finished
images and the checkpoints of the batch in progress.

- `<outdir>/run.json` records the settings that determine the results; a
  different config pointed at the same outdir is refused, not mixed in.
  (`batch_size`, `save_every`, `checkpoint_every` and `inputs` may change: an
  image's result does not depend on its batch, and new inputs are welcome.)
- `<outdir>/manifest.jsonl` gets one line per image once all its outputs are
  written; a rerun skips those images.
- `<outdir>/checkpoints/` holds Orbax checkpoints of the batch in progress
  (state, Adam state, step, progress frames and losses), the last few kept.
In a multi-host run each process has its own manifest (suffix `.process<i>`);
the checkpoints are of the global batch, saved by all processes together.
"""

import glob
import json
import os
from typing import Any, Optional

import jax
import numpy as np

from sphinx_jax.files import atomic, checkpoints, generator_dir
from sphinx_jax.runtime import hosts


def fingerprint(generator: str, results: dict[str, Any]) -> dict[str, Any]:
  """What run.json records, as JSON gives it back (tuples as lists): the
  generator by content (`generator_dir.identity`) and `results`, the
  settings the results depend on."""
  return json.loads(json.dumps(
      {'generator': generator_dir.identity(generator), **results}))


def _check_previous(path: str, fp: dict[str, Any]) -> Optional[str]:
  """Why the run recorded at `path` may not be continued, if it may not."""
  try:
    with open(path) as f:
      previous = json.load(f)
  except (OSError, ValueError) as e:
    return f'{path}: unreadable ({e}); use another outdir'
  changed = [k for k in fp if previous.get(k) != fp[k]]
  if changed:
    what = ', '.join(f'{k} {previous.get(k)!r} -> {fp[k]!r}' for k in changed)
    return (f'{os.path.dirname(path)} holds a run with other settings '
            f'({what}); use another outdir or the same config')
  return None


def claim_outdir(outdir: str, fp: dict[str, Any]) -> bool:
  """Records `fp` in a new outdir, or checks it against an existing one; in
  a multi-host run, also that every process sees the same outdir.

  Returns:
    True when the outdir already held a run with this fingerprint.
  """
  path = os.path.join(outdir, 'run.json')
  existed = os.path.exists(path)
  # Every process has looked before process 0 writes (gather waits for all).
  hosts.raise_if_any(_check_previous(path, fp) if existed else None)
  if not existed and hosts.is_primary():
    os.makedirs(outdir, exist_ok=True)
    atomic.write_json(path, fp)
  hosts.barrier('claimed')
  hosts.raise_if_any(
      None if os.path.exists(path) else
      f'{outdir}: process {jax.process_index()} does not see the run.json that '
      'process 0 wrote; outdir must be on storage every process shares')
  return existed


def finished(outdir: str) -> set[str]:
  """The images every manifest in `outdir` lists as finished."""
  names = set()
  for path in glob.glob(os.path.join(outdir, 'manifest*.jsonl')):
    with open(path) as f:
      for line in f:
        try:
          names.add(json.loads(line)['image'])
        except (ValueError, KeyError, TypeError):
          pass  # a line cut by a crash: that image is redone
  return names


class Manifest:
  """The names of finished images, one JSON line each, appended and fsynced
  (one file per process of a multi-host run; all of them are read)."""

  def __init__(self, outdir: str):
    self.outdir = outdir
    self.path = os.path.join(outdir, f'manifest{hosts.suffix()}.jsonl')

  def finished(self) -> set[str]:
    return finished(self.outdir)

  def add(self, name: str) -> None:
    atomic.append_line(self.path, json.dumps({'image': name}))


class BatchCheckpoints:
  """Orbax checkpoints of the batch in progress, keyed by the step done.

  The arrays are the batch's, sharded as the inversion has them (in a
  multi-host run, global arrays that every process saves its rows of)."""

  def __init__(self, directory: str, every: int, keep: int = 2):
    self.every = every
    self.checkpoints = checkpoints.Checkpoints(directory, keep)

  def due(self, step: int, steps: int) -> bool:
    done = step + 1
    return done % self.every == 0 and done < steps

  def save(self, step: int, names: Any, state, opt_state,
           recorded: list[int], progress: Optional[dict[str, jax.Array]]
           ) -> None:
    """Saves after `step` (0-based) the batch of images `names` (JSON-able:
    every process's names), with what it recorded so far: the steps done at
    each record, and `progress`, its arrays (B, len(recorded), ...): the
    frames (B, T, H, W, 3) and losses (B, T); None before the first
    record."""
    # Copies: the next step donates the state's buffers, and Orbax may copy
    # them to the host after this returns.
    copy = lambda x: jax.device_put(x, x.sharding, may_alias=False)
    tree = {'state': state, 'opt_state': opt_state}
    if progress is not None:  # Orbax refuses arrays of size zero
      tree['progress'] = progress
    self.checkpoints.save(step, jax.tree_util.tree_map(copy, tree), {
        'names': names, 'recorded': recorded,
        'progress': None if progress is None else {
            k: [list(v.shape), v.dtype.name] for k, v in progress.items()}})

  def restore(self, names: Any, state, opt_state
              ) -> Optional[tuple[Any, Any, int, list[int],
                                  Optional[dict[str, jax.Array]]]]:
    """(state, opt_state, next step, recorded steps, progress or None) if
    the latest checkpoint is of the batch `names`; `state`/`opt_state` give
    the structure and placement (fresh ones will do), and the progress
    arrays are placed like the state."""
    step = self.checkpoints.latest_step()
    if step is None:
      return None
    meta = self.checkpoints.meta(step)
    # One of an earlier version records no losses: the batch starts afresh
    # rather than leave a gap in its loss curve.
    if meta.get('names') != names or 'recorded' not in meta:
      return None
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        {'state': state, 'opt_state': opt_state})
    if meta['progress'] is not None:
      rows = jax.tree_util.tree_leaves(state)[0].sharding
      abstract['progress'] = {
          k: jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype), sharding=rows)
          for k, (shape, dtype) in meta['progress'].items()}
    tree = self.checkpoints.restore(step, abstract)
    return (tree['state'], tree['opt_state'], step + 1, meta['recorded'],
            tree.get('progress'))

  def finish_saves(self) -> None:
    """Waits for the saves in flight to commit, and releases the directory."""
    self.checkpoints.close()

  def clear(self) -> None:
    """Drops every checkpoint once the batch's outputs are written."""
    self.checkpoints.close()
    hosts.barrier('checkpoints closed')
    if hosts.is_primary():
      self.checkpoints.remove()
    hosts.barrier('checkpoints cleared')
