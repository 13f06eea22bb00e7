"""Train a small StyleGAN2 prior on scikit-learn's handwritten digits.

  python -m sphinx_jax.train_prior --config configs/train_prior.py [--config.key=value ...]

Rerunning the same command resumes from the latest checkpoint in `workdir`.
README.md ("Training a prior") describes the run.
"""

from ml_collections import config_dict


def get_config():
  c = config_dict.ConfigDict()
  # Generator (exactly stylegan2.StyleGAN2) and discriminator shape.
  c.resolution = 32  # image size: a power of two >= 8 (the digits are 8x8)
  c.z_dim = 128  # latent z size
  c.w_dim = 128  # style w size
  c.n_mlp = 4  # mapping layers
  # Channels at resolution r: min(channel_base // r, channel_max), as NVIDIA's
  # table, for G and D. The defaults give 64/64/32/16 at 4/8/16/32 px: ample
  # for 8x8 digits, and a step is 3x faster on a CPU than with 128/128/64/32.
  c.channel_base = 512
  c.channel_max = 64
  # Optimisation.
  c.batch_size = 32  # images per step (a multiple of 4, the minibatch-std group)
  c.steps = 15000  # total steps (D and G update once each per step)
  c.g_lr = 0.0025  # Adam lr of G (betas 0, 0.99)
  c.d_lr = 0.0025  # Adam lr of D before the lazy-R1 adjustment
  # R1 weight gamma (penalty gamma / 2 * |grad D(real)|^2). 1 keeps D and G
  # balanced on these 1,797 images; 0.01 let D win and G collapse early.
  c.r1_gamma = 1.0
  c.r1_interval = 16  # D steps between R1 updates (lazy regularisation)
  c.style_mixing_prob = 0.9  # probability a batch mixes two w at a random layer
  c.ema_kimg = 10.0  # half-life of the generator's EMA, in thousands of images
  c.ema_rampup = 0.05  # EMA half-life at most this x images seen (0: no ramp)
  c.seed = 0  # seeds every draw, with the step
  # Where things go and how often.
  c.workdir = 'out/train_prior'  # checkpoints (resume from here)
  c.export_dir = 'ported_weights/digits32'  # the EMA generator, for load_generator
  c.checkpoint_every = 1000  # steps between checkpoints (0: only at the end)
  c.keep_checkpoints = 3  # checkpoints kept in workdir
  c.export_every = 5000  # steps between exports (0: only at the end)
  c.log_every = 500  # steps between log lines with the sample score
  c.score_samples = 500  # EMA-generator samples scored per log line
  return c
