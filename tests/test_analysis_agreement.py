"""Agreement kernels against loop references (and scipy for ranks)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from easyhard_jax.analysis import agreement
from easyhard_jax.analysis import results
from easyhard_jax.analysis import sets


def test_overlap_matrix_matches_python_sets():
  rng = np.random.default_rng(0)
  n = 60
  a = rng.random((4, n)) < rng.random((4, 1))
  b = rng.random((3, n)) < 0.3
  a[0] = False  # An empty set.
  a[1] = b[0]   # Identical sets.
  out = jax.tree.map(np.asarray, agreement.overlap_matrix(a, b))
  for i in range(4):
    for j in range(3):
      sa, sb = set(np.flatnonzero(a[i])), set(np.flatnonzero(b[j]))
      inter = len(sa & sb)
      chance = len(sa) * len(sb) / n
      assert out['intersection'][i, j] == inter
      np.testing.assert_allclose(out['chance_intersection'][i, j], chance,
                                 rtol=1e-6)
      if sa and sb:
        np.testing.assert_allclose(out['overlap'][i, j],
                                   inter / min(len(sa), len(sb)), rtol=1e-6)
        np.testing.assert_allclose(out['jaccard'][i, j],
                                   inter / len(sa | sb), rtol=1e-6)
        np.testing.assert_allclose(out['ratio'][i, j], inter / chance,
                                   rtol=1e-5)
      else:  # Overlap with an empty set is undefined; Jaccard is 0.
        assert np.isnan(out['overlap'][i, j]) and np.isnan(out['ratio'][i, j])
        assert out['jaccard'][i, j] == (0.0 if sa | sb else np.nan)
  np.testing.assert_allclose(out['jaccard'][1, 0], 1.0)


def test_chance_level_matches_random_sets():
  rng = np.random.default_rng(1)
  n, ka, kb = 500, 100, 50
  a = np.zeros((400, n), bool)
  b = np.zeros((400, n), bool)
  for r in range(400):
    a[r, rng.choice(n, ka, replace=False)] = True
    b[r, rng.choice(n, kb, replace=False)] = True
  out = agreement.overlap_matrix(a, b)
  diag = np.diag(np.asarray(out['intersection']))
  np.testing.assert_allclose(diag.mean(), ka * kb / n, rtol=0.05)
  z = np.diag(np.asarray(out['z']))
  assert abs(z.mean()) < 0.2 and 0.8 < z.std() < 1.2


def _exact_class_balanced_moments(class_sizes, ka, kb):
  """Mean and variance of |A n B| over every pair of class-stratified sets.

  A has ka[c] examples of class c, B has kb[c], each drawn uniformly within
  the class; enumerates all pairs (small inputs only).
  """
  offsets = np.cumsum([0] + list(class_sizes))

  def all_sets(k):
    per_class = [list(itertools.combinations(range(offsets[c], offsets[c + 1]),
                                             k[c]))
                 for c in range(len(class_sizes))]
    return [set().union(*parts) for parts in itertools.product(*per_class)]

  inter = [len(x & y) for x in all_sets(ka) for y in all_sets(kb)]
  return np.mean(inter), np.var(inter)


def test_class_balanced_chance_matches_exact_enumeration():
  # Classes of 4, 3 and 5 examples; A and B with different class counts.
  sizes, ka, kb = [4, 3, 5], [2, 1, 3], [1, 2, 2]
  labels = np.repeat(np.arange(3), sizes).astype(np.int32)
  n = labels.size

  def one_set(k):  # Any set with those class counts: chance ignores which.
    m = np.zeros(n, bool)
    for c in range(3):
      m[np.flatnonzero(labels == c)[:k[c]]] = True
    return m

  out = jax.tree.map(np.asarray, agreement.overlap_matrix(
      one_set(ka)[None], one_set(kb)[None], labels, num_classes=3))
  mean, var = _exact_class_balanced_moments(sizes, ka, kb)
  # sum_c a_c b_c / N_c = 2/4 + 2/3 + 6/5.
  np.testing.assert_allclose(mean, 2 / 4 + 2 / 3 + 6 / 5)
  np.testing.assert_allclose(out['chance_intersection'][0, 0], mean,
                             rtol=1e-6)
  inter = out['intersection'][0, 0]
  np.testing.assert_allclose(out['z'][0, 0], (inter - mean) / np.sqrt(var),
                             rtol=1e-5)
  # Equal k_c per class: chance is sum_c k_c^2 / N_c, not |A||B| / N.
  k = [2, 2, 2]
  eq = jax.tree.map(np.asarray, agreement.overlap_matrix(
      one_set(k)[None], one_set(k)[None], labels, num_classes=3))
  np.testing.assert_allclose(eq['chance_intersection'][0, 0],
                             4 / 4 + 4 / 3 + 4 / 5, rtol=1e-6)
  glob = agreement.overlap_matrix(one_set(k)[None], one_set(k)[None])
  np.testing.assert_allclose(np.asarray(glob['chance_intersection'])[0, 0],
                             6 * 6 / n, rtol=1e-6)


def test_class_balanced_chance_matches_random_class_balanced_sets():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 4, 400).astype(np.int32)
  labels[:30] = 3  # Unequal class sizes.
  counts = np.array([10, 25, 5, 40])
  a = np.stack([sets.class_composition_sample(rng, labels, counts)
                for _ in range(400)])
  b = np.stack([sets.class_composition_sample(rng, labels, counts)
                for _ in range(400)])
  assert np.all(np.stack([np.bincount(labels[r], minlength=4)
                          for r in a]) == counts)
  out = agreement.overlap_matrix(a, b, labels, num_classes=4)
  diag = np.diag(np.asarray(out['intersection']))
  nc = np.bincount(labels, minlength=4)
  expect = float(np.sum(counts ** 2 / nc))
  np.testing.assert_allclose(np.asarray(out['chance_intersection'])[0, 0],
                             expect, rtol=1e-6)
  # 400 draws: the mean is within ~4 standard errors of the expectation.
  assert abs(diag.mean() - expect) < 4 * diag.std() / 20
  z = np.diag(np.asarray(out['z']))
  assert abs(z.mean()) < 0.2 and 0.8 < z.std() < 1.2


def test_rule_overlap_uses_the_rules_chance():
  labels = np.repeat(np.arange(2), [10, 30]).astype(np.int32)
  m = np.zeros((1, 40), bool)
  m[0, :3] = m[0, 10:13] = True  # 3 per class.
  cb = sets.SetRule(per_class=True, k=3)
  gl = sets.SetRule(per_class=False, k=6)
  assert (cb.name, gl.name) == ('class_balanced', 'global')
  assert gl.other().other() == gl and cb.other().name == 'global'
  assert sets.SetRule(method='all_correct').other() is None
  got = agreement.rule_overlap(m, m, cb, labels, 2)
  np.testing.assert_allclose(np.asarray(got['chance_intersection'])[0, 0],
                             9 / 10 + 9 / 30, rtol=1e-6)
  got = agreement.rule_overlap(m, m, gl, labels, 2)
  np.testing.assert_allclose(np.asarray(got['chance_intersection'])[0, 0],
                             36 / 40, rtol=1e-6)


@pytest.mark.parametrize('shape', [(1, 1), (2, 7), (3, 100)])
def test_average_ranks_match_scipy_with_ties(shape):
  rng = np.random.default_rng(shape[1])
  x = rng.integers(0, 5, shape).astype(np.float32)
  got = np.asarray(agreement.average_ranks(x))
  np.testing.assert_array_equal(got, stats.rankdata(x, axis=1))
  np.testing.assert_array_equal(np.asarray(agreement.average_ranks(x[0])),
                                stats.rankdata(x[0]))


def _pearson(u, v):
  mu, mv = sum(u) / len(u), sum(v) / len(v)
  num = sum((a - mu) * (b - mv) for a, b in zip(u, v))
  den = (sum((a - mu) ** 2 for a in u) * sum((b - mv) ** 2 for b in v)) ** 0.5
  return num / den if den else float('nan')


def test_spearman_matrix_matches_pairwise_reference():
  rng = np.random.default_rng(2)
  x = rng.integers(0, 6, (5, 80)).astype(np.float32)
  x[1] = x[0] * 2 + 1                 # Monotone: rho = 1.
  x[2] = -x[0]                        # Reversed: rho = -1.
  x[4] = 3.0                          # Constant: undefined.
  got = np.asarray(agreement.spearman_matrix(x))
  ranks = [stats.rankdata(r) for r in x]
  for i in range(5):
    for j in range(5):
      ref = _pearson(list(ranks[i]), list(ranks[j]))
      if np.isnan(ref):
        assert np.isnan(got[i, j])
      else:
        np.testing.assert_allclose(got[i, j], ref, atol=2e-6)
        if i < 4 and j < 4:
          np.testing.assert_allclose(
              got[i, j], stats.spearmanr(x[i], x[j]).statistic, atol=2e-6)
  np.testing.assert_allclose(got[0, 1], 1.0, atol=1e-6)
  np.testing.assert_allclose(got[0, 2], -1.0, atol=1e-6)
  y = rng.random((2, 80)).astype(np.float32)
  cross = np.asarray(agreement.spearman_matrix(x[:3], y))
  assert cross.shape == (3, 2)
  np.testing.assert_allclose(
      cross[1, 1], stats.spearmanr(x[1], y[1]).statistic, atol=2e-6)


def _member_scores(rng, m, n):
  base = rng.random(n)
  easiness = np.clip(base + 0.3 * rng.random((m, n)), 0, 1)
  easiness = np.round(easiness * 4) / 4  # Discrete, like real easiness.
  return {'easiness': easiness.astype(np.float32),
          'early_margin': (easiness + 0.1 * rng.random((m, n))).astype(
              np.float32)}


@pytest.mark.slow
def test_agreement_report_sections_and_single_member():
  # Shapes and rule as in test_analysis_stage, so compilations are shared.
  rng = np.random.default_rng(5)
  n = 60
  labels = rng.integers(0, 3, n).astype(np.int32)
  rule = sets.SetRule(fraction=0.2, per_class=True)
  ms = _member_scores(rng, 4, n)
  rep = agreement.agreement_report(
      ms, [f'm{i}' for i in range(4)], np.array([0, 0, 1, 1]), ['a', 'b'],
      rule, labels, 3, jax.random.key(0))
  mp, ap = rep['member_pairs'], rep['arch_pairs']
  assert rep['set_rule'] == 'class_balanced'
  assert mp['easy_sets']['intersection'].shape == (4, 4)
  k = rule.resolve_k(labels, 3)
  np.testing.assert_array_equal(np.diag(mp['easy_sets']['intersection']),
                                np.full(4, k.sum()))
  # Class-balanced chance: sum_c k_c^2 / N_c.
  np.testing.assert_allclose(
      mp['easy_sets']['chance_intersection'][0, 1],
      np.sum(k ** 2 / np.bincount(labels, minlength=3)), rtol=1e-6)
  # The shared base makes easy sets overlap far above chance.
  assert mp['summary']['easy_ratio']['cross_arch'] > 2.0
  assert ap['spearman_easiness'].shape == (2, 2)
  assert ap['easy_sets']['ratio'][0, 1] > 2.0
  ci = ap['seed_interval']['intervals']
  for name in ('spearman', 'easy_jaccard', 'hard_ratio'):
    assert np.all(ci[name]['lo'] <= ci[name]['hi'] + 1e-6)
  # The interval is centred on the full ensemble's value (2 seeds per
  # arch: Welch-Satterthwaite df between 1 and 2).
  rho = ap['spearman_easiness'][0, 1]
  np.testing.assert_allclose((ci['spearman']['lo'][0, 1]
                              + ci['spearman']['hi'][0, 1]) / 2, rho,
                             rtol=1e-6)
  assert ci['spearman']['lo'][0, 1] < rho < ci['spearman']['hi'][0, 1]
  assert 1.0 <= ci['spearman']['df'][0, 1] <= 2.0

  # The seed ceiling (tests/test_agreement_ceiling.py): 2 members per arch,
  # one level of single members; the diagonal is the same-arch pair.
  (level,) = rep['ceiling']['levels']
  assert level['members'] == 1 and level['draws'].tolist() == [[1, 4],
                                                                [4, 1]]
  np.testing.assert_allclose(level['stats']['easy_ratio']['mean'][0, 0],
                             mp['easy_sets']['ratio'][0, 1], rtol=1e-6)

  one = agreement.agreement_report(
      {k: v[:1] for k, v in ms.items()}, ['m0'], np.array([0]), ['a'], rule,
      labels, 3, jax.random.key(0))
  assert isinstance(one['member_pairs'], results.Skipped)
  assert isinstance(one['arch_pairs'], results.Skipped)
  assert 'ceiling' not in one
  two = agreement.agreement_report(
      {k: v[:2] for k, v in ms.items()}, ['m0', 'm1'], np.array([0, 0]),
      ['a'], rule, labels, 3, jax.random.key(0))
  assert not isinstance(two['member_pairs'], results.Skipped)
  assert two['arch_pairs'] == results.Skipped(
      'only one architecture: no pair to compare')
  (level,) = two['ceiling']['levels']  # A ceiling needs no second arch.
  assert level['draws'].tolist() == [[1]]
  assert level['summary']['spearman_easiness']['cross_arch'] is None
