"""Training-pass scores against slow references written from the papers.

Conventions checked here (each from the authors' public code):

* Forgetting events (Toneva et al. 2019, mtoneva/example_forgetting): a
  forgetting event is a presentation classified wrong right after a
  presentation classified right; the first presentation has no predecessor.
  An example never classified right at any presentation counts E (the number
  of training epochs, their ``npresentations``), above any real count.
  Counts are per member (one training run each); the example score is the
  mean over members (the authors sum over runs: the same order).
* AUM (Pleiss et al. 2020, asappresearch/aum): the assigned logit minus the
  largest other logit, averaged over every presentation (every epoch).
* Dataset cartography (Swayamdipta et al. 2020, allenai/cartography):
  confidence = mean p(true) over epochs, variability = population std
  (``np.std``), correctness = fraction of epochs correct (the paper; their
  code keeps the count). Every epoch counts once.
* An example not presented in an epoch (a partial last epoch, a subset) has
  NaN statistics there and is skipped: "consecutive" means consecutive
  presentations. An example never presented to a member is NaN.
"""

import dataclasses
import math

import numpy as np
import pytest

from easyhard_jax.storage import records
from easyhard_jax.analysis import scores

# float32 sums of at most ~10 values in [-3, 3] carry a relative error below
# 10 * 2^-24 ~ 6e-7; the references use float64.
RTOL, ATOL = 1e-5, 2e-6


def ref_toneva(acc_presented, num_epochs):
  """Forgetting count of one run from its list of presentation accuracies."""
  if not acc_presented:
    return math.nan
  if not any(acc_presented):
    return num_epochs  # "If example was never learned ... add max counts".
  return sum(1 for a, b in zip(acc_presented, acc_presented[1:])
             if a and not b)


def ref_fused(correct, margin, p_true, presented):
  """Slow per-member references: {name: float64 [M, N]}."""
  m_, e_, n_ = correct.shape
  out = {k: np.full((m_, n_), np.nan) for k in scores.FUSED_SCORE_NAMES}
  for m in range(m_):
    for n in range(n_):
      ep = [e for e in range(e_) if presented[m, e, n]]
      acc = [bool(correct[m, e, n]) for e in ep]
      out['forgetting_events'][m, n] = ref_toneva(acc, e_)
      if not ep:
        continue
      ps = [float(p_true[m, e, n]) for e in ep]
      mu = sum(ps) / len(ps)
      out['aum'][m, n] = sum(float(margin[m, e, n]) for e in ep) / len(ep)
      out['confidence'][m, n] = mu
      out['variability'][m, n] = math.sqrt(
          sum((p - mu) ** 2 for p in ps) / len(ps))
      out['correctness'][m, n] = sum(acc) / len(acc)
  return out


