"""Label-issue score, label noise and detection metrics against references."""

import collections
import csv
import json
import math
import os

import numpy as np
import pytest

from conftest import quick_config
from easyhard_jax.analysis import label_issues
from easyhard_jax.analysis import label_noise
from easyhard_jax.data import sources

EPS32 = float(np.finfo(np.float32).eps)


def _softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max())
  return e / e.sum()


def ref_thresholds(logits, pred, labels, mask):
  """Confident learning's t_k per (member, probe): mean p(k) over label k."""
  m, p, n, c = logits.shape
  thr = np.zeros((m, p, c))
  for a in range(m):
    for b in range(p):
      for k in range(c):
        ps = [_softmax(logits[a, b, i])[k] for i in range(n)
              if labels[i] == k and pred[a, b, i] >= 0 and mask[b]]
        thr[a, b, k] = np.mean(ps) if ps else 0.0
  return thr


def ref_label_issues(logits, pred, labels, mask, calibrated=False):
  """Slow reference, straight from the definition (module docstring).

  Probabilities come from the logits' softmax (float64), not from the
  records' loss and margin, so the identity p(agreed) = exp(-loss - margin)
  that the kernel uses is checked too.
  """
  m, p, n, _ = logits.shape
  thr = ref_thresholds(logits, pred, labels, mask) if calibrated else None
  agreed, agreement, p_agreed, p_given = [], [], [], []

  def votes_for(a, b, i):
    k = int(pred[a, b, i])
    if thr is None or k == labels[i]:
      return True
    return _softmax(logits[a, b, i])[k] >= thr[a, b, k]

  for i in range(n):
    pairs = [(a, b) for a in range(m) for b in range(p)
             if mask[b] and pred[a, b, i] >= 0]
    votes = [int(pred[a, b, i]) for a, b in pairs if votes_for(a, b, i)]
    others = collections.Counter(c for c in votes if c != labels[i])
    if not pairs:
      agreed.append(-1)
      for x in (agreement, p_agreed, p_given):
        x.append(math.nan)
      continue
    if others:
      top = max(others.values())
      agreed.append(min(c for c, v in others.items() if v == top))
      agreement.append(top / len(pairs))
    else:
      agreed.append(-1)
      agreement.append(0.0)
    pa = pg = 0.0
    for a, b in pairs:
      prob = _softmax(logits[a, b, i])
      pg += prob[labels[i]]
      if pred[a, b, i] == agreed[-1] and votes_for(a, b, i):
        pa += prob[agreed[-1]]
    p_agreed.append(pa / len(pairs))
    p_given.append(pg / len(pairs))
  return (np.array(agreed), np.array(agreement), np.array(p_agreed),
          np.array(p_given))


def _records_from_logits(logits, labels):
  """pred, margin and loss as the probe step stores them (float32)."""
  z = logits.astype(np.float64)
  logp = z - z.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  given = np.take_along_axis(z, labels[None, None, :, None], -1)[..., 0]
  others = np.where(np.arange(z.shape[-1]) == labels[None, None, :, None],
                    -np.inf, z).max(-1)
  loss = -np.take_along_axis(logp, labels[None, None, :, None], -1)[..., 0]
  return (np.argmax(z, -1).astype(np.int16), (given - others).astype(
      np.float32), loss.astype(np.float32))


def _random_case(rng, m=3, p=5, n=300, c=4, learned=0.0):
  labels = rng.integers(0, c, n)
  # Random logits: no ties between classes (tie-free arg-max and margins).
  logits = rng.normal(0.0, 2.0, (m, p, n, c))
  # Most examples learned (their label's logit raised): high per-class
  # thresholds, which then drop the less confident votes for other classes.
  logits += learned * ((rng.random(n) < 0.6)[:, None] &
                       (np.arange(c) == labels[:, None]))
  # Some examples lean to one other class, as label errors do.
  lean = rng.random(n) < 0.3
  other = (labels + rng.integers(1, c, n)) % c
  boost = lean[None, None, :] & (rng.random((m, p, n)) < 0.7)
  logits += 3.0 * (boost[..., None] & (np.arange(c) == other[:, None]))
  logits[:, :, 0, labels[0]] += 20.0   # Always the given label: agreed -1.
  pred, margin, loss = _records_from_logits(logits, labels)
  unseen = np.zeros(pred.shape, bool)
  unseen[:, :, 1] = True               # Never predicted: NaN.
  unseen[0, 1, 2:40] = True            # Some pairs without a prediction.
  pred[unseen] = -1
  margin[unseen] = loss[unseen] = np.nan  # Unseen pairs hold NaN.
  mask = np.array([1, 0, 1, 1, 0], bool)
  return logits, pred, margin, loss, labels, mask, c


