"""Report sections of the later stages: removal, compression, cause probes.

:func:`removal`, :func:`compression` and :func:`causes` are the builders
that ``sections.SECTIONS`` lists. :func:`curves_section` draws any stage's
``results.json`` that follows the curves contract of
:mod:`easyhard_jax.report`; :func:`causes_section` draws the cause probes'
own results (``experiments/causes.py``) as one figure of grouped bars and a
table, and :func:`causes_summary` gives their headline numbers for
``summary.md``.
"""

from __future__ import annotations

import json
from typing import Any

from easyhard_jax.storage import files
from easyhard_jax.report import figures
from easyhard_jax.report import html as html_lib

Section = html_lib.Section
Figure = html_lib.FigureItem
_RAW_LIMIT = 20000  # Characters of results.json shown in the raw block.
_CHANCE = {'label': 'chance', 'style': ':', 'colour': '#555555'}


def removal(study: Any, sec: Section) -> Section:
  """The removal stage's section: its generic curves."""
  return curves_section(
      study.later[sec.key], sec.key, sec.title,
      'Test accuracy after training without the easiest, the hardest or '
      'random examples, as the fraction removed grows (mean and std over '
      'seeds).')


def compression(study: Any, sec: Section) -> Section:
  """The compression stage's section: its generic curves."""
  return curves_section(
      study.later[sec.key], sec.key, sec.title,
      'Test accuracy of models trained on subsets chosen by easiness against '
      'random subsets of the same size (mean and std over seeds).')


def causes(study: Any, sec: Section) -> Section:
  """The cause probes' section (see :func:`causes_section`)."""
  return causes_section(
      study.later[sec.key], sec.key, sec.title,
      "Whether the study's easy and hard examples stay easy and hard when one "
      'suspected cause is changed (random labels, optimizer and batch size, '
      'low-pass or colour-stripped inputs), and how well each probe learned.')


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
    return html_lib.not_run(sec, f'no {key}/results.json')
  data = files.read_json(path)
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
    sec.figures.append(Figure(f'{key}_{i}', figures.curves(spec),
                              caption.strip()))
  sec.body_html = raw
  return sec


_SHORT = {'easy_overlap_ratio': 'easy overlap',
          'hard_overlap_ratio': 'hard overlap',
          'spearman_easiness': 'Spearman',
          'cross_arch_easy_ratio': 'cross-arch agreement'}


def _band(data, r, field):
  """Half-width of the control's departure band for one figure, or None.

  A probe outside control mean +- band departs (experiments/noise_floor.py):
  departure_z (a t quantile) * spread * sqrt(1 + m / n).
  """
  c = (r.get('control') or {}).get(field) or {}
  ctl = data.get('control') or {}
  n, m = ctl.get('members_per_arch'), data.get('members_per_arch')
  if c.get('spread') is None or not n or not m:
    return None
  # Holm's first step (alpha / F): a probe outside this band departs.
  fam = (data.get('verdicts') or {}).get('overall') or {}
  z = fam.get('z_first') or ctl.get('departure_z', 2.0)
  return float(z) * c['spread'] * (1 + m / n) ** 0.5


def _family_text(data, ctl) -> str:
  """How the verdicts are judged: the family and its thresholds."""
  fam = (data.get('verdicts') or {}).get('overall') or {}
  z, level = ctl.get('departure_z', 2.0), ctl.get('departure_level', 0.95)
  if not fam.get('size'):
    return f'|z| > {z:.3g}, a t quantile at level {level:g}, uncorrected'
  return (f"Holm-corrected over the family of {fam['size']} verdicts of the "
          f'table, family-wise error <= {1 - level:.2g}: outside the bar '
          f"(|z| > {fam['z_first']:.3g}, p < {fam['first_threshold']:.2g}) "
          f'a probe departs; inside it, down to |z| > {z:.3g}, only at a '
          'later Holm step')


