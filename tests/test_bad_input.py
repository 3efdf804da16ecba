"""Bad configs, damaged checkpoints and NaN losses give errors that name a fix."""

import glob
import os
import shutil

import pytest

import numpy as np

from conftest import assert_identical_records
from conftest import quick_config
from easyhard_jax.storage import files
from easyhard_jax.storage import records
from easyhard_jax import runner
from easyhard_jax import validation
from easyhard_jax.data import sources


@pytest.mark.parametrize('overrides, message', [
    ({'archs': 'cnn,resnet99'}, r"Unknown architecture\(s\) \['resnet99'\]"),
    ({'archs': ''}, 'config.archs is empty'),
    ({'seeds_per_arch': 0}, 'seeds_per_arch must be an integer >= 1'),
    ({'batch_size': -4}, 'batch_size must be an integer >= 1'),
    ({'probe.first_epoch_fractions': (0.5, 1.5)},
     'strictly between 0 and 1'),
    ({'probe.every_epochs': 0}, 'probe.every_epochs must be an integer >= 1'),
    ({'member_strategy': 'pmap'}, 'member_strategy must be auto or one of'),
    ({'dtype': 'float8'}, "dtype must be 'auto'"),
    ({'optimizer.name': 'lion'}, 'optimizer.name must be one of'),
    ({'optimizer.schedule': 'wiggly'}, 'optimizer.schedule must be'),
    ({'stream.enabled': True, 'stream.random_resized_crop': True},
     'random_resized_crop needs config.image_size'),
    ({'stream.enabled': True, 'stream.num_threads': 0},
     'stream.num_threads must be an integer >= 1'),
    ({'stream.enabled': True, 'stream.crop_fraction': 1.5},
     r'crop_fraction must be in \(0, 1\]'),
    ({'max_train_examples': -100}, 'max_train_examples must be an integer'),
    ({'optimizer.grad_clip_norm': -1.0}, 'grad_clip_norm must be >= 0'),
    ({'optimizer.learning_rate': 0.0}, 'learning_rate must be > 0'),
    ({'width': 0.0}, 'width must be > 0'),
    ({'causes.seeds': 0}, 'config.causes.seeds must be an integer >= 1'),
    ({'causes.variants': ('sunspots',)}, 'Unknown config.causes.variants'),
    ({'causes.archs': 'resnet18'}, 'causes.archs .* not in the study'),
    ({'removal.archs': '/../../../tmp/x'},
     "config.removal.archs must be 'study' or comma-separated model names"),
    ({'compression.archs': 'cnn,../../x'}, 'config.compression.archs must'),
    ({'checkpoint_probes.archs': 'a/b'}, 'config.checkpoint_probes.archs'),
    ({'removal.fractions': (1.5,)}, 'removal.fractions must lie in'),
    ({'removal.budget': 'hours'}, 'removal.budget must be one of'),
    ({'compression.scores': ('shoe_size',)}, 'shoe_size'),
    ({'analysis.window': (2.0, 1.0)}, 'analysis.window must be'),
    ({'analysis.source': 'guess'}, "analysis.source must be 'probe'"),
    ({'analysis.sets.fraction': 0.9}, r'sets.fraction must lie in'),
    ({'checkpoints_to_keep': 0}, 'checkpoints_to_keep must be an integer'),
])
def test_impossible_config_values_are_named(overrides, message):
  with pytest.raises((ValueError, KeyError), match=message):
    validation.validate(quick_config(**overrides))


def test_bad_values_are_refused_before_anything_is_written(tmp_path):
  escape = tmp_path / 'outside'
  config = quick_config(**{'removal.archs': f'/../../..{escape}'})
  workdir = tmp_path / 'w'
  with pytest.raises(ValueError, match='removal.archs'):
    runner.run(config, str(workdir), 'study')
  assert not escape.exists() and not workdir.exists()


def test_batch_larger_than_the_dataset_is_refused(tmp_path):
  with pytest.raises(ValueError, match=r'batch_size \(1024\) exceeds the 512'):
    runner.run(quick_config(batch_size=1024), str(tmp_path), 'records')


def test_npz_label_gap_is_refused(tmp_path):
  rng = np.random.default_rng(0)
  y = rng.integers(0, 10, 40)
  y[3] = 1000
  path = tmp_path / 'data.npz'
  np.savez(path, x_train=rng.integers(0, 255, (40, 8, 8), np.uint8),
           y_train=y, x_test=rng.integers(0, 255, (8, 8, 8), np.uint8),
           y_test=y[:8] % 10)
  config = quick_config(dataset='npz', npz_path=str(path))
  with pytest.raises(ValueError, match=r'classes \[10, 11, .*no training'):
    sources.load_dataset(config)


