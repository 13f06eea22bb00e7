"""Converts a StyleGAN2 checkpoint into a sphinx_jax generator directory.

  python convert_weights.py SRC OUT_DIR [--resolution R] [--overwrite]

See ported_weights/README.md for the supported sources.
"""

import argparse
import sys
from typing import Optional, Sequence

from sphinx_jax.convert import convert
from sphinx_jax.errors import SphinxError


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='convert_weights.py',
      description='Convert a StyleGAN2 checkpoint for sphinx_jax (torch-free; '
                  'nothing in the file is executed).')
  parser.add_argument(
      'src', help='checkpoint file: rosinality .pt (torch zip or legacy), '
      'NVIDIA stylegan2-ada-pytorch / stylegan3 network .pkl, or official '
      'TensorFlow StyleGAN2 .pkl (detected from the bytes)')
  parser.add_argument('out_dir', help='directory to write')
  parser.add_argument('--resolution', type=int, default=None,
                      help='truncate the generator to this output size')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace an existing out_dir')
  args = parser.parse_args(argv)
  try:
    g = convert(args.src, args.out_dir, args.resolution, args.overwrite)
  except SphinxError as e:
    print(f'error: {e}', file=sys.stderr)
    return e.exit_code
  print(f'wrote {args.out_dir}: {g.resolution}x{g.resolution} generator, '
        f'n_latent {g.n_latent}, w_dim {g.w_dim}, '
        f'{"stored" if g.noise_const is not None else "no"} noise maps')
  return 0


if __name__ == '__main__':
  sys.exit(main())
