"""Removal and compression sweeps: retrain on subsets chosen by easiness.

Each retraining run is a *member* with a subset mask. All members of one
architecture and one subset size (every strategy, score and seed at one
fraction) train together in compiled programs of at most
``members_per_program`` members (sizes within one: 10 as 5 + 5), through the
same recorder as the study, so the sweep inherits its checkpoints, records
and resume: a finished program is never retrained. Layout::

    WORKDIR/{removal|compression}/
      reference/                 full training set, same budget and seeds
      frac_0.300/                a sub-workdir: records/, checkpoints/,
                                 masks_{program}.npz (keep [members, N])
      results.json, results.csv  mean and std over seeds per row

Budgets (``budget``): ``epochs`` (default, as the paper) trains every subset
for the same number of epochs, so smaller subsets take fewer steps; ``steps``
trains every subset for as many steps as the full set takes in ``epochs``.

Randomness (the design, also written into ``results.json``): every group (the
reference and each fraction) has a random stream of its own, named
``{removal|compression}/{group}`` and folded into the root seed
(``ensemble.member_keys``), so no retraining run replays the study's init,
data order or augmentation, and no subset run starts from the init whose
early predictions chose its subset. Within one fraction, seed s of every
strategy and score shares its init and augmentation stream: strategies are
*paired* by seed (common random numbers), and ``paired_differences`` gives
each strategy minus its random baseline per seed. Groups are independent of
each other and of the study. Spreads (``*_std``) are sample standard
deviations (ddof=1) over the independent seeds of a row (0 with one seed).
"""

from __future__ import annotations

import copy
import math
import os
import zipfile
from typing import Any

import numpy as np
from absl import logging

from easyhard_jax import config_fields
from easyhard_jax import models
from easyhard_jax import distributed
from easyhard_jax.storage import files
from easyhard_jax import fingerprint
from easyhard_jax.storage import records
from easyhard_jax.analysis import score_store
from easyhard_jax.analysis import scores as scores_lib
from easyhard_jax.data import streaming
from easyhard_jax.experiments import subsets
from easyhard_jax.train import ensemble

KINDS = ('removal', 'compression')  # Stage = config block = directory.
TIEBREAK = 'early_margin'  # Mean eval margin over the window (sets' too).
BUDGETS = ('epochs', 'steps')


def sweep_config(config, kind: str):
  """The sweep's knobs (config.removal or config.compression), validated."""
  cfg = config[kind]
  if cfg.budget not in BUDGETS:
    raise ValueError(f'{kind}.budget must be one of {BUDGETS}, got '
                     f'{cfg.budget!r}.')
  lo, hi = (0.0, 1.0) if kind == 'removal' else (0.0, 1.0 + 1e-9)
  for f in cfg.fractions:
    if not lo < f < hi or (kind == 'removal' and f >= 1.0):
      raise ValueError(
          f'{kind}.fractions must lie in '
          f'{"(0, 1)" if kind == "removal" else "(0, 1]"}; got {f}.')
  for name in cfg.scores:
    scores_lib.orientation(name)  # KeyError names the known scores.
  for field in ('seeds', 'epochs', 'members_per_program'):
    if cfg[field] < 1:
      raise ValueError(f'{kind}.{field} must be >= 1.')
  return cfg


def validate_config(config, kind: str) -> None:
  """Raises ValueError naming the field of ``config.<kind>`` that is wrong."""
  if config.get(kind) is not None:
    sweep_config(config, kind)
    models.arch_field(config, f'{kind}.archs')


def study_scores(config, workdir: str) -> dict[str, np.ndarray]:
  """The analysis's train scores (``analysis/scores_train.npz``).

  The sweep's stamp chains to the analysis stamp the config expects
  (fingerprint.STAGES), so the scores are read only when the analysis on
  disk carries that stamp: masks are never chosen from another analysis's
  scores (another window, other records).

  Raises:
    FileNotFoundError: no current analysis; the message says what to run.
  """
  hashes = {a: ensemble.study_fingerprint(config, a)['hash']
            for a in config_fields.arch_list(config)}
  stored = fingerprint.read_stamp(workdir, 'analysis')
  expected = fingerprint.expected_stamp(config, 'analysis', hashes)
  if (stored or {}).get('hash') != expected['hash']:
    state = ('made with other values or records' if stored else
             'missing or unfinished (no stamp)')
    raise FileNotFoundError(
        f"The sweeps choose subsets by the analysis's scores, and "
        f'{os.path.join(workdir, "analysis")} is {state}: run '
        '--mode=analysis on this workdir first (or --mode=study).')
  return score_store.load_analysis_scores(workdir, 'train')


