"""Inverting a folder of images, resumably: `run(RunSettings)`, what
`python -m sphinx_jax.run` does.

Files -> arrays -> steps -> outputs: each batch is decoded on the host, goes
to the devices once, is observed through the forward operator and inverted
there, and comes back once to be written. A rerun skips finished images
(the manifest) and continues the batch in progress from its checkpoint
(runtime/resume.py). At the end process 0 writes the run's page,
`report.html` (reports/run_page.py).
"""

import dataclasses
import math
import os
import sys
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from sphinx_jax import cli
from sphinx_jax.errors import SphinxError
from sphinx_jax.files import animation, atomic, codes, generator_dir, images
from sphinx_jax.files import inputs, outputs
from sphinx_jax.inversion import engine, metrics
from sphinx_jax.reports import run_page
from sphinx_jax.runtime import hosts, memory, resume, sharding

# The settings a run's results depend on (run.json): changing one of them on
# an outdir is refused; the others may change between reruns.
RESULT_FIELDS = ('method', 'steps', 'seed', 'lr', 'lr_schedule', 'mse_weight',
                 'lpips_weight', 'lpips_min_resolution', 'num_vicinal',
                 'references', 'dtype', 'observation', 'operator', 'resize',
                 'interpolation', 'exif_transpose', 'quantize', 'pivot',
                 'pti_locality',
                 'ilo_radius_latent', 'ilo_radius_noise', 'ilo_radius_hidden')


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """Every field of configs/invert.py, typed (README, "Configuration")."""
  generator: str
  inputs: str
  outdir: str
  inversion: engine.Settings = engine.Settings()
  references: str = ''
  batch_size: int = 4  # 0: the largest that fits (runtime/memory.py)
  save_every: int = 100
  checkpoint_every: int = 0
  steps_per_dispatch: int = 10
  observation: str = 'synthesize'  # or 'given'
  preprocess: inputs.Preprocess = inputs.Preprocess()
  quantize: str = 'round'  # or 'truncate' (metrics.quantize)
  distributed: hosts.Distributed = hosts.Distributed()

  def to_json(self) -> dict[str, Any]:
    """The settings as config.json records them: the config's fields."""
    values = dataclasses.asdict(self)
    values.update(values.pop('inversion'))
    values.update(values.pop('preprocess'))
    values['operator'] = {'name': self.inversion.operator.name,
                          **values['operator']}
    return values

  def results_key(self) -> dict[str, Any]:
    values = self.to_json()
    return {k: values[k] for k in RESULT_FIELDS}


def _pad(rows: list, size: int, blank: np.ndarray) -> np.ndarray:
  """Stacks `rows` and repeats the last (`blank` if there is none) so every
  batch has the compiled batch size."""
  filler = rows[-1] if rows else blank
  return np.stack(list(rows) + [filler] * (size - len(rows)))


_evaluate = jax.jit(metrics.evaluate)
_quantize = jax.jit(metrics.quantize, static_argnums=1)


@jax.jit
def _choose(use_first, first, second):
  return jnp.where(use_first[:, None, None, None], first, second)


class _Batch:
  """This process's part of one batch: its loaded images, their
  observations and what its run collects.

  `observations` are what the loss compares the operator's output with;
  `refs` what the metrics compare the reconstruction with (and target.png
  shows): the clean `references` image when given, else the clean input, or
  for given observations, their picture (`Inverter.view`); observation.png
  shows the observations' picture wherever that differs. Rows past the
  loaded images are padding (a blank image where a process has none). The
  arrays live on the devices, put there once.
  """

  def __init__(self, loaded, size: int, inverter: engine.Inverter,
               given: bool, load_size: int):
    self.items = [item for item, _, _ in loaded]
    self.names = [item.name for item in self.items]
    place = inverter.placement
    resolution = inverter.g.resolution
    self.ids = _pad([item.identity for item in self.items], size, np.uint32(0))
    self.op_params = inverter.operator_params(self.ids)
    pictures = place.shard(_pad([x for _, x, _ in loaded], size, np.zeros(
        (load_size, load_size, 3), np.float32)))
    self.observations = inverter.observe(pictures, self.ids, self.op_params,
                                         given)
    self.views = inverter.view(self.op_params, self.observations)
    fallback = self.views if given else pictures
    has_ref = [ref is not None for _, _, ref in loaded]
    if any(has_ref):
      blank = np.zeros((resolution, resolution, 3), np.float32)
      refs = _pad([blank if ref is None else ref for _, _, ref in loaded],
                  size, blank)
      self.refs = _choose(place.shard(_pad(has_ref, size, np.bool_(False))),
                          place.shard(refs), fallback)
    else:
      self.refs = fallback
    # observation.png is written where it is not what target.png shows.
    self.show_observation = [inverter.operator.name != 'identity' or ref
                             for ref in has_ref]
    # Recorded every save_every steps and after the last: the steps done,
    # and at each, this process's rows' progress frames and losses.
    self.recorded: list[int] = []
    self.frames: list[np.ndarray] = []
    self.losses: list[np.ndarray] = []


