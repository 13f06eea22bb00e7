"""Tells NVIDIA's network pickles apart by the globals they name, running nothing.

`pickle_globals` walks the opcodes symbolically; `detect` classifies a pickle
as stylegan2-ada-pytorch / stylegan3-repo (`ada`) or official TensorFlow
(`tensorflow`) and refuses, before a single opcode is executed, one that
names a global outside its family's allowlist.
"""

import pickletools
from typing import Optional

from sphinx_jax.convert import ada, tensorflow
from sphinx_jax.errors import ForbiddenGlobal

ADA = 'ada'
TENSORFLOW = 'tensorflow'

_STRING_OPS = frozenset({'STRING', 'BINSTRING', 'SHORT_BINSTRING', 'UNICODE',
                         'BINUNICODE', 'SHORT_BINUNICODE', 'BINUNICODE8'})
_MARK = object()
_OTHER = object()


def pickle_globals(data: bytes) -> tuple[list[Optional[tuple[str, str]]], bool]:
  """The GLOBAL / STACK_GLOBAL targets of the first pickle in `data`.

  `pickletools.genops` only decodes opcodes; a small symbolic stack (strings,
  marks, the memo) recovers STACK_GLOBAL's operands. Strings inside the
  pickle, such as embedded source code, are operands of other opcodes and so
  can never pass for a global.

  Returns:
    (targets in order, with None for a STACK_GLOBAL whose operands are not
    plain strings; whether the walk reached STOP without a decoding error).
  """
  stack, memo, found = [], {}, []
  try:
    for op, arg, _ in pickletools.genops(data):
      name = op.name
      if name in _STRING_OPS:
        stack.append(arg)
      elif name == 'GLOBAL':
        module, _, qualname = arg.partition(' ')
        found.append((module, qualname))
        stack.append(_OTHER)
      elif name == 'STACK_GLOBAL':
        qualname = stack.pop() if stack else _OTHER
        module = stack.pop() if stack else _OTHER
        both = isinstance(module, str) and isinstance(qualname, str)
        found.append((module, qualname) if both else None)
        stack.append(_OTHER)
      elif name in ('GET', 'BINGET', 'LONG_BINGET'):
        stack.append(memo.get(arg, _OTHER))
      elif name in ('PUT', 'BINPUT', 'LONG_BINPUT'):
        memo[arg] = stack[-1] if stack else _OTHER
      elif name == 'MEMOIZE':
        memo[len(memo)] = stack[-1] if stack else _OTHER
      elif name == 'MARK':
        stack.append(_MARK)
      elif name == 'STOP':
        return found, True
      else:
        before = op.stack_before
        if pickletools.markobject in before:
          while stack and stack.pop() is not _MARK:
            pass
          count = before.index(pickletools.markobject)
        else:
          count = len(before)
        del stack[max(len(stack) - count, 0):]
        stack.extend([_OTHER] * len(op.stack_after))
  except ValueError:  # genops: unknown opcode, or data ends mid-argument
    pass
  return found, False


def detect(data: bytes, source: str) -> Optional[str]:
  """ADA, TENSORFLOW or None (not an NVIDIA network pickle), from the bytes.

  A pickle of a known family that names any global outside that family's
  allowlist is refused here, before a single opcode is executed.
  """
  found, _ = pickle_globals(data)
  targets = {g for g in found if g is not None}
  if ada.MARKER in targets and tensorflow.MARKER not in targets:
    kind, allowed = ADA, ada.ADA_GLOBALS
  elif tensorflow.MARKER in targets and ada.MARKER not in targets:
    kind, allowed = TENSORFLOW, tensorflow.TF_GLOBALS
  else:
    return None
  for module, name in _named(found):
    if (module, name) not in allowed:
      raise ForbiddenGlobal(
          f'{source}: refused to load: the pickle asks for global '
          f'{module}.{name}, which this format never holds (nothing was '
          'executed)')
  return kind


def _named(found: list[Optional[tuple[str, str]]]) -> list[tuple[str, str]]:
  return [g for g in found if g is not None]


def describe_unknown(data: bytes) -> str:
  """What an unrecognised file is not, for the one-line error."""
  found, complete = pickle_globals(data)
  if not complete and not found:
    return ('not a supported checkpoint (not a torch zip or legacy .pt file, '
            'and not a pickle)')
  names = ', '.join(f'{m}.{n}' for m, n in _named(found)[:3])
  return ('not a supported checkpoint (not a torch zip or legacy .pt file, nor '
          'an NVIDIA stylegan2-ada-pytorch / stylegan3 or TensorFlow network '
          f'pickle: {"it names " + names if names else "a plain pickle naming no globals"})')