def _retrain_config(config, cfg):
  """Study config with the sweep's epochs and a final-only probe."""
  c = copy.deepcopy(config)
  with c.unlocked():
    c.epochs = cfg.epochs
    c.probe.first_epoch_fractions = ()
    c.probe.every_epochs = cfg.epochs
    c.probe.at_init = False
    c.checkpoint_every_epochs = max(1, min(c.checkpoint_every_epochs,
                                           cfg.epochs))
  return c


def group_stream(kind: str, group: str) -> str:
  """The random stream of one sweep group, e.g. 'removal/frac_0.300'."""
  return f'{kind}/{group}'


def _member_plan(kind, cfg, arch, fraction, n, example_scores, labels,
                 stream, root_seed):
  """(members, keep masks) of one fraction: strategies x scores x seeds.

  Every member of the group shares ``stream``: seed s of each strategy has
  the same init and augmentation keys (the strategies are paired by seed).
  """
  k = int(round(fraction * n))
  members, masks = [], []
  for strategy in cfg.strategies:
    names = ['none'] if strategy.startswith('random') else list(cfg.scores)
    for score in names:
      for seed in range(cfg.seeds):
        mask = subsets.MASK_FUNCTIONS[kind](
            strategy, k, score=example_scores.get(score),
            score_name=score if score != 'none' else 'easiness',
            labels=labels, seed=(root_seed, seed),  # Both: config.seed too.
            aum=example_scores.get(TIEBREAK))
        members.append(ensemble.Member.of(
            f'{arch}/{strategy}/{score}/s{seed}', arch, seed, root_seed,
            stream, strategy=strategy, score=score, fraction=fraction,
            kept=int(mask.sum())))
        masks.append(mask)
  return members, np.stack(masks)


def program_slices(num_members: int, limit: int) -> list[slice]:
  """Members per program: the fewest programs of <= limit, sizes within one.

  10 members with a limit of 6 train as 5 + 5 (one compiled program, not a
  6 and a 4), and with a limit of 3 as 3 + 3 + 2 + 2: every program of a
  study then has one of two member counts, and compilation dominates small
  studies.
  """
  count = math.ceil(num_members / limit)
  size, extra = divmod(num_members, count)
  bounds = np.cumsum([0] + [size + (i < extra) for i in range(count)])
  return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _stale_programs(subdir, plan) -> dict[str, str]:
  """{program: why} of this plan's programs whose work on disk differs.

  A program's records (its manifest entry) must carry the plan's
  fingerprint, which covers its keep masks, and its ``masks_*.npz`` must
  hold the plan's masks: finished work is reused only when both match.
  """
  try:
    entries = records.read_manifest(subdir)['archs']
  except ValueError:
    entries = {}  # The writer rebuilds it from chunks of this fingerprint.
  stale = {}
  for program, (fp, keep) in plan.items():
    entry = entries.get(program)
    stored = entry.get('fingerprint') if isinstance(entry, dict) else None
    if entry is not None and (stored or {}).get('hash') != fp['hash']:
      diff = fingerprint.differences((stored or {}).get('fields', {}),
                                     fp['fields'])
      stale[program] = (f'records made with other values: '
                        f'{fingerprint.describe(diff) or "no fingerprint"}')
      continue
    mask_path = os.path.join(subdir, f'masks_{program}.npz')
    if entry is not None and not _same_mask(mask_path, keep):
      stale[program] = f'{mask_path} holds other keep masks'
  return stale


def _same_mask(path: str, keep: np.ndarray) -> bool:
  try:
    with files.np_load(path) as z:
      return np.array_equal(z['keep'], keep)
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
    return False


def _forget_programs(subdir: str, stale: dict[str, str]) -> None:
  """Removes stale programs' records, checkpoints, masks and entries."""
  for program, why in stale.items():
    logging.warning('%s: retraining %s (%s).', subdir, program, why)
    for path in (os.path.join(records.records_dir(subdir), program),
                 os.path.join(subdir, 'checkpoints', program),
                 os.path.join(subdir, f'masks_{program}.npz')):
      fingerprint.remove_outputs(path)
  manifest_path = os.path.join(records.records_dir(subdir), 'manifest.json')
  try:
    manifest = records.read_manifest(subdir)
  except ValueError:
    return  # The writer sets it aside and rebuilds it from the chunks.
  if any(p in manifest['archs'] for p in stale):
    for program in stale:
      manifest['archs'].pop(program, None)
      if program in manifest.get('arch_order', []):
        manifest['arch_order'].remove(program)
    files.atomic_write_json(manifest_path, manifest)


