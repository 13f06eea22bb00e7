"""Reads files written by `torch.save` without torch and without running code.

Both serializations are supported: the zip container (torch >= 1.6) and the
legacy stream of consecutive pickles. Tensors come back as numpy arrays;
everything else (dicts, lists, `argparse.Namespace`) as inert Python objects.
"""

import io
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from sphinx_jax.convert import safe_pickle
from sphinx_jax.errors import SphinxError

ZIP_MAGIC = b'PK\x03\x04'
# The legacy stream opens with the pickled magic number 0x1950a86a20f9469cfc6c.
LEGACY_MAGIC = bytes.fromhex('80028a0a6cfc9c46f9206aa85019')
_LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c

STORAGE_DTYPES = {
    'FloatStorage': np.float32,
    'DoubleStorage': np.float64,
    'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16,
    'LongStorage': np.int64,
    'IntStorage': np.int32,
    'ShortStorage': np.int16,
    'CharStorage': np.int8,
    'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


class StorageType:
  """What `torch.<Type>Storage` resolves to: a dtype tag, nothing callable."""

  def __init__(self, dtype):
    self.dtype = np.dtype(dtype)


def rebuild_tensor(storage, storage_offset, size, stride, *unused_args):
  """Stand-in for `torch._utils._rebuild_tensor_v2`: a strided view, copied."""
  size, stride = tuple(size), tuple(stride)
  numel = int(np.prod(size)) if size else 1
  if numel == 0:
    return np.zeros(size, storage.dtype)
  end = storage_offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
  if storage_offset < 0 or end > storage.shape[0]:
    raise ValueError(f'tensor of size {size} reaches past its storage '
                     f'({storage.shape[0]} elements)')
  item = storage.itemsize
  view = np.lib.stride_tricks.as_strided(
      storage[storage_offset:], shape=size, strides=[s * item for s in stride])
  return np.array(view)


def rebuild_parameter(data, *unused_args):
  """Stand-in for `torch._utils._rebuild_parameter`: the tensor itself."""
  return data


TORCH_GLOBALS: safe_pickle.Allowlist = {
    ('torch._utils', '_rebuild_tensor_v2'): rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): rebuild_parameter,
    **{('torch', name): StorageType(dtype)
       for name, dtype in STORAGE_DTYPES.items()},
}

ALLOWED = {**safe_pickle.CONTAINER_GLOBALS, **safe_pickle.NUMPY_GLOBALS,
           **TORCH_GLOBALS}


def _storage_dtype(storage_type, source: str) -> np.dtype:
  if not isinstance(storage_type, StorageType):
    raise SphinxError(f'{source}: storage of unknown type {storage_type!r}')
  return storage_type.dtype


def load_zip(data: bytes, source: str, allowed) -> Any:
  try:
    archive = zipfile.ZipFile(io.BytesIO(data))
    names = archive.namelist()
  except (zipfile.BadZipFile, OSError) as e:
    raise SphinxError(f'{source}: not a readable torch zip file ({e})') from None
  pickles = [n for n in names if n.endswith('/data.pkl') or n == 'data.pkl']
  if len(pickles) != 1:
    raise SphinxError(f'{source}: zip file holds no torch data.pkl '
                      '(not a torch checkpoint)')
  prefix = pickles[0][:-len('data.pkl')]
  big_endian = (f'{prefix}byteorder' in names and
                archive.read(f'{prefix}byteorder').strip() == b'big')

  def storage(pid):
    kind, storage_type, key, _, numel = pid[:5]
    if kind != 'storage':
      raise SphinxError(f'{source}: unexpected persistent id {kind!r}')
    dtype = _storage_dtype(storage_type, source)
    dtype = dtype.newbyteorder('>' if big_endian else '<')
    try:
      raw = archive.read(f'{prefix}data/{key}')
    except (KeyError, zipfile.BadZipFile, OSError) as e:
      raise SphinxError(f'{source}: storage {key} is missing or damaged '
                        f'({e})') from None
    if len(raw) < numel * dtype.itemsize:
      raise SphinxError(f'{source}: storage {key} is truncated '
                        f'({len(raw)} bytes for {numel} elements)')
    return np.frombuffer(raw, dtype, count=numel).astype(dtype.newbyteorder('='))

  try:
    pkl = archive.read(pickles[0])
  except (zipfile.BadZipFile, OSError) as e:
    raise SphinxError(f'{source}: {pickles[0]} is damaged ({e})') from None
  return safe_pickle.load(pkl, allowed, source, persistent_load=storage,
                          encoding='utf-8')


