"""An inverted image's codes: `<outdir>/<image>/codes/`, what
`python -m sphinx_jax.edit` starts from.

- `state/`: an Orbax checkpoint of {'state': the method's optimised state,
  'wplus_mean': (n_latent, w_dim), and for methods with a content code,
  'content_mean': (4, 4, C4)};
- `config.json`: the run's settings (at least `generator` and `method`) and
  the input file.

`write_codes` writes it and `load_codes` reads it back, checked against the
generator. `read_official_result` reads the other source edit accepts: the
official SPHInX code's result file (`.pt`), which holds the heads and noise
maps only.
"""

import dataclasses
import json
import os
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from sphinx_jax.convert import official_heads, torch_files
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
  # PTI: the tuned synthesis weights' difference from G's; None: G's own.
  delta: Any = None


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


def is_official_result(path: str) -> bool:
  """Whether `path` names an official SPHInX result file rather than a codes
  directory (by its torch.save suffix)."""
  return path.endswith(('.pt', '.pth'))


def recorded_generator(path: str) -> str:
  """The generator directory the codes at `path` were made on; '' for an
  official result, which records none."""
  if is_official_result(path):
    return ''
  return read_codes_config(path)['generator']


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


def expected_codes(method: methods.Method, g: Generator) -> dict[str, Any]:
  """Shapes of the tree `write_codes` saves for `method` (as `from_record`
  builds it from the run's config.json) on `g`."""
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
  record = read_codes_config(path)
  name = record['method']
  method = methods.get(name).from_record(record, g)
  if not method.editable:
    raise SphinxError(f'{path}: codes of method {name}, whose image comes '
                      'from features inside the generator that an edit of '
                      'the codes cannot reach; edit another method\'s codes')
  state_path = os.path.join(os.path.abspath(path), 'state')
  try:
    tree = ocp.StandardCheckpointer().restore(state_path)
  except Exception as e:  # Orbax raises many types for damaged directories.
    raise SphinxError(f'{state_path}: cannot read the codes '
                      f'({type(e).__name__}: {one_line(e)})') from None
  check_tree(tree, expected_codes(method, g), state_path, 'codes')
  as_array = lambda x: np.asarray(x, np.float32)
  noise = method.noise_of(tree['state'])
  return Codes(path=path, method=name, wplus=as_array(tree['wplus_mean']),
               noise=None if noise is None else [as_array(n) for n in noise],
               content=(as_array(tree['content_mean']) if 'content_mean' in tree
                        else None),
               delta=tree['state'].get('delta'))


def _entry(result: Any, key: str, kind: Union[type, tuple[type, ...]],
           what: str, path: str) -> Any:
  if not isinstance(result, dict) or not isinstance(result.get(key), kind):
    raise SphinxError(f'{path}: not an official SPHInX result ({key} missing '
                      f'or not a {what}; expected a dict of Ps, Pc, noises)')
  return result[key]


def read_official_result(path: str, g: Generator) -> dict[str, Any]:
  """The SPHInX state of an official result file, checked against `g`.

  The file is what the official main.py loads as `weights_path`: a
  torch.save dict {'Ps': state dict, 'Pc': state dict, 'noises': [(1, 1, r,
  r) tensors], 'true_img': (1, 3, R, R)} (the image is not needed). It is
  read without torch and without running any of its code.

  Returns:
    {'ps', 'pc', 'noise'} as `methods.Sphinx` holds them, float32; the noise
    maps (r, r, 1).

  Raises:
    SphinxError: the file is unreadable, lacks an entry, or its heads or
      noise maps do not fit `g`, naming the file and the entry.
  """
  result = torch_files.load(path)
  ps = official_heads.style_head_params_from_torch(
      _entry(result, 'Ps', dict, 'state dict', path), f'{path} Ps')
  pc = official_heads.content_head_params_from_torch(
      _entry(result, 'Pc', dict, 'state dict', path), f'{path} Pc')
  noises = _entry(result, 'noises', (list, tuple), 'list of tensors', path)
  rows, w_dim = ps['dec2']['kernel'].shape[0], ps['enc0']['kernel'].shape[0]
  if (rows, w_dim) != (g.n_latent, g.w_dim):
    raise SphinxError(f'{path}: Ps gives {rows} W+ rows of {w_dim}; the '
                      f'generator takes {g.n_latent} of {g.w_dim}')
  into, out = pc['conv1']['weight'].shape[2], pc['conv3']['weight'].shape[3]
  if (into, out) != (methods.CONTENT_CHANNELS, g.arch.channel(4)):
    raise SphinxError(f'{path}: Pc maps {into} to {out} channels; the '
                      f'generator needs {methods.CONTENT_CHANNELS} to '
                      f'{g.arch.channel(4)}')
  resolutions = g.arch.noise_resolutions
  if len(noises) != len(resolutions):
    raise SphinxError(f'{path}: {len(noises)} noise maps; the generator has '
                      f'{len(resolutions)}')
  for j, (n, r) in enumerate(zip(noises, resolutions)):
    if np.shape(n) != (1, 1, r, r):
      raise SphinxError(f'{path}: noises[{j}] has shape {np.shape(n)}; the '
                        f'generator needs (1, 1, {r}, {r})')
  noise = [np.asarray(n)[0].transpose(1, 2, 0) for n in noises]  # (r, r, 1)
  state = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32),
                                 {'ps': ps, 'pc': pc, 'noise': noise})
  if not all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(state)):
    raise SphinxError(f'{path}: the heads or noise maps hold NaN or infinite '
                      'values')
  return state
