"""Stride-1 NHWC x HWIO convolution whose gradients are convolutions in the
same layout.

XLA's CPU compiler runs a convolution with its fast (Eigen) code only in
NHWC x HWIO form, and it rewrites other forms into it only in a program's
top level, not inside loops. JAX's automatic gradients of a convolution
have other forms (the input gradient swaps the kernel's I and O axes, the
kernel gradient takes the batch as the contracted axis), so inside the
multi-step device loop (`Inverter.steps`) they fell to XLA's generic loop
code, about 3x slower per step. Here each gradient is written out as an
NHWC x HWIO convolution of transposed operands (the rewrite XLA makes at
the top level), so every program computes them the same fast way.
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp

Padding = tuple[tuple[int, int], tuple[int, int]]

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def same_padding(kernel_shape) -> Padding:
  """The (low, high) padding per spatial axis of lax's 'SAME' at stride 1."""
  return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_shape[:2])


def _conv(x, kernel, padding):
  return lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                  dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """Correlation of (B, H, W, I) `x`, zero-padded by `padding` ((top,
  bottom), (left, right)), with a (kh, kw, I, O) kernel, at stride 1."""
  return _conv(x, kernel, padding)


def _forward(x, kernel, padding):
  return _conv(x, kernel, padding), (x, kernel)


def _backward(padding, residuals, grad):
  x, kernel = residuals
  kh, kw = kernel.shape[:2]
  (top, bottom), (left, right) = padding
  # The transpose of a correlation: the gradient, padded by what the forward
  # pass did not pad, correlated with the kernel flipped and I, O swapped.
  flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
  grad_x = _conv(grad, flipped, ((kh - 1 - top, kh - 1 - bottom),
                                 (kw - 1 - left, kw - 1 - right)))
  # The kernel's gradient correlates the padded input with the output's
  # gradient over the batch: the input's channels as the batch, the batch as
  # channels, the gradient as a (H', W', B, O) kernel.
  grad_kernel = _conv(x.transpose(3, 1, 2, 0), grad.transpose(1, 2, 0, 3),
                      padding).transpose(1, 2, 0, 3)
  return grad_x, grad_kernel.astype(kernel.dtype)


conv2d.defvjp(_forward, _backward)
