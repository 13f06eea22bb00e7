"""convert_weights.py: formats, truncation, safety and failure paths."""

import json
import os
import pickle
import re
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sphinx_jax
from sphinx_jax import convert
from sphinx_jax.convert import torch_files
from sphinx_jax.errors import ForbiddenGlobal, SphinxError
import torch_writer
from conftest import FIXTURES, nhwc, rel_err, run_cli

ZIP = FIXTURES / 'rosinality_small.pt'
LEGACY = FIXTURES / 'rosinality_small_legacy.pt'


@pytest.fixture(scope='module')
def ckpt():
  return torch_files.load(str(ZIP))


def test_zip_and_legacy_hold_identical_tensors(ckpt):
  legacy = torch_files.load(str(LEGACY))
  assert set(legacy['g_ema']) == set(ckpt['g_ema'])
  for key, value in ckpt['g_ema'].items():
    np.testing.assert_array_equal(legacy['g_ema'][key], value)
  assert ckpt['args'].size == 32  # argparse.Namespace read as an inert holder


def test_metadata(converted):
  meta = json.load(open(os.path.join(converted['zip'], 'generator.json')))
  assert meta['architecture'] == {
      'resolution': 32, 'z_dim': 64, 'w_dim': 64, 'n_mlp': 8, 'lr_mul': 0.01,
      'channels': {'4': 64, '8': 64, '16': 48, '32': 32}, 'n_latent': 8,
      'num_noise': 7}
  assert meta['source']['format'] == 'rosinality-zip'
  assert meta['source']['sha256'] == convert.sha256(str(ZIP))
  assert meta['noise_maps'] is True and meta['w_avg'] == 'checkpoint'
  legacy = json.load(open(os.path.join(converted['legacy'], 'generator.json')))
  assert legacy['source']['format'] == 'rosinality-legacy'


def test_cli_converts_without_torch(tmp_path, golden):
  out = tmp_path / 'g'
  # sys.modules['torch'] = None makes every `import torch` fail.
  code = ('import sys; sys.modules["torch"] = None; '
          'from convert_weights import main; '
          f'sys.exit(main([{str(LEGACY)!r}, {str(out)!r}]))')
  result = run_cli('-c', code)
  assert result.returncode == 0, result.stderr
  assert 'wrote' in result.stdout
  g = sphinx_jax.load_generator(str(out))
  assert rel_err(g.mapping(jnp.asarray(golden['z'])), golden['w']) < 1e-4


def test_truncation_equals_intermediate_skip_output(tmp_path, converted, golden):
  full = sphinx_jax.load_generator(converted['zip'])
  out = tmp_path / 'g16'
  result = run_cli('convert_weights.py', ZIP, out, '--resolution', 16)
  assert result.returncode == 0, result.stderr
  small = sphinx_jax.load_generator(str(out))
  assert (small.resolution, small.n_latent, small.num_noise) == (16, 6, 5)
  meta = json.load(open(out / 'generator.json'))
  assert meta['truncated_from'] == 32 and meta['architecture']['resolution'] == 16

  wplus = jnp.asarray(golden['wplus'])
  noise = [jnp.asarray(nhwc(golden[f'noise_{j}'])) for j in range(7)]
  content = jnp.asarray(nhwc(golden['content']))
  # The 16-px skip image inside the full 32-px generator, captured by Flax.
  _, state = full.module.apply(
      {'params': full.params}, wplus, noise, content,
      method=type(full.module).synthesize, capture_intermediates=True)
  reference = state['intermediates']['synthesis']['b16']['torgb']['__call__'][0]
  image = small.synthesize(wplus[:, :6], noise[:5], content)
  assert image.shape == (2, 16, 16, 3)
  np.testing.assert_allclose(image, reference, rtol=0, atol=1e-6)
  np.testing.assert_array_equal(small.w_avg, full.w_avg)


