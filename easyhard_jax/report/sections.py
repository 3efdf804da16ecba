"""The report's sections: one table, and the builders of the analysis' ones.

:data:`SECTIONS` lists every section of the page in order as (key, title,
builder): the key is the HTML id (for a later stage, also its directory:
``WORKDIR/<key>/results.json``), the title its heading. :func:`build_section`
gives a builder the loaded study (:class:`easyhard_jax.report.build.Study`:
``analysis`` (a typed ``results.Analysis``), ``scores``, ``scores_test``, ``means``, ``metrics``, images,
``run_config``, ``timings``, ``opts``, ``later``) and an empty section with
that key and title; the builder fills in the explanation, figures and tables.
One whose inputs are missing marks it "not run" with the reason
(``html.not_run``). The builders of the label-issue, reference and later-stage
sections live in their own modules (label_issue_section.py,
reference_section.py, experiment_sections.py).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

import numpy as np

from easyhard_jax.analysis import results as results_lib
from easyhard_jax.report import experiment_sections
from easyhard_jax.report import figures
from easyhard_jax.report import heldout_section
from easyhard_jax.report import html as html_lib
from easyhard_jax.report import label_issue_section
from easyhard_jax.report import reference_section
from easyhard_jax.report import set_rules

Section = html_lib.Section
Figure = html_lib.FigureItem
_NO_ANALYSIS = 'no analysis/analysis.json: run --mode=analysis first'
_num = html_lib.number


def _overview(s: Any, sec: Section) -> Section:
  sec.explanation = (
      'What was trained, which probes define easiness, and how '
      'many examples of each class fell in the easy and hard sets, '
      'under the rule in use and the other one (class-balanced: '
      'k_c of every class; global: the k easiest overall, which '
      'can all be one class).')
  if s.analysis is None:
    return html_lib.not_run(sec, _NO_ANALYSIS)
  a, rec = s.analysis, s.analysis.records
  tr, rule = rec.train, s.analysis.sets.train
  rows = [('members', f"{tr.members} ({', '.join(tr.member_names)})"),
          ('probes (epochs)', ', '.join(f'{e:.3g}' for e in
                                        tr.probe_epochs)),
          ('easiness window (probe epochs)', ', '.join(
              f'{e:.3g}' for e in tr.window_probe_epochs)),
          ('records source', rec.source),
          ('training-pass epochs (fused scores)',
           ', '.join(f'{e:.3g}' for e in tr.fused_epochs or [])
           or 'none'),
          ('set rule', set_rules.rule_text(rule))]
  for split in ('test', 'train'):  # The file's (sorted) order.
    st = getattr(a.sets, split)
    if st is not None:
      rows.append((f'{split}: easy / hard / examples',
                   f'{st.easy_size} / {st.hard_size} / '
                   f'{sum(st.class_sizes)}'))
  other = None if results_lib.skipped(a.other_rule) else a.other_rule.sets
  if other:
    rows.append(('other rule (shown for comparison)',
                 set_rules.rule_text(other)))
    for st in (rule, other):
      word = set_rules.RULE_WORD.get(st.class_rule, '')
      rows.append((f'{word}: largest class share of the easy / hard set',
                   f"{set_rules.share(st, 'easy')} / "
                   f"{set_rules.share(st, 'hard')}"))
  head = ['class', 'train examples', 'easy', 'hard']
  cols = [rule.class_sizes, rule.easy_per_class, rule.hard_per_class]
  if other:
    word = set_rules.RULE_WORD.get(other.class_rule, 'other rule')
    head += [f'easy ({word})', f'hard ({word})']
    cols += [other.easy_per_class, other.hard_per_class]
  per_class = [(c, *v) for c, v in enumerate(zip(*cols))]
  sec.body_html = (html_lib.table(None, rows) + html_lib.table(
      head, per_class, 'Train set sizes per class'))
  return sec


def _class_order(sc: Mapping[str, np.ndarray], c: int, easiest: bool,
                 k: int) -> np.ndarray:
  rows = np.flatnonzero(sc['label'] == c)
  e = sc['easiness'][rows]
  tie = (sc['early_margin'][rows] if 'early_margin' in sc
         else np.zeros_like(e))
  sign = -1.0 if easiest else 1.0
  order = np.lexsort((sign * np.nan_to_num(tie), sign * np.nan_to_num(e)))
  return rows[order[:k]]


def _examples(s: Any, sec: Section) -> Section:
  k, kmax = s.opts['examples_per_class'], s.opts['max_classes']
  sec.explanation = (
      f'The {k} easiest and {k} hardest examples of each class by '
      'easiness (the share of early probes that the members got '
      'right), hardest first in the second grid; a green frame '
      'marks the easy set and a red frame the hard set.')
  if s.analysis is None or s.scores is None:
    return html_lib.not_run(sec, _NO_ANALYSIS)
  if s.train_images is None:
    return html_lib.not_run(sec, 'no train images passed to build_report')
  for split, sc, images in (('train', s.scores, s.train_images),
                            ('test', s.scores_test, s.test_images)):
    if sc is None or images is None:
      continue
    if images.shape[0] != sc['label'].size:
      raise ValueError(f'{split} images have {images.shape[0]} rows but '
                       f'scores_{split}.csv has {sc["label"].size}.')
    classes = np.unique(sc['label'])
    shown = classes[:kmax]
    more = (f' (first {kmax} of {classes.size} classes)'
            if classes.size > kmax else '')
    for easiest, word in ((True, 'easiest'), (False, 'hardest')):
      rows = [sc['example_index'][_class_order(sc, c, easiest, k)]
              for c in shown]
      frames = np.zeros((len(rows), k), int)
      for i, r in enumerate(rows):
        pos = np.searchsorted(sc['example_index'], r)
        frames[i, :len(r)] = np.where(sc['is_easy'][pos] == 1, 1,
                                      np.where(sc['is_hard'][pos] == 1, 2, 0))
      png = figures.example_grid(images, rows, [f'class {c}' for c in shown],
                                 frames, f'{split}: {word} per class')
      sec.figures.append(Figure(f'{split}_{word}', png,
                                f'{split.capitalize()} split, {word} {k} '
                                f'examples per class{more}.'))
  return sec


def _mean_images(s: Any, sec: Section) -> Section:
  sec.explanation = (
      'The pixel-wise mean of the easy, hard and all examples of '
      'each class (n = examples averaged; grey = none): a sharp '
      'easy mean beside a blurred hard mean says easy examples '
      'look alike and hard ones differ.')
  if s.means is None:
    return html_lib.not_run(
        sec, _NO_ANALYSIS if s.analysis is None else
        'no mean_images.npz: the analysis ran without images')
  kmax = s.opts['max_classes']
  for split in ('train', 'test'):
    names = [n for n in ('easy', 'hard', 'all')
             if f'{split}_{n}_mean' in s.means]
    if not names:
      continue
    k = s.means[f'{split}_{names[0]}_mean'].shape[0]
    sec.figures.append(Figure(f'mean_images_{split}', figures.mean_images(
        {n: s.means[f'{split}_{n}_mean'][:kmax] for n in names},
        {n: s.means[f'{split}_{n}_count'][:kmax] for n in names}, split),
        f'First {kmax} of {k} classes.' if k > kmax else ''))
  return sec


def _histogram(s: Any, sec: Section) -> Section:
  sec.explanation = (
      'Histogram of the easiness score on the train and test '
      'splits; dashed lines mark the easiest hard-set and hardest '
      'easy-set score on the train split.')
  if s.scores is None:
    return html_lib.not_run(sec, _NO_ANALYSIS)
  vals = {'train': s.scores['easiness']}
  if s.scores_test is not None:
    vals['test'] = s.scores_test['easiness']
  e, easy, hard = (s.scores['easiness'], s.scores['is_easy'] == 1,
                   s.scores['is_hard'] == 1)
  marks = {}
  if easy.any():
    marks[f'easy set >= {e[easy].min():.3g}'] = float(e[easy].min())
  if hard.any():
    marks[f'hard set <= {e[hard].max():.3g}'] = float(e[hard].max())
  sec.figures.append(Figure('easiness_histogram',
                            figures.score_histogram(vals, marks)))
  summ = (s.analysis.score_summary.train
          if s.analysis.score_summary else {})
  orient = s.analysis.score_orientation or {}
  source = s.analysis.score_source or {}
  rows = [(n, orient.get(n, ''), source.get(n, ''),
           *((None,) * 4 if v is None else (v.mean, v.std, v.min, v.max)))
          for n, v in summ.items()]
  sec.body_html = html_lib.table(
      ['score', 'orientation', 'records', 'mean', 'std', 'min', 'max'], rows,
      'Train scores (records: probe = eval-mode probes; fused = the '
      'training passes, every epoch once; empty = no fused records)')
  return sec


def _agreement(s: Any, sec: Section) -> Section:
  sec.explanation = (
      'How much the easy and hard sets of different architectures '
      'overlap, as a ratio to the overlap two random sets would '
      'have (1 = chance; for class-balanced sets, random sets with '
      'the same number of examples of each class), and the '
      'Spearman correlation of easiness between individual '
      'members. A table repeats the ratios under the other '
      'set rule. The seed-to-seed table compares equal-sized groups of '
      'members: two disjoint groups of one architecture (the ceiling) '
      'against groups of two architectures, with chance as the floor.')
  if s.analysis is None:
    return html_lib.not_run(sec, _NO_ANALYSIS)
  ag = s.analysis.agreement
  ap = ag.arch_pairs
  if isinstance(ap, results_lib.Skipped):
    sec.body_html += html_lib.paragraph(f'Architecture pairs: {ap.reason}.')
  else:
    si = ap.seed_interval or {}
    iv, level = si.get('intervals', {}), si.get('level')
    for which in ('easy', 'hard'):
      sets = getattr(ap, f'{which}_sets')
      ci = iv.get(f'{which}_ratio')
      chance = set_rules.chance_text(sets)
      png = figures.heatmap(
          sets.ratio, ag.archs, f'{which} sets: overlap / chance',
          cbar_label='overlap ratio to chance (1 = chance)', center=1.0,
          vmin=0.0,
          mask_diagonal=True,
          intervals=None if ci is None else (ci['lo'], ci['hi']))
      sec.figures.append(Figure(
          f'agreement_{which}', png,
          f'{which.capitalize()} sets: overlap (|A and B| / min size) '
          f'divided by the chance overlap {chance}'
          + (f'; brackets: {level:.0%} interval over seeds at this '
             'ensemble size (leave-one-seed-out jackknife): it covers '
             'what fresh seeds would change, not example sampling; none '
             'for an architecture with one member.'
             if ci is not None and level else '.')))
  mp = ag.member_pairs
  if isinstance(mp, results_lib.Skipped):  # One member: nothing to compare.
    sec.body_html += html_lib.paragraph(f'Member pairs: {mp.reason}.')
    return sec
  sec.figures.append(Figure('member_spearman', figures.heatmap(
      mp.spearman_easiness, ag.members, 'member easiness Spearman',
      cbar_label='Spearman rho', center=0.0, mask_diagonal=True,
      groups=ag.member_arch), 'Spearman rank correlation of the '
      'per-member easiness; lines separate architectures.'))
  rows = [(k, v.get('same_arch'), v.get('cross_arch'))
          for k, v in (mp.summary or {}).items()]
  rows.append(('chance overlap (easy / hard)',
               set_rules.chance_text(mp.easy_sets),
               set_rules.chance_text(mp.hard_sets)))
  sec.body_html += html_lib.table(['member pairs', 'same arch', 'cross arch'],
                                  rows, 'Mean over member pairs')
  sec.body_html += set_rules.rules_table(s.analysis)
  sec.body_html += set_rules.ceiling_table(s.analysis)
  return sec


def _dist_panels(st: Mapping[str, Any], prefix: str) -> dict[str, Any]:
  panels = {}
  per = [v for v in (st.get('per_class') or {}).values() if v]
  for metric in ('l2', 'cosine'):
    g = st['global'][metric]
    panels[f'{prefix} {metric}: whole split'] = {
        n: {'value': g[n]} for n in ('easy', 'hard', 'random')
        if _num(g.get(n)) is not None}
    pts = {n: [_num(p[metric][n]) for p in per] for n in
           ('easy', 'hard', 'random')}
    pts = {n: [x for x in v if x is not None] for n, v in pts.items()}
    if any(pts.values()):
      classes = f"{len(per)} class{'es' if len(per) != 1 else ''}"
      panels[f'{prefix} {metric}: within class ({classes})'] = {
          n: {'value': float(np.mean(v)), 'err': float(np.std(v)),
              'points': v} for n, v in pts.items() if v}
  return panels


def _distance_sources(sim: results_lib.Similarity
                      ) -> list[tuple[str, Mapping[str, Any]]]:
  return ([('pixels', sim.pixels)] if sim.pixels is not None else []) + [
      (f'features/{k}', v) for k, v in (sim.features or {}).items()]


def _distances(s: Any, sec: Section) -> Section:
  sec.explanation = (
      'Mean pairwise distance inside equal-size easy, hard and '
      'random sets (lower = more alike); within-class bars are the '
      'mean over classes with the std across classes as error bar '
      'and one dot per class.')
  sim = s.analysis and s.analysis.similarity
  if results_lib.skipped(sim):
    return html_lib.not_run(sec, sim.reason if sim else _NO_ANALYSIS)
  sources = _distance_sources(sim)
  rows = []
  for name, st in sources:
    sec.figures.append(Figure(f"distances_{name.replace('/', '_')}",
                              figures.set_bars(_dist_panels(st, name),
                                               'mean pairwise distance')))
  o = s.analysis.other_rule
  other = None if results_lib.skipped(o) else o.similarity
  for sim_r in (sim, other):
    if results_lib.skipped(sim_r):
      continue
    for name, st in _distance_sources(sim_r):
      g = st['global']
      if 'skipped' in g:
        continue
      word = ('class-balanced' if g.get('class_balanced') else 'global')
      for metric in ('l2', 'cosine'):
        m = g[metric]
        rows.append((f'{name} {metric}', word, m.get('easy'), m.get('hard'),
                     m.get('random'), m.get('hard_over_easy')))
  sec.body_html = html_lib.table(
      ['', 'set rule', 'easy', 'hard', 'random', 'hard / easy'], rows,
      'Whole split, both set rules (class-balanced: easy, hard and random '
      'sets with the same class composition, so no difference comes from '
      'class alone; global: the random set is drawn from the whole split)')
  return sec


def _colour_freq(s: Any, sec: Section) -> Section:
  sec.explanation = (
      'Mean pixel intensity per channel and the share of image '
      'energy above the high-frequency cutoff, per set (error bars: '
      'std over the set\'s examples).')
  sim = s.analysis and s.analysis.similarity
  if results_lib.skipped(sim) or sim.colour is None:
    return html_lib.not_run(sec, _NO_ANALYSIS if s.analysis is None else
                            'the analysis ran without images')
  sets = ('easy', 'hard', 'random', 'all')
  colour = {k: v for k, v in sim.colour.items() if v}
  channels = len(next(iter(colour.values()))['mean']) if colour else 0
  panels = {f'channel {c} intensity': {
      n: {'value': colour[n]['mean'][c], 'err': colour[n]['std'][c]}
      for n in sets if n in colour} for c in range(channels)}
  hf = {k: v for k, v in sim.high_frequency.items() if v}
  panels[f'high-frequency energy (cutoff {sim.hf_cutoff})'] = {
      n: {'value': hf[n]['mean'], 'err': hf[n]['std']} for n in sets
      if n in hf}
  sec.figures.append(Figure('colour_frequency',
                            figures.set_bars(panels, '', sets)))
  return sec


def _test_errors(s: Any, sec: Section) -> Section:
  sec.explanation = (
      'The share of each member\'s final test errors that fall in '
      'the test split\'s easy and hard sets (dots: members), '
      'against the share of the test split those sets hold '
      '(dashed: what chance would give).')
  t = s.analysis and s.analysis.test
  if results_lib.skipped(t):
    return html_lib.not_run(sec, t.reason if t else _NO_ANALYSIS)
  bars, rows = {}, []
  for key in ('errors_in_easy', 'errors_in_hard',
              'errors_in_hard_leave_one_out'):
    r = getattr(t, key)
    if results_lib.skipped(r):
      continue
    name = key.replace('errors_in_', '').replace('_', ' ')
    name = name.replace('hard leave one out', 'hard (leave one out)')
    bars[name] = {'value': r.pooled_fraction, 'points': r.fraction,
                  'ref': r.set_share}
    rows.append((name, r.set_share, r.pooled_fraction, r.enrichment))
  sec.figures.append(Figure('test_errors', figures.set_bars(
      {'test errors inside each set': bars}, 'fraction of test errors',
      list(bars), 'share of the test split (chance)'), 'Bars: errors of all '
      'members pooled; "leave one out": each member\'s errors against the hard '
      'set of the other members.'))
  sec.body_html = html_lib.table(
      ['set', 'share of test split', 'share of errors (pooled)',
       'enrichment'], rows, f'Test split: {t.num_examples} examples, '
      f'final probe at epoch {t.final_probe_epoch}')
  return sec


def _learning_curves(s: Any, sec: Section) -> Section:
  sec.explanation = (
      'Train and test accuracy of every member at each probe '
      '(eval mode, no augmentation) and its mean training-pass '
      'loss per epoch; colours are architectures, line styles '
      'seeds.')
  probes = [r for r in s.metrics if r.get('kind') == 'probe']
  epochs = [r for r in s.metrics if r.get('kind') == 'epoch']
  lines: dict[str, dict[str, Any]] = {'train accuracy': {},
                                      'test accuracy': {}}
  groups = {}
  if probes:
    for field, panel in (('train_acc', 'train accuracy'),
                         ('test_acc', 'test accuracy')):
      _member_series(probes, field, lines[panel], groups)
  else:
    acc = s.probe_accuracy() or {}
    for name, v in acc.items():
      groups[name] = v['arch']
      lines['train accuracy'][name] = (v['epochs'], v['train'])
      lines['test accuracy'][name] = (v['epochs'], v['test'])
  if epochs:
    lines['train loss (training pass)'] = {}
    _member_series(epochs, 'train_loss', lines['train loss (training pass)'],
                   groups)
  lines = {k: v for k, v in lines.items() if v}
  if not lines:
    return html_lib.not_run(sec, 'no metrics.jsonl and no probe records')
  sec.figures.append(Figure('learning_curves',
                            figures.member_lines(lines, groups)))
  final = [(n, round(float(y[-1]), 4), round(float(x[-1]), 3))
           for n, (x, y) in lines.get('test accuracy', {}).items()]
  if final:
    sec.body_html = html_lib.table(['member', 'final test accuracy',
                                    'at epoch'], final)
  return sec


def _member_series(rows: list[dict[str, Any]], field: str,
                   out: dict[str, Any], groups: dict[str, str]) -> None:
  for arch in dict.fromkeys(r['arch'] for r in rows):
    mine = sorted((r for r in rows if r['arch'] == arch and field in r),
                  key=lambda r: r['step'])
    if not mine:
      continue
    x = np.asarray([r['epoch'] for r in mine], np.float64)
    y = np.asarray([r[field] for r in mine], np.float64)  # [T, members]
    for m in range(y.shape[1]):
      name = f'{arch}/s{m}'
      groups[name] = arch
      out[name] = (x, y[:, m])


def _config_timings(s: Any, sec: Section) -> Section:
  sec.explanation = (
      'How long each stage took (timings.json) and each '
      'architecture trained (sum of epoch times in metrics.jsonl), '
      'and the run\'s full config.')
  body = []
  if s.timings:
    t = {k: float(v) for k, v in s.timings.items()}
    sec.figures.append(Figure('timings',
                              figures.horizontal_bars(t, 'seconds')))
    body.append(html_lib.table(['stage', 'seconds'], list(t.items()),
                               'Stages'))
  else:
    body.append(html_lib.paragraph('No timings.json in the workdir.'))
  train = {}
  for r in s.metrics:
    if r.get('kind') == 'epoch' and 'seconds' in r:
      train[r['arch']] = train.get(r['arch'], 0.0) + float(r['seconds'])
  if train:
    body.append(html_lib.table(['architecture', 'training seconds'],
                               list(train.items()), 'Training'))
  body.append(html_lib.details('config.json', json.dumps(
      s.run_config, indent=1, sort_keys=True)) if s.run_config is not None
              else html_lib.paragraph('No config.json in the workdir.'))
  sec.body_html = '\n'.join(body)
  return sec


Builder = Callable[[Any, Section], Section]

# The later stages' sections, each drawn from WORKDIR/<key>/results.json.
LATER_STAGES: tuple[tuple[str, str, Builder], ...] = (
    ('removal', 'Removing easy or hard examples', experiment_sections.removal),
    ('compression', 'Dataset compression', experiment_sections.compression),
    ('causes', 'Probing the causes', experiment_sections.causes),
)

# Every section of the page, in page order: (key, title, builder).
SECTIONS: tuple[tuple[str, str, Builder], ...] = (
    ('overview', 'Study and sets', _overview),
    ('examples', 'Easiest and hardest examples', _examples),
    ('mean-images', 'Mean easy and hard image per class', _mean_images),
    ('histogram', 'Easiness distribution', _histogram),
    ('agreement', 'Agreement across architectures', _agreement),
    ('similarity', 'Within-set distances', _distances),
    ('colour-frequency', 'Colour and frequency statistics', _colour_freq),
    ('test-errors', 'Test errors and hard examples', _test_errors),
    ('label-issues', 'Suspected label errors', label_issue_section.build),
    ('learning-curves', 'Learning curves', _learning_curves),
    ('reference', 'Comparison with a published score',
     reference_section.build),
    *LATER_STAGES,
    ('heldout', 'Proxies against held-out ground truth',
     heldout_section.build),
    ('config', 'Config and timings', _config_timings),
)


def build_section(study: Any, key: str) -> Section:
  """The section ``key`` of :data:`SECTIONS`, built (errors propagate).

  Args:
    study: the loaded study (:class:`easyhard_jax.report.build.Study`).
    key: a section key, e.g. 'label-issues'.

  Returns:
    The built section.
  """
  for k, title, build in SECTIONS:
    if k == key:
      return build(study, Section(key, title, ''))
  raise KeyError(f'No report section {key!r}; known: '
                 f'{[k for k, _, _ in SECTIONS]}.')
