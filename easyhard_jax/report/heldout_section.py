"""The report section of --mode=heldout: every proxy against held-out truth.

Reads ``WORKDIR/heldout/results.json`` (experiments/heldout.py): how many
members held each example out and the standard error that gives, a figure of
every proxy score's Spearman with the held-out C-score estimate and its
AUROC for C-score < 0.5, with the estimate's own between-halves ceiling
drawn across both panels, and tables (proxies with their top-k overlaps,
the ceiling, the published reference when compared). :func:`summary` gives
the summary.md lines.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from easyhard_jax import fingerprint
from easyhard_jax.report import figures
from easyhard_jax.report import html as html_lib
from easyhard_jax.storage import files

EXPLANATION = (
    'Held-out ground truth from members trained on random subsets: an '
    "example's consistency is the accuracy of the members that did not "
    'train on it, the C-score estimate its mean over subset ratios (Jiang et '
    'al. 2021), memorization the accuracy of those that did minus those '
    'that did not (Feldman & Zhang 2020). Every proxy score of the analysis '
    'is judged against the C-score; the ceiling is the same judgement of one '
    'half of the held-out members against the other half.')
_HEADLINE = 'easiness'


def _results(workdir: str) -> dict[str, Any] | None:
  path = os.path.join(workdir, 'heldout', 'results.json')
  if not files.exists(path):
    return None
  with files.open_file(path) as f:
    return json.load(f)


def _fmt(v: Any, spec: str = '.3f') -> str:
  return 'n/a' if not isinstance(v, (int, float)) else format(v, spec)


def _scored(res: Mapping[str, Any]) -> dict[str, Any]:
  p = res.get('proxies') or {}
  if 'scores' not in p:
    return {}
  order = p.get('score_order') or list(p['scores'])
  return {k: p['scores'][k] for k in order
          if k in p['scores'] and 'skipped' not in p['scores'][k]}


def _bars_png(res: Mapping[str, Any]) -> bytes:
  scored = _scored(res)
  names = list(scored)
  ceil = res['ceiling']
  below = lambda s: (s.get('below_half') or {}).get('auroc')
  lines_rho = [{'y': 0.0, 'style': '-'}]
  if ceil.get('spearman') is not None:
    lines_rho.append({'y': ceil['spearman'], 'style': '--',
                      'label': 'half vs half (ceiling)'})
  if ceil.get('perfect_proxy_spearman') is not None:
    lines_rho.append({'y': ceil['perfect_proxy_spearman'], 'style': ':',
                      'label': 'exact C-score vs estimate'})
  lines_auc = [{'y': 0.5, 'label': 'chance', 'style': ':'}]
  if below(ceil) is not None:
    lines_auc.append({'y': below(ceil), 'style': '--',
                      'label': 'half vs half (ceiling)'})
  return figures.grouped_bars(names, [
      {'title': 'Spearman with the held-out C-score (hardness)',
       'ylabel': 'Spearman rho', 'lines': lines_rho,
       'series': [{'name': 'all examples', 'colour': '#4c72b0',
                   'values': [scored[n]['spearman'] for n in names]}]},
      {'title': 'AUROC for C-score < 0.5', 'ylabel': 'AUROC',
       'ylim': (0.0, 1.0), 'lines': lines_auc,
       'series': [{'name': 'C-score < 0.5', 'colour': '#d1495b',
                   'values': [below(scored[n]) for n in names]}]}])


def _counts_table(res: Mapping[str, Any]) -> str:
  rows = [[c['ratio'], c['members'], c['expected_heldout_per_example'],
           c['heldout_count_mean'], c['heldout_count_min'],
           c['never_heldout'], c['consistency_mean'],
           c['consistency_se_mean'], c['worst_case_se_mean'],
           c['memorization_mean'],
           res['test_accuracy'].get(f"r{c['ratio']:g}")]
          for c in res['counts']]
  return html_lib.table(
      ['ratio r', 'members', 'expected held out / example',
       'held out (mean)', 'held out (min)', 'never held out',
       'consistency (mean)', 'binomial se (mean)', 'worst-case se 0.5/sqrt(n)',
       'memorization (mean)', 'member test acc.'], rows,
      'Held-out members per example and the resulting standard error')


def _proxy_table(res: Mapping[str, Any]) -> str:
  fr = res['hard_tail_fractions']
  header = ['score', 'examples', 'Spearman', 'AUROC C < 0.5']
  for f in fr:
    header += [f'AUROC hardest {f:.0%}', f'top {f:.0%} overlap / chance',
               f'top {f:.0%} class-bal. / chance']

  def row(name, s):
    cells = [name, s.get('examples'), s.get('spearman'),
             (s.get('below_half') or {}).get('auroc')]
    for t in s.get('tails') or []:
      cells.append(t.get('auroc'))
      for key in ('top_k', 'top_k_class_balanced'):
        o = t.get(key)
        cells.append(None if o is None else
                     f"{_fmt(o['overlap'])} / {_fmt(o['chance_overlap'])} "
                     f"({_fmt(o['ratio'], '.2f')}x)")
    return cells + [None] * (len(header) - len(cells))

  rows = [row(n, s) for n, s in _scored(res).items()]
  if 'skipped' not in res['ceiling']:
    rows.append(row('ceiling: half vs half', res['ceiling']))
  return html_lib.table(header, rows, 'Every proxy (hardness) against the '
                        'held-out C-score estimate, and the ceiling')


def _class_table(res: Mapping[str, Any]) -> str:
  s = _scored(res).get(_HEADLINE)
  if not s:
    return ''
  below = {c['class']: c for c in s['below_half']['per_class']}
  rows = [[c['class'], c['examples'], c['spearman'],
           below.get(c['class'], {}).get('positives'),
           below.get(c['class'], {}).get('auroc')] for c in s['per_class']]
  return html_lib.table(['class', 'examples', 'Spearman',
                         'C-score < 0.5', 'AUROC C < 0.5'], rows,
                        f'{_HEADLINE} against the C-score per class')


def _reference_table(res: Mapping[str, Any]) -> str:
  ref = res.get('reference')
  if not ref:
    return ''
  r = ref['reference']
  rows = []
  for name, s in ref['columns'].items():
    if 'skipped' in s:
      rows.append([name, s['skipped'], None, None, None, None])
      continue
    rows.append([name, s['examples'], s['spearman'],
                 s['spearman_reference_below_one'],
                 s['below_half']['auroc'], s.get('mean_se')])
  return html_lib.table(
      ['estimate', 'examples', 'Spearman', 'Spearman (reference < 1)',
       'AUROC reference < 0.5', 'mean se'], rows,
      f"This run's estimates against {os.path.basename(r['path'])} "
      f"[{r['key']}] ({r['order']} order, {r['matched']} of "
      f"{r['examples']} matched)")


def build(study: Any, sec: html_lib.Section) -> html_lib.Section:
  """Fills in the section from ``study.workdir``'s heldout outputs.

  Args:
    study: the report's Study (only ``workdir`` is read).
    sec: the empty section.

  Returns:
    The section; "not run" when ``WORKDIR/heldout/results.json`` is absent.
  """
  sec.explanation = EXPLANATION
  res = _results(study.workdir)
  if res is None:
    return html_lib.not_run(sec, 'no heldout/results.json: run '
                            '--mode=heldout (or set config.stages.heldout)')
  body = [_counts_table(res)]
  c = res['cscore']
  body.append(html_lib.paragraph(
      f"C-score estimated for {c['examples']} of {res['num_train']} examples "
      f"({c['missing']} never held out: NaN, count 0); mean "
      f"{_fmt(c['mean'])}, mean standard error {_fmt(c['se_mean'])}; "
      f"{c['below_half']} below 0.5."))
  proxies = res.get('proxies') or {}
  if 'skipped' in proxies:
    body.append(html_lib.paragraph(f"Proxies not judged: {proxies['skipped']}"
                                   '.'))
  else:
    now = (fingerprint.read_stamp(study.workdir, 'analysis') or {}).get('hash')
    if proxies.get('analysis_stamp') != now:
      sec.note = ('The proxies were judged against an earlier analysis; '
                  'rerun --mode=heldout (its members are kept) to update.')
    if _scored(res):
      sec.figures.append(html_lib.FigureItem(
          'heldout_bars', _bars_png(res),
          'Left: Spearman of each proxy\'s hardness with the held-out '
          'C-score hardness (dashed: one half of the held-out members '
          'against the other; dotted: the exact C-score against this '
          'estimate, by Spearman-Brown). Right: AUROC for C-score < 0.5.'))
    body.append(_proxy_table(res))
    body.append(_class_table(res))
  body.append(_reference_table(res))
  sec.body_html = '\n'.join(b for b in body if b)
  return sec


def summary(workdir: str) -> list[str]:
  """summary.md lines: the headline judgement, or [] when not run."""
  res = _results(workdir)
  if res is None:
    return []
  c, ceil = res['cscore'], res['ceiling']
  out = [f"Held-out C-score for {c['examples']} of {res['num_train']} "
         f"examples (mean se {_fmt(c['se_mean'])}); between-halves Spearman "
         f"{_fmt(ceil.get('spearman'))}, AUROC C < 0.5 "
         f"{_fmt((ceil.get('below_half') or {}).get('auroc'))}."]
  s = _scored(res).get(_HEADLINE)
  if s:
    out.append(f"Easiness vs held-out C-score: Spearman {_fmt(s['spearman'])}"
               f", AUROC C < 0.5 {_fmt(s['below_half']['auroc'])}.")
  return out