def _fused_arrays(rng, m, e, n):
  """Random tie-free training-pass statistics with NaN where not presented."""
  margin = rng.normal(0.3, 1.0, (m, e, n)).astype(np.float32)
  p_true = rng.random((m, e, n)).astype(np.float32)
  presented = rng.random((m, e, n)) < 0.85
  presented[:, -1, : n // 2] = False  # A partial last epoch.
  if n >= 4:
    presented[0, :, 0] = False          # Never presented to member 0.
    margin[:, :, 1] = -np.abs(margin[:, :, 1]) - 0.1  # Never learned.
    margin[:, :, 2] = np.abs(margin[:, :, 2]) + 0.1   # Always right.
    presented[:, :, 3] = True
  correct = (margin > 0) & presented   # Buffers hold False when unseen.
  margin = np.where(presented, margin, np.nan).astype(np.float32)
  p_true = np.where(presented, p_true, np.nan).astype(np.float32)
  return correct, margin, p_true, presented


@pytest.mark.parametrize('shape', [(1, 1, 3), (2, 5, 11), (3, 8, 40)])
def test_fused_kernel_matches_paper_references(shape):
  rng = np.random.default_rng(sum(shape))
  correct, margin, p_true, presented = _fused_arrays(rng, *shape)
  got = scores.fused_member_scores(correct, margin, p_true, presented)
  ref = ref_fused(correct, margin, p_true, presented)
  assert set(got) == set(scores.FUSED_SCORE_NAMES)
  for name in scores.FUSED_SCORE_NAMES:
    g = np.asarray(got[name])
    np.testing.assert_array_equal(np.isnan(g), np.isnan(ref[name]), name)
    np.testing.assert_allclose(g, ref[name], rtol=RTOL, atol=ATOL,
                               err_msg=name)
  np.testing.assert_array_equal(
      scores.presented_mask(records_like(correct, margin, p_true)), presented)


def records_like(correct, margin, p_true, members=None):
  m, e, n = correct.shape
  members = members or [{'name': f'm{i}', 'arch': 'a' if i % 2 else 'b',
                         'seed': i} for i in range(m)]
  nan = np.full(correct.shape, np.nan, np.float32)
  return records.Records(
      correct=correct, loss=-np.log(p_true), margin=margin, p_true=p_true,
      el2n=nan, labels=np.zeros(n, np.int32),
      example_ids=np.arange(n, dtype=np.int64), tfds_ids=None,
      members=members, probe_steps=np.arange(1, e + 1) * 4,
      probe_epochs=np.arange(1, e + 1, dtype=np.float64), split='train',
      source='fused')


def test_forgetting_conventions_on_hand_written_sequences():
  # Rows: one member's presentations of 6 examples over E = 5 epochs
  # (nan = not presented that epoch).
  nan = np.nan
  acc = np.array([
      [1, 0, 1, 0, 1],        # Two forgetting events.
      [0, 0, 0, 0, 0],        # Never learned: E = 5 (authors' convention).
      [0, 1, 1, 1, 1],        # Learned once, never forgotten: 0.
      [1, nan, 0, nan, nan],  # Right, skipped epoch, wrong: 1 event.
      [nan] * 5,              # Never presented: NaN.
      [0, 0, nan, 0, nan],    # Never learned in 3 presentations: still E.
  ]).T[None]  # [1, E, N]
  presented = ~np.isnan(acc)
  correct = np.nan_to_num(acc) > 0
  margin = np.where(presented, np.where(correct, 1.0, -1.0), nan)
  p = np.where(presented, np.where(correct, 0.9, 0.2), nan)
  got = scores.fused_member_scores(correct, margin.astype(np.float32),
                                   p.astype(np.float32), presented)
  np.testing.assert_array_equal(np.asarray(got['forgetting_events'])[0],
                                [2, 5, 0, 1, nan, 5])
  np.testing.assert_allclose(np.asarray(got['correctness'])[0],
                             [0.6, 0.0, 0.8, 0.5, nan, 0.0])
  # AUM averages the margin over presentations only: (+1 - 1) / 2 = 0.
  np.testing.assert_allclose(np.asarray(got['aum'])[0, 3], 0.0)


@pytest.mark.slow
def test_compute_scores_adds_fused_scores_per_member_and_arch():
  rng = np.random.default_rng(7)
  m, p, e, n = 4, 6, 5, 30
  correct, margin, p_true, _ = _fused_arrays(rng, m, e, n)
  fused = records_like(correct, margin, p_true)
  probe = records_like(rng.random((m, p, n)) < 0.6,
                       rng.normal(size=(m, p, n)).astype(np.float32),
                       rng.random((m, p, n)).astype(np.float32),
                       members=fused.members)
  probe = dataclasses.replace(probe, source='probe')
  out = scores.compute_scores(probe, (0.0, 3.0), (0.0, np.inf), fused=fused)
  ref = ref_fused(correct, margin, p_true, scores.presented_mask(fused))
  for name in scores.FUSED_SCORE_NAMES:
    np.testing.assert_allclose(out['member'][name], ref[name], rtol=RTOL,
                               atol=ATOL)
    # Example 0 was never presented to member 0: NaN in its mean.
    np.testing.assert_allclose(out['example'][name],
                               ref[name].mean(axis=0), rtol=RTOL, atol=ATOL)
    # Per architecture: the mean over that architecture's members that have
    # a value (a NaN stays in its own member; all-NaN gives NaN).
    b = [i for i, x in enumerate(fused.members) if x['arch'] == 'b']
    vals = ref[name][b]
    have = np.isfinite(vals)
    want = np.where(have.any(0), np.where(have, vals, 0).sum(0) /
                    np.maximum(have.sum(0), 1), np.nan)
    np.testing.assert_allclose(out['arch'][name][0], want, rtol=RTOL,
                               atol=ATOL)
  np.testing.assert_array_equal(out['fused_epochs'], np.arange(1, e + 1))
  assert scores.orientation('aum') == scores.HIGHER_IS_EASIER
  assert scores.orientation('forgetting_events') == scores.HIGHER_IS_HARDER
  assert scores.SCORE_SOURCE['confidence'] == 'fused'
  without = scores.compute_scores(probe, (0.0, 3.0))
  assert not set(scores.FUSED_SCORE_NAMES) & set(without['example'])
  other = records_like(correct, margin, p_true,
                       members=[dict(x, name='x' + x['name'])
                                for x in fused.members])
  with pytest.raises(ValueError, match='different members'):
    scores.compute_scores(probe, (0.0, 3.0), fused=other)


def ref_from_presentations(log, m_, n_, num_epochs):
  """Slow references from a log of every presentation, in training order.

  ``log[m]`` lists (example, correct, margin, p_true) of member m as it saw
  them; nothing is dropped, so a presentation an epoch record lost (say, an
  example shown twice in an epoch) would make the kernel disagree.
  """
  out = {k: np.full((m_, n_), np.nan) for k in scores.FUSED_SCORE_NAMES}
  for m in range(m_):
    for n in range(n_):
      seq = [p[1:] for p in log[m] if p[0] == n]
      acc = [c for c, _, _ in seq]
      out['forgetting_events'][m, n] = ref_toneva(acc, num_epochs)
      if not seq:
        continue
      ps = [float(p) for _, _, p in seq]
      mu = sum(ps) / len(ps)
      out['aum'][m, n] = sum(float(g) for _, g, _ in seq) / len(seq)
      out['confidence'][m, n] = mu
      out['variability'][m, n] = math.sqrt(
          sum((p - mu) ** 2 for p in ps) / len(ps))
      out['correctness'][m, n] = sum(acc) / len(acc)
  return out


@pytest.mark.slow
@pytest.mark.parametrize('n,batch', [(23, 5), (20, 5), (11, 8)])
def test_fused_records_keep_every_presentation_of_padded_epochs(n, batch):
  # The training loop's own batching and recording (device_ops.batch_indices,
  # steps._scatter) over epochs whose last batch is padded; each presentation
  # gets its own random statistics, and member 1 trains on a subset.
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from easyhard_jax.data import device_ops  # pylint: disable=g-import-not-at-top
  from easyhard_jax.train import steps as steps_lib  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(n * batch)
  m_, e_ = 2, 4
  kept = np.array([n, n - 3])
  log = [[] for _ in range(m_)]
  per_epoch = []
  for _ in range(e_):
    buffers = steps_lib.empty_buffers(m_, n)
    perms = np.stack([
        np.concatenate([rng.permutation(k), np.arange(k, n)])
        for k in kept]).astype(np.int32)
    for s in range(-(-int(kept[0]) // batch)):
      rows = [device_ops.batch_indices(jnp.asarray(perms[m]), s, batch,
                                       int(kept[m])) for m in range(m_)]
      idx = np.stack([np.where(np.asarray(v), np.asarray(i), -1)
                      for i, v in rows])
      margin = rng.normal(0.2, 1.0, idx.shape).astype(np.float32)
      p_true = rng.random(idx.shape).astype(np.float32)
      stats = steps_lib.ExampleStats(
          loss=-np.log(p_true), correct=margin > 0, margin=margin,
          p_true=p_true, el2n=p_true, pred=np.zeros(idx.shape, np.int32))
      buffers = steps_lib._scatter(buffers, jnp.asarray(idx), stats)  # pylint: disable=protected-access
      for m in range(m_):
        log[m] += [(int(x), bool(c), g, p) for x, c, g, p in
                   zip(idx[m], margin[m] > 0, margin[m], p_true[m]) if x >= 0]
    per_epoch.append({k: np.asarray(v) for k, v in buffers.items()})
  # Every kept example once per epoch, nothing else.
  for m in range(m_):
    shown = np.bincount([p[0] for p in log[m]], minlength=n)
    np.testing.assert_array_equal(shown,
                                  np.where(np.arange(n) < kept[m], e_, 0))
  stack = {k: np.stack([b[k] for b in per_epoch], axis=1)
           for k in per_epoch[0]}
  rec = records_like(stack['correct'], stack['margin'], stack['p_true'])
  got = scores.fused_member_scores(rec.correct, rec.margin, rec.p_true,
                                   scores.presented_mask(rec))
  ref = ref_from_presentations(log, m_, n, e_)
  for name in scores.FUSED_SCORE_NAMES:
    g = np.asarray(got[name])
    np.testing.assert_array_equal(np.isnan(g), np.isnan(ref[name]), name)
    np.testing.assert_allclose(g, ref[name], rtol=RTOL, atol=ATOL,
                               err_msg=name)
