"""The report section of --mode=compare: the study against a published score.

Reads ``WORKDIR/compare/results.json`` (and ``aligned.npz``) written by
:mod:`easyhard_jax.analysis.compare`: a figure of the Spearman
correlations (all examples and the reference's non-saturated part) and the
hard-tail AUROCs of every score, a scatter of the reference against
easiness, and tables (how the reference was aligned, every statistic per
score, easiness per class). :func:`summary` gives the summary.md lines.
"""

from __future__ import annotations

import io
import os
from typing import Any, Mapping

import matplotlib

matplotlib.use('Agg')  # Headless; the Figure object API, as figures.py.
# pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from easyhard_jax.storage import files
from easyhard_jax.report import figures
from easyhard_jax.report import html as html_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

EXPLANATION = (
    "How the study's per-example scores rank examples against a published "
    'per-example score (config.reference): Spearman over every example and '
    "over the reference's non-saturated part, the AUROC of each score's "
    "hardness for the reference's hardest examples (0.5 = chance), and the "
    'overlap of the hardest-k sets as a ratio to hypergeometric chance.')
_HEADLINE = 'easiness'
ORIENTED = ('higher_is_easier', 'higher_is_harder')


def _results(workdir: str) -> tuple[dict[str, Any] | None, str | None]:
  path = os.path.join(workdir, 'compare', 'results.json')
  if not files.exists(path):
    return None, path
  return files.read_json(path), path


def _fmt(v: Any, spec: str = '.3f') -> str:
  return 'n/a' if not isinstance(v, (int, float)) else format(v, spec)


def _ordered(res: Mapping[str, Any]) -> dict[str, Any]:
  """Scores in the analysis CSV's column order (the JSON sorts its keys)."""
  order = res.get('score_order') or list(res['scores'])
  return {k: res['scores'][k] for k in order if k in res['scores']}


def _scored(res: Mapping[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in _ordered(res).items() if 'skipped' not in v}


def _label(name: str, s: Mapping[str, Any]) -> str:
  """A score's name, marked when it has no hard end (Spearman of raw values)."""
  return name if s['orientation'] in ORIENTED else f'{name} (raw)'


def _bars_png(res: Mapping[str, Any]) -> bytes:
  scored = _scored(res)
  names = list(scored)
  sd = max([s['spearman_null_sd'] for s in scored.values()] or [0.0])
  spear = {'title': 'Spearman with the reference (hardness vs hardness)',
           'ylabel': 'Spearman rho', 'series': [
               {'name': 'all examples', 'colour': '#4c72b0',
                'values': [scored[n]['spearman'] for n in names]},
               {'name': 'non-saturated reference', 'colour': '#dd8452',
                'values': [scored[n]['nonsaturated']['spearman']
                           for n in names]}],
           'lines': [{'y': 2 * sd, 'label': '2 sd of rho under independence',
                      'style': ':'}, {'y': 0.0, 'style': '-'}]}
  oriented = [n for n in names if scored[n]['tails'] and
              'auroc' in scored[n]['tails'][0]]
  colours = ('#d1495b', '#8c564b', '#9467bd', '#2a9d4b')
  auc = {'title': "AUROC for the reference's hardest examples",
         'ylabel': 'AUROC', 'ylim': (0.0, 1.0), 'series': [
             {'name': f'hardest {f:.0%}', 'colour': colours[i % 4],
              'values': [scored[n]['tails'][i].get('auroc')
                         if n in oriented else None for n in names]}
             for i, f in enumerate(res['hard_tail_fractions'])],
         'lines': [{'y': 0.5, 'label': 'chance', 'style': ':'}]}
  return figures.grouped_bars([_label(n, scored[n]) for n in names],
                              [spear, auc])


def _scatter_png(ref: np.ndarray, easiness: np.ndarray, key: str) -> bytes:
  fig = Figure(figsize=(4.6, 4.0))
  ax = fig.add_subplot()
  ok = np.isfinite(ref) & np.isfinite(easiness)
  if ok.sum() > 5000:  # Hexbins: a scatter of 50k points is a blot.
    hb = ax.hexbin(ref[ok], easiness[ok], gridsize=40, bins='log',
                   cmap='viridis', mincnt=1)
    fig.colorbar(hb, ax=ax, label='examples (log)')
  else:
    ax.scatter(ref[ok], easiness[ok], s=6, alpha=0.5, color='#4c72b0',
               linewidths=0)
  ax.set_xlabel(f'reference: {key}')
  ax.set_ylabel('easiness (this study)')
  FigureCanvasAgg(fig)
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=110, bbox_inches='tight')
  return buf.getvalue()


