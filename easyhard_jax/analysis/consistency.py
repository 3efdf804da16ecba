"""Held-out ground truth: consistency scores, C-scores and memorization.

Members trained on random subsets of the training set (a bool ``keep`` mask
each, see experiments/heldout.py) predict every training example at the end
of training; for one example, the members that did not train on it measure
how well the rest of the data predicts it. Per subset ratio r (the fraction
of the training set each member trains on), over the members of ratio r:

* consistency_r = (held-out members correct) / (held-out members), NaN with
  count 0 where no member held the example out (never a silent 0); its
  standard error is the binomial plug-in sqrt(p (1 - p) / count), which is 0
  when every held-out member agrees (see docs/heldout.md for the planning
  value 1 / (2 sqrt(count))).
* the C-score estimate (Jiang et al. 2021, "Characterizing structural
  regularities of labeled data in overparameterized models"): the mean of
  consistency_r over the ratios, here over the ratios with a held-out count
  (``cscore_ratios`` says how many); its standard error treats the ratios'
  estimates as independent (they come from disjoint members).
* memorization_r (Feldman & Zhang 2020, "What neural networks memorize and
  why"): P(correct | trained on it) - P(correct | held out), from the same
  members, with the standard error of a difference of two independent
  binomial means; ``memorization`` averages it over ratios as the C-score.

The proxies (every score of the analysis) are judged against the C-score
estimate with :func:`compare.compare` (Spearman, AUROC of the
hardest tail, top-k overlap against chance, per class) and an AUROC for
C-score < 0.5; the estimate's own ceiling comes from two disjoint halves of
the held-out members (:func:`between_halves`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from easyhard_jax.analysis import compare
from easyhard_jax.analysis import scores as scores_lib

# The held-out score columns' orientation (higher = easier or harder).
ORIENTATION = {'cscore': scores_lib.HIGHER_IS_EASIER,
               'consistency': scores_lib.HIGHER_IS_EASIER,
               'memorization': scores_lib.HIGHER_IS_HARDER}
BELOW = 0.5  # "Inconsistent": C-score below this (the AUROC positives).


def ratio_tag(ratio: float) -> str:
  """The column suffix of a ratio: 0.5 -> 'r0.5'."""
  return f'r{float(ratio):g}'


def _mean_and_se(hits: np.ndarray, count: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Binomial mean and plug-in standard error; NaN where count is 0."""
  count = count.astype(np.float64)
  with np.errstate(invalid='ignore', divide='ignore'):
    p = np.where(count > 0, hits / count, np.nan)
    se = np.where(count > 0, np.sqrt(p * (1.0 - p) / count), np.nan)
  return p, se