@pytest.mark.slow
def test_workdir_of_another_dataset_is_refused(quick_study, tmp_path):
  _, workdir = quick_study
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  config = quick_config(max_train_examples=256)
  with pytest.raises(ValueError, match='fresh --workdir'):
    runner.run(config, copy, 'records')


def _force_resume(workdir):
  manifest = records.read_manifest(workdir)
  manifest['archs']['cnn']['complete'] = False
  files.atomic_write_json(os.path.join(workdir, 'records', 'manifest.json'),
                          manifest)


def _damage_checkpoint(directory):
  for path in glob.glob(os.path.join(directory, '**', '*'), recursive=True):
    if os.path.isfile(path):
      with open(path, 'wb') as f:
        f.write(b'garbage')


def _checkpoint_steps(workdir):
  return sorted(int(os.path.basename(p)) for p in glob.glob(
      os.path.join(workdir, 'checkpoints', 'cnn', '[0-9]*')))


def test_damaged_latest_checkpoint_falls_back_to_the_previous(quick_study,
                                                               tmp_path):
  _, workdir = quick_study
  copy = str(tmp_path / 'damaged')
  shutil.copytree(workdir, copy)
  _force_resume(copy)
  steps = _checkpoint_steps(copy)
  assert len(steps) == 2
  _damage_checkpoint(os.path.join(copy, 'checkpoints', 'cnn', str(steps[-1])))
  runner.run(quick_config(), copy, 'records')  # Warns, resumes, finishes.
  assert records.read_manifest(copy)['archs']['cnn']['complete']
  assert_identical_records(workdir, copy)


def test_no_restorable_checkpoint_names_the_directory(quick_study, tmp_path):
  _, workdir = quick_study
  copy = str(tmp_path / 'damaged')
  shutil.copytree(workdir, copy)
  _force_resume(copy)
  for step in _checkpoint_steps(copy):
    _damage_checkpoint(os.path.join(copy, 'checkpoints', 'cnn', str(step)))
  directory = os.path.join(copy, 'checkpoints', 'cnn')
  with pytest.raises(RuntimeError,
                     match=f'No checkpoint in {directory} can be restored'):
    runner.run(quick_config(), copy, 'records')


def _diverging_config(decay_factor):
  """Epoch 1 at lr 0.1, then lr * decay_factor: 1e30 diverges in epoch 2."""
  config = quick_config()
  config.optimizer.schedule = 'step'
  config.optimizer.decay_epochs = (1,)
  config.optimizer.decay_factor = decay_factor
  return config


@pytest.mark.slow
def test_divergence_saves_nothing_and_a_lower_rate_resumes(tmp_path, caplog):
  workdir = str(tmp_path)
  with pytest.raises(FloatingPointError,
                     match=r'cnn member cnn/s\d diverged: non-finite values at '
                     r'step \d+ \(epoch 2\).*learning_rate.*resumes from '
                     r'the last finite checkpoint \(step 8\)'):
    runner.run(_diverging_config(1e30), workdir, 'records')
  manifest = records.read_manifest(workdir)
  assert manifest['archs']['cnn']['diverged']['step'] > 8
  spe = manifest['archs']['cnn']['steps_per_epoch']
  # Nothing non-finite on disk: every chunk and every checkpoint's params.
  for path in glob.glob(os.path.join(workdir, 'records', 'cnn', '*.npz')):
    with np.load(path) as z:
      for key in ('loss', 'margin', 'p_true'):
        seen = ~np.isnan(z[key]) if 'fused' in path else np.ones_like(
            z[key], bool)
        assert np.isfinite(z[key][seen]).all(), path
  assert _checkpoint_steps(workdir) == [spe]
  before = records.load(workdir, 'test', complete_only=False)

  # Another recovery value is accepted: resume from the last finite state.
  with caplog.at_level('INFO'):
    runner.run(_diverging_config(0.1), workdir, 'records')
  assert f'cnn: resuming at step {spe}' in caplog.text
  entry = records.read_manifest(workdir)['archs']['cnn']
  assert entry['complete'] and 'diverged' not in entry
  assert entry['amendments'][0]['changed']['optimizer.decay_factor'] == [
      1e30, 0.1]
  after = records.load(workdir, 'test')
  kept = before.probe_steps <= spe  # Probes before the divergence.
  assert kept.sum() == 2
  np.testing.assert_array_equal(after.probe_steps[:2], before.probe_steps[kept])
  np.testing.assert_array_equal(after.loss[:, :2], before.loss[:, kept])
  assert np.isfinite(after.loss).all()


def test_a_field_that_is_no_recovery_field_is_refused_after_divergence(
    tmp_path):
  workdir = str(tmp_path)
  with pytest.raises(FloatingPointError):
    runner.run(_diverging_config(1e30), workdir, 'records')
  config = _diverging_config(0.1)
  config.width = 0.5
  with pytest.raises(ValueError, match=r'width: 0\.25 -> 0\.5'):
    runner.run(config, workdir, 'records')
