"""NVIDIA's StyleGAN2 pickles -> the canonical parameter tree, running nothing.

Two families of network pickles, told apart by the globals they name:

- stylegan2-ada-pytorch and the stylegan3 repository's `networks_stylegan2`:
  a dict (`G`, `D`, `G_ema`, `augment_pipe`, `training_set_kwargs`) whose
  networks are `torch_utils.persistence` objects. Each is pickled as a call
  `_reconstruct_persistent_obj(meta)` that, loaded normally, `exec`s the
  embedded `meta['module_src']`. Here it only becomes a `PersistentObject`
  record; tensors are rebuilt from their bytes without torch.
- official TensorFlow pickles: a tuple `(G, D, Gs)` of
  `dnnlib.tflib.network.Network`, whose real `__setstate__` `exec`s
  `build_module_src`. Here a stub keeps the state dict.

Only the exponential-moving-average generator is read (`G_ema`, `Gs`; never
`G`). Its architecture comes from the recorded constructor arguments, checked
against the tensors' shapes; rename tables must account for every tensor.
What the StyleGAN2 'skip' generator cannot represent (StyleGAN3, 'resnet' and
'orig' architectures, conditional or non-RGB models, progressive-growing TF
networks) is refused with one line.
"""

import dataclasses
import functools
import io
import math
import pickletools
import re
from typing import Any, NamedTuple, Optional

import numpy as np

from sphinx_jax.convert import rename, safe_pickle, torch_files
from sphinx_jax.models import stylegan2
from sphinx_jax.errors import ForbiddenGlobal, SphinxError
from sphinx_jax.models.stylegan2 import Architecture

ADA = 'ada'
TENSORFLOW = 'tensorflow'
_ADA_MARKER = ('torch_utils.persistence', '_reconstruct_persistent_obj')
_TF_MARKER = ('dnnlib.tflib.network', 'Network')
# ada's filter buffers hold f = [1, 3, 3, 1] (x) [1, 3, 3, 1] / 64, no gain.
_ADA_FIR = stylegan2.UP_FIR / 4.0


class Converted(NamedTuple):
  """A generator in the canonical layout (see `convert.Source`)."""
  arch: Architecture
  params: dict[str, Any]
  noise: Optional[list[np.ndarray]]
  w_avg: Optional[np.ndarray]
  format: str


# --- Detection: a symbolic walk over the opcodes, nothing constructed --------

_STRING_OPS = frozenset({'STRING', 'BINSTRING', 'SHORT_BINSTRING', 'UNICODE',
                         'BINUNICODE', 'SHORT_BINUNICODE', 'BINUNICODE8'})
_MARK = object()
_OTHER = object()


def pickle_globals(data: bytes) -> tuple[list[Optional[tuple[str, str]]], bool]:
  """The GLOBAL / STACK_GLOBAL targets of the first pickle in `data`.

  `pickletools.genops` only decodes opcodes; a small symbolic stack (strings,
  marks, the memo) recovers STACK_GLOBAL's operands. Strings inside the
  pickle, such as embedded source code, are operands of other opcodes and so
  can never pass for a global.

  Returns:
    (targets in order, with None for a STACK_GLOBAL whose operands are not
    plain strings; whether the walk reached STOP without a decoding error).
  """
  stack, memo, found = [], {}, []
  try:
    for op, arg, _ in pickletools.genops(data):
      name = op.name
      if name in _STRING_OPS:
        stack.append(arg)
      elif name == 'GLOBAL':
        module, _, qualname = arg.partition(' ')
        found.append((module, qualname))
        stack.append(_OTHER)
      elif name == 'STACK_GLOBAL':
        qualname = stack.pop() if stack else _OTHER
        module = stack.pop() if stack else _OTHER
        both = isinstance(module, str) and isinstance(qualname, str)
        found.append((module, qualname) if both else None)
        stack.append(_OTHER)
      elif name in ('GET', 'BINGET', 'LONG_BINGET'):
        stack.append(memo.get(arg, _OTHER))
      elif name in ('PUT', 'BINPUT', 'LONG_BINPUT'):
        memo[arg] = stack[-1] if stack else _OTHER
      elif name == 'MEMOIZE':
        memo[len(memo)] = stack[-1] if stack else _OTHER
      elif name == 'MARK':
        stack.append(_MARK)
      elif name == 'STOP':
        return found, True
      else:
        before = op.stack_before
        if pickletools.markobject in before:
          while stack and stack.pop() is not _MARK:
            pass
          count = before.index(pickletools.markobject)
        else:
          count = len(before)
        del stack[max(len(stack) - count, 0):]
        stack.extend([_OTHER] * len(op.stack_after))
  except ValueError:  # genops: unknown opcode, or data ends mid-argument
    pass
  return found, False


