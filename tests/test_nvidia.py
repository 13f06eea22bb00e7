"""NVIDIA pickles (stylegan2-ada-pytorch, stylegan3 repo, TensorFlow): detection,
golden outputs, safety, refusals, conv_clamp."""

import io
import json
import pickle
import struct
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sphinx_jax
from sphinx_jax import convert
from sphinx_jax.files import generator_dir
from sphinx_jax.models import stylegan2
from sphinx_jax.convert import ada, pickle_scan, tensorflow
from sphinx_jax.errors import ForbiddenGlobal, SphinxError
import torch_writer
from conftest import FIXTURES, nhwc, rel_err, run_cli

ADA = FIXTURES / 'stylegan2_ada_small.pkl'
TF = FIXTURES / 'stylegan2_tf_small.pkl'
SOURCES = {'ada': ADA, 'tf': TF}


# --- Writers for crafted pickles (no torch, opcodes by hand) -----------------

class Raw(bytes):
  """Pickle bytes to splice in as they are."""


def _global(module: str, name: str) -> bytes:
  return b'c' + module.encode() + b'\n' + name.encode() + b'\n'


def _storage_payload(flat: np.ndarray, as_zip: bool) -> bytes:
  """`torch.save(storage)`: the legacy stream (what torch writes) or a zip."""
  pid = (b'(' + pickle.dumps('storage', 2)[2:-1] + _global('torch', 'FloatStorage') +
         pickle.dumps('0', 2)[2:-1] + pickle.dumps('cpu', 2)[2:-1] +
         pickle.dumps(flat.size, 2)[2:-1])
  if as_zip:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as z:
      z.writestr('archive/data.pkl', b'\x80\x02' + pid + b'tQ.')
      z.writestr('archive/data/0', flat.tobytes())
    return buf.getvalue()
  return (torch_writer.legacy_header() + b'\x80\x02' + pid + b'NtQ.' +
          pickle.dumps(['0'], 2) + struct.pack('<q', flat.size) + flat.tobytes())


def dumps(obj, zip_storages: bool = False) -> bytes:
  """Pickles records (`PersistentObject`, `Network`) the way NVIDIA's code does:
  persistent objects as `_reconstruct_persistent_obj(meta)`, arrays as torch
  tensors inside them and as numpy arrays inside TF networks."""

  def write(x, torch_arrays):
    if isinstance(x, Raw):
      return bytes(x)
    if isinstance(x, ada.PersistentObject):
      meta = {**x.meta, 'class_name': x.class_name, 'state': x.state}
      return (_global('torch_utils.persistence', '_reconstruct_persistent_obj') +
              b'(' + write(meta, True) + b'tR')
    if isinstance(x, tensorflow.Network):
      return (_global('dnnlib.tflib.network', 'Network') + b')\x81' +
              write(x.state, False) + b'b')
    if isinstance(x, dict):
      return b'}(' + b''.join(write(k, torch_arrays) + write(v, torch_arrays)
                              for k, v in x.items()) + b'u'
    if isinstance(x, (list, tuple, set)):
      items = b'(' + b''.join(write(v, torch_arrays) for v in x)
      if isinstance(x, set):
        return _global('builtins', 'set') + b'(]' + items + b'etR'
      return b']' + items + b'e' if isinstance(x, list) else items + b't'
    if isinstance(x, np.ndarray) and torch_arrays:
      a = np.ascontiguousarray(x, np.float32)
      payload = _storage_payload(a.reshape(-1), zip_storages)
      strides = tuple(int(np.prod(a.shape[i + 1:])) for i in range(a.ndim))
      return (_global('torch._utils', '_rebuild_tensor_v2') + b'(' +
              _global('torch.storage', '_load_from_bytes') + b'(B' +
              struct.pack('<I', len(payload)) + payload + b'tR' + b'K\x00' +
              write(a.shape, True) + write(strides, True) + b'\x89' +
              _global('collections', 'OrderedDict') + b')RtR')
    # Leaves (str, numbers, None, numpy arrays and scalars): pickle's own bytes;
    # their memo indices are only read back inside the same fragment.
    return pickle.dumps(x, 2)[2:-1]

  return b'\x80\x03' + write(obj, False) + b'.'


