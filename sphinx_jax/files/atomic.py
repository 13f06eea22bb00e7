"""Writes that a crash cannot leave half done.

A file or a directory is written under a temporary name beside its
destination and renamed over it only once complete; a line is appended with
one write and fsynced. Every writer in the package goes through these.
"""

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def replacing(path: str, suffix: str = '') -> Iterator[str]:
  """Yields a temporary file path beside `path`; it is renamed to `path`
  when the block ends normally and removed when it raises."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-', suffix=suffix)
  os.close(fd)
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_file(path: str, write: Callable[[Any], None]) -> None:
  """Calls `write(f)` on a binary file that becomes `path` once complete."""
  with replacing(path) as tmp:
    with open(tmp, 'wb') as f:
      write(f)


def write_json(path: str, obj: Any) -> None:
  write_file(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


@contextlib.contextmanager
def replacing_dir(path: str) -> Iterator[str]:
  """Yields a fresh temporary directory beside `path`; when the block ends
  normally it replaces `path` (an existing one is removed first), and when
  it raises it is removed."""
  path = os.path.abspath(path)
  tmp = f'{path}.partial-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    yield tmp
    if os.path.exists(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def append_line(path: str, line: str) -> None:
  """Appends `line` and a newline in one write, flushed to disk: a crash
  leaves at most this line cut short."""
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    os.write(fd, (line + '\n').encode())
    os.fsync(fd)
  finally:
    os.close(fd)
