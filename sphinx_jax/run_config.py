"""The config of `python -m sphinx_jax.run`, which every file in configs/
starts from (configs/invert.py as it is; the restoration tasks set an
operator). Every field is documented in README.md ("Configuration").
"""

from ml_collections import config_dict


def base() -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.generator = 'ported_weights/rosinality_small'
  c.inputs = 'samples'
  c.references = ''
  # How each file becomes the generator's square (README, "Inputs"); the
  # official code: 'squash', 'bilinear', False.
  c.resize = 'crop'  # or 'squash'
  c.interpolation = 'lanczos'  # nearest, box, bilinear, hamming, bicubic
  c.exif_transpose = True
  # How saved PNGs (and the metrics, computed on them) quantise to 8 bits:
  # 'round', or 'truncate' as the official make_image.
  c.quantize = 'round'
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
  # Method options (README, "Methods"): PTI's pivot, 'w' or 'sphinx', and
  # its locality regulariser; ILO's
  # l1 radii per stage around each stage's start (the last repeats; an
  # empty tuple: no projection).
  c.pivot = 'w'
  c.pti_locality = False
  c.ilo_radius_latent = ()
  c.ilo_radius_noise = ()
  c.ilo_radius_hidden = (1000.0, 1000.0, 6000.0)
  c.save_every = 100
  c.checkpoint_every = 0
  c.steps_per_dispatch = 10
  # Restoration (README, "Restoration"): the loss compares operator(G(...))
  # with the observation, synthesised from clean inputs or loaded as given.
  c.observation = 'synthesize'  # or 'given'
  c.operator = config_dict.ConfigDict()
  c.operator.name = 'identity'  # identity, denoise, cs, inpaint, sr, grayscale
  c.operator.sigma = 0.1  # denoise: noise std, in [-1, 1] image units
  c.operator.fresh_noise = True  # denoise: re-noise G's image every step
  c.operator.fraction = 0.01  # cs: measurements / values (R * R * 3)
  c.operator.mask = ''  # inpaint: mask image, white = observed ('' = box)
  c.operator.box = 0.4  # inpaint: side of the random hole / resolution
  c.operator.factor = 4  # sr: down-sampling factor
  c.operator.kernel = 'area'  # sr: 'area' or 'bicubic'
  # Multi-host runs under jax.distributed (README, "Several hosts"); unset
  # fields come from the environment (JAX_COORDINATOR_ADDRESS, Slurm, ...).
  c.distributed = config_dict.ConfigDict()
  c.distributed.coordinator_address = ''  # host:port of process 0
  c.distributed.num_processes = config_dict.placeholder(int)  # 1: one process
  c.distributed.process_id = config_dict.placeholder(int)
  c.distributed.initialization_timeout = 300  # seconds to wait for the others
  return c


def restoration(operator: str, outdir: str, **settings) -> config_dict.ConfigDict:
  """The base config with a forward operator and its settings."""
  c = base()
  c.outdir = outdir
  c.operator.name = operator
  c.operator.update(settings)
  return c
