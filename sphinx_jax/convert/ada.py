"""stylegan2-ada-pytorch and stylegan3-repo network pickles -> `Source`.

Both repositories (the latter's `networks_stylegan2`) pickle a dict (`G`,
`D`, `G_ema`, `augment_pipe`, `training_set_kwargs`) whose networks are
`torch_utils.persistence` objects. Each is pickled as a call
`_reconstruct_persistent_obj(meta)` that, loaded normally, `exec`s the
embedded `meta['module_src']`. Here it only becomes a `PersistentObject`
record; tensors are rebuilt from their bytes without torch.

Only the exponential-moving-average generator `G_ema` is read, never `G`.
Its architecture comes from the recorded constructor arguments, checked
against the tensors' shapes. What the StyleGAN2 'skip' generator cannot
represent (StyleGAN3, 'resnet' and 'orig' architectures, conditional or
non-RGB models) is refused with one line.
"""

import dataclasses
import functools
import io
import math
import re
from typing import Any

import numpy as np

from sphinx_jax.convert import rename, safe_pickle, torch_files
from sphinx_jax.convert.source import Source
from sphinx_jax.errors import SphinxError
from sphinx_jax.models import stylegan2
from sphinx_jax.models.stylegan2 import Architecture

# The global every persistent network is pickled through.
MARKER = ('torch_utils.persistence', '_reconstruct_persistent_obj')
# ada's filter buffers hold f = [1, 3, 3, 1] (x) [1, 3, 3, 1] / 64, no gain.
_ADA_FIR = stylegan2.UP_FIR / 4.0


@dataclasses.dataclass
class PersistentObject:
  """What `_reconstruct_persistent_obj(meta)` stands for here: inert data.

  Attributes:
    class_name: e.g. 'Generator', 'SynthesisBlock'.
    state: the module's `__dict__` (`_parameters`, `_buffers`, `_modules`,
      `_init_kwargs`, plain attributes).
    meta: the rest of `meta` (`type`, `version`, `module_src`) as text; the
      source is kept only so that tests can write pickles back. Never run.
  """
  class_name: str
  state: dict[str, Any]
  meta: dict[str, Any]

  @property
  def modules(self) -> dict[str, Any]:
    return self.state.get('_modules') or {}


def _reconstruct_persistent_obj(meta):
  if (not isinstance(meta, dict) or not isinstance(meta.get('state'), dict) or
      not isinstance(meta.get('class_name'), str)):
    raise ValueError('a persistent object without class_name and state')
  rest = {k: v for k, v in meta.items() if k not in ('class_name', 'state')}
  return PersistentObject(meta['class_name'], meta['state'], rest)


# Inside a storage payload there is only the storage's dtype tag.
_STORAGE_GLOBALS = {k: v for k, v in torch_files.TORCH_GLOBALS.items()
                    if k[0] == 'torch'}


def _load_from_bytes(payload, source: str = '<pickle>'):
  """Stand-in for `torch.storage._load_from_bytes`: a storage as a 1-D array.

  The payload is a complete `torch.save` of one storage: the legacy stream
  (what torch writes here) or, defensively, the zip container.
  """
  if not isinstance(payload, (bytes, bytearray)):
    raise ValueError(f'storage payload is a {type(payload).__name__}')
  payload = bytes(payload)
  if payload.startswith(torch_files.ZIP_MAGIC):
    storage = torch_files.load_zip(payload, source, _STORAGE_GLOBALS)
  else:
    storage = torch_files.load_legacy_stream(io.BytesIO(payload), source,
                                             _STORAGE_GLOBALS)
  if not isinstance(storage, np.ndarray) or storage.ndim != 1:
    raise SphinxError(f'{source}: a tensor storage payload holds a '
                      f'{type(storage).__name__}, not a storage')
  return storage


ADA_GLOBALS: safe_pickle.Allowlist = {
    **safe_pickle.CONTAINER_GLOBALS,
    **safe_pickle.NUMPY_GLOBALS,
    ('torch._utils', '_rebuild_tensor_v2'): torch_files.rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): torch_files.rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'):
        torch_files.rebuild_parameter,
    ('torch.storage', '_load_from_bytes'): _load_from_bytes,
    MARKER: _reconstruct_persistent_obj,
    ('dnnlib.util', 'EasyDict'): safe_pickle.EasyDict,
}


