"""Inverts a folder of images: `python -m sphinx_jax.run --config configs/invert.py`.

The logic lives in `run(config)`; `main` only hands it the parsed config.
A run is resumable: rerunning the same command skips finished images and
continues the batch in progress from its last checkpoint (see resume.py).
"""

import csv
import math
import os
import sys
import time
from typing import Any

import jax
import numpy as np
from PIL import Image

from sphinx_jax import cli
from sphinx_jax.files import inputs, images, outputs
from sphinx_jax.runtime import hosts, resume
from sphinx_jax.inversion import engine, methods, metrics, operators
from sphinx_jax.errors import SphinxError, check_fields
from sphinx_jax.files.generator_dir import load_generator


def validate(config) -> None:
  """Fails before any work, naming the offending field."""
  checks = (
      ('method', config.method in methods.METHODS,
       f'one of {", ".join(methods.METHODS)}'),
      ('steps', config.steps >= 1, 'at least 1'),
      ('batch_size', config.batch_size >= 1, 'at least 1'),
      ('lr', config.lr is None or config.lr > 0, 'positive (or unset)'),
      ('lr_schedule', config.lr_schedule in ('official', 'all'),
       "'official' or 'all'"),
      ('mse_weight', config.mse_weight >= 0, 'non-negative'),
      ('lpips_weight', config.lpips_weight >= 0, 'non-negative'),
      ('num_vicinal', config.num_vicinal >= 1, 'at least 1'),
      ('save_every', config.save_every >= 1, 'at least 1'),
      ('steps_per_dispatch', config.steps_per_dispatch >= 1, 'at least 1'),
      ('dtype', config.dtype in ('float32', 'bfloat16'),
       "'float32' or 'bfloat16'"),
      ('checkpoint_every', config.checkpoint_every >= 0, 'non-negative (0: off)'),
      ('outdir', bool(config.outdir), 'a directory'),
      ('observation', config.observation in ('synthesize', 'given'),
       "'synthesize' or 'given'"),
  )
  check_fields(config, checks)
  operator = operators.from_config(config.operator)
  if config.observation == 'given' and operator.name == 'cs':
    raise SphinxError("config.observation = 'given': operator 'cs' takes "
                      "clean inputs (its measurements are not images)")


def _pad(rows: list, size: int, blank: np.ndarray) -> np.ndarray:
  """Stacks `rows` and repeats the last (`blank` if there is none) so every
  batch has the compiled batch size."""
  filler = rows[-1] if rows else blank
  return np.stack(list(rows) + [filler] * (size - len(rows)))


def _frame(imgs) -> np.ndarray:
  """A progress frame: uint8, at most GIF_MAX_SIZE pixels a side."""
  frames = images.to_uint8(np.asarray(imgs))
  if frames.shape[1] <= outputs.GIF_MAX_SIZE:
    return frames
  size = (outputs.GIF_MAX_SIZE, outputs.GIF_MAX_SIZE)
  return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.LANCZOS))
                   for f in frames])


def _keep_rows(path: str, names: set[str]) -> list[dict[str, str]]:
  """Keeps the metrics rows of finished images (a crash may have left a row
  for an image the manifest does not list); rewrites the file atomically."""
  if not os.path.exists(path):
    return []
  with open(path, newline='') as f:
    rows = [r for r in csv.DictReader(f) if r.get('image') in names]
  outputs.write_csv(path, rows)
  return rows


class _Batch:
  """This process's part of one batch: its loaded images, their
  observations and what its run collects.

  `observations` are what the loss compares the operator's output with;
  `refs` what the metrics compare the reconstruction with (and target.png
  shows): the clean `references` image when given, else the clean input, or
  for given observations, their picture (`Inverter.view`); observation.png
  shows the observations' picture wherever that differs. Rows past the
  loaded images are padding (a blank image where a process has none).
  """

  def __init__(self, loaded, size: int, inverter: engine.Inverter,
               given: bool, load_size: int):
    self.items = [item for item, _, _ in loaded]
    self.names = [item.name for item in self.items]
    resolution = inverter.g.resolution
    self.ids = _pad([item.identity for item in self.items], size, np.uint32(0))
    self.op_params = inverter.operator_params(self.ids)
    inputs = _pad([x for _, x, _ in loaded], size,
                  np.zeros((load_size, load_size, 3), np.float32))
    self.observations = inverter.observe(inputs, self.ids, self.op_params,
                                         given)
    self.views = inverter.view(self.op_params, self.observations)
    fallback = self.views if given else inputs
    self.refs = _pad([fallback[i] if ref is None else ref
                      for i, (_, _, ref) in enumerate(loaded)], size,
                     np.zeros((resolution, resolution, 3), np.float32))
    # observation.png is written where it is not what target.png shows.
    self.show_observation = [inverter.operator.name != 'identity' or
                             ref is not None for _, _, ref in loaded]
    self.frames: list[np.ndarray] = []


