"""Removal and compression sweeps: retrain on subsets chosen by easiness.

Each retraining run is a *member* with a subset mask. All members of one
architecture and one subset size (every strategy, score and seed at one
fraction) train together in compiled programs of at most
``members_per_program`` members, through the same recorder as the study, so
the sweep inherits its checkpoints, records and resume: a finished program is
never retrained. Layout::

    WORKDIR/{removal|compression}/
      reference/                 full training set, same budget and seeds
      frac_0.300/                a sub-workdir: records/, checkpoints/,
                                 masks_{program}.npz (keep [members, N])
      results.json, results.csv  mean and std over seeds per row

Budgets (``budget``): ``epochs`` (default, as the paper) trains every subset
for the same number of epochs, so smaller subsets take fewer steps; ``steps``
trains every subset for as many steps as the full set takes in ``epochs``.
"""

from __future__ import annotations

import copy
import io
import os
from typing import Any

import numpy as np
from absl import logging

from easyhard_jax import records
from easyhard_jax.analysis import scores as scores_lib
from easyhard_jax.data import streaming
from easyhard_jax.experiments import subsets
from easyhard_jax.train import config_checks
from easyhard_jax.train import ensemble

KINDS = {'remove': 'removal', 'compress': 'compression'}
BUDGETS = ('epochs', 'steps')


def sweep_config(config, kind: str):
  """The sweep's knobs (config.removal or config.compression), validated."""
  cfg = config[KINDS[kind]]
  if cfg.budget not in BUDGETS:
    raise ValueError(f'{KINDS[kind]}.budget must be one of {BUDGETS}, got '
                     f'{cfg.budget!r}.')
  lo, hi = (0.0, 1.0) if kind == 'remove' else (0.0, 1.0 + 1e-9)
  for f in cfg.fractions:
    if not lo < f < hi or (kind == 'remove' and f >= 1.0):
      raise ValueError(
          f'{KINDS[kind]}.fractions must lie in '
          f'{"(0, 1)" if kind == "remove" else "(0, 1]"}; got {f}.')
  for name in cfg.scores:
    scores_lib.orientation(name)  # KeyError names the known scores.
  for field in ('seeds', 'epochs', 'members_per_program'):
    if cfg[field] < 1:
      raise ValueError(f'{KINDS[kind]}.{field} must be >= 1.')
  return cfg


def study_scores(config, workdir: str) -> dict[str, np.ndarray]:
  """Per-example scores of the study's train records (analysis definitions)."""
  try:
    rec = records.load(workdir, 'train', source=config.analysis.source)
  except FileNotFoundError as e:
    raise FileNotFoundError(
        f'{e} The sweeps choose subsets by easiness: run --mode=record on '
        'this workdir first (or --mode=study).') from e
  sc = scores_lib.compute_scores(rec, config.analysis.window,
                                 config.analysis.dynamics_window)
  return sc['example']


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


def _member_plan(kind, cfg, arch, fraction, n, example_scores, labels):
  """(members, keep masks) of one fraction: strategies x scores x seeds."""
  k = int(round(fraction * n))
  members, masks = [], []
  for strategy in cfg.strategies:
    names = ['none'] if strategy.startswith('random') else list(cfg.scores)
    for score in names:
      for seed in range(cfg.seeds):
        mask = subsets.MASK_FUNCTIONS[kind](
            strategy, k, score=example_scores.get(score),
            score_name=score if score != 'none' else 'easiness',
            labels=labels, seed=seed, aum=example_scores.get('aum'))
        members.append({'name': f'{arch}/{strategy}/{score}/s{seed}',
                        'arch': arch, 'seed': seed, 'strategy': strategy,
                        'score': score, 'fraction': fraction,
                        'kept': int(mask.sum())})
        masks.append(mask)
  return members, np.stack(masks)


