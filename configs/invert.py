"""Invert a folder of images with SPHInX (or a baseline, via `method`).

  python -m sphinx_jax.run --config configs/invert.py \
      --config.generator=ported_weights/ffhq256 --config.inputs=images/ \
      --config.outdir=out/ffhq [--config.key=value ...]

Every field is documented in README.md ("Configuration").
"""

from ml_collections import config_dict


def get_config():
  c = config_dict.ConfigDict()
  c.generator = 'ported_weights/rosinality_small'
  c.inputs = 'samples'
  c.references = ''
  c.outdir = 'out/invert'
  c.method = 'sphinx'
  c.steps = 5000
  c.batch_size = 4
  c.seed = 0
  c.lr = config_dict.placeholder(float)
  c.lr_schedule = 'official'
  c.mse_weight = 1.0
  c.lpips_weight = 1.5
  c.lpips_min_resolution = 256
  c.num_vicinal = 16
  c.dtype = 'float32'
  c.remat = False
  c.save_every = 100
  c.checkpoint_every = 0
  c.steps_per_dispatch = 10
  # Multi-host runs (README, "Several devices and hosts").
  c.distributed = config_dict.ConfigDict()
  c.distributed.num_processes = 0  # 0: from the launcher's environment, else 1
  c.distributed.process_id = 0
  return c