def _invert_batch(inverter: engine.Inverter, batch: _Batch, everyone, config,
                  label: str) -> engine.Result:
  """Runs one batch with progress frames, progress line and checkpoints;
  `everyone` names the images of every process's part of it."""
  n, steps = len(batch.items), config.steps
  checkpoints = (resume.BatchCheckpoints(
      os.path.join(config.outdir, 'checkpoints'), config.checkpoint_every)
                 if config.checkpoint_every else None)
  start = None
  if checkpoints is not None:
    _, state, opt_state = inverter.init(batch.ids)
    restored = checkpoints.restore(everyone, state, opt_state)
    if restored is not None:
      state, opt_state, first, frames = restored
      start = (state, opt_state, first)
      batch.frames = list(inverter.local(frames).transpose(1, 0, 2, 3, 4))
      if n:
        print(f'{label} resuming {", ".join(batch.names)} from the checkpoint '
              f'after step {first}', file=sys.stderr)
  progress = outputs.Progress(label, steps, n)

  def on_step(step, losses, imgs, state, opt_state):
    if (step + 1) % config.save_every == 0 or step == steps - 1:
      batch.frames.append(_frame(inverter.local(imgs)))
    if n:
      progress.update(step, inverter.local(losses)[:n])
    if checkpoints is not None and checkpoints.due(step, steps):
      checkpoints.save(step, everyone, state, opt_state,
                       inverter.shard(np.stack(batch.frames, axis=1)))

  # Control returns to Python only where a frame or checkpoint is due.
  every = math.gcd(config.steps_per_dispatch, config.save_every,
                   config.checkpoint_every)
  result = inverter.invert(batch.observations, batch.ids, on_step, start,
                           every, batch.op_params)
  if checkpoints is not None:
    checkpoints.clear()
  return result


def _write_codes(batch: _Batch, result: engine.Result, inverter, config,
                 config_json, finite: list[bool]) -> None:
  """Every finished image's codes (`<outdir>/<image>/codes`), every
  process's: all processes take part in each save, and Orbax writes the
  files from process 0."""
  codes = {'state': result.state, 'wplus_mean': result.wplus_mean}
  if result.content_mean is not None:
    codes['content_mean'] = result.content_mean
  size = len(batch.ids)
  parts = hosts.gather([[item.name, item.path, ok]
                        for item, ok in zip(batch.items, finite)])
  for p, part in enumerate(parts):
    for i, (name, path, ok) in enumerate(part):
      if ok:
        outputs.write_codes(os.path.join(config.outdir, name, 'codes'),
                            inverter.row(codes, p * size + i),
                            {**config_json, 'image': path})


def _write_outputs(batch: _Batch, result: engine.Result, inverter, config,
                   config_json, table, manifest, seconds, evaluate
                   ) -> tuple[list[dict[str, Any]], list[str]]:
  """Writes each finished image of this process (and takes part in writing
  every process's codes); returns its metrics rows and failures."""
  refs = inverter.shard(batch.refs)
  scores = inverter.local(evaluate(inverter.lpips_params,
                                   result.reconstruction, refs))
  scores_mean = inverter.local(evaluate(inverter.lpips_params, result.mean,
                                        refs))
  losses, reconstruction, mean, std = inverter.local(
      (result.losses, result.reconstruction, result.mean, result.std))
  finite = [bool(np.isfinite(losses[i]) and np.isfinite(reconstruction[i]).all())
            for i in range(len(batch.items))]
  _write_codes(batch, result, inverter, config, config_json, finite)
  rows, failed = [], []
  for i, item in enumerate(batch.items):
    if not finite[i]:
      print(f'failed {item.path}: the loss became NaN or infinite; no outputs '
            'written (try a lower lr)', file=sys.stderr)
      failed.append(item.name)
      continue
    directory = os.path.join(config.outdir, item.name)
    outputs.write_image_results(
        directory, batch.refs[i], reconstruction[i], mean[i], std[i],
        [f[i] for f in batch.frames],
        batch.views[i] if batch.show_observation[i] else None)
    row = {'image': item.name, 'method': config.method, 'steps': config.steps,
           'seconds': seconds,
           **{k: float(v[i]) for k, v in scores.items()},
           **{f'{k}_mean': float(v[i]) for k, v in scores_mean.items()}}
    table.add(row)
    manifest.add(item.name)
    rows.append(row)
  return rows, failed


