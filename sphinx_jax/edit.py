"""Edit from inverted codes: `python -m sphinx_jax.edit --config configs/edit.py`.

Three modes (`config.mode`): a direction at several strengths, an
interpolation between two inversions, a new attribute learned and walked
(jobs/editing.py; every field in docs/editing.md). Codes are an inversion's
codes directory or an official SPHInX result file (.pt). This module turns the
config into `EditSettings`, checking every field, and runs the mode.
"""

from typing import Optional

from sphinx_jax import cli
from sphinx_jax.errors import SphinxError, check_fields
from sphinx_jax.files import codes as codes_files
from sphinx_jax.inversion import attribute
from sphinx_jax.jobs import editing


def parse_floats(text: str, field: str) -> tuple[float, ...]:
  """'a,b,c' -> (a, b, c); a bad list names the config field."""
  try:
    values = tuple(float(v) for v in text.split(','))
  except ValueError:
    raise SphinxError(f'config.{field} = {text!r}: must be comma-separated '
                      'numbers') from None
  if not all(abs(v) < float('inf') for v in values):
    raise SphinxError(f'config.{field} = {text!r}: must be finite numbers')
  return values


def parse_rows(text: str) -> Optional[tuple[int, ...]]:
  """'i,j,...' -> the W+ rows to edit, sorted; '' -> None (all of them)."""
  if not text.strip():
    return None
  try:
    return tuple(sorted({int(v) for v in text.split(',')}))
  except ValueError:
    raise SphinxError(f'config.rows = {text!r}: must be comma-separated W+ '
                      'rows (empty: all)') from None


def settings_from_config(config) -> editing.EditSettings:
  """Checks every field and returns the typed settings."""
  # Learn mode has no codes, and an official result records no generator.
  sources = {'direction': (config.codes,),
             'interpolate': (config.codes, config.codes_b)}.get(config.mode, ())
  needs_generator = config.mode == 'learn' or any(
      map(codes_files.is_official_result, sources))
  checks = (
      ('mode', config.mode in editing.MODES,
       f'one of {", ".join(editing.MODES)}'),
      ('outdir', bool(config.outdir), 'a directory'),
      ('frames', config.frames >= 2, 'at least 2'),
      ('ms_per_frame', config.ms_per_frame >= 1, 'at least 1'),
      ('direction', config.mode != 'direction' or bool(config.direction),
       'a .npy file in mode direction'),
      ('codes_b', config.mode != 'interpolate' or bool(config.codes_b),
       'a codes directory in mode interpolate'),
      ('generator', bool(config.generator) or not needs_generator,
       'a generator directory in mode learn and for an official .pt result '
       '(neither records one)'),
      ('transform', config.transform in attribute.IDENTITY,
       f'one of {", ".join(attribute.IDENTITY)}'),
      ('resample', config.resample in attribute.RESAMPLING,
       f'one of {", ".join(attribute.RESAMPLING)}'),
      ('fill', -1.0 <= config.fill <= 1.0, 'a number in [-1, 1]'),
      *cli.optimisation_checks(config),
      ('penalty_weight', config.penalty_weight >= 0, 'non-negative'),
      ('walk_extent', config.walk_extent > 0, 'positive'),
      ('walk', config.walk in editing.WALKS,
       f'one of {", ".join(editing.WALKS)}'),
  )
  check_fields(config, checks)
  levels = parse_floats(config.levels, 'levels')
  identity = attribute.IDENTITY[config.transform]
  if config.mode == 'learn' and (len(levels) < 2 or levels[0] != identity):
    raise SphinxError(f'config.levels = {config.levels!r}: must list at least '
                      f'two levels, the first the identity ({identity:g} for '
                      f'{config.transform})')
  return editing.EditSettings(
      mode=config.mode, codes=config.codes, codes_b=config.codes_b,
      generator=config.generator, outdir=config.outdir,
      direction=config.direction,
      strengths=parse_floats(config.strengths, 'strengths'),
      rows=parse_rows(config.rows), frames=config.frames,
      ms_per_frame=config.ms_per_frame, image=config.image,
      transform=config.transform, levels=levels, resample=config.resample,
      fill=config.fill,
      learn=attribute.Settings(
          steps=config.steps, lr=config.lr,
          schedule_all=config.lr_schedule == 'all',
          mse_weight=config.mse_weight, lpips_weight=config.lpips_weight,
          penalty_weight=config.penalty_weight,
          num_vicinal=config.num_vicinal, seed=config.seed),
      lpips_min_resolution=config.lpips_min_resolution,
      walk_extent=config.walk_extent, walk=config.walk)


def main(config) -> int:
  settings = settings_from_config(config)
  count = editing.edit(settings)
  print(f'wrote {count} frames and edit.gif to {settings.outdir}')
  return 0


if __name__ == '__main__':
  cli.run(main, 'configs/edit.py')
