"""Label-issue defaults: class thresholds, window, suspect shares, sources.

The kernel's slow reference and the records helpers live in
test_label_issues.py.
"""

import numpy as np
import pytest

from conftest import quick_config
from easyhard_jax.analysis import label_issues
from easyhard_jax.analysis import label_noise
from easyhard_jax.data import sources
from test_label_issues import _records_from_logits


def _probs_case(rows):
  """pred, margin, loss from per-example probability rows (1 member x 2)."""
  logits = np.log(np.asarray([r[1] for r in rows], np.float64))
  logits = np.broadcast_to(logits, (1, 2) + logits.shape).copy()
  labels = np.asarray([r[0] for r in rows])
  return (*_records_from_logits(logits, labels), labels)


def test_class_thresholds_drop_class_bias_keep_confident_flips():
  # Classes 0-2. Learned examples put 0.9 on their label; "unlearned" 1s
  # lean to class 0 at 0.5 (early class bias: below class 0's threshold,
  # the mean p(0) of the 0s, 0.9); flips labelled 1 put 0.95 on class 0.
  learned = [(k, np.roll((0.9, 0.05, 0.05), k)) for k in (0, 1, 2)] * 10
  biased = [(1, (0.5, 0.3, 0.2))] * 12
  flips = [(1, (0.95, 0.02, 0.03))] * 3
  pred, margin, loss, labels = _probs_case(learned + biased + flips)
  mask = np.ones(2, bool)
  plain = label_issues.label_issue_scores(pred, margin, loss, labels, mask, 3,
                                          'none')
  cal = label_issues.label_issue_scores(pred, margin, loss, labels, mask, 3,
                                        'class_threshold')
  is_biased = np.r_[np.zeros(30, bool), np.ones(12, bool), np.zeros(3, bool)]
  is_flip = np.r_[np.zeros(42, bool), np.ones(3, bool)]
  # Without calibration the biased 1s agree on class 0 with a positive score.
  assert (plain['agreed_class'][is_biased] == 0).all()
  assert (plain['score'][is_biased] > 0.15).all()
  # With it they cast no vote (score -p(given) = -0.3); the flips keep theirs.
  assert (cal['agreed_class'][is_biased] == -1).all()
  np.testing.assert_allclose(cal['score'][is_biased], -0.3, atol=1e-5)
  assert (cal['agreed_class'][is_flip] == 0).all()
  np.testing.assert_allclose(cal['score'][is_flip], 0.95 - 0.02, atol=1e-5)
  assert (cal['agreed_class'][~is_biased & ~is_flip] == -1).all()
  # The suspects: uncalibrated, class 0 holds all 15 of them; its data
  # share (given labels) is 10 / 45.
  shares = label_issues.suspect_shares(labels, plain['agreed_class'], 20,
                                       score=plain['score'])
  assert shares['suspects'] == 15 and shares['dominant'] == 0
  assert shares['classes'] == {'0': [1.0, pytest.approx(10 / 45)]}
  assert shares['ratio'] == pytest.approx(4.5)
  assert label_issues.suspect_shares(labels, cal['agreed_class'], 20,
                                     score=cal['score'])['suspects'] == 3


def test_suspect_shares_by_hand():
  # Ranked rows: agreed classes 2, -, 1, 2, 0 (given 0, 0, 1, 1, 2), top 3.
  got = label_issues.suspect_shares([0, 0, 1, 1, 2], [2, -1, 1, 2, 0], 3,
                                    num_classes=4)
  # Suspects: agreed 2, 1, 2 -> class 2 holds 2/3; data share of 2 is 1/5.
  assert got['suspects'] == 3
  assert got['classes'] == {'1': [pytest.approx(1 / 3), 0.4],
                            '2': [pytest.approx(2 / 3), 0.2]}
  assert got['dominant'] == 2 and got['ratio'] == pytest.approx(10 / 3)
  # Below half the suspects: no dominant class.
  even = label_issues.suspect_shares([0, 1, 2, 0], [1, 2, 0, 1], 3)
  assert even['dominant'] is None and even['ratio'] is None
  assert label_issues.suspect_shares([0, 1], [-1, -1], 5)['suspects'] == 0


def test_window_default_after_warmup_own_and_fallback():
  c = quick_config()
  c.epochs, c.optimizer.warmup_epochs = 15, 1.0
  c.analysis.label_issues.window = ()
  assert label_issues.window(c) == (1.0, 15.0)
  c.optimizer.warmup_epochs = 2.5
  assert label_issues.window(c) == (2.5, 15.0)
  c.optimizer.warmup_epochs = 0.0
  assert label_issues.window(c) == (1.0, 15.0)   # Never the first epoch.
  c.epochs = 1                                    # Nothing after: easiness.
  assert label_issues.window(c) == tuple(c.analysis.window)
  c.analysis.label_issues.window = (2.0, 5.0)
  assert label_issues.window(c) == (2.0, 5.0)
  assert label_issues.window(c.analysis) == (2.0, 5.0)
  c.analysis.label_issues.window = ()
  assert label_issues.window(c.analysis) == tuple(c.analysis.window)
  assert label_issues.calibration(c) == 'class_threshold'
  assert label_issues.score_kind(c) == 'p_given'
  with pytest.raises(ValueError, match='calibration'):
    label_issues.label_issue_scores(np.zeros((1, 1, 2), np.int16),
                                    np.zeros((1, 1, 2)), np.zeros((1, 1, 2)),
                                    np.zeros(2, int), np.ones(1, bool), 2,
                                    'cl')
  with pytest.raises(ValueError, match='score'):
    label_issues.label_issue_scores(np.zeros((1, 1, 2), np.int16),
                                    np.zeros((1, 1, 2)), np.zeros((1, 1, 2)),
                                    np.zeros(2, int), np.ones(1, bool), 2,
                                    'none', 'margin')