def _ada_records():
  return ada.load_ada(ADA.read_bytes(), str(ADA))


def _module(rec, path):
  for name in path.split('.'):
    rec = rec.modules[name]
  return rec


def _write(tmp_path, obj, name='crafted.pkl', **kwargs):
  path = tmp_path / name
  path.write_bytes(dumps(obj, **kwargs))
  return path


# --- Converted fixtures (one subprocess, torch made unimportable) -------------

@pytest.fixture(scope='module')
def nv(tmp_path_factory):
  """{'ada': dir, 'tf': dir, 'tf16': dir}, converted with `torch` blocked."""
  root = tmp_path_factory.mktemp('nvidia')
  jobs = {'ada': [str(ADA)], 'tf': [str(TF)], 'tf16': [str(TF), '--resolution', '16']}
  calls = '; '.join(
      f'codes.append(main([{args[0]!r}, {str(root / name)!r}, *{args[1:]!r}]))'
      for name, args in jobs.items())
  code = ('import sys; sys.modules["torch"] = None; '
          'from convert_weights import main; codes = []; '
          f'{calls}; sys.exit(max(codes))')
  result = run_cli('-c', code)
  assert result.returncode == 0, result.stderr
  assert result.stdout.count('wrote') == 3
  return {name: str(root / name) for name in jobs}


@pytest.fixture(scope='module')
def nv_golden():
  return dict(np.load(FIXTURES / 'nvlabs_small_golden.npz'))


@pytest.fixture(scope='module', params=['ada', 'tf'])
def gen(request, nv):
  return sphinx_jax.load_generator(nv[request.param])


# --- Detection ---------------------------------------------------------------

def test_detection_lists_the_real_globals():
  found, complete = pickle_scan.pickle_globals(ADA.read_bytes())
  assert complete
  # Protocol 4: STACK_GLOBAL operands come back through the memo.
  assert set(found) == {
      ('torch_utils.persistence', '_reconstruct_persistent_obj'),
      ('collections', 'OrderedDict'), ('torch._utils', '_rebuild_parameter'),
      ('torch._utils', '_rebuild_tensor_v2'), ('torch.storage', '_load_from_bytes'),
      ('numpy._core.multiarray', 'scalar'), ('numpy', 'dtype'),
      ('dnnlib.util', 'EasyDict')}
  assert pickle_scan.detect(ADA.read_bytes(), 'a') == pickle_scan.ADA
  assert pickle_scan.detect(TF.read_bytes(), 't') == pickle_scan.TENSORFLOW


@pytest.mark.parametrize('protocol', [0, 2, 4])
def test_embedded_source_does_not_fool_detection(protocol):
  # Text that a byte search would take for the globals of both formats.
  src = ('import os\ncdnnlib.tflib.network\nNetwork\n'
         'ctorch_utils.persistence\n_reconstruct_persistent_obj\n')
  data = pickle.dumps({'module_src': src, 'build_module_src': src}, protocol)
  assert pickle_scan.detect(data, 'x') is None
  assert pickle_scan.pickle_globals(data) == ([], True)


def test_detection_ignores_strings_inside_a_real_pickle():
  g = _ada_records()['G_ema']
  g.meta['module_src'] = 'cdnnlib.tflib.network\nNetwork\ncos\nsystem\n'
  assert pickle_scan.detect(dumps({'G_ema': g}), 'x') == pickle_scan.ADA


def test_unknown_pickle_gets_one_line(tmp_path):
  path = tmp_path / 'other.pkl'
  path.write_bytes(pickle.dumps({'weights': np.ones(3)}, 4))
  with pytest.raises(SphinxError, match=r'other\.pkl: not a supported checkpoint '
                     r'\(not a torch zip .* nor an NVIDIA .*numpy'):
    convert.read_source(str(path))


# --- Golden outputs ----------------------------------------------------------

def test_metadata(nv):
  for name, fmt in (('ada', 'stylegan2-ada-pytorch'), ('tf', 'tensorflow')):
    meta = json.load(open(f'{nv[name]}/generator.json'))
    assert meta['source']['format'] == fmt
    assert meta['w_avg'] == 'checkpoint' and meta['noise_maps'] is True
    assert meta['architecture'] == {
        'resolution': 32, 'z_dim': 64, 'w_dim': 64, 'n_mlp': 2, 'lr_mul': 0.01,
        'channels': {'4': 64, '8': 64, '16': 64, '32': 32}, 'n_latent': 8,
        'num_noise': 7}


