"""Inverts a folder of images: `python -m sphinx_jax.run --config configs/invert.py`.

This module turns the config into `RunSettings` once, checking every field
(one `error:` line names the first bad one), and hands them to
`jobs.folder.run`. Every field is documented in README.md ("Configuration").
"""

import dataclasses

from sphinx_jax import cli
from sphinx_jax.errors import SphinxError, check_fields
from sphinx_jax.files import inputs
from sphinx_jax.inversion import engine, methods, metrics, operators, pti
from sphinx_jax.jobs import folder
from sphinx_jax.runtime import hosts


def operator_from_config(cfg) -> operators.Identity:
  """The operator `config.operator` names, its settings checked."""
  name = cfg.name
  if name not in operators.OPERATORS:
    raise SphinxError(f'config.operator.name = {name!r}: must be one of '
                      f'{", ".join(operators.OPERATORS)}')
  checks = {
      'denoise': (('sigma', cfg.sigma > 0, 'positive'),),
      'cs': (('fraction', 0 < cfg.fraction <= 1, 'in (0, 1]'),),
      'inpaint': (('box', 0 < cfg.box < 1, 'in (0, 1)'),),
      'sr': (('factor', cfg.factor >= 2, 'at least 2'),
             ('kernel', cfg.kernel in ('area', 'bicubic'),
              "'area' or 'bicubic'")),
  }
  check_fields(cfg, checks.get(name, ()), 'config.operator.')
  op = operators.OPERATORS[name]
  return op(**{f.name: cfg[f.name] for f in dataclasses.fields(op)})


def distributed_from_config(cfg) -> hosts.Distributed:
  checks = (
      ('num_processes', cfg.num_processes is None or cfg.num_processes >= 1,
       'at least 1 (or unset)'),
      ('process_id', cfg.process_id is None or
       0 <= cfg.process_id < (cfg.num_processes or cfg.process_id + 1),
       'in [0, num_processes) (or unset)'),
      ('initialization_timeout', cfg.initialization_timeout >= 1,
       'at least 1 (seconds)'),
  )
  check_fields(cfg, checks, 'config.distributed.')
  return hosts.Distributed(**cfg.to_dict())


def _radii(value) -> bool:
  return isinstance(value, (tuple, list)) and all(
      isinstance(r, (int, float)) and r > 0 for r in value)


def settings_from_config(config) -> folder.RunSettings:
  """Checks every field and returns the typed settings."""
  checks = (
      ('method', config.method in methods.METHODS,
       f'one of {", ".join(methods.METHODS)}'),
      *cli.optimisation_checks(config),
      ('batch_size', config.batch_size >= 0, 'at least 1, or 0 (automatic)'),
      ('save_every', config.save_every >= 1, 'at least 1'),
      ('steps_per_dispatch', config.steps_per_dispatch >= 1, 'at least 1'),
      ('dtype', config.dtype in ('float32', 'bfloat16'),
       "'float32' or 'bfloat16'"),
      ('checkpoint_every', config.checkpoint_every >= 0, 'non-negative (0: off)'),
      ('outdir', bool(config.outdir), 'a directory'),
      ('observation', config.observation in ('synthesize', 'given'),
       "'synthesize' or 'given'"),
      ('resize', config.resize in inputs.RESIZES,
       ' or '.join(map(repr, inputs.RESIZES))),
      ('interpolation', config.interpolation in inputs.INTERPOLATIONS,
       f'one of {", ".join(inputs.INTERPOLATIONS)}'),
      ('exif_transpose', isinstance(config.exif_transpose, bool),
       'True or False'),
      ('quantize', config.quantize in metrics.QUANTIZE,
       ' or '.join(map(repr, metrics.QUANTIZE))),
      ('pivot', config.pivot in pti.PIVOTS, ' or '.join(map(repr, pti.PIVOTS))),
      ('pti_locality', isinstance(config.pti_locality, bool), 'True or False'),
      *((f'ilo_radius_{k}', _radii(config[f'ilo_radius_{k}']),
         'a tuple of positive numbers (empty: no projection)')
        for k in ('latent', 'noise', 'hidden')),
  )
  check_fields(config, checks)
  operator = operator_from_config(config.operator)
  if config.observation == 'given' and operator.name == 'cs':
    raise SphinxError("config.observation = 'given': operator 'cs' takes "
                      "clean inputs (its measurements are not images)")
  settings = engine.Settings(
      **{f.name: config[f.name] for f in dataclasses.fields(engine.Settings)
         if f.name != 'operator'}, operator=operator)
  settings = dataclasses.replace(settings, **{
      f'ilo_radius_{k}': tuple(map(float, config[f'ilo_radius_{k}']))
      for k in ('latent', 'noise', 'hidden')})
  preprocess = inputs.Preprocess(
      **{f.name: config[f.name] for f in dataclasses.fields(inputs.Preprocess)})
  return folder.RunSettings(
      inversion=settings, preprocess=preprocess,
      distributed=distributed_from_config(config.distributed),
      **{f.name: config[f.name] for f in dataclasses.fields(folder.RunSettings)
         if f.name not in ('inversion', 'preprocess', 'distributed')})


def main(config) -> int:
  return folder.run(settings_from_config(config))


if __name__ == '__main__':
  cli.run(main, 'configs/invert.py')
