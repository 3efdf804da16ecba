"""Typed analysis results: every part of analysis.json round-trips exactly."""

import dataclasses
import json
import shutil
import types

import numpy as np
import pytest

from easyhard_jax.storage import files
from easyhard_jax.analysis import results


def _dumps(obj):
  """Bytes as files.atomic_write_json writes them."""
  return json.dumps(obj, indent=1, sort_keys=True).encode()


def _overlap(n):
  m = np.full((n, n), 0.5)
  return {k: m for k in ('intersection', 'overlap', 'jaccard',
                         'chance_intersection', 'chance_overlap',
                         'chance_jaccard', 'ratio', 'z')} | {
                             'size_a': np.ones(n), 'size_b': np.ones(n)}


def _set_info(rule='class_balanced', share=0.5):
  return {'rule': 'top_k', 'score': 'easiness', 'class_rule': rule,
          'k': [2, 2], 'easy_size': 4, 'hard_size': 4, 'both': 0,
          'easy_per_class': [2, 2], 'hard_per_class': [2, 2],
          'class_sizes': [10, 10], 'easy_largest_class': 0,
          'easy_largest_class_share': share, 'hard_largest_class': 1,
          'hard_largest_class_share': None}


def _agreement(rule='class_balanced'):
  summary = {'easy_ratio': {'same_arch': 1.5, 'cross_arch': float('nan')}}
  return {
      'set_rule': rule, 'chance': 'chance text', 'members': ['a/s0', 'b/s0',
                                                             'b/s1'],
      'archs': ['a', 'b'], 'member_arch': ['a', 'b', 'b'],
      'member_pairs': {'easy_sets': _overlap(3), 'hard_sets': _overlap(3),
                       'spearman_easiness': np.eye(3), 'summary': summary},
      'arch_pairs': {'easy_sets': _overlap(2), 'hard_sets': _overlap(2),
                     'spearman_easiness': np.eye(2),
                     'members_per_arch': [1, 2],
                     'seed_interval': {'method': 'jackknife', 'level': 0.95,
                                       'intervals': {'easy_ratio': {
                                           'lo': np.ones((2, 2)),
                                           'hi': np.full((2, 2), 2.0)}}}},
      'ceiling': {'design': 'text', 'floor': {'ratio': 1.0},
                  'levels': [{'members': 1, 'summary': {
                      n: dict.fromkeys(('ceiling', 'ceiling_sd', 'cross_arch',
                                        'cross_arch_sd', 'floor',
                                        'normalized_cross'), 0.5)
                      for n in ('easy_ratio', 'hard_ratio',
                                'spearman_easiness')}}]}}


def _distances():
  m = {'easy': 1.0, 'hard': 2.0, 'random': 1.5, 'hard_over_easy': 2.0}
  return {'global': {'class_balanced': True, 'size': 4, 'l2': m,
                     'cosine': m},
          'per_class': {'0': None, '1': {'size': 2, 'l2': m, 'cosine': m}}}


