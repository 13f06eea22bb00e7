"""report.html of a run and of a comparison, loss.csv and
python -m sphinx_jax.report: the pages parse, show what the files on disk
hold, and their loss curves are drawn where their axes say."""

import csv
import html.parser
import math
import re
import shutil
import subprocess
import urllib.parse
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, load_config, run_cli
from sphinx_jax import demo, report, run
from sphinx_jax.errors import SphinxError
from sphinx_jax.files import inputs as input_files
from sphinx_jax.jobs import comparison
from sphinx_jax.reports import chart
from sphinx_jax.runtime import resume

_SVG = '{http://www.w3.org/2000/svg}'


class _Page(html.parser.HTMLParser):
  """What the tests read of a page: every link, and the cells of each
  table with an id. Fails on a tag closed out of order or left open."""
  _VOID = {'meta', 'img', 'br'}

  def __init__(self, text: str):
    super().__init__()
    self.open, self.links, self.tables = [], [], {}
    self._tables = []  # ids of the tables we are in, innermost last
    self.feed(text)
    self.close()
    assert not self.open, self.open

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag not in self._VOID:
      self.open.append(tag)
    if tag in ('img', 'a'):
      self.links.append(attrs['src' if tag == 'img' else 'href'])
    if tag == 'table':
      self._tables.append(attrs.get('id'))
      if attrs.get('id'):
        self.tables[attrs['id']] = {'keys': [], 'rows': []}
    table = self.tables.get(self._tables[-1]) if self._tables else None
    if table is None:
      return
    if tag == 'th':
      table['keys'].append(attrs.get('data-key'))
    elif tag == 'tr' and 'tbody' in self.open:
      table['rows'].append([])
    elif tag == 'td':
      table['rows'][-1].append({**attrs, 'text': ''})

  def handle_data(self, data):
    table = self.tables.get(self._tables[-1]) if self._tables else None
    if table and table['rows'] and self.open[-1] == 'td':
      table['rows'][-1][-1]['text'] += data

  def handle_endtag(self, tag):
    assert self.open and self.open.pop() == tag, tag
    if tag == 'table':
      self._tables.pop()

  def values(self, table: str) -> list[dict[str, str]]:
    """Each row of a table as {sort key: its value}."""
    return [{c['data-key']: c['data-value'] for c in row if 'data-key' in c}
            for row in self.tables[table]['rows']]


def _read_page(outdir):
  """The page parsed; every file it links to must exist."""
  text = (outdir / 'report.html').read_text()
  page = _Page(text)
  for link in page.links:
    assert (outdir / urllib.parse.unquote(link)).exists(), link
  return page, text


def _curves(svg: str) -> dict[str, list[tuple[float, float]]]:
  """Each curve's points, read back through the chart's labelled ticks:
  steps linear in x, losses logarithmic in y (every tick must agree)."""
  root = ET.fromstring(svg)
  ticks = {kind: [(float(t.get(axis)), float(t.text))
                  for t in root.iter(f'{_SVG}text')
                  if t.get('class') == f'{kind}-tick']
           for kind, axis in (('x', 'x'), ('y', 'y'))}
  (x0, s0), (x1, s1) = ticks['x'][0], ticks['x'][-1]
  (y0, l0), (y1, l1) = ticks['y'][0], ticks['y'][-1]
  step = lambda px: s0 + (px - x0) * (s1 - s0) / (x1 - x0)
  log_loss = lambda py: math.log10(l0) + (py - y0) * (
      math.log10(l1) - math.log10(l0)) / (y1 - y0)
  for px, value in ticks['x']:
    assert step(px) == pytest.approx(value, abs=1e-3)
  for py, value in ticks['y']:
    assert log_loss(py) == pytest.approx(math.log10(value), abs=1e-3)
  curves = {}
  for line in root.iter(f'{_SVG}polyline'):
    pairs = [p.split(',') for p in line.get('points').split()]
    curves[line.get('data-label')] = [(step(float(a)), 10 ** log_loss(float(b)))
                                      for a, b in pairs]
  return curves


def _assert_curve_is(points, loss_csv):
  rows = list(csv.DictReader(open(loss_csv)))
  assert len(points) == len(rows)
  for (step, loss), row in zip(points, rows):
    assert step == pytest.approx(int(row['step']), abs=0.01)
    assert loss == pytest.approx(float(row['loss']), rel=2e-3)


# A denoising run (its pages show observations), on the fixture generator;
# the comparison's wplus run is the same, so the suite compiles it once.
_RUN = {'steps': 5, 'save_every': 2, 'batch_size': 2, 'num_vicinal': 2,
        'operator.name': 'denoise', 'operator.sigma': 0.2}


