"""Training throughput: fused per-example outputs, member strategies, a peer.

  python -m benchmarks.train_step                      # resnet18, 28x28x1
  python -m benchmarks.train_step --peer=torch         # + PyTorch, same run
  python -m benchmarks.train_step --arch=cnn --image_size=8 --channels=1

Measures, on the current backend, side by side in one run (rounds are
interleaved so machine noise hits every variant alike; best round kept):

1. examples/s of the M-member train step with and without the scatter of
   per-example outputs (the fused-statistics overhead);
2. examples/s of an M-member ensemble for each member strategy against one
   model trained alone, which is also the rate of training the M members one
   after another ("vs sequential" > 1 is a win);
3. with ``--peer=torch`` (needs the ``peer`` extra: ``pip install -e
   '.[peer]'``): the same network, batch and augmentation in PyTorch, eager
   with channels_last (and ``torch.compile`` with ``--peer_compile``), in a
   worker process whose rounds alternate with JAX's; the ratio
   project / PyTorch is printed.

Prints a Markdown table (paste it into the README) and a JSON line.
"""

from __future__ import annotations

import json

import jax
from absl import app
from absl import flags

from benchmarks import harness
from benchmarks import torch_peer
from easyhard_jax.train import config_checks
from easyhard_jax.train import steps as steps_lib

_ARCH = flags.DEFINE_string('arch', 'resnet18', 'Model name.')
_WIDTH = flags.DEFINE_float('width', 0.25, 'Width multiplier.')
_MEMBERS = flags.DEFINE_integer('members', 4, 'Members in the ensemble.')
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Per-member batch size.')
_SIZE = flags.DEFINE_integer('image_size', 28, 'Image height and width.')
_CHANNELS = flags.DEFINE_integer('channels', 1, 'Image channels.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per round.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Interleaved rounds (best of).')
_DTYPE = flags.DEFINE_string('dtype', 'auto', 'float32 | bfloat16 | auto.')
_PEER = flags.DEFINE_enum('peer', '', ['', 'torch'],
                          'Also time the PyTorch peer (resnet18 only).')
_PEER_COMPILE = flags.DEFINE_bool('peer_compile', False,
                                  'Also time torch.compile (needs a C++ '
                                  'compiler on CPU; slow to compile).')
_ONLY_SINGLE = flags.DEFINE_bool('only_single', False,
                                 'Time only the one-model step (with '
                                 '--peer: the head-to-head row alone).')


def _config(members: int, strategy: str):
  return harness.study_config(
      'default', archs=_ARCH.value, width=_WIDTH.value,
      seeds_per_arch=members, batch_size=_BATCH.value,
      member_strategy=strategy, dtype=_DTYPE.value, epochs=1)


def _peer(num_examples: int):
  """Starts the PyTorch worker (same network, batch and data shape)."""
  dtype = config_checks.compute_dtype(_config(1, 'auto'))
  amp = dtype != jax.numpy.float32
  variants = [{'name': 'PyTorch eager, channels_last', 'amp_bf16': amp,
               'channels_last': True}]
  if _PEER_COMPILE.value:
    variants.append({'name': 'PyTorch torch.compile, channels_last',
                     'amp_bf16': amp, 'channels_last': True, 'compile': True})
  return torch_peer.PeerProcess({
      'shape': [_SIZE.value, _SIZE.value, _CHANNELS.value],
      'num_examples': num_examples, 'batch_size': _BATCH.value,
      'width': _WIDTH.value, 'variants': variants, 'warmup': 2})


def main(argv):
  del argv
  m, b = _MEMBERS.value, _BATCH.value
  n = max(8 * b, 2048)
  shape = (_SIZE.value, _SIZE.value, _CHANNELS.value)
  data = harness.synthetic_dataset(n, 8, shape)
  if _PEER.value and _ARCH.value != 'resnet18':
    raise app.UsageError('--peer mirrors resnet18 only.')
  peer = _peer(n) if _PEER.value == 'torch' else None
  default = config_checks.member_strategy(_config(m, 'auto'))
  variants = {'one model (sequential baseline)': (1, default, True)}
  if not _ONLY_SINGLE.value:
    variants.update({
        'one model, no per-example outputs': (1, default, False),
        f'{m} members {default}, no per-example outputs': (m, default, False),
    })
    for strategy in steps_lib.STRATEGIES:
      variants[f'{m} members {strategy}'] = (m, strategy, True)
  programs = {name: harness.TrainProgram(_config(members, strategy), data,
                                         _ARCH.value, record=record)
              for name, (members, strategy, record) in variants.items()}
  harness.compile_all(list(programs.values()), threads=1)
  for name, p in programs.items():
    if p.error:
      raise RuntimeError(f'{name}: {p.error}')
  for p in programs.values():
    p.run(2)  # Warm up.
  runs = {name: (lambda p=p: p.run(_STEPS.value))
          for name, p in programs.items()}
  peer_info = {}
  if peer is not None:
    peer_info = peer.ready()
    names = [k for k, v in peer_info.items() if 'error' not in v]
    for k in names:
      variants[k] = (1, 'torch', True)
    if names:
      # One worker call times every peer variant for one round.
      cache = {}

      def peer_run(name, first):
        if name == first:
          cache.update(peer.time(_STEPS.value))
        return cache[name]

      for k in names:
        runs[k] = lambda k=k: peer_run(k, names[0])
  best = harness.interleaved_best(runs, _ROUNDS.value)
  if peer is not None:
    peer.close()
  rows = {}
  for name, sec in best.items():
    members = variants[name][0]
    sec /= _STEPS.value
    rows[name] = {'ms_per_step': 1e3 * sec,
                  'examples_per_s': members * b / sec,
                  'per_member_examples_per_s': b / sec}
    if name in programs:
      rows[name]['gflop_per_s'] = programs[name].flops_per_step / sec / 1e9
  single = rows['one model (sequential baseline)']['examples_per_s']
  summary = harness.device_summary()
  print(f'\n{_ARCH.value} width {_WIDTH.value}, {"x".join(map(str, shape))},'
        f' batch {b}/member, {summary["backend"]} ({summary["device_kind"]},'
        f' {summary["host_cores"]} cores, load {summary["load_average_1min"]})'
        f', dtype {_DTYPE.value}, best of {_ROUNDS.value} rounds x '
        f'{_STEPS.value} steps\n')
  print('| variant | ms/step | examples/s | per-member ex/s | vs sequential |')
  print('|---|---|---|---|---|')
  for name, r in rows.items():
    print(f"| {name} | {r['ms_per_step']:.1f} | {r['examples_per_s']:.0f} | "
          f"{r['per_member_examples_per_s']:.0f} | "
          f"{r['examples_per_s'] / single:.2f}x |")
  full = rows.get(f'{m} members {default}')
  bare = rows.get(f'{m} members {default}, no per-example outputs')
  if full and bare:
    print(f'\nper-example outputs cost '
          f'{100 * (full["ms_per_step"] - bare["ms_per_step"]) / bare["ms_per_step"]:+.1f}'
          f'% of step time ({m} members, {default})')
  for k, v in peer_info.items():
    if k in rows:
      print(f'project one model / {k}: '
            f'{single / rows[k]["examples_per_s"]:.2f}x')
    else:
      print(f'{k}: {v.get("error", v)}')
  print(json.dumps({'arch': _ARCH.value, 'width': _WIDTH.value,
                    'shape': shape, 'batch_size': b, **summary,
                    'rows': rows, 'peer': peer_info}))


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
