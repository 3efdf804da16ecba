"""A workdir holds what its config says: fingerprints, stamps, lock, repair."""

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import assert_identical_records
from conftest import quick_config
from conftest import start_script
from easyhard_jax.storage import files
from easyhard_jax import fingerprint
from easyhard_jax.storage import records
from easyhard_jax import runner
from easyhard_jax import stages


@pytest.fixture
def study_copy(quick_study, tmp_path):
  """(original workdir, a private copy of the finished quick study)."""
  _, workdir = quick_study
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  return workdir, copy


@pytest.mark.parametrize('finished', [True, False])
def test_another_config_is_refused_listing_each_field(study_copy, finished):
  _, copy = study_copy
  if not finished:
    manifest = records.read_manifest(copy)
    manifest['archs']['cnn']['complete'] = False
    files.atomic_write_json(os.path.join(copy, 'records', 'manifest.json'),
                            manifest)
  config = quick_config(width=0.5)
  config.optimizer.momentum = 0.8
  with pytest.raises(ValueError) as e:
    runner.run(config, copy, 'records')
  message = str(e.value)
  assert 'width: 0.25 -> 0.5' in message
  assert 'optimizer.momentum: 0.9 -> 0.8' in message
  assert 'new --workdir' in message and 'remove' in message
  assert not runner.is_complete(config, copy, 'records')
  assert runner.is_complete(quick_config(), copy, 'records') == finished


def test_stamps_follow_the_fields_and_inputs_of_each_stage(study_copy):
  _, copy = study_copy
  config = quick_config()
  hashes = runner._record_hashes(config)  # pylint: disable=protected-access
  for stage in stages.STAGES:
    if stage.in_study and stage.stamped:
      for name in stage.required:  # The files its stamp stands for.
        files.atomic_savez(os.path.join(copy, stage.out_dir, name),
                           {'example_index': np.arange(4)})
      fingerprint.commit_stage(copy, stage.out_dir, fingerprint.expected_stamp(
          config, stage.name, hashes))
  complete = lambda c: {s for s in stages.STUDY
                        if runner.is_complete(c, copy, s)}
  assert complete(config) == set(stages.STUDY)
  # An analysis field: the analysis and all that reads it (heldout keeps
  # its members; a study that reruns the analysis reruns its judgement).
  assert complete(quick_config(**{'analysis.window': (0.0, 2.0)})) == {
      'records', 'heldout'}
  # A removal field: that sweep and the report only.
  assert complete(quick_config(**{'removal.seeds': 2})) == set(
      stages.STUDY) - {'removal', 'report'}
  # A training field: everything.
  assert complete(quick_config(epochs=3)) == set()
  # A kill between a stage's files and its stamp: that stage reruns.
  fingerprint.invalidate(copy, 'causes')
  assert complete(config) == set(stages.STUDY) - {'causes'}


def test_damaged_chunk_names_the_file_and_record_repairs_it(study_copy):
  original, copy = study_copy
  path = os.path.join(copy, 'records', 'cnn', 'probe_train_0001.npz')
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(ValueError, match=f'{path} is unreadable.*--mode=records'):
    records.load(copy, 'train')
  runner.run(quick_config(), copy, 'records')
  assert_identical_records(original, copy)


def test_damaged_manifest_is_rebuilt_from_the_chunks(study_copy):
  original, copy = study_copy
  path = os.path.join(copy, 'records', 'manifest.json')
  with open(path, 'w') as f:
    f.write('{"archs": {"cnn": ')
  with pytest.raises(ValueError, match=f'{path} is damaged.*--mode=records'):
    records.load(copy, 'train')
  runner.run(quick_config(), copy, 'records')
  assert_identical_records(original, copy)
  assert os.path.exists(os.path.join(copy, 'records', 'manifest.damaged.json'))


def test_kill_between_labels_and_ids_is_repaired(study_copy):
  original, copy = study_copy
  os.remove(os.path.join(copy, 'records', 'ids_test.json'))
  with pytest.raises(ValueError, match='test metadata .* --mode=records'):
    records.load(copy, 'test')
  runner.run(quick_config(), copy, 'records')
  assert_identical_records(original, copy)


def test_stale_temp_files_are_cleared(study_copy):
  _, copy = study_copy
  stale = [os.path.join(copy, 'records', '.tmp-abc'),
           os.path.join(copy, 'analysis', '.tmp-def')]
  for p in stale:
    os.makedirs(os.path.dirname(p), exist_ok=True)
    open(p, 'w').close()
  runner.run(quick_config(), copy, 'records')
  assert not any(os.path.exists(p) for p in stale)


def test_second_run_on_a_workdir_exits_naming_the_first(tmp_path):
  workdir = str(tmp_path)
  with files.WorkdirLock(workdir):
    with pytest.raises(files.WorkdirBusyError,
                       match=f'pid {os.getpid()}.*another --workdir'):
      runner.run(quick_config(), workdir, 'records')
  assert not os.path.exists(os.path.join(workdir, 'records'))


def test_lock_of_a_killed_run_does_not_block(tmp_path):
  workdir = str(tmp_path)
  proc = start_script(
      'import time\nfrom easyhard_jax.storage import files\n'
      'files.WorkdirLock({workdir!r}).acquire()\n'
      'print("held", flush=True)\ntime.sleep(60)',
      stderr=subprocess.DEVNULL, workdir=workdir)
  try:
    assert proc.stdout.readline().strip() == 'held'
    with pytest.raises(files.WorkdirBusyError, match=f'pid {proc.pid}'):
      files.WorkdirLock(workdir).acquire()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
  deadline = time.time() + 10
  with files.WorkdirLock(workdir) as lock:  # The kernel dropped the lock.
    assert lock._fd is not None and time.time() < deadline  # pylint: disable=protected-access


def test_each_invocation_is_logged_and_config_json_written_once(study_copy):
  _, copy = study_copy
  before = open(os.path.join(copy, 'config.json')).read()
  log = os.path.join(copy, 'run_log.jsonl')
  read_log = lambda: [json.loads(line) for line in open(log)]
  logged = len(read_log())
  assert logged >= 1
  runner.run(quick_config(), copy, 'records')
  runner.run(quick_config(), copy, 'records')
  assert open(os.path.join(copy, 'config.json')).read() == before
  entries = read_log()
  assert [e['mode'] for e in entries[logged:]] == ['records', 'records']
  assert entries[-1]['config']['archs'] == 'cnn'


def test_analysis_reads_the_config_archs_only(study_copy):
  _, copy = study_copy
  with pytest.raises(KeyError, match="No records for architecture 'vgg11'"):
    records.load(copy, 'train', archs=['cnn', 'vgg11'])
  rec = records.load(copy, 'train', archs=['cnn'])
  assert np.unique(rec.archs).tolist() == ['cnn']
