"""The heldout stage: members on random subsets, read out on what they missed.

For every architecture of ``config.heldout.archs`` and every subset ratio r
of ``config.heldout.ratios``, ``config.heldout.members`` (K) members train on
independent uniformly random subsets of exactly round(r N) training examples
(Jiang et al. 2021's design), in compiled programs of at most
``members_per_program`` members through the sweeps' machinery
(``sweeps._train_group``: the same recorder, checkpoints and resume, and the
same compiled programs as every member group of that architecture). Each
member's final probe on the whole training split gives its prediction on the
examples it held out (and on those it trained on, for memorization);
analysis/consistency.py turns them into the estimates. Layout::

    WORKDIR/heldout/
      r0.5/ ...           a sub-workdir per ratio: records/, checkpoints/,
                          masks_{program}.npz (keep [members, N])
      scores_train.csv    per example: consistency, counts and standard
      scores_train.npz    errors per ratio, cscore, memorization (by
                          example_index and tfds_id)
      results.json        design, counts, the proxies judged against the
                          C-score, the between-halves ceiling, and (with
                          config.reference.path) the published reference

Randomness: member j of ratio r has the random stream ``heldout/r<r>``
(folded into the root seed before the architecture and j, see
``ensemble.member_keys``), so no member replays the study's or a sweep's
init, data order or augmentation; its subset mask comes from numpy's
generator seeded with (crc32('heldout/masks'), root seed, crc32(arch),
r in millionths, j): a stream of its own, independent of every JAX key.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from absl import logging

from easyhard_jax import config_fields
from easyhard_jax import models
from easyhard_jax.storage import files
from easyhard_jax import fingerprint
from easyhard_jax.storage import records
from easyhard_jax.analysis import score_store
from easyhard_jax.analysis import consistency
from easyhard_jax.analysis import compare
from easyhard_jax.analysis import reference_order
from easyhard_jax.data import streaming
from easyhard_jax.experiments import sweeps
from easyhard_jax.train import ensemble

OUT_DIR = 'heldout'
MASK_STREAM = 'heldout/masks'


def validate_config(config) -> None:
  """Raises ValueError naming the ``config.heldout`` field that is wrong."""
  if config.get('heldout') is not None:
    models.arch_field(config, 'heldout.archs')
    heldout_config(config)


def heldout_config(config):
  """config.heldout, validated (ValueError names the field)."""
  cfg = config.heldout
  ratios = [float(r) for r in cfg.ratios]
  if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
    raise ValueError('config.heldout.ratios must be a non-empty list of '
                     f'subset ratios in (0, 1); got {tuple(cfg.ratios)}.')
  if len({consistency.ratio_tag(r) for r in ratios}) != len(ratios):
    raise ValueError(f'config.heldout.ratios repeats a ratio: {ratios}.')
  if cfg.members < 2:
    raise ValueError('config.heldout.members must be >= 2 (the ceiling '
                     'splits each ratio\'s members into two halves); got '
                     f'{cfg.members}.')
  for field in ('epochs', 'members_per_program'):
    if cfg[field] < 1:
      raise ValueError(f'config.heldout.{field} must be >= 1.')
  for f in cfg.hard_tail_fractions:
    if not 0.0 < f < 1.0:
      raise ValueError('config.heldout.hard_tail_fractions must lie in '
                       f'(0, 1); got {f}.')
  return cfg


def subset_mask(root_seed: int, arch: str, ratio: float, member: int,
                n: int) -> np.ndarray:
  """Member ``member``'s training mask: exactly round(ratio n) of n, uniform."""
  rng = np.random.default_rng([ensemble.stream_salt(MASK_STREAM),
                               int(root_seed), ensemble.stream_salt(arch),
                               int(round(ratio * 1e6)), int(member)])
  keep = np.zeros(n, bool)
  keep[rng.permutation(n)[:int(round(ratio * n))]] = True
  return keep