@pytest.fixture(scope='module')
def run_outdir(converted, tmp_path_factory):
  """A small denoising run: astronaut and cat restored; broken.png skipped
  (not an image) and cameraman failed (its loss NaN)."""
  root = tmp_path_factory.mktemp('report')
  inputs = root / 'inputs'
  inputs.mkdir()
  for f in ('astronaut.jpg', 'cameraman.png', 'cat.jpg'):
    shutil.copy(REPO / 'samples' / f, inputs)
  (inputs / 'broken.png').write_bytes(b'not an image')
  real_load = input_files.load_image

  def poisoned(path, resolution, preprocess):
    image = real_load(path, resolution, preprocess)
    return image * np.nan if 'cameraman' in path else image

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(input_files, 'load_image', poisoned)
    assert run.main(load_config(
        'invert', generator=converted['zip'], inputs=str(inputs),
        outdir=str(root / 'out'), method='wplus', **_RUN)) == 1
  return root / 'out'


def test_run_page_has_a_row_per_image_with_the_csv_values(run_outdir):
  page, _ = _read_page(run_outdir)
  rows = list(csv.DictReader(open(run_outdir / 'metrics.csv')))
  assert [r['image'] for r in rows] == ['astronaut', 'cat']
  shown = page.values('images')
  assert [r['image'] for r in shown] == ['astronaut', 'cat']
  for row, csv_row in zip(shown, rows):
    for column in ('psnr', 'ssim', 'lpips', 'seconds', 'psnr_mean'):
      assert row[column] == csv_row[column]
  for name in ('astronaut', 'cat'):
    for picture in ('target', 'observation', 'reconstruction',
                    'reconstruction_observed', 'mean', 'std'):
      assert f'{name}/{picture}.png' in page.links
    assert f'{name}/progress.gif' in page.links


def test_run_page_lists_skipped_and_failed_files_with_reasons(run_outdir):
  page, _ = _read_page(run_outdir)
  problems = {r['image']: r for r in page.values('problems')}
  assert sorted(problems) == ['broken', 'cameraman']
  assert problems['broken']['problem'] == 'skipped'
  assert 'not a readable image' in problems['broken']['reason']
  assert problems['cameraman']['problem'] == 'failed'
  assert 'NaN' in problems['cameraman']['reason']
  assert problems['cameraman']['file'].endswith('cameraman.png')


def test_loss_csv_has_every_frame_and_the_curves_draw_it(run_outdir):
  _, text = _read_page(run_outdir)
  svgs = re.findall(r'<svg.*?</svg>', text, re.S)
  assert len(svgs) == 2  # a chart per image, in the table's order
  for name, svg in zip(('astronaut', 'cat'), svgs):
    loss_csv = run_outdir / name / 'loss.csv'
    rows = list(csv.DictReader(open(loss_csv)))
    assert [int(r['step']) for r in rows] == [2, 4, 5]  # save_every, last
    assert float(rows[-1]['loss']) < float(rows[0]['loss'])
    assert all(0 < float(r['loss']) < math.inf for r in rows)
    (points,) = _curves(svg).values()
    _assert_curve_is(points, loss_csv)


def test_log_ticks_bracket_the_data():
  for lo, hi in ((0.51, 0.55), (0.8, 1.9), (0.02, 0.8), (3e-5, 2.0),
                 (0.1, 0.1)):
    ticks = chart.loss_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and ticks[0] < ticks[-1]
    assert 2 <= len(ticks) <= 7, ticks
  assert chart.loss_ticks(0.02, 0.8) == [0.01, 0.1, 1.0]
  assert chart.loss_ticks(0.8, 1.9) == [0.8, 0.9, 1.0, 2.0]
  assert chart.step_ticks(5000) == [0, 1000, 2000, 3000, 4000, 5000]
  assert chart.step_ticks(3) == [0, 1, 2, 3]


def test_a_curve_is_drawn_where_its_axes_say():
  points = [(1, 0.9), (40, 0.05), (300, 0.004), (301, 0.0041)]
  curves = _curves(chart.loss_chart([('a', points), ('b', points[:1])]))
  for (step, loss), (s, v) in zip(curves['a'], points):
    assert step == pytest.approx(s, abs=0.01)
    assert loss == pytest.approx(v, rel=1e-3)
  assert len(curves['b']) == 1


class _Killed(Exception):
  pass


