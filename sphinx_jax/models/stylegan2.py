"""StyleGAN2 ('skip' generator, config E/F) as Flax linen modules, NHWC.

Parameters are stored unscaled, exactly as the official checkpoints hold
them; the equalized-learning-rate constants are applied at run time. That
keeps conversion to pure transposes/flips, so every format round-trips
exactly. The parameter tree mirrors NVIDIA's module names:

  mapping/fc{i}/{kernel [in, out], bias}
  synthesis/const [4, 4, C4]
  synthesis/b{r}/{conv0 (r > 4), conv1}/{affine/{kernel [S, I], bias}, weight [3, 3, I, O], noise_strength, bias}
  synthesis/b{r}/torgb/{affine/{kernel, bias}, weight [1, 1, I, 3], bias [3]}

The up-sampling conv0 weight is the correlation kernel: torch's stored kernel
flipped in both spatial axes (which is TensorFlow's stored kernel as is).
"""

import dataclasses
import functools
import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sphinx_jax.models.conv import conv2d, same_padding

Array = jax.Array

SQRT2 = math.sqrt(2.0)
# [1, 3, 3, 1] outer product normalised to sum 1, times the up-sampling gain 4.
_FIR_1D = np.array([1.0, 3.0, 3.0, 1.0])
UP_FIR = (np.outer(_FIR_1D, _FIR_1D) / np.outer(_FIR_1D, _FIR_1D).sum() * 4.0
          ).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Architecture:
  """Everything about a generator's shape; read from checkpoints' tensors.

  Attributes:
    resolution: output size (a power of two >= 4).
    z_dim: input latent size of the mapping network.
    w_dim: style (W) size.
    n_mlp: number of mapping layers.
    channels: ((4, C4), (8, C8), ..., (resolution, CR)).
    lr_mul: learning-rate multiplier of the mapping layers.
    conv_clamp: if set, every 3x3 conv output (after the activation gain) and
      every ToRGB output (before the skip is added) is clamped to
      [-conv_clamp, conv_clamp], as stylegan2-ada-pytorch does; None (the
      rosinality and TensorFlow generators) clamps nothing.
  """
  resolution: int
  z_dim: int
  w_dim: int
  n_mlp: int
  channels: tuple[tuple[int, int], ...]
  lr_mul: float = 0.01
  conv_clamp: Optional[float] = None

  def __post_init__(self):
    log2 = math.log2(self.resolution)
    if self.resolution < 4 or log2 != int(log2):
      raise ValueError(f'resolution must be a power of two >= 4, got '
                       f'{self.resolution}')
    if tuple(r for r, _ in self.channels) != self.resolutions:
      raise ValueError(f'channels must list every resolution 4..'
                       f'{self.resolution}, got {self.channels}')

  @classmethod
  def standard(cls, resolution: int, z_dim: int = 512, w_dim: int = 512,
               n_mlp: int = 8, channel_base: int = 32768,
               channel_max: int = 512) -> 'Architecture':
    """NVIDIA's channel table, min(channel_base / r, channel_max) at each
    resolution r; the defaults are config-f."""
    resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
    return cls(resolution=resolution, z_dim=z_dim, w_dim=w_dim, n_mlp=n_mlp,
               channels=tuple((r, min(channel_base // r, channel_max))
                              for r in resolutions))

  @property
  def resolutions(self) -> tuple[int, ...]:
    return tuple(2**i for i in range(2, int(math.log2(self.resolution)) + 1))

  @property
  def n_latent(self) -> int:
    """Rows of W+: one per 3x3 conv, plus one for the last ToRGB."""
    return 2 * int(math.log2(self.resolution)) - 2

  @property
  def noise_resolutions(self) -> tuple[int, ...]:
    """Resolution of each noise map in rosinality order: 4, then two per r."""
    return (4,) + tuple(r for r in self.resolutions[1:] for _ in range(2))

  def channel(self, resolution: int) -> int:
    return dict(self.channels)[resolution]

  def truncated(self, resolution: int) -> 'Architecture':
    """The same generator cut after the block at `resolution`."""
    if resolution not in self.resolutions:
      raise ValueError(f'cannot truncate a {self.resolution}-px generator to '
                       f'{resolution} px (choose one of {self.resolutions})')
    return dataclasses.replace(
        self, resolution=resolution,
        channels=tuple((r, c) for r, c in self.channels if r <= resolution))


def fused_leaky_relu(x: Array, bias: Array) -> Array:
  return jax.nn.leaky_relu(x + bias, 0.2) * SQRT2


def _clamp(x: Array, conv_clamp: Optional[float]) -> Array:
  return x if conv_clamp is None else jnp.clip(x, -conv_clamp, conv_clamp)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _fir(x: Array, lhs_dilation: int, pad: int) -> Array:
  """Correlation of every channel with UP_FIR (symmetric, so also a
  convolution), after inserting lhs_dilation - 1 zeros between samples and
  padding by `pad` (at most 3). The filter is separable: two 4-tap passes of
  shifted adds run ~10x faster on CPU than XLA's depthwise (feature-grouped)
  convolution.
  """
  if lhs_dilation > 1:
    b, h, w, c = x.shape
    d = lhs_dilation
    x = jnp.zeros((b, (h - 1) * d + 1, (w - 1) * d + 1, c), x.dtype
                  ).at[:, ::d, ::d].set(x)
  x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  taps = _FIR_1D / _FIR_1D.sum() * 2.0  # per axis; 2 x 2 = the gain 4
  h = x.shape[1] - 3
  x = sum(float(t) * x[:, i:i + h] for i, t in enumerate(taps))
  w = x.shape[2] - 3
  return sum(float(t) * x[:, :, i:i + w] for i, t in enumerate(taps))


def _fir_forward(x, lhs_dilation, pad):
  return _fir(x, lhs_dilation, pad), None


def _fir_backward(lhs_dilation, pad, _, grad):
  """The transpose of a correlation with a symmetric filter is the same
  correlation of the gradient padded by 3 - pad, taken at every
  lhs_dilation-th sample. Written so, it runs as the forward does (the
  automatic transpose of the shifted adds, a sum of padded copies, ran
  2.5x slower: 191 against 78 ms on a (4, 256, 256, 128) gradient)."""
  d = lhs_dilation
  return (_fir(grad, 1, 3 - pad)[:, ::d, ::d],)


_fir.defvjp(_fir_forward, _fir_backward)


def _transposed_conv(x: Array, weight: Array) -> Array:
  """torch's conv_transpose2d (stride 2, padding 0) with the unflipped torch
  kernel, i.e. zero insertion + pad 2 + correlation with `weight`: (B, H, W, I)
  -> (B, 2H+1, 2W+1, O).

  Computed by output phase instead of on the zero-inserted input, which would
  spend 3/4 of the work on zeros: even output rows see kernel rows 0 and 2
  over x padded by one, odd rows see kernel row 1 alone (likewise columns),
  so four small convolutions give the four interleaved phases.
  """
  def conv(k, rows, cols):
    return conv2d(x, k, (rows, cols))

  even, odd = (1, 1), (0, 0)
  ee = conv(weight[0::2, 0::2], even, even)  # (B, H+1, W+1, O)
  eo = conv(weight[0::2, 1:2], even, odd)  # (B, H+1, W, O)
  oe = conv(weight[1:2, 0::2], odd, even)  # (B, H, W+1, O)
  oo = conv(weight[1:2, 1:2], odd, odd)  # (B, H, W, O)

  def grow(y, rows, cols):  # to (H+1, W+1); the extra row/column is cut below
    return jnp.pad(y, ((0, 0), (0, rows), (0, cols), (0, 0)))

  y = jnp.stack([jnp.stack([ee, grow(eo, 0, 1)], axis=3),
                 jnp.stack([grow(oe, 1, 0), grow(oo, 1, 1)], axis=3)], axis=3)
  b, h1, w1, _, _, o = y.shape  # (B, H+1, W+1, row phase, column phase, O)
  y = y.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h1, 2 * w1, o)
  return y[:, :-1, :-1]


def upsample_2x(img: Array) -> Array:
  """upfirdn2d(img, 4f, up=2, pad=(2, 1)): the skip path's up-sampling."""
  return _fir(img, lhs_dilation=2, pad=2)


class EqualDense(nn.Module):
  """Dense layer with equalized learning rate: W * lr_mul / sqrt(in), b * lr_mul."""
  features: int
  lr_mul: float = 1.0
  bias_init: float = 0.0

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param(
        'kernel', lambda k, s: jax.random.normal(k, s) / self.lr_mul,
        (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.constant(self.bias_init),
                      (self.features,))
    scale = self.lr_mul / math.sqrt(x.shape[-1])
    return x @ (kernel * scale) + bias * self.lr_mul


class Mapping(nn.Module):
  """z -> w: PixelNorm, then n_mlp equalized-lr layers with fused leaky ReLU."""
  n_mlp: int
  w_dim: int
  lr_mul: float = 0.01

  @nn.compact
  def __call__(self, z: Array) -> Array:
    x = z * jax.lax.rsqrt(jnp.mean(z * z, axis=-1, keepdims=True) + 1e-8)
    for i in range(self.n_mlp):
      x = EqualDense(self.w_dim, lr_mul=self.lr_mul, name=f'fc{i}')(x)
      x = jax.nn.leaky_relu(x, 0.2) * SQRT2  # bias already added, scaled
    return x


def modulated_conv(x: Array, weight: Array, style: Array, up: bool = False,
                   demodulate: bool = True) -> Array:
  """Modulated (optionally demodulated, optionally 2x up-sampling) conv.

  Args:
    x: (B, H, W, I) input.
    weight: (k, k, I, O) unscaled weight (correlation kernel).
    style: (B, I) per-sample input-channel scales.
    up: 2x up-sampling conv followed by the [1, 3, 3, 1] blur.
    demodulate: normalise each output channel of the per-sample weight.

  The batch shares one convolution: the styles scale the input channels and
  the demodulation coefficients scale the output channels. This equals the
  official per-sample grouped convolution with weight c * W * s_n * d_n,
  because both scalings are diagonal and commute with the convolution (and
  with the depthwise blur after the up-sampling conv).
  """
  k, _, in_ch, _ = weight.shape
  weight = weight * (1.0 / math.sqrt(in_ch * k * k))
  x = x * style[:, None, None, :].astype(x.dtype)
  if up:
    x = _fir(_transposed_conv(x, weight.astype(x.dtype)), lhs_dilation=1, pad=1)
  else:
    x = conv2d(x, weight.astype(x.dtype), same_padding(weight.shape))
  if demodulate:
    power = jnp.sum(weight * weight, axis=(0, 1))  # (I, O)
    demod = jax.lax.rsqrt((style * style) @ power + 1e-8)  # (B, O)
    x = x * demod[:, None, None, :].astype(x.dtype)
  return x


class StyledConv(nn.Module):
  """Modulated 3x3 conv, noise injection, bias and fused leaky ReLU."""
  features: int
  up: bool = False
  conv_clamp: Optional[float] = None

  @nn.compact
  def __call__(self, x: Array, w: Array, noise: Optional[Array]) -> Array:
    style = EqualDense(x.shape[-1], bias_init=1.0, name='affine')(w)
    weight = self.param('weight', nn.initializers.normal(1.0),
                        (3, 3, x.shape[-1], self.features))
    x = modulated_conv(x, weight, style, up=self.up)
    strength = self.param('noise_strength', nn.initializers.zeros, ())
    if noise is not None:
      x = x + strength * noise
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    return _clamp(fused_leaky_relu(x, bias), self.conv_clamp)


class ToRGB(nn.Module):
  """Modulated 1x1 conv to RGB (no demodulation) plus the up-sampled skip."""
  conv_clamp: Optional[float] = None

  @nn.compact
  def __call__(self, x: Array, w: Array, skip: Optional[Array]) -> Array:
    style = EqualDense(x.shape[-1], bias_init=1.0, name='affine')(w)
    weight = self.param('weight', nn.initializers.normal(1.0),
                        (1, 1, x.shape[-1], 3))
    bias = self.param('bias', nn.initializers.zeros, (3,))
    # ada clamps the layer's own output; the up-sampled skip is added after.
    rgb = _clamp(modulated_conv(x, weight, style, demodulate=False) + bias,
                 self.conv_clamp)
    return rgb if skip is None else rgb + upsample_2x(skip)


class Block(nn.Module):
  """One resolution: [up-sampling conv0,] conv1 and ToRGB (onto the skip)."""
  features: int
  up: bool
  conv_clamp: Optional[float] = None

  @nn.compact
  def __call__(self, x, img, ws, noise):
    """ws: the block's 2 (or 3 with conv0) W+ rows; noise: its 1 or 2 maps."""
    clamp = self.conv_clamp
    if self.up:
      x = StyledConv(self.features, up=True, conv_clamp=clamp, name='conv0')(
          x, ws[0], noise[0])
      ws, noise = ws[1:], noise[1:]
    x = StyledConv(self.features, conv_clamp=clamp, name='conv1')(
        x, ws[0], noise[0])
    return x, ToRGB(conv_clamp=clamp, name='torgb')(x, ws[1], img)


class Synthesis(nn.Module):
  """W+ (and noise, and optionally a 4x4 content tensor) -> image.

  With `remat`, each block's activations are recomputed in the backward pass
  instead of stored: less memory for a second forward pass.
  """
  arch: Architecture
  remat: bool = False

  @nn.compact
  def __call__(self, wplus: Array, noise: Sequence[Optional[Array]],
               content: Optional[Array] = None, start: int = 0,
               stop: Optional[int] = None, hidden: Optional[tuple] = None):
    """The image, or with `stop` before the last block, (x, img): the
    features and the RGB skip after block `stop - 1`; from `start` > 0 the
    blocks continue from `hidden`, such a pair after block `start - 1`."""
    arch = self.arch
    stop = len(arch.resolutions) if stop is None else stop
    if start == 0:
      const = self.param('const', nn.initializers.normal(1.0),
                         (4, 4, arch.channel(4)))
      x = (jnp.broadcast_to(const, (wplus.shape[0],) + const.shape)
           if content is None else content)
      img = None
    else:
      x, img = hidden
    # Block i reads W+ rows 2i-1 (conv0), 2i (conv1), 2i+1 (ToRGB, shared with
    # the next block's conv0) and noise maps 2i-1, 2i.
    for i, res in enumerate(arch.resolutions[start:stop], start):
      first = max(2 * i - 1, 0)
      ws = [wplus[:, j] for j in range(first, 2 * i + 2)]
      block = nn.remat(Block) if self.remat else Block
      x, img = block(arch.channel(res), up=res > 4, conv_clamp=arch.conv_clamp,
                     name=f'b{res}')(
          x, img, ws, list(noise[first:2 * i + 1]))
    return img if stop == len(arch.resolutions) else (x, img)


class StyleGAN2(nn.Module):
  """The generator: `mapping` (z -> w) and `synthesize` (W+ -> image)."""
  arch: Architecture
  remat: bool = False

  def setup(self):
    self.mapping_net = Mapping(self.arch.n_mlp, self.arch.w_dim,
                               self.arch.lr_mul, name='mapping')
    self.synthesis = Synthesis(self.arch, self.remat, name='synthesis')

  def mapping(self, z: Array) -> Array:
    return self.mapping_net(z)

  def synthesize(self, wplus: Array, noise: Sequence[Optional[Array]],
                 content: Optional[Array] = None) -> Array:
    return self.synthesis(wplus, noise, content)

  def synthesize_blocks(self, wplus, noise, content, start, stop, hidden):
    return self.synthesis(wplus, noise, content, start, stop, hidden)

  def __call__(self, z: Array) -> Array:
    """Used for initialisation: touches every parameter once."""
    w = self.mapping(z)
    wplus = jnp.repeat(w[:, None], self.arch.n_latent, axis=1)
    return self.synthesize(wplus, [None] * len(self.arch.noise_resolutions))
