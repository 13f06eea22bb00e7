"""Writes torch.save-format files (zip and legacy) without torch, for tests.

Only what the tests need: nested dicts, lists and tuples of float32 numpy
arrays and plain values. The pickle opcodes are emitted by hand so that the files carry the
same globals a real torch.save writes.
"""

import io
import pickle
import struct
import zipfile

import numpy as np


def _str(s: str) -> bytes:
  raw = s.encode()
  return b'X' + struct.pack('<I', len(raw)) + raw


def _int(i: int) -> bytes:
  return b'J' + struct.pack('<i', i)


def _tuple(items) -> bytes:
  return b'(' + b''.join(items) + b't'


def _global(module: str, name: str) -> bytes:
  return b'c' + module.encode() + b'\n' + name.encode() + b'\n'


def _tensor(key: str, array: np.ndarray, legacy: bool) -> bytes:
  pid = [_str('storage'), _global('torch', 'FloatStorage'), _str(key),
         _str('cpu'), _int(array.size)]
  if legacy:
    pid.append(b'N')
  strides = [int(np.prod(array.shape[i + 1:])) for i in range(array.ndim)]
  return (_global('torch._utils', '_rebuild_tensor_v2') +
          _tuple([_tuple(pid) + b'Q', _int(0), _tuple(map(_int, array.shape)),
                  _tuple(map(_int, strides)), b'\x89',
                  _global('collections', 'OrderedDict') + b')R']) + b'R')


def _object(obj, storages: dict, legacy: bool) -> bytes:
  if isinstance(obj, dict):
    items = b''.join(_object(k, storages, legacy) + _object(v, storages, legacy)
                     for k, v in obj.items())
    return b'}(' + items + b'u'
  if isinstance(obj, (list, tuple)):
    items = b''.join(_object(v, storages, legacy) for v in obj)
    return b'](' + items + b'e' if isinstance(obj, list) else b'(' + items + b't'
  if isinstance(obj, np.ndarray):
    key = str(len(storages))
    storages[key] = np.ascontiguousarray(obj, np.float32)
    return _tensor(key, storages[key], legacy)
  return pickle.dumps(obj, protocol=2)[2:-1]  # plain values: no globals


def dumps_pickle(obj, legacy: bool = False) -> tuple[bytes, dict]:
  storages = {}
  body = _object(obj, storages, legacy)
  return b'\x80\x02' + body + b'.', storages


def save_zip(obj, path: str, prefix: str = 'archive') -> None:
  data, storages = dumps_pickle(obj)
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
    z.writestr(f'{prefix}/data.pkl', data)
    z.writestr(f'{prefix}/byteorder', 'little')
    for key, array in storages.items():
      z.writestr(f'{prefix}/data/{key}', array.tobytes())
    z.writestr(f'{prefix}/version', '3\n')


def legacy_header() -> bytes:
  return b''.join(pickle.dumps(x, protocol=2) for x in (
      0x1950a86a20f9469cfc6c, 1001,
      {'protocol_version': 1001, 'little_endian': True,
       'type_sizes': {'short': 2, 'int': 4, 'long': 4}}))


def save_legacy(obj, path: str) -> None:
  data, storages = dumps_pickle(obj, legacy=True)
  out = io.BytesIO()
  out.write(legacy_header() + data + pickle.dumps(list(storages), protocol=2))
  for array in storages.values():
    out.write(struct.pack('<q', array.size) + array.tobytes())
  with open(path, 'wb') as f:
    f.write(out.getvalue())
