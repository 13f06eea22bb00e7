"""Rebuilds an outdir's page from what is on disk: `python -m sphinx_jax.report OUTDIR`.

  python -m sphinx_jax.report OUTDIR

OUTDIR is a run's (`python -m sphinx_jax.run`: it holds run.json) or a
comparison's (`python -m sphinx_jax.demo`: comparison.csv, and a run per
method, whose pages are rebuilt too). Both commands write the page at
their end; this is for a run that was killed, or to refresh a page.
"""

import os

from sphinx_jax import cli
from sphinx_jax.errors import SphinxError
from sphinx_jax.reports import comparison_page, run_page


def write(outdir: str) -> list[str]:
  """Writes the outdir's report.html (for a comparison, every method's
  too); returns the pages written, the outdir's last."""
  if not os.path.isdir(outdir):
    raise SphinxError(f'{outdir}: ' + ('not a directory' if os.path.exists(
        outdir) else 'no such directory'))
  if os.path.exists(os.path.join(outdir, 'comparison.csv')):
    pages = [run_page.write(os.path.join(outdir, m))
             for m in comparison_page.methods(outdir)]
    return pages + [comparison_page.write(outdir)]
  if os.path.exists(os.path.join(outdir, 'run.json')):
    return [run_page.write(outdir)]
  raise SphinxError(f'{outdir}: not an outdir of sphinx_jax.run (no run.json) '
                    'or of sphinx_jax.demo (no comparison.csv)')


def main(outdir: str) -> int:
  for page in write(outdir):
    print(f'wrote {page}')
  return 0


if __name__ == '__main__':
  cli.run(main, arguments=('OUTDIR',))
