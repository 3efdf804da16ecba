"""Report sections of the later stages: removal, compression, cause probes.

:func:`curves_section` draws any stage's ``results.json`` that follows the
curves contract of :mod:`easyhard_jax.report`; :func:`causes_section` draws
the cause probes' own results (``experiments/causes.py``) as one figure of
grouped bars and a table, and :func:`causes_summary` gives their headline
numbers for ``summary.md``.
"""

from __future__ import annotations

import json
from typing import Any

from easyhard_jax.report import figures
from easyhard_jax.report import html as html_lib

Section = html_lib.Section
_RAW_LIMIT = 20000  # Characters of results.json shown in the raw block.
_CHANCE = {'label': 'chance', 'style': ':', 'colour': '#555555'}


def _not_run(sec: Section, note: str) -> Section:
  sec.status, sec.note = html_lib.STATUS_NOT_RUN, note
  return sec


def _fig(name: str, png: bytes, caption: str = '') -> html_lib.FigureItem:
  return html_lib.FigureItem(name, png, caption)


def curves_section(path: str | None, key: str, title: str,
                   explanation: str) -> Section:
  """A section of generic curves from a later stage's ``results.json``.

  Args:
    path: the JSON file (see the package docstring), or None when the stage
      has not run.
    key: section id (the stage name).
    title: heading.
    explanation: the sentence used unless the JSON has a ``description``.

  Returns:
    The section.
  """
  sec = Section(key, title, explanation)
  if path is None:
    return _not_run(sec, f'no {key}/results.json')
  with open(path) as f:
    data = json.load(f)
  sec.explanation = data.get('description') or explanation
  raw = html_lib.details('results.json',
                         json.dumps(data, indent=1)[:_RAW_LIMIT])
  if 'curves' not in data and 'panels' not in data:
    # A stage that predates the contract: show its rows, not an error.
    sec.body_html = html_lib.paragraph(
        'results.json has no "curves" (the report contract: see '
        'easyhard_jax.report); its rows and raw content follow.')
    rows = data.get('rows')
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
      cols = [k for k, v in rows[0].items()
              if isinstance(v, (str, int, float, type(None)))]
      sec.body_html += html_lib.table(cols, [[r.get(c) for c in cols]
                                             for r in rows])
    sec.body_html += raw
    return sec
  for i, spec in enumerate(data.get('panels') or [data]):
    if not isinstance(spec.get('curves'), list) or not spec['curves']:
      raise ValueError(f'{path}: a panel needs a non-empty "curves" list.')
    for c in spec['curves']:
      if len(c['x']) != len(c['mean']) or (
          c.get('std') is not None and len(c['std']) != len(c['x'])):
        raise ValueError(f"{path}: curve {c.get('name')!r} has x, mean and "
                         'std of different lengths.')
    caption = spec.get('caption') or ''
    if spec.get('reference') is not None:
      label = spec.get('reference_label') or 'reference'
      caption += f" Dashed: {label} = {float(spec['reference']):.4g}."
    sec.figures.append(_fig(f'{key}_{i}', figures.curves(spec),
                            caption.strip()))
  sec.body_html = raw
  return sec




def _causes_panels(names, variants, archs, data):
  """The figure's panels: shared sets, rank correlation, agreement, accuracy."""
  v = [variants[n] for n in names]
  many = len(archs) > 1  # Per-architecture dots only say more with >= 2.

  def per_arch(field):
    return [[(r.get('per_arch') or {}).get(a, {}).get(field) for a in archs]
            for r in v] if many else None

  panels = [
      {'title': "sets shared with the study's", 'ylabel': 'overlap / chance',
       'series': [
           {'name': 'easy', 'colour': figures.SET_COLOURS['easy'],
            'values': [r.get('easy_overlap_ratio') for r in v],
            'points': per_arch('easy_overlap_ratio')},
           {'name': 'hard', 'colour': figures.SET_COLOURS['hard'],
            'values': [r.get('hard_overlap_ratio') for r in v]}],
       'lines': [dict(_CHANCE, y=1.0)]},
      {'title': "easiness rank correlation with the study's",
       'ylabel': 'Spearman rho',
       'series': [{'name': 'all members',
                   'values': [r.get('spearman_easiness') for r in v],
                   'points': per_arch('spearman')}],
       'lines': [dict(_CHANCE, y=0.0)]}]
  # Rho on its own scale (up to 1), so a small correlation looks small.
  rhos = [r.get('spearman_easiness') for r in v]
  rhos += [p for pts in per_arch('spearman') or [] for p in pts]
  low = min([0.0] + [x for x in rhos if x is not None])
  panels[1]['ylim'] = (min(-0.2, low - 0.1), 1.0)
  panels[0]['ylim'] = (0.0, None)
  cross = [r.get('cross_arch_easy_ratio') for r in v]
  if any(c is not None for c in cross):
    base = next((r['baseline_cross_arch_easy_ratio'] for r in v
                 if r.get('baseline_cross_arch_easy_ratio') is not None), None)
    lines = [] if base is None else [{'y': base, 'label': 'study'}]
    panels.append({'title': 'easy sets shared across architectures',
                   'ylabel': 'overlap / chance',
                   'series': [{'name': 'within the probe', 'values': cross}],
                   'lines': lines + [dict(_CHANCE, y=1.0)]})
  lines = []
  if (data.get('baseline') or {}).get('test_acc_mean') is not None:
    lines.append({'y': data['baseline']['test_acc_mean'], 'label': 'study'})
  if data.get('chance_test_acc') is not None:
    lines.append(dict(_CHANCE, y=data['chance_test_acc']))
  panels.append({'title': 'test accuracy', 'ylabel': 'test accuracy',
                 'series': [{'name': 'probe (std over members)',
                             'values': [r.get('test_acc_mean') for r in v],
                             'err': [r.get('test_acc_std') for r in v]}],
                 'lines': lines})
  return panels


