"""The prepared GPU check: one run, one JSON file, one Markdown table.

  launch/device_check.sh                    # on one H100/H200: <= 8 minutes
  launch/device_check.sh --dry-run          # on CPU at toy sizes (CI)
  python -m benchmarks.device_check --out=DIR [--dry-run] [--budget_s=450]

Sections, in order (each is written to ``DIR/device_check.json`` as soon as
it is done, so a run stopped from outside keeps what it measured):

1. ``device``: the card, its dense bf16 peak (spec sheet, by device kind)
   and a measured bf16 matmul rate.
2. ``train_step``: ResNet-18 at CIFAR shape (32x32x3, width 1, batch 128 per
   member) with the fused per-example outputs, for 1, 4 and 8 members,
   ``vmap`` and ``unroll``, bf16 and float32: examples/s and percent of the
   bf16 peak, FLOPs from XLA's cost analysis of the compiled step. All
   programs are compiled side by side on host threads first.
3. ``peer``: the same network and batch in PyTorch on the same card (eager
   channels_last + bf16 autocast, ``torch.compile``, eager float32), in a
   worker process that compiles while JAX does.
4. ``probe``: the probe pass (eval mode, whole train split, 8 members).
5. ``many_members``: 8, 16, 32, 64 ResNet-18s of width 1/4 in one program;
   ``heldout_members``: 8, 16, 32 of them as the heldout stage trains them,
   each on its own random half of the training set (subset masks of
   experiments/heldout.py), so the C-score members' scaling is measured.
6. ``study``: a CIFAR-10-size study on synthetic uint8 data (50k train, 10k
   test), 8 members, probes as configs/cifar10.py, the records stage's own
   loop (records, checkpoints, metrics), wall time with compilation. It runs
   as many of the 16 epochs as the time budget leaves and extrapolates the
   rest from its own steady epochs (the JSON says which).

``--dry-run`` runs all of it on CPU at toy sizes (8x8 images, a ResNet of
a stem and one block) so CI checks the script and the JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

# Leave the PyTorch peer room on the card (JAX takes 75% by default).
os.environ.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.6')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import device_report  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import harness  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import torch_peer  # pylint: disable=g-import-not-at-top,wrong-import-position

FULL = dict(shape=(32, 32, 3), width=1.0, batch=128, members=(1, 4, 8),
            strategies=('vmap', 'unroll'), dtypes=('bfloat16', 'float32'),
            many=(8, 16, 32, 64), heldout=(8, 16, 32), many_width=0.25,
            train=50_000, test=10_000,
            study_members=8, study_epochs=16, model_kwargs={}, matmul=8192,
            round_s=0.3, rounds=3, peer_steps=30, threads=8)
DRY = dict(shape=(8, 8, 3), width=1 / 16, batch=8, members=(1, 2),
           strategies=('vmap', 'unroll'), dtypes=('float32',),
           many=(2, 4), heldout=(2, 4), many_width=1 / 32, train=96, test=32,
           study_members=2, study_epochs=2,
           model_kwargs={'stage_sizes': (1,), 'stage_widths': (64,)},
           matmul=256, round_s=0.0, rounds=1, peer_steps=2, threads=2)


class Check:
  """Runs the sections against a deadline and keeps the results."""

  def __init__(self, args):
    self.args, self.sizes = args, DRY if args.dry_run else FULL
    self.start = time.perf_counter()
    self.deadline = self.start + args.budget_s
    os.makedirs(args.out, exist_ok=True)
    self.json_path = os.path.join(args.out, 'device_check.json')
    self.md_path = os.path.join(args.out, 'device_check.md')
    self.result = {'dry_run': bool(args.dry_run),
                   'date': datetime.datetime.now().isoformat(timespec='seconds'),
                   'budget_s': args.budget_s, 'skipped': [],
                   'sizes': {k: v for k, v in self.sizes.items()
                             if k != 'model_kwargs'}}

  def left(self) -> float:
    return self.deadline - time.perf_counter()

  def save(self) -> None:
    self.result['elapsed_s'] = round(time.perf_counter() - self.start, 1)
    text = json.dumps(device_report.finite(self.result), indent=1)
    with open(self.json_path + '.tmp', 'w') as f:
      f.write(text)
    os.replace(self.json_path + '.tmp', self.json_path)
    with open(self.md_path, 'w') as f:
      f.write(device_report.markdown(self.result))

  def config(self, members: int, strategy: str, dtype: str, width: float,
             base: str = 'cifar10', **fields):
    s = self.sizes
    c = harness.study_config(
        base, archs='resnet18', seeds_per_arch=members, width=width,
        batch_size=s['batch'], member_strategy=strategy, dtype=dtype,
        compilation_cache_dir='', **fields)
    if s['model_kwargs']:
      c.model_kwargs['resnet18'] = dict(s['model_kwargs'])
    return c


def _device(check: Check) -> None:
  """The card, its spec-sheet bf16 peak and a measured bf16 matmul rate."""
  n = check.sizes['matmul']
  a = jnp.ones((n, n), jnp.bfloat16)
  mm = jax.jit(lambda x: x @ x)
  jax.block_until_ready(mm(a))
  reps = 20
  tick = time.perf_counter()
  for _ in range(reps):
    out = mm(a)
  jax.block_until_ready(out)
  sec = (time.perf_counter() - tick) / reps
  summary = harness.device_summary()
  check.result['device'] = dict(
      summary, peak_bf16_tflops=device_report.peak_bf16_tflops(
          summary['device_kind']),
      matmul_bf16_tflops=2 * n ** 3 / sec / 1e12, matmul_size=n,
      python=sys.version.split()[0])


def _peer_start(check: Check) -> list:
  """PyTorch workers: eager variants, and torch.compile in its own process.

  They build and warm up (torch.compile compiles) while JAX compiles; a
  compile that hangs then costs only its own variant.
  """
  s = check.sizes
  spec = {'shape': list(s['shape']), 'num_examples': s['train'],
          'batch_size': s['batch'], 'width': s['width'], 'warmup': 3}
  spec.update(s['model_kwargs'])
  eager = [{'name': 'eager channels_last bf16 autocast', 'amp_bf16': True,
            'channels_last': True},
           {'name': 'eager channels_last float32', 'channels_last': True}]
  peers = [torch_peer.PeerProcess(dict(spec, variants=eager))]
  if not check.args.dry_run:
    peers.append(torch_peer.PeerProcess(dict(spec, variants=[
        {'name': 'torch.compile channels_last bf16', 'amp_bf16': True,
         'channels_last': True, 'compile': True}])))
  return peers


def _time_program(check: Check, p) -> dict:
  s = check.sizes
  p.run(2)  # Warm-up.
  steps = harness.steps_for(p.run, s['round_s'])
  sec = min(p.run(steps) for _ in range(s['rounds'])) / steps
  flops = p.flops_per_step
  peak = check.result['device']['peak_bf16_tflops']
  return device_report.rate_row(sec, p.examples_per_step, p.members, flops,
                                peak, p.compile_s)


def _grid_specs(check: Check) -> list[tuple]:
  """(section, members, strategy, dtype, fused, width), most wanted first.

  The first ``threads`` start compiling at once; a compile still running at
  the deadline is skipped, so the costly float32 unrolled ones come last.
  """
  s = check.sizes
  big, study_dtype = max(s['members']), _study_dtype()
  specs = []
  for dtype in s['dtypes']:
    for m in sorted(s['members'], key=lambda m: (m != 1, -m)):
      for strategy in (s['strategies'] if m > 1 else ('unroll',)):
        specs.append(('grid', m, strategy, dtype, True, s['width']))
    if dtype == s['dtypes'][0]:
      specs.append(('grid', big, 'auto', study_dtype, False, s['width']))
      specs += [('many', m, 'vmap', 'bfloat16', True, s['many_width'])
                for m in s['many']]
      specs += [('heldout', m, 'vmap', 'bfloat16', True, s['many_width'])
                for m in s['heldout']]
  return specs


def _heldout_plan(config, n: int, m: int):
  """The heldout stage's first m members at ratio 0.5 and their masks."""
  from easyhard_jax.experiments import heldout  # pylint: disable=g-import-not-at-top
  c = harness.with_fields(config, **{'heldout.members': max(m, 2)})
  members, keep = heldout.member_plan(c, 'resnet18', 0.5, n)
  return members[:m], keep[:m]


