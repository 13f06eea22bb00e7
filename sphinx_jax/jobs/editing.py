"""`python -m sphinx_jax.edit`'s three modes, on `EditSettings`
(docs/editing.md):

- `direction`: w+ + alpha * d on one inversion's codes, for each strength;
- `interpolate`: a blend of two inversions' codes (W+, content, noise);
- `learn`: a new attribute learned from transformed copies of one image
  (inversion/attribute.py), then a walk along it.

Codes come from an inversion's codes directory or from an official SPHInX
result file (`load_codes`).

Each writes numbered frames, a GIF and, when ffmpeg is on PATH, an MP4 into
`outdir`, and `edit.json`.
"""

import dataclasses
import os
from typing import Any, Optional

import jax
import numpy as np

from sphinx_jax import cli
from sphinx_jax.errors import SphinxError
from sphinx_jax.files import animation, atomic, codes as codes_files
from sphinx_jax.files import directions, generator_dir, images, inputs
from sphinx_jax.inversion import attribute, edits, objective
from sphinx_jax.models.generator import Generator

MODES = ('direction', 'interpolate', 'learn')
# The learned attribute's walk: from the mean codes along `frames` alphas
# (ours), or from one draw along the learned alphas and their midpoints
# (the official code's).
WALKS = ('mean', 'official')


@dataclasses.dataclass(frozen=True)
class EditSettings:
  """Every field of configs/edit.py, typed (docs/editing.md)."""
  mode: str = 'direction'
  codes: str = ''
  codes_b: str = ''
  generator: str = ''  # '': the one recorded in the codes
  outdir: str = 'out/edit'
  direction: str = ''
  strengths: tuple[float, ...] = (-3.0, -1.5, 0.0, 1.5, 3.0)
  rows: Optional[tuple[int, ...]] = None  # None: every W+ row
  frames: int = 9
  ms_per_frame: int = 100
  image: str = ''
  transform: str = 'rotation'
  levels: tuple[float, ...] = (0.0, 22.5, 45.0)
  resample: str = 'bilinear'  # attribute.RESAMPLING
  fill: float = -1.0  # in [-1, 1]; 0: the official mid-grey
  learn: attribute.Settings = attribute.Settings()
  lpips_min_resolution: int = 256
  walk_extent: float = 1.5
  walk: str = 'mean'  # WALKS

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def load_generator_for(codes_path: str, override: str = '') -> Generator:
  """The generator `override` names, else the one the codes record."""
  directory = override or codes_files.recorded_generator(codes_path)
  try:
    return generator_dir.load_generator(directory)
  except SphinxError as e:
    if override:
      raise
    raise SphinxError(f'{e} (the generator recorded in {codes_path}/'
                      'config.json; set config.generator)') from None


def check_rows(rows: Optional[tuple[int, ...]], g: Generator) -> None:
  if rows is not None and (rows[0] < 0 or rows[-1] >= g.n_latent):
    raise SphinxError(f'config.rows = {",".join(map(str, rows))!r}: must be '
                      f'comma-separated W+ rows in 0..{g.n_latent - 1} '
                      '(empty: all)')


def load_codes(settings: EditSettings, path: str, g: Generator
               ) -> codes_files.Codes:
  """The codes at `path`: a codes directory as written, or an official
  result's heads turned into codes as an inversion's estimate makes them
  (mean W+ and content over settings.learn.num_vicinal draws, keyed by
  jax.random.key(settings.learn.seed)) with its noise maps."""
  if not codes_files.is_official_result(path):
    return codes_files.load_codes(path, g)
  state = codes_files.read_official_result(path, g)
  wplus, content = attribute.mean_codes(
      state, jax.random.key(settings.learn.seed), settings.learn.num_vicinal,
      g)
  return codes_files.Codes(path, 'sphinx', np.asarray(wplus), state['noise'],
                           np.asarray(content))


def check_same_generator(path_a: str, path_b: str,
                         override: str = '') -> None:
  """Refuses two codes made on different generators (an official result is
  taken as made on `override`, since it records none)."""
  gen_a = codes_files.recorded_generator(path_a) or override
  gen_b = codes_files.recorded_generator(path_b) or override
  if generator_dir.identity(gen_a) != generator_dir.identity(gen_b):
    raise SphinxError(f'{path_a} and {path_b} were inverted onto different '
                      f'generators ({gen_a} and {gen_b}); interpolation needs '
                      'one')


