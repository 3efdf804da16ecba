"""Easy/hard set kernels against sorted-list references."""

import numpy as np
import pytest

from easyhard_jax.analysis import sets


def ref_top_k(key, k, tiebreak, valid, largest):
  s = 1 if largest else -1
  cand = [i for i in range(len(key)) if valid[i]]
  cand.sort(key=lambda i: (-s * key[i], -s * tiebreak[i], i))
  out = np.zeros(len(key), bool)
  out[cand[:max(k, 0)]] = True
  return out


def ref_top_k_per_class(key, labels, k, tiebreak, valid, largest):
  out = np.zeros(len(key), bool)
  for c in np.unique(labels):
    sel = np.flatnonzero(labels == c)
    sub = ref_top_k(key[sel], int(k[c]), tiebreak[sel], valid[sel], largest)
    out[sel[sub]] = True
  return out


@pytest.mark.parametrize('n', [1, 9, 64])
def test_top_k_matches_reference_with_ties(n):
  rng = np.random.default_rng(n)
  key = rng.integers(-2, 2, n).astype(np.float32)  # Many ties.
  key[key == 0] = -0.0 if n > 1 else 0.0  # -0.0 ties with 0.0.
  key[:n // 2][key[:n // 2] == -0.0] = 0.0
  tiebreak = rng.integers(0, 3, n).astype(np.float32)  # Ties within ties.
  valid = rng.random(n) < 0.8
  for largest in (True, False):
    for k in [0, 1, n // 2, n, n + 3]:
      got = np.asarray(sets.top_k_mask(key, k, tiebreak, valid,
                                       largest=largest))
      np.testing.assert_array_equal(
          got, ref_top_k(key, k, tiebreak, valid, largest), err_msg=f'k={k}')
  if n == 64:  # Without tiebreak and padding: ties go to the lower index.
    got = np.asarray(sets.top_k_mask(key, 20))
    np.testing.assert_array_equal(
        got, ref_top_k(key, 20, np.zeros(n), np.ones(n, bool), True))


def test_sortable_int_preserves_order():
  x = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, np.inf],
               np.float32)
  k = np.asarray(sets.sortable_int(x))
  assert np.all(np.diff(k[[0, 1, 2, 3, 5, 6, 7]]) > 0)
  assert k[3] == k[4]


def test_top_k_rows_are_independent():
  rng = np.random.default_rng(0)
  key = rng.integers(0, 5, (3, 20)).astype(np.float32)
  tb = rng.random((3, 20)).astype(np.float32)
  got = np.asarray(sets.top_k_mask(key, 6, tb, largest=False))
  for r in range(3):
    np.testing.assert_array_equal(
        got[r], ref_top_k(key[r], 6, tb[r], np.ones(20, bool), False))


@pytest.mark.parametrize('largest', [True, False])
def test_top_k_per_class_matches_reference(largest):
  rng = np.random.default_rng(1)
  n, classes = 50, 4
  labels = rng.integers(0, classes, n).astype(np.int32)
  labels[labels == 3] = 2  # One empty class.
  key = rng.integers(0, 3, n).astype(np.float32)
  tb = rng.random(n).astype(np.float32)
  valid = rng.random(n) < 0.9
  for k in [np.array([2, 0, 30, 5]), np.full(4, 3)]:
    got = np.asarray(sets.top_k_per_class_mask(
        key, labels, k, tb, valid, num_classes=classes, largest=largest))
    np.testing.assert_array_equal(
        got, ref_top_k_per_class(key, labels, k, tb, valid, largest))
  rows = np.stack([key, key[::-1]])
  got = np.asarray(sets.top_k_per_class_mask(rows, labels, 2,
                                             num_classes=classes))
  np.testing.assert_array_equal(
      got[1], ref_top_k_per_class(key[::-1], labels, np.full(4, 2),
                                  np.zeros(n), np.ones(n, bool), True))


def test_all_correct_and_all_wrong_match_loops_and_easiness_rule():
  rng = np.random.default_rng(2)
  c = rng.random((3, 5, 40)) < 0.7
  c[:, :, :4] = True
  c[:, :, 4:8] = False
  c[:, :, 8] = True
  c[0, 4, 8] = False  # Wrong only outside the window below.
  mask = np.array([1, 1, 1, 1, 0], bool)
  ref_all = np.array([all(c[m, p, n] for m in range(3) for p in range(5)
                          if mask[p]) for n in range(40)])
  ref_none = np.array([not any(c[m, p, n] for m in range(3)
                               for p in range(5) if mask[p])
                       for n in range(40)])
  np.testing.assert_array_equal(np.asarray(sets.all_correct_mask(c, mask)),
                                ref_all)
  np.testing.assert_array_equal(np.asarray(sets.all_wrong_mask(c, mask)),
                                ref_none)
  assert ref_all[8]
  # The 'all_correct' rule on easiness (incl. arch means of 1/3s) agrees.
  easiness = c[:, mask].mean(axis=(0, 1)).astype(np.float32)
  thirds = (np.float32(1 / 3) * c[:, mask].mean(axis=1)).sum(0)
  rule = sets.SetRule(method='all_correct')
  for e in (easiness, thirds):
    easy, hard = sets.easy_hard_masks(rule, e)
    np.testing.assert_array_equal(np.asarray(easy), ref_all)
    np.testing.assert_array_equal(np.asarray(hard), ref_none)


