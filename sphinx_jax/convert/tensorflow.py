"""Official TensorFlow StyleGAN2 network pickles -> `Source`.

The pickle is a tuple `(G, D, Gs)` of `dnnlib.tflib.network.Network`, whose
real `__setstate__` `exec`s `build_module_src`. Here a stub keeps the state
dict. Only the moving-average generator `Gs` is read; its architecture comes
from the recorded `static_kwargs`, checked against the variables' shapes.
Progressive-growing, 'resnet', conditional and non-RGB networks are refused
with one line.
"""

import functools
import math
import re
from typing import Any

import numpy as np

from sphinx_jax.convert import rename, safe_pickle
from sphinx_jax.convert.source import Source
from sphinx_jax.errors import SphinxError
from sphinx_jax.models.stylegan2 import Architecture

# The global every network is pickled through.
MARKER = ('dnnlib.tflib.network', 'Network')


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
    MARKER: Network,
    ('dnnlib.util', 'EasyDict'): safe_pickle.EasyDict,
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


def tf_rename_table(arch: Architecture) -> rename.Table:
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


def read_tensorflow(data: bytes, source: str) -> Source:
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
  params, noise, w_avg = rename.generator_tensors(
      var, arch, tf_rename_table(arch), noise_keys, 'dlatent_avg',
      lambda key, _: key == 'lod',  # progressive-growing level, 0 for E/F
      'Gs', source)
  return Source(arch, params, noise, w_avg, 'tensorflow')
