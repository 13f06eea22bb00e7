"""SPHInX's projection heads as Flax linen modules, NHWC.

The heads replace the generator's inputs during inversion: `StyleProjection`
(Ps) maps a fresh z+ draw to W+, `ContentProjection` (Pc) maps a fresh 4x4
noise tensor to the content fed in place of the learned constant. Parameter
trees (D = w_dim, n = n_latent, C = out_channels, I = in_channels):

  StyleProjection:   enc0/{kernel [D, D/2], bias [D/2]},
                     enc1/{kernel [D/2, D/4], bias [D/4]},
                     enc2/{kernel [D/4, 32], bias [32]},
                     dec0/{kernel [n, 32, 64], bias [n, 64]},
                     dec1/{kernel [n, 64, 128], bias [n, 128]},
                     dec2/{kernel [n, 128, D], bias [n, D]}
  ContentProjection: conv1/weight [1, 1, I, 32], relu1/bias [32],
                     conv2/weight [1, 1, 32, 128], relu2/bias [128],
                     conv3/weight [1, 1, 128, C]

The n per-row decoders are stacked along a leading axis so that one einsum
runs them all. Pc's weights are stored unscaled, as the official state dict
holds them; the equalized-learning-rate constant is applied at run time.
"""

import math
import re
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sphinx_jax.errors import SphinxError
from sphinx_jax.models.stylegan2 import fused_leaky_relu

Array = jax.Array
StateDict = Mapping[str, Any]
# torch key -> (flax parameter path, decoder index or None, the axes that
# transpose the torch tensor into the flax layout).
RenameTable = dict[str, tuple[str, Optional[int], tuple[int, ...]]]

_ENCODER = (('enc.0', 'enc0'), ('enc.2', 'enc1'), ('enc.3', 'enc2'))
_DECODER = (('0', 'dec0'), ('2', 'dec1'), ('3', 'dec2'))
_LINEAR_WEIGHT = (1, 0)  # torch [out, in] -> [in, out]
_VECTOR = (0,)
_CONV_WEIGHT = (2, 3, 1, 0)  # torch OIHW -> HWIO


def _torch_linear_init(fan_in: int) -> nn.initializers.Initializer:
  """PyTorch's nn.Linear default for weight and bias: U(+-1/sqrt(fan_in)).

  (kaiming_uniform with a = sqrt(5) reduces to the same bound as the bias.)
  """
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class TorchLinear(nn.Module):
  """x @ kernel + bias, initialised like PyTorch's nn.Linear.

  Attributes:
    features: output size.
    copies: if set, `copies` independent layers with stacked parameters;
      copy i is applied to row i of the input's second-to-last axis.
  """
  features: int
  copies: Optional[int] = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    fan_in = x.shape[-1]
    stack = () if self.copies is None else (self.copies,)
    init = _torch_linear_init(fan_in)
    kernel = self.param('kernel', init, stack + (fan_in, self.features))
    bias = self.param('bias', init, stack + (self.features,))
    if self.copies is None:
      return x @ kernel + bias
    return jnp.einsum('...ni,nio->...no', x, kernel) + bias