@pytest.mark.parametrize('calibration', label_issues.CALIBRATIONS)
def test_kernel_matches_slow_reference(calibration):
  rng = np.random.default_rng(0)
  logits, pred, margin, loss, labels, mask, c = _random_case(rng, learned=4.0)
  got = label_issues.label_issue_scores(pred, margin, loss, labels, mask, c,
                                        calibration)
  agreed, agreement, p_agreed, p_given = ref_label_issues(
      logits, pred, labels, mask, calibrated=calibration != 'none')
  if calibration != 'none':
    # The case is not degenerate: the thresholds drop some votes, and no
    # p(k) lies within 1e-5 of its threshold (float32 rounding cannot flip
    # a vote on any CPU).
    thr = ref_thresholds(logits, pred, labels, mask)
    gaps, dropped = [], 0
    for a, b, i in zip(*np.nonzero((pred >= 0) & mask[None, :, None])):
      k = pred[a, b, i]
      if k != labels[i]:
        gaps.append(abs(_softmax(logits[a, b, i])[k] - thr[a, b, k]))
        dropped += _softmax(logits[a, b, i])[k] < thr[a, b, k]
    assert min(gaps) > 1e-5 and 50 < dropped < len(gaps) - 50
    plain = label_issues.label_issue_scores(pred, margin, loss, labels, mask,
                                            c, 'none')
    assert np.sum(plain['agreed_class'] != got['agreed_class']) > 5
  np.testing.assert_array_equal(got['agreed_class'], agreed)
  # Both divide the same integers in float64: exactly equal.
  np.testing.assert_array_equal(got['agreement'], agreement)
  # float32 loss and margin (|.| <= ~25) rounded by 1 ulp each, exp in
  # float32 and a float32 sum of <= 9 terms in [0, 1]: each mean is off by
  # at most ~(2 * 25 + 9) * EPS; 100 * EPS leaves room.
  for name, ref in (('p_agreed', p_agreed), ('p_given', p_given),
                    ('score', p_agreed - p_given)):
    np.testing.assert_allclose(got[name], ref, rtol=0, atol=100 * EPS32,
                               equal_nan=True, err_msg=name)
  assert np.nanmax(np.abs(np.diff(np.sort(got['score'])))) > 0
  # Ranking: the score, most suspect first; NaN last; then the index.
  order = label_issues.ranking(got['score'])
  score = got['score']
  ref = sorted(range(len(labels)), key=lambda i: (
      math.isnan(score[i]), -np.nan_to_num(score[i]), i))
  np.testing.assert_array_equal(order, ref)
  assert order[-1] == 1 and got['agreed_class'][0] == -1
  # Every pair predicts the given label: no agreed class, score -p(given).
  assert got['p_agreed'][0] == 0.0 and got['score'][0] < -0.99


def test_score_ranks_confident_consistent_reassignment_first():
  # Four examples of class 0, 3 members x 2 probes, all voting; classes 0-2.
  # a: every pair puts 0.98 on class 1; b: every pair 0.50 on class 1 and
  # 0.49 on 0 (same vote share as a); c: the pairs split between classes
  # 1 and 2 at 0.98; d: the given label at 0.98.
  probs = {'a': (0.01, 0.98, 0.01), 'b': (0.49, 0.50, 0.01),
           'd': (0.98, 0.01, 0.01)}
  rows = [np.log(probs[k]) for k in 'ab'] + [None] + [np.log(probs['d'])]
  logits = np.zeros((3, 2, 4, 3))
  for i, r in enumerate(rows):
    logits[:, :, i] = r if r is not None else 0.0
  logits[:, 0, 2] = np.log((0.01, 0.98, 0.01))
  logits[:, 1, 2] = np.log((0.01, 0.01, 0.98))
  labels = np.zeros(4, np.int64)
  pred, margin, loss = _records_from_logits(logits, labels)
  got = label_issues.label_issue_scores(pred, margin, loss, labels,
                                        np.ones(2, bool), 3)
  np.testing.assert_array_equal(got['agreement'], [1.0, 1.0, 0.5, 0.0])
  # A: 0.98 - 0.01; b: 0.50 - 0.49; c: half the pairs give 0.98 to the
  # agreed class (1), the others count 0; d: -0.98. float32 loss and
  # margin (|.| < 5) round by ~5e-7 each, then exp and a mean of 6 terms.
  np.testing.assert_allclose(got['score'], [0.97, 0.01, 0.49 - 0.01, -0.98],
                             atol=4e-6)
  np.testing.assert_array_equal(label_issues.ranking(got['score']),
                                [0, 2, 1, 3])