def _synthetic(variant):
  """A synthetic analysis dict (before files.to_jsonable) of each variant."""
  skip = {'skipped': 'why'}
  a = {
      'config': {'window': [0, 1]}, 'score_orientation': {'easiness': 'x'},
      'score_source': {'easiness': 'probe'},
      'records': {'train': {
          'members': 3, 'probes': 2, 'fused_epochs': None, 'examples': 20,
          'archs': ['a', 'b'], 'member_names': ['a/s0', 'b/s0', 'b/s1'],
          'probe_epochs': np.array([1.0, 2.0]),
          'window_probe_epochs': np.array([1.0]),
          'dynamics_probe_epochs': np.array([1.0, 2.0])},
          'source': 'probe', 'fused': False},
      'sets': {'train': _set_info()},
      'score_summary': {'train': {'easiness': {'mean': 0.5, 'std': 0.1,
                                               'min': 0.0, 'max': 1.0},
                                  'aum': None}},
      'score_correlation': {'train': {'scores': ['easiness', 'aum'],
                                      'oriented': 'higher_is_easier',
                                      'spearman': np.eye(2)}},
      'agreement': _agreement(),
      'similarity': {'class_balanced': True, 'pixels': _distances(),
                     'pixel_sample': {'rows': 10, 'of': 20},
                     'colour': {'easy': {'mean': [0.1], 'std': [0.2]},
                                'random': None},
                     'high_frequency': {'easy': {'mean': 0.1, 'std': 0.2,
                                                 'size': 4}},
                     'hf_cutoff': 0.25, 'hf_remove_mean': True,
                     'features': {'penultimate_step8': _distances()},
                     'feature_checkpoint': {'step': 8, 'epoch': 1.0}},
      'other_rule': {'class_rule': 'global', 'sets': _set_info('global', 1.0),
                     'agreement': _agreement('global'),
                     'similarity': skip},
      'test': skip,
      'label_issues': {'window': [0, 1], 'train': {
          'pairs': 6, 'window_probe_epochs': [1.0],
          'majority_other_class': 1, 'unanimous_other_class': 0,
          'agreed_class_shares': {'suspects': 2, 'classes': {'3': [1.0, 0.1]}}},
          'test': {'skipped': 'the records hold no predictions (pred)'}},
      'label_noise': {'source': 'config', 'known_noisy': 2, 'examples': 20,
                      'k': 2, 'scores': {'easiness': {
                          'auroc': 0.9, 'precision_at_k': 0.5,
                          'oriented': 'higher_is_harder',
                          'nan_examples': 0}}},
  }
  if variant == 'skipped':  # Every part that can be skipped, skipped.
    one = _agreement()
    one['arch_pairs'] = skip
    one['member_pairs'] = skip
    del one['ceiling']
    a.update(agreement=one, similarity=skip, other_rule=skip,
             label_noise=skip, mean_images=skip)
    a['score_correlation']['train'] = skip
    a['label_issues'] = {'window': [0, 1], 'train': skip}
  elif variant == 'test':  # A test split everywhere it appears.
    err = {'errors': [3, 4], 'errors_in_set': [1, 2],
           'fraction': np.array([1 / 3, np.nan]), 'pooled_fraction': 0.4,
           'set_share': 0.1, 'enrichment': float('inf')}
    a['test'] = {'num_examples': 10, 'final_error_rate': [0.3, 0.4],
                 'easy_size': 1, 'hard_size': 1, 'errors_in_hard': err,
                 'errors_in_easy': err,
                 'errors_in_hard_leave_one_out': skip,
                 'final_probe_epoch': 2.0}
    a['records']['test'] = a['records']['train']
    a['sets']['test'] = _set_info()
    a['score_summary']['test'] = a['score_summary']['train']
  return files.to_jsonable(a)


def _assert_round_trip(raw):
  """The whole file and every registered part, JSON -> typed -> JSON."""
  typed = results.Analysis.from_json(raw, strict=True)
  assert _dumps(typed.to_json()) == _dumps(raw)
  for name in results.PARTS:
    part = results.part_from_json(name, raw[name])
    assert isinstance(part, (results.PARTS[name], results.Skipped))
    assert results.part_to_json(part) == raw[name]
  return typed


def test_every_analysis_field_is_a_registered_part():
  tables = {'config', 'score_orientation', 'score_source', 'mean_images'}
  names = {f.name for f in dataclasses.fields(results.Analysis)}
  assert names - tables == set(results.PARTS)


