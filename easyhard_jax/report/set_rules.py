"""Set-rule tables of the report: class-balanced against global top-k sets.

The analysis chooses easy and hard sets by one rule (class-balanced by
default) and repeats sets, agreement and similarity under the other
(``analysis.json`` ``other_rule``); these helpers describe both for the
sections and the summary.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from easyhard_jax.analysis import results as results_lib
from easyhard_jax.report import html as html_lib


_num = html_lib.number


RULE_WORD = {'class_balanced': 'class-balanced', 'global': 'global'}


def rule_text(st: results_lib.SetInfo) -> str:
  """'top_k by easiness, class-balanced, k=[...]' for a split's sets."""
  word = RULE_WORD.get(st.class_rule)
  return (f'{st.rule} by {st.score}' + (f', {word}' if word and
                                         st.rule == 'top_k' else '')
          + (f', k={st.k}' if st.k is not None else ''))


def share(st: results_lib.SetInfo, which: str) -> str:
  """'100% (class 1)': the share of a set in its largest class."""
  value = _num(st.largest_class_share(which))
  if value is None:
    return 'n/a'
  return f"{value:.0%} (class {getattr(st, f'{which}_largest_class')})"


def chance_text(sets: results_lib.Overlap) -> str:
  """The chance overlap of an overlap matrix's off-diagonal pairs (a range)."""
  m = np.array(sets.chance_overlap, np.float64)
  off = m[~np.eye(m.shape[0], dtype=bool)] if m.shape[0] > 1 else m.ravel()
  lo, hi = float(np.min(off)), float(np.max(off))
  return f'{lo:.3f}' if math.isclose(lo, hi, rel_tol=1e-3) else (
      f'{lo:.3f}-{hi:.3f}')


def rule_summary(ag: results_lib.Agreement) -> dict[str, Any]:
  """Mean overlap / chance of one rule's agreement (member and arch pairs)."""
  out = {'rule': RULE_WORD.get(ag.set_rule, ag.set_rule),
         'chance': ag.chance}
  mp = ag.member_pairs
  mp = None if results_lib.skipped(mp) else mp
  for which in ('easy', 'hard'):
    summ = ((mp and mp.summary) or {}).get(f'{which}_ratio') or {}
    out[f'member_cross_{which}'] = summ.get('cross_arch')
    out[f'member_same_{which}'] = summ.get('same_arch')
    out[f'chance_{which}'] = (chance_text(getattr(mp, f'{which}_sets'))
                              if mp else None)
    ap = ag.arch_pairs
    if not results_lib.skipped(ap):
      r = np.asarray(getattr(ap, f'{which}_sets').ratio, np.float64)
      out[f'arch_{which}'] = float(np.nanmean(
          r[~np.eye(r.shape[0], dtype=bool)])) if r.shape[0] > 1 else None
    else:
      out[f'arch_{which}'] = None
  return out


def _other_agreement(a: results_lib.Analysis) -> results_lib.Agreement | None:
  o = a.other_rule
  return None if results_lib.skipped(o) else o.agreement


def rules_table(a: results_lib.Analysis) -> str:
  """HTML table of both rules' overlap / chance ('' without other_rule)."""
  other = _other_agreement(a)
  if not other:
    return ''
  rows = []
  for ag in (a.agreement, other):
    r = rule_summary(ag)
    rows.append((r['rule'], r['member_same_easy'], r['member_cross_easy'],
                 r['arch_easy'], r['chance_easy'], r['member_cross_hard'],
                 r['arch_hard'], r['chance_hard']))
  return html_lib.table(
      ['set rule', 'easy ratio, same arch', 'easy ratio, cross arch',
       'easy ratio, arch pairs', 'chance overlap (easy)',
       'hard ratio, cross arch', 'hard ratio, arch pairs',
       'chance overlap (hard)'], rows,
      'Both set rules: overlap / chance (chance for class-balanced sets: '
      'random sets with the same class counts, sum_c k_c^2 / N_c; for '
      'global sets: |A||B| / N). The first row is the rule used above.')


_CEILING_ROWS = (('easy_ratio', 'easy overlap / chance'),
                 ('hard_ratio', 'hard overlap / chance'),
                 ('spearman_easiness', 'easiness Spearman'))


def _pm(mean: Any, sd: Any) -> str | None:
  mean, sd = _num(mean), _num(sd)
  if mean is None:
    return None
  return f'{mean:.3g}' if sd is None else f'{mean:.3g} ± {sd:.2g}'


def ceiling_table(a: results_lib.Analysis) -> str:
  """HTML table: seed-to-seed ceiling, cross-arch agreement and chance.

  One row per set rule, level (members per group) and statistic, from
  ``analysis.json`` ``agreement.ceiling`` (and ``other_rule``'s); '' when
  no architecture has two members.
  """
  rows = []
  other = _other_agreement(a)
  for ag in (a.agreement, other):
    levels = ((ag and ag.ceiling and ag.ceiling.levels) or [])
    rule = RULE_WORD.get(ag.set_rule, ag.set_rule) if ag else ''
    for lv in levels:
      for name, label in _CEILING_ROWS:
        if 'spearman' in name and ag is other:
          continue  # Rule-free: shown once.
        s = lv['summary'][name]
        rows.append((rule if 'spearman' not in name else 'any',
                     lv['members'], label,
                     _pm(s['ceiling'], s['ceiling_sd']),
                     _pm(s['cross_arch'], s['cross_arch_sd']),
                     _num(s['floor']), _num(s['normalized_cross'])))
  if not rows:
    return ''
  return html_lib.table(
      ['set rule', 'members per group', 'statistic',
       'same arch, disjoint groups (ceiling)', 'cross arch', 'chance (floor)',
       'cross on the chance-to-ceiling scale'], rows,
      'Seed-to-seed ceiling at equal member counts: each value compares the '
      'average of h members with the average of h other members, of the '
      'same architecture (ceiling) or of another (cross arch); '
      '± = standard deviation over those pairs of groups (the seed spread). '
      'Last column: (cross - chance) / (ceiling - chance), 0 = chance, '
      '1 = as alike as two seeds of one architecture. The architecture-pair '
      'heatmaps above average all members of each architecture and are not '
      'on this scale.')
