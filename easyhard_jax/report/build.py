"""Builds ``WORKDIR/report`` from a study workdir.

:func:`build_report` reads what the stages left in the workdir (analysis
outputs, ``metrics.jsonl``, records, ``config.json``, ``timings.json`` and
the later stages' ``results.json``) into a :class:`Study`, builds every
section of ``sections.SECTIONS`` in order, and writes ``index.html``,
``summary.md`` and ``figures/*.png``. Every section is built on its own: one
whose inputs are missing says "not run" (and why), one that fails says
"error" with the exception, and the rest of the report is still written.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from absl import logging
import numpy as np

from easyhard_jax import config_fields
from easyhard_jax.storage import files
from easyhard_jax.storage import records as records_lib
from easyhard_jax.analysis import score_store
from easyhard_jax.analysis import results as results_lib
from easyhard_jax.report import experiment_sections
from easyhard_jax.report import heldout_section
from easyhard_jax.report import html as html_lib
from easyhard_jax.report import reference_section
from easyhard_jax.report import sections
from easyhard_jax.report import set_rules

_DEFAULTS = {'examples_per_class': 8, 'max_classes': 20}


def _report_options(config: Any) -> dict[str, int]:
  opts = dict(_DEFAULTS)
  rc = None
  try:
    rc = config.get('report') if config is not None else None
  except AttributeError:
    pass
  for k in opts:
    if rc is not None and k in rc:
      opts[k] = int(rc[k])
  return opts


def _read_json(path: str) -> Any:
  return files.read_json(path)  # Names the file and the fix when damaged.


def read_scores(path: str) -> dict[str, np.ndarray]:
  """A scores CSV of the analysis stage as columns (``score_store.read_scores_csv``).

  Args:
    path: ``scores_train.csv`` or ``scores_test.csv``.

  Returns:
    {column: array}; numeric columns are float64 (``nan`` kept),
    ``example_index``, ``label``, ``is_easy`` and ``is_hard`` are int64, and
    ``tfds_id`` stays a string array. A damaged file is read as it is (its
    sections show the damage); only the analysis stage's readers refuse it.
  """
  return score_store.read_scores_csv(path, strict=False)


def _as_images(images: Any) -> Any:
  """Arrays as numpy; streamed LazyImages stay lazy (the grids index them)."""
  if images is None or (hasattr(images, 'shape') and
                        hasattr(images, '__getitem__')):
    return images
  return np.asarray(images)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The rows of ``WORKDIR/metrics.jsonl``, one per (arch, kind, step).

  A resumed run appends again the rows of the steps it redid; the last one
  of each (arch, kind, step) wins. Unparseable lines (a run killed while
  writing) are skipped.

  Args:
    workdir: the study workdir.

  Returns:
    Rows in first-seen order; empty when the file does not exist.
  """
  path = os.path.join(workdir, 'metrics.jsonl')
  if not files.exists(path):
    return []
  rows: dict[tuple, dict[str, Any]] = {}
  with files.open_file(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(row, dict):
        rows[(row.get('arch'), row.get('kind'), row.get('step'))] = row
  return list(rows.values())


class Study:
  """Everything read from the workdir, loaded once and shared by sections."""

  def __init__(self, config: Any, workdir: str, train_images: Any,
               test_images: Any):
    self.config, self.workdir = config, workdir
    self.train_images = _as_images(train_images)
    self.test_images = _as_images(test_images)
    self.opts = _report_options(config)
    adir = os.path.join(workdir, 'analysis')
    self.analysis = self.scores = None
    self.scores_test = self.means = None
    path = os.path.join(adir, 'analysis.json')
    if files.exists(path):
      self.analysis = results_lib.Analysis.from_json(_read_json(path))
      # The one score artifact (score_store); an analysis written before it
      # existed has only the CSV, which is shown as it is.
      for attr, split in (('scores', 'train'), ('scores_test', 'test')):
        if files.exists(score_store.analysis_scores_path(workdir, split)):
          setattr(self, attr, score_store.load_analysis_scores(workdir,
                                                               split))
        elif files.exists(os.path.join(adir, f'scores_{split}.csv')):
          setattr(self, attr, read_scores(
              os.path.join(adir, f'scores_{split}.csv')))
      p = os.path.join(adir, 'mean_images.npz')
      if files.exists(p):
        with files.np_load(p) as z:
          self.means = {k: z[k] for k in z.files}
    self.metrics = read_metrics(workdir)
    self.run_config = self._run_config()
    p = os.path.join(workdir, 'timings.json')
    self.timings = _read_json(p) if files.exists(p) else None
    self.later = {}  # {stage: its results.json, or None when not run}
    for name, _, _ in sections.LATER_STAGES:
      p = os.path.join(workdir, name, 'results.json')
      self.later[name] = p if files.exists(p) else None

  def _run_config(self) -> Any:
    p = os.path.join(self.workdir, 'config.json')
    if files.exists(p):
      try:
        return _read_json(p)
      except ValueError as e:  # Damaged: show the running config instead.
        logging.warning('%s', e)
    if self.config is not None and hasattr(self.config, 'to_json_best_effort'):
      return json.loads(self.config.to_json_best_effort())
    return None

  def probe_accuracy(self) -> dict[str, Any] | None:
    """{member: {'epochs', 'train', 'test'}} from the probe records."""
    try:
      archs = (config_fields.arch_list(self.config) if self.config is not
               None and 'archs' in self.config else None)
      tr = records_lib.load(self.workdir, 'train', 'probe', archs=archs,
                            complete_only=False)
      te = records_lib.load(self.workdir, 'test', 'probe', archs=archs,
                            complete_only=False)
    except (FileNotFoundError, ValueError, KeyError) as e:
      logging.info('No probe records for the learning curves: %s', e)
      return None
    p = min(tr.correct.shape[1], te.correct.shape[1])
    return {m['name']: {'arch': m['arch'], 'epochs': tr.probe_epochs[:p],
                        'train': tr.correct[i, :p].mean(-1),
                        'test': te.correct[i, :p].mean(-1)}
            for i, m in enumerate(tr.members)}

  def subtitle(self) -> str:
    c = self.run_config or {}
    parts = [f"dataset {c.get('dataset', '?')}"]
    r = self.analysis and self.analysis.records
    if r:
      parts.append(f"{r.train.members} members ({', '.join(r.train.archs)})")
      parts.append(f'{r.train.examples} train examples')
    parts.append(f'workdir {self.workdir}')
    parts.append(time.strftime('built %Y-%m-%d %H:%M'))
    return ' | '.join(parts)


def _guarded(study: Study, key: str, title: str,
             build: sections.Builder) -> html_lib.Section:
  """The section built, or one that says "error" and why."""
  try:
    return build(study, html_lib.Section(key, title, ''))
  except Exception as e:  # pylint: disable=broad-except
    # One broken input must not cost the user the rest of the report.
    logging.exception('Report section %s failed.', key)
    return html_lib.Section(key, title, 'This section could not be built.',
                            status=html_lib.STATUS_ERROR,
                            note=f'{type(e).__name__}: {e}')


def _fmt(x: Any, spec: str = '.3g') -> str:
  try:
    v = float(x)
  except (TypeError, ValueError):
    return 'n/a'
  return format(v, spec) if math.isfinite(v) else 'n/a'


def summary_blocks(study: Study) -> list[tuple[str, list[str]]]:
  """Headline findings as (heading, bullets) for summary.md.

  Args:
    study: the loaded study.

  Returns:
    Blocks of Markdown bullet lines; empty where the stage has not run.
  """
  a = study.analysis
  if a is None:
    return [('Findings', ['The analysis stage has not run: no easiness, '
                          'sets or agreement yet.'])]
  sets = a.sets.train
  out = [f'Train: {sets.easy_size} easy and {sets.hard_size} hard of '
         f'{sum(sets.class_sizes)} examples '
         f'({set_rules.rule_text(sets)}).']
  other = None if results_lib.skipped(a.other_rule) else a.other_rule
  if other and other.sets:
    o = other.sets
    out.append('For comparison, the other set rule '
               f'({set_rules.rule_text(o)}): the largest class holds '
               f"{_fmt(100 * (o.easy_largest_class_share or 0), '.0f')}"
               f'% of the easy set (class {o.easy_largest_class}) and '
               f"{_fmt(100 * (o.hard_largest_class_share or 0), '.0f')}"
               f'% of the hard set (class {o.hard_largest_class}).')
  ag = a.agreement
  ap = ag.arch_pairs
  if not results_lib.skipped(ap):
    k = len(ag.archs)
    off = ~np.eye(k, dtype=bool)
    alt = (set_rules.rule_summary(other.agreement)
           if other and other.agreement else {})
    for which in ('easy', 'hard'):
      sets_w = getattr(ap, f'{which}_sets')
      r = np.asarray(sets_w.ratio, np.float64)[off]
      chance = set_rules.chance_text(sets_w)
      also = (f"; {alt['rule']} sets: {_fmt(alt.get(f'arch_{which}'))}x"
              if alt.get(f'arch_{which}') is not None else '')
      out.append(f'{which.capitalize()} sets of different architectures '
                 f'overlap {_fmt(np.nanmean(r))}x chance on average '
                 f'(chance overlap {chance}{also}).')
  mp = ag.member_pairs
  summ = (None if results_lib.skipped(mp) else
          (mp.summary or {}).get('spearman_easiness'))
  if summ:
    out.append(f"Easiness Spearman between members: same architecture "
               f"{_fmt(summ.get('same_arch'))}, across architectures "
               f"{_fmt(summ.get('cross_arch'))}.")
  lv = ((ag.ceiling and ag.ceiling.levels) or [None])[-1]
  if lv and lv['summary']['easy_ratio']['cross_arch'] is not None:
    e, r = lv['summary']['easy_ratio'], lv['summary']['spearman_easiness']
    out.append(f"At {lv['members']} member(s) per group, easy sets of "
               f"different architectures overlap {_fmt(e['cross_arch'])}x "
               f"chance against {_fmt(e['ceiling'])}x (seed sd "
               f"{_fmt(e['ceiling_sd'])}) between disjoint seed groups of one "
               f"architecture; easiness Spearman {_fmt(r['cross_arch'])} "
               f"against {_fmt(r['ceiling'])}.")
  sim = None if results_lib.skipped(a.similarity) else a.similarity
  pix = sim and sim.pixels
  if pix:
    if 'l2' in pix['global']:
      g = pix['global']['l2']
      word = ('class-balanced (equal class composition)'
              if pix['global'].get('class_balanced') else 'global')
      osim = (None if not other or results_lib.skipped(other.similarity)
              else other.similarity)
      alt = ((osim and osim.pixels) or {}).get('global', {}).get('l2')
      also = (f" (global sets: easy {_fmt(alt['easy'])}, hard "
              f"{_fmt(alt['hard'])}, random {_fmt(alt['random'])})"
              if alt and pix['global'].get('class_balanced') else '')
      out.append(f'Mean pixel L2 distance within {word} sets: easy '
                 f"{_fmt(g['easy'])}, hard {_fmt(g['hard'])}, random "
                 f"{_fmt(g['random'])}{also}.")
  t = a.test
  if not results_lib.skipped(t) and t.errors_in_hard:
    r = t.errors_in_hard
    out.append(f"{_fmt(100 * float(r.pooled_fraction), '.1f')}% of test "
               f"errors are in the hard test set, which holds "
               f"{_fmt(100 * float(r.set_share), '.1f')}% of the split.")
  ran = [f"{name}: {'ran' if path else 'not run'}"
         for name, path in study.later.items()]
  try:
    causes = experiment_sections.causes_summary(study.later['causes'])
  except (OSError, ValueError, TypeError, AttributeError) as e:
    # Its section shows the error too; the summary must still be written.
    causes = [f'causes/results.json is unreadable: {e}']
  try:
    reference = reference_section.summary(study.workdir)
  except (OSError, ValueError, KeyError, TypeError) as e:
    reference = [f'compare/results.json is unreadable: {e}']
  try:
    heldout = heldout_section.summary(study.workdir)
  except (OSError, ValueError, KeyError, TypeError) as e:
    heldout = [f'heldout/results.json is unreadable: {e}']
  return [('Findings', out), ('Later stages', ran), ('Cause probes', causes),
          ('Reference score', reference), ('Held-out ground truth', heldout)]


def validate_config(config) -> None:
  """Raises ValueError naming the ``config.report`` field that is wrong."""
  for field in ('report.examples_per_class', 'report.max_classes'):
    config_fields.at_least(config, field)


def build_report(config: Any, workdir: str, *, train_images: Any = None,
                 test_images: Any = None) -> str:
  """Writes the study's HTML report, Markdown summary and figure PNGs.

  Args:
    config: the study ConfigDict (or None). Optional ``config.report`` fields:
      ``examples_per_class`` (8) and ``max_classes`` (20) of the example
      grids. The page shows ``WORKDIR/config.json`` when it exists, else this.
    workdir: the study workdir.
    train_images: optional [N, H, W(, C)] train images in example-index order
      (e.g. ``sources.load_dataset(config).train_images``); without them the
      example grids say "not run".
    test_images: optional test images, same layout, for the test grids.

  Returns:
    The path of ``WORKDIR/report/index.html``.
  """
  out_dir = os.path.join(workdir, 'report')
  fig_dir = os.path.join(out_dir, 'figures')
  files.makedirs(fig_dir)
  study = Study(config, workdir, train_images, test_images)
  built = [_guarded(study, key, title, build)
           for key, title, build in sections.SECTIONS]
  # Figures of an earlier build that this one did not make must not linger.
  wanted = {f'{f.name}.png' for s in built for f in s.figures}
  for old in (files.listdir(fig_dir) if files.isdir(fig_dir) else ()):
    if old.endswith('.png') and old not in wanted:
      files.remove(os.path.join(fig_dir, old))
  for s in built:
    for f in s.figures:
      files.atomic_write_bytes(os.path.join(fig_dir, f'{f.name}.png'), f.png)
  title = 'Easy and hard examples: study report'
  subtitle = study.subtitle()
  summary = html_lib.render_summary(title, subtitle, summary_blocks(study),
                                    built)
  files.atomic_write_bytes(os.path.join(out_dir, 'summary.md'),
                           summary.encode('utf-8'))
  # index.html last: the study takes it as the mark of a finished report.
  path = os.path.join(out_dir, 'index.html')
  files.atomic_write_bytes(
      path, html_lib.render_page(title, subtitle, built).encode('utf-8'))
  logging.info('Wrote %s (%d sections, %d figures).', path, len(built),
               len(wanted))
  return path
