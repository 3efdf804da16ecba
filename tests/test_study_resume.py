"""A study killed with SIGKILL at three points resumes and ends identical.

The whole study (record, analyze, remove, compress, probe_causes, report) runs
as the user runs it, ``python -m easyhard_jax.main``, on a config smaller than
digits_quick. One workdir is killed with ``kill -9`` three times, each time
restarted with the same command: inside the records stage (after its first
epoch's records), inside the removal sweep (after a subset group's first
checkpoint) and inside the report (once its figures directory exists). The
final rerun must end with the results of an uninterrupted run in another
workdir (launch/fault_injection.py compares them: analysis, exports, sweep and
cause results, report summary; floats to 1e-6 relative, so that a different
reduction order elsewhere would not fail a test of resume logic).
launch/fault_injection.py does the same at 20 random points.
Every subprocess is bounded by a timeout.
"""

import importlib.util
import os

import pytest

from conftest import ROOT
from easyhard_jax.storage import files
from easyhard_jax.storage import records

_spec = importlib.util.spec_from_file_location(
    'fault_injection', os.path.join(ROOT, 'launch', 'fault_injection.py'))
faults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(faults)

# digits_quick shrunk further: 256 examples, two strategies per sweep, one
# cause probe, seed intervals. The sweeps keep 2 epochs, so a subset group
# has a checkpoint (after epoch 1) before it finishes: the kill point.
TINY_CONFIG = '''
from configs import digits_quick


def get_config():
  c = digits_quick.get_config()
  c.max_train_examples = 256
  c.analysis.agreement.intervals = True
  c.removal.strategies = ('easiest', 'random')
  c.compression.strategies = ('drop_easiest', 'random')
  c.causes.variants = ('random_labels',)
  c.report.examples_per_class = 4
  return c
'''
TIMEOUT_S = 300  # Per subprocess; a warm run takes ~30 s on 2 CPU cores.


def _finished(step_dir):
  """Locally orbax renames a finished step into place; in a bucket it writes
  the step in place and commits it last with commit_success.txt."""
  return not files.is_remote(step_dir) or files.exists(
      os.path.join(step_dir, 'commit_success.txt'))


def first_sweep_checkpoint(workdir):
  """A finished checkpoint of a removal subset group, or None."""
  root = os.path.join(workdir, 'removal')
  for group in sorted(files.listdir(root)) if files.isdir(root) else []:
    ckpts = os.path.join(root, group, 'checkpoints')
    if not group.startswith('frac_') or not files.isdir(ckpts):
      continue
    for program in files.listdir(ckpts):
      steps = [os.path.join(ckpts, program, d)
               for d in files.listdir(os.path.join(ckpts, program))
               if d.isdigit()]
      steps = [s for s in steps if _finished(s)]
      if steps:
        return min(steps, key=lambda s: int(os.path.basename(s)))
  return None


@pytest.mark.slow
def test_study_killed_at_three_points_ends_identical(tmp_path):
  config_path = str(tmp_path / 'tiny_study.py')
  with open(config_path, 'w') as f:
    f.write(TINY_CONFIG)
  reference = str(tmp_path / 'uninterrupted')
  resumed = str(tmp_path / 'killed')
  faults.run_to_end(faults.command(config_path, reference), TIMEOUT_S)
  cmd = faults.command(config_path, resumed)
  at = lambda *p: (lambda: os.path.exists(os.path.join(resumed, *p)))
  kill_points = [
      ('records', at('records', 'cnn', 'fused_train_0000.npz')),
      ('removal', lambda: first_sweep_checkpoint(resumed) is not None),
      ('report', at('report', 'figures')),
  ]
  for i, (stage, when) in enumerate(kill_points):
    row = faults.run_and_kill(cmd, str(tmp_path / f'kill{i}.log'), when,
                              TIMEOUT_S)
    assert row['killed'] and row['stage'] == stage, row
  reference_group = os.path.join(resumed, 'removal', 'reference', 'records',
                                 'manifest.json')
  with open(reference_group) as f:
    before = f.read()
  log = faults.run_to_end(cmd, TIMEOUT_S)
  # Finished work is kept: no stage or sweep group before the kill reruns.
  for stage in ('records', 'analysis', 'removal', 'compression', 'causes'):
    assert f'Stage {stage} is complete; skipping.' in log, stage
  with open(reference_group) as f:
    assert f.read() == before, 'the finished reference group was retrained'
  assert records.read_manifest(resumed)['archs']['cnn']['complete']
  assert faults.compare_outputs(reference, resumed) == []
