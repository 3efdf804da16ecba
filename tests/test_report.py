"""The HTML report from a tiny real study, checked as a browser renders it."""

import base64
import copy
import html.parser
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
from PIL import Image
import pytest

from easyhard_jax import runner
from easyhard_jax.report import build_report
from easyhard_jax.report import experiment_sections

CHROMIUM_NAMES = ('chromium', 'chromium-browser', 'google-chrome',
                  'google-chrome-stable')
INSTALL_HINT = ('no Chromium binary found; install one with '
                '`apt-get update && apt-get install -y chromium`')
CHROMIUM_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu',
                  '--disable-quic', '--no-first-run',
                  '--disable-background-networking',
                  '--disable-component-update', '--disable-sync',
                  '--hide-scrollbars')
REMOVAL = {'curves': [
    {'name': 'remove hardest', 'x': [0.0, 0.1, 0.2], 'mean': [0.9, 0.85, 0.8],
     'std': [0.01, 0.02, 0.02]},
    {'name': 'remove random', 'x': [0.0, 0.1, 0.2], 'mean': [0.9, 0.89, None],
     'std': None}],
    'reference': 0.9, 'reference_label': 'full data',
    'xlabel': 'fraction removed', 'ylabel': 'test accuracy'}


class _Images(html.parser.HTMLParser):
  """Collects the <img> tags and the sections' ids and status notes."""

  def __init__(self):
    super().__init__()
    self.images, self.sections, self._section = [], {}, None
    self._in_status = False

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == 'img':
      self.images.append(attrs)
    elif tag == 'section':
      self._section = attrs['id']
      self.sections[self._section] = ''
    elif tag == 'p' and 'status' in (attrs.get('class') or ''):
      self._in_status = True

  def handle_endtag(self, tag):
    if tag == 'p':
      self._in_status = False

  def handle_data(self, data):
    if self._in_status:
      self.sections[self._section] += data


def _parse(path):
  p = _Images()
  with open(path, encoding='utf-8') as f:
    p.feed(f.read())
  return p


def _copy(workdir, tmp_path_factory, name):
  dst = str(tmp_path_factory.mktemp(name) / 'study')
  shutil.copytree(workdir, dst, ignore=shutil.ignore_patterns('checkpoints'))
  return dst


@pytest.fixture(scope='module')
def report(quick_study, tmp_path_factory):
  """(workdir, index.html path) of an analysed copy of the quick study."""
  from easyhard_jax.analysis import analyze
  from easyhard_jax.data import sources
  config, workdir = quick_study
  workdir = _copy(workdir, tmp_path_factory, 'report')
  data = sources.load_dataset(config)
  analyze.run_analysis(config, workdir, train_images=data.train_images,
                       test_images=data.test_images)
  os.makedirs(os.path.join(workdir, 'removal'))
  with open(os.path.join(workdir, 'removal', 'results.json'), 'w') as f:
    json.dump(REMOVAL, f)
  with open(os.path.join(workdir, 'timings.json'), 'w') as f:
    json.dump({'records': 12.5, 'analysis': 4.0}, f)
  # Two real cause probes (one seed, one epoch): the report's causes figure.
  causes_config = copy.deepcopy(config)
  causes_config.causes.variants = ('random_labels', 'adam')
  causes_config.causes.seeds = 1
  causes_config.causes.epochs = 1
  runner.run(causes_config, workdir, 'causes')
  path = build_report(config, workdir, train_images=data.train_images,
                      test_images=data.test_images)
  return workdir, path


@pytest.mark.slow
def test_report_writes_page_summary_and_figures(report):
  workdir, path = report
  out = os.path.join(workdir, 'report')
  assert path == os.path.join(out, 'index.html')
  pngs = sorted(os.listdir(os.path.join(out, 'figures')))
  for name in ('train_easiest.png', 'train_hardest.png',
               'mean_images_train.png', 'easiness_histogram.png',
               'member_spearman.png', 'distances_pixels.png',
               'colour_frequency.png', 'test_errors.png',
               'learning_curves.png', 'removal_0.png', 'causes.png',
               'timings.png'):
    assert name in pngs
  with open(os.path.join(out, 'summary.md')) as f:
    summary = f.read()
  assert summary.startswith('# ') and 'easy and' in summary
  assert '- removal: ran' in summary and '- causes: ran' in summary
  assert "- random_labels: easy sets overlap the study's" in summary
  assert '- adam: easy sets overlap' in summary and 'chance 0.1)' in summary