def test_threshold_rule_uses_the_scores_units_and_orientation():
  el2n = np.array([0.1, 0.5, 0.9, 0.3], np.float32)
  rule = sets.SetRule(method='threshold', score='el2n', easy_threshold=0.3,
                      hard_threshold=0.8)
  easy, hard = sets.easy_hard_masks(rule, el2n)
  np.testing.assert_array_equal(np.asarray(easy), [1, 0, 0, 1])
  np.testing.assert_array_equal(np.asarray(hard), [0, 0, 1, 0])
  rule = sets.SetRule(method='threshold', easy_threshold=0.5,
                      hard_threshold=0.1)
  easy, hard = sets.easy_hard_masks(rule, el2n)
  np.testing.assert_array_equal(np.asarray(easy), [0, 1, 1, 0])
  np.testing.assert_array_equal(np.asarray(hard), [1, 0, 0, 0])


def test_top_k_rule_orients_hard_scores():
  rng = np.random.default_rng(4)
  el2n = rng.random(30).astype(np.float32)
  rule = sets.SetRule(method='top_k', score='el2n', k=5, tiebreak='none')
  k = rule.resolve_k(np.zeros(30, np.int32), 1)
  easy, hard = sets.easy_hard_masks(rule, el2n, k=k)
  order = np.argsort(el2n)
  np.testing.assert_array_equal(sets.mask_to_indices(easy),
                                np.sort(order[:5]))
  np.testing.assert_array_equal(sets.mask_to_indices(hard),
                                np.sort(order[-5:]))


def test_rule_resolves_k_and_validates():
  labels = np.array([0] * 10 + [1] * 30 + [2] * 5)
  np.testing.assert_array_equal(
      sets.SetRule(fraction=0.2, per_class=True).resolve_k(labels, 4),
      [2, 6, 1, 0])
  assert int(sets.SetRule(fraction=0.2).resolve_k(labels, 4)) == 9
  assert int(sets.SetRule(k=100).resolve_k(labels, 4)) == 45
  with pytest.raises(ValueError, match='method'):
    sets.SetRule(method='best')
  with pytest.raises(ValueError, match='accuracy score'):
    sets.SetRule(method='all_correct', score='el2n')
  with pytest.raises(ValueError, match='no easy or hard end'):
    sets.SetRule(score='variability')
  with pytest.raises(ValueError, match='sets.score must be one of'):
    sets.SetRule(score='easiness/vgg16')
  with pytest.raises(ValueError, match='non-finite'):
    sets.check_finite(np.array([0.0, np.nan]), 'el2n')


def test_class_balanced_rule_gives_k_c_per_class_where_global_may_not():
  # Class 1 is easy throughout: a global top-k easy set is class 1 only
  # (as on digits), a class-balanced one has k_c of every class.
  rng = np.random.default_rng(6)
  labels = np.repeat(np.arange(3), [40, 30, 50]).astype(np.int32)
  score = rng.random(labels.size).astype(np.float32)
  score[labels == 1] += 1.0
  margin = rng.random(labels.size).astype(np.float32)
  cb = sets.SetRule(fraction=0.2, per_class=True)
  gl = cb.other()
  k = cb.resolve_k(labels, 3)
  np.testing.assert_array_equal(k, [8, 6, 10])
  easy, hard = sets.easy_hard_masks(cb, score, labels=labels, num_classes=3,
                                    k=k, tiebreak=margin)
  for m in (easy, hard):
    np.testing.assert_array_equal(
        np.bincount(labels[np.asarray(m)], minlength=3), k)
  easy, _ = sets.easy_hard_masks(gl, score, k=gl.resolve_k(labels, 3),
                                 tiebreak=margin)
  np.testing.assert_array_equal(
      np.bincount(labels[np.asarray(easy)], minlength=3), [0, 24, 0])
  with pytest.raises(ValueError, match="called 'aum'"):
    sets.SetRule(tiebreak='aum')


def test_class_composition_sample_draws_counts_per_class():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(3), [5, 9, 2])
  m = sets.class_composition_sample(rng, labels, np.array([3, 0, 4]))
  np.testing.assert_array_equal(np.bincount(labels[m], minlength=3),
                                [3, 0, 2])  # Class 2 has only 2.


def test_top_k_does_not_recompile_for_new_k():
  key = np.arange(32, dtype=np.float32)
  sets.top_k_mask(key, 1)
  before = sets.top_k_mask._cache_size()
  for k in range(2, 12):
    sets.top_k_mask(key, k)
  assert sets.top_k_mask._cache_size() == before
