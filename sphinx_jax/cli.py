"""Shared command-line plumbing: absl flags in, one-line errors out.

Bad flags, an unreadable config file or a `SphinxError` print one line
starting with `error:` and exit non-zero; no traceback reaches the user.
"""

import sys
from typing import Callable, Optional

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from sphinx_jax.errors import SphinxError


def one_line(e: BaseException) -> str:
  """An exception's message on one line (ml_collections embeds '\\n' and quotes)."""
  text = str(e).replace('\\n', ' ').replace("'", '').replace('\\', '')
  return ' '.join(text.split())


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:  # ml_collections: no such field
    print(f'error: unknown config field: {one_line(e)}', file=sys.stderr)
    sys.exit(2)
  except Exception as e:  # absl and ml_collections raise many types here
    print(f'error: bad flag: {one_line(e)}', file=sys.stderr)
    sys.exit(2)


def _config_value(flag: flags.FlagHolder):
  """The parsed config; a file that fails to load becomes a SphinxError."""
  try:
    flag.value.to_dict()  # a file that failed to load raises on first use
    return flag.value
  except Exception as e:  # the config file's own errors, of any type
    raise SphinxError(f'cannot load the config: {one_line(e)}') from None


def run(main: Callable[..., int], config_file: Optional[str] = None) -> None:
  """Parses flags and runs `main()`, mapping errors to `error: ...` lines.

  With `config_file`, defines `--config` (an ml_collections config file,
  fields overridden as --config.<field>=<value>) with that default and runs
  `main(config)`. The flag is defined here, by the entry point that runs,
  since the CLI modules import one another.
  """
  flag = (config_flags.DEFINE_config_file(
      'config', config_file, 'an ml_collections config file', lock_config=True)
          if config_file else None)

  def wrapped(argv):
    if len(argv) > 1:
      print(f'error: unexpected arguments: {" ".join(argv[1:])}', file=sys.stderr)
      return 2
    logging.set_verbosity(logging.WARNING)  # keep JAX/Orbax chatter out
    try:
      return main() if flag is None else main(_config_value(flag))
    except SphinxError as e:
      print(f'error: {e}', file=sys.stderr)
      return e.exit_code

  app.run(wrapped, flags_parser=_parse_flags)