def _mean_over_ratios(values: Sequence[np.ndarray], ses: Sequence[np.ndarray]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mean over the finite ratios, its standard error and the ratios used."""
  v, s = np.stack(values), np.stack(ses)
  ok = np.isfinite(v)
  used = ok.sum(axis=0)
  with np.errstate(invalid='ignore', divide='ignore'):
    mean = np.where(used > 0, np.where(ok, v, 0.0).sum(0) / used, np.nan)
    se = np.where(used > 0, np.sqrt(np.where(ok, s * s, 0.0).sum(0)) / used,
                  np.nan)
  return mean, se, used.astype(np.int64)


def estimate(correct: np.ndarray, keep: np.ndarray,
             member_ratio: np.ndarray, ratios: Sequence[float]
             ) -> dict[str, np.ndarray]:
  """Consistency, C-score and memorization per example, with counts and SEs.

  Args:
    correct: bool [M, N]: member m classifies example n correctly.
    keep: bool [M, N]: member m trained on example n.
    member_ratio: float [M]: each member's subset ratio.
    ratios: the ratios to estimate (each must have members).

  Returns:
    {column: [N]}: per ratio tag t (see :func:`ratio_tag`):
    ``consistency_t``, ``consistency_se_t``, ``heldout_count_t`` (int),
    ``in_accuracy_t``, ``in_count_t`` (int), ``memorization_t``,
    ``memorization_se_t``; and over ratios ``cscore``, ``cscore_se``,
    ``cscore_ratios`` (int), ``heldout_count`` (int), ``memorization``,
    ``memorization_se``.
  """
  correct = np.asarray(correct, bool)
  keep = np.asarray(keep, bool)
  member_ratio = np.asarray(member_ratio, np.float64)
  if correct.shape != keep.shape or correct.ndim != 2 or (
      member_ratio.shape != correct.shape[:1]):
    raise ValueError(f'correct {correct.shape}, keep {keep.shape} and '
                     f'member_ratio {member_ratio.shape} must be [M, N], '
                     '[M, N] and [M].')
  out: dict[str, np.ndarray] = {}
  cons, cons_se, mem, mem_se = [], [], [], []
  total = np.zeros(correct.shape[1], np.int64)
  for r in ratios:
    sel = np.isclose(member_ratio, float(r))
    if not sel.any():
      raise ValueError(f'No member has subset ratio {r}.')
    t = ratio_tag(r)
    c, k = correct[sel], keep[sel]
    n_out, n_in = (~k).sum(0), k.sum(0)
    p_out, se_out = _mean_and_se((c & ~k).sum(0), n_out)
    p_in, se_in = _mean_and_se((c & k).sum(0), n_in)
    out[f'consistency_{t}'], out[f'consistency_se_{t}'] = p_out, se_out
    out[f'heldout_count_{t}'] = n_out.astype(np.int64)
    out[f'in_accuracy_{t}'], out[f'in_count_{t}'] = p_in, n_in.astype(
        np.int64)
    out[f'memorization_{t}'] = p_in - p_out  # NaN unless both counts > 0.
    out[f'memorization_se_{t}'] = np.sqrt(se_in ** 2 + se_out ** 2)
    cons.append(p_out)
    cons_se.append(se_out)
    mem.append(out[f'memorization_{t}'])
    mem_se.append(out[f'memorization_se_{t}'])
    total += n_out
  out['cscore'], out['cscore_se'], out['cscore_ratios'] = _mean_over_ratios(
      cons, cons_se)
  out['heldout_count'] = total
  out['memorization'], out['memorization_se'], _ = _mean_over_ratios(
      mem, mem_se)
  return out


def halves(member_ratio: np.ndarray, order: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
  """Two disjoint member halves, alternating within each ratio.

  Members of one ratio are exchangeable (independent subsets and random
  streams), so alternating by ``order`` (default: member order) is a random
  split; each half has every ratio.

  Returns:
    (a, b): bool [M] masks, disjoint, covering every member.
  """
  member_ratio = np.asarray(member_ratio, np.float64)
  order = np.arange(member_ratio.size) if order is None else np.asarray(order)
  a = np.zeros(member_ratio.size, bool)
  for r in np.unique(member_ratio):
    idx = np.flatnonzero(member_ratio == r)
    idx = idx[np.argsort(order[idx], kind='stable')]
    a[idx[::2]] = True
  return a, ~a


def _hardness(values: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
  """Score values oriented so higher = harder; False if it has no hard end."""
  try:
    o = scores_lib.orientation(name)
  except KeyError:
    o = ORIENTATION.get(name.split('/', 1)[0].split('_r', 1)[0],
                        scores_lib.NEITHER)
  if o == scores_lib.NEITHER:
    return values, False
  return (values if o == scores_lib.HIGHER_IS_HARDER else -values), True


def below_auroc(hard: np.ndarray, cscore: np.ndarray, labels: np.ndarray,
                below: float = BELOW) -> dict[str, Any]:
  """AUROC of ``hard`` for C-score < ``below``, globally and per class.

  Args:
    hard: float [n] hardness (higher = harder), finite.
    cscore: float [n] the held-out estimate, finite.
    labels: int [n].
    below: the threshold.

  Returns:
    {'auroc', 'positives', 'per_class': [{'class', 'auroc', 'positives'}]};
    an AUROC is None where a class has no positive or no negative.
  """
  pos = cscore < below
  per_class = []
  for c in np.unique(labels):
    m = labels == c
    per_class.append({'class': int(c), 'positives': int(pos[m].sum()),
                      'auroc': compare.auroc(hard[m], pos[m])})
  return {'auroc': compare.auroc(hard, pos),
          'positives': int(pos.sum()), 'per_class': per_class}


def judge(table: Mapping[str, np.ndarray], cscore: np.ndarray, *,
          fractions: Sequence[float]) -> dict[str, Any]:
  """Every score of ``table`` against the held-out C-score estimate.

  Args:
    table: columns of ``analysis/scores_train.csv`` (example_index, label,
      score columns) in example-index order.
    cscore: float [N], NaN where the estimate is missing.
    fractions: hardest-tail fractions (AUROC positives and top-k sizes).

  Returns:
    compare.compare's result with ``below_half`` (AUROC for
    C-score < 0.5, per class too) added to every oriented score.
  """
  res = compare.compare(
      table, cscore, scores_lib.HIGHER_IS_EASIER, fractions=fractions,
      band=(0.0, 1.0))
  labels = np.asarray(table['label'], np.int64)
  for name, s in res['scores'].items():
    if 'skipped' in s:
      continue
    hard, oriented = _hardness(np.asarray(table[name], np.float64), name)
    if not oriented:
      continue
    ok = np.isfinite(hard) & np.isfinite(cscore)
    s['below_half'] = below_auroc(hard[ok], cscore[ok], labels[ok])
  return res


def between_halves(a: np.ndarray, b: np.ndarray, labels: np.ndarray, *,
                   fractions: Sequence[float]) -> dict[str, Any]:
  """The estimate's own ceiling: one half's C-score against the other's.

  Half a plays the proxy and half b the truth, with the statistics a proxy
  gets; each half has half the members, so its noise is larger than the
  full estimate's. The Spearman-Brown step (2 rho / (1 + rho)) estimates
  the full estimate's reliability, and its square root the correlation a
  perfect proxy (the exact C-score) would reach against the estimate (the
  textbook formulas are for Pearson's r; applied to ranks they are
  approximate).

  Args:
    a, b: float [N] C-score estimates of the two halves (NaN: missing).
    labels: int [N].
    fractions: hardest-tail fractions.

  Returns:
    {'examples', 'spearman', 'spearman_brown', 'perfect_proxy_spearman',
    'tails', 'per_class', 'below_half', ...} (compare_one's fields).
  """
  ok = np.isfinite(a) & np.isfinite(b)
  labels = np.asarray(labels, np.int64)
  if ok.sum() < 3:
    return {'examples': int(ok.sum()), 'skipped':
            'fewer than 3 examples with both halves held out'}
  num_classes = int(labels.max()) + 1
  res = compare.compare_one(
      -a[ok], -b[ok], labels[ok], np.ones(int(ok.sum()), bool),
      fractions=fractions, num_classes=num_classes)
  rho = res['spearman']
  res['spearman_brown'] = (None if rho is None or rho <= -1 else
                           2.0 * rho / (1.0 + rho))
  sb = res['spearman_brown']
  res['perfect_proxy_spearman'] = (None if sb is None or sb < 0 else
                                   float(np.sqrt(sb)))
  res['below_half'] = below_auroc(-a[ok], b[ok], labels[ok])
  return res


def against_reference(estimates: Mapping[str, np.ndarray],
                      reference: np.ndarray, labels: np.ndarray, *,
                      fractions: Sequence[float], columns: Sequence[str]
                      ) -> dict[str, Any]:
  """Held-out estimates against a published held-out score (C-scores).

  Args:
    estimates: :func:`estimate`'s columns.
    reference: float [N] published score (higher = easier) in example-index
      order, NaN where it has no row.
    labels: int [N].
    fractions: hardest-tail fractions.
    columns: estimate columns to compare (e.g. cscore, consistency_r0.5).

  Returns:
    {column: compare_one's fields + 'spearman_reference_below_one' (the
    examples with reference < 1) + 'below_half' (AUROC for reference <
    0.5) + 'mean_se' of the estimate}.
  """
  labels = np.asarray(labels, np.int64)
  num_classes = int(labels.max()) + 1
  out = {}
  for name in columns:
    est = np.asarray(estimates[name], np.float64)
    ok = np.isfinite(est) & np.isfinite(reference)
    if ok.sum() < 3:
      out[name] = {'examples': int(ok.sum()), 'skipped':
                   'fewer than 3 examples with both values'}
      continue
    e, r = est[ok], reference[ok]
    nonsat, _ = compare.nonsaturated_mask(r, (0.0, 1.0))
    res = compare.compare_one(
        -e, -r, labels[ok], nonsat, fractions=fractions,
        num_classes=num_classes)
    below_one = r < 1.0
    res['spearman_reference_below_one'] = compare.spearman(
        e[below_one], r[below_one])
    res['reference_below_one'] = int(below_one.sum())
    res['below_half'] = below_auroc(-e, r, labels[ok])
    se_name = ('cscore_se' if name == 'cscore' else
               name.replace('consistency_', 'consistency_se_'))
    if se_name in estimates:
      res['mean_se'] = float(np.nanmean(np.asarray(estimates[se_name])[ok]))
    out[name] = res
  return out