def _causes_panels(names, variants, archs, data):
  """The figure's panels: shared sets, rank correlation, agreement, accuracy."""
  v = [variants[n] for n in names]
  many = len(archs) > 1  # Per-architecture dots only say more with >= 2.
  control = data.get('control') or {}
  is_ctl = [n == control.get('name') for n in names]

  def per_arch(field):
    return [[(r.get('per_arch') or {}).get(a, {}).get(field) for a in archs]
            for r in v] if many else None

  def err(field):  # The control's departure band on the control's bar.
    out = [_band(data, r, field) if c else None for r, c in zip(v, is_ctl)]
    return out if any(e is not None for e in out) else None

  def control_line(field):
    r = next((r for r, c in zip(v, is_ctl) if c), None)
    if r is None or r.get(field) is None:
      return []
    return [{'y': r[field], 'label': 'reseed control', 'style': '-.',
             'colour': '#2b8cbe'}]

  panels = [
      {'title': "sets shared with the study's", 'ylabel': 'overlap / chance',
       'series': [
           {'name': 'easy', 'colour': figures.SET_COLOURS['easy'],
            'values': [r.get('easy_overlap_ratio') for r in v],
            'err': err('easy_overlap_ratio'),
            'points': per_arch('easy_overlap_ratio')},
           {'name': 'hard', 'colour': figures.SET_COLOURS['hard'],
            'values': [r.get('hard_overlap_ratio') for r in v],
            'err': err('hard_overlap_ratio')}],
       'lines': [dict(_CHANCE, y=1.0)]},
      {'title': "easiness rank correlation with the study's",
       'ylabel': 'Spearman rho',
       'series': [{'name': 'all members',
                   'values': [r.get('spearman_easiness') for r in v],
                   'err': err('spearman_easiness'),
                   'points': per_arch('spearman')}],
       'lines': control_line('spearman_easiness') + [dict(_CHANCE, y=0.0)]}]
  # Rho on its own scale (up to 1), so a small correlation looks small.
  rhos = [r.get('spearman_easiness') for r in v]
  rhos += [p for pts in per_arch('spearman') or [] for p in pts]
  low = min([0.0] + [x for x in rhos if x is not None])
  panels[1]['ylim'] = (min(-0.2, low - 0.1), 1.0)
  panels[0]['ylim'] = (0.0, None)
  cross = [r.get('cross_arch_easy_ratio') for r in v]
  if any(c is not None for c in cross):
    base = (data.get('baseline') or {}).get('cross_arch_easy_ratio')
    if base is None:  # Files from before the equal-member comparison.
      base = next((r['baseline_cross_arch_easy_ratio'] for r in v
                   if r.get('baseline_cross_arch_easy_ratio') is not None),
                  None)
    lines = [] if base is None else [{'y': base, 'label': 'study'}]
    panels.append({'title': 'easy sets shared across architectures',
                   'ylabel': 'overlap / chance',
                   'series': [{'name': 'within the probe', 'values': cross,
                               'err': err('cross_arch_easy_ratio')}],
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


def _cell(r: dict[str, Any], field: str, control: bool) -> Any:
  """A table cell: the control's mean ± spread, or a probe's value (z)."""
  value = r.get(field)
  if value is None:
    return None
  if control:
    return _pm(value, ((r.get('control') or {}).get(field) or {}).get(
        'spread'))
  z = ((r.get('vs_control') or {}).get(field) or {}).get('z')
  return f'{value:.4g}' + ('' if z is None else f' (z {z:+.2g})')


def _verdict(r: dict[str, Any], control: bool) -> str:
  """Which figures depart from the control beyond the seed spread."""
  if control:
    return 'the control'
  vs = r.get('vs_control')
  if not vs:
    return '-'
  out = [_SHORT[f] for f, d in vs.items() if d.get('departs')]
  if out:
    return ', '.join(out)
  return 'none' if any(d.get('departs') is not None for d in vs.values()) \
      else 'undecided (no spread)'


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
    return html_lib.not_run(sec, f'no {key}/results.json')
  data = files.read_json(path)
  variants = data.get('variants')
  if not isinstance(variants, dict) or not variants:
    return curves_section(path, key, title, explanation)
  names = [r['variant'] for r in data.get('rows') or []
           if r.get('variant') in variants] or list(variants)
  archs = list(data.get('archs') or [])
  ctl = data.get('control') or {}
  m = data.get('members_per_arch') or data.get('seeds')
  with_control = ctl.get('name') in variants
  caption = (
      'One group of bars per cause probe: overlap ratios above the dotted '
      'chance line (1) and a Spearman rho above 0 mean the probe still finds '
      "the study's easy and hard examples, so what it changed does not make "
      'them easy or hard, while the test-accuracy panel shows whether it '
      'still learned (dashed: the study, dotted: chance)'
      + ('; dots: architectures' if len(archs) > 1 else '')
      + ('. The first group is the reseed control (no change, fresh seeds); '
         'its error bar is the band a probe must leave to depart from it '
         f'beyond the seed spread ({_family_text(data, ctl)}). '
         f'Every figure uses {m} member(s) per architecture.'
         if with_control else '.'))
  labels = [f'{n} (control)' if n == ctl.get('name') else n for n in names]
  sec.figures.append(Figure(key, figures.grouped_bars(
      labels, _causes_panels(names, variants, archs, data)), caption))
  base = data.get('baseline') or {}
  rows = []
  for n in names:
    r, is_ctl = variants[n], n == ctl.get('name')
    rows.append((labels[names.index(n)], r.get('epochs'),
                 _cell(r, 'easy_overlap_ratio', is_ctl),
                 _cell(r, 'hard_overlap_ratio', is_ctl),
                 _cell(r, 'spearman_easiness', is_ctl),
                 _cell(r, 'cross_arch_easy_ratio', is_ctl),
                 _pm(r.get('test_acc_mean'), r.get('test_acc_std')),
                 _verdict(r, is_ctl)))
  if base:
    cross = base.get('cross_arch_easy_ratio')
    if cross is None:
      cross = next((variants[n].get('baseline_cross_arch_easy_ratio')
                    for n in names), None)
    rows.append(('study (reference)', base.get('epochs'), None, None, None,
                 cross, _pm(base.get('test_acc_mean'),
                            base.get('test_acc_std')), None))
  chance = _pm(data.get('chance_test_acc'), None)
  note = (f"Architectures {', '.join(archs)}, {m} member(s) each per "
          f'figure; chance test accuracy {chance}')
  if with_control:
    note += (f". Control: {ctl.get('members_per_arch')} members per "
             f"architecture, mean ± seed spread over {ctl.get('subsets')} "
             f'subsets of {m}; probes: value (z against the control). '
             'Every probe trains on its own random stream (independent, '
             'unpaired)')
  body = [html_lib.table(
      ['cause probe', 'epochs', 'easy overlap / chance',
       'hard overlap / chance', 'easiness Spearman',
       'cross-arch easy overlap / chance', 'test accuracy',
       'departs from the control'], rows, note)]
  if len(archs) > 1:
    body.append(html_lib.table(
        ['cause probe', 'architecture', 'easy overlap / chance',
         'easiness Spearman', 'control easy overlap', 'control Spearman'],
        [(n, a, p.get('easy_overlap_ratio'), p.get('spearman'),
          _pm(*_ms(p, 'easy_overlap_ratio')), _pm(*_ms(p, 'spearman')))
         for n in names
         for a, p in (variants[n].get('per_arch') or {}).items()],
        'Per architecture'))
  body.append(html_lib.details(
      'results.json', json.dumps(data, indent=1)[:_RAW_LIMIT]))
  sec.body_html = '\n'.join(body)
  return sec


def _ms(p: dict[str, Any], field: str) -> tuple[Any, Any]:
  c = (p.get('control') or {}).get(field) or {}
  return c.get('mean'), c.get('spread')


def causes_summary(path: str | None) -> list[str]:
  """One Markdown bullet per cause probe (empty when the stage has not run).

  Each probe's bullet says whether it departs from the reseed control beyond
  the seed spread, figure by figure.

  Args:
    path: ``WORKDIR/causes/results.json`` or None.

  Returns:
    Bullet lines for ``summary.md``.
  """
  if path is None:
    return []
  data = files.read_json(path)
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
  ctl = (data.get('control') or {}).get('name')
  fam = (data.get('verdicts') or {}).get('overall') or {}
  out = []
  for name, r in variants.items():
    line = (
        f'{name}: easy sets overlap the study\'s '
        f"{_g(r.get('easy_overlap_ratio'))}x chance (hard "
        f"{_g(r.get('hard_overlap_ratio'))}x), easiness Spearman "
        f"{_g(r.get('spearman_easiness'))}, test accuracy "
        f"{_g(r.get('test_acc_mean'))}{ref}")
    if name == ctl:
      line += ('; this is the reseed control (fresh seeds, no change), the '
               'noise floor of every other probe.')
    elif r.get('vs_control'):
      c = r.get('control') or {}
      line += (f"; reseed control {_g(_cmean(c, 'easy_overlap_ratio'))}x, "
               f"{_g(_cmean(c, 'hard_overlap_ratio'))}x, rho "
               f"{_g(_cmean(c, 'spearman_easiness'))}: ")
      verdict = _verdict(r, False)
      if verdict == 'none':
        line += 'within the seed spread of the control in every figure.'
      elif verdict.startswith('undecided'):
        line += 'no seed spread to judge by.'
      else:
        line += ('departs from the control beyond the seed spread in: '
                 f'{verdict}' + ((' (Holm-corrected over '
                                  f"{fam['size']} verdicts).")
                                 if fam.get('size') else '.'))
    else:
      line += '.'
    out.append(line)
  return out


def _cmean(c: dict[str, Any], field: str) -> Any:
  return (c.get(field) or {}).get('mean')


def _g(x: Any) -> str:
  return 'n/a' if x is None else f'{float(x):.3g}'
