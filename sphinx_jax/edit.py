"""Edits from inverted codes: `python -m sphinx_jax.edit --config configs/edit.py`.

Three modes (`config.mode`), each writing numbered frames, a GIF and, when
ffmpeg is on PATH, an MP4 into `config.outdir` (docs/editing.md):

- `direction`: w+ + alpha * d on one inversion's codes, for each strength;
- `interpolate`: a blend of two inversions' codes (W+, content, noise);
- `learn`: a new attribute learned from transformed copies of one image
  (attribute.py), then a walk along it.

The logic lives in library functions; `edit(config)` runs a mode.
"""

import dataclasses
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from sphinx_jax.inversion import attribute, methods
from sphinx_jax import cli
from sphinx_jax.files import inputs, images, outputs
from sphinx_jax.errors import SphinxError, check_fields
from sphinx_jax.errors import check_tree
from sphinx_jax.files.generator_dir import load_generator
from sphinx_jax.models.generator import Generator

MODES = ('direction', 'interpolate', 'learn')
Frame = tuple[np.ndarray, list[np.ndarray], np.ndarray]  # W+, noise, content


@dataclasses.dataclass(frozen=True)
class Codes:
  """One finished inversion's codes (see `load_codes`)."""
  path: str
  method: str
  wplus: np.ndarray  # (n_latent, w_dim): the mean W+ (the tiled w for 'w')
  noise: Optional[list[np.ndarray]]  # (r, r, 1) maps; None: G's stored noise
  content: Optional[np.ndarray]  # (4, 4, C4), SPHInX only; None: G's constant


def read_codes_config(path: str) -> dict[str, Any]:
  """The run's config saved beside the codes (`<codes>/config.json`)."""
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


def generator_of(codes_path: str, override: str = '') -> str:
  """The generator directory: `override`, else the codes' own."""
  return override or read_codes_config(codes_path)['generator']


def load_generator_for(codes_path: str, override: str = '') -> Generator:
  directory = generator_of(codes_path, override)
  try:
    return load_generator(directory)
  except SphinxError as e:
    if override:
      raise
    raise SphinxError(f'{e} (the generator recorded in {codes_path}/'
                      'config.json; set config.generator)') from None


def _expected_codes(method: str, g: Generator) -> dict[str, Any]:
  """Shapes of the tree run.py saves for `method` on `g`."""
  # w_std only scales the w method's input noise, never its state's shapes.
  state = jax.eval_shape(methods.get(method, w_std=0.0).init,
                         jax.random.key(0), g)
  wplus = jax.ShapeDtypeStruct((g.n_latent, g.w_dim), jnp.float32)
  tree = {'state': state, 'wplus_mean': wplus}
  if method == 'sphinx':
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
                      f'({type(e).__name__}: {cli.one_line(e)})') from None
  check_tree(tree, _expected_codes(method, g), state_path, 'codes')
  as_array = lambda x: np.asarray(x, np.float32)
  noise = tree['state'].get('noise')
  return Codes(path=path, method=method, wplus=as_array(tree['wplus_mean']),
               noise=None if noise is None else [as_array(n) for n in noise],
               content=(as_array(tree['content_mean']) if 'content_mean' in tree
                        else None))


def base_inputs(codes: Codes, g: Generator) -> Frame:
  """The codes with G's stored noise and constant made explicit, so that
  every frame (and the base) renders through one program.

  Explicit maps equal to what None selects give G the same values: an absent
  stored noise becomes zero maps (adding nothing), the content G's constant.
  """
  if codes.noise is not None:
    noise = codes.noise
  elif g.noise_const is not None:
    noise = [np.asarray(n, np.float32)[:, :, None] for n in g.noise_const]
  else:
    noise = [np.zeros((r, r, 1), np.float32) for r in g.arch.noise_resolutions]
  content = (codes.content if codes.content is not None else
             np.asarray(g.params['synthesis']['const'], np.float32))
  return codes.wplus, noise, content


@jax.jit
def _synthesize_one(g: Generator, wplus, noise, content):
  return g.synthesize(wplus[None], noise, content[None])[0]


def render(g: Generator, frame: Frame) -> np.ndarray:
  """(H, W, 3) image of one frame's inputs. Frames render one at a time
  through the same compiled program, so equal inputs give equal pixels."""
  wplus, noise, content = frame
  return np.asarray(_synthesize_one(g, wplus, noise, content))


