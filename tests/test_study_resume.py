"""A study killed with SIGKILL mid-way resumes and reports the same numbers.

The whole study (record, analyze, remove, compress, probe_causes, report) runs
as the user runs it, ``python -m easyhard_jax.main``, on a config smaller than
digits_quick. One run is killed with ``kill -9`` once the removal sweep has
saved its first checkpoint of a subset group (the record and analyze stages
done, the sweeps and the report not), then the same command is run again to
the end. Its analysis, sweep and cause-probe results, exports and report
summary must equal those of an uninterrupted run in another workdir. On
XLA:CPU they are bit-identical; floats are compared to 1e-6 relative so that
a different reduction order elsewhere would not fail a test of resume logic.
Every subprocess is bounded by a timeout.
"""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np

from conftest import ROOT
from conftest import quick_config
from easyhard_jax import records
from easyhard_jax import stages
from easyhard_jax.report import read_scores

# digits_quick shrunk further: 256 examples, two strategies per sweep, one
# cause probe, a short bootstrap. The sweeps keep 2 epochs, so a subset group
# has a checkpoint (after epoch 1) before it finishes: the kill point.
TINY_CONFIG = '''
from configs import digits_quick


def get_config():
  c = digits_quick.get_config()
  c.max_train_examples = 256
  c.analysis.agreement.num_bootstrap = 10
  c.removal.strategies = ('easiest', 'random')
  c.compression.strategies = ('drop_easiest', 'random')
  c.causes.variants = ('random_labels',)
  c.report.examples_per_class = 4
  return c
'''
TIMEOUT_S = 300  # Per subprocess; a warm run takes ~30 s on 2 CPU cores.
RESULT_JSON = ('analysis/analysis.json', 'removal/results.json',
               'compression/results.json', 'causes/results.json')
RESULT_CSV = ('removal/results.csv', 'compression/results.csv',
              'causes/results.csv')


def _command(config_path, workdir):
  return [sys.executable, '-m', 'easyhard_jax.main',
          f'--config={config_path}', f'--workdir={workdir}']


def _env():
  # CPU only: the test is about resume logic, not about device numerics.
  return dict(os.environ, JAX_PLATFORMS='cpu')


def _run_to_end(cmd):
  out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=TIMEOUT_S, check=False)
  assert out.returncode == 0, out.stderr[-4000:]
  return out.stderr  # absl logs to stderr.


def _first_sweep_checkpoint(workdir):
  """A finished checkpoint of a removal subset group, or None."""
  root = os.path.join(workdir, 'removal')
  for group in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    ckpts = os.path.join(root, group, 'checkpoints')
    if not group.startswith('frac_') or not os.path.isdir(ckpts):
      continue
    for program in os.listdir(ckpts):
      steps = [d for d in os.listdir(os.path.join(ckpts, program))
               if d.isdigit()]
      if steps:
        return os.path.join(ckpts, program, min(steps, key=int))
  return None


def _kill_mid_study(cmd, workdir):
  """Starts the study, SIGKILLs it at the first sweep checkpoint."""
  log = open(os.path.join(os.path.dirname(workdir), 'killed.log'), 'w')
  proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log,
                          stderr=subprocess.STDOUT)
  deadline = time.time() + TIMEOUT_S
  try:
    found = None
    while time.time() < deadline and proc.poll() is None:
      found = _first_sweep_checkpoint(workdir)
      if found:
        break
      time.sleep(0.02)
    if proc.poll() is not None or not found:
      log.flush()
      with open(log.name) as f:
        tail = f.read()[-4000:]
      assert proc.poll() is None, f'the study ended unkilled:\n{tail}'
      assert found, f'no sweep checkpoint within {TIMEOUT_S} s:\n{tail}'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait(timeout=30)
    log.close()
  return found


def _same(a, b, where):
  """Exact for ints, bools and strings; floats to 1e-6 relative."""
  if isinstance(a, dict):
    assert isinstance(b, dict) and sorted(a) == sorted(b), where
    for k in a:
      _same(a[k], b[k], f'{where}.{k}')
  elif isinstance(a, list):
    assert isinstance(b, list) and len(a) == len(b), where
    for i, (x, y) in enumerate(zip(a, b)):
      _same(x, y, f'{where}[{i}]')
  elif isinstance(a, float) and not isinstance(b, bool):
    assert isinstance(b, (int, float)), where
    assert (math.isnan(a) and math.isnan(b)) or math.isclose(
        a, b, rel_tol=1e-6, abs_tol=1e-9), f'{where}: {a} != {b}'
  else:
    assert type(a) is type(b) and a == b, f'{where}: {a!r} != {b!r}'


def _csv_rows(path):
  with open(path, newline='') as f:
    return [{k: _number(v) for k, v in row.items()}
            for row in csv.DictReader(f)]


def _number(text):
  try:
    return float(text)
  except ValueError:
    return text


