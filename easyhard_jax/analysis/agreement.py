"""Cross-model agreement: overlap of easy/hard sets and rank correlation.

* :func:`overlap_matrix`: for every pair of rows of two set masks, the
  intersection, the overlap coefficient |A n B| / min(|A|, |B|) (= |A n B| / k
  for top-k sets), the Jaccard index, and what random sets of the same sizes
  give: the hypergeometric mean |A||B| / N for global sets, or sum_c a_c b_c /
  N_c for class-balanced sets (same class counts), its variance, the chance
  overlap and Jaccard, the ratio observed / chance and a z-score.
* :func:`spearman_matrix`: Spearman's rho for all pairs of rows as one matmul
  of row-normalized average ranks (ties get their mean rank).
* :func:`bootstrap_arch`: resamples members within each architecture with
  replacement and recomputes an architecture-level statistic (explicit key).
* :func:`agreement_report`: all of it for members and architectures.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from easyhard_jax.analysis import scores as scores_lib
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


def resample_table(group_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """Host-side tables for :func:`bootstrap_arch`.

  Args:
    group_ids: int [M], the architecture of each member.

  Returns:
    (members int32 [G, max members], group sizes int32 [G]).
  """
  gids = np.asarray(group_ids)
  g = int(gids.max()) + 1
  lists = [np.flatnonzero(gids == i) for i in range(g)]
  sizes = np.asarray([len(x) for x in lists], np.int32)
  table = np.zeros((g, sizes.max()), np.int32)
  for i, x in enumerate(lists):
    table[i, :len(x)] = x
  return table, sizes


@functools.partial(jax.jit, static_argnames=('stat_fn', 'num_groups',
                                             'num_samples', 'batch_size'))
def bootstrap_arch(key: jax.Array, member_values: Any, group_ids: jax.Array,
                   table: jax.Array, sizes: jax.Array, stat_args: Any = None,
                   *, stat_fn: Callable[[Any, Any], Any], num_groups: int,
                   num_samples: int, batch_size: int = 8) -> Any:
  """Bootstrap of an architecture-level statistic over seeds.

  Each sample replaces every member by a member of the same architecture
  drawn with replacement, averages the drawn members per architecture and
  applies ``stat_fn``.

  Args:
    key: a ``jax.random`` key.
    member_values: pytree of float [M, N] per-member scores.
    group_ids: int32 [M].
    table: int32 [G, max members], from :func:`resample_table`.
    sizes: int32 [G], from :func:`resample_table`.
    stat_args: a pytree of arrays passed on to ``stat_fn`` (traced).
    stat_fn: ``stat_fn(arch_values, stat_args)`` maps the pytree of [G, N]
      architecture-level means to a pytree of arrays (static: pass the same
      callable to reuse the compilation).
    num_groups: G.
    num_samples: B.
    batch_size: samples computed together (memory ~ batch * G * N).

  Returns:
    ``stat_fn``'s pytree with a leading axis of size B.
  """
  m = group_ids.shape[0]
  # Whole batches only: a remainder batch would be a second compiled body.
  padded = -(-num_samples // batch_size) * batch_size
  u = jax.random.uniform(key, (padded, m))
  size_m = sizes[group_ids]
  pos = jnp.minimum(jnp.floor(u * size_m).astype(jnp.int32), size_m - 1)
  draws = table[group_ids[None, :], pos]  # [B, M]

  def one(draw):
    resampled = jax.tree.map(lambda v: v[draw], member_values)
    arch = jax.tree.map(
        lambda v: scores_lib.group_mean(v, group_ids, num_groups=num_groups),
        resampled)
    return stat_fn(arch, stat_args)

  out = jax.lax.map(one, draws, batch_size=batch_size)
  return jax.tree.map(lambda x: x[:num_samples], out)


def percentile_interval(samples: Any, level: float) -> tuple[np.ndarray,
                                                             np.ndarray]:
  """Two-sided percentile interval over the leading (bootstrap) axis."""
  s = np.asarray(samples, np.float64)
  q = [50.0 * (1.0 - level), 50.0 * (1.0 + level)]
  with warnings.catch_warnings():
    # All-NaN cells (e.g. an empty set in every sample) stay NaN, quietly.
    warnings.simplefilter('ignore', RuntimeWarning)
    lo, hi = np.nanpercentile(s, q, axis=0)
  return lo, hi


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
                     num_bootstrap: int = 200,
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
    key: ``jax.random`` key of the bootstrap.
    num_bootstrap: bootstrap samples (0 = none).
    ci_level: two-sided confidence level.

  Returns:
    A nested dict of numpy arrays and floats (see the stage's JSON).
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
    out['member_pairs'] = {'skipped': 'only one member: no pair to compare'}
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
  if g < 2:
    out['arch_pairs'] = {'skipped': 'only one architecture: no pair to compare'}
    return out
  arch_values = jax.tree.map(
      lambda v: scores_lib.group_mean(v, jnp.asarray(gids), num_groups=g),
      values)
  res = jax.tree.map(np.asarray, _sets_and_corr(
      arch_values, k, labels_j, rule=rule, num_classes=num_classes))
  table, sizes = resample_table(gids)
  res['members_per_arch'] = sizes.tolist()
  if num_bootstrap > 0:
    samples = bootstrap_arch(
        key, values, jnp.asarray(gids), jnp.asarray(table),
        jnp.asarray(sizes), {'k': jnp.asarray(0 if k is None else k),
                             'labels': labels_j},
        stat_fn=_arch_stat_fn(rule, num_classes), num_groups=g,
        num_samples=int(num_bootstrap))
    ci = {}
    for name, s in samples.items():
      lo, hi = percentile_interval(s, ci_level)
      ci[name] = {'lo': lo, 'hi': hi}
    res['bootstrap'] = {
        'num_samples': int(num_bootstrap), 'level': float(ci_level),
        'intervals': ci,
        'note': ('members resampled with replacement within each arch; '
                 'intervals are degenerate for archs with one member')}
  out['arch_pairs'] = res
  return out