@pytest.mark.slow
def test_every_img_is_an_embedded_png(report):
  workdir, path = report
  page = _parse(path)
  figures = os.listdir(os.path.join(workdir, 'report', 'figures'))
  assert len(page.images) == len(figures) > 10
  for img in page.images:
    src = img['src']
    assert src.startswith('data:image/png;base64,'), img['alt']
    png = base64.b64decode(src.split(',', 1)[1], validate=True)
    assert png.startswith(b'\x89PNG\r\n\x1a\n')
    with Image.open(io.BytesIO(png)) as im:
      im.verify()
      assert im.size[0] > 50 and im.size[1] > 50


@pytest.mark.slow
def test_sections_ran_or_say_not_run(report):
  _, path = report
  page = _parse(path)
  # One architecture: no architecture pairs, but no section failed either.
  assert not [k for k, v in page.sections.items() if 'error' in v]
  for key in ('overview', 'examples', 'agreement', 'similarity',
              'learning-curves', 'removal', 'causes', 'config'):
    assert page.sections[key] == '', key
  assert page.sections['compression'].startswith('not run')
  with open(path) as f:
    text = f.read()
  assert 'chance overlap' in text and 'Architecture pairs: only one' in text


def _png_size(png):
  with Image.open(io.BytesIO(png)) as im:
    return im.size


@pytest.mark.slow
def test_causes_section_draws_every_probe_against_chance(report):
  workdir, path = report
  with open(os.path.join(workdir, 'causes', 'results.json')) as f:
    result = json.load(f)
  assert result['chance_test_acc'] == 0.1  # Ten digit classes.
  assert 0.5 < result['baseline']['test_acc_mean'] <= 1.0
  sec = experiment_sections.causes_section(os.path.join(workdir, 'causes', 'results.json'),
                             'causes', 'Probing the causes', '')
  (fig,) = sec.figures
  assert fig.name == 'causes' and 'chance' in fig.caption
  # One architecture: shared sets, rank correlation, accuracy in one row.
  width, height = _png_size(fig.png)
  assert width > 2.5 * height
  for cell in ('<td>random_labels</td>', '<td>adam</td>',
               '<td>study (reference)</td>'):
    assert cell in sec.body_html
  with open(path) as f:
    assert 'Spearman rho above 0' in f.read()  # The caption is on the page.


def test_causes_figure_with_two_architectures_adds_agreement(tmp_path):
  def probe(ratio, rho, acc):
    return {'easy_overlap_ratio': ratio, 'hard_overlap_ratio': ratio - 0.5,
            'spearman_easiness': rho, 'cross_arch_easy_ratio': ratio,
            'baseline_cross_arch_easy_ratio': 6.5, 'epochs': 6,
            'test_acc_mean': acc, 'test_acc_std': 0.01,
            'per_arch': {'cnn': {'easy_overlap_ratio': ratio + 0.2,
                                 'spearman': rho + 0.05},
                         'vgg11': {'easy_overlap_ratio': ratio - 0.2,
                                   'spearman': -0.3}}}
  variants = {'random_labels': probe(1.1, 0.02, 0.1),
              'adam': probe(6.0, 0.8, 0.95)}
  path = tmp_path / 'results.json'
  path.write_text(json.dumps({
      'archs': ['cnn', 'vgg11'], 'seeds': 2, 'variants': variants,
      'rows': [{'variant': k} for k in variants],
      'baseline': {'epochs': 15, 'test_acc_mean': 0.97,
                   'test_acc_std': 0.01}, 'chance_test_acc': 0.1}))
  sec = experiment_sections.causes_section(str(path), 'causes', 'Causes', '')
  (fig,) = sec.figures
  width, height = _png_size(fig.png)
  assert width < 1.6 * height  # Four panels: two rows of two.
  assert fig.caption.endswith('dots: architectures.')
  assert 'Per architecture' in sec.body_html and '<td>vgg11</td>' in (
      sec.body_html)
  assert '<td>6.5</td>' in sec.body_html  # The study's cross-arch overlap.
  bullets = experiment_sections.causes_summary(str(path))
  assert bullets[1] == ("adam: easy sets overlap the study's 6x chance "
                        '(hard 5.5x), easiness Spearman 0.8, test accuracy '
                        '0.95 (study 0.97, chance 0.1).')
  # An older results.json without the reference numbers still draws.
  path.write_text(json.dumps({'archs': ['cnn'], 'variants': {
      'adam': {k: v for k, v in probe(2.0, 0.5, 0.9).items()
               if k != 'per_arch'}}}))
  sec = experiment_sections.causes_section(str(path), 'causes', 'Causes', '')
  assert len(sec.figures) == 1 and sec.status == 'ok'


