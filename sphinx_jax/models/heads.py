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
`convert.official_heads` reads the official state dicts into these trees.
"""

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from sphinx_jax.models.stylegan2 import fused_leaky_relu

Array = jax.Array


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
