"""SPHInX's official projection-head state dicts -> `models.heads` params.

The official Ps (`enc.*`, `decs.<i>.*`) and Pc (`conv1..3`, `relu1..2`)
state dicts, as `torch_files.load` returns them, go through the same
`rename.apply_table` as the generator checkpoints; the expected shapes come
from the Flax modules themselves. Ps's per-row decoders are stacked first,
since the Flax params hold them along a leading axis.
"""

import functools
import re
from typing import Any, Mapping

import jax
import numpy as np
from flax import linen as nn

from sphinx_jax.convert import rename
from sphinx_jax.errors import SphinxError
from sphinx_jax.models.heads import ContentProjection, StyleProjection

StateDict = Mapping[str, Any]

_WHAT = 'state dict'
# Indices into Ps's nn.Sequential stacks (1 is a ReLU in both).
_DECODER_LAYERS = ('0', '2', '3')
_STYLE_LAYERS = (('enc.0', 'enc0'), ('enc.2', 'enc1'), ('enc.3', 'enc2'),
                 *((f'decs.*.{layer}', f'dec{j}')
                   for j, layer in enumerate(_DECODER_LAYERS)))


def _linear_weight(w: np.ndarray) -> np.ndarray:
  return np.swapaxes(w, -1, -2)  # torch [..., out, in] -> [..., in, out]


def _conv_weight(w: np.ndarray) -> np.ndarray:
  return w.transpose(2, 3, 1, 0)  # torch OIHW -> HWIO


_STYLE_TABLE: rename.Table = {
    **{f'{t}.weight': (f'{f}/kernel', _linear_weight) for t, f in _STYLE_LAYERS},
    **{f'{t}.bias': (f'{f}/bias', None) for t, f in _STYLE_LAYERS},
}
_CONTENT_TABLE: rename.Table = {
    'conv1.weight': ('conv1/weight', _conv_weight),
    'relu1.bias': ('relu1/bias', None),
    'conv2.weight': ('conv2/weight', _conv_weight),
    'relu2.bias': ('relu2/bias', None),
    'conv3.weight': ('conv3/weight', _conv_weight),
}


def _stack_decoders(state_dict: StateDict,
                    source: str) -> tuple[dict[str, Any], int]:
  """`decs.<i>.<layer>.<name>` for i = 0..n-1 -> `decs.*.<layer>.<name>`.

  Returns:
    (the state dict with each decoder layer's n tensors stacked along a new
    leading axis and other keys as they were, n).
  """
  indices = {int(m.group(1)) for key in state_dict
             if (m := re.match(r'decs\.(\d+)\.', key))}
  # Decoders are numbered 0..n-1; a gap means a decoder went missing, and
  # checking here keeps a stray huge index from sizing the stacks.
  gap = min(set(range(len(indices) + 1)) - indices)
  if not indices or gap < max(indices):
    raise SphinxError(f'{source}: {_WHAT} lacks decs.{gap}.0.weight')
  n = len(indices)
  stacked = dict(state_dict)
  for layer in _DECODER_LAYERS:
    for name in ('weight', 'bias'):
      keys = [f'decs.{i}.{layer}.{name}' for i in range(n)]
      shapes = [rename.tensor_shape(state_dict, k, _WHAT, source) for k in keys]
      for key, shape in zip(keys, shapes):
        if shape != shapes[0]:
          raise SphinxError(f'{source}: {_WHAT} {key} has shape {shape}, '
                            f'unlike {keys[0]} {shapes[0]}')
        del stacked[key]
      stacked[f'decs.*.{layer}.{name}'] = np.stack(
          [state_dict[k] for k in keys])
  return stacked, n


def _params(module: nn.Module, input_shape: tuple[int, ...],
            state_dict: StateDict, table: rename.Table,
            source: str) -> dict[str, Any]:
  expected = jax.eval_shape(
      module.init, jax.random.key(0),
      jax.ShapeDtypeStruct(input_shape, np.float32))['params']
  return rename.apply_table(state_dict, table, expected, _WHAT, source)


# Both converters take the state dict as `torch_files.load` returns it (torch
# key -> numpy array) and `source`, the name errors give it; both raise a
# SphinxError for a missing, unexpected or mis-shaped key.


def style_head_params_from_torch(state_dict: StateDict,
                                 source: str = 'Ps') -> dict[str, Any]:
  """The official Ps (enc.*, decs.<i>.*) as `StyleProjection(n_latent,
  w_dim)` params: n_latent is the number of decoders
  (`params['dec2']['kernel'].shape[0]`), w_dim the input size
  (`params['enc0']['kernel'].shape[0]`)."""
  w_dim = rename.tensor_shape(state_dict, 'enc.0.weight', _WHAT, source,
                              ndim=2)[1]
  stacked, n_latent = _stack_decoders(state_dict, source)
  return _params(StyleProjection(n_latent, w_dim), (n_latent, w_dim), stacked,
                 _STYLE_TABLE, source)


def content_head_params_from_torch(state_dict: StateDict,
                                   source: str = 'Pc') -> dict[str, Any]:
  """The official Pc (conv1..3, relu1..2) as `ContentProjection(out_channels,
  in_channels)` params: `params['conv3']['weight'].shape[3]` and
  `params['conv1']['weight'].shape[2]` channels."""
  shape = functools.partial(rename.tensor_shape, state_dict, what=_WHAT,
                            source=source, ndim=4)
  in_channels, out_channels = shape('conv1.weight')[1], shape('conv3.weight')[0]
  return _params(ContentProjection(out_channels, in_channels),
                 (4, 4, in_channels), state_dict, _CONTENT_TABLE, source)
