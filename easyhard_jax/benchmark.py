"""Training throughput benchmark: fused per-example outputs and member strategies.

  python -m easyhard_jax.benchmark                       # resnet18, 28x28x1
  python -m easyhard_jax.benchmark --arch=cnn --image_size=8 --channels=1

Measures, on the current backend, side by side in one process (rounds are
interleaved so machine noise hits every variant alike):

1. examples/s of the M-member train step with and without the scatter of
   per-example outputs (the fused-statistics overhead);
2. examples/s of an M-member ensemble (all members together) for each member
   strategy against one model trained alone, which is also the rate of
   training the M members one after another ("vs sequential" > 1 is a win).

Prints a Markdown table (paste it into the README) and a JSON line.
"""

from __future__ import annotations

import functools
import json
import time

import jax
import numpy as np
from absl import app
from absl import flags

from easyhard_jax.data import device_ops
from easyhard_jax.data import sources
from easyhard_jax.train import ensemble
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


def _config(members: int, strategy: str):
  from configs import default  # pylint: disable=g-import-not-at-top
  c = default.get_config()
  c.archs = _ARCH.value
  c.width = _WIDTH.value
  c.seeds_per_arch = members
  c.batch_size = _BATCH.value
  c.member_strategy = strategy
  c.dtype = _DTYPE.value
  c.epochs = 1
  return c


def _synthetic(num_examples: int) -> sources.Dataset:
  rng = np.random.default_rng(0)
  shape = (num_examples, _SIZE.value, _SIZE.value, _CHANNELS.value)
  images = rng.integers(0, 256, shape, dtype=np.uint8)
  labels = rng.integers(0, 10, num_examples).astype(np.int32)
  return sources.Dataset('synthetic', images, labels, images[:8], labels[:8],
                         10)


def _variant(data, members: int, strategy: str, record: bool):
  """Returns run(steps) -> seconds for one compiled variant (warm)."""
  t = ensemble.ArchTrainer(_config(members, strategy), data, _ARCH.value)
  step = jax.jit(functools.partial(
      steps_lib.ensemble_train_step, strategy=strategy, record=record,
      model=t.model, tx=t.tx, batch_size=t.config.batch_size,
      steps_per_epoch=t.spe, augment=device_ops.AugmentConfig(1, True),
      mean=t.mean, std=t.std, dtype=t.dtype), donate_argnums=(0, 1))
  n = data.train_images.shape[0]
  carry = [t.init_states(), steps_lib.empty_buffers(members, n)]
  perms = t.epoch_perms(0)

  def run(num_steps):
    jax.block_until_ready(carry)
    tick = time.perf_counter()
    for _ in range(num_steps):
      carry[:] = step(carry[0], carry[1], perms, t.aug_keys, t.num_kept,
                      t.images['train'], t.labels['train'])
    jax.block_until_ready(carry)
    return time.perf_counter() - tick

  run(2)  # Compile and warm up.
  return run


def main(argv):
  del argv
  m, b = _MEMBERS.value, _BATCH.value
  data = _synthetic(max(8 * b, 2048))
  default = ensemble.config_checks.member_strategy(_config(m, 'auto'))
  variants = {
      'one model, no per-example outputs': (1, default, False),
      'one model (sequential baseline)': (1, default, True),
      f'{m} members {default}, no per-example outputs': (m, default, False),
  }
  for strategy in steps_lib.STRATEGIES:
    variants[f'{m} members {strategy}'] = (m, strategy, True)
  runs = {name: _variant(data, *spec) for name, spec in variants.items()}
  times = {name: [] for name in runs}
  for _ in range(_ROUNDS.value):
    for name, run in runs.items():
      times[name].append(run(_STEPS.value))
  rows = {}
  for name, (members, _, _) in variants.items():
    # Best of the interleaved rounds: other load on a shared machine only
    # ever adds time, so the minimum is the least noisy estimate.
    sec = min(times[name]) / _STEPS.value
    rows[name] = {'ms_per_step': 1e3 * sec,
                  'examples_per_s': members * b / sec,
                  'per_member_examples_per_s': b / sec}
  # Training M members one after another runs at the single model's rate.
  single = rows['one model (sequential baseline)']['examples_per_s']
  device = jax.devices()[0]
  print(f'\n{_ARCH.value} width {_WIDTH.value}, {_SIZE.value}x{_SIZE.value}x'
        f'{_CHANNELS.value}, batch {b}/member, {jax.default_backend()} '
        f'({device.device_kind}, {jax.device_count()} device(s)), '
        f'dtype {_DTYPE.value}\n')
  print('| variant | ms/step | examples/s | per-member ex/s | vs sequential |')
  print('|---|---|---|---|---|')
  for name, r in rows.items():
    print(f"| {name} | {r['ms_per_step']:.1f} | {r['examples_per_s']:.0f} | "
          f"{r['per_member_examples_per_s']:.0f} | "
          f"{r['examples_per_s'] / single:.2f}x |")
  full = rows[f'{m} members {default}']['ms_per_step']
  bare = rows[f'{m} members {default}, no per-example outputs']['ms_per_step']
  print(f'\nper-example outputs cost {100 * (full - bare) / bare:+.1f}% of '
        f'step time ({m} members, {default})')
  print(json.dumps({'arch': _ARCH.value, 'backend': jax.default_backend(),
                    'rows': rows}))


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
