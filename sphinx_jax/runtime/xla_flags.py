"""The XLA flag every command sets at its door, before JAX starts a backend.

jaxlib 0.10's CPU backend hands convolutions, and the element-wise work and
reductions around them, to YNNPACK fusions. On the x86 CPUs measured
(docs/performance.md) XLA's own code is faster and keeps fewer buffers: the
generator's 3x3 convolutions run 25-35% faster, and the 256-px SPHInX step
about 24% faster in a third less memory. So the commands turn the YNNPACK
fusions off (an empty list of fusion types). The flag only touches the CPU
backend. XLA aborts the process on a flag it does not know, so it is added
only for the jaxlib versions it was measured with, and a user's own setting
of it in XLA_FLAGS is kept.
"""

import importlib.metadata
import os
from typing import MutableMapping

FLAG = '--xla_cpu_experimental_ynn_fusion_type'
VALUE = ''  # no YNNPACK fusion types
MEASURED_JAXLIB = ((0, 10), (0, 11))  # [first, last) major.minor


def _version(text: str) -> tuple[int, int]:
  major, minor = text.split('.')[:2]
  return int(major), int(minor)


def apply(environ: MutableMapping[str, str] = os.environ,
          jaxlib_version: str = '') -> bool:
  """Adds FLAG=VALUE to XLA_FLAGS; True if it did.

  Has no effect on a backend JAX has already started (XLA reads XLA_FLAGS
  once), which is why the commands call it before any computation.
  """
  flags = environ.get('XLA_FLAGS', '')
  if FLAG in flags:
    return False
  version = _version(jaxlib_version or importlib.metadata.version('jaxlib'))
  first, last = MEASURED_JAXLIB
  if not first <= version < last:
    return False
  environ['XLA_FLAGS'] = f'{flags} {FLAG}={VALUE}'.strip()
  return True