def _study_dtype() -> str:
  return 'float32' if jax.default_backend() == 'cpu' else 'bfloat16'


def _train_grid(check: Check):
  """Compiles the grid and the many-member programs, then times them."""
  s = check.sizes
  data = harness.synthetic_dataset(s['train'], s['test'], s['shape'])
  big = max(s['members'])
  states = harness.init_states(check.config(big, 'unroll', 'float32',
                                            s['width']), data)
  many_states = harness.init_states(check.config(
      max(s['many']), 'vmap', 'bfloat16', s['many_width']), data)
  programs = []
  for section, m, strategy, dtype, record, width in _grid_specs(check):
    src = states if section == 'grid' else many_states
    config = check.config(m, strategy, dtype, width)
    members, keep = (_heldout_plan(config, s['train'], m)
                     if section == 'heldout' else (None, None))
    p = harness.TrainProgram(
        config, data, 'resnet18', record=record, members=members, keep=keep,
        states=jax.tree.map(lambda a, m=m: a[:m], src))
    programs.append(((section, m, p.trainer.strategy, dtype, record), p))
  tick = time.perf_counter()
  # Leave time to time the programs, run the peer, the probe and the study.
  timeout = 600.0 if check.args.dry_run else max(30.0, check.left() - 250)
  late = harness.compile_all([p for _, p in programs], threads=s['threads'],
                             timeout_s=timeout)
  check.result['compile_wall_s'] = time.perf_counter() - tick
  check.result['compile_threads'] = s['threads']
  if late:
    check.result['compiles_still_running_while_timing'] = len(late)
  rows = {'grid': [], 'many': [], 'heldout': []}
  study_program = None
  for (section, m, strategy, dtype, record), p in programs:
    name = f'{section} {m} {strategy} {dtype}{"" if record else " unfused"}'
    if p.compiled is None or (not check.args.dry_run and check.left() < 150):
      why = (p.error or 'compile unfinished') if p.compiled is None else 'time'
      check.result['skipped'].append(f'{name}: {why}')
      p.release()
      continue
    row = dict(members=m, strategy=strategy, dtype=dtype, fused=record,
               **_time_program(check, p))
    rows[section].append(row)
    if (section, m, dtype, record) == ('grid', big, _study_dtype(), True) and (
        strategy == harness.default_strategy()):
      study_program = p  # The study's own step: its probe pass is timed.
    else:
      p.release()
    check.result['train_step'], check.result['many_members'] = (
        rows['grid'], rows['many'])
    check.result['heldout_members'] = rows['heldout']
    check.save()
  check.result['auto_strategy'] = _suggest(rows['grid'])
  return data, study_program