def _mapping_table(res: Mapping[str, Any]) -> str:
  r, ns = res['reference'], res['nonsaturated']
  rows = [('file', f"{r['path']} [{r['key']}], {r['orientation']}"),
          ('split / order', f"{r['split']} / {r['order']}"
           + (f" ({r['ids']})" if r.get('ids') else '')),
          ('reference rows / unmatched', f"{r['rows']} / "
           f"{r['unmatched_rows']}"),
          ('examples with a reference value', f"{r['matched']} of "
           f"{r['examples']}")]
  if r.get('hash_salt') is not None:
    chk = r.get('ids_check') or {}
    rows.append(('TFDS hash order (salt)', r['hash_salt']))
    rows.append(('mapping checked against record ids',
                 f"{chk.get('agree', 0)} of {chk.get('checked', 0)} agree"
                 if chk.get('checked') else chk.get('note', 'not checked')))
  chk = r.get('labels_check')
  if chk:
    rows.append(("reference labels equal to the records' after mapping",
                 f"{chk['agree']} of {chk['checked']}"))
  lo, hi = (_fmt(b, '.4g') for b in ns['bounds'])
  rows.append(('non-saturated part', f'reference in ({lo}, {hi}), the '
               f"quantiles {ns['band']} of itself: {ns['examples']} "
               'examples'))
  return html_lib.table(None, rows, 'How the reference was aligned')


def _score_table(res: Mapping[str, Any]) -> str:
  fr = res['hard_tail_fractions']
  header = ['score', 'orientation', 'examples', 'Spearman',
            'Spearman (non-sat.)']
  for f in fr:
    header += [f'AUROC hardest {f:.0%}', f'top {f:.0%} overlap / chance',
               f'top {f:.0%} class-bal. overlap / chance']
  rows = []
  for name, s in _ordered(res).items():
    if 'skipped' in s:
      rows.append([name, s['orientation'], s['skipped']] +
                  [None] * (len(header) - 3))
      continue
    row = [name, s['orientation'], s['examples'], s['spearman'],
           s['nonsaturated']['spearman']]
    for t in s['tails']:
      cells = []
      for key in ('top_k', 'top_k_class_balanced'):
        o = t.get(key)
        cells.append(None if o is None else
                     f"{_fmt(o['overlap'])} / {_fmt(o['chance_overlap'])} "
                     f"({_fmt(o['ratio'], '.2f')}x)")
      row += [t.get('auroc')] + cells
    rows.append(row)
  return html_lib.table(
      header, rows, 'Every score against the reference (hardness oriented; '
      'chance: global k^2 / n, class-balanced sum_c k_c^2 / n_c)')


def _class_table(res: Mapping[str, Any], name: str) -> str:
  s = _scored(res).get(name)
  if not s:
    return ''
  fr = res['hard_tail_fractions']
  rows = [[c['class'], c['examples'], c['spearman']] +
          list(c.get('auroc') or [None] * len(fr)) for c in s['per_class']]
  return html_lib.table(['class', 'examples', 'Spearman'] +
                        [f'AUROC hardest {f:.0%} (global tail)' for f in fr],
                        rows, f'{name} per class')


def build(study: Any, sec: html_lib.Section) -> html_lib.Section:
  """Fills in the section from ``study.workdir``'s compare outputs.

  Args:
    study: the report's :class:`easyhard_jax.report.build.Study` (only
      ``workdir`` and ``scores`` are read).
    sec: the empty section (key and title from ``sections.SECTIONS``).

  Returns:
    The section; "not run" when ``WORKDIR/compare/results.json`` is absent.
  """
  sec.explanation = EXPLANATION
  res, path = _results(study.workdir)
  if res is None:
    return html_lib.not_run(sec, f'no {os.path.relpath(path, study.workdir)}'
                            ': run --mode=compare with config.reference.path'
                            ' set')
  sec.figures.append(html_lib.FigureItem(
      'reference_bars', _bars_png(res),
      'Left: Spearman of each score with the reference (dotted: twice the '
      'standard deviation of rho for independent scores). Right: AUROC of '
      "each score's hardness for the reference's hardest examples."))
  aligned = os.path.join(study.workdir, 'compare', 'aligned.npz')
  scores = getattr(study, 'scores', None)
  if files.exists(aligned) and scores is not None and _HEADLINE in scores:
    with files.np_load(aligned) as z:
      ref = z['reference']
    if ref.shape == scores[_HEADLINE].shape:
      sec.figures.append(html_lib.FigureItem(
          'reference_scatter', _scatter_png(ref, scores[_HEADLINE],
                                            res['reference']['key']),
          'Each example: the reference score against easiness.'))
  sec.body_html = (_mapping_table(res) + _score_table(res) +
                   _class_table(res, _HEADLINE))
  return sec


def summary(workdir: str) -> list[str]:
  """summary.md lines: the headline comparison, or [] when not run."""
  res, _ = _results(workdir)
  if res is None:
    return []
  r = res['reference']
  s = _scored(res).get(_HEADLINE)
  out = [f"Reference {os.path.basename(r['path'])} [{r['key']}] "
         f"({r['order']} order): {r['matched']} of {r['examples']} "
         f"{r['split']} examples matched."]
  if s:
    ratio = lambda t: (t.get('top_k_class_balanced') or {}).get('ratio')
    tails = ', '.join(
        f"hardest {t['fraction']:.0%}: AUROC {_fmt(t.get('auroc'))}, "
        f"top-k {_fmt(ratio(t), '.2f')}x chance" for t in s['tails'])
    out.append(f"Easiness vs reference: Spearman {_fmt(s['spearman'])} "
               f"(non-saturated part: {_fmt(s['nonsaturated']['spearman'])}, "
               f"{s['nonsaturated']['examples']} examples); {tails}.")
  return out