def test_mapping_and_truncation(gen, nv_golden):
  z = jnp.asarray(nv_golden['z'])
  ws, half = nv_golden['ws'], nv_golden['ws_psi05']
  for golden in (ws, half):  # one w broadcast to every layer
    np.testing.assert_array_equal(golden, np.broadcast_to(golden[:, :1], golden.shape))
  assert rel_err(gen.mapping(z), ws[:, 0]) < 1e-5
  assert rel_err(gen.mapping(z, truncation_psi=0.5), half[:, 0]) < 1e-5


def test_images(gen, nv_golden):
  ws = jnp.asarray(nv_golden['ws'])
  synthesize = jax.jit(lambda g, ws: (g.synthesize(ws), g.synthesize(ws, 'zero')))
  const, none = synthesize(gen, ws)
  assert rel_err(const, nhwc(nv_golden['img_const'])) < 1e-4
  assert rel_err(none, nhwc(nv_golden['img_none'])) < 1e-4


def test_gradient(gen, nv_golden):
  r = jnp.asarray(nhwc(nv_golden['R']))
  grad = jax.jit(jax.grad(lambda ws, g: jnp.sum(g.synthesize(ws) * r)))(
      jnp.asarray(nv_golden['ws']), gen)
  assert rel_err(grad, nv_golden['grad_ws']) < 1e-3


def test_truncation_equals_intermediate_skip_output(nv, nv_golden):
  full = sphinx_jax.load_generator(nv['tf'])
  small = sphinx_jax.load_generator(nv['tf16'])
  assert (small.resolution, small.n_latent, small.num_noise) == (16, 6, 5)
  assert json.load(open(f'{nv["tf16"]}/generator.json'))['truncated_from'] == 32
  ws = jnp.asarray(nv_golden['ws'])
  _, state = full.module.apply(
      {'params': full.params}, ws, [n[None, :, :, None] for n in full.noise_const],
      method=type(full.module).synthesize, capture_intermediates=True)
  reference = state['intermediates']['synthesis']['b16']['torgb']['__call__'][0]
  np.testing.assert_allclose(small.synthesize(ws[:, :6]), reference, rtol=0, atol=1e-6)
  np.testing.assert_array_equal(small.w_avg, full.w_avg)


# --- Same tensors through every container -------------------------------------

@pytest.mark.parametrize('zip_storages', [False, True])
def test_rewritten_records_convert_identically(tmp_path, zip_storages):
  reference = convert.read_source(str(ADA))
  g = _ada_records()['G_ema']
  path = _write(tmp_path, {'G_ema': g}, zip_storages=zip_storages)
  src = convert.read_source(str(path))
  assert src.arch == reference.arch and src.format == 'stylegan2-ada-pytorch'
  jax.tree_util.tree_map(np.testing.assert_array_equal, src.params, reference.params)
  np.testing.assert_array_equal(src.w_avg, reference.w_avg)
  # The stylegan3 repository's networks_stylegan2 passes synthesis kwargs flat.
  kwargs = g.state['_init_kwargs']
  kwargs.update(kwargs.pop('synthesis_kwargs'))
  flat = convert.read_source(str(_write(tmp_path, {'G_ema': g}, 'sg3.pkl')))
  assert flat.format == 'stylegan3-networks_stylegan2' and flat.arch == reference.arch


def test_tf_and_ada_give_the_same_tree():
  ada, tf = convert.read_source(str(ADA)), convert.read_source(str(TF))
  assert ada.arch == tf.arch
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6),
      ada.params, tf.params)
  for a, b in zip(ada.noise, tf.noise):
    np.testing.assert_array_equal(a, b)


# --- Safety --------------------------------------------------------------------

def _evil(marker) -> Raw:
  return Raw(_global('posix', 'system') + b'(V' + f'touch {marker}'.encode() + b'\ntR')


