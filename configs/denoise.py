"""Gaussian denoising: y = clip(x + sigma * n, -1, 1); by default G's image is
re-noised at every step (the official setting; fresh_noise=False: plain).

  python -m sphinx_jax.run --config configs/denoise.py \
      --config.generator=ported_weights/ffhq256 --config.inputs=images/ \
      --config.outdir=out/denoise [--config.key=value ...]

The inputs are clean images the observations are synthesised from (metrics
against them), or with --config.observation=given, the observations
themselves. README.md ("Restoration") describes every operator.
"""

from sphinx_jax import run_config


def get_config():
  return run_config.restoration('denoise', 'out/denoise', sigma=0.2)
