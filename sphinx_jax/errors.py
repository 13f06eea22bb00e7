"""Errors that reach the user as one line, without a traceback."""


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