def test_kernel_blocks_agree_with_one_block(monkeypatch):
  rng = np.random.default_rng(1)
  _, pred, margin, loss, labels, mask, c = _random_case(rng, n=257)
  whole = label_issues.label_issue_scores(pred, margin, loss, labels, mask, c)
  monkeypatch.setattr(label_issues, '_BLOCK_ENTRIES', 64 * c)  # 64 / block.
  parts = label_issues.label_issue_scores(pred, margin, loss, labels, mask, c)
  for k in ('agreed_class', 'agreement', 'pairs'):
    np.testing.assert_array_equal(parts[k], whole[k], err_msg=k)
  for k in ('p_agreed', 'p_given', 'score'):
    np.testing.assert_array_equal(parts[k], whole[k], err_msg=k)


def test_flip_labels_exact_count_other_class_deterministic():
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 10, 1000).astype(np.int32)
  noisy, idx = sources.flip_labels(labels, 10, 0.1, seed=3)
  assert idx.size == 100 == np.sum(noisy != labels)
  np.testing.assert_array_equal(np.flatnonzero(noisy != labels), idx)
  again, idx2 = sources.flip_labels(labels, 10, 0.1, seed=3)
  np.testing.assert_array_equal(again, noisy)
  np.testing.assert_array_equal(idx2, idx)
  np.testing.assert_array_equal(
      sources.label_noise_indices(1000, 0.1, 3), idx)
  _, other = sources.flip_labels(labels, 10, 0.1, seed=4)
  assert not np.array_equal(other, idx)
  # round(): 0.05 * 30 = 1.5 -> 2 (numpy rounds half to even).
  assert sources.label_noise_indices(30, 0.05, 0).size == 2
  assert sources.label_noise_indices(10, 0.0, 0).size == 0
  with pytest.raises(ValueError, match='fraction'):
    sources.label_noise_indices(10, 1.0, 0)


def test_label_noise_in_loading_and_refused_when_streamed():
  clean = sources.load_dataset(quick_config())
  config = quick_config(**{'label_noise.fraction': 0.1})
  noisy = sources.load_dataset(config)
  changed = np.flatnonzero(noisy.train_labels != clean.train_labels)
  n = clean.train_labels.size
  assert changed.size == round(0.1 * n)
  np.testing.assert_array_equal(
      changed, sources.label_noise_indices(n, 0.1, 0))
  np.testing.assert_array_equal(noisy.test_labels, clean.test_labels)
  config.stream.enabled = True
  with pytest.raises(ValueError, match='streamed'):
    sources.load_dataset(config)


def _ref_auroc(h, pos):
  p, q = h[pos], h[~pos]
  wins = sum((a > b) + 0.5 * (a == b) for a in p for b in q)
  return wins / (len(p) * len(q))


def test_auroc_and_precision_at_k_against_references():
  rng = np.random.default_rng(5)
  h = rng.integers(0, 6, 80).astype(np.float64)  # Many ties.
  pos = rng.random(80) < 0.25
  assert label_noise.auroc(h, pos) == pytest.approx(_ref_auroc(h, pos))
  k = int(pos.sum())
  # Expected precision over random orders of the tie at the cut.
  cut = np.sort(h)[::-1][k - 1]
  above, tied = h > cut, h == cut
  expect = (pos[above].sum() + (k - above.sum()) * pos[tied].mean()) / k
  assert label_noise.precision_at_k(h, pos, k) == pytest.approx(expect)
  perfect = np.where(pos, 1.0, 0.0) + rng.random(80) * 0.5
  assert label_noise.auroc(perfect, pos) == 1.0
  assert label_noise.precision_at_k(perfect, pos, k) == 1.0


def test_read_indices_formats(tmp_path):
  want = np.array([2, 5, 7])
  np.save(tmp_path / 'a.npy', want[::-1])
  (tmp_path / 'b.txt').write_text('7\n2 5\n')
  (tmp_path / 'c.csv').write_text('label,example_index\n1,5\n0,2\n3,7\n')
  (tmp_path / 'd.csv').write_text('5\n2\n7\n')
  for name in ('a.npy', 'b.txt', 'c.csv', 'd.csv'):
    np.testing.assert_array_equal(
        label_noise.read_indices(str(tmp_path / name), 10), want)
  with pytest.raises(ValueError, match='0..4'):
    label_noise.read_indices(str(tmp_path / 'a.npy'), 5)


