"""The records stage end to end: records contract, resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT
from conftest import assert_identical_records
from conftest import quick_config
from easyhard_jax.storage import records
from easyhard_jax import runner
from easyhard_jax.data import sources
from easyhard_jax.train import ensemble
from easyhard_jax.train import probe_schedule
from easyhard_jax.train import run_spec


def test_load_returns_contract_shapes(quick_study):
  config, workdir = quick_study
  spe = int(np.ceil(config.max_train_examples / config.batch_size))
  schedule = probe_schedule.probe_schedule(config, spe)
  for split, n in (('train', config.max_train_examples), ('test', 359)):
    r = records.load(workdir, split)
    shape = (config.seeds_per_arch, len(schedule), n)
    for f in records.FIELDS:
      assert getattr(r, f).shape == shape, f
    assert r.correct.dtype == bool
    np.testing.assert_array_equal(r.probe_steps, schedule)
    np.testing.assert_array_equal(r.example_ids, np.arange(n))
    assert [m['name'] for m in r.members] == ['cnn/s0', 'cnn/s1']
    # Margin > 0 exactly when correct; p_true = exp(-loss); el2n bounded.
    np.testing.assert_array_equal(r.margin > 0, r.correct)
    np.testing.assert_allclose(r.p_true, np.exp(-r.loss), rtol=1e-4)
    assert np.all((r.el2n >= 0) & (r.el2n <= np.sqrt(2) + 1e-5))
  train = records.load(workdir, 'train')
  # Labels are the dataset's, in its canonical order.
  from easyhard_jax.data import sources
  data = sources.load_dataset(config)
  np.testing.assert_array_equal(train.labels, data.train_labels)
  # Training helps: the final probe beats the first one on the test split.
  test = records.load(workdir, 'test')
  assert test.correct[:, -1].mean() > test.correct[:, 0].mean()
  assert test.correct[:, -1].mean() > 0.5


def test_fused_records_one_per_epoch(quick_study):
  config, workdir = quick_study
  r = records.load(workdir, 'train', source='fused')
  assert r.loss.shape[:2] == (config.seeds_per_arch, config.epochs)
  assert np.isfinite(r.loss).all()  # Every example is seen every epoch.
  assert np.isnan(r.el2n).all()     # Not stored for the training pass.


def test_records_are_numpy_loadable_without_pickle(quick_study):
  _, workdir = quick_study
  root = records.records_dir(workdir)
  with open(os.path.join(root, 'manifest.json')) as f:
    manifest = json.load(f)
  chunk = manifest['archs']['cnn']['chunks']['probe_test']['0']['file']
  with np.load(os.path.join(root, 'cnn', chunk), allow_pickle=False) as z:
    assert set(records.FIELDS) <= set(z.files)


def test_rerun_of_finished_study_skips_training(quick_study, tmp_path):
  config, workdir = quick_study
  before = os.path.getmtime(os.path.join(workdir, 'records', 'manifest.json'))
  tick = time.time()
  runner.run(config, workdir, 'records')
  assert os.path.getmtime(
      os.path.join(workdir, 'records', 'manifest.json')) == before
  assert time.time() - tick < 30


def _main_cmd(workdir, *overrides):
  return [sys.executable, '-m', 'easyhard_jax.main',
          '--config=configs/digits_quick.py', f'--workdir={workdir}',
          '--mode=records', *overrides]


@pytest.mark.slow
def test_kill_and_resume_gives_identical_records(quick_study, tmp_path):
  """kill -9 after the first checkpoint, rerun, compare with a clean run."""
  config, clean = quick_study
  workdir = str(tmp_path / 'killed')
  overrides = ['--config.epochs=3']
  proc = subprocess.Popen(_main_cmd(workdir, *overrides), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_dir = os.path.join(workdir, 'checkpoints', 'cnn')
  deadline = time.time() + 240
  try:
    while time.time() < deadline:
      done = [d for d in (os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir)
                          else []) if d.isdigit()]
      if done or proc.poll() is not None:
        break
      time.sleep(0.05)
    assert proc.poll() is None, 'run ended before it could be killed'
    assert done, 'no checkpoint appeared in time'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
  finally:
    if proc.poll() is None:
      proc.kill()
  manifest = records.read_manifest(workdir)
  assert not manifest['archs']['cnn']['complete']
  subprocess.run(_main_cmd(workdir, *overrides), cwd=ROOT, check=True,
                 capture_output=True, timeout=300)
  # The uninterrupted reference with the same overrides.
  reference = str(tmp_path / 'clean')
  subprocess.run(_main_cmd(reference, *overrides), cwd=ROOT, check=True,
                 capture_output=True, timeout=300)
  assert_identical_records(reference, workdir)


def test_partial_last_epoch_finishes_with_unseen_examples_nan(tmp_path):
  """budget='steps' ends mid-epoch: the unpresented examples stay NaN."""
  config = quick_config(epochs=2)
  data = sources.load_dataset(config)
  n = len(data.train_labels)
  keep = np.zeros((2, n), bool)
  keep[:, :448] = True  # 7 steps of 64 per epoch.
  members = run_spec.study_members(config, 'cnn')
  writer = records.RecordWriter(str(tmp_path))
  writer.write_split_metadata('train', data.train_labels, data.train_ids)
  writer.write_split_metadata('test', data.test_labels, data.test_ids)
  ensemble.train_arch(config, data, 'cnn', str(tmp_path), writer,
                      program='cnn.0', members=members, keep=keep,
                      total_steps=7 * 2 + 3)
  fused = records.load(str(tmp_path), 'train', 'fused', archs=['cnn.0'])
  assert fused.loss.shape[:2] == (2, 3)
  seen = ~np.isnan(fused.loss)
  np.testing.assert_array_equal(seen[:, :2].sum(-1), 448)  # Full epochs.
  np.testing.assert_array_equal(seen[:, 2].sum(-1), 3 * 64)  # 3 steps.
  assert not seen[:, :, 448:].any()  # Never the examples left out.
  assert np.isfinite(fused.loss[seen]).all()


def test_probe_until_skips_the_probes_nothing_reads(tmp_path):
  """A cause probe probes inside its window and at the end, nowhere else."""
  config = quick_config(epochs=3)
  data = sources.load_dataset(config)
  n = len(data.train_labels)
  keep = np.zeros((2, n), bool)
  keep[:, :128] = True  # 2 steps of 64 per epoch, 6 in all.
  writer = records.RecordWriter(str(tmp_path))
  writer.write_split_metadata('train', data.train_labels, data.train_ids)
  writer.write_split_metadata('test', data.test_labels, data.test_ids)
  ensemble.train_arch(config, data, 'cnn', str(tmp_path), writer,
                      program='cnn.0', keep=keep, probe_until=1.0,
                      members=run_spec.study_members(config, 'cnn'))
  # The full schedule is [1, 2, 4, 6] (half of epoch 1, every epoch end).
  for split in records.SPLITS:
    rec = records.load(str(tmp_path), split, archs=['cnn.0'])
    np.testing.assert_array_equal(rec.probe_steps, [1, 2, 6])
  from easyhard_jax.experiments import causes
  study = quick_config(epochs=10, **{'analysis.window': (0.0, 3.0)})
  probe = quick_config(epochs=4)
  # Bit for bit the window end load_ensemble reads: window * (4 / 10).
  assert causes.probe_until(study, probe) == 3.0 * (4 / 10)
  study.analysis.source = 'fused'
  assert causes.probe_until(study, probe) == 0.0
