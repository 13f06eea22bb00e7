"""Colourisation: y = the luma of x (BT.601); G restores the colour.

  python -m sphinx_jax.run --config configs/colorize.py \
      --config.generator=ported_weights/ffhq256 --config.inputs=images/ \
      --config.outdir=out/colorize [--config.key=value ...]

The inputs are clean images the observations are synthesised from (metrics
against them), or with --config.observation=given, the observations
themselves. README.md ("Restoration") describes every operator.
"""

from sphinx_jax import run_config


def get_config():
  return run_config.restoration('grayscale', 'out/colorize')