def _suggest(grid) -> dict:
  """The faster strategy (study dtype, fused) at each member count > 1."""
  best = {}
  for r in grid:
    if r['members'] > 1 and r['dtype'] == _study_dtype() and r['fused']:
      prev = best.get(r['members'])
      if prev is None or r['examples_per_s'] > prev[1]:
        best[r['members']] = (r['strategy'], r['examples_per_s'])
  return {str(m): s for m, (s, _) in sorted(best.items())}


def _peer(check: Check, peers) -> None:
  s = check.sizes
  ready, best = {}, {}
  for peer in peers:
    # torch.compile has had the grid's time; wait at most a minute more.
    info = peer.ready(600.0 if check.args.dry_run else
                      max(10.0, min(60.0, check.left() - 200)))
    ready.update(info)
    if not any('error' not in v for v in info.values()):
      continue
    for _ in range(s['rounds']):
      for name, sec in peer.time(s['peer_steps']).items():
        best[name] = min(best.get(name, float('inf')), sec)
    peer.close()  # Frees its device memory before the study.
  peak = check.result['device']['peak_bf16_tflops']
  ones = {r['dtype']: r for r in check.result.get('train_step', [])
          if r['members'] == 1 and r['fused']}
  out = {}
  for name, info in ready.items():
    row = dict(info)
    if name in best:
      sec = best[name] / s['peer_steps']
      dtype = 'bfloat16' if 'bf16' in name else 'float32'
      one = ones.get(dtype) or next(iter(ones.values()), None)
      # The peer does the same math: FLOPs of the project's 1-member step.
      flops = one['flops_per_step'] if one else float('nan')
      row.update(device_report.rate_row(sec, s['batch'], 1, flops, peak))
      if dtype in ones:
        row['project_1_member_vs_this'] = (ones[dtype]['examples_per_s'] /
                                          row['examples_per_s'])
    out[name] = row
  check.result['peer'] = out


