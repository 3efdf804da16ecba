"""Bad configs, damaged checkpoints and NaN losses give errors that name a fix."""

import glob
import os
import shutil

import pytest

from conftest import quick_config
from easyhard_jax import records
from easyhard_jax import stages
from easyhard_jax.train import config_checks


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
])
def test_impossible_config_values_are_named(overrides, message):
  with pytest.raises(ValueError, match=message):
    config_checks.validate(quick_config(**overrides))


def test_workdir_of_another_dataset_is_refused(quick_study, tmp_path):
  _, workdir = quick_study
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  config = quick_config(max_train_examples=256)
  with pytest.raises(ValueError, match='fresh --workdir'):
    stages.run(config, copy, 'record')


def test_corrupted_checkpoint_names_the_file_to_delete(quick_study, tmp_path):
  _, workdir = quick_study
  copy = str(tmp_path / 'damaged')
  shutil.copytree(workdir, copy)
  manifest = records.read_manifest(copy)
  manifest['archs']['cnn']['complete'] = False  # Force a resume.
  records.atomic_write_json(os.path.join(copy, 'records', 'manifest.json'),
                            manifest)
  steps = sorted(int(os.path.basename(p)) for p in
                 glob.glob(os.path.join(copy, 'checkpoints', 'cnn', '[0-9]*')))
  latest = os.path.join(copy, 'checkpoints', 'cnn', str(steps[-1]))
  for path in glob.glob(os.path.join(latest, '**', '*'), recursive=True):
    if os.path.isfile(path) and 'manifest' not in path:
      with open(path, 'wb') as f:
        f.write(b'garbage')
  with pytest.raises(RuntimeError, match=f'delete {latest}'):
    stages.run(quick_config(), copy, 'record')


def test_nan_loss_stops_with_the_member_and_epoch(tmp_path):
  config = quick_config(epochs=1)
  config.optimizer.learning_rate = 1e30
  with pytest.raises(FloatingPointError, match='epoch 1.*learning_rate'):
    stages.run(config, str(tmp_path), 'record')