def _load_batch(batch, resolution, load_size, references):
  """Decodes a batch at `load_size` (and references at `resolution`); broken
  files are reported and left out."""
  loaded, skipped = [], []
  for item in batch:
    try:
      image = inputs.load_image(item.path, load_size)
      ref = (inputs.load_image(references[item.name].path, resolution)
             if item.name in references else None)
      loaded.append((item, image, ref))
    except SphinxError as e:
      print(f'skipped {item.path}: {e}', file=sys.stderr)
      skipped.append(item.name)
  return loaded, skipped


def run(config) -> int:
  """Inverts every image of `config.inputs`; returns the exit status."""
  validate(config)
  hosts.initialize(config.distributed)
  g = load_generator(config.generator)
  operator = operators.from_config(config.operator, g.resolution)
  given = config.observation == 'given'
  load_size = operator.load_size(g.resolution) if given else g.resolution
  all_items = inputs.discover(config.inputs)
  items = hosts.share(all_items)
  references = ({r.name: r for r in inputs.discover(config.references)}
                if config.references else {})
  resumed = resume.claim_outdir(config.outdir, resume.fingerprint(config))
  manifest = resume.Manifest(config.outdir)
  finished = manifest.finished()
  metrics_path = os.path.join(config.outdir, f'metrics{hosts.suffix()}.csv')
  done_rows = _keep_rows(metrics_path, finished) if resumed else []
  todo = [item for item in items if item.name not in finished]
  if resumed:
    print(f'resuming in {config.outdir}: {len(items) - len(todo)} of '
          f'{len(items)} images{hosts.suffix() and " of this process"} already '
          'finished', file=sys.stderr)

  inverter = engine.Inverter(g, engine.Settings.from_config(config),
                             engine.batch_mesh(hosts.devices()))
  size = inverter.padded_batch_size(config.batch_size)
  table = outputs.MetricsTable(metrics_path)
  config_json = {**config.to_dict(), 'lr_used': inverter.lr}
  if hosts.is_primary():
    outputs.write_json(config_json, os.path.join(config.outdir, 'config.json'))
  evaluate = jax.jit(metrics.evaluate)

  rows, problems = [], []
  groups = [todo[i:i + config.batch_size]
            for i in range(0, len(todo), config.batch_size)]
  # Processes step together: each runs as many batches as the busiest one,
  # padding where it has run out of images.
  count = max(hosts.gather(len(groups)))
  for b in range(count):
    group = groups[b] if b < len(groups) else []
    loaded, skipped = _load_batch(group, g.resolution, load_size, references)
    problems += skipped
    everyone = hosts.gather([item.name for item, _, _ in loaded])
    if not any(everyone):
      continue
    batch = _Batch(loaded, size, inverter, given, load_size)
    start = time.perf_counter()
    result = _invert_batch(inverter, batch, everyone, config,
                           f'[batch {b + 1}/{count}]')
    seconds = (time.perf_counter() - start) / max(len(batch.items), 1)
    new_rows, failed = _write_outputs(batch, result, inverter, config,
                                      config_json, table, manifest, seconds,
                                      evaluate)
    rows += new_rows
    problems += failed
  rows = [{**r, **{k: float(r[k]) for k in outputs.METRICS_COLUMNS[3:]}}
          for r in done_rows] + rows
  hosts.barrier('finished')  # every process's manifest is complete
  if hosts.suffix() and hosts.is_primary():
    hosts.merge_metrics(config.outdir, [item.name for item in all_items],
                        manifest.finished())
  if rows:
    print(outputs.format_table(rows))
  total = sum(hosts.gather(len(problems)))
  if total:
    others = ' and the other processes\' logs' if hosts.suffix() else ''
    print(f'{total} of {len(all_items)} images skipped or failed (see above'
          f'{others})', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  cli.run(run, 'configs/invert.py')