def _train_group(config, data, arch, subdir, members, keep, total_steps,
                 limit):
  """Trains members in equal programs of <= limit; returns final test stats.

  Multi-process: process 0 alone reads the group's state on disk and
  decides what to skip (the others follow its decisions), and every process
  waits for process 0's records before loading them.
  """
  plan = {}
  for i, sl in enumerate(program_slices(len(members), limit)):
    plan[f'{arch}.{i}'] = (ensemble.study_fingerprint(
        config, arch, members[sl], keep[sl], total_steps), keep[sl])
  if distributed.is_writer():
    _forget_programs(subdir, _stale_programs(subdir, plan))
  distributed.barrier(f'sweep_plan:{subdir}:{arch}')
  writer = records.RecordWriter(subdir)
  writer.write_split_metadata('train', data.train_labels, data.train_ids)
  writer.write_split_metadata('test', data.test_labels, data.test_ids)
  for (program, (_, program_keep)), sl in zip(
      plan.items(), program_slices(len(members), limit)):
    mask_path = os.path.join(subdir, f'masks_{program}.npz')
    if distributed.is_writer() and not _same_mask(mask_path, program_keep):
      files.atomic_savez(mask_path, {'keep': program_keep})
    if distributed.shared_decision(writer.is_complete(program)):
      continue
    logging.info('%s: training %d members on %d examples.', subdir,
                 len(members[sl]), members[sl.start]['kept'])
    ensemble.train_arch(config, data, arch, subdir, writer,
                        program=program, members=members[sl],
                        keep=program_keep, total_steps=total_steps)
  distributed.barrier(f'sweep_records:{subdir}:{arch}')
  test = records.load(subdir, 'test', archs=list(plan))
  return (test.correct[:, -1].mean(axis=1), test.loss[:, -1].mean(axis=1),
          int(test.probe_steps[-1]))


def _std(x) -> float:
  """Sample std (ddof=1) over independent seeds; 0 for a single seed."""
  x = np.asarray(x, np.float64)
  return float(x.std(ddof=1)) if x.size > 1 else 0.0


def _summarise(rows_in):
  """Mean and std over seeds of rows keyed by (arch, fraction, strategy, score)."""
  groups: dict[tuple, list] = {}
  for r in rows_in:
    groups.setdefault((r['arch'], r['fraction'], r['strategy'], r['score']),
                      []).append(r)
  rows = []
  for (arch, fraction, strategy, score), rs in sorted(groups.items()):
    acc = np.array([r['acc'] for r in rs])
    loss = np.array([r['loss'] for r in rs])
    rows.append({'arch': arch, 'fraction': fraction, 'strategy': strategy,
                 'score': score, 'kept': rs[0]['kept'], 'steps': rs[0]['steps'],
                 'stream': rs[0].get('stream'),
                 'paired_by_seed': strategy != 'full',
                 'seeds': len(rs), 'test_acc_mean': float(acc.mean()),
                 'test_acc_std': _std(acc),
                 'test_loss_mean': float(loss.mean()),
                 'test_loss_std': _std(loss)})
  return rows


def random_baseline(strategy: str) -> str:
  """The random strategy a strategy is compared with ('random[_balanced]')."""
  return 'random_balanced' if strategy.endswith('_balanced') else 'random'


def paired_differences(per_member) -> list[dict[str, Any]]:
  """Each strategy minus its random baseline, paired by seed within a group.

  Members of one (arch, fraction) group with the same seed share their init
  and augmentation stream, so the per-seed difference removes that shared
  noise; its mean and sample std are over the independent seeds.

  Args:
    per_member: dicts with arch, fraction, strategy, score, seed, acc.

  Returns:
    One row per (arch, fraction, strategy, score) that has a baseline.
  """
  acc = {(r['arch'], r['fraction'], r['strategy'], r['score'], r['seed']):
         r['acc'] for r in per_member}
  keys = sorted({k[:4] for k in acc if not k[2].startswith(('random', 'full'))})
  out = []
  for arch, fraction, strategy, score in keys:
    base = random_baseline(strategy)
    seeds = sorted(k[4] for k in acc
                   if k[:4] == (arch, fraction, strategy, score))
    diffs = [acc[(arch, fraction, strategy, score, s)] -
             acc[(arch, fraction, base, 'none', s)] for s in seeds
             if (arch, fraction, base, 'none', s) in acc]
    if diffs:
      out.append({'arch': arch, 'fraction': fraction, 'strategy': strategy,
                  'score': score, 'baseline': base, 'seeds': len(diffs),
                  'test_acc_diff_mean': float(np.mean(diffs)),
                  'test_acc_diff_std': _std(diffs)})
  return out