def _write(settings: EditSettings, frames: list[edits.Frame], g: Generator,
           record: dict[str, Any], base: Optional[edits.Frame] = None,
           deltas: Optional[list] = None) -> int:
  """Writes the frames, each on G tuned by its entry of `deltas` (PTI's
  codes; None: G's own), and `base` on the first frame's."""
  deltas = deltas or [None] * len(frames)
  animation.write_frames(
      settings.outdir, [edits.render(g, f, d) for f, d in zip(frames, deltas)],
      settings.ms_per_frame,
      base=None if base is None else edits.render(g, base, deltas[0]))
  atomic.write_json(os.path.join(settings.outdir, 'edit.json'),
                    {'mode': settings.mode, **record})
  return len(frames)


def run_direction(settings: EditSettings) -> int:
  g = load_generator_for(settings.codes, settings.generator)
  codes = load_codes(settings, settings.codes, g)
  direction = directions.load_direction(settings.direction, g)
  check_rows(settings.rows, g)
  rows = None if settings.rows is None else list(settings.rows)
  frames = edits.direction_frames(codes, g, direction, settings.strengths, rows)
  return _write(settings, frames, g, {
      'codes': settings.codes, 'direction': settings.direction, 'rows': rows,
      'frame_strengths': list(settings.strengths)},
                base=edits.base_inputs(codes, g),
                deltas=[codes.delta] * len(frames))


def run_interpolate(settings: EditSettings) -> int:
  check_same_generator(settings.codes, settings.codes_b, settings.generator)
  g = load_generator_for(settings.codes, settings.generator)
  a = load_codes(settings, settings.codes, g)
  b = load_codes(settings, settings.codes_b, g)
  frames = edits.interpolation_frames(a, b, g, settings.frames)
  return _write(settings, frames, g, {
      'codes': settings.codes, 'codes_b': settings.codes_b,
      'frame_t': np.linspace(0, 1, settings.frames).tolist()},
                deltas=edits.interpolation_deltas(a, b, g, settings.frames))


def learn_targets(settings: EditSettings, g: Generator) -> np.ndarray:
  """The K targets T(x, a_k), one per level."""
  image = inputs.load_image(settings.image, g.resolution)
  return np.stack([attribute.transform(image, settings.transform, a,
                                       settings.resample, settings.fill)
                   for a in settings.levels])


def walk(settings: EditSettings, result: attribute.Result, g: Generator
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(W+, content, frame alphas) of the walk along a learned attribute:
  `mean`: the mean codes, `frames` alphas from 0 to walk_extent x the last;
  `official`: one fresh draw (key attribute.walk_key(seed)), the learned
  alphas with their midpoints."""
  if settings.walk == 'official':
    wplus, content = attribute.drawn_codes(
        result.state, attribute.walk_key(settings.learn.seed), g)
    return (np.asarray(wplus), np.asarray(content),
            attribute.official_walk_alphas(result.alphas))
  return (result.wplus_mean, result.content_mean,
          np.linspace(0.0, settings.walk_extent * result.alphas[-1],
                      settings.frames))


def run_learn(settings: EditSettings) -> int:
  g = generator_dir.load_generator(settings.generator)
  targets = learn_targets(settings, g)
  learn = dataclasses.replace(settings.learn, lpips_weight=objective.lpips_weight(
      settings.learn.lpips_weight, g.resolution, settings.lpips_min_resolution))
  progress = cli.Progress('[learn]', learn.steps, 1)
  result = attribute.learn(g, targets, learn, progress.update)
  wplus, content, alphas = walk(settings, result, g)
  codes = codes_files.Codes(os.path.join(settings.outdir, 'codes'), 'sphinx',
                            wplus, result.state['noise'], content)
  frames = edits.direction_frames(codes, g, result.direction, alphas)
  images.save_png(images.to_uint8(images.grid(targets, len(targets))),
                  os.path.join(settings.outdir, 'targets.png'))
  directions.save_direction(os.path.join(settings.outdir, 'direction.npy'),
                            result.direction)
  # The codes the walk renders from, so that mode direction replays it.
  codes_files.write_codes(codes.path, {'state': result.state,
                                       'wplus_mean': wplus,
                                       'content_mean': content},
                          {**settings.to_json(), 'method': 'sphinx'})
  return _write(settings, frames, g, {
      'image': settings.image, 'transform': settings.transform,
      'levels': list(settings.levels), 'alphas': result.alphas.tolist(),
      'loss': result.loss, 'frame_alphas': alphas.tolist()},
                base=edits.base_inputs(codes, g))


def edit(settings: EditSettings) -> int:
  """Runs `settings.mode`; returns the number of frames written."""
  run_mode = {'direction': run_direction, 'interpolate': run_interpolate,
              'learn': run_learn}[settings.mode]
  return run_mode(settings)