def load_ada(data: bytes, source: str) -> Any:
  """The pickle's top-level object, networks as `PersistentObject` records."""
  allowed = {**ADA_GLOBALS, ('torch.storage', '_load_from_bytes'):
             functools.partial(_load_from_bytes, source=source)}
  return safe_pickle.load(data, allowed, source)


def state_dict(module: PersistentObject, source: str) -> dict[str, np.ndarray]:
  """torch's `state_dict()` of a record tree: parameters, buffers, children."""
  out = {}

  def walk(rec, prefix):
    state = rec.state
    skip = state.get('_non_persistent_buffers_set') or set()
    tensors = list((state.get('_parameters') or {}).items())
    tensors += [(n, v) for n, v in (state.get('_buffers') or {}).items()
                if n not in skip]
    for name, value in tensors:
      if value is None:
        continue
      if not isinstance(value, np.ndarray):
        raise SphinxError(f'{source}: {prefix}{name} is a '
                          f'{type(value).__name__}, not a tensor')
      out[prefix + name] = value
    for name, child in rec.modules.items():
      if child is None:
        continue
      if not isinstance(child, PersistentObject):
        raise SphinxError(f'{source}: {prefix}{name} is a '
                          f'{type(child).__name__}, not a network module')
      walk(child, f'{prefix}{name}.')

  walk(module, '')
  return out


def _records(module: PersistentObject):
  yield module
  for child in module.modules.values():
    if isinstance(child, PersistentObject):
      yield from _records(child)


def _is_stylegan3(synthesis: PersistentObject) -> bool:
  """networks_stylegan3: an `input` (SynthesisInput) then `L{i}_{size}_{ch}`
  layers with affines but no conv0/conv1, where StyleGAN2 has `b{r}` blocks."""
  names = synthesis.modules
  return ('input' in names or
          any(re.fullmatch(r'L\d+_\d+_\d+', n) for n in names) or
          any(r.class_name == 'SynthesisInput' for r in _records(synthesis)))


# Generator.__init__'s positional parameters, for `_init_args`.
_GENERATOR_ARGS = ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels')