def design(kind: str) -> dict[str, str]:
  """How the sweep's runs share randomness (written into results.json)."""
  return {
      'streams': f'one per group ({group_stream(kind, "reference")}, '
                 f'{group_stream(kind, "frac_<f>")}), salted into the root '
                 "seed: no run replays the study's init, order or "
                 'augmentation',
      'within_group': 'paired: seed s of every strategy and score shares '
                      'its init and augmentation stream',
      'across_groups': 'independent (the reference and each fraction)',
      'spread': 'sample std (ddof=1) over independent seeds',
  }


def run_sweep(config, workdir: str, kind: str) -> dict[str, Any]:
  """Runs the removal or compression sweep (``kind``: the stage's name)."""
  cfg = sweep_config(config, kind)
  out_dir = os.path.join(workdir, kind)
  data = streaming.load(config)
  example_scores = study_scores(config, workdir)
  n = len(data.train_labels)
  retrain = _retrain_config(config, cfg)
  full_steps = cfg.epochs * ensemble.steps_per_epoch(retrain, n)
  archs = config_fields.arch_list(config, f'{kind}.archs')
  per_member = []
  for arch in archs:
    groups = [('reference', 0.0 if kind == 'removal' else 1.0, None)]
    groups += [(f'frac_{f:.3f}', f, None) for f in cfg.fractions]
    for name, fraction, _ in groups:
      stream = group_stream(kind, name)
      if name == 'reference':
        members = [ensemble.Member.of(
            f'{arch}/full/s{s}', arch, s, int(config.seed), stream,
            strategy='full', score='none', fraction=fraction, kept=n)
                   for s in range(cfg.seeds)]
        keep = np.ones((cfg.seeds, n), bool)
      else:
        members, keep = _member_plan(kind, cfg, arch, fraction, n,
                                     example_scores, data.train_labels,
                                     stream, int(config.seed))
      total = full_steps if cfg.budget == 'steps' else None
      acc, loss, steps = _train_group(
          retrain, data, arch, os.path.join(out_dir, name), members, keep,
          total, cfg.members_per_program)
      for m, a, l in zip(members, acc, loss):
        per_member.append(dict(m, acc=float(a), loss=float(l), steps=steps))
  rows = _summarise(per_member)
  result = {'kind': kind, 'budget': cfg.budget, 'epochs': cfg.epochs,
            'full_steps': full_steps, 'num_train': n, 'rows': rows,
            'design': design(kind),
            'paired_differences': paired_differences(per_member),
            'members': per_member, **_curves(kind, rows)}
  # results.json last: the study takes it as the mark of a finished stage.
  files.atomic_write_csv(os.path.join(out_dir, 'results.csv'), rows)
  files.atomic_write_json(os.path.join(out_dir, 'results.json'), result)
  return result


def _curves(kind: str, rows) -> dict[str, Any]:
  """Report-ready curves: test accuracy against the fraction, per strategy."""
  curves, reference = {}, None
  for r in rows:
    if r['strategy'] == 'full':
      reference = r['test_acc_mean']
      continue
    name = f"{r['arch']} {r['strategy']}" + (
        '' if r['score'] == 'none' else f" ({r['score']})")
    c = curves.setdefault(name, {'name': name, 'x': [], 'mean': [], 'std': []})
    c['x'].append(r['fraction'])
    c['mean'].append(r['test_acc_mean'])
    c['std'].append(r['test_acc_std'])
  xlabel = ('fraction of training set removed' if kind == 'removal'
            else 'fraction of training set kept')
  what = ('without the easiest, the hardest or random examples, as the '
          'fraction removed grows' if kind == 'removal' else
          'on subsets chosen by easiness against random subsets of the same '
          'size')
  description = (
      f'Test accuracy of models trained {what} (mean and sample std over '
      'independent seeds). Design: every group (the full-data reference and '
      'each fraction) trains with its own random stream, independent of the '
      "study's members and of the other groups; within a fraction, "
      'strategies are paired by seed (same init and augmentation stream), '
      'and results.json lists each strategy minus its random baseline per '
      'seed (paired_differences).')
  return {'curves': list(curves.values()), 'reference': reference,
          'xlabel': xlabel, 'ylabel': 'test accuracy',
          'description': description}
