"""What the heldout stage costs: members per program, and K members' wall time.

  nice -n 19 python -m benchmarks.heldout_cost --part=scaling --members=1,8,16,32
  nice -n 19 python -m benchmarks.heldout_cost --part=wall --members=16 \\
      --per_program=1,3 --ratios=0.5,0.7,0.9

``scaling``: the train step of the --study's cnn, with M held-out members
(each its own subset mask at ratio --ratio, as experiments/heldout.py makes
them) compiled into one program, for each M of --members; M = 1 is "one at a
time". Examples/s = members x batch x steps / seconds (compilation and the
first step excluded; compile seconds listed apart), best of --rounds rounds
interleaved over the M values so machine noise hits them alike.

``wall``: the whole training of --members members per ratio (one
architecture, cnn) on the --study's data, through the stage's own
``heldout.train_members`` into a fresh workdir, for each programs size of
--per_program (1 = one member at a time); compilation included, since a
real run pays it (the persistent cache is off).

Prints Markdown tables and a JSON line. This machine is shared (2 cores, a
long training run beside it): figures are noisy, compare within one run.
"""

from __future__ import annotations

import json
import tempfile
import time

import jax
import numpy as np
from absl import app
from absl import flags

from benchmarks import harness
from easyhard_jax import distributed
from easyhard_jax.data import streaming
from easyhard_jax.experiments import heldout
from easyhard_jax.train import ensemble
from easyhard_jax.train import steps as steps_lib

_PART = flags.DEFINE_enum('part', 'scaling', ['scaling', 'wall'],
                          'What to measure.')
_STUDY = flags.DEFINE_enum('study', 'digits', ['digits', 'fashion_mnist'],
                           'Whose cnn and data (fashion_mnist: the first '
                           '--max_train examples of the Debian files).')
_MAX_TRAIN = flags.DEFINE_integer('max_train', 20000,
                                  'fashion_mnist: training examples kept.')
_MEMBERS = flags.DEFINE_list('members', ['1', '8', '16', '32'],
                             'scaling: members per program; wall: K.')
_RATIO = flags.DEFINE_float('ratio', 0.7, 'scaling: the subset ratio.')
_RATIOS = flags.DEFINE_list('ratios', ['0.5', '0.7', '0.9'],
                            'wall: the subset ratios.')
_PER_PROGRAM = flags.DEFINE_list('per_program', ['1', '3'],
                                 'wall: members_per_program values.')
_EPOCHS = flags.DEFINE_integer('epochs', 8, 'wall: epochs per member.')
_STEPS = flags.DEFINE_integer('steps', 20, 'scaling: timed steps per round.')
_ROUNDS = flags.DEFINE_integer('rounds', 2, 'scaling: rounds (best of).')


def _config():
  if _STUDY.value == 'digits':
    c = harness.study_config('digits', archs='cnn')
  else:
    c = harness.study_config('fashion_mnist', archs='cnn',
                             max_train_examples=_MAX_TRAIN.value)
  c.compilation_cache_dir = ''
  return c


def _trainer(config, data, m: int) -> ensemble.ArchTrainer:
  n = len(data.train_labels)
  members, keep = heldout.member_plan(
      _with(config, **{'heldout.members': max(m, 2)}), 'cnn', _RATIO.value, n)
  return ensemble.ArchTrainer(config, data, 'cnn', members=members[:m],
                              keep=keep[:m])


def _with(config, **fields):
  return harness.with_fields(config.copy_and_resolve_references(), **fields)


def _scaling() -> dict:
  config = _config()
  data = streaming.load(config)
  runs, compile_s = {}, {}
  for m in (int(v) for v in _MEMBERS.value):
    t = _trainer(config, data, m)
    states = t.init_states()
    buffers = distributed.put(steps_lib.empty_buffers(m, t.num_train),
                              t.replicated)
    feed = {'epoch': 0, 'it': t.epoch_feed(0)}

    def fed(t=t, feed=feed):
      try:
        return next(feed['it'])
      except StopIteration:
        feed['epoch'] += 1
        feed['it'] = t.epoch_feed(feed['epoch'])
        return next(feed['it'])

    tick = time.perf_counter()
    states, buffers = t.step(states, buffers, fed())
    jax.block_until_ready(states)
    compile_s[m] = time.perf_counter() - tick
    box = {'states': states, 'buffers': buffers}

    def run(t=t, box=box, fed=fed):
      tick = time.perf_counter()
      for _ in range(_STEPS.value):
        box['states'], box['buffers'] = t.step(box['states'], box['buffers'],
                                               fed())
      jax.block_until_ready(box['states'])
      return time.perf_counter() - tick

    runs[m] = run
  best = harness.interleaved_best(runs, _ROUNDS.value)
  rate = {m: m * config.batch_size * _STEPS.value / s for m, s in best.items()}
  one = rate.get(1)
  print(f'\n{_STUDY.value} cnn, ratio {_RATIO.value}, batch '
        f'{config.batch_size}, {_STEPS.value} steps x {_ROUNDS.value} rounds '
        '(best):\n')
  print('| members in one program | examples/s | vs one at a time | '
        'first step (compile) s |')
  print('|---|---|---|---|')
  for m in rate:
    rel = f'{rate[m] / one:.2f}x' if one else 'n/a'
    print(f'| {m} | {rate[m]:.0f} | {rel} | {compile_s[m]:.1f} |')
  return {'part': 'scaling', 'examples_per_s': rate, 'compile_s': compile_s}


def _wall() -> dict:
  config = _config()
  data = streaming.load(config)
  k = int(_MEMBERS.value[0])
  ratios = tuple(float(r) for r in _RATIOS.value)
  out = {}
  for per in (int(v) for v in _PER_PROGRAM.value):
    c = _with(config, **{'heldout.archs': 'cnn', 'heldout.members': k,
                         'heldout.ratios': ratios,
                         'heldout.epochs': _EPOCHS.value,
                         'heldout.members_per_program': per})
    with tempfile.TemporaryDirectory() as workdir:
      tick = time.perf_counter()
      heldout.train_members(c, workdir, data)
      out[per] = time.perf_counter() - tick
  total = k * len(ratios)
  print(f'\n{_STUDY.value} ({len(data.train_labels)} train examples), cnn, '
        f'K={k} members x ratios {ratios} = {total} members, '
        f'{_EPOCHS.value} epochs each, compilation included:\n')
  print('| members per program | wall s | s per member |')
  print('|---|---|---|')
  for per, s in out.items():
    print(f'| {per} | {s:.1f} | {s / total:.2f} |')
  return {'part': 'wall', 'members': total, 'seconds': out}


def main(argv):
  del argv
  res = _scaling() if _PART.value == 'scaling' else _wall()
  res.update(study=_STUDY.value, device=harness.device_summary())
  print(json.dumps(res, default=float))


if __name__ == '__main__':
  app.run(main)
