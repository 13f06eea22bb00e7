"""rosinality / SPHInX `.pt` checkpoints -> the canonical parameter tree.

Layout of `g_ema` (rosinality `model.py`): `style.{i}` mapping layers,
`input.input` constant, `conv1`/`to_rgb1` at 4x4, then per block k
(resolution 2^(k+3)) `convs.{2k}` (up-sampling), `convs.{2k+1}`, `to_rgbs.{k}`,
and optional `noises.noise_{j}` buffers. Everything is inferred from the
tensors' shapes; the rename table below must account for every key.
"""

import functools
import re

import numpy as np

from sphinx_jax.convert import rename, torch_files
from sphinx_jax.convert.source import Source
from sphinx_jax.errors import SphinxError
from sphinx_jax.models import stylegan2
from sphinx_jax.models.stylegan2 import Architecture

# Per-layer renames: torch suffix -> (canonical path, transform).
_CONV = {
    'conv.weight': ('weight', lambda w: w[0].transpose(2, 3, 1, 0)),
    'conv.modulation.weight': ('affine/kernel', np.transpose),
    'conv.modulation.bias': ('affine/bias', None),
    'noise.weight': ('noise_strength', lambda w: w.reshape(())),
    'activate.bias': ('bias', None),
}
# The up-sampling conv runs as a correlation: flip torch's kernel spatially.
_UP_CONV = {**_CONV, 'conv.weight': (
    'weight', lambda w: w[0].transpose(2, 3, 1, 0)[::-1, ::-1])}
_TO_RGB = {
    'conv.weight': ('weight', lambda w: w[0].transpose(2, 3, 1, 0)),
    'conv.modulation.weight': ('affine/kernel', np.transpose),
    'conv.modulation.bias': ('affine/bias', None),
    'bias': ('bias', lambda b: b.reshape(-1)),
}
# Fixed FIR buffers: recomputed, but a checkpoint with another filter is a
# different network and must not convert silently.
_FIR_BUFFERS = re.compile(r'(convs\.\d+\.conv\.blur|to_rgbs\.\d+\.upsample)\.kernel')


def infer_architecture(sd: dict[str, np.ndarray], source: str) -> Architecture:
  """Resolution, dims and channel table, from the tensors alone."""
  shape = functools.partial(rename.tensor_shape, sd, what='g_ema', source=source)
  if shape('to_rgb1.bias')[:2] != (1, 3):
    raise SphinxError(f'{source}: to_rgb1.bias has shape '
                      f'{shape("to_rgb1.bias")}: not a 3-channel '
                      'StyleGAN2 (a SWAGAN checkpoint is a different network)')
  n_mlp = len([k for k in sd if re.fullmatch(r'style\.\d+\.weight', k)])
  n_blocks = len([k for k in sd if re.fullmatch(r'to_rgbs\.\d+\.conv\.weight', k)])
  w_dim = shape('conv1.conv.modulation.weight')[1]
  z_dim = shape('style.1.weight')[1] if n_mlp else w_dim
  channels = [(4, shape('conv1.conv.weight')[1])]
  for k in range(n_blocks):
    channels.append((2**(k + 3), shape(f'convs.{2 * k}.conv.weight')[1]))
  return Architecture(resolution=2**(n_blocks + 2), z_dim=z_dim, w_dim=w_dim,
                      n_mlp=n_mlp, channels=tuple(channels))


def rename_table(arch: Architecture) -> rename.Table:
  """torch key -> (canonical parameter path, transform) for every parameter."""
  table = {}
  for i in range(arch.n_mlp):
    table[f'style.{i + 1}.weight'] = (f'mapping/fc{i}/kernel', np.transpose)
    table[f'style.{i + 1}.bias'] = (f'mapping/fc{i}/bias', None)
  table['input.input'] = ('synthesis/const', lambda c: c[0].transpose(1, 2, 0))

  def layer(prefix, dest, renames):
    for suffix, (path, fn) in renames.items():
      table[f'{prefix}.{suffix}'] = (f'synthesis/{dest}/{path}', fn)

  layer('conv1', 'b4/conv1', _CONV)
  layer('to_rgb1', 'b4/torgb', _TO_RGB)
  for k, res in enumerate(arch.resolutions[1:]):
    layer(f'convs.{2 * k}', f'b{res}/conv0', _UP_CONV)
    layer(f'convs.{2 * k + 1}', f'b{res}/conv1', _CONV)
    layer(f'to_rgbs.{k}', f'b{res}/torgb', _TO_RGB)
  return table


def read_rosinality(path: str, legacy: bool) -> Source:
  """Reads `g_ema` (and `latent_avg`) of a rosinality / SPHInX `.pt` file.

  Args:
    path: the torch file.
    legacy: whether it is the legacy stream rather than the zip container
      (only recorded as the format).
  """
  ckpt = torch_files.load(path)
  if isinstance(ckpt, dict) and 'g_ema' in ckpt:
    sd, w_avg = ckpt['g_ema'], ckpt.get('latent_avg')
  elif isinstance(ckpt, dict) and 'conv1.conv.weight' in ckpt:
    sd, w_avg = ckpt, None  # a bare g_ema state dict
  else:
    keys = ', '.join(map(str, list(ckpt)[:8])) if isinstance(ckpt, dict) else type(ckpt).__name__
    raise SphinxError(f'{path}: no g_ema generator in this torch file (top level: {keys})')
  if not isinstance(sd, dict):
    raise SphinxError(f'{path}: g_ema is a {type(sd).__name__}, not a state dict')
  arch = infer_architecture(sd, path)

  def fir_buffer(key, value):
    if not _FIR_BUFFERS.fullmatch(key):
      return False
    if not np.allclose(value, stylegan2.UP_FIR):
      raise SphinxError(f'{path}: {key} is not the [1, 3, 3, 1] filter this '
                        'generator implements')
    return True

  noise_keys = [f'noises.noise_{j}' for j in range(len(arch.noise_resolutions))]
  params, noise, _ = rename.generator_tensors(
      sd, arch, rename_table(arch), noise_keys, None, fir_buffer, 'g_ema', path)
  if w_avg is not None:
    w_avg = rename.w_avg_vector(w_avg, arch, 'latent_avg', path)
  return Source(arch, params, noise, w_avg,
                'rosinality-legacy' if legacy else 'rosinality-zip')
