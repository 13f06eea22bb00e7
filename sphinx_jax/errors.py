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