def test_tf_pickle_with_a_forbidden_global_is_refused(tmp_path):
  marker = tmp_path / 'pwned'
  data = TF.read_bytes()
  assert data.endswith(b'.')
  # Call os.system and drop its result, after the (G, D, Gs) tuple is built.
  evil = tmp_path / 'evil_tf.pkl'
  evil.write_bytes(data[:-1] + _evil(marker) + b'0.')
  result = run_cli('convert_weights.py', evil, tmp_path / 'out')
  assert result.returncode == 2, result.stderr
  line = result.stderr.strip()
  assert len(line.splitlines()) == 1 and 'posix.system' in line and str(evil) in line
  assert not marker.exists() and not (tmp_path / 'out').exists()


def test_ada_pickle_with_a_forbidden_global_is_refused(tmp_path):
  marker = tmp_path / 'pwned'
  path = _write(tmp_path, {'G_ema': _ada_records()['G_ema'], 'x': _evil(marker)})
  with pytest.raises(ForbiddenGlobal, match='posix.system'):
    convert.read_source(str(path))  # refused by the opcode walk
  with pytest.raises(ForbiddenGlobal, match='posix.system'):
    ada.load_ada(path.read_bytes(), str(path))  # and by the unpickler
  assert not marker.exists()


# --- Refusals -------------------------------------------------------------------

def _conditional(g):
  g.state['_init_kwargs']['c_dim'] = g.state['c_dim'] = 10


def _architecture(name):
  def edit(g):
    g.state['_init_kwargs']['synthesis_kwargs']['architecture'] = name
    for block in _module(g, 'synthesis').modules.values():
      block.state['architecture'] = name
  return edit


def _grayscale(g):
  g.state['_init_kwargs']['img_channels'] = 1


def _stylegan3(g):
  layer = lambda cls, **p: ada.PersistentObject(
      cls, {'_parameters': {k: np.zeros(s, np.float32) for k, s in p.items()},
            '_modules': {}}, {})
  affine = layer('FullyConnectedLayer', weight=(4, 64), bias=(4,))
  l0 = layer('SynthesisLayer', weight=(8, 4, 3, 3))
  l0.state['_modules'] = {'affine': affine}
  g.modules['synthesis'] = ada.PersistentObject('SynthesisNetwork', {
      '_modules': {'input': layer('SynthesisInput', freqs=(8, 2)), 'L0_36_8': l0}},
      {})


def _clamp_mismatch(g):
  g.state['_init_kwargs']['synthesis_kwargs']['conv_clamp'] = 256


@pytest.mark.parametrize('edit,message', [
    (_conditional, 'conditional generator'),
    (_architecture('resnet'), "'resnet' architecture"),
    (_architecture('orig'), "'orig' architecture"),
    (_grayscale, 'img_channels 1'),
    (_stylegan3, 'StyleGAN3 generator'),
    (_clamp_mismatch, 'conv_clamp 256 but its layers use None'),
    (lambda g: g.state['_init_kwargs'].update(c_dim='none'),
     r'malformed G_ema network \(ValueError'),
    (lambda g: _module(g, 'synthesis.b8.conv1').state['_buffers'].pop('noise_const'),
     'G_ema lacks synthesis.b8.conv1.noise_const'),
    (lambda g: _module(g, 'synthesis.b8.torgb').state['_buffers'].update(
        extra=np.ones(2, np.float32)), 'unexpected tensor synthesis.b8.torgb.extra'),
])
def test_ada_refusals(tmp_path, edit, message):
  g = _ada_records()['G_ema']
  edit(g)
  path = _write(tmp_path, {'G_ema': g})
  with pytest.raises(SphinxError, match=message) as e:
    convert.read_source(str(path))
  assert str(path) in str(e.value) and '\n' not in str(e.value)


def test_ada_uses_g_ema_never_g(tmp_path):
  top = _ada_records()
  with pytest.raises(SphinxError, match='no G_ema generator'):
    convert.read_source(str(_write(tmp_path, {'G': top['G'], 'D': top['D']})))


def _tf_networks():
  return tensorflow.load_tensorflow(TF.read_bytes(), str(TF))


def _tf_rename_torgb_lod(gs):
  synthesis = gs.state['components']['synthesis'].state
  synthesis['variables'] = [
      (name.replace('32x32/ToRGB', 'ToRGB_lod0'), v) for name, v in synthesis['variables']]