class StyleProjection(nn.Module):
  """Ps: z+ (..., n_latent, w_dim) -> W+ (..., n_latent, w_dim).

  A shared encoder squeezes every row to 32 values; row i's own decoder
  expands it back, so the rows of W+ can differ although z+'s rows are i.i.d.
  """
  n_latent: int
  w_dim: int

  @nn.compact
  def __call__(self, zplus: Array) -> Array:
    if zplus.shape[-2:] != (self.n_latent, self.w_dim):
      raise ValueError(f'StyleProjection expects z+ of shape (..., '
                       f'{self.n_latent}, {self.w_dim}), got {zplus.shape}')
    d, n = self.w_dim, self.n_latent
    x = nn.relu(TorchLinear(d // 2, name='enc0')(zplus))
    x = TorchLinear(d // 4, name='enc1')(x)
    x = TorchLinear(32, name='enc2')(x)
    x = nn.relu(TorchLinear(64, copies=n, name='dec0')(x))
    x = TorchLinear(128, copies=n, name='dec1')(x)
    return TorchLinear(d, copies=n, name='dec2')(x)


class EqualConv1x1(nn.Module):
  """1x1 conv without bias, weight ~ N(0, 1) scaled by 1/sqrt(fan_in)."""
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    fan_in = x.shape[-1]
    weight = self.param('weight', nn.initializers.normal(1.0),
                        (1, 1, fan_in, self.features))
    return x @ (weight[0, 0] * (1.0 / math.sqrt(fan_in)))


class FusedLeakyReLU(nn.Module):
  """leaky_relu(x + bias, 0.2) * sqrt(2), bias initialised to 0."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    bias = self.param('bias', nn.initializers.zeros, (x.shape[-1],))
    return fused_leaky_relu(x, bias)


class ContentProjection(nn.Module):
  """Pc: s (..., 4, 4, in_channels) -> content (..., 4, 4, out_channels)."""
  out_channels: int
  in_channels: int = 8

  @nn.compact
  def __call__(self, s: Array) -> Array:
    if s.shape[-1] != self.in_channels:
      raise ValueError(f'ContentProjection expects {self.in_channels} input '
                       f'channels, got shape {s.shape}')
    x = FusedLeakyReLU(name='relu1')(EqualConv1x1(32, name='conv1')(s))
    x = FusedLeakyReLU(name='relu2')(EqualConv1x1(128, name='conv2')(x))
    return EqualConv1x1(self.out_channels, name='conv3')(x)


def _dim(state_dict: StateDict, key: str, ndim: int, axis: int,
         source: str) -> int:
  """One size read from a tensor, which must exist and have `ndim` axes."""
  if key not in state_dict:
    raise SphinxError(f'{source}: missing key {key!r}')
  shape = np.shape(state_dict[key])
  if len(shape) != ndim:
    raise SphinxError(f'{source}: key {key!r} has shape {shape}, expected '
                      f'{ndim} dimensions')
  return shape[axis]


def _convert(module: nn.Module, example: jax.ShapeDtypeStruct,
             state_dict: StateDict, table: RenameTable,
             source: str) -> dict[str, Any]:
  """Fills `module`'s parameters through `table`, NVIDIA legacy.py style.

  Every key must be in the table, every table entry must be in the state
  dict with the shape the module expects, and every parameter element must
  end up written: anything else raises a SphinxError naming the key.
  """
  for key in state_dict:
    if key not in table:
      raise SphinxError(f'{source}: unexpected key {key!r}')
  expected = traverse_util.flatten_dict(
      jax.eval_shape(module.init, jax.random.key(0), example)['params'],
      sep='/')
  for key, (path, index, axes) in table.items():
    if key not in state_dict:
      raise SphinxError(f'{source}: missing key {key!r}')
    shape = expected[path].shape[0 if index is None else 1:]
    want = tuple(shape[a] for a in np.argsort(axes))
    got = np.shape(state_dict[key])
    if got != want:
      raise SphinxError(f'{source}: key {key!r} has shape {got}, expected '
                        f'{want}')
  params = {path: np.zeros(s.shape, s.dtype) for path, s in expected.items()}
  filled = {path: np.zeros(s.shape, bool) for path, s in expected.items()}
  for key, (path, index, axes) in table.items():
    where = ... if index is None else index
    params[path][where] = np.transpose(state_dict[key], axes)
    filled[path][where] = True
  for path, done in filled.items():
    if not done.all():
      raise SphinxError(f'{source}: no key fills parameter {path!r}')
  return traverse_util.unflatten_dict(
      {path: jnp.asarray(value) for path, value in params.items()}, sep='/')


def style_head_params_from_torch(state_dict: StateDict,
                                 source: str = 'Ps') -> dict[str, Any]:
  """Converts the official Ps state dict (enc.*, decs.<i>.*) to params.

  Args:
    state_dict: torch key -> numpy array, as `torch_files.load` returns it.
    source: names the state dict in error messages.

  Returns:
    `StyleProjection(n_latent, w_dim)` params; n_latent is the number of
    decoders (`params['dec2']['kernel'].shape[0]`), w_dim the input size
    (`params['enc0']['kernel'].shape[0]`).

  Raises:
    SphinxError: a key is missing, unexpected or mis-shaped.
  """
  w_dim = _dim(state_dict, 'enc.0.weight', 2, 1, source)
  indices = {int(m.group(1)) for key in state_dict
             if (m := re.match(r'decs\.(\d+)\.', key))}
  if not indices:
    raise SphinxError(f"{source}: missing key 'decs.0.0.weight' (no decoder)")
  # Decoders are numbered 0..n-1; a gap means a decoder went missing, and
  # checking here keeps a stray huge index from sizing the rename table.
  gap = min(set(range(len(indices) + 1)) - indices)
  if gap < max(indices):
    key = f'decs.{gap}.0.weight'
    raise SphinxError(f'{source}: missing key {key!r}')
  n_latent = len(indices)

  table: RenameTable = {}
  for torch_name, flax_name in _ENCODER:
    table[f'{torch_name}.weight'] = (f'{flax_name}/kernel', None,
                                     _LINEAR_WEIGHT)
    table[f'{torch_name}.bias'] = (f'{flax_name}/bias', None, _VECTOR)
  for i in range(n_latent):
    for layer, flax_name in _DECODER:
      table[f'decs.{i}.{layer}.weight'] = (f'{flax_name}/kernel', i,
                                           _LINEAR_WEIGHT)
      table[f'decs.{i}.{layer}.bias'] = (f'{flax_name}/bias', i, _VECTOR)
  example = jax.ShapeDtypeStruct((n_latent, w_dim), jnp.float32)
  return _convert(StyleProjection(n_latent, w_dim), example, state_dict,
                  table, source)


def content_head_params_from_torch(state_dict: StateDict,
                                   source: str = 'Pc') -> dict[str, Any]:
  """Converts the official Pc state dict (conv1..3, relu1..2) to params.

  Args:
    state_dict: torch key -> numpy array, as `torch_files.load` returns it.
    source: names the state dict in error messages.

  Returns:
    `ContentProjection(out_channels, in_channels)` params; the channel
    counts are `params['conv3']['weight'].shape[3]` and
    `params['conv1']['weight'].shape[2]`.

  Raises:
    SphinxError: a key is missing, unexpected or mis-shaped.
  """
  in_channels = _dim(state_dict, 'conv1.weight', 4, 1, source)
  out_channels = _dim(state_dict, 'conv3.weight', 4, 0, source)
  table: RenameTable = {
      'conv1.weight': ('conv1/weight', None, _CONV_WEIGHT),
      'relu1.bias': ('relu1/bias', None, _VECTOR),
      'conv2.weight': ('conv2/weight', None, _CONV_WEIGHT),
      'relu2.bias': ('relu2/bias', None, _VECTOR),
      'conv3.weight': ('conv3/weight', None, _CONV_WEIGHT),
  }
  example = jax.ShapeDtypeStruct((4, 4, in_channels), jnp.float32)
  return _convert(ContentProjection(out_channels, in_channels), example,
                  state_dict, table, source)