def test_known_noisy_sources_in_order(tmp_path):
  c = quick_config(**{'label_noise.fraction': 0.1})
  flips, src = label_noise.known_noisy(c, 100)
  np.testing.assert_array_equal(flips, sources.label_noise_indices(100, 0.1,
                                                                   0))
  assert 'label_noise' in src
  clean = np.arange(100) % 10
  given = clean.copy()
  given[[3, 50, 99]] += 1
  got, src = label_noise.known_noisy(c, 100, clean, given)
  np.testing.assert_array_equal(got, [3, 50, 99])
  np.save(tmp_path / 'k.npy', np.array([7, 1]))
  c.analysis.known_noisy = str(tmp_path / 'k.npy')
  np.testing.assert_array_equal(label_noise.known_noisy(c, 100)[0], [1, 7])
  with pytest.raises(ValueError, match='100'):
    c.analysis.known_noisy = ''
    label_noise.known_noisy(c, 100, clean[:5], given)


def test_known_noisy_from_train_labels_file(tmp_path):
  # Given labels from a file (config.train_labels, as CIFAR-10N's): the
  # known errors are the positions where they differ from the dataset's.
  c = quick_config()
  clean = sources.load_dataset(c).train_labels
  full = sources.load_dataset(quick_config(max_train_examples=0)).train_labels
  given = full.copy()
  changed = np.array([0, 17, 300, 1000])   # 1000 lies beyond the 512 kept.
  given[changed] = (given[changed] + 1) % 10
  np.save(tmp_path / 'given.npy', given)
  c.train_labels = str(tmp_path / 'given.npy')
  n = clean.size
  got, src = label_noise.known_noisy(c, n)
  np.testing.assert_array_equal(got, [0, 17, 300])
  assert 'train_labels' in src
  np.testing.assert_array_equal(
      np.flatnonzero(sources.load_dataset(c).train_labels != clean), got)


def test_report_notes_a_dominant_agreed_class():
  from easyhard_jax.report import label_issue_section
  shares = label_issues.suspect_shares([0] * 8 + [1] * 2, [1] * 6 + [2] * 2
                                       + [-1] * 2, 8)
  note = label_issue_section._shares_note('train', shares)
  assert 'Note: one agreed class (1) holds 75% of the suspects against ' \
         '20% of the data (3.8x)' in note
  even = label_issues.suspect_shares([0, 1, 2, 3], [1, 2, 3, 0], 4)
  note = label_issue_section._shares_note('test', even)
  assert 'Note' not in note and '1 25% (data 25%)' in note


def _records(rng, m, p, n, epochs, labels, source):
  from easyhard_jax.storage import records
  logits = rng.normal(0.0, 2.0, (m, p, n, 3))
  pred, margin, loss = _records_from_logits(logits, labels)
  return records.Records(
      correct=pred == labels, loss=loss, margin=margin,
      p_true=np.exp(-loss), el2n=np.full(loss.shape, np.nan, np.float32),
      labels=labels.astype(np.int32), example_ids=np.arange(n),
      tfds_ids=None, members=[{'name': f'cnn/s{i}', 'arch': 'cnn', 'seed': i}
                              for i in range(m)],
      probe_steps=np.arange(1, p + 1) * 10,
      probe_epochs=np.asarray(epochs, np.float64), split='train',
      source=source, pred=pred)


def test_same_window_scores_use_only_the_window():
  rng = np.random.default_rng(7)
  m, n = 3, 40
  labels = rng.integers(0, 3, n)
  rec = _records(rng, m, 5, n, [0.5, 1, 2, 3, 4], labels, 'probe')
  fused = _records(rng, m, 4, n, [1, 2, 3, 4], labels, 'fused')
  hard = label_noise.same_window_scores(rec, fused, (1.0, 3.0), 3)
  # Probe scores from the probes at epochs 2, 3; fused ones from epochs 2, 3.
  np.testing.assert_allclose(hard['aum'], -fused.margin[:, 1:3].mean((0, 1)),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(hard['confidence'],
                             -fused.p_true[:, 1:3].mean((0, 1)), atol=1e-5)
  np.testing.assert_allclose(hard['easiness'],
                             -rec.correct[:, 2:4].mean((0, 1)), atol=1e-6)
  np.testing.assert_allclose(hard['early_margin'],
                             -rec.margin[:, 2:4].mean((0, 1)), atol=1e-5)
  np.testing.assert_allclose(hard['-p(given)'],
                             -np.exp(-rec.loss[:, 2:4]).mean((0, 1)),
                             atol=1e-5)
  li = label_issues.label_issue_scores(
      rec.pred[:, 2:4], rec.margin[:, 2:4], rec.loss[:, 2:4], labels,
      np.ones(2, bool), 3, 'class_threshold')
  np.testing.assert_array_equal(hard['label_issue[agreed_margin, class_threshold]'],
                                li['score'])
  assert 'variability' not in hard and not any('/' in k for k in hard)


def test_validation_refuses_an_unknown_calibration():
  from easyhard_jax import validation
  with pytest.raises(ValueError, match='label_issues.calibration must be'):
    validation.validate(quick_config(
        **{'analysis.label_issues.calibration': 'cl'}))
  validation.validate(quick_config(
      **{'analysis.label_issues.calibration': 'none'}))
  with pytest.raises(ValueError, match='label_issues.score must be'):
    validation.validate(quick_config(**{'analysis.label_issues.score': 'x'}))