def member_plan(config, arch: str, ratio: float, n: int
                ) -> tuple[list[ensemble.Member], np.ndarray]:
  """(members, keep [K, n]) of one architecture and ratio."""
  k = int(round(ratio * n))
  if not 0 < k < n:
    raise ValueError(f'config.heldout.ratios: {ratio} of {n} examples keeps '
                     f'{k}; every member must train on some and miss some.')
  tag = consistency.ratio_tag(ratio)
  seed = int(config.seed)
  members = [ensemble.Member.of(f'{arch}/{tag}/s{j}', arch, j, seed,
                                f'{OUT_DIR}/{tag}', ratio=float(ratio), kept=k)
             for j in range(config.heldout.members)]
  keep = np.stack([subset_mask(seed, arch, ratio, j, n)
                   for j in range(config.heldout.members)])
  return members, keep


def _retrain_config(config, cfg):
  """The sweeps' retraining config (final probe only, unless along_training)."""
  c = sweeps._retrain_config(config, cfg)  # pylint: disable=protected-access
  if cfg.along_training:
    with c.unlocked():
      c.probe = config.probe
  return c


def train_members(config, workdir: str, data=None) -> dict[str, Any]:
  """Trains (or resumes) every member; returns their records and masks.

  Returns:
    {'correct': bool [M, P, N] (train probes), 'keep': bool [M, N],
    'members': M dicts (with 'test_acc'), 'probe_epochs': per ratio,
    'labels', 'tfds_ids'}.
  """
  cfg = heldout_config(config)
  data = data or streaming.load(config)
  n = len(data.train_labels)
  retrain = _retrain_config(config, cfg)
  archs = config_fields.arch_list(config, 'heldout.archs')
  out_dir = os.path.join(workdir, OUT_DIR)
  correct, keep, members, epochs = [], [], [], {}
  for ratio in cfg.ratios:
    subdir = os.path.join(out_dir, consistency.ratio_tag(ratio))
    programs = []
    for arch in archs:
      ms, kp = member_plan(config, arch, float(ratio), n)
      acc, _, _ = sweeps._train_group(  # pylint: disable=protected-access
          retrain, data, arch, subdir, ms, kp, None, cfg.members_per_program)
      members += [dict(m, test_acc=float(a)) for m, a in zip(ms, acc)]
      programs += [f'{arch}.{i}' for i in range(
          len(sweeps.program_slices(len(ms), cfg.members_per_program)))]
    rec = records.load(subdir, 'train', archs=programs)
    for p in programs:
      with files.np_load(os.path.join(subdir, f'masks_{p}.npz')) as z:
        keep.append(z['keep'])
    correct.append(rec.correct)
    epochs[consistency.ratio_tag(ratio)] = rec.probe_epochs.tolist()
  # Ratios may differ in probe counts (along_training): keep the last probe
  # of each, and the curves per ratio.
  return {'correct': correct, 'keep': np.concatenate(keep),
          'members': members, 'probe_epochs': epochs,
          'labels': np.asarray(data.train_labels, np.int64),
          'tfds_ids': getattr(data, 'train_ids', None)}


def _curves(correct_per_ratio, keep, member_ratio, ratios, epochs):
  """Mean held-out and in-subset accuracy at every probe, per ratio."""
  out, start = [], 0
  for r, c in zip(ratios, correct_per_ratio):
    m = c.shape[0]
    k = keep[start:start + m, None, :]
    start += m
    held = ((c & ~k).sum(-1) / (~k).sum(-1)).mean(0)
    seen = ((c & k).sum(-1) / k.sum(-1)).mean(0)
    out.append({'ratio': float(r), 'epochs': epochs[consistency.ratio_tag(r)],
                'heldout_accuracy': held, 'in_subset_accuracy': seen})
  return out


