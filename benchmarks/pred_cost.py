"""Cost of recording the predicted class (``pred``) in the fused train step.

  python -m benchmarks.pred_cost [--steps=100] [--rounds=10] [--archs=cnn,resnet18]

The records stage's train step (``ensemble.ArchTrainer.train_step``: the
digits study's members, model, optimizer and augmentation) is compiled
twice: with the fused buffers of ``steps.FUSED_FIELDS`` (pred included) and
without the ``pred`` buffer (the step then does not scatter it; the arg-max
itself is computed either way, for ``correct``). The two run in alternating
rounds of ``--steps`` steps in one process, so both see the same machine
load; the script prints the median and minimum seconds per step of each,
the ratios, the median of the per-round (paired) ratios, and XLA's cost
analysis (flops, bytes accessed) of the two compiled steps.
Runtime: about 2 minutes on 2 CPU cores (compilation included).
"""

from __future__ import annotations

import functools
import os
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import digits
from easyhard_jax import distributed
from easyhard_jax.data import device_ops
from easyhard_jax.data import sources
from easyhard_jax.train import ensemble
from easyhard_jax.train import steps as steps_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

_STEPS = flags.DEFINE_integer('steps', 100, 'Steps per timed round.')
_ROUNDS = flags.DEFINE_integer('rounds', 10, 'Alternating rounds per variant.')
_ARCHS = flags.DEFINE_string('archs', 'cnn,resnet18', 'Architectures.')


def _time_rounds(trainer, variants, steps: int, rounds: int):
  """{variant: [seconds per step of each round]}, rounds interleaved."""
  perms = trainer.epoch_perms(0)
  carry = {}
  for name, fields in variants.items():
    buffers = distributed.put(steps_lib.empty_buffers(
        trainer.num_members, trainer.num_train, fields), trainer.replicated)
    states = trainer.init_states()
    states, buffers = trainer.step(states, buffers, perms)  # Compiles.
    jax.block_until_ready((states, buffers))
    carry[name] = (states, buffers)
  times = {name: [] for name in variants}
  for _ in range(rounds):
    for name in variants:
      states, buffers = carry[name]
      tick = time.perf_counter()
      for _ in range(steps):
        states, buffers = trainer.step(states, buffers, perms)
      jax.block_until_ready((states, buffers))
      times[name].append((time.perf_counter() - tick) / steps)
      carry[name] = (states, buffers)
  return times


def _xla_cost(trainer, config, fields) -> dict[str, float]:
  """XLA's cost analysis (flops, bytes accessed) of one train step."""
  t = trainer
  fn = jax.jit(functools.partial(
      steps_lib.ensemble_train_step, strategy=t.strategy, model=t.model,
      optimizer=t.optimizer, batch_size=config.batch_size,
      augment=device_ops.AugmentConfig(config.augment.crop_padding,
                                       bool(config.augment.horizontal_flip)),
      mean=t.mean, std=t.std, dtype=t.dtype), donate_argnums=(0, 1))
  buffers = steps_lib.empty_buffers(t.num_members, t.num_train, fields)
  with jax.threefry_partitionable(False):  # As ArchTrainer's step.
    compiled = fn.lower(t.init_states(), buffers, t.aug_keys, t.schedule,
                        *t.feed.args(t.epoch_perms(0))).compile()
  cost = compiled.cost_analysis()
  cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
  return {k: float(cost.get(k, float('nan')))
          for k in ('flops', 'bytes accessed')}


def main(argv):
  del argv
  config = digits.get_config()
  data = sources.load_dataset(config)
  without = tuple(f for f in steps_lib.FUSED_FIELDS if f != 'pred')
  variants = {'with_pred': steps_lib.FUSED_FIELDS, 'without_pred': without}
  print(f'backend {jax.default_backend()}, {config.seeds_per_arch} members, '
        f'batch {config.batch_size}, {_STEPS.value} steps x {_ROUNDS.value} '
        'rounds per variant')
  for arch in _ARCHS.value.split(','):
    trainer = ensemble.ArchTrainer(config, data, arch)
    times = _time_rounds(trainer, variants, _STEPS.value, _ROUNDS.value)
    med = {k: float(np.median(v)) for k, v in times.items()}
    low = {k: float(np.min(v)) for k, v in times.items()}
    # Paired: each round's two variants ran back to back (same load).
    paired = np.asarray(times['with_pred']) / np.asarray(
        times['without_pred'])
    print(f'{arch}: ms/step with pred: median {med["with_pred"] * 1e3:.3f}, '
          f'min {low["with_pred"] * 1e3:.3f}; without: median '
          f'{med["without_pred"] * 1e3:.3f}, min '
          f'{low["without_pred"] * 1e3:.3f}; ratio with/without: of medians '
          f'{med["with_pred"] / med["without_pred"]:.3f}, of minima '
          f'{low["with_pred"] / low["without_pred"]:.3f}, paired rounds '
          f'median {np.median(paired):.3f} (range {paired.min():.3f}-'
          f'{paired.max():.3f})')
    cost = {k: _xla_cost(trainer, config, f) for k, f in variants.items()}
    print(f'{arch}: XLA cost per step with / without pred: flops '
          f"{cost['with_pred']['flops']:.6g} / "
          f"{cost['without_pred']['flops']:.6g}, bytes accessed "
          f"{cost['with_pred']['bytes accessed']:.6g} / "
          f"{cost['without_pred']['bytes accessed']:.6g}")

if __name__ == '__main__':
  app.run(main)
