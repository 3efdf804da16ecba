"""No stale or mixed outputs stamped as current (issue 20, items 1-5).

Each test reproduces one way a workdir used to report old results as
current: a sweep reusing retraining of other subsets, analysis checkpoints of
another config, a comparison not tied to the analysis, a config.json of a
failed first run, data overwritten at the same path.
"""

import copy
import json
import os
import shutil

import numpy as np
import pytest

from conftest import quick_config
from conftest import random_dataset
from easyhard_jax.storage import files
from easyhard_jax import fingerprint
from easyhard_jax.storage import records
from easyhard_jax import runner
from easyhard_jax.analysis import compare
from easyhard_jax.probes import checkpoint_scores
from easyhard_jax.probes import checkpoint_probes
from easyhard_jax.train import analysis_checkpoints


@pytest.fixture
def study_copy(quick_study, tmp_path):
  """A private copy of the finished quick study (records and checkpoints)."""
  _, workdir = quick_study
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  return copy


def _small_removal(config):
  config.removal.strategies = ('easiest',)
  config.removal.epochs = 1
  return config


def _keep(path):
  with np.load(path, allow_pickle=False) as z:
    return z['keep']


def test_sweep_retrains_a_finished_group_whose_masks_changed(study_copy):
  """A group finished under another window is retrained, not reused.

  The removal stamp is dropped (a run killed before it), so the runner does
  not replace the stage's outputs: the sweep itself must compare them. The
  sweep reads the analysis's scores, so the new window is analysed first.
  """
  runner.run(quick_config(), study_copy, 'analysis')
  runner.run(_small_removal(quick_config()), study_copy, 'removal')
  group = os.path.join(study_copy, 'removal', 'frac_0.500')
  old = _keep(os.path.join(group, 'masks_cnn.0.npz'))
  os.remove(fingerprint.stamp_path(study_copy, 'removal'))
  config = _small_removal(quick_config())
  config.analysis.window = (1.0, 2.0)
  with pytest.raises(FileNotFoundError, match='--mode=analysis'):
    runner.run(config, study_copy, 'removal')  # The analysis is another's.
  runner.run(config, study_copy, 'analysis')
  runner.run(config, study_copy, 'removal')
  new = _keep(os.path.join(group, 'masks_cnn.0.npz'))
  assert not np.array_equal(old, new), 'the masks were not chosen again'
  entry = records.read_manifest(group)['archs']['cnn.0']
  assert entry['complete']
  assert entry['fingerprint']['fields']['subset'] == fingerprint.digest(
      np.packbits(new, axis=-1).tolist()), 'records of other masks were kept'


def test_a_symlinked_stage_dir_that_must_be_replaced_stops_the_run(
    study_copy, tmp_path):
  outside = tmp_path / 'outside'
  outside.mkdir()
  (outside / 'stamp.json').write_text(json.dumps({'hash': 'other values'}))
  (outside / 'results.json').write_text('{}')
  runner.run(quick_config(), study_copy, 'analysis')  # The sweep's input.
  os.symlink(outside, os.path.join(study_copy, 'removal'))
  with pytest.raises(RuntimeError, match='symbolic link'):
    runner.run(_small_removal(quick_config()), study_copy, 'removal')
  assert (outside / 'results.json').exists(), 'deleted outside the workdir'


def test_analysis_checkpoints_of_another_config_are_refused(study_copy):
  kept = os.path.join(study_copy, 'analysis_checkpoints', 'cnn')
  ckpt, saved = checkpoint_scores.kept_checkpoints(quick_config(), study_copy,
                                                'cnn')
  assert saved and ckpt.steps() == saved
  other = quick_config()
  other.optimizer.learning_rate = 0.05
  with pytest.raises(ValueError, match='optimizer.learning_rate: 0.1 -> 0.05'):
    checkpoint_scores.kept_checkpoints(other, study_copy, 'cnn')
  os.remove(os.path.join(kept, analysis_checkpoints.STAMP_NAME))
  with pytest.raises(ValueError, match='carry no records fingerprint'):
    checkpoint_scores.kept_checkpoints(quick_config(), study_copy, 'cnn')
  with pytest.raises(ValueError) as e:  # The hint names every directory.
    runner.run(other, study_copy, 'records')
  assert os.path.join('analysis_checkpoints', 'cnn') in str(e.value)