def test_old_checkpoint_without_noise_or_latent_avg(tmp_path, ckpt):
  g_ema = {k: v for k, v in ckpt['g_ema'].items() if not k.startswith('noises.')}
  src = tmp_path / 'old.pt'
  torch_writer.save_legacy({'g_ema': g_ema, 'd': {'x': np.ones(3)}}, str(src))
  g = convert.convert(str(src), str(tmp_path / 'g'))
  meta = json.load(open(tmp_path / 'g' / 'generator.json'))
  assert meta['noise_maps'] is False and meta['w_avg'].startswith('estimated')
  assert g.noise_const is None
  z = jax.random.normal(jax.random.key(1), (2000, 64))
  np.testing.assert_allclose(g.w_avg, jax.jit(type(g).mapping)(g, z).mean(0),
                             atol=0.1)
  wplus = jnp.zeros((1, 8, 64)) + g.w_avg
  stored, zero = jax.jit(lambda g, w: (g.synthesize(w), g.synthesize(w, 'zero')))(
      g, wplus)
  np.testing.assert_array_equal(stored, zero)


def test_training_checkpoint_extras_are_read_through(tmp_path, ckpt, golden):
  """A train.py checkpoint: g, d, optimiser states, ada_aug_p, args."""
  optim = {'state': {0: {'step': np.array(5.0), 'exp_avg': np.ones((2, 2))}},
           'param_groups': [{'lr': 0.002, 'betas': (0.0, 0.99), 'params': [0]}]}
  src = tmp_path / 'train.pt'
  g_train = {k: v * 1.5 for k, v in ckpt['g'].items()}  # differs from g_ema
  torch_writer.save_zip({'g': g_train, 'd': {'w': np.ones(3)}, 'g_ema': ckpt['g_ema'],
                         'g_optim': optim, 'd_optim': optim, 'ada_aug_p': 0.25},
                        str(src))
  convert.convert(str(src), str(tmp_path / 'g'))
  g = sphinx_jax.load_generator(str(tmp_path / 'g'))
  # g_ema, not g: the mapping matches the golden w.
  assert rel_err(g.mapping(jnp.asarray(golden['z'])), golden['w']) < 1e-4


def test_bare_state_dict_is_accepted(tmp_path, ckpt):
  src = tmp_path / 'bare.pt'
  torch_writer.save_zip(ckpt['g_ema'], str(src))
  assert convert.convert(str(src), str(tmp_path / 'g')).resolution == 32


def _evil_pickle(marker) -> bytes:
  """A protocol-0 pickle that would run `touch marker` if unpickled normally."""
  return b'cos\nsystem\n(V' + f'touch {marker}'.encode() + b'\ntR.'


@pytest.mark.parametrize('kind', ['zip', 'legacy'])
def test_forbidden_global_is_refused_and_nothing_runs(tmp_path, kind):
  marker = tmp_path / 'pwned'
  src = tmp_path / 'evil.pt'
  if kind == 'zip':
    with zipfile.ZipFile(src, 'w') as z:
      z.writestr('archive/data.pkl', _evil_pickle(marker))
      z.writestr('archive/version', '3\n')
  else:
    src.write_bytes(torch_writer.legacy_header() + _evil_pickle(marker))
  with pytest.raises(ForbiddenGlobal, match='os.system'):
    torch_files.load(str(src))
  result = run_cli('convert_weights.py', src, tmp_path / 'out')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [result.stderr.strip()]
  assert 'os.system' in result.stderr and 'Traceback' not in result.stderr
  assert not marker.exists()
  assert not (tmp_path / 'out').exists()


def test_extra_global_inside_a_real_checkpoint_is_refused(tmp_path, ckpt):
  data, storages = torch_writer.dumps_pickle({'g_ema': ckpt['g_ema']})
  # Swap the container global for one that runs code.
  data = data.replace(b'ccollections\nOrderedDict\n', b'cbuiltins\neval\n', 1)
  src = tmp_path / 'evil.pt'
  with zipfile.ZipFile(src, 'w') as z:
    z.writestr('archive/data.pkl', data)
    for key, array in storages.items():
      z.writestr(f'archive/data/{key}', array.tobytes())
  with pytest.raises(ForbiddenGlobal, match='builtins.eval'):
    convert.read_source(str(src))


def _cli_error(tmp_path, src):
  result = run_cli('convert_weights.py', src, tmp_path / 'out')
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1, result.stderr
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
  assert not (tmp_path / 'out').exists()
  return lines[0]


