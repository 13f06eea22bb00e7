"""SPHInX against other methods on one prior: `python -m sphinx_jax.demo`.

  python -m sphinx_jax.demo --config configs/demo.py [--config.key=value ...]

This module turns the config into `CompareSettings` (the shared run checked
as `python -m sphinx_jax.run` checks it) and runs `jobs.comparison.compare`.
"""

from sphinx_jax import cli, run
from sphinx_jax.errors import SphinxError
from sphinx_jax.inversion import methods as methods_lib
from sphinx_jax.jobs import comparison


def settings_from_config(config) -> comparison.CompareSettings:
  methods = tuple(m.strip() for m in config.methods.split(',') if m.strip())
  if (not methods or len(set(methods)) != len(methods) or
      not set(methods) <= set(methods_lib.METHODS)):
    raise SphinxError(f'config.methods = {config.methods!r}: must name '
                      f'distinct methods of {", ".join(methods_lib.METHODS)}, '
                      'comma-separated')
  return comparison.CompareSettings(methods=methods, outdir=config.outdir,
                                    run=run.settings_from_config(config.run))


def main(config) -> int:
  return comparison.compare(settings_from_config(config))


if __name__ == '__main__':
  cli.run(main, 'configs/demo.py')