def _ada_architecture(g: PersistentObject, sd: dict[str, np.ndarray],
                      source: str) -> tuple[Architecture, str]:
  """Architecture from `_init_kwargs`, checked against the tensors' shapes."""
  kwargs = g.state.get('_init_kwargs') or {}
  if not isinstance(kwargs, dict):
    raise SphinxError(f'{source}: G_ema _init_kwargs is a {type(kwargs).__name__}')
  kwargs = dict(kwargs)
  for name, value in zip(_GENERATOR_ARGS, g.state.get('_init_args') or ()):
    kwargs.setdefault(name, value)
  # ada nests the synthesis arguments; the stylegan3 repository passes them flat.
  nested = 'synthesis_kwargs' in kwargs
  synth = dict(kwargs.get('synthesis_kwargs') or {}) if nested else kwargs
  mapping_kwargs = dict(kwargs.get('mapping_kwargs') or {})
  fmt = 'stylegan2-ada-pytorch' if nested else 'stylegan3-networks_stylegan2'

  def arg(name):
    value = kwargs.get(name, g.state.get(name))
    if value is None:
      raise SphinxError(f'{source}: G_ema records no constructor argument {name}')
    return value

  c_dim = int(arg('c_dim'))
  if c_dim > 0 or 'mapping.embed.weight' in sd:
    raise SphinxError(f'{source}: G_ema is a conditional generator (c_dim '
                      f'{c_dim}, mapping.embed): this StyleGAN2 has no label input')
  img_channels = int(arg('img_channels'))
  if img_channels != 3:
    raise SphinxError(f'{source}: G_ema has img_channels {img_channels}: only '
                      'RGB (3-channel) generators are supported')
  blocks = {n: b for n, b in g.modules['synthesis'].modules.items()
            if re.fullmatch(r'b\d+', n)}
  archs = {synth.get('architecture', 'skip')}
  archs |= {b.state.get('architecture', 'skip') for b in blocks.values()}
  if archs != {'skip'}:
    name = sorted(archs - {'skip'})[0]
    raise SphinxError(f'{source}: G_ema uses the {name!r} architecture: only '
                      "'skip' (StyleGAN2 config E/F) is supported")
  if list(synth.get('resample_filter', [1, 3, 3, 1])) != [1, 3, 3, 1]:
    raise SphinxError(f'{source}: G_ema resample_filter is '
                      f'{synth["resample_filter"]}, not [1, 3, 3, 1]')
  if mapping_kwargs.get('activation', 'lrelu') != 'lrelu':
    raise SphinxError(f'{source}: G_ema mapping activation is '
                      f'{mapping_kwargs["activation"]!r}, not lrelu')

  resolution = int(arg('img_resolution'))
  found = sorted(int(n[1:]) for n in blocks)
  want = [2**i for i in range(2, int(math.log2(max(resolution, 4))) + 1)]
  if found != want:
    raise SphinxError(f'{source}: G_ema img_resolution {resolution} but the '
                      f'synthesis network has blocks {found}')

  shape = functools.partial(rename.tensor_shape, sd, what='G_ema', source=source)

  n_mlp = len([k for k in sd if re.fullmatch(r'mapping\.fc\d+\.weight', k)])
  if n_mlp == 0:
    raise SphinxError(f'{source}: G_ema lacks mapping.fc0.weight')
  z_dim, w_dim = shape('mapping.fc0.weight')[1], shape(f'mapping.fc{n_mlp - 1}.weight')[0]
  mapping = g.modules['mapping'].state
  for name, recorded, actual in (
      ('mapping num_layers',
       mapping.get('num_layers', mapping_kwargs.get('num_layers', 8)), n_mlp),
      ('z_dim', arg('z_dim'), z_dim), ('w_dim', arg('w_dim'), w_dim)):
    if int(recorded) != actual:
      raise SphinxError(f'{source}: G_ema records {name} {recorded} but its '
                        f'mapping tensors give {actual}')
  base, cmax = int(synth.get('channel_base', 32768)), int(synth.get('channel_max', 512))
  channels = []
  for r in want:
    c = shape(f'synthesis.b{r}.conv1.weight')[0]
    if c != min(base // r, cmax):
      raise SphinxError(
          f'{source}: G_ema synthesis.b{r}.conv1.weight has {c} channels but '
          f'channel_base {base} / channel_max {cmax} give {min(base // r, cmax)}')
    channels.append((r, c))

  # What ran is the layers' own conv_clamp; the constructor argument's default
  # differs between the two repositories, so it is only a cross-check.
  clamps = {r.state.get('conv_clamp') for r in _records(g.modules['synthesis'])
            if r.class_name in ('SynthesisLayer', 'ToRGBLayer')}
  if len(clamps) > 1:
    raise SphinxError(f'{source}: G_ema layers use different conv_clamp values '
                      f'{sorted(map(str, clamps))}')
  conv_clamp = clamps.pop() if clamps else synth.get('conv_clamp')
  if 'conv_clamp' in synth and synth['conv_clamp'] != conv_clamp:
    raise SphinxError(f'{source}: G_ema records conv_clamp {synth["conv_clamp"]} '
                      f'but its layers use {conv_clamp}')
  lr_mul = float(mapping_kwargs.get('lr_multiplier', 0.01))
  fc0 = g.modules['mapping'].modules.get('fc0')
  gain = fc0.state.get('bias_gain', lr_mul) if isinstance(fc0, PersistentObject) else lr_mul
  if not math.isclose(float(gain), lr_mul):
    raise SphinxError(f'{source}: G_ema mapping lr_multiplier {lr_mul} but '
                      f'mapping.fc0 uses bias_gain {gain}')
  return Architecture(
      resolution=resolution, z_dim=z_dim, w_dim=w_dim, n_mlp=n_mlp,
      channels=tuple(channels), lr_mul=lr_mul,
      conv_clamp=None if conv_clamp is None else float(conv_clamp)), fmt


def _torch_conv(w):
  return w.transpose(2, 3, 1, 0)  # [O, I, kh, kw] -> HWIO


# Per-layer renames: ada suffix -> (canonical path, transform).
_ADA_CONV = {
    'weight': ('weight', _torch_conv),
    'affine.weight': ('affine/kernel', np.transpose),
    'affine.bias': ('affine/bias', None),  # stored with the +1 (init 1)
    'noise_strength': ('noise_strength', lambda w: w.reshape(())),
    'bias': ('bias', None),
}
# The up-sampling conv runs as a correlation: flip torch's kernel spatially
# (ada, like rosinality, hands it unflipped to conv_transpose2d).
_ADA_UP_CONV = {**_ADA_CONV,
                'weight': ('weight', lambda w: _torch_conv(w)[::-1, ::-1])}
_ADA_TO_RGB = {
    'weight': ('weight', _torch_conv),
    'affine.weight': ('affine/kernel', np.transpose),
    'affine.bias': ('affine/bias', None),
    'bias': ('bias', None),
}
_ADA_FIR_BUFFERS = re.compile(r'synthesis\.b\d+(\.conv[01])?\.resample_filter')

def ada_rename_table(arch: Architecture) -> rename.Table:
  """G_ema state-dict key -> (canonical parameter path, transform)."""
  table = {}
  for i in range(arch.n_mlp):
    table[f'mapping.fc{i}.weight'] = (f'mapping/fc{i}/kernel', np.transpose)
    table[f'mapping.fc{i}.bias'] = (f'mapping/fc{i}/bias', None)
  table['synthesis.b4.const'] = ('synthesis/const', lambda c: c.transpose(1, 2, 0))
  for r in arch.resolutions:
    layers = [('torgb', _ADA_TO_RGB), ('conv1', _ADA_CONV)]
    if r > 4:
      layers.append(('conv0', _ADA_UP_CONV))
    for layer, renames in layers:
      for suffix, (path, fn) in renames.items():
        table[f'synthesis.b{r}.{layer}.{suffix}'] = (
            f'synthesis/b{r}/{layer}/{path}', fn)
  return table


def _noise_keys(arch: Architecture) -> list[str]:
  """ada noise_const buffers in rosinality order (4x4, then two per r)."""
  keys = ['synthesis.b4.conv1.noise_const']
  for r in arch.resolutions[1:]:
    keys += [f'synthesis.b{r}.conv0.noise_const', f'synthesis.b{r}.conv1.noise_const']
  return keys


def read_ada(data: bytes, source: str) -> Source:
  """Reads `G_ema` of a stylegan2-ada-pytorch / stylegan3-repo pickle."""
  top = load_ada(data, source)
  if not isinstance(top, dict) or 'G_ema' not in top:
    keys = ', '.join(map(str, list(top)[:8])) if isinstance(top, dict) else type(top).__name__
    raise SphinxError(f'{source}: no G_ema generator in this pickle (top level: {keys})')
  g = top['G_ema']
  if not isinstance(g, PersistentObject) or g.class_name != 'Generator':
    name = g.class_name if isinstance(g, PersistentObject) else type(g).__name__
    raise SphinxError(f'{source}: G_ema is a {name}, not a Generator network')
  synthesis = g.modules.get('synthesis')
  if not isinstance(synthesis, PersistentObject) or 'mapping' not in g.modules:
    raise SphinxError(f'{source}: G_ema lacks its synthesis or mapping network')
  if _is_stylegan3(synthesis):
    raise SphinxError(f'{source}: G_ema is a StyleGAN3 generator '
                      '(networks_stylegan3: SynthesisInput and L*_ layers), which '
                      'this StyleGAN2 generator cannot represent')
  if 'b4' not in synthesis.modules:
    raise SphinxError(f'{source}: G_ema synthesis network has no b4 block: not a '
                      'StyleGAN2 generator')
  sd = state_dict(g, source)
  arch, fmt = _ada_architecture(g, sd, source)

  def fir_buffer(key, value):
    if not _ADA_FIR_BUFFERS.fullmatch(key):
      return False
    if value.shape != (4, 4) or not np.allclose(value, _ADA_FIR):
      raise SphinxError(f'{source}: G_ema {key} is not the [1, 3, 3, 1] filter '
                        'this generator implements')
    return True

  params, noise, w_avg = rename.generator_tensors(
      sd, arch, ada_rename_table(arch), _noise_keys(arch), 'mapping.w_avg',
      fir_buffer, 'G_ema', source)
  return Source(arch, params, noise, w_avg, fmt)