def _count_summary(est, ratios, total_members) -> list[dict[str, Any]]:
  rows = []
  for r in ratios:
    t = consistency.ratio_tag(r)
    cnt = est[f'heldout_count_{t}']
    se = est[f'consistency_se_{t}']
    rows.append({'ratio': float(r), 'members': int(total_members[t]),
                 'expected_heldout_per_example': total_members[t] * (1 - r),
                 'heldout_count_mean': float(cnt.mean()),
                 'heldout_count_min': int(cnt.min()),
                 'never_heldout': int((cnt == 0).sum()),
                 'consistency_mean': float(np.nanmean(
                     est[f'consistency_{t}'])),
                 'consistency_se_mean': float(np.nanmean(se)),
                 'worst_case_se_mean': float(np.nanmean(
                     np.where(cnt > 0, 0.5 / np.sqrt(np.maximum(cnt, 1)),
                              np.nan))),
                 'memorization_mean': float(np.nanmean(
                     est[f'memorization_{t}']))})
  return rows


def _write_scores(out_dir: str, est, labels, tfds_ids) -> None:
  n = labels.size
  ids = (np.asarray(tfds_ids, str) if tfds_ids is not None
         else np.full(n, '', '<U1'))
  cols = {'example_index': np.arange(n), 'tfds_id': ids, 'label': labels,
          **est}
  files.atomic_savez(os.path.join(out_dir, 'scores_train.npz'),
                     {k.replace('/', '__'): np.asarray(v)
                      for k, v in cols.items()})
  fmt = lambda v: ('' if isinstance(v, float) and not np.isfinite(v)
                   else v)
  rows = [{k: fmt(np.asarray(v)[i].item()) for k, v in cols.items()}
          for i in range(n)]
  files.atomic_write_csv(os.path.join(out_dir, 'scores_train.csv'), rows)


def _judge(workdir, cscore, fractions) -> dict[str, Any]:
  try:
    table = score_store.load_analysis_scores(workdir, 'train')
  except FileNotFoundError:
    return {'skipped': 'no analysis/scores_train.npz: run --mode=analysis, '
                       'then --mode=heldout again (training is kept)'}
  if table['label'].size != cscore.size:
    return {'skipped': f"analysis has {table['label'].size} examples, the "
                       f'held-out estimate {cscore.size}'}
  res = consistency.judge(table, cscore, fractions=fractions)
  stamp = fingerprint.read_stamp(workdir, 'analysis') or {}
  res['analysis_stamp'] = stamp.get('hash')
  return res


def _read_reference(config) -> dict[str, Any] | None:
  """config.reference's file when the stage compares with it, else None."""
  rc = config.reference
  if not (rc.path and rc.split == 'train'):
    return None
  return reference_order.read_reference(
      rc.path, rc.key, rc.tfds_id_column if rc.order == 'tfds_id' else None,
      rc.get('label_key') or None)


def _reference(config, file, est, labels, tfds_ids, fractions
               ) -> dict[str, Any]:
  """The estimates against config.reference (a published C-score file)."""
  rc = config.reference
  split_name = config.get('train_split') or 'train'
  ids = np.asarray(tfds_ids if tfds_ids is not None else [''] * labels.size,
                   str)
  values = file['values']
  ref, mapping = reference_order.map_reference(
      rc.order, values, file['ids'], ids, split_name=split_name,
      shard_lengths=compare._shard_lengths(  # pylint: disable=protected-access
          config, split_name),
      labels=file['labels'], example_labels=labels)
  if rc.orientation == 'higher_is_harder':
    ref = -ref
  columns = ['cscore'] + [f'consistency_{consistency.ratio_tag(r)}'
                          for r in config.heldout.ratios]
  return {'reference': {'path': rc.path, 'key': rc.key,
                        'orientation': rc.orientation, **mapping},
          'columns': consistency.against_reference(
              est, ref, labels, fractions=fractions, columns=columns)}


