"""Trains a small StyleGAN2 prior on digits: `python -m sphinx_jax.train_prior`.

  python -m sphinx_jax.train_prior --config configs/train_prior.py [--config.key=value ...]

This module turns the config into `TrainSettings`, checking every field, and
trains (training/trainer.py: the recipe, checkpoints, export). Rerunning the
same command resumes from the latest checkpoint in `workdir` and ends with
exactly the result of an uninterrupted run.
"""

import math
import os

from sphinx_jax import cli
from sphinx_jax.errors import SphinxError, check_fields
from sphinx_jax.training.trainer import TrainSettings, train


def settings_from_config(config) -> TrainSettings:
  """Checks every field, before any work, and returns the typed settings."""
  res = config.resolution
  checks = (
      ('resolution', res >= 8 and math.log2(res) == int(math.log2(res)),
       'a power of two >= 8'),
      ('z_dim', config.z_dim >= 1, 'at least 1'),
      ('w_dim', config.w_dim >= 1, 'at least 1'),
      ('n_mlp', config.n_mlp >= 1, 'at least 1'),
      ('channel_base', config.channel_base >= res, 'at least resolution'),
      ('channel_max', config.channel_max >= 1, 'at least 1'),
      ('batch_size', config.batch_size >= 4 and config.batch_size % 4 == 0,
       'a positive multiple of 4'),
      ('steps', config.steps >= 1, 'at least 1'),
      ('g_lr', config.g_lr > 0, 'positive'),
      ('d_lr', config.d_lr > 0, 'positive'),
      ('r1_gamma', config.r1_gamma >= 0, 'non-negative'),
      ('r1_interval', config.r1_interval >= 1, 'at least 1'),
      ('style_mixing_prob', 0 <= config.style_mixing_prob <= 1, 'in [0, 1]'),
      ('ema_kimg', config.ema_kimg >= 0, 'non-negative'),
      ('ema_rampup', config.ema_rampup >= 0, 'non-negative (0: no ramp)'),
      ('workdir', bool(config.workdir), 'a directory'),
      ('export_dir', bool(config.export_dir), 'a directory'),
      ('checkpoint_every', config.checkpoint_every >= 0, 'non-negative'),
      ('keep_checkpoints', config.keep_checkpoints >= 1, 'at least 1'),
      ('export_every', config.export_every >= 0, 'non-negative'),
      ('log_every', config.log_every >= 1, 'at least 1'),
      ('score_samples', config.score_samples >= 1, 'at least 1'),
  )
  check_fields(config, checks)
  export = config.export_dir
  if (os.path.isdir(export) and os.listdir(export) and
      not os.path.exists(os.path.join(export, 'generator.json'))):
    raise SphinxError(f'config.export_dir = {export!r}: exists and is not a '
                      'generator directory (choose another)')
  return TrainSettings(**config.to_dict())


def main(config) -> int:
  train(settings_from_config(config))
  return 0


if __name__ == '__main__':
  cli.run(main, 'configs/train_prior.py')
