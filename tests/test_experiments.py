"""Removal / compression subsets, budgets, and the cause probes."""

import copy
import json
import os
import shutil

import numpy as np
import pytest

from conftest import quick_config
from easyhard_jax import records
from easyhard_jax import stages
from easyhard_jax.data import sources
from easyhard_jax.experiments import causes
from easyhard_jax.experiments import subsets
from easyhard_jax.train import ensemble


def _random_problem(n=300, classes=4, seed=0):
  rng = np.random.default_rng(seed)
  score = rng.integers(0, 5, n) / 4.0  # Many ties, like easiness.
  return score, rng.normal(size=n), rng.integers(0, classes, n)


@pytest.mark.parametrize('strategy', ['easiest', 'hardest'])
def test_removal_drops_the_chosen_end(strategy):
  score, aum, labels = _random_problem()
  keep = subsets.removal_mask(strategy, 90, score=score, score_name='easiness',
                              labels=labels, seed=0, aum=aum)
  removed = ~keep
  assert removed.sum() == 90
  # Slow reference: every removed example is at least as easy (hard) as
  # every kept one, under (easiness, aum) order.
  key = list(zip(score, aum))
  worst_kept = (max if strategy == 'easiest' else min)(
      k for k, m in zip(key, keep) if m)
  for k, m in zip(key, removed):
    if m:
      assert (k >= worst_kept) if strategy == 'easiest' else (k <= worst_kept)


def test_el2n_orientation_is_respected():
  score, aum, labels = _random_problem()
  keep = subsets.removal_mask('easiest', 50, score=score * 0 + aum,
                              score_name='el2n', labels=labels, seed=0)
  # For EL2N high = hard, so removing the easiest removes the lowest values.
  assert aum[~keep].max() <= aum[keep].min()


def test_balanced_quota_is_exact_and_proportional():
  _, _, labels = _random_problem(n=301, classes=3, seed=1)
  quota = subsets.class_quota(labels, 100)
  assert sum(quota.values()) == 100
  sizes = np.bincount(labels)
  for c, q in quota.items():
    assert abs(q - 100 * sizes[c] / sizes.sum()) < 1
  score, aum, _ = _random_problem(n=301, classes=3, seed=1)
  keep = subsets.removal_mask('hardest_balanced', 100, score=score,
                              score_name='easiness', labels=labels, seed=0,
                              aum=aum)
  for c, q in quota.items():
    assert (~keep & (labels == c)).sum() == q


def test_random_subsets_differ_by_seed_and_repeat_for_a_seed():
  score, _, labels = _random_problem()
  masks = [subsets.removal_mask('random', 100, score=score,
                                score_name='easiness', labels=labels, seed=s)
           for s in (0, 1, 0)]
  assert not np.array_equal(masks[0], masks[1])
  np.testing.assert_array_equal(masks[0], masks[2])


def test_stratified_compression_spans_all_easiness_levels():
  score, aum, labels = _random_problem()
  keep = subsets.compression_mask('stratified', 50, score=score,
                                  score_name='easiness', labels=labels,
                                  seed=0, aum=aum)
  assert keep.sum() == 50
  assert set(np.unique(score[keep])) == set(np.unique(score))
  drop = subsets.compression_mask('drop_easiest', 50, score=score,
                                  score_name='easiness', labels=labels,
                                  seed=0, aum=aum)
  assert score[drop].max() <= score[~drop].min() + 1e-9 or (
      score[drop].mean() < score[~drop].mean())


def test_bad_strategy_and_fraction_are_named():
  score, _, labels = _random_problem()
  with pytest.raises(ValueError, match='Unknown strategy'):
    subsets.removal_mask('median', 5, score=score, score_name='easiness',
                         labels=labels, seed=0)
  with pytest.raises(ValueError, match='Cannot remove'):
    subsets.removal_mask('random', 300, score=score, score_name='easiness',
                         labels=labels, seed=0)


