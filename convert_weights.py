"""Converts a StyleGAN2 checkpoint into a sphinx_jax generator directory.

  python convert_weights.py SRC OUT_DIR [--resolution R] [--overwrite]

See ported_weights/README.md for the supported sources.
"""

import sys

from sphinx_jax.convert import main

if __name__ == '__main__':
  sys.exit(main())