def _summary_lines(workdir):
  with open(os.path.join(workdir, 'report', 'summary.md')) as f:
    lines = f.read().splitlines()
  # Line 3 names the workdir and the build time; the rest are results.
  assert 'workdir' in lines[2]
  return lines[:2] + lines[3:]


def _assert_same_results(reference, resumed):
  for name in RESULT_JSON:
    with open(os.path.join(reference, name)) as f:
      a = json.load(f)
    with open(os.path.join(resumed, name)) as f:
      b = json.load(f)
    _same(a, b, name)
  for name in RESULT_CSV:
    _same(_csv_rows(os.path.join(reference, name)),
          _csv_rows(os.path.join(resumed, name)), name)
  for split in records.SPLITS:
    name = f'analysis/scores_{split}.csv'
    a = read_scores(os.path.join(reference, name))
    b = read_scores(os.path.join(resumed, name))
    assert sorted(a) == sorted(b), name
    for col in a:
      if a[col].dtype.kind == 'f':
        np.testing.assert_allclose(b[col], a[col], rtol=1e-6, atol=1e-9,
                                   equal_nan=True, err_msg=f'{name} {col}')
      else:
        np.testing.assert_array_equal(b[col], a[col], f'{name} {col}')
  exports = os.path.join(reference, 'exports')
  assert os.listdir(exports)
  for dirpath, _, files in os.walk(exports):
    for file in files:
      rel = os.path.relpath(os.path.join(dirpath, file), reference)
      if file.endswith('.csv'):  # Keep-lists: example indices and ids.
        with open(os.path.join(reference, rel)) as f:
          a = f.read()
        with open(os.path.join(resumed, rel)) as f:
          assert f.read() == a, rel
      else:
        with np.load(os.path.join(reference, rel)) as za, np.load(
            os.path.join(resumed, rel)) as zb:
          assert sorted(za.files) == sorted(zb.files), rel
          for k in za.files:
            np.testing.assert_array_equal(zb[k], za[k], f'{rel} {k}')
  assert _summary_lines(resumed) == _summary_lines(reference)
  figures = [sorted(os.listdir(os.path.join(w, 'report', 'figures')))
             for w in (reference, resumed)]
  assert figures[0] == figures[1] and 'causes.png' in figures[0]


def test_killed_study_resumes_with_the_same_report_numbers(tmp_path):
  config_path = tmp_path / 'tiny_study.py'
  config_path.write_text(TINY_CONFIG)
  reference = str(tmp_path / 'uninterrupted' / 'study')
  resumed = str(tmp_path / 'killed' / 'study')
  os.makedirs(os.path.dirname(resumed))
  _run_to_end(_command(config_path, reference))

  checkpoint = _kill_mid_study(_command(config_path, resumed), resumed)
  # Killed mid-study: the record stage finished, the report not yet.
  assert records.read_manifest(resumed)['archs']['cnn']['complete']
  assert os.path.exists(os.path.join(resumed, 'analysis', 'analysis.json'))
  assert not os.path.exists(os.path.join(resumed, 'report', 'index.html'))
  assert os.path.isdir(checkpoint)
  group = os.path.dirname(os.path.dirname(os.path.dirname(checkpoint)))
  program = os.path.basename(os.path.dirname(checkpoint))
  group_done = records.read_manifest(group)['archs'][program]['complete']
  reference_group = os.path.join(resumed, 'removal', 'reference', 'records',
                                 'manifest.json')
  with open(reference_group) as f:
    before = f.read()

  log = _run_to_end(_command(config_path, resumed))
  # Finished work is kept: no stage or sweep group before the kill reruns.
  assert 'Stage record is complete; skipping.' in log
  assert 'Stage analyze is complete; skipping.' in log
  if not group_done:  # Killed inside the group: it goes on from there.
    assert f'{program}: resuming at step' in log, log[-4000:]
  with open(reference_group) as f:
    assert f.read() == before, 'the finished reference group was retrained'
  _assert_same_results(reference, resumed)


def test_analyze_is_complete_only_with_its_exports(tmp_path):
  """A kill between analysis.json and the exports reruns the analyze stage."""
  _, is_complete = stages.STAGES['analyze']
  config = quick_config()
  workdir = str(tmp_path)
  os.makedirs(os.path.join(workdir, 'analysis'))
  open(os.path.join(workdir, 'analysis', 'analysis.json'), 'w').close()
  assert not is_complete(config, workdir)
  keep = os.path.join(workdir, 'exports', 'keep_lists')
  os.makedirs(keep)
  open(os.path.join(workdir, 'exports', 'scores_train.npz'), 'w').close()
  for fraction in config.compression.fractions:
    for strategy in ('drop_easiest', 'stratified'):
      assert not is_complete(config, workdir)
      open(os.path.join(keep, f'{strategy}_keep{fraction:.2f}.csv'),
           'w').close()
  assert is_complete(config, workdir)
