"""--mode=checkpoint_probes and the after-the-fact API on a quick study."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import quick_config
from easyhard_jax.storage import records
from easyhard_jax import runner
from easyhard_jax.analysis import feature_similarity as fs
from easyhard_jax.probes import checkpoint_scores
from easyhard_jax.probes import grand
from easyhard_jax.train import steps as steps_lib

# digits_quick: 512 examples / batch 64 = 8 steps per epoch; probes at steps
# 4, 8, 16; window (0, 1] epochs: analysis checkpoints at 4 and 8.
KEPT = [4, 8]


def _study_at(study, steps):
  """Probe indices of ``steps`` in the study's records."""
  where = [int(np.flatnonzero(study.probe_steps == s)[0]) for s in steps]
  return np.asarray(where)


@pytest.mark.slow
def test_analysis_checkpoints_give_records_features_and_grand(quick_study,
                                                              tmp_path):
  _, source = quick_study
  workdir = str(tmp_path / 'probe')
  config = quick_config()
  config.checkpoint_probes.source_workdir = source
  runner.run(config, workdir, 'checkpoint_probes')
  out = os.path.join(workdir, 'checkpoint_probes')
  for split in ('train', 'test'):
    ck = records.load(out, split)
    study = records.load(source, split)
    np.testing.assert_array_equal(ck.probe_steps, KEPT)
    at = _study_at(study, KEPT)
    np.testing.assert_array_equal(ck.correct, study.correct[:, at])
    np.testing.assert_allclose(ck.loss, study.loss[:, at], rtol=1e-5)
  for step in KEPT:
    feats = np.load(os.path.join(out, 'features', f'cnn_step{step}_train.npz'))
    assert feats['features'].dtype == np.float16
    assert feats['features'].shape[:2] == (2, config.max_train_examples)
    assert np.isfinite(feats['features']).all()
  g = checkpoint_scores.load_scores(workdir, grand.NAME)
  assert g.values.shape == (2, len(KEPT), config.max_train_examples)
  np.testing.assert_array_equal(g.steps, KEPT)
  np.testing.assert_allclose(g.epochs, [0.5, 1.0])
  assert [m['name'] for m in g.members] == ['cnn/s0', 'cnn/s1']
  assert np.isfinite(g.values).all() and (g.values > 0).all()
  np.testing.assert_array_equal(g.labels, records.load(out, 'train').labels)
  expected = grand.expected_grand(g.values)
  assert expected.shape == (len(KEPT), config.max_train_examples)
  at_end, step = checkpoint_scores.window_score(workdir, grand.NAME,
                                             config.analysis.window)
  assert step == 8
  np.testing.assert_array_equal(at_end, expected[-1])
  with pytest.raises(FileNotFoundError, match='no complete test split'):
    checkpoint_scores.load_scores(workdir, grand.NAME, 'test')
  # The analysis' feature view: features at the window's end (step 8).
  window = fs.load_window_features(workdir, config.analysis.window)
  assert window.step == 8 and window.epoch == 1.0
  train = records.load(out, 'train')
  correct = train.correct.all(axis=(0, 1))
  view = fs.feature_set_distances(window.features, correct, ~correct,
                                  train.labels, per_class=False)
  assert view['global']['members'] == 2
  assert all(view['global'][m][s] > 0 for m in fs.METRICS
             for s in fs.SET_NAMES)


def test_resume_source_probes_the_last_epoch_ends(quick_study, tmp_path):
  _, source = quick_study
  workdir = str(tmp_path / 'probe')
  config = quick_config()
  pc = config.checkpoint_probes
  pc.source_workdir, pc.source = source, 'resume'
  pc.features, pc.grand, pc.splits = False, False, ('test',)
  runner.run(config, workdir, 'checkpoint_probes')
  ck = records.load(os.path.join(workdir, 'checkpoint_probes'), 'test')
  study = records.load(source, 'test')
  np.testing.assert_array_equal(ck.probe_steps, [8, 16])  # Two epoch ends.
  np.testing.assert_array_equal(ck.correct[:, -1], study.correct[:, -1])
  np.testing.assert_allclose(ck.loss[:, -1], study.loss[:, -1], rtol=1e-5)


def _loss(model, variables, images, labels):
  """A user's per-example function: the eval-mode cross-entropy."""
  logits = model.apply(variables, images, train=False)
  return steps_lib.per_example_stats(logits, labels).loss


def test_a_score_after_the_fact_lines_up_with_the_records(quick_study,
                                                          tmp_path):
  config, source = quick_study
  config = config.copy_and_resolve_references()
  config.checkpoint_probes.source_workdir = source
  workdir = str(tmp_path / 'scores')
  path = checkpoint_scores.score_checkpoints(workdir, config, _loss, 'xent',
                                          split=('train', 'test'),
                                          steps=[8], batch_size=100)
  assert path == os.path.join(workdir, 'checkpoint_probes', 'scores', 'xent')
  for split in ('train', 'test'):
    s = checkpoint_scores.load_scores(workdir, 'xent', split)
    study = records.load(source, split)
    np.testing.assert_array_equal(s.steps, [8])
    # Batches of 100 (the probe pass used 256): eval mode does not care.
    np.testing.assert_allclose(s.at(8), study.loss[:, _study_at(study, [8])[0]],
                               rtol=1e-5)
  with pytest.raises(ValueError, match='one value per example'):
    checkpoint_scores.score_checkpoints(
        workdir, config, lambda m, v, x, y: jnp.zeros(()), 'bad', steps=[8])
  with pytest.raises(ValueError, match='no checkpoint'):
    checkpoint_scores.score_checkpoints(workdir, config, _loss, 'xent2',
                                     steps=[5])


def test_missing_checkpoints_name_the_fix(tmp_path):
  config = quick_config()
  config.checkpoint_probes.source_workdir = str(tmp_path / 'empty')
  with pytest.raises(FileNotFoundError, match='run --mode=records'):
    runner.run(config, str(tmp_path / 'w'), 'checkpoint_probes')
  config.checkpoint_probes.source = 'latest'
  with pytest.raises(ValueError, match='checkpoint_probes.source'):
    runner.run(config, str(tmp_path / 'w'), 'checkpoint_probes')


@pytest.mark.slow
def test_analyze_uses_grand_and_window_features(quick_study, tmp_path):
  """checkpoint_probes then analyze: GraNd is a score, features a view."""
  import json
  import shutil
  from easyhard_jax.report import read_scores
  _, source = quick_study
  workdir = str(tmp_path / 'study')
  shutil.copytree(source, workdir)
  config = quick_config()
  runner.run(config, workdir, 'checkpoint_probes')
  runner.run(config, workdir, 'analysis')
  table = read_scores(os.path.join(workdir, 'analysis', 'scores_train.csv'))
  expected = checkpoint_scores.window_score(workdir, grand.NAME,
                                         config.analysis.window)[0]
  np.testing.assert_allclose(table['grand'], expected, rtol=1e-6)
  # One architecture: grand is its expectation, also as grand/cnn.
  np.testing.assert_allclose(table['grand/cnn'], expected, rtol=1e-6)
  with open(os.path.join(workdir, 'analysis', 'analysis.json')) as f:
    result = json.load(f)
  assert 'penultimate_step8' in result['similarity']['features']
  assert result['similarity']['feature_checkpoint']['step'] == 8
