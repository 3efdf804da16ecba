"""Set-rule tables of the report: class-balanced against global top-k sets.

The analysis chooses easy and hard sets by one rule (class-balanced by
default) and repeats sets, agreement and similarity under the other
(``analysis.json`` ``other_rule``); these helpers describe both for the
sections and the summary.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from easyhard_jax.report import html as html_lib


_num = html_lib.number


RULE_WORD = {'class_balanced': 'class-balanced', 'global': 'global'}


def rule_text(st: Mapping[str, Any]) -> str:
  """'top_k by easiness, class-balanced, k=[...]' for a sets entry."""
  word = RULE_WORD.get(st.get('class_rule'))
  return (f"{st['rule']} by {st['score']}" + (f', {word}' if word and
                                               st['rule'] == 'top_k' else '')
          + (f", k={st['k']}" if st.get('k') is not None else ''))


def share(st: Mapping[str, Any], which: str) -> str:
  """'100% (class 1)': the share of a set in its largest class."""
  value = _num(st.get(f'{which}_largest_class_share'))
  if value is None:
    return 'n/a'
  return f"{value:.0%} (class {st.get(f'{which}_largest_class')})"


def chance_text(sets: Mapping[str, Any]) -> str:
  """The chance overlap of an overlap matrix's off-diagonal pairs (a range)."""
  m = np.array(sets['chance_overlap'], np.float64)
  off = m[~np.eye(m.shape[0], dtype=bool)] if m.shape[0] > 1 else m.ravel()
  lo, hi = float(np.min(off)), float(np.max(off))
  return f'{lo:.3f}' if math.isclose(lo, hi, rel_tol=1e-3) else (
      f'{lo:.3f}-{hi:.3f}')


def rule_summary(ag: Mapping[str, Any]) -> dict[str, Any]:
  """Mean overlap / chance of one rule's agreement (member and arch pairs)."""
  out = {'rule': RULE_WORD.get(ag.get('set_rule'), ag.get('set_rule')),
         'chance': ag.get('chance')}
  mp = ag.get('member_pairs', {})
  for which in ('easy', 'hard'):
    summ = (mp.get('summary') or {}).get(f'{which}_ratio') or {}
    out[f'member_cross_{which}'] = summ.get('cross_arch')
    out[f'member_same_{which}'] = summ.get('same_arch')
    out[f'chance_{which}'] = (chance_text(mp[f'{which}_sets'])
                              if f'{which}_sets' in mp else None)
    ap = ag.get('arch_pairs', {})
    if f'{which}_sets' in ap:
      r = np.asarray(ap[f'{which}_sets']['ratio'], np.float64)
      out[f'arch_{which}'] = float(np.nanmean(
          r[~np.eye(r.shape[0], dtype=bool)])) if r.shape[0] > 1 else None
    else:
      out[f'arch_{which}'] = None
  return out


def rules_table(a: Mapping[str, Any]) -> str:
  """HTML table of both rules' overlap / chance ('' without other_rule)."""
  other = (a.get('other_rule') or {}).get('agreement')
  if not other:
    return ''
  rows = []
  for ag in (a['agreement'], other):
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


def ceiling_table(a: Mapping[str, Any]) -> str:
  """HTML table: seed-to-seed ceiling, cross-arch agreement and chance.

  One row per set rule, level (members per group) and statistic, from
  ``analysis.json`` ``agreement.ceiling`` (and ``other_rule``'s); '' when
  no architecture has two members.
  """
  rows = []
  other = (a.get('other_rule') or {}).get('agreement')
  for ag in (a['agreement'], other):
    levels = ((ag or {}).get('ceiling') or {}).get('levels') or []
    rule = RULE_WORD.get(ag.get('set_rule'), ag.get('set_rule')) if ag else ''
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
