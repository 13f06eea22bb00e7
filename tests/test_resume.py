"""Resumable, sharded and fault-tolerant runs (python -m sphinx_jax.run)."""

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from sphinx_jax import data, outputs, resume, run
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
  assert run.run(_base_config(converted['zip'], inputs, root / 'out')) == 0
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
  real_update = outputs.Progress.update

  def crash_in_second_batch(self, step, losses):
    calls['n'] += 1
    if calls['n'] == 12 + 10:  # batch 2, after its checkpoint at step 8
      raise Crash()
    real_update(self, step, losses)

  monkeypatch.setattr(outputs.Progress, 'update', crash_in_second_batch)
  with pytest.raises(Crash):
    run.run(config)
  assert resume.Manifest(str(tmp_path / 'out')).finished() == {'astronaut', 'cameraman'}
  assert os.listdir(tmp_path / 'out' / 'checkpoints')
  monkeypatch.setattr(outputs.Progress, 'update', real_update)
  capsys.readouterr()
  assert run.run(config) == 0
  err = capsys.readouterr().err
  assert '2 of 3 images already finished' in err
  assert 'resuming cat from the checkpoint after step 8' in err
  _assert_same_results(reference, tmp_path / 'out')
  assert not (tmp_path / 'out' / 'checkpoints').exists()


