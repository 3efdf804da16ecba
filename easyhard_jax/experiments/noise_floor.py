"""Cause-probe statistics at equal member counts, and the reseed noise floor.

A cause probe's figures (the overlap of its easy and hard sets with the
study's, as a ratio to chance; the Spearman correlation of its easiness with
the study's; the easy-set agreement across its architectures) depend on how
many members average into its easiness and on seed noise, not only on what
the probe changed. The ``reseed`` control trains the variants' recipe
(same architectures, epochs and data as the probes) with fresh seeds, so a
probe is judged against what a change of seeds alone does:

* Every figure is computed from ``m`` members per architecture, the probes'
  count (``causes.seeds``). The control, with ``n > m`` members per
  architecture, gives one value per member-subset (m of its n members in
  each architecture, every combination up to ``max_subsets``); the control's
  value is their mean.
* The *seed spread* is the standard deviation of a figure across
  independent m-member ensembles. Subsets of n members share members, so
  their standard deviation understates it: for a figure linear in the
  members' easiness, the variance over all m-of-n subsets is
  (S^2 / m)(1 - m/n) (sampling without replacement from the n members),
  while independent m-member ensembles have sigma^2 / m, and E[S^2] =
  sigma^2. The spread is therefore the subsets' std times sqrt(n / (n - m))
  (the finite-population correction undone; approximate for the non-linear
  set overlaps).
* A probe *departs* from the control when |z| exceeds the two-sided
  ``departure_level`` quantile of Student's t with G (n - 1) degrees of
  freedom (G architectures; the spread is estimated from n members of each),
  with z = (probe - control mean) / (spread * sqrt(1 + m / n)): under the
  null that the change does nothing the probe is one independent m-member
  draw (variance spread^2) and the control mean averages all n members
  (variance about spread^2 m / n). The t quantile, not 2, because the spread
  itself comes from few seeds (df 1: 12.7; df 4: 2.78 at 0.95).
* The verdicts form a family: 4 figures x every probe (plus the
  per-architecture figures), each at 5%, would show some probe "departing"
  in many null studies (46% of simulated ones with 4 probes x 4 figures:
  the tests share the control). :func:`correct_verdicts` applies Holm's
  step-down correction within the family of overall verdicts (the ones the
  report prints) and, separately, within the per-architecture ones, so the
  family-wise false-departure rate is at most 1 - ``departure_level``
  (tests/test_verdict_family.py checks it by simulating probes from the
  control's own distribution).

The study's members enter every figure the same way (all of them, for the
probe and for each control subset), so its own seed noise is common to both
sides. The study's own cross-architecture agreement is also given at m
members per architecture (the mean over its member-subsets).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np
from scipy import stats

from easyhard_jax.storage import records
from easyhard_jax.analysis import agreement
from easyhard_jax.analysis import scores as scores_lib
from easyhard_jax.analysis import sets as sets_lib

#: The figures compared with the control (per-architecture ones aside).
FIGURES = ('easy_overlap_ratio', 'hard_overlap_ratio', 'spearman_easiness',
           'cross_arch_easy_ratio')


@dataclasses.dataclass
class Ensemble:
  """Per-member early statistics of one workdir's members.

  Attributes:
    hits: int [M, N], probes of the easiness window at which each member is
      correct (integers, so ensemble easiness is exact for any subset).
    probes: P_w, the number of probes in the window.
    margin: float [M, N], each member's mean margin over the window (the
      top-k tiebreak: the analysis's early margin).
    arch_members: {arch: member indices}, in the order of ``archs``.
  """
  hits: np.ndarray
  probes: int
  margin: np.ndarray
  arch_members: dict[str, np.ndarray]

  def easiness(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(easiness [N], tiebreak [N]) of the members ``idx``."""
    return (self.hits[idx].sum(0) / float(len(idx) * self.probes),
            self.margin[idx].mean(0))

  def arch_easiness(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(easiness [G, N], tiebreak [G, N]) per architecture within ``idx``."""
    rows = [self.easiness(np.intersect1d(idx, ids))
            for ids in self.arch_members.values()]
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])

  def all_members(self) -> np.ndarray:
    return np.arange(self.hits.shape[0])


def load_ensemble(workdir: str, archs: Sequence[str], cfg_analysis,
                  scale: float = 1.0) -> Ensemble:
  """Per-member window statistics of ``workdir``'s train records.

  Args:
    workdir: a study or cause-probe workdir.
    archs: the architectures to keep, in this order.
    cfg_analysis: ``config.analysis`` (source, window).
    scale: stretches the window (in epochs) for a run of another length, so
      "early" is the same share of training.

  Returns:
    The :class:`Ensemble`.
  """
  rec = records.load(workdir, 'train', source=cfg_analysis.source,
                     archs=list(archs))
  window = tuple(w * scale for w in cfg_analysis.window)
  wmask = scores_lib.window_mask(rec.probe_epochs, window)
  probes = int(wmask.sum())
  acc = np.asarray(scores_lib.member_accuracy(jnp.asarray(rec.correct),
                                              jnp.asarray(wmask)))
  margin = np.asarray(scores_lib.window_mean(jnp.asarray(rec.margin),
                                             jnp.asarray(wmask)))
  member_archs = np.asarray(rec.archs)
  return Ensemble(
      hits=np.rint(acc * probes).astype(np.int64), probes=probes,
      margin=margin.astype(np.float64),
      arch_members={a: np.flatnonzero(member_archs == a) for a in archs})


def member_subsets(ens: Ensemble, m: int, limit: int,
                   seed: int = 0) -> list[np.ndarray]:
  """Member index sets with ``m`` members of each architecture.

  Every combination when there are at most ``limit``, else ``limit`` of them
  drawn without replacement (a fixed seed: reruns agree).
  """
  per = []
  for arch, ids in ens.arch_members.items():
    if not 0 < m <= len(ids):
      raise ValueError(f'Cannot take {m} of the {len(ids)} members of {arch}.')
    per.append(list(itertools.combinations(ids.tolist(), m)))
  sizes = [len(p) for p in per]
  total = math.prod(sizes)
  if total <= limit:
    picks = itertools.product(*per)
  else:
    flat = np.sort(np.random.default_rng(seed).choice(total, limit,
                                                      replace=False))
    picks = [tuple(p[i] for p, i in zip(per, np.unravel_index(f, sizes)))
             for f in flat]
  return [np.sort(np.concatenate([np.asarray(c) for c in pick]))
          for pick in picks]


def _offdiag_mean(mat) -> float | None:
  mat = np.asarray(mat)
  if mat.shape[0] < 2:
    return None
  return float(mat[~np.eye(mat.shape[0], dtype=bool)].mean())


class Comparer:
  """Computes a probe's figures against the study's easy and hard sets.

  Overlaps are ratios to the chance level of the set rule (class-balanced
  sets: the class-stratified null; see agreement.rule_overlap).

  Args:
    config: the study config (``analysis.sets`` gives the set rule; its
      score is replaced by easiness, as the cause probes compare easiness).
    study: the study's :class:`Ensemble` (all of its members are used).
    labels, num_classes: the training labels.
  """

  def __init__(self, config, study: Ensemble, labels: np.ndarray,
               num_classes: int):
    rule = sets_lib.SetRule.from_config(config.analysis.sets)
    self.rule = dataclasses.replace(rule, score='easiness')
    self.labels, self.num_classes = np.asarray(labels), num_classes
    self.k = self.rule.resolve_k(self.labels, num_classes)
    self.archs = list(study.arch_members)
    idx = study.all_members()
    self.easiness, tb = study.easiness(idx)
    self.easy, self.hard = self._sets(self.easiness, tb)
    self.arch_easiness, atb = study.arch_easiness(idx)
    self.arch_easy, _ = self._sets(self.arch_easiness, atb)

  def _sets(self, easiness, tiebreak):
    easy, hard = sets_lib.easy_hard_masks(
        self.rule, easiness, labels=self.labels, num_classes=self.num_classes,
        k=self.k, tiebreak=tiebreak)
    return np.asarray(easy), np.asarray(hard)

  def _overlap(self, a, b) -> dict[str, Any]:
    """Overlap of rows of a with rows of b, chance as the set rule's."""
    return agreement.rule_overlap(
        jnp.asarray(np.atleast_2d(a)), jnp.asarray(np.atleast_2d(b)),
        self.rule, self.labels, self.num_classes)

  def _ratio(self, a, b) -> np.ndarray:
    """Overlap / chance of each row of a with the same row of b."""
    return np.diag(np.asarray(self._overlap(a, b)['ratio']))

  @staticmethod
  def _spearman(a, b) -> np.ndarray:
    """Spearman rho of each row of a with the same row of b."""
    rho = agreement.spearman_matrix(
        jnp.asarray(np.atleast_2d(a), jnp.float32),
        jnp.asarray(np.atleast_2d(b), jnp.float32))
    return np.diag(np.asarray(rho))

  def cross_arch(self, ens: Ensemble, idx: np.ndarray) -> float | None:
    """Mean easy-set overlap / chance over pairs of architectures."""
    arch_e, arch_tb = ens.arch_easiness(idx)
    easy, _ = self._sets(arch_e, arch_tb)
    return _offdiag_mean(self._overlap(easy, easy)['ratio'])

  def figures(self, ens: Ensemble, idx: np.ndarray) -> dict[str, Any]:
    """Every figure of the members ``idx`` of ``ens`` against the study."""
    e, tb = ens.easiness(idx)
    easy, hard = self._sets(e, tb)
    arch_e, arch_tb = ens.arch_easiness(idx)
    arch_easy, _ = self._sets(arch_e, arch_tb)
    cross = self._overlap(arch_easy, arch_easy)
    ratios = self._ratio(arch_easy, self.arch_easy)
    rhos = self._spearman(arch_e, self.arch_easiness)
    return {
        'easy_overlap_ratio': float(self._ratio(easy, self.easy)[0]),
        'hard_overlap_ratio': float(self._ratio(hard, self.hard)[0]),
        'spearman_easiness': float(self._spearman(e, self.easiness)[0]),
        'cross_arch_easy_ratio': _offdiag_mean(cross['ratio']),
        'per_arch': {a: {'easy_overlap_ratio': float(r), 'spearman': float(s)}
                     for a, r, s in zip(self.archs, ratios, rhos)},
    }


def _mean_spread(values: Sequence[float | None], n: int,
                 m: int) -> dict[str, Any]:
  """Mean and seed spread of a control figure over member-subsets."""
  v = np.asarray([np.nan if x is None else x for x in values], np.float64)
  v = v[np.isfinite(v)]
  if v.size == 0:
    return {'mean': None, 'spread': None}
  # See the module docstring: the subsets' std, the finite-population
  # correction (1 - m/n) undone, estimates one independent ensemble's std.
  spread = float(v.std() * math.sqrt(n / (n - m))) if (
      v.size > 1 and n > m) else None
  return {'mean': float(v.mean()), 'spread': spread}


def control_summary(comparer: Comparer, control: Ensemble, m: int,
                    limit: int, level: float = 0.95) -> dict[str, Any]:
  """The control's figures over its m-per-architecture member-subsets.

  Args:
    comparer: the study's sets and the set rule.
    control: the control's members.
    m: members per architecture of every figure (the probes' count).
    limit: the most member-subsets evaluated.
    level: two-sided level of the departure test.

  Returns:
    {'members_per_arch': n, 'subsets': count, 'df', 'threshold' (the |z|
    above which a probe departs; 'arch_threshold' for per-architecture
    figures), figure: {'mean', 'spread'},
    'per_arch': {arch: {figure: {'mean', 'spread'}}}}.
  """
  n = min(len(ids) for ids in control.arch_members.values())
  subs = member_subsets(control, m, limit)
  figs = [comparer.figures(control, idx) for idx in subs]
  df = len(control.arch_members) * (n - 1)
  out: dict[str, Any] = {
      'members_per_arch': n, 'subsets': len(subs), 'df': df,
      'level': float(level),
      'threshold': float(stats.t.ppf(0.5 + level / 2.0, df)),
      # A per-architecture figure's spread comes from that arch alone.
      'arch_threshold': float(stats.t.ppf(0.5 + level / 2.0, n - 1))}
  for f in FIGURES:
    out[f] = _mean_spread([x[f] for x in figs], n, m)
  out['per_arch'] = {
      a: {f: _mean_spread([x['per_arch'][a][f] for x in figs], n, m)
          for f in ('easy_overlap_ratio', 'spearman')}
      for a in comparer.archs}
  return out


def study_cross_arch(comparer: Comparer, study: Ensemble, m: int,
                     limit: int) -> float | None:
  """The study's cross-architecture agreement at m members per architecture."""
  n = min(len(ids) for ids in study.arch_members.values())
  vals = [comparer.cross_arch(study, idx)
          for idx in member_subsets(study, min(m, n), limit)]
  vals = [v for v in vals if v is not None]
  return float(np.mean(vals)) if vals else None


def departure(value: float | None, control: dict[str, Any], n: int, m: int,
              z_limit: float) -> dict[str, Any]:
  """z of a probe's figure against the control, and whether |z| > z_limit.

  Args:
    value: the probe's figure (m members per architecture).
    control: the control's {'mean', 'spread'} of that figure.
    n: the control's members per architecture.
    m: the probe's members per architecture.
    z_limit: the control summary's ``threshold``.

  ``departs`` is None (undecided) without a control value or spread.
  """
  mean, spread = control.get('mean'), control.get('spread')
  if value is None or mean is None or not spread:
    return {'z': None, 'departs': None}
  z = (value - mean) / (spread * math.sqrt(1.0 + m / n))
  return {'z': float(z), 'departs': bool(abs(z) > z_limit)}


def holm(p_values: Sequence[float], alpha: float) -> tuple[np.ndarray,
                                                          np.ndarray]:
  """Holm's step-down correction of a family of p-values.

  The i-th smallest p-value is compared with alpha / (F - i + 1) (F the
  family size) until the first one that misses; it and every larger one
  stand. The family-wise error rate is at most alpha under any dependence
  between the tests (these share the control's mean and spread).

  Args:
    p_values: the family's p-values.
    alpha: the family-wise level.

  Returns:
    (Holm-adjusted p-values, rejected): float64 and bool arrays in the
    input's order; rejected iff adjusted p <= alpha.
  """
  p = np.asarray(p_values, np.float64)
  f = p.size
  order = np.argsort(p, kind='stable')
  adj_sorted = np.minimum(1.0, np.maximum.accumulate(
      p[order] * (f - np.arange(f))))
  adj = np.empty(f)
  adj[order] = adj_sorted
  return adj, adj <= alpha


def _family(entries: list[tuple[str, dict[str, Any], float]],
            alpha: float) -> dict[str, Any]:
  """Holm over ``entries`` (label, vs_control dict, df); rewrites each."""
  decided = [(label, d, df) for label, d, df in entries
             if d.get('z') is not None]
  p = 2.0 * stats.t.sf(np.abs([d['z'] for _, d, _ in decided]),
                       [df for _, _, df in decided]) if decided else []
  adj, rejected = holm(p, alpha)
  for (_, d, _), pi, ai, ri in zip(decided, p, adj, rejected):
    d['departs_uncorrected'] = d.get('departs')
    d.update(p=float(pi), p_holm=float(ai), departs=bool(ri))
  f = len(decided)
  return {'size': f, 'members': [label for label, _, _ in decided],
          'first_threshold': alpha / f if f else None,
          'departures': int(np.sum(rejected)),
          'departures_uncorrected': int(sum(
              bool(d['departs_uncorrected']) for _, d, _ in decided))}


def correct_verdicts(variants: dict[str, dict[str, Any]], control_name: str,
                     control: dict[str, Any]) -> dict[str, Any]:
  """Holm-corrects every probe's verdicts within their family (in place).

  Two families, each at family-wise level alpha = 1 - ``level``: the
  overall figures (:data:`FIGURES`) of every probe but the control, the
  verdicts the report prints, and the per-architecture figures. A verdict's
  p-value is two-sided from Student's t with the control summary's df
  (G (n - 1) overall, n - 1 per architecture). Each ``vs_control`` entry
  gains ``p``, ``p_holm`` and ``departs_uncorrected``; ``departs`` becomes
  the corrected verdict and ``departs_from_control`` lists the corrected
  departures.

  Args:
    variants: {name: figures with ``vs_control`` and ``per_arch``} (the
      cause probes' results, the control included).
    control_name: the control's name (not a member of any family).
    control: :func:`control_summary`'s output.

  Returns:
    {'method', 'alpha', 'overall': family, 'per_arch': family}, a family
    being {'size' F, 'members', 'first_threshold' (alpha / F: the smallest
    p must reach it for any departure), 'z_first' (the |z| it takes
    overall), 'departures', 'departures_uncorrected'}.
  """
  alpha = 1.0 - float(control['level'])
  n = int(control['members_per_arch'])
  overall, per_arch = [], []
  for name, r in variants.items():
    if name == control_name:
      continue
    overall += [(f'{name}/{f}', r['vs_control'][f], control['df'])
                for f in FIGURES if f in r.get('vs_control', {})]
    for a, p in (r.get('per_arch') or {}).items():
      per_arch += [(f'{name}/{a}/{f}', d, n - 1)
                   for f, d in (p.get('vs_control') or {}).items()]
  out = {'method': 'Holm (step-down), family-wise error rate <= alpha',
         'alpha': alpha, 'overall': _family(overall, alpha),
         'per_arch': _family(per_arch, alpha)}
  fam = out['overall']
  fam['z_first'] = (float(stats.t.ppf(1.0 - fam['first_threshold'] / 2.0,
                                      control['df']))
                    if fam['size'] else None)
  for name, r in variants.items():
    if name != control_name and 'vs_control' in r:
      r['departs_from_control'] = [
          f for f in FIGURES if (r['vs_control'].get(f) or {}).get('departs')]
  return out