def _tf_resnet(gs):
  synthesis = gs.state['components']['synthesis'].state
  synthesis['variables'].append(('8x8/Skip/weight', np.zeros((1, 1, 64, 64), np.float32)))


@pytest.mark.parametrize('edit,message', [
    (_tf_rename_torgb_lod, 'ToRGB_lod0/.*: a progressive-growing network'),
    (lambda gs: gs.state['static_kwargs'].update(label_size=10), 'conditional generator'),
    (_tf_resnet, "'resnet' architecture"),
    (lambda gs: gs.state['static_kwargs'].update(fmap_base=1024),
     'Conv1/weight has 32 channels but fmap_base 1024'),
])
def test_tf_refusals(tmp_path, edit, message):
  g, d, gs = _tf_networks()
  edit(gs)
  path = _write(tmp_path, (g, d, gs))
  assert pickle_scan.detect(path.read_bytes(), str(path)) == pickle_scan.TENSORFLOW
  with pytest.raises(SphinxError, match=message) as e:
    convert.read_source(str(path))
  assert str(path) in str(e.value) and '\n' not in str(e.value)


def test_tf_rewritten_unchanged_converts(tmp_path):
  path = _write(tmp_path, _tf_networks())
  src = convert.read_source(str(path))
  jax.tree_util.tree_map(np.testing.assert_array_equal, src.params,
                         convert.read_source(str(TF)).params)


# --- conv_clamp -----------------------------------------------------------------

def _tiny(conv_clamp):
  return stylegan2.Architecture(resolution=8, z_dim=8, w_dim=8, n_mlp=1,
                                channels=((4, 16), (8, 16)), conv_clamp=conv_clamp)


def test_conv_clamp_bounds_conv_and_torgb_outputs():
  shapes = jax.eval_shape(stylegan2.StyleGAN2(_tiny(None)).init,
                          jax.random.key(0), jnp.zeros((1, 8)))['params']
  rng = np.random.default_rng(0)  # numpy: no per-shape compilation
  normal = lambda shape, scale=1.0: jnp.asarray(
      scale * rng.standard_normal(shape), jnp.float32)
  params = jax.tree_util.tree_map(lambda s: normal(s.shape, 3.0), shapes)  # large
  wplus = normal((2, 4, 8))
  noise = [normal((1, r, r, 1)) for r in (4, 8, 8)]
  clamp = 0.5

  @jax.jit
  def run_all(params):
    return [stylegan2.StyleGAN2(_tiny(c)).apply(
        {'params': params}, wplus, noise, method='synthesize',
        capture_intermediates=True) for c in (clamp, None, 1e9)]

  (img, state), (plain, plain_state), (loose, _) = run_all(params)
  inter, plain_inter = state['intermediates']['synthesis'], plain_state['intermediates']['synthesis']
  layers = [('b4', 'conv1'), ('b4', 'torgb'), ('b8', 'conv0'), ('b8', 'conv1')]
  for block, layer in layers:
    out = inter[block][layer]['__call__'][0]
    assert float(jnp.abs(out).max()) <= clamp, (block, layer)
    assert float(jnp.abs(plain_inter[block][layer]['__call__'][0]).max()) > clamp
  assert float(jnp.abs(img - plain).max()) > 0.1
  # A clamp that never bites changes nothing.
  assert rel_err(loose, plain) < 1e-6


def test_conv_clamp_in_generator_json():
  arch = _tiny(256.0)
  d = generator_dir.architecture_to_json(arch)
  assert d['conv_clamp'] == 256.0
  assert generator_dir.architecture_from_json(d) == arch
  assert 'conv_clamp' not in generator_dir.architecture_to_json(_tiny(None))
  assert generator_dir.architecture_from_json(
      generator_dir.architecture_to_json(_tiny(None))).conv_clamp is None


def test_ada_conv_clamp_is_read(tmp_path):
  g = _ada_records()['G_ema']
  g.state['_init_kwargs']['synthesis_kwargs']['conv_clamp'] = 256
  for rec in ada._records(g):  # pylint: disable=protected-access
    if 'conv_clamp' in rec.state:
      rec.state['conv_clamp'] = 256
  src = convert.read_source(str(_write(tmp_path, {'G_ema': g})))
  assert src.arch.conv_clamp == 256.0
  assert src.arch.truncated(16).conv_clamp == 256.0