def test_members_never_train_on_removed_examples():
  config = quick_config(epochs=1)
  data = sources.load_dataset(config)
  n = data.train_images.shape[0]
  rng = np.random.default_rng(0)
  keep = np.stack([rng.permutation(n) < n // 2 for _ in range(2)])
  t = ensemble.ArchTrainer(config, data, 'cnn', keep=keep)
  assert t.spe == int(np.ceil((n // 2) / config.batch_size))
  states = t.init_states()
  perms = t.epoch_perms(0)
  buffers = ensemble.steps_lib.empty_buffers(2, n)
  for _ in range(t.spe):
    states, buffers = t.step(states, buffers, perms)
  seen = np.isfinite(np.asarray(buffers['loss']))
  np.testing.assert_array_equal(seen, keep)  # All kept seen, none removed.


@pytest.fixture(scope='module')
def study_copy(quick_study, tmp_path_factory):
  config, workdir = quick_study
  copy_dir = str(tmp_path_factory.mktemp('sweeps'))
  shutil.copytree(workdir, copy_dir, dirs_exist_ok=True)
  return config, copy_dir


@pytest.mark.parametrize('budget', ['epochs', 'steps'])
def test_removal_sweep_budgets(study_copy, budget, tmp_path):
  _, workdir = study_copy
  workdir_b = str(tmp_path / budget)
  shutil.copytree(workdir, workdir_b)
  config = quick_config()
  config.removal.fractions = (0.5,)
  config.removal.strategies = ('easiest', 'random')
  config.removal.seeds = 1
  config.removal.epochs = 2
  config.removal.budget = budget
  stages.run(config, workdir_b, 'remove')
  with open(os.path.join(workdir_b, 'removal', 'results.json')) as f:
    result = json.load(f)
  steps = {r['strategy']: r['steps'] for r in result['rows']}
  full = result['full_steps']
  assert steps['full'] == full == 2 * 8  # 512 examples / 64 per batch.
  if budget == 'epochs':
    assert steps['easiest'] == steps['random'] == 2 * 4  # Half the data.
  else:
    assert steps['easiest'] == steps['random'] == full
  assert result['budget'] == budget and result['curves']
  masks = np.load(os.path.join(workdir_b, 'removal', 'frac_0.500',
                               'masks_cnn.0.npz'))['keep']
  assert masks.shape == (2, 512) and (masks.sum(1) == 256).all()
  fused = records.load(os.path.join(workdir_b, 'removal', 'frac_0.500'),
                       'train', source='fused')
  np.testing.assert_array_equal(np.isfinite(fused.loss[:, 0]), masks)
  # A rerun trains nothing and gives the same table.
  stages.run(config, workdir_b, 'remove')
  with open(os.path.join(workdir_b, 'removal', 'results.json')) as f:
    assert json.load(f)['rows'] == result['rows']


def test_random_labels_really_shuffle():
  config = quick_config()
  data = sources.load_dataset(config)
  _, shuffled = causes.VARIANTS['random_labels'](config, data,
                                                  config.causes)
  assert (shuffled.train_labels != data.train_labels).mean() > 0.8
  np.testing.assert_array_equal(np.bincount(shuffled.train_labels),
                                np.bincount(data.train_labels))
  np.testing.assert_array_equal(shuffled.test_labels, data.test_labels)


def test_lowpass_and_grayscale_inputs():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
  blurred = causes.gaussian_lowpass(images, 1.0)
  def hf(x):
    return np.abs(np.diff(x.astype(float), axis=1)).mean()
  assert hf(blurred) < 0.5 * hf(images)
  gray = causes.to_grayscale(images)
  assert (gray[..., 0] == gray[..., 1]).all()
  expected = np.round(images @ np.array([0.299, 0.587, 0.114]))
  np.testing.assert_allclose(gray[..., 0], expected, atol=1)
  one = images[..., :1]
  np.testing.assert_array_equal(causes.to_grayscale(one), one)


def test_probe_causes_end_to_end(study_copy):
  _, workdir = study_copy
  config = quick_config()
  config.causes.variants = ('random_labels', 'grayscale')
  config.causes.seeds = 1
  config.causes.epochs = 1
  stages.run(config, workdir, 'probe_causes')
  with open(os.path.join(workdir, 'causes', 'results.json')) as f:
    result = json.load(f)
  assert [r['variant'] for r in result['rows']] == ['random_labels',
                                                    'grayscale']
  for row in result['rows']:
    assert np.isfinite(row['easy_overlap_ratio'])
    assert -1 <= row['spearman_easiness'] <= 1
  with pytest.raises(ValueError, match='Unknown causes.variants'):
    bad = copy.deepcopy(config)
    bad.causes.variants = ('moonlight',)
    stages.run(bad, workdir, 'probe_causes')


def test_analyze_writes_exports_and_keep_lists(study_copy):
  config, workdir = study_copy
  stages.run(quick_config(), workdir, 'analyze')
  z = np.load(os.path.join(workdir, 'exports', 'scores_train.npz'))
  n = config.max_train_examples
  np.testing.assert_array_equal(z['example_index'], np.arange(n))
  rec = records.load(workdir, 'train')
  np.testing.assert_array_equal(z['label'], rec.labels)
  assert z['is_easy'].sum() > 0 and z['is_hard'].sum() > 0
  for fraction in config.compression.fractions:
    path = os.path.join(workdir, 'exports', 'keep_lists',
                        f'drop_easiest_keep{fraction:.2f}.csv')
    kept = np.loadtxt(path, delimiter=',', skiprows=1, usecols=0, dtype=int,
                      ndmin=1)
    assert len(kept) == round(fraction * n)
    assert (np.diff(kept) > 0).all() and kept.max() < n
    # Dropping the easiest first keeps the hardest: kept easiness is lower.
    dropped = np.setdiff1d(np.arange(n), kept)
    assert z['easiness'][kept].mean() <= z['easiness'][dropped].mean()
