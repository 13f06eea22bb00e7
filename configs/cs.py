"""Compressed sensing: partial circulant measurements of 1% of the values
(operator.fraction), the loss in measurement space.

  python -m sphinx_jax.run --config configs/cs.py \
      --config.generator=ported_weights/ffhq256 --config.inputs=images/ \
      --config.outdir=out/cs [--config.key=value ...]

The inputs are clean images the observations are synthesised from (metrics
against them), or with --config.observation=given, the observations
themselves. README.md ("Restoration") describes every operator.
"""

from sphinx_jax import run_config


def get_config():
  return run_config.restoration('cs', 'out/cs', fraction=0.01)