def load_legacy_stream(stream: io.BytesIO, source: str, allowed) -> Any:
  """Reads one legacy-format torch.save stream starting at `stream`'s position.

  Layout: magic, protocol, sys_info, the object pickle (storages as persistent
  ids), the list of storage keys, then each storage as an int64 element count
  followed by its raw bytes. The object pickle is read twice: first to learn
  each storage's dtype (needed to size the raw blocks), then with the data.
  """
  none_allowed: safe_pickle.Allowlist = {}
  if safe_pickle.load(stream, none_allowed, source) != _LEGACY_MAGIC_NUMBER:
    raise SphinxError(f'{source}: not a torch legacy stream (bad magic)')
  safe_pickle.load(stream, none_allowed, source)  # protocol version
  sys_info = safe_pickle.load(stream, none_allowed, source)
  if isinstance(sys_info, dict) and not sys_info.get('little_endian', True):
    raise SphinxError(f'{source}: big-endian legacy checkpoints are not supported')

  object_start = stream.tell()
  dtypes = {}

  def record(pid):
    _, storage_type, key, _, numel, view = pid
    dtypes[key] = _storage_dtype(storage_type, source)
    return np.zeros(0, np.uint8) if view is None else None

  no_tensors = {**allowed,
                ('torch._utils', '_rebuild_tensor_v2'): lambda *a: None}
  safe_pickle.load(stream, no_tensors, source, persistent_load=record,
                   encoding='utf-8')
  object_end = stream.tell()
  keys = safe_pickle.load(stream, none_allowed, source)
  storages = {}
  for key in keys:
    header = stream.read(8)
    if len(header) < 8 or key not in dtypes:
      raise SphinxError(f'{source}: storage {key} is missing (file truncated?)')
    (count,) = struct.unpack('<q', header)
    dtype = dtypes[key].newbyteorder('<')
    raw = stream.read(count * dtype.itemsize)
    if len(raw) < count * dtype.itemsize:
      raise SphinxError(f'{source}: storage {key} is truncated')
    storages[key] = np.frombuffer(raw, dtype).astype(dtypes[key])

  def storage(pid):
    _, _, key, _, _, view = pid
    if key not in storages:
      raise SphinxError(f'{source}: storage {key} is missing')
    if view is None:
      return storages[key]
    view_key, offset, view_size = view
    storages.setdefault(view_key, storages[key][offset:offset + view_size])
    return storages[view_key]

  end = stream.tell()
  stream.seek(object_start)
  obj = safe_pickle.load(io.BytesIO(stream.read(object_end - object_start)),
                         allowed, source, persistent_load=storage,
                         encoding='utf-8')
  stream.seek(end)
  return obj


def is_torch_file(head: bytes) -> bool:
  return head.startswith(ZIP_MAGIC) or head.startswith(LEGACY_MAGIC)


def load(path: str, allowed: safe_pickle.Allowlist = ALLOWED) -> Any:
  """Loads a `torch.save` file (zip or legacy) as numpy arrays and dicts."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise SphinxError(f'{path}: cannot read ({e.strerror})') from None
  if data.startswith(ZIP_MAGIC):
    return load_zip(data, path, allowed)
  if data.startswith(LEGACY_MAGIC):
    return load_legacy_stream(io.BytesIO(data), path, allowed)
  raise SphinxError(f'{path}: not a torch checkpoint (neither the zip nor the '
                    'legacy torch.save format)')