# Mode (a): a direction.

def parse_floats(text: str, field: str) -> list[float]:
  """'a,b,c' -> [a, b, c]; a bad list names the config field."""
  try:
    values = [float(v) for v in text.split(',')]
  except ValueError:
    raise SphinxError(f'config.{field} = {text!r}: must be comma-separated '
                      'numbers') from None
  if not all(np.isfinite(values)):
    raise SphinxError(f'config.{field} = {text!r}: must be finite numbers')
  return values


def parse_rows(text: str, n_latent: int) -> Optional[list[int]]:
  """'i,j,...' -> the W+ rows to edit; '' -> None (all of them)."""
  if not text.strip():
    return None
  try:
    rows = sorted({int(v) for v in text.split(',')})
  except ValueError:
    rows = None
  if rows is None or rows[0] < 0 or rows[-1] >= n_latent:
    raise SphinxError(f'config.rows = {text!r}: must be comma-separated W+ '
                      f'rows in 0..{n_latent - 1} (empty: all)')
  return rows


def load_direction(path: str, g: Generator) -> np.ndarray:
  """A `.npy` direction as (n_latent, w_dim); a (w_dim,) one is repeated
  for every row."""
  try:
    d = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise SphinxError(f'{path}: cannot read the direction ({cli.one_line(e)})'
                      ) from None
  shape = (g.n_latent, g.w_dim)
  if d.shape not in (shape[1:], shape) or d.dtype.kind not in 'fiu':
    raise SphinxError(f'{path}: direction of shape {d.shape} and dtype '
                      f'{d.dtype}; expected numbers of shape ({g.w_dim},) or '
                      f'{shape}')
  if not np.isfinite(d).all():
    raise SphinxError(f'{path}: the direction holds NaN or infinite values')
  return np.broadcast_to(d, shape).astype(np.float32)


def edit_wplus(wplus: np.ndarray, direction: np.ndarray, alpha: float,
               rows: Optional[Sequence[int]] = None) -> np.ndarray:
  """w+ + alpha * d on the chosen rows (None: all); other rows unchanged."""
  edited = wplus.copy()
  where = slice(None) if rows is None else list(rows)
  edited[where] = wplus[where] + np.float32(alpha) * direction[where]
  return edited


def direction_frames(codes: Codes, g: Generator, direction: np.ndarray,
                     strengths: Sequence[float],
                     rows: Optional[Sequence[int]] = None) -> list[Frame]:
  """One frame per strength, noise and content those of the codes."""
  wplus, noise, content = base_inputs(codes, g)
  return [(edit_wplus(wplus, direction, alpha, rows), noise, content)
          for alpha in strengths]


# Mode (b): interpolation.

def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
  # a * (1 - t) + b * t (not a + t * (b - a)) returns a and b exactly at the
  # ends, so the first and last frames are the two bases.
  return a * np.float32(1 - t) + b * np.float32(t)


def interpolation_frames(a: Codes, b: Codes, g: Generator,
                         frames: int) -> list[Frame]:
  """`frames` blends of W+, content and noise maps, both ends included."""
  start, end = base_inputs(a, g), base_inputs(b, g)
  out = []
  for t in np.linspace(0.0, 1.0, frames):
    out.append((_lerp(start[0], end[0], t),
                [_lerp(x, y, t) for x, y in zip(start[1], end[1])],
                _lerp(start[2], end[2], t)))
  return out


def _generator_identity(directory: str) -> str:
  """A generator by content (its generator.json), else by its path."""
  try:
    with open(os.path.join(directory, 'generator.json'), 'rb') as f:
      return hashlib.sha256(f.read()).hexdigest()
  except OSError:
    return os.path.normpath(directory)


def check_same_generator(path_a: str, path_b: str) -> None:
  gen_a = read_codes_config(path_a)['generator']
  gen_b = read_codes_config(path_b)['generator']
  if _generator_identity(gen_a) != _generator_identity(gen_b):
    raise SphinxError(f'{path_a} and {path_b} were inverted onto different '
                      f'generators ({gen_a} and {gen_b}); interpolation needs '
                      'one')


# Writing frames.

