"""Shared command-line plumbing: absl flags in, one-line errors and progress
lines out.

Bad flags, an unreadable config file or a `SphinxError` print one line
starting with `error:` and exit non-zero; no traceback reaches the user.
"""

import sys
import time
from typing import Any, Callable, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np
from ml_collections import config_flags

from sphinx_jax.errors import SphinxError, one_line
from sphinx_jax.runtime import compile_cache, xla_flags


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


def run(main: Callable[..., int], config_file: Optional[str] = None,
        arguments: Sequence[str] = ()) -> None:
  """Parses flags and runs `main()`, mapping errors to `error: ...` lines.

  With `config_file`, defines `--config` (an ml_collections config file,
  fields overridden as --config.<field>=<value>) with that default and runs
  `main(config)`. The flag is defined here, by the entry point that runs,
  since the CLI modules import one another. `arguments` names the
  positional arguments the command takes, passed to `main` after the
  config.
  """
  flag = (config_flags.DEFINE_config_file(
      'config', config_file, 'an ml_collections config file', lock_config=True)
          if config_file else None)

  def wrapped(argv):
    given = argv[1:]
    if len(given) > len(arguments):
      print(f'error: unexpected arguments: {" ".join(given[len(arguments):])}',
            file=sys.stderr)
      return 2
    if len(given) < len(arguments):
      print(f'error: missing arguments: {" ".join(arguments[len(given):])}',
            file=sys.stderr)
      return 2
    logging.set_verbosity(logging.WARNING)  # keep JAX/Orbax chatter out
    xla_flags.apply()
    compile_cache.enable()
    try:
      return (main(*given) if flag is None else
              main(_config_value(flag), *given))
    except SphinxError as e:
      print(f'error: {e}', file=sys.stderr)
      return e.exit_code

  app.run(wrapped, flags_parser=_parse_flags)


def optimisation_checks(config) -> tuple:
  """check_fields triples for the optimisation fields that the inversion
  and the attribute learner share (steps, lr, its schedule, the loss
  weights, the vicinal draws); lr may be unset where a method has its own."""
  return (
      ('steps', config.steps >= 1, 'at least 1'),
      ('lr', config.lr is None or config.lr > 0, 'positive (or unset)'),
      ('lr_schedule', config.lr_schedule in ('official', 'all'),
       "'official' or 'all'"),
      ('mse_weight', config.mse_weight >= 0, 'non-negative'),
      ('lpips_weight', config.lpips_weight >= 0, 'non-negative'),
      ('num_vicinal', config.num_vicinal >= 1, 'at least 1'),
  )


def format_table(rows: Sequence[dict[str, Any]]) -> str:
  """The end-of-run summary: one line per image, then the means."""
  cols = ('image', 'method', 'psnr', 'ssim', 'lpips', 'psnr_mean', 'seconds')
  width = max([len('image'), len('mean')] + [len(r['image']) for r in rows])
  lines = [f'{"image":<{width}}  {"method":<11} {"psnr":>7} {"ssim":>6} '
           f'{"lpips":>6} {"psnr(mean)":>10} {"seconds":>8}']
  for r in rows + ([{'image': 'mean', 'method': rows[0]['method'],
                     **{c: float(np.mean([x[c] for x in rows]))
                        for c in cols[2:]}}] if len(rows) > 1 else []):
    lines.append(f'{r["image"]:<{width}}  {r["method"]:<11} {r["psnr"]:7.2f} '
                 f'{r["ssim"]:6.3f} {r["lpips"]:6.3f} {r["psnr_mean"]:10.2f} '
                 f'{r["seconds"]:8.1f}')
  return '\n'.join(lines)


class Progress:
  """A one-line progress display: step, loss and throughput, on stderr."""

  def __init__(self, label: str, steps: int, num_images: int,
               interval: float = 0.5):
    self.label, self.steps, self.num_images = label, steps, num_images
    self.interval = interval
    self.start = self.last = time.perf_counter()
    self.reported = 0
    self.tty = sys.stderr.isatty()

  def update(self, step: int, losses) -> None:
    now = time.perf_counter()
    done = step + 1
    final = done == self.steps
    if self.tty:
      due = now - self.last >= self.interval
    else:  # a log file gets a line per tenth of the run
      tenth = max(1, self.steps // 10)
      due = done // tenth > self.reported // tenth
    self.reported = done
    if not (due or final):
      return
    self.last = now
    rate = self.num_images * done / max(now - self.start, 1e-9)
    line = (f'{self.label} step {done}/{self.steps} '
            f'loss {float(np.mean(np.asarray(losses))):.4f} '
            f'{rate:.1f} image-steps/s ({rate / self.steps:.3f} images/s)')
    sys.stderr.write(('\r' + line + ('\n' if final else '')) if self.tty
                     else line + '\n')
    sys.stderr.flush()
