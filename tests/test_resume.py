"""Resumable, sharded and fault-tolerant runs (python -m sphinx_jax.run)."""

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from sphinx_jax.files import inputs as input_files
from sphinx_jax.runtime import resume
from sphinx_jax import cli, run
from sphinx_jax.errors import SphinxError
from conftest import REPO, load_config, rel_err, run_cli

NAMES = ['astronaut', 'cameraman', 'cat']


def _base_config(generator, inputs, outdir, **overrides):
  return load_config('invert', **{
      **dict(generator=generator, inputs=str(inputs), outdir=str(outdir),
             steps=12, batch_size=2, num_vicinal=2, save_every=3,
             checkpoint_every=4, method='sphinx'), **overrides})


def _cli_args(generator, inputs, outdir, *extra):
  """The command line equivalent of _base_config."""
  return ['-m', 'sphinx_jax.run', '--config', 'configs/invert.py',
          f'--config.generator={generator}', f'--config.inputs={inputs}',
          f'--config.outdir={outdir}', '--config.steps=12', '--config.batch_size=2',
          '--config.num_vicinal=2', '--config.save_every=3',
          '--config.checkpoint_every=4', *extra]


@pytest.fixture()
def inputs(tmp_path):
  d = tmp_path / 'inputs'
  d.mkdir()
  for f in ('astronaut.jpg', 'cameraman.png', 'cat.jpg'):
    shutil.copy(REPO / 'samples' / f, d)
  return d


@pytest.fixture(scope='module')
def reference(converted, tmp_path_factory):
  """An uninterrupted run, to compare resumed runs with."""
  root = tmp_path_factory.mktemp('reference')
  inputs = root / 'inputs'
  inputs.mkdir()
  for f in ('astronaut.jpg', 'cameraman.png', 'cat.jpg'):
    shutil.copy(REPO / 'samples' / f, inputs)
  assert run.main(_base_config(converted['zip'], inputs, root / 'out')) == 0
  return root / 'out'


def _codes(outdir, name):
  return ocp.StandardCheckpointer().restore(
      str((outdir / name / 'codes' / 'state').resolve()))


def _assert_same_results(a, b):
  for name in NAMES:
    for f in ('reconstruction.png', 'mean.png', 'std.png', 'target.png'):
      assert (a / name / f).read_bytes() == (b / name / f).read_bytes(), (name, f)
    ca, cb = _codes(a, name), _codes(b, name)
    np.testing.assert_array_equal(ca['wplus_mean'], cb['wplus_mean'])
  rows_a = {r['image']: r for r in csv.DictReader(open(a / 'metrics.csv'))}
  rows_b = {r['image']: r for r in csv.DictReader(open(b / 'metrics.csv'))}
  assert sorted(rows_b) == NAMES and len(list(csv.DictReader(open(b / 'metrics.csv')))) == 3
  for name in NAMES:
    for col in ('psnr', 'ssim', 'lpips', 'psnr_mean'):
      assert rows_a[name][col] == rows_b[name][col]


class Crash(Exception):
  pass


def test_crash_then_resume_equals_uninterrupted(tmp_path, converted, inputs,
                                                reference, monkeypatch, capsys):
  config = _base_config(converted['zip'], inputs, tmp_path / 'out')
  calls = {'n': 0}
  real_update = cli.Progress.update

  def crash_in_second_batch(self, step, losses):
    calls['n'] += 1
    if calls['n'] == 12 + 10:  # batch 2, after its checkpoint at step 8
      raise Crash()
    real_update(self, step, losses)

  monkeypatch.setattr(cli.Progress, 'update', crash_in_second_batch)
  with pytest.raises(Crash):
    run.main(config)
  assert resume.Manifest(str(tmp_path / 'out')).finished() == {'astronaut', 'cameraman'}
  assert os.listdir(tmp_path / 'out' / 'checkpoints')
  monkeypatch.setattr(cli.Progress, 'update', real_update)
  capsys.readouterr()
  assert run.main(config) == 0
  err = capsys.readouterr().err
  assert '2 of 3 images already finished' in err
  assert 'resuming cat from the checkpoint after step 8' in err
  _assert_same_results(reference, tmp_path / 'out')
  assert not (tmp_path / 'out' / 'checkpoints').exists()