def test_rerecording_at_a_new_lr_replaces_analysis_states_and_config_json(
    study_copy):
  """As the refusal's hint says, minus analysis_checkpoints/ (kept)."""
  for d in ('records', os.path.join('checkpoints', 'cnn')):
    shutil.rmtree(os.path.join(study_copy, d))
  config = quick_config()
  config.optimizer.learning_rate = 0.05
  config.checkpoint_probes.splits = ('test',)
  config.checkpoint_probes.grand = False
  config.checkpoint_probes.features = False
  runner.run(config, study_copy, 'records')
  with open(os.path.join(study_copy, 'config.json')) as f:
    assert json.load(f)['optimizer']['learning_rate'] == 0.05
  out = checkpoint_probes.checkpoint_probes(config, study_copy)
  probed = records.load(out, 'test')
  recorded = records.load(study_copy, 'test')
  common = sorted(set(probed.probe_steps) & set(recorded.probe_steps))
  assert common, (probed.probe_steps, recorded.probe_steps)
  for step in common:
    a = list(probed.probe_steps).index(step)
    b = list(recorded.probe_steps).index(step)
    np.testing.assert_allclose(probed.loss[:, a], recorded.loss[:, b],
                               rtol=1e-5, atol=1e-6)


def test_config_json_is_not_written_by_a_failed_first_run(tmp_path):
  """A first run that diverges writes no config.json; the recovery does."""
  workdir = str(tmp_path / 'w')
  config = quick_config()
  config.optimizer.schedule = 'step'
  config.optimizer.decay_epochs = (1,)
  config.optimizer.decay_factor = 1e30  # Diverges in epoch 2.
  with pytest.raises(FloatingPointError):
    runner.run(config, workdir, 'records')
  assert not os.path.exists(os.path.join(workdir, 'config.json'))
  config.optimizer.decay_factor = 0.1
  runner.run(config, workdir, 'records')
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['optimizer']['decay_factor'] == 0.1


def _reference(workdir, path, seed):
  n = records.load(workdir, 'train').labels.size
  np.savez(path, score=np.random.default_rng(seed).random(n))


def test_compare_is_stamped_chained_to_the_analysis_and_in_the_report(
    study_copy, tmp_path, monkeypatch):
  config = quick_config()
  config.analysis.agreement.intervals = False
  config.reference.path = str(tmp_path / 'ref.npz')
  _reference(study_copy, config.reference.path, seed=0)
  runner.run(config, study_copy, 'analysis')
  runner.run(config, study_copy, 'compare')
  assert runner.is_complete(config, study_copy, 'compare')
  hashes = runner._record_hashes(config)  # pylint: disable=protected-access
  stamp = fingerprint.read_stamp(study_copy, 'compare')
  report = fingerprint.expected_stamp(config, 'report', hashes, study_copy)
  assert report['inputs']['compare'] == stamp['hash']
  plain = copy.deepcopy(config)  # A study run without the reference flag
  plain.reference.path = ''       # keeps the comparison made with one.
  assert fingerprint.expected_stamp(plain, 'report', hashes, study_copy)[
      'inputs']['compare'] == stamp['hash']
  # The reference file's content is an input of the comparison.
  _reference(study_copy, config.reference.path, seed=1)
  assert not runner.is_complete(config, study_copy, 'compare')
  assert fingerprint.expected_stamp(config, 'report', hashes, study_copy)[
      'inputs']['compare'] is None
  # results.json last: a kill before it leaves no results.json of a
  # previous run beside this run's aligned.npz.
  results = os.path.join(study_copy, 'compare', 'results.json')
  assert os.path.exists(results)
  real_savez = files.atomic_savez

  def killed_after_aligned(path, arrays):
    real_savez(path, arrays)
    raise KeyboardInterrupt('killed after ' + path)

  monkeypatch.setattr(files, 'atomic_savez', killed_after_aligned)
  with pytest.raises(KeyboardInterrupt):
    compare.run_compare(config, study_copy)
  monkeypatch.undo()
  assert not os.path.exists(results), 'results.json of the previous run'
  runner.run(config, study_copy, 'compare')
  assert runner.is_complete(config, study_copy, 'compare')
  # A changed analysis clears the comparison made from the old one.
  config.analysis.window = (1.0, 2.0)
  runner.run(config, study_copy, 'analysis')
  assert not os.path.exists(os.path.join(study_copy, 'compare'))
  assert not runner.is_complete(config, study_copy, 'compare')


