"""Errors that reach the user as one line, without a traceback, and the
checks that raise them."""

from typing import Any

import jax
import numpy as np


def one_line(e: BaseException) -> str:
  """An exception's message on one line (ml_collections embeds '\\n' and quotes)."""
  text = str(e).replace('\\n', ' ').replace("'", '').replace('\\', '')
  return ' '.join(text.split())


class SphinxError(Exception):
  """A problem with the user's input (a file, an image, a config).

  Command-line entry points print `error: <message>` and exit with `exit_code`;
  the message must name the offending file or key.
  """

  exit_code = 1


class ForbiddenGlobal(SphinxError):
  """A pickle asked for a global outside the format's allowlist."""

  exit_code = 2


def check_fields(config, checks, prefix: str = 'config.') -> None:
  """Raises a SphinxError naming the first field that fails its check.

  Args:
    config: the config (or sub-config) holding the fields.
    checks: (field, ok, what the field must be) triples, in order.
    prefix: how the message names the config, e.g. 'config.operator.'.
  """
  for field, ok, want in checks:
    if not ok:
      raise SphinxError(f'{prefix}{field} = {config[field]!r}: must be {want}')


def check_tree(tree: Any, expected: Any, source: str, what: str) -> None:
  """Raises SphinxError naming the first missing, extra or mis-shaped entry."""
  flat = {jax.tree_util.keystr(k): v
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}
  want = {jax.tree_util.keystr(k): v
          for k, v in jax.tree_util.tree_leaves_with_path(expected)}
  for key in want.keys() - flat.keys():
    raise SphinxError(f'{source}: {what} lacks {key}')
  for key in flat.keys() - want.keys():
    raise SphinxError(f'{source}: {what} has unexpected {key}')
  for key, spec in want.items():
    if tuple(np.shape(flat[key])) != tuple(spec.shape):
      raise SphinxError(f'{source}: {what} {key} has shape '
                        f'{tuple(np.shape(flat[key]))}, expected {tuple(spec.shape)}')