def test_a_resumed_run_has_a_whole_curve(tmp_path, converted, monkeypatch,
                                         capsys):
  """Killed after a checkpoint in its second batch, then rerun: the page
  rebuilt from the killed outdir shows the finished images; the resumed
  image's loss.csv has every frame's step once, as an uninterrupted
  run's."""
  inputs = tmp_path / 'inputs'
  inputs.mkdir()
  for f in ('astronaut.jpg', 'cat.jpg', 'retina.jpg'):
    shutil.copy(REPO / 'samples' / f, inputs)
  config = lambda outdir, inputs: load_config(
      'invert', generator=converted['zip'], inputs=str(inputs),
      outdir=str(outdir), method='wplus', checkpoint_every=2, **_RUN)
  whole = tmp_path / 'whole'
  assert run.main(config(whole, inputs / 'retina.jpg')) == 0
  real_save = resume.BatchCheckpoints.save
  saves = []

  def save_then_die(self, step, names, *args):
    real_save(self, step, names, *args)
    if names == [['retina']]:
      saves.append(step)
      if len(saves) == 2:  # after 4 of 5 steps, frames at 2 and 4 saved
        self.checkpoints.manager.wait_until_finished()
        raise _Killed

  monkeypatch.setattr(resume.BatchCheckpoints, 'save', save_then_die)
  out = tmp_path / 'out'
  with pytest.raises(_Killed):
    run.main(config(out, inputs))
  monkeypatch.setattr(resume.BatchCheckpoints, 'save', real_save)
  report.write(str(out))
  page, _ = _read_page(out)
  assert [r['image'] for r in page.values('images')] == ['astronaut', 'cat']
  capsys.readouterr()
  assert run.main(config(out, inputs)) == 0
  assert 'from the checkpoint after step 4' in capsys.readouterr().err
  resumed = list(csv.DictReader(open(out / 'retina' / 'loss.csv')))
  assert [int(r['step']) for r in resumed] == [2, 4, 5]
  assert resumed == list(csv.DictReader(open(whole / 'retina' / 'loss.csv')))
  page, text = _read_page(out)
  assert [r['image'] for r in page.values('images')] == [
      'astronaut', 'cat', 'retina']
  (points,) = _curves(re.findall(r'<svg.*?</svg>', text, re.S)[2]).values()
  _assert_curve_is(points, out / 'retina' / 'loss.csv')


def test_comparison_page_and_labelled_grid_of_a_restoration(tmp_path, capsys,
                                                           converted):
  """A denoising comparison: the observation beside the target, in the
  picture and on the page; the best method of each mean marked. (wplus is
  a prefix of wplus_noise: each column must go to its own method.)"""
  inputs = tmp_path / 'inputs'
  for group, name in (('in_domain', 'digit1'), ('out_of_domain', 'letterA')):
    (inputs / group).mkdir(parents=True)
    shutil.copy(REPO / 'demo' / group / f'{name}.png', inputs / group)
  out = tmp_path / 'demo'
  assert demo.main(load_config('demo', outdir=str(out),
                               methods='wplus,wplus_noise', **{
      'run.generator': converted['zip'], 'run.inputs': str(inputs),
      **{f'run.{k}': v for k, v in _RUN.items()}})) == 0
  capsys.readouterr()
  names = ['in_domain__digit1', 'out_of_domain__letterA']
  # comparison.png: under a header, a row per image of target,
  # observation, wplus, wplus_noise; the image names to the left.
  grid = np.asarray(Image.open(out / 'comparison.png'))
  cell = comparison.CELL + comparison.GAP
  assert grid.shape[0] == comparison.HEADER + 2 * cell
  left = grid.shape[1] - 4 * cell
  for i, name in enumerate(names):
    for j, path in enumerate((out / 'wplus' / name / 'target.png',
                              out / 'wplus' / name / 'observation.png',
                              out / 'wplus' / name / 'reconstruction.png',
                              out / 'wplus_noise' / name /
                              'reconstruction.png')):
      top, x = comparison.HEADER + i * cell, left + j * cell
      expected = Image.open(path).convert('RGB').resize(
          (comparison.CELL, comparison.CELL), Image.NEAREST)
      np.testing.assert_array_equal(
          grid[top:top + comparison.CELL, x:x + comparison.CELL],
          np.asarray(expected))
    label = grid[comparison.HEADER + i * cell:][:comparison.CELL, :left]
    assert (label < 128).any()  # the name, written
  assert (grid[:comparison.HEADER, left:] < 128).any()  # the titles

  page, text = _read_page(out)
  rows = list(csv.DictReader(open(out / 'comparison.csv')))
  shown = page.values('images')
  assert [r['image'] for r in shown] == names
  for row, csv_row in zip(shown, rows):
    for column in ('wplus_psnr', 'wplus_noise_psnr', 'wplus_lpips',
                   'wplus_noise_ssim_mean'):
      assert row[column] == csv_row[column]
  for name in names:
    assert f'wplus/{name}/observation.png' in page.links
  assert {'wplus/report.html', 'wplus_noise/report.html'} <= set(page.links)
  for group, member in (('in_domain', rows[0]), ('out_of_domain', rows[1])):
    table = page.tables[f'means-{group}']['rows']
    assert [r[0]['text'] for r in table] == ['wplus', 'wplus_noise']
    for column, better in ((1, max), (3, min)):  # psnr, lpips
      kind = ('psnr', 'ssim', 'lpips')[column - 1]
      values = [float(member[f'{m}_{kind}'])
                for m in ('wplus', 'wplus_noise')]
      best = values.index(better(values))
      marked = ['best' in r[column].get('class', '') for r in table]
      assert marked == [i == best for i in range(2)], (group, kind)
  svgs = re.findall(r'<svg.*?</svg>', text, re.S)
  assert len(svgs) == 2
  for name, svg in zip(names, svgs):
    curves = _curves(svg)
    assert sorted(curves) == ['wplus', 'wplus_noise']
    for method, points in curves.items():
      _assert_curve_is(points, out / method / name / 'loss.csv')