def _probe(check: Check, program) -> None:
  t = program.trainer
  states = program.carry[0]
  tick = time.perf_counter()
  t.probe(states, 'test')  # Compiles the probe step (shared by the splits).
  first = time.perf_counter() - tick
  best = float('inf')
  for _ in range(2):
    tick = time.perf_counter()
    t.probe(states, 'train')
    best = min(best, time.perf_counter() - tick)
  check.result['probe'] = {
      'members': t.num_members, 'examples': t.num_train,
      'seconds': best, 'first_call_s': first,
      'examples_per_s': t.num_members * t.num_train / best,
      'batch': t.probe_batch}


def _study(check: Check, data) -> None:
  """The records stage on CIFAR-10-size synthetic data, within the budget."""
  from benchmarks import study_timer  # pylint: disable=g-import-not-at-top
  s = check.sizes
  plan = study_timer.plan_epochs(check.result, s, check.left() - 20,
                                 check.args.dry_run)
  check.result['study'] = plan
  check.save()
  if plan['epochs_run'] < 1:
    check.result['skipped'].append('study (no time left)')
    return
  config = check.config(s['study_members'], 'auto', 'auto', s['width'],
                        epochs=plan['epochs_run'])
  with tempfile.TemporaryDirectory(prefix='eh_device_check_') as workdir:
    check.result['study'] = study_timer.run_study(config, data, workdir,
                                                  plan, s['study_epochs'])


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default=os.environ.get('OUT') or
                      '/tmp/device_check', help='output folder')
  parser.add_argument('--dry-run', action='store_true',
                      help='CPU, toy sizes (CI)')
  parser.add_argument('--budget_s', type=float, default=None,
                      help='time budget (default 450 s; dry run 300 s)')
  args = parser.parse_args(argv)
  if args.budget_s is None:
    args.budget_s = 300.0 if args.dry_run else 450.0
  if args.dry_run:
    jax.config.update('jax_platforms', 'cpu')
  check = Check(args)
  peers = _peer_start(check)  # Builds and compiles while JAX compiles.
  try:
    _device(check)
    check.save()
    data, study_program = _train_grid(check)
    _peer(check, peers)
    check.save()
    if study_program is not None and check.left() > 40:
      _probe(check, study_program)
      study_program.release()
      check.save()
    _study(check, data)
  finally:
    for peer in peers:
      peer.close()
    check.save()
  print(device_report.markdown(check.result))
  print(f'wrote {check.json_path} and {check.md_path}')


if __name__ == '__main__':
  main()
