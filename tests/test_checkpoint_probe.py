"""--mode=probe_checkpoints: records from saved checkpoints match the study."""

import os

import numpy as np
import pytest

from conftest import quick_config
from easyhard_jax import records
from easyhard_jax import stages


def test_checkpoint_records_equal_the_study_probe(quick_study, tmp_path):
  _, source = quick_study
  workdir = str(tmp_path / 'probe')
  config = quick_config()
  config.probe_checkpoints.source_workdir = source
  stages.run(config, workdir, 'probe_checkpoints')
  out = os.path.join(workdir, 'checkpoint_probes')
  for split in ('train', 'test'):
    ck = records.load(out, split)
    study = records.load(source, split)
    assert ck.probe_steps[-1] == study.probe_steps[-1]
    np.testing.assert_array_equal(ck.correct[:, -1], study.correct[:, -1])
    np.testing.assert_allclose(ck.loss[:, -1], study.loss[:, -1], rtol=1e-5)
  step = ck.probe_steps[-1]
  feats = np.load(os.path.join(out, 'features', f'cnn_step{step}_train.npz'))
  assert feats['features'].shape[:2] == (2, config.max_train_examples)
  assert np.isfinite(feats['features']).all()


def test_missing_checkpoints_name_the_fix(tmp_path):
  config = quick_config()
  config.probe_checkpoints.source_workdir = str(tmp_path / 'empty')
  with pytest.raises(FileNotFoundError, match='run --mode=record'):
    stages.run(config, str(tmp_path / 'w'), 'probe_checkpoints')
