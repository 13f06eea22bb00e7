"""A pickle reader that resolves only allowlisted globals and runs no code.

Checkpoints from torch, NVIDIA and TensorFlow are pickles; loading them with
`pickle.load` executes whatever the file names. Every reader in this package
goes through `RestrictedUnpickler`, which resolves a (module, name) pair only
when the format legitimately holds it and maps it to an inert local function.
"""

import argparse
import collections
import io
import pickle
from typing import Any, Callable, Mapping

import numpy as np

from sphinx_jax.errors import ForbiddenGlobal, SphinxError

Allowlist = Mapping[tuple[str, str], Any]


def _numpy_core():
  # NumPy 2 renamed numpy.core to numpy._core; pickles hold either name.
  try:
    from numpy import _core  # pylint: disable=g-import-not-at-top
  except ImportError:  # NumPy 1.x
    from numpy import core as _core  # pylint: disable=g-import-not-at-top
  return _core


_core = _numpy_core()

NUMPY_GLOBALS: Allowlist = {
    **{(mod, '_reconstruct'): _core.multiarray._reconstruct
       for mod in ('numpy.core.multiarray', 'numpy._core.multiarray')},
    **{(mod, 'scalar'): _core.multiarray.scalar
       for mod in ('numpy.core.multiarray', 'numpy._core.multiarray')},
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
}


class Namespace(argparse.Namespace):
  """Inert stand-in for `argparse.Namespace` (training `args` entries)."""


class EasyDict(dict):
  """Inert stand-in for `dnnlib.util.EasyDict` (a dict with attribute access),
  which both NVIDIA pickle families hold."""


CONTAINER_GLOBALS: Allowlist = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('argparse', 'Namespace'): Namespace,
    ('builtins', 'set'): set,
    ('__builtin__', 'set'): set,
    # Protocol-2 pickles write bytes as _codecs.encode(text, 'latin1').
    ('_codecs', 'encode'): lambda text, enc='utf-8': text.encode(enc),
}


class RestrictedUnpickler(pickle.Unpickler):
  """Unpickler whose `find_class` only returns entries of `allowed`.

  Args:
    file: binary file object positioned at a pickle.
    allowed: (module, name) -> object to use in place of that global.
    source: file name used in error messages.
    persistent_load: optional handler for persistent ids (torch storages).
  """

  def __init__(self, file, allowed: Allowlist, source: str,
               persistent_load: Callable[[Any], Any] | None = None,
               encoding: str = 'ASCII'):
    super().__init__(file, encoding=encoding)
    self._allowed = allowed
    self._source = source
    self._persistent = persistent_load

  def find_class(self, module, name):
    try:
      return self._allowed[(module, name)]
    except KeyError:
      raise ForbiddenGlobal(
          f'{self._source}: refused to load: the pickle asks for global '
          f'{module}.{name}, which this format never holds (nothing was '
          'executed)') from None

  def persistent_load(self, pid):
    if self._persistent is None:
      raise SphinxError(f'{self._source}: unexpected persistent id {pid!r}')
    return self._persistent(pid)


def load(data: bytes | io.BufferedIOBase, allowed: Allowlist, source: str,
         **kwargs) -> Any:
  """Unpickles one object from bytes or a file, turning low-level failures
  (truncation, garbage) into a one-line `SphinxError` naming `source`."""
  file = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
  try:
    return RestrictedUnpickler(file, allowed, source, **kwargs).load()
  except SphinxError:
    raise
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError,
          AttributeError, IndexError, KeyError, UnicodeDecodeError) as e:
    raise SphinxError(
        f'{source}: not a readable checkpoint (pickle data is truncated or '
        f'corrupt: {type(e).__name__}: {e})') from None
