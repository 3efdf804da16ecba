"""The seed-to-seed ceiling of agreement against a slow reference."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from easyhard_jax.analysis import agreement
from easyhard_jax.analysis import sets

N, C = 60, 3
# Architecture of each member: a has 4 members, b 5, c 1 -> levels 1 and 2
# (c has no ceiling; at h = 2 it has no group).
GIDS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 2])
ARCHS = ['a', 'b', 'c']


def _dyadic_scores(rng, gids, n=N):
  """Easiness and margins on a 2^-12 grid in [0, 1).

  Means of 1 or 2 such values are exact in float32, so the kernel's group
  means equal the reference's float64 means and both choose the same sets.
  Scores share an example effect and an architecture effect.
  """
  g = int(gids.max()) + 1
  base, arch = rng.random(n), rng.random((g, n))
  noise = rng.random((len(gids), n))
  q = lambda x: (np.floor(x * 4096) / 4096).astype(np.float32)
  easiness = q((base + arch[gids] + noise) / 3)
  return {'easiness': easiness, 'early_margin': q(rng.random((len(gids), n)))}


def _ref_sets(score, tiebreak, labels, k, per_class):
  """Easy and hard sets by the documented order: score, tiebreak, index."""
  n = len(score)
  easy = sorted(range(n), key=lambda i: (-score[i], -tiebreak[i], i))
  hard = sorted(range(n), key=lambda i: (score[i], tiebreak[i], i))

  def take(order):
    if not per_class:
      return set(order[:int(k)])
    out = set()
    for c in range(C):
      out |= set([i for i in order if labels[i] == c][:int(k[c])])
    return out

  return take(easy), take(hard)


def _ref_pair(x, y, labels, per_class):
  """overlap, chance overlap, ratio and Jaccard of two python sets."""
  inter = len(x & y)
  if per_class:
    nc = np.bincount(labels, minlength=C)
    chance = sum(sum(labels[i] == c for i in x) * sum(labels[i] == c
                                                      for i in y) / nc[c]
                 for c in range(C))
  else:
    chance = len(x) * len(y) / len(labels)
  small = min(len(x), len(y))
  return {'overlap': inter / small, 'chance_overlap': chance / small,
          'ratio': inter / chance, 'jaccard': inter / len(x | y)}


def ref_ceiling(ms, gids, labels, rule):
  """Every pair of h-member groups, looped in python (float64)."""
  k = rule.resolve_k(labels, C)
  sizes = np.bincount(gids)
  out = {}
  for h in sorted({1, min(s // 2 for s in sizes if s >= 2)}):
    groups = {a: list(itertools.combinations(np.flatnonzero(gids == a), h))
              for a in range(len(sizes)) if sizes[a] >= h}
    level = {}
    for a, b in itertools.combinations_with_replacement(sorted(groups), 2):
      draws = []
      for i, u in enumerate(groups[a]):
        for j, v in enumerate(groups[b]):
          if (a == b and j <= i) or set(u) & set(v):
            continue
          mean = lambda name, grp: ms[name][list(grp)].astype(
              np.float64).mean(0)
          su = _ref_sets(mean('easiness', u), mean('early_margin', u),
                         labels, k, rule.per_class)
          sv = _ref_sets(mean('easiness', v), mean('early_margin', v),
                         labels, k, rule.per_class)
          d = {}
          for which, x, y in (('easy', su[0], sv[0]), ('hard', su[1], sv[1])):
            for s, val in _ref_pair(x, y, labels, rule.per_class).items():
              d[f'{which}_{s}'] = val
          d['spearman_easiness'] = stats.spearmanr(
              mean('easiness', u), mean('easiness', v)).statistic
          draws.append(d)
      level[(a, b)] = draws
    out[h] = level
  return out


@pytest.mark.slow
@pytest.mark.parametrize('per_class', [True, False])
def test_seed_ceiling_matches_slow_reference(per_class):
  rng = np.random.default_rng(7)
  labels = rng.integers(0, C, N).astype(np.int32)
  ms = _dyadic_scores(rng, GIDS)
  rule = sets.SetRule(fraction=0.2, per_class=per_class)
  k = rule.resolve_k(labels, C)
  values = {'score': jnp.asarray(ms['easiness']),
            'early_margin': jnp.asarray(ms['early_margin']),
            'easiness': jnp.asarray(ms['easiness'])}
  got = agreement.seed_ceiling(values, GIDS, ARCHS, rule, k,
                               jnp.asarray(labels), C, jax.random.key(0))
  ref = ref_ceiling(ms, GIDS, labels, rule)
  assert [lv['members'] for lv in got['levels']] == [1, 2]
  for lv in got['levels']:
    h, st = lv['members'], lv['stats']
    for a, b in itertools.product(range(3), repeat=2):
      draws = ref[h].get((min(a, b), max(a, b)), [])
      assert lv['draws'][a, b] == len(draws), (h, a, b)
      for name in agreement.CEILING_STATS:
        if not draws:
          assert np.isnan(st[name]['mean'][a, b])
          continue
        x = np.array([d[name] for d in draws])
        # float32 kernels (ratios, Spearman of <= 60 ranks) against float64:
        # a few float32 ulps per value.
        for q, want in (('mean', x.mean()), ('sd', x.std()),
                        ('min', x.min()), ('max', x.max())):
          np.testing.assert_allclose(st[name][q][a, b], want, rtol=1e-5,
                                     atol=2e-6, err_msg=f'{h} {name} {q}')
    # Normalized: (cross - floor) / (mean of the two ceilings - floor).
    m = st['easy_ratio']['mean']
    want = (m[0, 1] - 1.0) / ((m[0, 0] + m[1, 1]) / 2 - 1.0)
    np.testing.assert_allclose(lv['normalized']['easy_ratio'][0, 1], want,
                               rtol=1e-6)
    m, f = st['hard_overlap']['mean'], st['hard_chance_overlap']['mean']
    want = (m[0, 1] - f[0, 1]) / ((m[0, 0] + m[1, 1]) / 2 - f[0, 1])
    np.testing.assert_allclose(lv['normalized']['hard_overlap'][0, 1], want,
                               rtol=1e-6)
    assert np.isnan(lv['normalized']['spearman_easiness'][0, 2])  # c: none.
    s = lv['summary']['spearman_easiness']
    np.testing.assert_allclose(
        s['ceiling'], np.nanmean(np.diag(st['spearman_easiness']['mean'])),
        rtol=1e-6)
    assert s['floor'] == 0.0
  # h = 2: a (4 members) has 3 splits into two disjoint pairs, b has 15.
  assert got['levels'][1]['groups_per_arch'] == [6, 10, 0]
  assert got['levels'][1]['draws'][0, 0] == 3
  assert got['levels'][1]['draws'][1, 1] == 15


@pytest.mark.slow
def test_identical_members_give_the_maximal_ceiling():
  rng = np.random.default_rng(3)
  gids = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  labels = rng.integers(0, C, N).astype(np.int32)
  ms = _dyadic_scores(rng, gids)
  for name in ms:  # Arch a: four copies of one member.
    ms[name][1:4] = ms[name][0]
  rule = sets.SetRule(fraction=0.2, per_class=True)
  rep = agreement.agreement_report(
      ms, [f'm{i}' for i in range(8)], gids, ['a', 'b'], rule, labels, C,
      jax.random.key(0), intervals=False)
  levels = rep['ceiling']['levels']
  assert [lv['members'] for lv in levels] == [1, 2]
  for lv in levels:
    st = lv['stats']
    for which in ('easy', 'hard'):
      # Identical groups: the sets coincide, overlap and Jaccard are 1 and
      # the ratio is 1 / chance overlap, its largest possible value.
      assert st[f'{which}_overlap']['mean'][0, 0] == 1.0
      assert st[f'{which}_jaccard']['mean'][0, 0] == 1.0
      assert st[f'{which}_overlap']['sd'][0, 0] == 0.0
      np.testing.assert_allclose(
          st[f'{which}_ratio']['mean'][0, 0],
          1.0 / st[f'{which}_chance_overlap']['mean'][0, 0], rtol=1e-6)
      # b's members differ by their noise: below the maximum.
      assert st[f'{which}_ratio']['mean'][1, 1] < st[f'{which}_ratio'][
          'mean'][0, 0]
    np.testing.assert_allclose(st['spearman_easiness']['mean'][0, 0], 1.0,
                               atol=1e-6)
    assert st['spearman_easiness']['mean'][0, 1] < 0.99
  # h = 1 is the member-pair matrix: same-arch pairs on the diagonal,
  # cross-arch pairs off it.
  mp, st = rep['member_pairs'], levels[0]['stats']
  same = (gids[:, None] == gids[None, :]) & ~np.eye(8, dtype=bool)
  for a, b in ((0, 0), (1, 1), (0, 1)):
    sel = (gids[:, None] == a) & (gids[None, :] == b) & (same if a == b
                                                         else True)
    for key, mat in (('easy_ratio', mp['easy_sets']['ratio']),
                     ('spearman_easiness', mp['spearman_easiness'])):
      np.testing.assert_allclose(st[key]['mean'][a, b], mat[sel].mean(),
                                 rtol=1e-6, err_msg=f'{key} {a}{b}')


def test_levels_and_groups():
  assert agreement.ceiling_levels([3, 3]) == [1]
  assert agreement.ceiling_levels([4, 5, 1]) == [1, 2]
  assert agreement.ceiling_levels([1, 1]) == []
  assert agreement.ceiling_levels([2]) == [1]
  assert agreement.ceiling_levels([8, 9]) == [1, 4]
  rng = lambda: np.random.default_rng(0)
  assert agreement.member_groups([5, 6, 7, 8], 2, rng()) == [
      (5, 6), (5, 7), (5, 8), (6, 7), (6, 8), (7, 8)]
  # C(8, 4) = 70 > 32 groups: sampled as disjoint pairs, reproducibly.
  got = agreement.member_groups(range(8), 4, rng())
  assert got == agreement.member_groups(range(8), 4, rng())
  assert 2 <= len(got) <= agreement.MAX_GROUPS
  assert all(len(set(u)) == 4 and list(u) == sorted(u) for u in got)
  disjoint = [(u, v) for u, v in itertools.combinations(got, 2)
              if not set(u) & set(v)]
  assert len(disjoint) >= len(got) // 2
