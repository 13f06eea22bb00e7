"""An inverted image's codes: `<outdir>/<image>/codes/`, what
`python -m sphinx_jax.edit` starts from.

- `state/`: an Orbax checkpoint of {'state': the method's optimised state,
  'wplus_mean': (n_latent, w_dim), and for methods with a content code,
  'content_mean': (4, 4, C4)};
- `config.json`: the run's settings (at least `generator` and `method`) and
  the input file.

`write_codes` writes it and `load_codes` reads it back, checked against the
generator.
"""

import dataclasses
import json
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from sphinx_jax.errors import SphinxError, check_tree, one_line
from sphinx_jax.files import atomic
from sphinx_jax.inversion import methods
from sphinx_jax.models.generator import Generator


@dataclasses.dataclass(frozen=True)
class Codes:
  """One finished inversion's codes (see `load_codes`)."""
  path: str
  method: str
  wplus: np.ndarray  # (n_latent, w_dim): the mean W+ (the tiled w for 'w')
  noise: Optional[list[np.ndarray]]  # (r, r, 1) maps; None: G's stored noise
  content: Optional[np.ndarray]  # (4, 4, C4), SPHInX only; None: G's constant


def write_codes(directory: str, tree: dict[str, Any],
                config_json: dict[str, Any]) -> None:
  """Writes `<directory>/state` (`tree`: see the module docstring) and
  `<directory>/config.json`.

  Under jax.distributed every process must call this with the same `tree`:
  Orbax saves host arrays with all processes and writes them from process 0,
  which also writes config.json.
  """
  path = os.path.abspath(directory)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(path, 'state'), tree, force=True)
  checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    atomic.write_json(os.path.join(path, 'config.json'), config_json)


def read_codes_config(path: str) -> dict[str, Any]:
  """The run's settings saved beside the codes (`<codes>/config.json`)."""
  if not os.path.isdir(path):
    raise SphinxError(f'{path}: no such codes directory (the codes/ folder '
                      'of an inverted image)')
  config_path = os.path.join(path, 'config.json')
  try:
    with open(config_path) as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise SphinxError(f'{config_path}: unreadable ({e})') from None
  if not isinstance(config, dict) or not isinstance(config.get('generator'),
                                                    str):
    raise SphinxError(f'{config_path}: no generator recorded')
  if config.get('method') not in methods.METHODS:
    raise SphinxError(f'{config_path}: unknown method {config.get("method")!r}')
  return config


def expected_codes(method: str, g: Generator) -> dict[str, Any]:
  """Shapes of the tree `write_codes` saves for `method` on `g`."""
  # A method built without its generator set-up has its state's shapes.
  method = methods.get(method)()
  state = jax.eval_shape(method.init, jax.random.key(0), g)
  tree = {'state': state,
          'wplus_mean': jax.ShapeDtypeStruct((g.n_latent, g.w_dim),
                                             jnp.float32)}
  if method.has_content:
    tree['content_mean'] = jax.ShapeDtypeStruct((4, 4, g.arch.channel(4)),
                                                jnp.float32)
  return tree


def load_codes(path: str, g: Generator) -> Codes:
  """Reads `<path>/state` (Orbax) and checks it against the generator.

  Raises:
    SphinxError: the directory is missing, unreadable or was made for another
      generator, naming the file and key.
  """
  method = read_codes_config(path)['method']
  state_path = os.path.join(os.path.abspath(path), 'state')
  try:
    tree = ocp.StandardCheckpointer().restore(state_path)
  except Exception as e:  # Orbax raises many types for damaged directories.
    raise SphinxError(f'{state_path}: cannot read the codes '
                      f'({type(e).__name__}: {one_line(e)})') from None
  check_tree(tree, expected_codes(method, g), state_path, 'codes')
  as_array = lambda x: np.asarray(x, np.float32)
  noise = tree['state'].get('noise')
  return Codes(path=path, method=method, wplus=as_array(tree['wplus_mean']),
               noise=None if noise is None else [as_array(n) for n in noise],
               content=(as_array(tree['content_mean']) if 'content_mean' in tree
                        else None))