def _wait_for_checkpoint(out, procs):
  """Returns once a checkpoint is committed in `out` (or a process ended)."""
  deadline = time.time() + 240
  ckpt = out / 'checkpoints'
  while time.time() < deadline and all(p.poll() is None for p in procs):
    if ckpt.exists() and any(p.name.isdigit() for p in ckpt.iterdir()):
      return
    time.sleep(0.05)
  raise AssertionError(f'no checkpoint in {ckpt}')


def test_sigkill_then_rerun_resumes(tmp_path, converted, inputs, reference):
  out = tmp_path / 'out'
  args = _cli_args(converted['zip'], inputs, out)
  proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=os.environ.copy(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _wait_for_checkpoint(out, [proc])
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  result = run_cli(*args)
  assert result.returncode == 0, result.stderr
  assert 'resuming' in result.stderr
  _assert_same_results(reference, out)


def test_finished_run_is_not_redone(tmp_path, converted, inputs, reference, capsys):
  out = tmp_path / 'out'
  shutil.copytree(reference, out)
  before = (out / 'metrics.csv').read_bytes()
  assert run.main(_base_config(converted['zip'], inputs, out)) == 0
  assert '3 of 3 images already finished' in capsys.readouterr().err
  assert (out / 'metrics.csv').read_bytes() == before


def test_changed_config_is_refused(tmp_path, converted, inputs, reference):
  out = tmp_path / 'out'
  shutil.copytree(reference, out)
  before = sorted(p.name for p in out.iterdir())
  with pytest.raises(SphinxError, match='steps 12 -> 13.*another outdir'):
    run.main(_base_config(converted['zip'], inputs, out, steps=13))
  assert sorted(p.name for p in out.iterdir()) == before


def test_crash_between_metrics_row_and_manifest(tmp_path, converted, inputs,
                                                reference, monkeypatch):
  config = _base_config(converted['zip'], inputs, tmp_path / 'out')
  real_add = resume.Manifest.add

  def crash_on_cat(self, name):
    if name == 'cat':
      raise Crash()
    real_add(self, name)

  monkeypatch.setattr(resume.Manifest, 'add', crash_on_cat)
  with pytest.raises(Crash):
    run.main(config)
  monkeypatch.setattr(resume.Manifest, 'add', real_add)
  assert run.main(config) == 0
  _assert_same_results(reference, tmp_path / 'out')  # no duplicated cat row


def test_nan_image_fails_alone(tmp_path, converted, inputs, monkeypatch, capsys):
  real_load = input_files.load_image

  def poisoned(path, resolution, preprocess):
    image = real_load(path, resolution, preprocess)
    return image * np.nan if 'cameraman' in path else image

  monkeypatch.setattr(input_files, 'load_image', poisoned)
  out = tmp_path / 'out'
  assert run.main(_base_config(converted['zip'], inputs, out)) == 1
  err = capsys.readouterr().err
  assert 'failed' in err and 'cameraman' in err and 'NaN' in err
  rows = [r['image'] for r in csv.DictReader(open(out / 'metrics.csv'))]
  assert rows == ['astronaut', 'cat']
  assert not (out / 'cameraman').exists()


def _assert_close_results(a, b):
  """`b` holds every image of `a`, equal to rounding: other per-device
  programs (several devices or processes) round differently, and 12 Adam
  steps amplify that to ~1e-4 of the codes' scale (a sharding bug would be
  O(1))."""
  for name in NAMES:
    for f in ('reconstruction.png', 'mean.png', 'std.png', 'target.png',
              'progress.gif', 'codes/config.json'):
      assert (b / name / f).exists(), (name, f)
    ca, cb = _codes(a, name), _codes(b, name)
    assert rel_err(cb['wplus_mean'], ca['wplus_mean']) < 1e-3, name
  rows_a = {r['image']: r for r in csv.DictReader(open(a / 'metrics.csv'))}
  rows_b = list(csv.DictReader(open(b / 'metrics.csv')))
  assert [r['image'] for r in rows_b] == NAMES
  for r in rows_b:
    assert abs(float(rows_a[r['image']]['psnr']) - float(r['psnr'])) < 1e-2


def test_four_devices_match_one(tmp_path, converted, inputs, reference):
  """batch_size 3 on 4 devices: padded to 4, sharded, same results."""
  out = tmp_path / 'out'
  code = ('import jax, sys; from sphinx_jax import run; '
          'sys.path.insert(0, "tests"); from test_resume import _base_config; '
          'assert len(jax.local_devices()) == 4; '
          f'sys.exit(run.main(_base_config({converted["zip"]!r}, {str(inputs)!r}, '
          f'{str(out)!r}, batch_size=3)))')
  flags = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4'
  result = run_cli('-c', code, env={'XLA_FLAGS': flags})
  assert result.returncode == 0, result.stderr
  _assert_close_results(reference, out)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start_processes(args, envs, extra=()):
  """One `python *args *extra[i]` per entry of `envs`, from the repo root."""
  return [subprocess.Popen([sys.executable, *args, *(extra[i] if extra else ())],
                           cwd=REPO, env={**os.environ, **env}, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
          for i, env in enumerate(envs)]


# Slow (two processes compiling, killed and rerun: ~2 minutes of a 2-core
# CI's time); run by hand: pytest -m slow.
@pytest.mark.slow
def test_two_processes_killed_and_rerun_equal_one(tmp_path, converted, inputs,
                                                  reference):
  """jax.distributed, coordinator on 127.0.0.1: started from the environment,
  SIGKILLed after the first global checkpoint, rerun from config flags."""
  # Sorted, every other file: process 0 gets astronaut and cameraman,
  # process 1 the broken file and cat. One image a batch: in the first,
  # process 1 (its file skipped) steps along on padding; in the second, both
  # invert an image.
  (inputs / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(64))
  out = tmp_path / 'out'
  args = _cli_args(converted['zip'], inputs, out, '--config.batch_size=1')
  address = f'127.0.0.1:{_free_port()}'
  procs = _start_processes(args, [
      {'JAX_COORDINATOR_ADDRESS': address, 'JAX_NUM_PROCESSES': '2',
       'JAX_PROCESS_ID': str(i)} for i in (0, 1)])
  _wait_for_checkpoint(out, procs)
  for p in procs:
    p.kill()
    p.wait()
  assert not (out / 'astronaut').exists()

  address = f'127.0.0.1:{_free_port()}'
  procs = _start_processes(args, [{}, {}], [
      ['--config.distributed.num_processes=2',
       f'--config.distributed.coordinator_address={address}',
       f'--config.distributed.process_id={i}'] for i in (0, 1)])
  (_, err0), (_, err1) = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [1, 1], (err0, err1)
  assert '[batch 1/2] resuming astronaut from the checkpoint after step' in err0
  assert f'skipped {inputs}' not in err0
  assert f'skipped {inputs / "broken.png"}: ' in err1
  for err in (err0, err1):
    assert ("1 of 4 images skipped or failed (see above and the other "
            "processes' logs)") in err and 'Traceback' not in err
  manifests = {p.name: p.read_text() for p in out.glob('manifest*.jsonl')}
  assert manifests == {
      'manifest.process0.jsonl': '{"image": "astronaut"}\n{"image": "cameraman"}\n',
      'manifest.process1.jsonl': '{"image": "cat"}\n'}
  assert {p.name for p in out.glob('metrics*.csv')} == {
      'metrics.csv', 'metrics.process0.csv', 'metrics.process1.csv'}
  assert not (out / 'checkpoints').exists()
  _assert_close_results(reference, out)


@pytest.mark.slow
def test_two_processes_of_two_devices_equal_one(tmp_path, converted, inputs,
                                                reference):
  """batch_size 3 per process, padded to its 2 devices: a global batch of 8
  rows on 4 devices, process 1's first row a skipped file's padding."""
  (inputs / 'broken.png').write_bytes(b'')
  out = tmp_path / 'out'
  address = f'127.0.0.1:{_free_port()}'
  flags = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2'
  procs = _start_processes(
      _cli_args(converted['zip'], inputs, out, '--config.batch_size=3'),
      [{'XLA_FLAGS': flags}] * 2,
      [['--config.distributed.num_processes=2',
        f'--config.distributed.coordinator_address={address}',
        f'--config.distributed.process_id={i}'] for i in (0, 1)])
  results = [p.communicate(timeout=600) for p in procs]
  assert [p.returncode for p in procs] == [1, 1], results
  _assert_close_results(reference, out)


def test_processes_that_do_not_share_the_outdir_both_stop(tmp_path, converted,
                                                          inputs):
  address = f'127.0.0.1:{_free_port()}'
  procs = _start_processes(
      _cli_args(converted['zip'], inputs, tmp_path / 'unused'), [{}, {}],
      [['--config.distributed.num_processes=2',
        f'--config.distributed.coordinator_address={address}',
        f'--config.distributed.process_id={i}',
        f'--config.outdir={tmp_path / f"out{i}"}'] for i in (0, 1)])
  for p, (_, err) in zip(procs, [p.communicate(timeout=300) for p in procs]):
    assert p.returncode == 1, err
    assert err.strip().splitlines()[-1] == (
        f'error: {tmp_path / "out1"}: process 1 does not see the run.json that '
        'process 0 wrote; outdir must be on storage every process shares')
    assert 'Traceback' not in err
  assert not (tmp_path / 'out1' / 'run.json').exists()


def test_bad_distributed_setup_is_one_line(tmp_path, converted, inputs):
  port = _free_port()
  result = run_cli(*_cli_args(converted['zip'], inputs, tmp_path / 'out'),
                   '--config.distributed.num_processes=2',
                   '--config.distributed.process_id=1',
                   f'--config.distributed.coordinator_address=127.0.0.1:{port}',
                   '--config.distributed.initialization_timeout=1')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f'error: cannot reach the jax.distributed coordinator 127.0.0.1:{port} '
      '(process 0) within 1 s: Connection refused']
  assert not (tmp_path / 'out').exists()


def test_a_process_id_out_of_range_is_refused(tmp_path, converted, inputs):
  with pytest.raises(SphinxError, match=re.escape(
      'config.distributed.process_id = 2: must be in [0, num_processes) '
      '(or unset)')):
    run.main(_base_config(converted['zip'], inputs, tmp_path / 'out', **{
        'distributed.num_processes': 2, 'distributed.process_id': 2}))
  assert not (tmp_path / 'out').exists()


def test_distributed_setup_from_config_or_environment():
  from sphinx_jax.runtime import hosts
  cfg = load_config('invert').distributed
  args = lambda cfg, env: hosts.distributed_args(
      run.distributed_from_config(cfg), env)
  assert args(cfg, {}) is None
  assert args(cfg, {'SLURM_NTASKS': '1'}) is None
  # Launchers JAX detects itself: it fills in every value.
  for env in ({'SLURM_NTASKS': '4'}, {'OMPI_COMM_WORLD_SIZE': '2'},
              {'TPU_WORKER_HOSTNAMES': 'worker-0,worker-1'}):
    assert args(cfg, env) == {}
  env = {'JAX_COORDINATOR_ADDRESS': 'head.example:1234', 'JAX_NUM_PROCESSES': '2',
         'JAX_PROCESS_ID': '1', 'SLURM_NTASKS': '4'}
  assert args(cfg, env) == dict(
      coordinator_address='head.example:1234', num_processes=2, process_id=1)
  with pytest.raises(SphinxError, match="JAX_PROCESS_ID='one': must be an integer"):
    args(cfg, {**env, 'JAX_PROCESS_ID': 'one'})
  cfg.update({'coordinator_address': 'other.example:99', 'num_processes': 3,
              'process_id': 2})  # the config wins
  assert args(cfg, env) == dict(
      coordinator_address='other.example:99', num_processes=3, process_id=2)
  cfg.update({'coordinator_address': '', 'num_processes': 1, 'process_id': 0})
  assert args(cfg, env) is None  # one process, explicitly