def test_sigkill_then_rerun_resumes(tmp_path, converted, inputs, reference):
  out = tmp_path / 'out'
  args = _cli_args(converted['zip'], inputs, out)
  proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=os.environ.copy(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    ckpt = out / 'checkpoints'
    if ckpt.exists() and any(p.name.isdigit() for p in ckpt.iterdir()):
      break
    time.sleep(0.05)
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
  assert run.run(_base_config(converted['zip'], inputs, out)) == 0
  assert '3 of 3 images already finished' in capsys.readouterr().err
  assert (out / 'metrics.csv').read_bytes() == before


def test_changed_config_is_refused(tmp_path, converted, inputs, reference):
  out = tmp_path / 'out'
  shutil.copytree(reference, out)
  before = sorted(p.name for p in out.iterdir())
  result = run_cli(*_cli_args(converted['zip'], inputs, out, '--config.steps=13'))
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1 and len(lines) == 1
  assert 'steps 12 -> 13' in lines[0] and 'another outdir' in lines[0]
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
    run.run(config)
  monkeypatch.setattr(resume.Manifest, 'add', real_add)
  assert run.run(config) == 0
  _assert_same_results(reference, tmp_path / 'out')  # no duplicated cat row


def test_nan_image_fails_alone(tmp_path, converted, inputs, monkeypatch, capsys):
  real_load = data.load_image

  def poisoned(path, resolution):
    image = real_load(path, resolution)
    return image * np.nan if 'cameraman' in path else image

  monkeypatch.setattr(data, 'load_image', poisoned)
  out = tmp_path / 'out'
  assert run.run(_base_config(converted['zip'], inputs, out)) == 1
  err = capsys.readouterr().err
  assert 'failed' in err and 'cameraman' in err and 'NaN' in err
  rows = [r['image'] for r in csv.DictReader(open(out / 'metrics.csv'))]
  assert rows == ['astronaut', 'cat']
  assert not (out / 'cameraman').exists()


def test_four_devices_match_one(tmp_path, converted, inputs, reference):
  """batch_size 3 on 4 devices: padded to 4, sharded, same results."""
  out = tmp_path / 'out'
  code = ('import jax, sys; from sphinx_jax import run; '
          'sys.path.insert(0, "tests"); from test_resume import _base_config; '
          'assert len(jax.local_devices()) == 4; '
          f'sys.exit(run.run(_base_config({converted["zip"]!r}, {str(inputs)!r}, '
          f'{str(out)!r}, batch_size=3)))')
  flags = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4'
  result = run_cli('-c', code, env={'XLA_FLAGS': flags})
  assert result.returncode == 0, result.stderr
  # Other batch sizes per device round differently; 12 Adam steps amplify
  # that to ~1e-4 of the codes' scale (a sharding bug would be O(1)).
  for name in NAMES:
    a, b = _codes(reference, name), _codes(out, name)
    assert rel_err(b['wplus_mean'], a['wplus_mean']) < 1e-3, name
  rows_a = {r['image']: r for r in csv.DictReader(open(reference / 'metrics.csv'))}
  rows_b = {r['image']: r for r in csv.DictReader(open(out / 'metrics.csv'))}
  for name in NAMES:
    assert abs(float(rows_a[name]['psnr']) - float(rows_b[name]['psnr'])) < 1e-2


def test_two_processes_equal_one(tmp_path, converted, inputs, reference):
  out = tmp_path / 'out'
  args = _cli_args(converted['zip'], inputs, out, '--config.distributed.num_processes=2')
  procs = [subprocess.Popen([sys.executable, *args, f'--config.distributed.process_id={i}'],
                            cwd=REPO, env=os.environ.copy(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for i in (0, 1)]
  results = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], results
  # Process 0 took astronaut and cat, process 1 cameraman; all merged.
  assert resume.Manifest(str(out)).finished() == set(NAMES)
  assert {p.name for p in out.glob('manifest*.jsonl')} == {
      'manifest.process0.jsonl', 'manifest.process1.jsonl'}
  _assert_same_results(reference, out)
  assert [r['image'] for r in csv.DictReader(open(out / 'metrics.csv'))] == NAMES


def test_process_share_from_config_or_launcher_environment(monkeypatch):
  from ml_collections import config_dict
  from sphinx_jax import hosts
  from sphinx_jax.errors import SphinxError
  cfg = config_dict.ConfigDict({'num_processes': 0, 'process_id': 0})
  for var in ('JAX_PROCESS_ID', 'JAX_NUM_PROCESSES', 'SLURM_PROCID', 'SLURM_NTASKS',
              'OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE'):
    monkeypatch.delenv(var, raising=False)
  try:
    assert hosts.initialize(cfg) == (0, 1) and hosts.suffix() == ''
    monkeypatch.setenv('SLURM_PROCID', '2')
    monkeypatch.setenv('SLURM_NTASKS', '3')
    assert hosts.initialize(cfg) == (2, 3) and hosts.suffix() == '.process2'
    assert hosts.share(list('abcdefg')) == ['c', 'f']
    cfg.update({'num_processes': 2, 'process_id': 1})  # the config wins
    assert hosts.initialize(cfg) == (1, 2)
    cfg.update({'process_id': 2})
    with pytest.raises(SphinxError, match='process index 2'):
      hosts.initialize(cfg)
  finally:
    hosts.initialize(config_dict.ConfigDict({'num_processes': 1, 'process_id': 0}))


def test_a_jax_distributed_runtime_is_refused_before_any_work(tmp_path,
                                                               converted,
                                                               inputs):
  """Two processes under jax.distributed (coordinator on 127.0.0.1): Orbax
  would write only process 0's arrays, so neither may start."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  out = tmp_path / 'out'
  script = (
      'import sys, jax; from sphinx_jax import cli, run; '
      f'jax.distributed.initialize("127.0.0.1:{port}", 2, int(sys.argv[1])); '
      "sys.argv = sys.argv[:1] + sys.argv[2:]; "
      "cli.run(run.run, 'configs/invert.py')")
  args = _cli_args(converted['zip'], inputs, out)[2:]  # the flags alone
  procs = [subprocess.Popen([sys.executable, '-c', script, str(i), *args],
                            cwd=REPO, env=os.environ.copy(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for i in (0, 1)]
  results = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, results):
    assert p.returncode == 1, err
    assert err.strip().splitlines()[-1] == (
        'error: this JAX runtime spans 2 processes (jax.distributed or a '
        'multi-host TPU slice), where Orbax saves host data from process 0 '
        "only and the other processes' outputs would be lost; start one "
        'independent process per host instead (README, "Several hosts")')
  assert not out.exists()