def test_report_command_rebuilds_a_page_and_refuses_other_paths(
    run_outdir, tmp_path):
  out = tmp_path / 'out'
  shutil.copytree(run_outdir, out)
  (out / 'report.html').unlink()
  result = run_cli('-m', 'sphinx_jax.report', out)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == f'wrote {out / "report.html"}'
  page, _ = _read_page(out)
  assert [r['image'] for r in page.values('images')] == ['astronaut', 'cat']
  result = run_cli('-m', 'sphinx_jax.report', tmp_path / 'nowhere')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f'error: {tmp_path / "nowhere"}: no such directory']
  with pytest.raises(SphinxError, match='not an outdir of sphinx_jax.run'):
    report.write(str(tmp_path))


def _chromium(*args, cwd):
  return subprocess.run(
      ['chromium', '--headless', '--no-sandbox', '--disable-gpu',
       '--hide-scrollbars', '--window-size=1800,1400', *map(str, args)],
      cwd=cwd, capture_output=True, text=True, timeout=120, check=True)


# Slow (a browser); run by hand: pytest -m slow -n 0 tests/test_report.py,
# with Debian's chromium installed (apt-get install chromium).
@pytest.mark.slow
def test_a_browser_shows_the_images_and_sorts_by_psnr(run_outdir, tmp_path):
  if shutil.which('chromium') is None:
    pytest.skip('no chromium on PATH')
  # The page as rendered, and again with its images gone: they differ
  # where the thumbnails are, if the browser loaded them.
  shown = tmp_path / 'shown.png'
  _chromium(f'--screenshot={shown}', (run_outdir / 'report.html').as_uri(),
            cwd=tmp_path)
  bare = tmp_path / 'bare'
  shutil.copytree(run_outdir, bare)
  for png in bare.glob('*/*.png'):
    png.unlink()
  _chromium(f'--screenshot={tmp_path / "bare.png"}',
            (bare / 'report.html').as_uri(), cwd=tmp_path)
  a = np.asarray(Image.open(shown).convert('RGB'), np.int32)
  b = np.asarray(Image.open(tmp_path / 'bare.png').convert('RGB'), np.int32)
  changed = (np.abs(a - b).sum(-1) > 30).sum()
  thumbnails = 2 * 6 * 128 * 128  # 2 images, 6 pictures each
  assert changed > 0.5 * thumbnails, changed
  # The page's own script sorts by the hash: by PSNR, either way.
  psnr = {r['image']: float(r['psnr'])
          for r in csv.DictReader(open(run_outdir / 'metrics.csv'))}
  for sign, descending in (('', False), ('-', True)):
    dom = _chromium('--dump-dom', (run_outdir / 'report.html').as_uri() +
                    f'#sort={sign}psnr', cwd=tmp_path).stdout
    order = [r['image'] for r in _Page(dom).values('images')]
    assert order == sorted(psnr, key=psnr.get, reverse=descending)
  assert sorted(psnr, key=psnr.get) != sorted(psnr, key=psnr.get,
                                              reverse=True)