def _invert_batch(inverter: engine.Inverter, batch: _Batch, everyone,
                  settings: RunSettings, label: str) -> engine.Result:
  """Runs one batch with progress frames, progress line and checkpoints;
  `everyone` names the images of every process's part of it."""
  place = inverter.placement
  n, steps = len(batch.items), settings.inversion.steps
  checkpoints = (resume.BatchCheckpoints(
      os.path.join(settings.outdir, 'checkpoints'), settings.checkpoint_every)
                 if settings.checkpoint_every else None)
  start = None
  if checkpoints is not None:
    _, state, opt_state = inverter.init(batch.ids)
    restored = checkpoints.restore(everyone, state, opt_state)
    if restored is not None:
      state, opt_state, first, recorded, arrays = restored
      start = (state, opt_state, first)
      if arrays is not None:
        arrays = place.local(arrays)
        batch.recorded = recorded
        batch.frames = list(arrays['frames'].transpose(1, 0, 2, 3, 4))
        batch.losses = list(arrays['losses'].T)
      if n:
        print(f'{label} resuming {", ".join(batch.names)} from the checkpoint '
              f'after step {first}', file=sys.stderr)
  progress = cli.Progress(label, steps, n)

  def on_step(step, losses, imgs, state, opt_state):
    losses = place.local(losses)
    if (step + 1) % settings.save_every == 0 or step == steps - 1:
      batch.recorded.append(step + 1)
      batch.frames.append(animation.gif_frames(
          images.to_uint8(place.local(imgs))))
      batch.losses.append(losses)
    if n:
      progress.update(step, losses[:n])
    if checkpoints is not None and checkpoints.due(step, steps):
      checkpoints.save(step, everyone, state, opt_state, batch.recorded,
                       place.shard({'frames': np.stack(batch.frames, axis=1),
                                    'losses': np.stack(batch.losses, axis=1)})
                       if batch.recorded else None)

  # Control returns to Python only where a frame or checkpoint is due.
  every = math.gcd(settings.steps_per_dispatch, settings.save_every,
                   settings.checkpoint_every)
  try:
    result = inverter.invert(batch.observations, batch.ids, on_step, start,
                             every, batch.op_params)
  except BaseException:
    # An interrupted run (Ctrl-C, an error) still commits the checkpoint
    # being written, so a rerun continues from it.
    if checkpoints is not None:
      checkpoints.finish_saves()
    raise
  if checkpoints is not None:
    checkpoints.clear()
  return result


def _write_codes(batch: _Batch, result: engine.Result,
                 inverter: engine.Inverter, settings: RunSettings,
                 config_json: dict[str, Any], finite: list[bool]) -> None:
  """Every finished image's codes (`<outdir>/<image>/codes`), every
  process's: all processes take part in each save, and Orbax writes the
  files from process 0."""
  tree = {'state': result.state, 'wplus_mean': result.wplus_mean}
  if result.content_mean is not None:
    tree['content_mean'] = result.content_mean
  size = len(batch.ids)
  parts = hosts.gather([[item.name, item.path, ok]
                        for item, ok in zip(batch.items, finite)])
  for p, part in enumerate(parts):
    for i, (name, path, ok) in enumerate(part):
      if ok:
        codes.write_codes(os.path.join(settings.outdir, name, 'codes'),
                          inverter.placement.row(tree, p * size + i),
                          {**config_json, 'image': path})


