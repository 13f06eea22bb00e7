"""The step schedule as a whole: steps, frames, checkpoints and dispatches.

Every pair of values of (steps, save_every, checkpoint_every,
steps_per_dispatch) appears in at least one of the 16 runs below (a
pairwise covering set); each must finish and write the frames the README
promises. A sample of them is killed right after a checkpoint and rerun:
the result must equal the uninterrupted run's, bit for bit.
"""

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, load_config
from sphinx_jax import run
from sphinx_jax.runtime import resume

STEPS = (1, 7, 24)
SAVE_EVERY = (1, 5, 20, 1000)
CHECKPOINT_EVERY = (0, 1, 3, 10)
STEPS_PER_DISPATCH = (1, 4, 10)


def _pairwise():
  """(steps, save_every, checkpoint_every, steps_per_dispatch) rows: row
  (i, j) takes save_every[i], checkpoint_every[j], steps[(i + j) % 3] and
  steps_per_dispatch[(i + 2j) % 3]. Fixing either 4-valued factor, the
  others run through all their values; and (i + j, i + 2j) mod 3 is an
  invertible map, so every (steps, steps_per_dispatch) pair appears too."""
  return [(STEPS[(i + j) % 3], SAVE_EVERY[i], CHECKPOINT_EVERY[j],
           STEPS_PER_DISPATCH[(i + 2 * j) % 3])
          for i in range(4) for j in range(4)]


def test_the_rows_cover_every_pair():
  rows = _pairwise()
  levels = (STEPS, SAVE_EVERY, CHECKPOINT_EVERY, STEPS_PER_DISPATCH)
  for a in range(4):
    for b in range(a + 1, 4):
      seen = {(r[a], r[b]) for r in rows}
      assert seen == {(x, y) for x in levels[a] for y in levels[b]}, (a, b)


def _config(outdir, steps, save_every, checkpoint_every, steps_per_dispatch):
  return load_config('invert', inputs=str(REPO / 'samples' / 'cat.jpg'),
                     outdir=str(outdir), steps=steps, batch_size=1,
                     num_vicinal=2, save_every=save_every,
                     checkpoint_every=checkpoint_every,
                     steps_per_dispatch=steps_per_dispatch)


def _frame_count(steps, save_every):
  """A frame after every save_every steps, and after the last."""
  return steps // save_every + (1 if steps % save_every else 0)


def _gif_milliseconds(path):
  gif = Image.open(path)
  total = 0
  for i in range(gif.n_frames):  # Pillow merges identical frames' durations
    gif.seek(i)
    total += gif.info['duration']
  return total


@pytest.mark.parametrize('steps, save_every, checkpoint_every, dispatch',
                         _pairwise())
def test_every_schedule_finishes_with_its_frames(tmp_path, steps, save_every,
                                                 checkpoint_every, dispatch):
  out = tmp_path / 'out'
  assert run.main(_config(out, steps, save_every, checkpoint_every,
                          dispatch)) == 0
  image = out / 'cat'
  for name in ('target', 'reconstruction', 'mean', 'std'):
    assert (image / f'{name}.png').exists()
  assert _gif_milliseconds(image / 'progress.gif') == 100 * _frame_count(
      steps, save_every)
  assert not (out / 'checkpoints').exists()  # dropped once the batch is done
  assert [r['image'] for r in csv.DictReader(open(out / 'metrics.csv'))] == [
      'cat']


class _Killed(Exception):
  pass


def _same_files(a, b):
  for name in ('target.png', 'reconstruction.png', 'mean.png', 'std.png',
               'progress.gif'):
    assert (a / 'cat' / name).read_bytes() == (b / 'cat' / name).read_bytes(), name
  strip = lambda p: [{k: v for k, v in r.items() if k != 'seconds'}
                     for r in csv.DictReader(open(p / 'metrics.csv'))]
  assert strip(a) == strip(b)


@pytest.mark.parametrize('schedule, killed_after', [
    ((7, 5, 3, 4), 1),  # the checkpoint comes before the first frame
    ((7, 1, 1, 1), 4),
    ((24, 20, 10, 10), 1),
])
def test_killed_after_a_checkpoint_then_rerun_equals_uninterrupted(
    tmp_path, monkeypatch, capsys, schedule, killed_after):
  whole = tmp_path / 'whole'
  assert run.main(_config(whole, *schedule)) == 0
  real_save = resume.BatchCheckpoints.save
  saves = []

  def save_then_die(self, *args, **kwargs):
    real_save(self, *args, **kwargs)
    saves.append(args[0])
    if len(saves) == killed_after:
      self.checkpoints.manager.wait_until_finished()
      raise _Killed

  monkeypatch.setattr(resume.BatchCheckpoints, 'save', save_then_die)
  out = tmp_path / 'out'
  with pytest.raises(_Killed):
    run.main(_config(out, *schedule))
  monkeypatch.setattr(resume.BatchCheckpoints, 'save', real_save)
  capsys.readouterr()
  assert run.main(_config(out, *schedule)) == 0
  # The checkpoint after 0-based step k holds k + 1 steps done.
  assert (f'from the checkpoint after step {saves[-1] + 1}' in
          capsys.readouterr().err)
  _same_files(whole, out)
  shutil.rmtree(whole)