def _pm(mean: Any, std: Any) -> str:
  if mean is None:
    return '-'
  return f'{mean:.4g}' + ('' if std is None else f' ± {std:.2g}')


def causes_section(path: str | None, key: str, title: str,
                   explanation: str) -> Section:
  """The cause probes' section: one grouped-bar figure and a table.

  Args:
    path: ``WORKDIR/causes/results.json`` as ``experiments/causes.py``
      writes it, or None when the stage has not run. A file in the curves
      contract instead is drawn by :func:`curves_section`.
    key: section id.
    title: heading.
    explanation: the section's one-sentence explanation.

  Returns:
    The section.
  """
  sec = Section(key, title, explanation)
  if path is None:
    return _not_run(sec, f'no {key}/results.json')
  with open(path) as f:
    data = json.load(f)
  variants = data.get('variants')
  if not isinstance(variants, dict) or not variants:
    return curves_section(path, key, title, explanation)
  names = [r['variant'] for r in data.get('rows') or []
           if r.get('variant') in variants] or list(variants)
  archs = list(data.get('archs') or [])
  caption = (
      'One group of bars per cause probe: overlap ratios above the dotted '
      'chance line (1) and a Spearman rho above 0 mean the probe still finds '
      "the study's easy and hard examples, so what it changed does not make "
      'them easy or hard, while the test-accuracy panel shows whether it '
      'still learned (dashed: the study, dotted: chance)'
      + ('; dots: architectures.' if len(archs) > 1 else '.'))
  sec.figures.append(_fig(key, figures.grouped_bars(
      names, _causes_panels(names, variants, archs, data)), caption))
  base = data.get('baseline') or {}
  rows = [(n, r.get('epochs'), r.get('easy_overlap_ratio'),
           r.get('hard_overlap_ratio'), r.get('spearman_easiness'),
           r.get('cross_arch_easy_ratio'),
           _pm(r.get('test_acc_mean'), r.get('test_acc_std')))
          for n, r in ((n, variants[n]) for n in names)]
  if base:
    rows.append(('study (reference)', base.get('epochs'), None, None, None,
                 next((variants[n].get('baseline_cross_arch_easy_ratio')
                       for n in names), None),
                 _pm(base.get('test_acc_mean'), base.get('test_acc_std'))))
  body = [html_lib.table(
      ['cause probe', 'epochs', 'easy overlap / chance',
       'hard overlap / chance', 'easiness Spearman',
       'cross-arch easy overlap / chance', 'test accuracy'], rows,
      f"Architectures {', '.join(archs)}, {data.get('seeds')} seed(s) each; "
      f"chance test accuracy {_pm(data.get('chance_test_acc'), None)}")]
  if len(archs) > 1:
    body.append(html_lib.table(
        ['cause probe', 'architecture', 'easy overlap / chance',
         'easiness Spearman'],
        [(n, a, p.get('easy_overlap_ratio'), p.get('spearman'))
         for n in names
         for a, p in (variants[n].get('per_arch') or {}).items()],
        'Per architecture'))
  body.append(html_lib.details(
      'results.json', json.dumps(data, indent=1)[:_RAW_LIMIT]))
  sec.body_html = '\n'.join(body)
  return sec


def causes_summary(path: str | None) -> list[str]:
  """One Markdown bullet per cause probe (empty when the stage has not run).

  Args:
    path: ``WORKDIR/causes/results.json`` or None.

  Returns:
    Bullet lines for ``summary.md``.
  """
  if path is None:
    return []
  with open(path) as f:
    data = json.load(f)
  variants = data.get('variants')
  if not isinstance(variants, dict):
    return []
  refs = []
  base = (data.get('baseline') or {}).get('test_acc_mean')
  if base is not None:
    refs.append(f'study {_g(base)}')
  if data.get('chance_test_acc') is not None:
    refs.append(f"chance {_g(data['chance_test_acc'])}")
  ref = f" ({', '.join(refs)})" if refs else ''
  out = []
  for name, r in variants.items():
    out.append(
        f'{name}: easy sets overlap the study\'s '
        f"{_g(r.get('easy_overlap_ratio'))}x chance (hard "
        f"{_g(r.get('hard_overlap_ratio'))}x), easiness Spearman "
        f"{_g(r.get('spearman_easiness'))}, test accuracy "
        f"{_g(r.get('test_acc_mean'))}{ref}.")
  return out


def _g(x: Any) -> str:
  return 'n/a' if x is None else f'{float(x):.3g}'
