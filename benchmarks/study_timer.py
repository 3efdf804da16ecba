"""The device check's study: plan the epochs that fit, run, extrapolate.

The study is the records stage exactly as ``--mode=records`` runs it
(``ensemble.record_study``: compiled train and probe steps, fused and probe
records, an orbax checkpoint per epoch, metrics.jsonl), on synthetic uint8
data of CIFAR-10's size. Where the time budget does not hold all epochs it
runs fewer and adds the missing ones at the rate of its own steady epochs
(epoch 2 on: each holds its training steps, one probe pass and one
checkpoint), so the estimate never leans on a separate benchmark when a
measured epoch exists.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time

from easyhard_jax.storage import records
from easyhard_jax.train import ensemble

# Seconds an epoch-end checkpoint of 8 ResNet-18 members (~0.7 GB with the
# momentum) is assumed to take when planning; the run measures the real cost.
CHECKPOINT_GUESS_S = 3.0


def plan_epochs(result: dict, sizes: dict, seconds_left: float,
                dry_run: bool) -> dict:
  """How many of the target epochs fit in ``seconds_left`` (from the grid)."""
  target, m = sizes['study_epochs'], sizes['study_members']
  spe = math.ceil(sizes['train'] / sizes['batch'])
  dtype = 'float32' if result.get('device', {}).get('backend') == 'cpu' else (
      'bfloat16')
  rows = [r for r in result.get('train_step', [])
          if r['members'] == m and r['dtype'] == dtype and r['fused']]
  plan = {'members': m, 'epochs_target': target, 'steps_per_epoch': spe,
          'train_examples': sizes['train'], 'test_examples': sizes['test']}
  probe = result.get('probe')
  if not rows or not probe:
    plan['epochs_run'] = min(target, 2) if dry_run or seconds_left > 240 else 0
    plan['plan_note'] = 'no step or probe timing to plan from'
    return plan
  step_s = min(r['ms_per_step'] for r in rows) / 1e3
  probe_s = probe['seconds'] * (sizes['train'] + sizes['test']) / sizes['train']
  epoch_s = spe * step_s + probe_s + CHECKPOINT_GUESS_S
  compile_s = max(r.get('compile_s') or 0.0 for r in rows) + probe[
      'first_call_s'] + 10.0
  first_s = compile_s + epoch_s + 3 * probe_s  # + the in-epoch probes.
  fit = 1 + math.floor((seconds_left - first_s) / epoch_s) if (
      seconds_left >= first_s) else 0
  plan.update(estimated_epoch_s=epoch_s, estimated_first_epoch_s=first_s,
              predicted_wall_s=first_s + (target - 1) * epoch_s,
              epochs_run=max(1, min(target, fit)) if dry_run else min(target,
                                                                     fit))
  return plan


def _epoch_seconds(workdir: str) -> list[float]:
  path = os.path.join(workdir, 'metrics.jsonl')
  out = []
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      if row.get('kind') == 'epoch' and row.get('seconds') is not None:
        out.append(float(row['seconds']))
  return out


def run_study(config, data, workdir: str, plan: dict, target: int) -> dict:
  """Runs the records stage for ``plan['epochs_run']`` epochs; wall times."""
  tick = time.perf_counter()
  ensemble.record_study(config, workdir, data)
  wall = time.perf_counter() - tick
  epochs = _epoch_seconds(workdir)
  run = plan['epochs_run']
  out = dict(plan, wall_s=wall, epoch_seconds=epochs,
             startup_s=wall - sum(epochs))
  if len(epochs) >= 2:
    steady, source = statistics.median(epochs[1:]), 'own steady epochs'
  else:
    steady = plan.get('estimated_epoch_s', float('nan'))
    source = 'grid step time + probe pass (only one epoch ran)'
  out['steady_epoch_s'] = steady
  out['train_examples_per_s'] = (plan['members'] * plan['steps_per_epoch'] *
                                 config.batch_size / steady)
  out['wall_s_for_target_epochs'] = wall + (target - run) * steady
  out['extrapolated'] = run < target
  if run < target:
    out['extrapolation'] = (f'{run} of {target} epochs ran; the other '
                            f'{target - run} at {steady:.1f} s each '
                            f'({source})')
  try:
    rec = records.load(workdir, 'train')
    out['records_shape'] = list(rec.correct.shape)
  except Exception as e:  # pylint: disable=broad-except
    out['records_error'] = repr(e)[:300]
  return out