def detect(data: bytes, source: str) -> Optional[str]:
  """ADA, TENSORFLOW or None (not an NVIDIA network pickle), from the bytes.

  A pickle of a known family that names any global outside that family's
  allowlist is refused here, before a single opcode is executed.
  """
  found, _ = pickle_globals(data)
  targets = {g for g in found if g is not None}
  if _ADA_MARKER in targets and _TF_MARKER not in targets:
    kind, allowed = ADA, ADA_GLOBALS
  elif _TF_MARKER in targets and _ADA_MARKER not in targets:
    kind, allowed = TENSORFLOW, TF_GLOBALS
  else:
    return None
  for module, name in _named(found):
    if (module, name) not in allowed:
      raise ForbiddenGlobal(
          f'{source}: refused to load: the pickle asks for global '
          f'{module}.{name}, which this format never holds (nothing was '
          'executed)')
  return kind


def _named(found: list[Optional[tuple[str, str]]]) -> list[tuple[str, str]]:
  return [g for g in found if g is not None]


def describe_unknown(data: bytes) -> str:
  """What an unrecognised file is not, for the one-line error."""
  found, complete = pickle_globals(data)
  if not complete and not found:
    return ('not a supported checkpoint (not a torch zip or legacy .pt file, '
            'and not a pickle)')
  names = ', '.join(f'{m}.{n}' for m, n in _named(found)[:3])
  return ('not a supported checkpoint (not a torch zip or legacy .pt file, nor '
          'an NVIDIA stylegan2-ada-pytorch / stylegan3 or TensorFlow network '
          f'pickle: {"it names " + names if names else "a plain pickle naming no globals"})')


# --- stylegan2-ada-pytorch / stylegan3: persistent objects as records --------

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


class EasyDict(dict):
  """Inert stand-in for `dnnlib.util.EasyDict` (a dict with attribute access)."""


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
    _ADA_MARKER: _reconstruct_persistent_obj,
    ('dnnlib.util', 'EasyDict'): EasyDict,
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

Table = rename.Table


def ada_rename_table(arch: Architecture) -> Table:
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


def read_ada(data: bytes, source: str) -> Converted:
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

  params, noise, w_avg = rename.convert_tensors(
      sd, arch, ada_rename_table(arch), _noise_keys(arch), 'mapping.w_avg',
      fir_buffer, 'G_ema', source)
  return Converted(arch, params, noise, w_avg, fmt)


# --- Official TensorFlow pickles ---------------------------------------------

class Network:
  """Stand-in for `dnnlib.tflib.network.Network`: keeps the pickled state.

  The real class's `__setstate__` `exec`s `build_module_src` and builds a
  TensorFlow graph; this one stores the dict and does nothing else.
  """

  def __setstate__(self, state):
    if not isinstance(state, dict):
      raise ValueError(f'Network state is a {type(state).__name__}, not a dict')
    self.state = state

  @property
  def name(self) -> str:
    return str(getattr(self, 'state', {}).get('name'))


TF_GLOBALS: safe_pickle.Allowlist = {
    **safe_pickle.CONTAINER_GLOBALS,
    **safe_pickle.NUMPY_GLOBALS,
    _TF_MARKER: Network,
    ('dnnlib.util', 'EasyDict'): EasyDict,
}


def load_tensorflow(data: bytes, source: str) -> Any:
  # latin1: what NVIDIA's own loader uses (Python 2 str payloads of arrays).
  return safe_pickle.load(data, TF_GLOBALS, source, encoding='latin1')


def tf_variables(net: Network, source: str, prefix: str = '') -> dict[str, np.ndarray]:
  """A network's own variables and its components', prefixed by component key."""
  if not hasattr(net, 'state'):
    raise SphinxError(f'{source}: network {prefix or "Gs"} has no pickled state')
  version = net.state.get('version')
  if version not in (2, 3, 4):
    raise SphinxError(f'{source}: network {net.name} has state version '
                      f'{version!r} (supported: 2, 3, 4)')
  out = {}
  for item in net.state.get('variables') or []:
    if not isinstance(item, tuple) or len(item) != 2:
      raise SphinxError(f'{source}: network {net.name} has a variables entry '
                        f'that is not a (name, value) pair')
    out[prefix + str(item[0])] = np.asarray(item[1])
  for key, comp in (net.state.get('components') or {}).items():
    if not isinstance(comp, Network):
      raise SphinxError(f'{source}: component {prefix}{key} of {net.name} is a '
                        f'{type(comp).__name__}, not a Network')
    out.update(tf_variables(comp, source, f'{prefix}{key}/'))
  return out