def _problem(problems: outputs.Table, kind: str, item: inputs.InputImage,
             reason: str) -> None:
  """Prints `<kind> <file>: <reason>` (kind: skipped or failed) and records
  it in the process's problems file, for the report."""
  print(f'{kind} {item.path}: {reason}', file=sys.stderr)
  problems.add({'file': item.path, 'image': item.name, 'problem': kind,
                'reason': reason})


def _write_outputs(batch: _Batch, result: engine.Result,
                   inverter: engine.Inverter, settings: RunSettings,
                   config_json, table, manifest, problems, seconds
                   ) -> tuple[list[dict[str, Any]], list[str]]:
  """Writes each finished image of this process (and takes part in writing
  every process's codes); returns its metrics rows and failures. The
  metrics compare exactly the images saved: quantised to 8 bits."""
  saved = lambda x: _quantize(x, settings.quantize)
  reconstruction, mean, refs, views = map(saved, (
      result.reconstruction, result.mean, batch.refs, batch.views))
  observed = (saved(inverter.observe_reconstruction(
      result.reconstruction, batch.ids, batch.op_params))
              if inverter.operator.name != 'identity' else None)
  scores = _evaluate(inverter.lpips_params, reconstruction, refs)
  scores_mean = _evaluate(inverter.lpips_params, mean, refs)
  (losses, reconstruction, mean, std, refs, views, observed, scores,
   scores_mean, robust) = inverter.placement.local(
       (result.losses, reconstruction, mean, result.std, refs, views,
        observed, scores, scores_mean, result.robustness))
  finite = [bool(np.isfinite(losses[i]) and np.isfinite(reconstruction[i]).all())
            for i in range(len(batch.items))]
  _write_codes(batch, result, inverter, settings, config_json, finite)
  rows, failed = [], []
  for i, item in enumerate(batch.items):
    if not finite[i]:
      _problem(problems, 'failed', item, 'the loss became NaN or infinite; '
               'no outputs written (try a lower lr)')
      failed.append(item.name)
      continue
    outputs.write_image_results(
        os.path.join(settings.outdir, item.name), refs[i], reconstruction[i],
        mean[i], std[i], [f[i] for f in batch.frames],
        list(zip(batch.recorded, [loss[i] for loss in batch.losses])),
        views[i] if batch.show_observation[i] else None,
        None if observed is None else observed[i])
    row = {'image': item.name, 'method': settings.inversion.method,
           'steps': settings.inversion.steps, 'seconds': seconds,
           **{k: float(v[i]) for k, v in scores.items()},
           **{f'{k}_mean': float(v[i]) for k, v in scores_mean.items()},
           'robust_psnr': float(robust[i])}
    table.add(row)
    manifest.add(item.name)
    rows.append(row)
  return rows, failed


def _load_batch(batch, resolution, load_size, references, preprocess,
                problems):
  """Decodes a batch at `load_size` (and references at `resolution`); broken
  files are reported and left out."""
  loaded, skipped = [], []
  for item in batch:
    try:
      image = inputs.load_image(item.path, load_size, preprocess)
      ref = (inputs.load_image(references[item.name].path, resolution,
                               preprocess)
             if item.name in references else None)
      loaded.append((item, image, ref))
    except SphinxError as e:
      _problem(problems, 'skipped', item, str(e))
      skipped.append(item.name)
  return loaded, skipped


def _kept_rows(path: str, names: set[str]) -> list[dict[str, Any]]:
  """The metrics rows of finished images (a crash may have left a row for
  an image the manifest does not list), the file rewritten to hold just
  those; metrics as floats."""
  rows = [r for r in outputs.read_csv(path) if r.get('image') in names]
  if os.path.exists(path):
    outputs.write_csv(path, rows)
  return [{**r, **{k: float(r[k]) for k in outputs.METRICS_COLUMNS[3:]}}
          for r in rows]


