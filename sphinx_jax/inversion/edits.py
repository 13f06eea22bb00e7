"""Edits of inverted codes: a direction at several strengths, and
interpolation between two inversions, as frames of G's inputs."""

from typing import Optional, Sequence

import jax
import numpy as np

from sphinx_jax.files.codes import Codes
from sphinx_jax.models.generator import Generator

Frame = tuple[np.ndarray, list[np.ndarray], np.ndarray]  # W+, noise, content


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


def render(g: Generator, frame: Frame, delta=None) -> np.ndarray:
  """(H, W, 3) image of one frame's inputs, on G tuned by `delta` (PTI's
  codes) if given. Frames render one at a time through the same compiled
  program, so equal inputs give equal pixels (a zero delta, G's own)."""
  wplus, noise, content = frame
  if delta is not None:
    g = g.tuned(delta)
  return np.asarray(_synthesize_one(g, wplus, noise, content))


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


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
  # a * (1 - t) + b * t (not a + t * (b - a)) returns a and b exactly at the
  # ends, so the first and last frames are the two bases.
  return a * np.float32(1 - t) + b * np.float32(t)


def interpolation_deltas(a: Codes, b: Codes, g: Generator,
                         frames: int) -> list:
  """Each frame's tuned-weight difference, blended as the codes are (a
  missing one is zero); all None when neither codes has one."""
  if a.delta is None and b.delta is None:
    return [None] * frames
  zero = jax.tree_util.tree_map(np.zeros_like, g.params['synthesis'])
  start, end = (zero if c.delta is None else c.delta for c in (a, b))
  return [jax.tree_util.tree_map(lambda x, y, t=t: _lerp(
      np.asarray(x, np.float32), np.asarray(y, np.float32), t), start, end)
          for t in np.linspace(0.0, 1.0, frames)]


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