@pytest.mark.parametrize('src', [ZIP, LEGACY])
def test_truncated_file(tmp_path, src):
  cut = tmp_path / 'cut.pt'
  cut.write_bytes(src.read_bytes()[:len(src.read_bytes()) // 2])
  assert str(cut) in _cli_error(tmp_path, cut)


def test_not_a_checkpoint(tmp_path):
  for name, data in (('text.pt', b'hello world\n' * 10), ('empty.pt', b''),
                     ('plain.pkl', pickle.dumps({'a': 1}))):
    path = tmp_path / name
    path.write_bytes(data)
    line = _cli_error(tmp_path, path)
    assert str(path) in line


def test_missing_file(tmp_path):
  line = _cli_error(tmp_path, tmp_path / 'missing.pt')
  assert 'missing.pt' in line and 'cannot read' in line


@pytest.mark.parametrize('edit,message', [
    (lambda sd: sd.pop('convs.3.conv.modulation.bias'), 'convs.3.conv.modulation.bias'),
    (lambda sd: sd.update({'convs.1.activate.bias': np.zeros(7, np.float32)}),
     'b8.*conv1.*bias'),
    (lambda sd: sd.update({'style.9.weight': np.zeros((64, 64), np.float32)}),
     'style.9.bias'),
    (lambda sd: sd.update({'extra.weight': np.zeros(3, np.float32)}), 'extra.weight'),
    (lambda sd: sd.pop('noises.noise_3'), 'noises.noise_3'),
    (lambda sd: sd.update({'to_rgb1.bias': np.zeros((1, 12, 1, 1), np.float32)}),
     'SWAGAN'),
])
def test_missing_extra_or_misshaped_tensors(tmp_path, ckpt, edit, message):
  g_ema = dict(ckpt['g_ema'])
  edit(g_ema)
  src = tmp_path / 'bad.pt'
  torch_writer.save_zip({'g_ema': g_ema}, str(src))
  line = _cli_error(tmp_path, src)
  assert str(src) in line
  assert re.search(message, line), line


def test_no_generator_in_file(tmp_path):
  src = tmp_path / 'd_only.pt'
  torch_writer.save_zip({'d': {'w': np.ones(2)}}, str(src))
  assert 'no g_ema' in _cli_error(tmp_path, src)


def test_existing_output_is_kept_unless_overwrite(tmp_path, converted):
  out = tmp_path / 'g'
  out.mkdir()
  (out / 'keep.txt').write_text('mine')
  result = run_cli('convert_weights.py', ZIP, out)
  assert result.returncode == 1 and '--overwrite' in result.stderr
  assert (out / 'keep.txt').read_text() == 'mine'
  result = run_cli('convert_weights.py', ZIP, out, '--overwrite')
  assert result.returncode == 0, result.stderr
  assert not (out / 'keep.txt').exists() and (out / 'generator.json').exists()


def test_bad_truncation_resolution(tmp_path):
  result = run_cli('convert_weights.py', ZIP, tmp_path / 'out', '--resolution', 64)
  assert result.returncode == 1 and 'cannot truncate' in result.stderr


def test_load_generator_failures(tmp_path, converted):
  with pytest.raises(SphinxError, match='no such generator directory'):
    sphinx_jax.load_generator(str(tmp_path / 'nope'))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(SphinxError, match='no generator.json'):
    sphinx_jax.load_generator(str(tmp_path / 'empty'))
  broken = tmp_path / 'broken'
  os.system(f'cp -r {converted["zip"]} {broken}')
  (broken / 'generator.json').write_text('{not json')
  with pytest.raises(SphinxError, match='generator.json: unreadable'):
    sphinx_jax.load_generator(str(broken))
  os.system(f'rm -rf {broken} && cp -r {converted["zip"]} {broken}')
  meta = json.load(open(broken / 'generator.json'))
  meta['architecture']['channels']['16'] = 40
  json.dump(meta, open(broken / 'generator.json', 'w'))
  with pytest.raises(SphinxError, match=r"b16.*shape"):
    sphinx_jax.load_generator(str(broken))
  os.system(f'rm -rf {broken} && cp -r {converted["zip"]} {broken} && rm -rf {broken}/params/*')
  with pytest.raises(SphinxError, match='cannot read the parameters'):
    sphinx_jax.load_generator(str(broken))