def test_record_and_analyze_with_label_noise(tmp_path):
  from easyhard_jax import records
  from easyhard_jax import runner
  workdir = str(tmp_path / 'noisy')
  config = quick_config(**{'label_noise.fraction': 0.1})
  runner.run(config, workdir, 'record')
  rec = records.load(workdir, 'train')
  assert rec.pred.dtype == np.int16 and (rec.pred >= 0).all()
  np.testing.assert_array_equal(rec.correct, rec.pred == rec.labels)
  fused = records.load(workdir, 'train', 'fused')
  np.testing.assert_array_equal(fused.correct, fused.pred == fused.labels)
  runner.run(config, workdir, 'analyze')
  for split in ('train', 'test'):
    path = os.path.join(workdir, 'exports', f'label_issues_{split}.csv')
    with open(path, newline='') as f:
      rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == label_issues.TABLE_COLUMNS
    score = np.array([float(r['score']) for r in rows])
    assert np.all(np.diff(score) <= 0)  # Most suspect first.
    assert sorted(int(r['index']) for r in rows) == list(range(len(rows)))
  with open(os.path.join(workdir, 'analysis', 'analysis.json')) as f:
    noise = json.load(f)['label_noise']
  n = len(rec.labels)
  assert noise['known_noisy'] == round(0.1 * n)
  auc = noise['scores']['label_issue']['auroc']
  # Two members, two early probes, 2 epochs of 512 digits: the flipped
  # examples are still predicted as their true class (measured ~0.9);
  # only "better than chance" is asserted for so small a run.
  assert auc > 0.5
  assert 0 <= noise['scores']['easiness']['auroc'] <= 1
  with open(os.path.join(workdir, 'analysis', 'scores_train.csv')) as f:
    assert 'label_issue' in next(csv.reader(f))
  # The report section: a grid of the top suspects and the AUROC table.
  from easyhard_jax.report import build
  from easyhard_jax.report import sections
  data = sources.load_dataset(config)
  study = build.Study(config, workdir, data.train_images, data.test_images)
  sec = sections.build_section(study, 'label-issues')
  assert sec.status == 'ok', sec.note
  assert [f.name for f in sec.figures] == ['label_issues_train',
                                           'label_issues_test']
  assert all(f.png.startswith(b'\x89PNG') for f in sec.figures)
  assert 'AUROC' in sec.body_html and 'label_issue' in sec.body_html


def test_records_store_pred_as_int16_and_old_chunks_load_as_minus_one(
    tmp_path):
  from easyhard_jax import records
  n, spe = 6, 2
  for name, with_pred in (('new', True), ('old', False)):
    workdir = str(tmp_path / name)
    w = records.RecordWriter(workdir, enabled=True)
    for split in ('train', 'test'):
      w.write_split_metadata(split, np.arange(n) % 3, None)
    w.begin_arch('cnn', [{'name': 'cnn/s0', 'arch': 'cnn', 'seed': 0}], spe,
                 [spe], {'fields': {}, 'hash': 'h'})
    for split in ('train', 'test'):
      arrays = {'correct': np.ones((1, n), bool),
                'loss': np.zeros((1, n), np.float32),
                'margin': np.ones((1, n), np.float32),
                'p_true': np.ones((1, n), np.float32),
                'el2n': np.zeros((1, n), np.float32)}
      if with_pred:
        arrays['pred'] = (np.arange(n, dtype=np.int32) % 3)[None]
      w.write_chunk('cnn', 'probe', split, 0, spe, arrays)
    w.finish_arch('cnn')
    rec = records.load(workdir, 'train')
    assert rec.pred.dtype == np.int16 and rec.pred.shape == (1, 1, n)
    if with_pred:
      np.testing.assert_array_equal(rec.pred[0, 0], np.arange(n) % 3)
    else:
      assert (rec.pred == -1).all()
      cfg = quick_config().analysis
      assert label_issues.from_records(rec, cfg, 3) is None


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
  with pytest.raises(ValueError, match='calibration'):
    label_issues.label_issue_scores(np.zeros((1, 1, 2), np.int16),
                                    np.zeros((1, 1, 2)), np.zeros((1, 1, 2)),
                                    np.zeros(2, int), np.ones(1, bool), 2,
                                    'cl')


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
  from easyhard_jax import records
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
  np.testing.assert_array_equal(hard['label_issue[class_threshold]'],
                                li['score'])
  assert 'variability' not in hard and not any('/' in k for k in hard)


def test_validation_refuses_an_unknown_calibration():
  from easyhard_jax import validation
  with pytest.raises(ValueError, match='label_issues.calibration must be'):
    validation.validate(quick_config(
        **{'analysis.label_issues.calibration': 'cl'}))
  validation.validate(quick_config(
      **{'analysis.label_issues.calibration': 'none'}))