def _npz_config(path):
  data = random_dataset(num_train=128, num_test=64)
  np.savez(path, x_train=data.train_images, y_train=data.train_labels,
           x_test=data.test_images, y_test=data.test_labels)
  config = quick_config(dataset='npz', npz_path=path, epochs=1)
  config.probe.first_epoch_fractions = ()
  return config, data


def test_data_overwritten_at_the_same_path_is_not_taken_as_recorded(
    tmp_path):
  config, data = _npz_config(str(tmp_path / 'data.npz'))
  workdir = str(tmp_path / 'w')
  runner.run(config, workdir, 'records')
  fields = records.read_manifest(workdir)['archs']['cnn']['fingerprint'][
      'fields']
  assert fields[fingerprint.DATA_FIELD] == fingerprint.data_digest(config)
  np.savez(config.npz_path, x_train=255 - data.train_images,
           y_train=data.train_labels, x_test=255 - data.test_images,
           y_test=data.test_labels)
  os.utime(config.npz_path, ns=(1, 1))  # A new mtime even on coarse clocks.
  assert not runner.is_complete(config, workdir, 'records')
  with pytest.raises(ValueError, match=fingerprint.DATA_FIELD):
    runner.run(config, workdir, 'records')


def test_file_hashes_follow_the_content_and_embedded_data_has_none(
    tmp_path):
  path = tmp_path / 'f.bin'
  path.write_bytes(b'a' * 3_000_000)
  import hashlib  # pylint: disable=g-import-not-at-top
  assert fingerprint.file_sha256(str(path)) == hashlib.sha256(
      b'a' * 3_000_000).hexdigest()
  path.write_bytes(b'b' * 3_000_000)
  os.utime(path, ns=(2, 2))
  assert fingerprint.file_sha256(str(path)) == hashlib.sha256(
      b'b' * 3_000_000).hexdigest()
  assert fingerprint.data_digest(quick_config()) is None
  config = quick_config(dataset='npz', npz_path=str(tmp_path / 'none.npz'))
  assert fingerprint.data_digest(config) == fingerprint.digest(
      [['none.npz', 'missing']])


def test_records_from_before_the_data_hash_are_adopted_once():
  new = {'fields': {'width': 1, fingerprint.DATA_FIELD: 'abc'}}
  assert fingerprint.adopts_legacy({'fields': {'width': 1}}, new)
  assert not fingerprint.adopts_legacy({'fields': {'width': 2}}, new)
  assert not fingerprint.adopts_legacy(
      {'fields': {'width': 1, fingerprint.DATA_FIELD: 'xyz'}}, new)


def test_an_analysis_without_the_score_file_runs_again(study_copy):
  """An analysis stamped by an older version (CSV only) is not current.

  Its stamp still matches, but the later stages read analysis/
  scores_train.npz: the study must rerun analyze rather than skip it and
  stop at the sweeps.
  """
  config = quick_config()
  runner.run(config, study_copy, 'analysis')
  npz = os.path.join(study_copy, 'analysis', 'scores_train.npz')
  with np.load(npz, allow_pickle=False) as z:
    before = z['easiness'].copy()
  assert runner.is_complete(config, study_copy, 'analysis')
  os.remove(npz)
  assert not runner.is_complete(config, study_copy, 'analysis')
  runner.run(config, study_copy, 'analysis')
  assert runner.is_complete(config, study_copy, 'analysis')
  with np.load(npz, allow_pickle=False) as z:
    np.testing.assert_array_equal(z['easiness'], before)