def write_mp4(frames: Sequence[np.ndarray], path: str, fps: float) -> bool:
  """Encodes uint8 frames with ffmpeg when it is on PATH; never fails: a
  missing or failing ffmpeg is reported in one line. Returns whether the
  file was written."""
  ffmpeg = shutil.which('ffmpeg')
  if ffmpeg is None:
    print(f'skipped {path}: no ffmpeg on PATH', file=sys.stderr)
    return False
  h, w = frames[0].shape[:2]
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                             prefix='.tmp-', suffix='.mp4')
  os.close(fd)
  # yuv420p is what players expect (generator sizes are even, as it needs).
  command = [ffmpeg, '-y', '-loglevel', 'error', '-f', 'rawvideo',
             '-pix_fmt', 'rgb24', '-s', f'{w}x{h}', '-framerate', f'{fps:g}',
             '-i', '-', '-pix_fmt', 'yuv420p', tmp]
  try:
    result = subprocess.run(command, input=np.stack(frames).tobytes(),
                            capture_output=True, check=False)
    reason = (None if result.returncode == 0 else
              cli.one_line(result.stderr.decode(errors='replace')[-300:]) or
              f'exit status {result.returncode}')
  except OSError as e:
    reason = cli.one_line(e)
  if reason is not None:
    os.unlink(tmp)
    print(f'skipped {path}: ffmpeg failed ({reason})', file=sys.stderr)
    return False
  os.replace(tmp, path)
  return True


def write_frames(outdir: str, pictures: Sequence[np.ndarray],
                 ms_per_frame: int, base: Optional[np.ndarray] = None) -> None:
  """frame_000.png..., base.png (if given), edit.gif and maybe edit.mp4.

  Frame files a previous run left beyond this run's count are removed, so
  the folder holds one animation.
  """
  frames = [images.to_uint8(p) for p in pictures]
  digits = max(3, len(str(len(frames) - 1)))
  names = [f'frame_{i:0{digits}d}.png' for i in range(len(frames))]
  for name, frame in zip(names, frames):
    images.save_png(frame, os.path.join(outdir, name))
  for stale in glob.glob(os.path.join(outdir, 'frame_*.png')):
    name = os.path.basename(stale)
    if re.fullmatch(r'frame_\d+\.png', name) and name not in names:
      os.unlink(stale)
  if base is not None:
    images.save_png(images.to_uint8(base), os.path.join(outdir, 'base.png'))
  outputs.save_gif(frames, os.path.join(outdir, 'edit.gif'), ms_per_frame)
  write_mp4(frames, os.path.join(outdir, 'edit.mp4'), 1000 / ms_per_frame)


# The modes.

def validate(config) -> None:
  """Fails before any work, naming the offending field."""
  checks = (
      ('mode', config.mode in MODES, f'one of {", ".join(MODES)}'),
      ('outdir', bool(config.outdir), 'a directory'),
      ('frames', config.frames >= 2, 'at least 2'),
      ('ms_per_frame', config.ms_per_frame >= 1, 'at least 1'),
      ('direction', config.mode != 'direction' or bool(config.direction),
       'a .npy file in mode direction'),
      ('codes_b', config.mode != 'interpolate' or bool(config.codes_b),
       'a codes directory in mode interpolate'),
      ('generator', config.mode != 'learn' or bool(config.generator),
       'a generator directory in mode learn (there are no codes to take it '
       'from)'),
      ('transform', config.transform in attribute.IDENTITY,
       f'one of {", ".join(attribute.IDENTITY)}'),
      ('steps', config.steps >= 1, 'at least 1'),
      ('lr', config.lr > 0, 'positive'),
      ('lr_schedule', config.lr_schedule in ('official', 'all'),
       "'official' or 'all'"),
      ('mse_weight', config.mse_weight >= 0, 'non-negative'),
      ('lpips_weight', config.lpips_weight >= 0, 'non-negative'),
      ('penalty_weight', config.penalty_weight >= 0, 'non-negative'),
      ('num_vicinal', config.num_vicinal >= 1, 'at least 1'),
      ('walk_extent', config.walk_extent > 0, 'positive'),
  )
  check_fields(config, checks)


