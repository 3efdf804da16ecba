"""Cross-model agreement: overlap of easy/hard sets and rank correlation.

* :func:`overlap_matrix`: for every pair of rows of two set masks, the
  intersection, the overlap coefficient |A n B| / min(|A|, |B|) (= |A n B| / k
  for top-k sets), the Jaccard index, and what random sets of the same sizes
  give: the hypergeometric mean |A||B| / N for global sets, or sum_c a_c b_c /
  N_c for class-balanced sets (same class counts), its variance, the chance
  overlap and Jaccard, the ratio observed / chance and a z-score.
* :func:`spearman_matrix`: Spearman's rho for all pairs of rows as one matmul
  of row-normalized average ranks (ties get their mean rank).
* ``seed_interval``: leave-one-seed-out (stratified jackknife) intervals
  of the architecture-pair statistics at the ensemble's own size.
* :func:`seed_ceiling`: the same statistics between disjoint groups of
  members of one architecture (the seed-to-seed ceiling) and between
  equal-sized groups of two architectures, at equal member counts.
* :func:`agreement_report`: all of it for members and architectures.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from easyhard_jax.analysis import results
from easyhard_jax.analysis import scores as scores_lib
from easyhard_jax.analysis import seed_interval
from easyhard_jax.analysis import sets as sets_lib

_HI = jax.lax.Precision.HIGHEST
#: How chance is computed for each set rule (for analysis.json and reports).
CHANCE_TEXT = {
    'global': 'two random sets of the same sizes: |A||B| / N',
    'class_balanced': ('two random sets with the same examples per class, '
                       'drawn within each class: sum_c a_c b_c / N_c'),
}


@functools.partial(jax.jit, static_argnames='num_classes')
def overlap_matrix(a: jax.Array, b: jax.Array, labels: jax.Array | None = None,
                   *, num_classes: int | None = None) -> dict[str, jax.Array]:
  """Pairwise overlap of two families of sets, with chance levels.

  Chance is what two independent random sets would share:

  * ``labels=None`` (global sets): random sets of sizes |A| and |B| out of N;
    the intersection is hypergeometric with mean |A||B| / N and variance
    |A||B|(N - |A|)(N - |B|) / (N^2 (N - 1)).
  * with ``labels`` (class-balanced sets): random sets with the same number
    of examples of each class as A (a_c) and B (b_c), drawn independently
    within each class of size N_c; the intersection is a sum of independent
    hypergeometrics, mean sum_c a_c b_c / N_c (sum_c k_c^2 / N_c when both
    have k_c per class) and variance the sum of the per-class variances.

  Args:
    a: bool [R, N], one set per row.
    b: bool [S, N].
    labels: int [N] in [0, num_classes), or None for the global null.
    num_classes: the class count (static); needed with ``labels``.

  Returns:
    Dict of float32 arrays: ``intersection``, ``overlap``, ``jaccard``,
    ``chance_intersection``, ``chance_overlap``, ``chance_jaccard``,
    ``ratio`` (intersection / chance_intersection), ``z`` (standardized by
    the hypergeometric variance) [R, S]; ``size_a`` [R], ``size_b`` [S]. NaN
    where undefined (an empty set).
  """
  af, bf = a.astype(jnp.float32), b.astype(jnp.float32)
  n = jnp.float32(a.shape[-1])
  inter = jnp.matmul(af, bf.T, precision=_HI)  # Integer-valued: exact < 2^24.
  sa, sb = jnp.sum(af, axis=1)[:, None], jnp.sum(bf, axis=1)[None, :]
  smaller = jnp.minimum(sa, sb)
  if labels is None:
    chance = sa * sb / n
    var = sa * sb * (n - sa) * (n - sb) / (n * n * jnp.maximum(n - 1.0, 1.0))
  else:
    if num_classes is None:
      raise ValueError('overlap_matrix with labels needs num_classes.')
    onehot = (jnp.asarray(labels)[:, None] == jnp.arange(num_classes)[None, :]
              ).astype(jnp.float32)  # [N, C]
    ca = jnp.matmul(af, onehot, precision=_HI)  # [R, C] class counts.
    cb = jnp.matmul(bf, onehot, precision=_HI)  # [S, C]
    nc = jnp.sum(onehot, axis=0)  # [C]
    inv = jnp.where(nc > 0, 1.0 / jnp.where(nc > 0, nc, 1.0), 0.0)
    chance = jnp.matmul(ca, (cb * inv).T, precision=_HI)
    w = inv * inv / jnp.maximum(nc - 1.0, 1.0)
    var = jnp.matmul(ca * (nc - ca), (cb * (nc - cb) * w).T, precision=_HI)
  nan = jnp.float32(jnp.nan)
  div = lambda x, y: jnp.where(y > 0, x / jnp.where(y > 0, y, 1.0), nan)
  return {
      'intersection': inter,
      'overlap': div(inter, smaller),
      'jaccard': div(inter, sa + sb - inter),
      'chance_intersection': chance,
      'chance_overlap': div(chance, smaller),
      'chance_jaccard': div(chance, sa + sb - chance),
      'ratio': div(inter, chance),
      'z': div(inter - chance, jnp.sqrt(var)),
      'size_a': sa[:, 0],
      'size_b': sb[0, :],
  }


def rule_overlap(a: Any, b: Any, rule: sets_lib.SetRule, labels: Any,
                 num_classes: int) -> dict[str, jax.Array]:
  """:func:`overlap_matrix` with the chance level of ``rule``'s sets.

  Class-balanced rules (top_k per class) use the class-stratified null,
  every other rule the global one.
  """
  if rule.name == 'class_balanced':
    return overlap_matrix(a, b, jnp.asarray(labels, jnp.int32),
                          num_classes=num_classes)
  return overlap_matrix(a, b)


def _rank_1d(v: jax.Array) -> jax.Array:
  # Single-operand int32 sort + binary search: XLA:CPU's argsort (a two-operand
  # sort) and scatter are several times slower.
  n = v.shape[0]
  k = sets_lib.sortable_int(v)
  s = jnp.sort(k)
  i = jnp.arange(n)
  ends = jnp.concatenate([s[1:] != s[:-1], jnp.array([True])])
  last = jax.lax.cummin(jnp.where(ends, i, n - 1), reverse=True)
  first = jnp.searchsorted(s, k, side='left')
  return (first + last[first] + 2).astype(jnp.float32) * 0.5


@jax.jit
def average_ranks(x: jax.Array) -> jax.Array:
  """1-based ranks of each row, ties sharing their mean rank (float32).

  Args:
    x: [N] or [R, N] finite values.

  Returns:
    float32 ranks shaped like ``x`` (as ``scipy.stats.rankdata``).
  """
  return _rank_1d(x) if x.ndim == 1 else jax.vmap(_rank_1d)(x)


def _unit_rows(r: jax.Array) -> jax.Array:
  c = r - jnp.mean(r, axis=1, keepdims=True)
  norm = jnp.sqrt(jnp.sum(c * c, axis=1, keepdims=True))
  return c / jnp.where(norm > 0, norm, jnp.nan)


@jax.jit
def spearman_matrix(x: jax.Array, y: jax.Array | None = None) -> jax.Array:
  """Spearman's rho between every row of ``x`` and every row of ``y``.

  Args:
    x: float [R, N].
    y: float [S, N], or None for ``x`` against itself.

  Returns:
    float32 [R, S]; NaN for a constant row (no ranking to correlate).
  """
  zx = _unit_rows(average_ranks(x))
  zy = zx if y is None else _unit_rows(average_ranks(y))
  return jnp.clip(jnp.matmul(zx, zy.T, precision=_HI), -1.0, 1.0)


def _offdiag_means(mat: np.ndarray, gids: np.ndarray) -> dict[str, Any]:
  """Means of a member-pair matrix over same-arch and cross-arch pairs."""
  mat = np.asarray(mat, np.float64)
  same = gids[:, None] == gids[None, :]
  off = ~np.eye(len(gids), dtype=bool)
  out = {}
  for name, sel in (('same_arch', same & off), ('cross_arch', ~same)):
    vals = mat[sel]
    vals = vals[np.isfinite(vals)]
    out[name] = float(vals.mean()) if vals.size else None
  return out


#: Statistics of the seed ceiling: (set, overlap_matrix key) and Spearman.
CEILING_STATS = tuple(f'{w}_{s}' for w in ('easy', 'hard') for s in (
    'overlap', 'chance_overlap', 'ratio', 'jaccard')) + ('spearman_easiness',)
#: The statistics put between the floor (chance) and the ceiling, and the
#: floor of each ('<which>_chance_overlap': that cell's chance overlap).
_FLOORS = {'easy_ratio': 1.0, 'hard_ratio': 1.0, 'spearman_easiness': 0.0,
           'easy_overlap': 'easy_chance_overlap',
           'hard_overlap': 'hard_chance_overlap'}
#: At most this many member groups per architecture and level (sampled
#: beyond it, as disjoint pairs so that within-architecture draws exist).
MAX_GROUPS = 32
CEILING_DESIGN = (
    'At each level h, easiness and the set score are averaged over h '
    'members; the statistics of arch_pairs (set overlap, chance, ratio, '
    'Jaccard, easiness Spearman) are computed between two disjoint groups of '
    'h members of one architecture (the diagonal: the seed-to-seed ceiling) '
    'and between h members of one architecture and h of another (off the '
    'diagonal: cross-architecture agreement at the same member count), over '
    'every such pair of groups (or a sample when there are more than '
    f'{MAX_GROUPS} groups per architecture). Levels: h = 1 (single members) '
    'and the largest h at which every architecture with >= 2 members has two '
    'disjoint groups (floor(smallest such count / 2)). Chance is the floor. '
    'sd is the standard deviation over draws (population); draws share '
    'members, so it describes the seed spread, it is not a standard error. '
    'normalized = (cross - floor) / (ceiling - floor), the ceiling being the '
    "mean of the two architectures' diagonal values. arch_pairs average all "
    'members of each architecture: more than any level here, so their '
    'values are not comparable with these.')


def ceiling_levels(sizes: Sequence[int]) -> list[int]:
  """Group sizes h of :func:`seed_ceiling` for these members per arch."""
  two = [int(s) for s in sizes if s >= 2]
  return sorted({1, min(s // 2 for s in two)}) if two else []


def member_groups(members: Sequence[int], h: int, rng: np.random.Generator,
                  cap: int = MAX_GROUPS) -> list[tuple[int, ...]]:
  """The h-member groups of one architecture used by :func:`seed_ceiling`.

  Every h-subset when there are at most ``cap``; else up to ``cap`` random
  ones, drawn as disjoint pairs (one random order of the members, its first
  h and next h) when the architecture has 2h members, so that
  within-architecture pairs exist.

  Args:
    members: member indices of one architecture.
    h: group size (<= len(members)).
    rng: numpy generator (used only when sampling).
    cap: most groups.

  Returns:
    Sorted, distinct sorted tuples of member indices.
  """
  members = sorted(int(i) for i in members)
  m = len(members)
  if math.comb(m, h) <= cap:
    return list(itertools.combinations(members, h))
  out = set()
  for _ in range(cap // 2 if m >= 2 * h else cap):
    perm = [members[i] for i in rng.permutation(m)]
    out.add(tuple(sorted(perm[:h])))
    if m >= 2 * h:
      out.add(tuple(sorted(perm[h:2 * h])))
  return sorted(out)


@jax.jit
def _group_means(values: Any, groups: jax.Array) -> Any:
  """Means over the members of each group: [U, h] indices -> [U, N]."""
  return jax.tree.map(lambda v: jnp.mean(v[groups], axis=1), values)


def _draw_stats(mats: Mapping[str, np.ndarray], pairs: list[tuple[int, int]]
                ) -> dict[str, dict[str, float]] | None:
  if not pairs:
    return None
  u, v = np.asarray(pairs).T
  out = {}
  for name, mat in mats.items():
    x = np.asarray(mat, np.float64)[u, v]
    x = x[np.isfinite(x)]
    out[name] = ({'mean': float(x.mean()), 'sd': float(x.std()),
                  'min': float(x.min()), 'max': float(x.max())}
                 if x.size else None)
  return out


def seed_ceiling(values: Mapping[str, jax.Array], gids: np.ndarray,
                 arch_names: Sequence[str], rule: sets_lib.SetRule, k: Any,
                 labels: jax.Array, num_classes: int,
                 key: jax.Array) -> dict[str, Any]:
  """Within-architecture (seed-to-seed) agreement as the ceiling.

  See :data:`CEILING_DESIGN`: at each level h of :func:`ceiling_levels`,
  groups of h members are averaged and compared with :func:`_sets_and_corr`
  (the statistics of the architecture pairs): two disjoint groups of one
  architecture give the ceiling (diagonal), groups of two architectures the
  cross-architecture value at the same member count (off the diagonal).

  Args:
    values: {'score', 'early_margin', 'easiness': float [M, N]}.
    gids: int [M], the architecture of each member.
    arch_names: G names.
    rule: the set rule.
    k: ``rule.resolve_k`` (None unless top_k).
    labels: int32 [N].
    num_classes: C.
    key: ``jax.random`` key (only used when groups are sampled).

  Returns:
    {'design', 'floor', 'levels': [{'members': h, 'groups_per_arch' [G],
    'draws' int [G, G], 'stats': {stat: {'mean'|'sd'|'min'|'max': [G, G]}},
    'normalized': {stat: [G, G]}, 'summary': {stat: {'ceiling', 'ceiling_sd',
    'cross_arch', 'cross_arch_sd', 'floor', 'normalized_cross'}}}]}; NaN
    where a cell has no draw (an architecture with fewer than 2h members
    has no diagonal).
  """
  g = len(arch_names)
  sizes = np.bincount(gids, minlength=g)
  out: dict[str, Any] = {'design': CEILING_DESIGN, 'levels': [],
                         'floor': {'ratio': 1.0, 'spearman_easiness': 0.0,
                                   'overlap': 'the chance_overlap of the cell',
                                   'chance': CHANCE_TEXT[rule.name]}}
  for h in ceiling_levels(sizes):
    rng = np.random.default_rng(np.asarray(jax.random.key_data(
        jax.random.fold_in(key, h))).ravel().tolist())
    groups, owner = [], []
    for a in range(g):
      if sizes[a] >= h:
        mine = member_groups(np.flatnonzero(gids == a), h, rng)
        groups += mine
        owner += [a] * len(mine)
    res = jax.tree.map(np.asarray, _sets_and_corr(
        _group_means(values, jnp.asarray(groups, jnp.int32)), k, labels,
        rule=rule, num_classes=num_classes))
    mats = {f'{w}_{s}': res[f'{w}_sets'][s] for w in ('easy', 'hard')
            for s in ('overlap', 'chance_overlap', 'ratio', 'jaccard')}
    mats['spearman_easiness'] = res['spearman_easiness']
    stats = {n: {q: np.full((g, g), np.nan) for q in ('mean', 'sd', 'min',
                                                       'max')}
             for n in CEILING_STATS}
    draws = np.zeros((g, g), np.int64)
    owner = np.asarray(owner)
    for a in range(g):
      for b in range(a, g):
        pairs = [(u, v) for u in np.flatnonzero(owner == a)
                 for v in np.flatnonzero(owner == b)
                 if (a != b or u < v) and not set(groups[u]) & set(groups[v])]
        draws[a, b] = draws[b, a] = len(pairs)
        for n, st in (_draw_stats(mats, pairs) or {}).items():
          for q, x in (st or {}).items():
            stats[n][q][a, b] = stats[n][q][b, a] = x
    out['levels'].append(_ceiling_level(h, sizes, owner, draws, stats))
  return out


def _finite_mean(x: np.ndarray) -> float | None:
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  return float(x.mean()) if x.size else None


def _ceiling_level(h: int, sizes: np.ndarray, owner: np.ndarray,
                   draws: np.ndarray, stats: dict[str, Any]) -> dict[str, Any]:
  """Normalized values and the summary of one level of :func:`seed_ceiling`."""
  g = len(sizes)
  off = ~np.eye(g, dtype=bool)
  normalized, summary = {}, {}
  for name in CEILING_STATS:
    mean, sd = stats[name]['mean'], stats[name]['sd']
    floor = _FLOORS.get(name)
    if isinstance(floor, str):  # The chance overlap of each cell.
      floor = np.where(off, stats[floor]['mean'], np.nan)
    if floor is not None:
      ceil = (np.diag(mean)[:, None] + np.diag(mean)[None, :]) / 2.0
      with np.errstate(invalid='ignore', divide='ignore'):
        normalized[name] = np.where(off, (mean - floor) / (ceil - floor),
                                    np.nan)
    summary[name] = {
        'ceiling': _finite_mean(np.diag(mean)),
        'ceiling_sd': _finite_mean(np.diag(sd)),
        'cross_arch': _finite_mean(mean[off]),
        'cross_arch_sd': _finite_mean(sd[off]),
        'floor': None if floor is None else _finite_mean(floor),
        'normalized_cross': (_finite_mean(normalized[name][off])
                             if name in normalized else None)}
  return {'members': int(h),
          'groups_per_arch': np.bincount(owner, minlength=g).tolist(),
          'members_per_arch': np.asarray(sizes).tolist(),
          'draws': draws, 'stats': stats, 'normalized': normalized,
          'summary': summary}


@functools.lru_cache(maxsize=None)
def _arch_stat_fn(rule: sets_lib.SetRule, num_classes: int):
  """One callable per (rule, classes), so repeated reports reuse the jit."""

  def stat(arch, args):
    easy, hard = sets_lib.easy_hard_masks(
        rule, arch['score'], labels=args['labels'], num_classes=num_classes,
        k=args['k'], tiebreak=arch['early_margin'])
    out = {'spearman': spearman_matrix(arch['easiness'])}
    for name, m in (('easy', easy), ('hard', hard)):
      o = rule_overlap(m, m, rule, args['labels'], num_classes)
      for s in ('overlap', 'jaccard', 'ratio'):
        out[f'{name}_{s}'] = o[s]
    return out

  return stat


@functools.partial(jax.jit, static_argnames=('rule', 'num_classes'))
def _sets_and_corr(values, k, labels, *, rule, num_classes):
  easy, hard = sets_lib.easy_hard_masks(
      rule, values['score'], labels=labels, num_classes=num_classes, k=k,
      tiebreak=values['early_margin'])
  return {'easy_sets': rule_overlap(easy, easy, rule, labels, num_classes),
          'hard_sets': rule_overlap(hard, hard, rule, labels, num_classes),
          'spearman_easiness': spearman_matrix(values['easiness'])}


def agreement_report(member_scores: dict[str, np.ndarray],
                     member_names: Sequence[str], group_ids: np.ndarray,
                     arch_names: Sequence[str], rule: sets_lib.SetRule,
                     labels: np.ndarray, num_classes: int, key: jax.Array,
                     intervals: bool = True,
                     ci_level: float = 0.95) -> dict[str, Any]:
  """Agreement between members and between architectures.

  Args:
    member_scores: {score name: float [M, N]} (``compute_scores()['member']``).
    member_names: M names.
    group_ids: int32 [M], the architecture of each member.
    arch_names: G names.
    rule: the easy/hard rule, applied to each member's (or architecture's)
      own score.
    labels: int [N].
    num_classes: number of classes.
    key: ``jax.random`` key (samples member groups of the seed ceiling).
    intervals: leave-one-seed-out intervals for the architecture pairs
      (``seed_interval``; one extra statistic per member).
    ci_level: two-sided confidence level.

  Returns:
    A nested dict of numpy arrays and floats, the fields of
    ``results.Agreement`` (``results.Skipped`` for a pair type without
    pairs):
    ``member_pairs`` and ``arch_pairs`` (all members of each architecture
    averaged, with seed intervals at that size), and with two or more members
    ``ceiling`` (:func:`seed_ceiling`: within- against cross-architecture
    agreement at equal member counts, chance as the floor).
  """
  gids = np.asarray(group_ids, np.int32)
  m, g = len(member_names), len(arch_names)
  k = rule.resolve_k(labels, num_classes) if rule.method == 'top_k' else None
  labels_j = jnp.asarray(labels, jnp.int32)
  values = {'score': jnp.asarray(member_scores[rule.score]),
            'early_margin': jnp.asarray(member_scores['early_margin']),
            'easiness': jnp.asarray(member_scores['easiness'])}
  out: dict[str, Any] = {'set_rule': rule.name,
                         'chance': CHANCE_TEXT[rule.name],
                         'members': list(member_names),
                         'archs': list(arch_names),
                         'member_arch': [arch_names[i] for i in gids]}

  if m < 2:
    out['member_pairs'] = results.Skipped(
        'only one member: no pair to compare')
  else:
    res = jax.tree.map(np.asarray, _sets_and_corr(
        values, k, labels_j, rule=rule, num_classes=num_classes))
    res['summary'] = {
        name: _offdiag_means(mat, gids) for name, mat in (
            ('easy_jaccard', res['easy_sets']['jaccard']),
            ('easy_ratio', res['easy_sets']['ratio']),
            ('hard_jaccard', res['hard_sets']['jaccard']),
            ('hard_ratio', res['hard_sets']['ratio']),
            ('spearman_easiness', res['spearman_easiness']))}
    out['member_pairs'] = res
    out['ceiling'] = seed_ceiling(values, gids, arch_names, rule, k,
                                  labels_j, num_classes, key)
  if g < 2:
    out['arch_pairs'] = results.Skipped(
        'only one architecture: no pair to compare')
    return out
  arch_values = jax.tree.map(
      lambda v: scores_lib.group_mean(v, jnp.asarray(gids), num_groups=g),
      values)
  res = jax.tree.map(np.asarray, _sets_and_corr(
      arch_values, k, labels_j, rule=rule, num_classes=num_classes))
  res['members_per_arch'] = np.bincount(gids, minlength=g).tolist()
  if intervals:
    stat_args = {'k': jnp.asarray(0 if k is None else k), 'labels': labels_j}
    stat_fn = _arch_stat_fn(rule, num_classes)
    full, loo = seed_interval.leave_one_out(
        values, gids, stat_args, stat_fn=stat_fn, num_groups=g)
    res['seed_interval'] = {
        'method': 'leave-one-seed-out jackknife', 'level': float(ci_level),
        'covers': seed_interval.COVERS,
        'intervals': {name: seed_interval.jackknife_interval(
            full[name], loo[name], gids, ci_level) for name in full}}
  out['arch_pairs'] = res
  return out