def _chromium():
  for name in CHROMIUM_NAMES:
    if shutil.which(name):
      return shutil.which(name)
  pytest.skip(INSTALL_HINT)


def _run_chromium(binary, tmp_path, *args):
  cmd = [binary, *CHROMIUM_FLAGS, f'--user-data-dir={tmp_path / "profile"}',
         *args]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                        check=True)


@pytest.mark.slow
def test_headless_chromium_loads_every_figure(report, tmp_path):
  binary = _chromium()
  _, path = report
  url = 'file://' + os.path.abspath(path)
  dom = _run_chromium(binary, tmp_path, '--virtual-time-budget=10000',
                      '--dump-dom', url).stdout
  body = re.search(r'<body[^>]*>', dom).group(0)
  assert 'data-figures-broken' not in body, body
  loaded = re.search(r'data-figures-loaded="(\d+)"', body)
  assert loaded, f'the page script never ran: {body}'
  images = [i['alt'] for i in _parse(path).images]
  assert int(loaded.group(1)) == len(images)
  # Every figure, the later stages' included, is among those loaded.
  assert {'removal_0', 'causes', 'timings'} <= set(images)

  shot = tmp_path / 'shot.png'
  _run_chromium(binary, tmp_path, '--window-size=1280,2400',
                f'--screenshot={shot}', url)
  with Image.open(shot) as im:
    pixels = np.asarray(im.convert('RGB'), np.float32)
  assert pixels.shape[:2] == (2400, 1280)
  # A blank or unstyled page is one or two flat colours.
  assert pixels.std() > 20
  assert len(np.unique(pixels.reshape(-1, 3)[::97], axis=0)) > 50


def test_report_without_analysis_says_not_run(quick_study, tmp_path_factory):
  config, workdir = quick_study
  workdir = _copy(workdir, tmp_path_factory, 'bare')
  shutil.rmtree(os.path.join(workdir, 'analysis'), ignore_errors=True)
  os.makedirs(os.path.join(workdir, 'causes'))
  with open(os.path.join(workdir, 'causes', 'results.json'), 'w') as f:
    json.dump({'curves': [{'name': 'a', 'x': [1, 2], 'mean': [1.0]}]}, f)
  os.makedirs(os.path.join(workdir, 'compression'))
  with open(os.path.join(workdir, 'compression', 'results.json'), 'w') as f:
    json.dump({'rows': [{'variant': 'kept_easy_0.5', 'test_acc': 0.75}]}, f)
  path = build_report(config, workdir)
  page = _parse(path)
  for key in ('overview', 'examples', 'mean-images', 'histogram',
              'agreement', 'similarity', 'colour-frequency', 'test-errors',
              'removal'):
    assert page.sections[key].startswith('not run'), key
  # Results without curves: shown as a table, not an error.
  assert page.sections['compression'] == ''
  with open(path) as f:
    assert '<td>kept_easy_0.5</td>' in f.read()
  assert '--mode=analysis' in page.sections['agreement']
  # A malformed later-stage file costs its own section only.
  assert page.sections['causes'].startswith('error')
  assert 'different lengths' in page.sections['causes']
  assert page.sections['learning-curves'] == ''
  # Only figures whose inputs exist: learning curves, and stage timings
  # (runner.run writes timings.json for the recorded study).
  expected = ['learning_curves'] + (
      ['timings'] if os.path.exists(os.path.join(workdir, 'timings.json'))
      else [])
  assert [i['alt'] for i in page.images] == expected
  with open(os.path.join(workdir, 'report', 'summary.md')) as f:
    assert 'analysis stage has not run' in f.read()
