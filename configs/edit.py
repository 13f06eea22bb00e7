"""Edit from inverted codes: a direction, an interpolation, or a new attribute.

  python -m sphinx_jax.edit --config configs/edit.py --config.mode=direction \
      --config.codes=out/invert/astronaut/codes --config.direction=age.npy \
      [--config.strengths=-3,-1.5,0,1.5,3] [--config.rows=0,1,2,3]
  python -m sphinx_jax.edit --config configs/edit.py --config.mode=interpolate \
      --config.codes=out/invert/astronaut/codes \
      --config.codes_b=out/invert/cat/codes
  python -m sphinx_jax.edit --config configs/edit.py --config.mode=learn \
      --config.generator=ported_weights/ffhq256 \
      --config.image=samples/astronaut.jpg --config.levels=0,22.5,45

Every field is documented in docs/editing.md. Lists are comma-separated
strings, so that they override like any other field.
"""

from ml_collections import config_dict


def get_config():
  c = config_dict.ConfigDict()
  c.mode = 'direction'  # direction, interpolate or learn
  c.codes = 'out/invert/astronaut/codes'  # an inversion's codes/ (A), or an
  #                                         official SPHInX result .pt
  c.codes_b = 'out/invert/cat/codes'  # interpolate: the other end (B)
  c.generator = ''  # '': the one recorded in the codes (learn, .pt: required)
  c.outdir = 'out/edit'  # frames, base.png, edit.gif, edit.mp4, edit.json
  # direction
  c.direction = ''  # a .npy of shape (w_dim,) or (n_latent, w_dim)
  c.strengths = '-3,-1.5,0,1.5,3'  # alpha of each frame, in order
  c.rows = ''  # W+ rows to edit, e.g. '0,1,2,3'; '': all
  # interpolate and learn
  c.frames = 9  # interpolate: frames, both ends included; learn: walk frames
  c.ms_per_frame = 100  # GIF frame duration; the MP4 runs at 1000/this fps
  # learn: K targets T(image, a_k), one per level
  c.image = 'samples/astronaut.jpg'  # the one input image
  c.transform = 'rotation'  # rotation (degrees), brightness (factor), zoom
  c.levels = '0,22.5,45'  # a_0..a_{K-1}; a_0 the identity (0, or 1 for
  #                         brightness and zoom)
  c.resample = 'bilinear'  # rotation, zoom: bilinear, or nearest (official)
  c.fill = -1.0  # rotation, zoom: uncovered pixels; -1 black, 0 grey (official)
  c.steps = 5000  # optimisation steps
  c.seed = 0  # seeds the initialisation and every draw of z+ and s (also a
  #             .pt's mean codes)
  c.lr = 1e-3  # Adam's learning rate (the official SPHInX rate)
  c.lr_schedule = 'official'  # official: ramp on Ps only; all: every group
  c.mse_weight = 1.0  # weight of the MSE term
  c.lpips_weight = 1.5  # weight of the LPIPS term
  c.lpips_min_resolution = 256  # LPIPS only from this resolution (0: always)
  c.penalty_weight = 0.5  # weight of the monotonic penalty on the alphas
  c.num_vicinal = 16  # draws averaged into the W+ and content of the walk
  #                     (and of a .pt's codes)
  c.walk_extent = 1.5  # the walk goes from alpha 0 to this x the last alpha
  c.walk = 'mean'  # mean: mean codes, `frames` alphas up to walk_extent;
  #                  official: one draw, the learned alphas and midpoints
  return c