def run_heldout(config, workdir: str, data=None) -> dict[str, Any]:
  """--mode=heldout: trains the members, writes the estimates and judgement.

  Args:
    config: the study config (``config.heldout`` as in configs/default.py).
    workdir: the study workdir.
    data: the dataset (default: ``streaming.load(config)``).

  Returns:
    The dict written to ``WORKDIR/heldout/results.json``.
  """
  cfg = heldout_config(config)
  ratios = [float(r) for r in cfg.ratios]
  fractions = tuple(float(f) for f in cfg.hard_tail_fractions)
  # A wrong key or path fails now, not after hours of training.
  reference = _read_reference(config)
  t = train_members(config, workdir, data)
  members, keep, labels = t['members'], t['keep'], t['labels']
  final = np.concatenate([c[:, -1] for c in t['correct']])
  member_ratio = np.asarray([m['ratio'] for m in members])
  est = consistency.estimate(final, keep, member_ratio, ratios)
  archs = sorted({m['arch'] for m in members})
  if len(archs) > 1:
    for a in archs:
      sel = np.asarray([m['arch'] == a for m in members])
      est[f'cscore/{a}'] = consistency.estimate(
          final[sel], keep[sel], member_ratio[sel], ratios)['cscore']
  half_a, half_b = consistency.halves(member_ratio)
  halves = [consistency.estimate(final[h], keep[h], member_ratio[h],
                                 ratios)['cscore'] for h in (half_a, half_b)]
  out_dir = os.path.join(workdir, OUT_DIR)
  _write_scores(out_dir, est, labels, t['tfds_ids'])
  per_ratio = {consistency.ratio_tag(r): int(np.isclose(member_ratio, r).sum())
               for r in ratios}
  cs = est['cscore']
  result: dict[str, Any] = {
      'ratios': ratios, 'members_per_ratio_and_arch': int(cfg.members),
      'archs': archs, 'epochs': int(cfg.epochs), 'num_train': int(labels.size),
      'hard_tail_fractions': list(fractions),
      'counts': _count_summary(est, ratios, per_ratio),
      'cscore': {'examples': int(np.isfinite(cs).sum()),
                 'missing': int((~np.isfinite(cs)).sum()),
                 'mean': float(np.nanmean(cs)),
                 'below_half': int((cs < consistency.BELOW).sum()),
                 'se_mean': float(np.nanmean(est['cscore_se'])),
                 'all_ratios': int((est['cscore_ratios'] == len(ratios)
                                    ).sum())},
      'memorization_mean': float(np.nanmean(est['memorization'])),
      'test_accuracy': {consistency.ratio_tag(r): float(np.mean(
          [m['test_acc'] for m in members if m['ratio'] == r]))
                        for r in ratios},
      'ceiling': consistency.between_halves(*halves, labels,
                                            fractions=fractions),
      'proxies': _judge(workdir, cs, fractions),
      'members': [{k: m[k] for k in ('name', 'arch', 'seed', 'ratio',
                                     'kept', 'test_acc')} for m in members],
      'design': {'subsets': 'independent uniform subsets of round(r N) '
                            'examples per member (numpy stream heldout/'
                            'masks)',
                 'streams': 'heldout/r<r> per ratio, salted into the root '
                            "seed: no member replays the study's keys",
                 'halves': 'members of each ratio alternate between two '
                           'disjoint halves'}}
  if cfg.along_training:
    result['curves'] = _curves(t['correct'], keep, member_ratio, ratios,
                               t['probe_epochs'])
  if reference is not None:
    result['reference'] = _reference(config, reference, est, labels,
                                     t['tfds_ids'], fractions)
  result = files.to_jsonable(result)
  files.atomic_write_json(os.path.join(out_dir, 'results.json'), result)
  c = result['cscore']
  logging.info('Held-out C-score: %d of %d examples estimated (mean %.3f, '
               'mean se %.3f, %d below 0.5); between-halves Spearman %s.',
               c['examples'], labels.size, c['mean'] or np.nan,
               c['se_mean'] or np.nan, c['below_half'],
               result['ceiling'].get('spearman'))
  return result