def automatic_batch_size(inverter: engine.Inverter, images: int) -> int:
  """batch_size=0: the largest batch that fits every process's devices
  (for at most `images` images a process), printed with what it needs."""
  limit = memory.device_memory_limit()
  try:
    batch, need = memory.largest_batch(inverter, limit, images)
  except ValueError as e:
    raise SphinxError(f'batch_size = 0: {e}') from None
  batch = min(hosts.gather(batch))  # processes step together
  print(f'batch_size = 0: chose {batch}, whose step needs '
        f'{need / 2**30:.2f} GiB of {limit / 2**30:.2f} GiB per device',
        file=sys.stderr)
  return batch


def run(settings: RunSettings) -> int:
  """Inverts every image of `settings.inputs`; returns the exit status."""
  hosts.initialize(settings.distributed)
  g = generator_dir.load_generator(settings.generator)
  operator = settings.inversion.operator
  operator.check(g.resolution)
  # Built before the outdir is claimed: a setting it refuses leaves no trace.
  inverter = engine.Inverter(g, settings.inversion, sharding.Placement(
      sharding.batch_mesh(hosts.devices())))
  given = settings.observation == 'given'
  load_size = operator.load_size(g.resolution) if given else g.resolution
  all_items = inputs.discover(settings.inputs)
  items = hosts.share(all_items)
  references = ({r.name: r for r in inputs.discover(settings.references)}
                if settings.references else {})
  resumed = resume.claim_outdir(settings.outdir, resume.fingerprint(
      settings.generator, settings.results_key()))
  manifest = resume.Manifest(settings.outdir)
  finished = manifest.finished()
  metrics_path = os.path.join(settings.outdir, f'metrics{hosts.suffix()}.csv')
  done_rows = _kept_rows(metrics_path, finished) if resumed else []
  todo = [item for item in items if item.name not in finished]
  if resumed:
    print(f'resuming in {settings.outdir}: {len(items) - len(todo)} of '
          f'{len(items)} images{hosts.suffix() and " of this process"} already '
          'finished', file=sys.stderr)

  batch_size = settings.batch_size or automatic_batch_size(
      inverter, max(hosts.gather(len(todo))))
  size = inverter.placement.padded_batch_size(batch_size)
  table = outputs.Table(metrics_path)
  problems_log = outputs.Table(
      os.path.join(settings.outdir, f'problems{hosts.suffix()}.csv'),
      outputs.PROBLEMS_COLUMNS)
  config_json = {**settings.to_json(), 'lr_used': inverter.lr,
                 'generator_provenance': generator_dir.provenance(
                     settings.generator)}
  if hosts.is_primary():
    atomic.write_json(os.path.join(settings.outdir, 'config.json'),
                      config_json)

  rows, problems = [], []
  groups = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
  # Processes step together: each runs as many batches as the busiest one,
  # padding where it has run out of images.
  count = max(hosts.gather(len(groups)))
  for b in range(count):
    group = groups[b] if b < len(groups) else []
    loaded, skipped = _load_batch(group, g.resolution, load_size, references,
                                  settings.preprocess, problems_log)
    problems += skipped
    everyone = hosts.gather([item.name for item, _, _ in loaded])
    if not any(everyone):
      continue
    batch = _Batch(loaded, size, inverter, given, load_size)
    start = time.perf_counter()
    result = _invert_batch(inverter, batch, everyone, settings,
                           f'[batch {b + 1}/{count}]')
    seconds = (time.perf_counter() - start) / max(len(batch.items), 1)
    new_rows, failed = _write_outputs(batch, result, inverter, settings,
                                      config_json, table, manifest,
                                      problems_log, seconds)
    rows += new_rows
    problems += failed
  rows = done_rows + rows
  hosts.barrier('finished')  # every process's manifest is complete
  if hosts.suffix() and hosts.is_primary():
    hosts.merge_metrics(settings.outdir, [item.name for item in all_items],
                        manifest.finished())
  if rows:
    print(cli.format_table(rows))
  if hosts.is_primary():
    print(f'wrote {run_page.write(settings.outdir)}', file=sys.stderr)
  total = sum(hosts.gather(len(problems)))
  if total:
    others = ' and the other processes\' logs' if hosts.suffix() else ''
    print(f'{total} of {len(all_items)} images skipped or failed (see above'
          f'{others})', file=sys.stderr)
    return 1
  return 0