@pytest.mark.parametrize('variant', ['full', 'skipped', 'test'])
def test_synthetic_analysis_round_trips(variant):
  raw = _synthetic(variant)
  typed = _assert_round_trip(raw)
  if variant == 'skipped':
    assert typed.similarity == results.Skipped('why')
    assert isinstance(typed.agreement.arch_pairs, results.Skipped)
    assert typed.agreement.ceiling is None
    assert typed.mean_images == results.Skipped('why')
    assert typed.label_issues.test is None
  else:
    assert typed.mean_images is None and 'mean_images' not in raw
    ap = typed.agreement.arch_pairs
    assert isinstance(ap, results.ArchPairs)
    assert ap.easy_sets.ratio == [[0.5, 0.5], [0.5, 0.5]]
    assert typed.other_rule.sets.largest_class_share('easy') == 1.0
  if variant == 'test':
    assert typed.test.errors_in_easy.enrichment == 'inf'
    assert typed.test.errors_in_easy.fraction[1] is None
    assert isinstance(typed.test.errors_in_hard_leave_one_out,
                      results.Skipped)
    assert typed.sets.test.easy_size == 4


def test_skipped_is_the_sentinel_dict():
  s = results.Skipped('no test records')
  assert s.to_json() == {'skipped': 'no test records'}
  assert results.Skipped.from_json(s.to_json()) == s
  # A dict that says more than why is not a Skipped.
  assert not results.Skipped.is_skipped_json({'skipped': 'x', 'size': 1})


def test_older_files_read_leniently_and_the_analysis_strictly():
  raw = _synthetic('full')
  del raw['label_noise'], raw['records']['train']['dynamics_probe_epochs']
  raw['retired_key'] = 1
  typed = results.Analysis.from_json(raw)
  assert typed.label_noise is None
  assert typed.records.train.dynamics_probe_epochs is None
  with pytest.raises(ValueError, match='retired_key'):
    results.Analysis.from_json(raw, strict=True)
  # An optional field given as None would vanish from the file.
  with pytest.raises(ValueError, match='optional'):
    results.Sets.from_json({'train': _set_info(), 'test': None}, strict=True)


@pytest.mark.parametrize('variant', ['full', 'skipped', 'test'])
def test_report_sections_read_the_typed_parts(variant, tmp_path):
  from easyhard_jax.report import build
  from easyhard_jax.report import html as html_lib
  from easyhard_jax.report import sections
  study = types.SimpleNamespace(
      analysis=results.Analysis.from_json(_synthetic(variant)), scores=None,
      scores_test=None, means=None, train_images=None, test_images=None,
      workdir=str(tmp_path), later=dict.fromkeys(('removal', 'causes')))
  findings = dict(build.summary_blocks(study))['Findings']
  assert findings[0].startswith('Train: 4 easy and 4 hard of 20 examples')
  assert any('architectures overlap' in f for f in findings) == (
      variant != 'skipped')
  for key in ('overview', 'agreement', 'similarity', 'colour-frequency',
              'test-errors'):
    sec = sections.build_section(study, key)
    assert sec.status != html_lib.STATUS_ERROR, key
  if variant == 'skipped':
    sec = sections.build_section(study, 'agreement')
    assert 'Member pairs: why.' in sec.body_html
    assert 'why' in sections.build_section(study, 'test-errors').note


def test_real_analysis_round_trips(quick_study, tmp_path):
  from easyhard_jax.analysis import analyze
  from easyhard_jax.data import sources
  config, workdir = quick_study
  copy = str(tmp_path / 'study')
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns('checkpoints'))
  data = sources.load_dataset(config)
  returned = analyze.run_analysis(config, copy, train_images=data.train_images,
                                  test_images=data.test_images)
  path = f'{copy}/analysis/analysis.json'
  with open(path, 'rb') as f:
    written = f.read()
  assert _dumps(returned) == written
  typed = _assert_round_trip(json.loads(written))
  assert typed == results.read_analysis(path)
  assert isinstance(typed.test, results.TestErrors)
  assert typed.records.train.members == typed.records.test.members
  # Without images: similarity and mean images are Skipped values.
  raw = analyze.run_analysis(config, copy)
  typed = _assert_round_trip(raw)
  assert isinstance(typed.similarity, results.Skipped)
  assert typed.mean_images == results.Skipped(
      'no images passed to run_analysis')
