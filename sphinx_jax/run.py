"""Inverts a folder of images: `python -m sphinx_jax.run --config configs/invert.py`.

The logic lives in `run(config)`; `main` only hands it the parsed config.
"""

import os
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from ml_collections import config_flags

from sphinx_jax import cli, data, images, invert, methods, metrics, outputs
from sphinx_jax.errors import SphinxError
from sphinx_jax.generator import load_generator

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/invert.py', 'an ml_collections config file', lock_config=True)


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
      ('checkpoint_every', config.checkpoint_every == 0,
       '0 (checkpointing arrives with resumable jobs)'),
      ('outdir', bool(config.outdir), 'a directory'),
  )
  for field, ok, want in checks:
    if not ok:
      raise SphinxError(f'config.{field} = {config[field]!r}: must be {want}')


def _load_targets(batch, resolution, references):
  """Decodes a batch; broken files are reported and left out."""
  loaded, skipped = [], []
  for item in batch:
    try:
      target = data.load_image(item.path, resolution)
      ref = (data.load_image(references[item.name].path, resolution)
             if item.name in references else target)
      loaded.append((item, target, ref))
    except SphinxError as e:
      print(f'skipped {item.path}: {e}', file=sys.stderr)
      skipped.append(item)
  return loaded, skipped


def _pad(arrays: np.ndarray, size: int) -> np.ndarray:
  """Repeats the last entry so every batch has the compiled batch size."""
  return np.concatenate([arrays] + [arrays[-1:]] * (size - len(arrays)))


def _save_codes(directory: str, result: invert.Result, i: int,
                config_json: dict[str, Any]) -> None:
  tree = {'state': jax.tree_util.tree_map(lambda x: np.asarray(x[i]), result.state),
          'wplus_mean': result.wplus_mean[i]}
  if result.content_mean is not None:
    tree['content_mean'] = result.content_mean[i]
  path = os.path.abspath(os.path.join(directory, 'codes'))
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(path, 'state'), tree, force=True)
  checkpointer.wait_until_finished()
  outputs.write_json(config_json, os.path.join(path, 'config.json'))


def run(config) -> int:
  """Inverts every image of `config.inputs`; returns the exit status."""
  validate(config)
  g = load_generator(config.generator)
  items = data.discover(config.inputs)
  references = ({r.name: r for r in data.discover(config.references)}
                if config.references else {})
  settings = invert.Settings.from_config(config)
  inverter = invert.Inverter(g, settings)
  os.makedirs(config.outdir, exist_ok=True)
  table = outputs.MetricsTable(os.path.join(config.outdir, 'metrics.csv'))
  config_json = {**config.to_dict(), 'lr_used': inverter.lr}
  outputs.write_json(config_json, os.path.join(config.outdir, 'config.json'))
  evaluate = jax.jit(metrics.evaluate)

  rows, skipped = [], []
  batches = [items[i:i + config.batch_size]
             for i in range(0, len(items), config.batch_size)]
  for b, batch in enumerate(batches):
    loaded, bad = _load_targets(batch, g.resolution, references)
    skipped += bad
    if not loaded:
      continue
    n = len(loaded)
    targets = _pad(np.stack([t for _, t, _ in loaded]), config.batch_size)
    refs = _pad(np.stack([r for _, _, r in loaded]), config.batch_size)
    ids = _pad(np.array([item.identity for item, _, _ in loaded]), config.batch_size)
    progress = outputs.Progress(f'[batch {b + 1}/{len(batches)}]', config.steps, n)
    frames = [[] for _ in range(n)]

    def on_step(step, losses, imgs):
      if step % config.save_every == 0 or step == config.steps - 1:
        host = images.to_uint8(np.asarray(imgs[:n]))
        for i in range(n):
          frames[i].append(host[i])
      progress.update(step, losses[:n])

    start = time.perf_counter()
    result = inverter.invert(targets, ids, on_step)
    seconds = (time.perf_counter() - start) / n
    scores = jax.device_get(evaluate(inverter.lpips_params, result.reconstruction, refs))
    scores_mean = jax.device_get(evaluate(inverter.lpips_params, result.mean, refs))
    for i, (item, target, _) in enumerate(loaded):
      directory = os.path.join(config.outdir, item.name)
      outputs.write_image_results(directory, target, result.reconstruction[i],
                                  result.mean[i], result.std[i], frames[i])
      _save_codes(directory, result, i, {**config_json, 'image': item.path})
      row = {'image': item.name, 'method': config.method, 'steps': config.steps,
             'seconds': seconds,
             **{k: float(v[i]) for k, v in scores.items()},
             **{f'{k}_mean': float(v[i]) for k, v in scores_mean.items()}}
      table.add(row)
      rows.append(row)
  if rows:
    print(outputs.format_table(rows))
  if skipped:
    print(f'{len(skipped)} of {len(items)} images skipped (see above)',
          file=sys.stderr)
    return 1
  return 0


def main() -> int:
  return run(cli.config_value(_CONFIG))


if __name__ == '__main__':
  cli.run(main)
