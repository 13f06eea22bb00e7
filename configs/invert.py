"""Invert a folder of images with SPHInX (or a baseline, via `method`).

  python -m sphinx_jax.run --config configs/invert.py \
      --config.generator=ported_weights/ffhq256 --config.inputs=images/ \
      --config.outdir=out/ffhq [--config.key=value ...]

Every field is documented in README.md ("Configuration").
"""

from sphinx_jax import run_config


def get_config():
  return run_config.base()
