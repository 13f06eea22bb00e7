"""SPHInX and W+ optimisation, side by side, on the shipped digits prior.

  python -m sphinx_jax.demo --config configs/demo.py [--config.key=value ...]

The prior (ported_weights/digits32) is a StyleGAN2 trained here on
handwritten digits. The inputs (demo/) are held-out digits (in_domain) and
letters, shapes and photographs it never saw (out_of_domain). Each method
inverts every image with the same steps and loss; README.md shows the table
this prints.
"""

from ml_collections import config_dict

from sphinx_jax import run_config


def get_config():
  c = config_dict.ConfigDict()
  c.methods = 'sphinx,wplus'  # compared in this order, comma-separated
  c.outdir = 'out/demo'  # <outdir>/<method>/ and comparison.{png,csv}
  # What every method runs with (sphinx_jax.run's fields, README
  # "Configuration"): override as --config.run.<field>=<value>.
  c.run = run_config.base()
  c.run.generator = 'ported_weights/digits32'
  c.run.inputs = 'demo'
  c.run.steps = 1000  # --config.run.steps=5000: the official SPHInX setting
  c.run.batch_size = 12  # every demo image in one batch
  c.run.save_every = 100
  return c
