"""Converts StyleGAN2 checkpoints into the sphinx_jax generator directory.

Nothing in a source file is executed: every pickle goes through
`safe_pickle.RestrictedUnpickler`. Sources: rosinality `.pt` (torch zip or
legacy), NVIDIA stylegan2-ada-pytorch / stylegan3-repo and official
TensorFlow network pickles, told apart by their bytes. The command
line is `convert_weights.py` at the repository's root.
"""

import dataclasses
import hashlib
import os
from typing import Any, Optional

import jax.numpy as jnp
import numpy as np

from sphinx_jax.convert import ada, pickle_scan, rosinality, tensorflow, torch_files
from sphinx_jax.convert.source import Source
from sphinx_jax.errors import SphinxError
from sphinx_jax.files.generator_dir import save_generator
from sphinx_jax.models.generator import Generator, sample_w
from sphinx_jax.models.stylegan2 import Architecture

W_AVG_SAMPLES = 10_000
# pickle_scan's kinds -> (reader, the network it reads).
_PICKLE_READERS = {pickle_scan.ADA: (ada.read_ada, 'G_ema'),
                   pickle_scan.TENSORFLOW: (tensorflow.read_tensorflow, 'Gs')}


def read_source(path: str) -> Source:
  """Detects the format from the file's bytes and reads the generator."""
  try:
    with open(path, 'rb') as f:
      head = f.read(64)
  except OSError as e:
    raise SphinxError(f'{path}: cannot read ({e.strerror})') from None
  if not head:
    raise SphinxError(f'{path}: empty file')
  if torch_files.is_torch_file(head):
    return rosinality.read_rosinality(
        path, legacy=head.startswith(torch_files.LEGACY_MAGIC))
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise SphinxError(f'{path}: cannot read ({e.strerror})') from None
  # NVIDIA pickles: the globals they name (an opcode walk, nothing executed).
  kind = pickle_scan.detect(data, path)
  if kind is None:
    raise SphinxError(f'{path}: {pickle_scan.describe_unknown(data)}')
  reader, what = _PICKLE_READERS[kind]
  try:
    return reader(data, path)
  except (TypeError, ValueError, KeyError, AttributeError, IndexError,
          RecursionError) as e:
    # Allowed but malformed records (a kwarg of the wrong type, a state that
    # is not a dict, a module that contains itself): one line, no traceback.
    raise SphinxError(f'{path}: malformed {what} network ({type(e).__name__}: '
                      f'{str(e).splitlines()[0] if str(e) else ""})') from None


def truncate(src: Source, resolution: int) -> Source:
  """Keeps the blocks up to `resolution`; the image is that block's skip output."""
  try:
    arch = src.arch.truncated(resolution)
  except ValueError as e:
    raise SphinxError(str(e)) from None
  synthesis = {k: v for k, v in src.params['synthesis'].items()
               if k == 'const' or int(k[1:]) <= resolution}
  n_noise = len(arch.noise_resolutions)
  return dataclasses.replace(
      src, arch=arch, params={**src.params, 'synthesis': synthesis},
      noise=None if src.noise is None else src.noise[:n_noise])


def estimate_w_avg(arch: Architecture, params: Any) -> np.ndarray:
  """Mean of mapping(z) over W_AVG_SAMPLES draws, for checkpoints without one."""
  g = Generator(arch=arch, params=params, w_avg=jnp.zeros(arch.w_dim))
  return np.asarray(sample_w(g, W_AVG_SAMPLES).mean(axis=0))


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def convert(src_path: str, out_dir: str, resolution: Optional[int] = None,
            overwrite: bool = False) -> Generator:
  """Reads `src_path`, optionally truncates it, and writes `out_dir`.

  The directory is written under a temporary name and renamed at the end
  (`save_generator`), so an interrupted conversion never leaves a
  half-written generator.
  """
  if os.path.exists(out_dir) and os.listdir(out_dir) and not overwrite:
    raise SphinxError(f'{out_dir}: exists and is not empty (pass --overwrite '
                      'to replace it)')
  src = read_source(src_path)
  info = {'source': {'file': os.path.basename(src_path), 'format': src.format,
                     'sha256': sha256(src_path),
                     'resolution': src.arch.resolution}}
  if resolution is not None and resolution != src.arch.resolution:
    src = truncate(src, resolution)
    info['truncated_from'] = info['source']['resolution']
  if src.w_avg is None:
    src.w_avg = estimate_w_avg(src.arch, src.params)
    info['w_avg'] = (f'estimated: mean of mapping(z) over {W_AVG_SAMPLES} '
                     'draws (seed 0); the checkpoint stores none')
  else:
    info['w_avg'] = 'checkpoint'
  g = Generator(arch=src.arch, params=src.params, w_avg=src.w_avg,
                noise_const=None if src.noise is None else tuple(src.noise))
  save_generator(g, out_dir, info)
  return g