# G_main / G_mapping / G_synthesis_stylegan2 defaults for absent static_kwargs.
_TF_DEFAULTS = {
    'resolution': 1024, 'num_channels': 3, 'latent_size': 512,
    'dlatent_size': 512, 'label_size': 0, 'mapping_layers': 8,
    'mapping_lrmul': 0.01, 'fmap_base': 16 << 10, 'fmap_decay': 1.0,
    'fmap_min': 1, 'fmap_max': 512, 'architecture': 'skip',
    'nonlinearity': 'lrelu', 'mapping_nonlinearity': 'lrelu',
    'normalize_latents': True, 'conv_clamp': None,
}


def _tf_architecture(gs: Network, var: dict[str, np.ndarray], source: str
                     ) -> Architecture:
  kw = dict(_TF_DEFAULTS)
  for comp in (gs.state.get('components') or {}).values():
    kw.update(comp.state.get('static_kwargs') or {})
  kw.update(gs.state.get('static_kwargs') or {})

  lod = sorted(k for k in var if re.search(r'ToRGB_lod\d+', k))
  if lod:
    raise SphinxError(f'{source}: Gs has {lod[0]}: a progressive-growing network '
                      '(StyleGAN2 configs A-D or Gorig), not the skip generator '
                      '(configs E/F) this converter supports')
  synthesis = (gs.state.get('components') or {}).get('synthesis')
  func = synthesis.state.get('build_func_name') if synthesis is not None else None
  if gs.state.get('build_func_name') != 'G_main' or func != 'G_synthesis_stylegan2':
    raise SphinxError(f'{source}: Gs is built by {gs.state.get("build_func_name")} '
                      f'/ {func}, not G_main / G_synthesis_stylegan2 (a StyleGAN2 '
                      'config E/F generator)')
  label = [k for k in var if re.search(r'Label(Concat|Embed)', k)]
  if int(kw['label_size'] or 0) > 0 or label:
    raise SphinxError(f'{source}: Gs is a conditional generator (label_size '
                      f'{kw["label_size"]}): this StyleGAN2 has no label input')
  if int(kw['num_channels']) != 3:
    raise SphinxError(f'{source}: Gs has num_channels {kw["num_channels"]}: only '
                      'RGB (3-channel) generators are supported')
  skip = [k for k in var if re.search(r'/Skip/', k)]
  if kw['architecture'] != 'skip' or skip:
    name = 'resnet' if skip else kw['architecture']
    raise SphinxError(f'{source}: Gs uses the {name!r} architecture: only '
                      "'skip' (StyleGAN2 config E/F) is supported")
  for key, want in (('nonlinearity', 'lrelu'), ('mapping_nonlinearity', 'lrelu'),
                    ('normalize_latents', True)):
    if kw[key] != want:
      raise SphinxError(f'{source}: Gs has {key} {kw[key]!r}, expected {want!r}')
  if list(kw.get('resample_kernel') or [1, 3, 3, 1]) != [1, 3, 3, 1]:
    raise SphinxError(f'{source}: Gs resample_kernel is {kw["resample_kernel"]}, '
                      'not [1, 3, 3, 1]')

  shape = functools.partial(rename.tensor_shape, var, what='Gs', source=source)

  n_mlp = len([k for k in var if re.fullmatch(r'mapping/Dense\d+/weight', k)])
  if n_mlp == 0:
    raise SphinxError(f'{source}: Gs lacks mapping/Dense0/weight')
  z_dim = shape('mapping/Dense0/weight')[0]
  w_dim = shape(f'mapping/Dense{n_mlp - 1}/weight')[-1]
  sizes = [int(m.group(1)) for k in var
           if (m := re.fullmatch(r'synthesis/(\d+)x\1/.*', k))]
  resolution = max(sizes, default=0)
  for name, recorded, actual in (('mapping_layers', kw['mapping_layers'], n_mlp),
                                 ('latent_size', kw['latent_size'], z_dim),
                                 ('dlatent_size', kw['dlatent_size'], w_dim),
                                 ('resolution', kw['resolution'], resolution)):
    if int(recorded) != actual:
      raise SphinxError(f'{source}: Gs records {name} {recorded} but its '
                        f'variables give {actual}')
  for i in range(n_mlp - 1):
    if shape(f'mapping/Dense{i}/weight')[-1] != w_dim:
      raise SphinxError(f'{source}: Gs mapping/Dense{i} has '
                        f'{shape(f"mapping/Dense{i}/weight")[-1]} features, not '
                        f'dlatent_size {w_dim} (mapping_fmaps differs)')

  def nf(stage):
    return int(np.clip(int(kw['fmap_base'] / (2.0**(stage * kw['fmap_decay']))),
                       kw['fmap_min'], kw['fmap_max']))

  channels = []
  for r in [2**i for i in range(2, int(math.log2(max(resolution, 4))) + 1)]:
    key = 'synthesis/4x4/Conv/weight' if r == 4 else f'synthesis/{r}x{r}/Conv1/weight'
    c, want = shape(key)[-1], nf(int(math.log2(r)) - 1)
    if c != want:
      raise SphinxError(f'{source}: Gs {key} has {c} channels but fmap_base '
                        f'{kw["fmap_base"]} / fmap_max {kw["fmap_max"]} give {want}')
    channels.append((r, c))
  conv_clamp = kw['conv_clamp']
  return Architecture(
      resolution=resolution, z_dim=z_dim, w_dim=w_dim, n_mlp=n_mlp,
      channels=tuple(channels), lr_mul=float(kw['mapping_lrmul']),
      conv_clamp=None if conv_clamp is None else float(conv_clamp))


