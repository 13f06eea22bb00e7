"""Inpainting: a hole (operator.mask image, or a random box of operator.box x
the resolution per image) is left out of the loss.

  python -m sphinx_jax.run --config configs/inpaint.py \
      --config.generator=ported_weights/ffhq256 --config.inputs=images/ \
      --config.outdir=out/inpaint [--config.key=value ...]

The inputs are clean images the observations are synthesised from (metrics
against them), or with --config.observation=given, the observations
themselves. README.md ("Restoration") describes every operator.
"""

from sphinx_jax import run_config


def get_config():
  return run_config.restoration('inpaint', 'out/inpaint', box=0.4)
