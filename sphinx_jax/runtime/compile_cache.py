"""The persistent compilation cache every command turns on at its door.

Each process compiles its programs before its first step: minutes for a
1024-px generator. XLA's persistent cache keeps the compiled programs on
disk, keyed by the program, the devices and the jax version, so a second
run of the same command loads them instead (README, "Compilation cache").
"""

import os
from typing import Mapping, Optional

import jax

ENV = 'SPHINX_JAX_CACHE_DIR'


def default_dir(environ: Mapping[str, str] = os.environ) -> str:
  """<XDG_CACHE_HOME, or ~/.cache>/sphinx_jax/xla."""
  base = environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'sphinx_jax', 'xla')


def enable(environ: Mapping[str, str] = os.environ) -> Optional[str]:
  """Turns the cache on and returns its directory, or None when it is off.

  SPHINX_JAX_CACHE_DIR names the directory, and set empty turns the cache
  off. Unset, a directory already given to jax (JAX_COMPILATION_CACHE_DIR)
  is kept, else `default_dir()` is used.
  """
  directory = environ.get(ENV)
  if directory is None:
    directory = jax.config.jax_compilation_cache_dir or default_dir(environ)
  if not directory:
    jax.config.update('jax_enable_compilation_cache', False)
    return None
  jax.config.update('jax_enable_compilation_cache', True)
  jax.config.update('jax_compilation_cache_dir', directory)
  return directory
