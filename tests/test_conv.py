"""conv2d: lax's stride-1 convolution, with its gradients written as
convolutions of the one form XLA's CPU compiler runs fast inside loops."""

import re

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from sphinx_jax import Inverter, Settings, load_generator
from sphinx_jax.models import conv

# (kernel size, padding): the generator's 3x3, its up-sampling phases and
# 1x1 layers, then padding that is uneven or wider than the kernel.
CASES = [((3, 3), ((1, 1), (1, 1))), ((2, 2), ((1, 1), (1, 1))),
         ((2, 1), ((1, 1), (0, 0))), ((1, 1), ((0, 0), (0, 0))),
         ((3, 3), ((0, 2), (2, 0))), ((1, 1), ((1, 2), (0, 1)))]


def _lax_conv(x, kernel, padding):
  return lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _arrays(seed, *shapes):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]


@pytest.mark.parametrize('kernel_shape,padding', CASES)
def test_value_and_gradients_equal_lax(kernel_shape, padding):
  x, kernel = _arrays(0, (2, 7, 6, 5), kernel_shape + (5, 4))
  y, vjp = jax.vjp(lambda x, k: conv.conv2d(x, k, padding), x, kernel)
  want, want_vjp = jax.vjp(lambda x, k: _lax_conv(x, k, padding), x, kernel)
  np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
  (grad,) = _arrays(1, y.shape)
  for got, expected in zip(vjp(grad), want_vjp(grad)):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('size', [1, 2, 3, 4])
def test_same_padding_is_lax_same(size):
  x, kernel = _arrays(2, (1, 5, 5, 2), (size, size, 2, 3))
  np.testing.assert_allclose(
      conv.conv2d(x, kernel, conv.same_padding(kernel.shape)),
      lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                               dimension_numbers=('NHWC', 'HWIO', 'NHWC')),
      rtol=1e-6, atol=1e-6)


def test_per_image_kernels_under_vmap():
  """PTI's case: every image of the batch has its own kernel."""
  x, kernel, grad = _arrays(3, (3, 1, 6, 6, 4), (3, 3, 3, 4, 2),
                            (3, 1, 6, 6, 2))
  padding = ((1, 1), (1, 1))

  def grads(f):
    return jax.vmap(lambda x, k, g: jax.vjp(f, x, k)[1](g))(x, kernel, grad)

  got = grads(lambda x, k: conv.conv2d(x, k, padding))
  want = grads(lambda x, k: _lax_conv(x, k, padding))
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


FAST = 'b01f_01io->b01f'


def _forms(compiled) -> list[tuple[int, int, str]]:
  """(output height, width, dim_labels) of every convolution XLA compiled."""
  return [(int(h), int(w), form) for h, w, form in re.findall(
      r'= \w+\[\d+,(\d+),(\d+),\d+\]\S* convolution\([^\n]*?'
      r'dim_labels=([^,\s]+)', compiled.as_text())]


def test_gradients_inside_a_loop_are_in_the_fast_form():
  """NHWC x HWIO (dim_labels b01f_01io->b01f) is the one form XLA's CPU
  compiler runs fast, and it rewrites other forms into it only outside
  loops: JAX's own gradients inside a loop ran 3x slower at 64 px."""
  x, kernel = _arrays(4, (2, 8, 8, 4), (3, 3, 4, 4))

  def loss(x, k):
    y = conv.conv2d(x, k, ((1, 1), (1, 1)))
    return jnp.sum(jnp.tanh(conv.conv2d(y, k[1:, 1:], ((1, 0), (1, 0)))))

  def update(i, carry):
    gx, gk = jax.grad(loss, argnums=(0, 1))(*carry)
    return carry[0] - 0.1 * gx, carry[1] - 0.1 * gk

  looped = jax.jit(lambda x, k, n: lax.fori_loop(0, n, update, (x, k)))
  forms = _forms(looped.lower(x, kernel, 2).compile())
  assert len(forms) == 6  # 2 forward, 2 input and 2 kernel gradients
  assert {f for _, _, f in forms} == {FAST}


def test_the_multi_step_program_has_every_convolution_in_the_fast_form(
    converted):
  """The generator's and LPIPS's convolutions, and their gradients, in the
  program every run dispatches. XLA itself swaps the operands of LPIPS's
  last convolutions here, whose 3x3 kernels are larger than their 2x2 maps
  (a few MFLOP each): those are let be."""
  g = load_generator(converted['zip'])
  inv = Inverter(g, Settings(method='wplus', steps=2, lpips_weight=1.0,
                             lpips_min_resolution=0))
  ids = np.arange(1)
  keys, state, opt_state = inv.init(ids)
  targets = jnp.zeros((1, g.resolution, g.resolution, 3))
  forms = _forms(inv.lower_steps(state, opt_state, keys, targets,
                                 inv.target_features(targets),
                                 inv.operator_params(ids)).compile())
  assert len(forms) > 20
  other = [f for f in forms if f[2] != FAST]
  assert all(h * w <= 4 for h, w, _ in other), other
  assert len(other) < len(forms) / 5