def run_direction(config) -> int:
  g = load_generator_for(config.codes, config.generator)
  codes = load_codes(config.codes, g)
  direction = load_direction(config.direction, g)
  strengths = parse_floats(config.strengths, 'strengths')
  rows = parse_rows(config.rows, g.n_latent)
  frames = direction_frames(codes, g, direction, strengths, rows)
  write_frames(config.outdir, [render(g, f) for f in frames],
               config.ms_per_frame, base=render(g, base_inputs(codes, g)))
  outputs.write_json({'mode': 'direction', 'codes': config.codes,
                      'direction': config.direction, 'rows': rows,
                      'frame_strengths': strengths},
                     os.path.join(config.outdir, 'edit.json'))
  return len(frames)


def run_interpolate(config) -> int:
  check_same_generator(config.codes, config.codes_b)
  g = load_generator_for(config.codes, config.generator)
  a, b = load_codes(config.codes, g), load_codes(config.codes_b, g)
  frames = interpolation_frames(a, b, g, config.frames)
  write_frames(config.outdir, [render(g, f) for f in frames],
               config.ms_per_frame)
  outputs.write_json({'mode': 'interpolate', 'codes': config.codes,
                      'codes_b': config.codes_b,
                      'frame_t': np.linspace(0, 1, config.frames).tolist()},
                     os.path.join(config.outdir, 'edit.json'))
  return len(frames)


def learn_settings(config, g: Generator) -> attribute.Settings:
  use_lpips = g.resolution >= config.lpips_min_resolution
  return attribute.Settings(
      steps=config.steps, lr=config.lr,
      schedule_all=config.lr_schedule == 'all',
      mse_weight=config.mse_weight,
      lpips_weight=config.lpips_weight if use_lpips else 0.0,
      penalty_weight=config.penalty_weight, num_vicinal=config.num_vicinal,
      seed=config.seed)


def learn_targets(config, g: Generator) -> tuple[list[float], np.ndarray]:
  """The levels a_0..a_{K-1} and the K targets T(x, a_k)."""
  levels = parse_floats(config.levels, 'levels')
  identity = attribute.IDENTITY[config.transform]
  if len(levels) < 2 or levels[0] != identity:
    raise SphinxError(f'config.levels = {config.levels!r}: must list at least '
                      f'two levels, the first the identity ({identity:g} for '
                      f'{config.transform})')
  image = inputs.load_image(config.image, g.resolution)
  return levels, np.stack([attribute.transform(image, config.transform, a)
                           for a in levels])


def run_learn(config) -> int:
  g = load_generator(config.generator)
  levels, targets = learn_targets(config, g)
  settings = learn_settings(config, g)
  progress = outputs.Progress('[learn]', settings.steps, 1)
  result = attribute.learn(g, targets, settings, progress.update)
  walk = np.linspace(0.0, config.walk_extent * result.alphas[-1],
                     config.frames)
  codes = Codes(os.path.join(config.outdir, 'codes'), 'sphinx',
                result.wplus_mean, result.state['noise'], result.content_mean)
  frames = direction_frames(codes, g, result.direction, walk)
  write_frames(config.outdir, [render(g, f) for f in frames],
               config.ms_per_frame, base=render(g, base_inputs(codes, g)))
  images.save_png(images.to_uint8(images.grid(targets, len(targets))),
                  os.path.join(config.outdir, 'targets.png'))
  outputs.atomic_write(os.path.join(config.outdir, 'direction.npy'),
                       lambda f: np.save(f, result.direction))
  outputs.write_codes(codes.path, {'state': result.state,
                                   'wplus_mean': result.wplus_mean,
                                   'content_mean': result.content_mean},
                      {**config.to_dict(), 'method': 'sphinx'})
  outputs.write_json({'mode': 'learn', 'image': config.image,
                      'transform': config.transform, 'levels': levels,
                      'alphas': result.alphas.tolist(), 'loss': result.loss,
                      'frame_alphas': walk.tolist()},
                     os.path.join(config.outdir, 'edit.json'))
  return len(frames)


def edit(config) -> int:
  """Runs `config.mode`; returns the exit status."""
  validate(config)
  run_mode = {'direction': run_direction, 'interpolate': run_interpolate,
              'learn': run_learn}[config.mode]
  count = run_mode(config)
  print(f'wrote {count} frames and edit.gif to {config.outdir}')
  return 0


if __name__ == '__main__':
  cli.run(edit, 'configs/edit.py')
