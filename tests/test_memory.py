"""batch_size=0: the largest batch that fits, from XLA's memory analysis."""

import pytest

from conftest import REPO, load_config
from sphinx_jax import Inverter, Settings, load_generator, run
from sphinx_jax.errors import SphinxError
from sphinx_jax.runtime import memory


@pytest.fixture(scope='module')
def inverter(converted):
  return Inverter(load_generator(converted['zip']),
                  Settings(method='wplus', steps=2, num_vicinal=1))


def test_the_choice_is_the_largest_batch_under_a_simulated_limit(inverter):
  need = {b: inverter.step_memory(b) for b in (1, 2, 3)}
  assert need[1] < need[2] < need[3]
  # A limit whose 90% lies between what 2 and 3 images need.
  limit = int((need[2] + need[3]) / 2 / (1 - memory.MARGIN))
  batch, bytes_needed = memory.largest_batch(inverter, limit, most=16)
  assert (batch, bytes_needed) == (2, need[2])
  assert bytes_needed <= (1 - memory.MARGIN) * limit < need[3]
  # Never more than the images to invert; nothing fits: a clear error.
  assert memory.largest_batch(inverter, limit, most=1)[0] == 1
  with pytest.raises(ValueError, match='one image per device needs'):
    memory.largest_batch(inverter, need[1], most=16)


def test_a_run_with_batch_size_zero_chooses_and_says_so(tmp_path, converted,
                                                       capsys):
  config = load_config('invert', generator=converted['zip'],
                       inputs=str(REPO / 'samples' / 'ca*'),
                       outdir=str(tmp_path),
                       steps=1, batch_size=0, num_vicinal=1, save_every=1,
                       method='wplus')
  assert run.main(config) == 0
  # Any machine's memory holds both images (cameraman, cat) at once.
  assert 'batch_size = 0: chose 2,' in capsys.readouterr().err
  with pytest.raises(SphinxError, match='batch_size'):
    run.settings_from_config(load_config('invert', batch_size=-1))
