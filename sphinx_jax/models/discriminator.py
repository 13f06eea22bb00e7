"""The StyleGAN2 discriminator (residual architecture) as Flax linen, NHWC.

NVIDIA's stylegan2-ada-pytorch `Discriminator` with architecture='resnet' and
no conditioning: a 1x1 FromRGB at the top resolution, one residual block per
resolution down to 8 (two 3x3 convs, the second down-sampling, plus a 1x1
down-sampling skip; their sum scaled by 1/sqrt(2)), and at 4x4 the minibatch
standard deviation, a 3x3 conv and two dense layers. Down-sampling blurs with
the [1, 3, 3, 1] filter, then convolves with stride 2. As in the generator,
parameters are stored unscaled and the equalized-learning-rate constants are
applied at run time.
"""

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sphinx_jax.models.stylegan2 import SQRT2, EqualDense, fused_leaky_relu

Array = jax.Array

_TAPS = np.array([1.0, 3.0, 3.0, 1.0]) / 8.0  # per axis: the 2-D filter sums to 1


def _blur(x: Array, pad: int) -> Array:
  """Pads by `pad` and correlates every channel with the separable filter."""
  x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  h = x.shape[1] - 3
  x = sum(float(t) * x[:, i:i + h] for i, t in enumerate(_TAPS))
  w = x.shape[2] - 3
  return sum(float(t) * x[:, :, i:i + w] for i, t in enumerate(_TAPS))


class EqualConv(nn.Module):
  """k x k conv with equalized learning rate, optionally 2x down-sampling.

  Attributes:
    features: output channels.
    kernel: kernel size (1 or 3).
    down: blur, then convolve with stride 2 (halves the size).
    use_bias: add a bias.
    activate: apply the fused leaky ReLU (gain sqrt(2)); else linear.
  """
  features: int
  kernel: int
  down: bool = False
  use_bias: bool = True
  activate: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k, in_ch = self.kernel, x.shape[-1]
    weight = self.param('weight', nn.initializers.normal(1.0),
                        (k, k, in_ch, self.features))
    weight = weight * (1.0 / math.sqrt(in_ch * k * k))
    if self.down:
      # NVIDIA's padding: the conv's own k // 2 plus 1 for the 4-tap filter,
      # so the strided conv lands exactly on half the size.
      x = jax.lax.conv_general_dilated(
          _blur(x, k // 2 + 1), weight, (2, 2), 'VALID',
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    else:
      x = jax.lax.conv_general_dilated(
          x, weight, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    bias = (self.param('bias', nn.initializers.zeros, (self.features,))
            if self.use_bias else jnp.zeros((self.features,), x.dtype))
    return fused_leaky_relu(x, bias) if self.activate else x + bias


class Block(nn.Module):
  """One resolution r -> r / 2: conv0, down-sampling conv1, and the skip."""
  tmp_features: int
  out_features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    skip = EqualConv(self.out_features, 1, down=True, use_bias=False,
                     activate=False, name='skip')(x)
    x = EqualConv(self.tmp_features, 3, name='conv0')(x)
    x = EqualConv(self.out_features, 3, down=True, name='conv1')(x)
    return (x + skip) * (1.0 / SQRT2)  # keeps the variance of the sum


def minibatch_stddev(x: Array, group_size: int = 4) -> Array:
  """Appends one channel: the std over groups of samples, averaged over
  channels and pixels. Sample i belongs to group i mod (N / G), as NVIDIA's."""
  n, h, w, c = x.shape
  g = min(group_size, n)
  y = x.reshape(g, n // g, h, w, c)
  y = jnp.sqrt(jnp.var(y, axis=0) + 1e-8).mean(axis=(1, 2, 3))  # (N / G,)
  y = jnp.broadcast_to(jnp.tile(y, g)[:, None, None, None], (n, h, w, 1))
  return jnp.concatenate([x, y.astype(x.dtype)], axis=-1)


class Epilogue(nn.Module):
  """At 4x4: minibatch std, 3x3 conv, dense + leaky ReLU, dense to a logit."""
  features: int
  mbstd_group: int = 4

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = minibatch_stddev(x, self.mbstd_group)
    x = EqualConv(self.features, 3, name='conv')(x)
    x = EqualDense(self.features, name='fc')(x.reshape(x.shape[0], -1))
    x = jax.nn.leaky_relu(x, 0.2) * SQRT2  # bias already added
    return EqualDense(1, name='out')(x)[:, 0]


class Discriminator(nn.Module):
  """(B, R, R, 3) images in [-1, 1] -> (B,) logits (real: high).

  Attributes:
    channels: ((4, C4), (8, C8), ..., (R, CR)), the generator's table; the
      block at r maps C_r to C_{r/2} channels.
    mbstd_group: samples per minibatch-std group (the batch size must be a
      multiple of it, or smaller).
  """
  channels: tuple[tuple[int, int], ...]
  mbstd_group: int = 4

  @nn.compact
  def __call__(self, img: Array) -> Array:
    ch = dict(self.channels)
    res = max(ch)
    if img.shape[1:] != (res, res, 3):
      raise ValueError(f'expected (B, {res}, {res}, 3) images, got {img.shape}')
    x = EqualConv(ch[res], 1, name='fromrgb')(img)
    while res > 4:
      x = Block(ch[res], ch[res // 2], name=f'b{res}')(x)
      res //= 2
    return Epilogue(ch[4], self.mbstd_group, name='b4')(x)


def r1_penalty(apply: Callable[[Array], Array], reals: Array) -> Array:
  """(B,) squared norm of the summed logits' gradient at each image.

  The summed logits are differentiated, as NVIDIA's code does (the minibatch
  std couples the samples, so this is not each logit's own gradient).

  Args:
    apply: images -> logits (the discriminator with its parameters bound).
    reals: (B, R, R, 3) real images.
  """
  grads = jax.grad(lambda x: apply(x).sum())(reals)
  return jnp.sum(grads * grads, axis=(1, 2, 3))