# TF conventions: HWIO kernels are already our correlation layout (Conv0_up
# included: TF flips it itself at run time), dense weights are [in, out], and
# the modulation bias gets its +1 at run time where torch stores it.
_TF_CONV = {
    'weight': ('weight', None),
    'mod_weight': ('affine/kernel', None),
    'mod_bias': ('affine/bias', lambda b: b + 1.0),
    'noise_strength': ('noise_strength', lambda w: w.reshape(())),
    'bias': ('bias', None),
}
_TF_TO_RGB = {k: v for k, v in _TF_CONV.items() if k != 'noise_strength'}


def tf_rename_table(arch: Architecture) -> Table:
  """Gs variable (`mapping/…`, `synthesis/…`) -> (canonical path, transform)."""
  table = {}
  for i in range(arch.n_mlp):
    table[f'mapping/Dense{i}/weight'] = (f'mapping/fc{i}/kernel', None)
    table[f'mapping/Dense{i}/bias'] = (f'mapping/fc{i}/bias', None)
  table['synthesis/4x4/Const/const'] = ('synthesis/const',
                                        lambda c: c[0].transpose(1, 2, 0))
  for r in arch.resolutions:
    layers = [('ToRGB', 'torgb', _TF_TO_RGB)]
    layers += ([('Conv', 'conv1', _TF_CONV)] if r == 4 else
               [('Conv0_up', 'conv0', _TF_CONV), ('Conv1', 'conv1', _TF_CONV)])
    for scope, layer, renames in layers:
      for suffix, (path, fn) in renames.items():
        table[f'synthesis/{r}x{r}/{scope}/{suffix}'] = (
            f'synthesis/b{r}/{layer}/{path}', fn)
  return table


def read_tensorflow(data: bytes, source: str) -> Converted:
  """Reads `Gs` (the third network) of an official TensorFlow pickle."""
  top = load_tensorflow(data, source)
  if (not isinstance(top, tuple) or len(top) != 3 or
      not all(isinstance(n, Network) for n in top)):
    raise SphinxError(f'{source}: not an official TensorFlow StyleGAN2 pickle '
                      '(expected a (G, D, Gs) tuple of networks)')
  gs = top[2]
  var = tf_variables(gs, source)
  arch = _tf_architecture(gs, var, source)
  noise_keys = [f'synthesis/noise{j}' for j in range(len(arch.noise_resolutions))]
  params, noise, w_avg = rename.convert_tensors(
      var, arch, tf_rename_table(arch), noise_keys, 'dlatent_avg',
      lambda key, _: key == 'lod',  # progressive-growing level, 0 for E/F
      'Gs', source)
  return Converted(arch, params, noise, w_avg, 'tensorflow')


def read(data: bytes, kind: str, source: str) -> Converted:
  """Reads a pickle `detect` classified as `kind` (ADA or TENSORFLOW)."""
  try:
    return read_ada(data, source) if kind == ADA else read_tensorflow(data, source)
  except (TypeError, ValueError, KeyError, AttributeError, IndexError,
          RecursionError) as e:
    # Allowed but malformed records (a kwarg of the wrong type, a state that
    # is not a dict, a module that contains itself): one line, no traceback.
    what = 'G_ema' if kind == ADA else 'Gs'
    raise SphinxError(f'{source}: malformed {what} network ({type(e).__name__}: '
                      f'{str(e).splitlines()[0] if str(e) else ""})') from None