def _train_group(config, data, arch, subdir, members, keep, total_steps,
                 chunk):
  """Trains members in programs of <= chunk; returns their final test stats."""
  writer = records.RecordWriter(subdir)
  writer.write_split_metadata('train', data.train_labels, data.train_ids)
  writer.write_split_metadata('test', data.test_labels, data.test_ids)
  programs = []
  for start in range(0, len(members), chunk):
    program = f'{arch}.{start // chunk}'
    programs.append(program)
    sl = slice(start, start + chunk)
    mask_path = os.path.join(subdir, f'masks_{program}.npz')
    if not os.path.exists(mask_path):
      buf = io.BytesIO()
      np.savez(buf, keep=keep[sl])
      records.atomic_write_bytes(mask_path, buf.getvalue())
    if writer.is_complete(program):
      continue
    logging.info('%s: training %d members on %d examples.', subdir,
                 len(members[sl]), members[start]['kept'])
    ensemble.train_arch(config, data, arch, subdir, writer,
                        program=program, members=members[sl],
                        keep=keep[sl], total_steps=total_steps)
  test = records.load(subdir, 'test', archs=programs)
  return (test.correct[:, -1].mean(axis=1), test.loss[:, -1].mean(axis=1),
          int(test.probe_steps[-1]))


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
                 'seeds': len(rs), 'test_acc_mean': float(acc.mean()),
                 'test_acc_std': float(acc.std()),
                 'test_loss_mean': float(loss.mean()),
                 'test_loss_std': float(loss.std())})
  return rows


def run_sweep(config, workdir: str, kind: str) -> dict[str, Any]:
  """Runs the removal ('remove') or compression ('compress') sweep."""
  cfg = sweep_config(config, kind)
  out_dir = os.path.join(workdir, KINDS[kind])
  data = streaming.load(config)
  example_scores = study_scores(config, workdir)
  n = len(data.train_labels)
  retrain = _retrain_config(config, cfg)
  full_steps = cfg.epochs * ensemble.steps_per_epoch(retrain, n)
  archs = (config_checks.arch_list(config) if cfg.archs == 'study'
           else [a.strip() for a in cfg.archs.split(',')])
  per_member = []
  for arch in archs:
    groups = [('reference', 0.0 if kind == 'remove' else 1.0, None)]
    groups += [(f'frac_{f:.3f}', f, None) for f in cfg.fractions]
    for name, fraction, _ in groups:
      if name == 'reference':
        members = [{'name': f'{arch}/full/s{s}', 'arch': arch, 'seed': s,
                    'strategy': 'full', 'score': 'none',
                    'fraction': fraction, 'kept': n}
                   for s in range(cfg.seeds)]
        keep = np.ones((cfg.seeds, n), bool)
      else:
        members, keep = _member_plan(kind, cfg, arch, fraction, n,
                                     example_scores, data.train_labels)
      total = full_steps if cfg.budget == 'steps' else None
      acc, loss, steps = _train_group(
          retrain, data, arch, os.path.join(out_dir, name), members, keep,
          total, cfg.members_per_program)
      for m, a, l in zip(members, acc, loss):
        per_member.append(dict(m, acc=float(a), loss=float(l), steps=steps))
  rows = _summarise(per_member)
  result = {'kind': kind, 'budget': cfg.budget, 'epochs': cfg.epochs,
            'full_steps': full_steps, 'num_train': n, 'rows': rows,
            'members': per_member, **_curves(kind, rows)}
  # results.json last: the study takes it as the mark of a finished stage.
  records.atomic_write_csv(os.path.join(out_dir, 'results.csv'), rows)
  records.atomic_write_json(os.path.join(out_dir, 'results.json'), result)
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
  xlabel = ('fraction of training set removed' if kind == 'remove'
            else 'fraction of training set kept')
  return {'curves': list(curves.values()), 'reference': reference,
          'xlabel': xlabel, 'ylabel': 'test accuracy'}


def default_sweep_config(kind: str):
  """The removal / compression knobs (embedded in configs/default.py)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict()
  c.archs = 'study'            # 'study' = config.archs, or comma-separated.
  c.seeds = 3                  # Retraining seeds per (fraction, strategy).
  c.epochs = 30                # Epochs of every retraining run.
  c.budget = 'epochs'          # epochs (as the paper) | steps (as full data).
  c.members_per_program = 6    # Members compiled into one program.
  if kind == 'remove':
    c.fractions = (0.1, 0.3, 0.5)
    c.strategies = ('easiest', 'hardest', 'random', 'easiest_balanced',
                    'hardest_balanced', 'random_balanced')
    c.scores = ('easiness',)
  else:
    c.fractions = (0.1, 0.3, 0.5, 0.7)
    c.strategies = ('drop_easiest', 'stratified', 'random')
    c.scores = ('easiness', 'el2n', 'forgetting_events')
  return c

