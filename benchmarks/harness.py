"""Shared pieces of the benchmarks: synthetic data, configs, compiled programs.

A ``TrainProgram`` is one ensemble train step exactly as the records stage
builds it (``ensemble.ArchTrainer``: same model, optimizer, augmentation and
member strategy), lowered and compiled ahead of time so that compilation can
run on several threads at once, its FLOPs read from XLA's cost analysis, and
then timed step by step on the device-resident dataset.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from easyhard_jax import distributed
from easyhard_jax.data import device_ops
from easyhard_jax.data import sources
from easyhard_jax.train import ensemble
from easyhard_jax.train import mesh as mesh_lib
from easyhard_jax.train import steps as steps_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def study_config(base: str = 'default', **fields):
  """``configs/<base>.py``'s config with dotted-name ``fields`` overridden."""
  import importlib  # pylint: disable=g-import-not-at-top
  return with_fields(importlib.import_module(f'configs.{base}').get_config(),
                     **fields)


def with_fields(config, **fields):
  """``config`` with dotted-name ``fields`` set (in place; returns it)."""
  for key, value in fields.items():
    target, parts = config, key.split('.')
    for p in parts[:-1]:
      target = target[p]
    target[parts[-1]] = value
  return config


def synthetic_dataset(num_train: int, num_test: int, shape,
                      num_classes: int = 10, seed: int = 0) -> sources.Dataset:
  """Uniformly random uint8 images and labels (the work, not the learning)."""
  rng = np.random.default_rng(seed)
  images = lambda n: rng.integers(0, 256, (n,) + tuple(shape), np.uint8)
  labels = lambda n: rng.integers(0, num_classes, n).astype(np.int32)
  return sources.Dataset('synthetic', images(num_train), labels(num_train),
                         images(num_test), labels(num_test), num_classes)


def init_states(config, data: sources.Dataset, arch: str = 'resnet18'):
  """Member-stacked initial states (slice ``[:m]`` for fewer members)."""
  return ensemble.ArchTrainer(config, data, arch).init_states()


def default_strategy() -> str:
  """The member strategy ``'auto'`` picks on this backend."""
  from easyhard_jax.train import config_checks  # pylint: disable=g-import-not-at-top
  return config_checks.member_strategy(study_config('default',
                                                    member_strategy='auto'))


def flops_of(compiled, lowered=None) -> float:
  """FLOPs of one call from XLA's cost analysis (compiled, else lowered HLO)."""
  for obj in (compiled, lowered):
    if obj is None:
      continue
    try:
      cost = obj.cost_analysis()
    except Exception:  # pylint: disable=broad-except
      continue
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else {}
    if cost and cost.get('flops', 0) > 0:
      return float(cost['flops'])
  return float('nan')


class TrainProgram:
  """One member-stacked train step of ``arch``, compiled ahead of time.

  Args:
    config: the study config (members, strategy, dtype, batch size, ...).
    data: a sources.Dataset (moved to the device here).
    arch: model name.
    record: scatter the fused per-example outputs (False: benchmark only).
    states: optional initial member-stacked states to copy (skips init).
    members, keep: the heldout stage's member dicts and subset masks
      [members, N] (experiments/heldout.member_plan); None: the study's.
  """

  def __init__(self, config, data: sources.Dataset, arch: str,
               record: bool = True, states=None, members=None, keep=None):
    t = self.trainer = (ensemble.ArchTrainer(config, data, arch)
                        if members is None else ensemble.ArchTrainer(
                            config, data, arch, members=members, keep=keep))
    self.members, self.batch_size = t.num_members, config.batch_size
    self.examples_per_step = self.members * self.batch_size
    aug = device_ops.AugmentConfig(config.augment.crop_padding,
                                   bool(config.augment.horizontal_flip))
    # The step train_arch runs (ArchTrainer.train_step), with ``record``.
    self.jitted = jax.jit(functools.partial(
        steps_lib.ensemble_train_step, strategy=t.strategy, record=record,
        model=t.model, optimizer=t.optimizer, batch_size=config.batch_size,
        augment=aug, mean=t.mean, std=t.std, dtype=t.dtype,
        batch_sharding=mesh_lib.batch_sharding(t.mesh), member_axis=None),
                          donate_argnums=(0, 1))
    self._states = states
    self.lowered = self.compiled = self.carry = self.error = None
    self.compile_s = float('nan')

  def lower(self) -> None:
    """Traces and lowers (main thread: tracing is cheap, compiling is not)."""
    t = self.trainer
    states = self._states if self._states is not None else t.init_states()
    states = distributed.put(jax.tree.map(lambda a: a.copy(), states),
                             t.replicated)
    buffers = distributed.put(
        steps_lib.empty_buffers(t.num_members, t.num_train), t.replicated)
    self.args = (t.aug_keys, t.schedule, *t.feed.args(t.epoch_perms(0)))
    self.carry = [states, buffers]
    with jax.threefry_partitionable(False):  # As ArchTrainer's step.
      self.lowered = self.jitted.lower(states, buffers, *self.args)

  def compile(self) -> None:
    """XLA compilation (releases the GIL: threads can compile side by side)."""
    tick = time.perf_counter()
    self.compiled = self.lowered.compile()
    self.compile_s = time.perf_counter() - tick

  @property
  def flops_per_step(self) -> float:
    return flops_of(self.compiled, self.lowered)

  def run(self, steps: int) -> float:
    """Seconds for ``steps`` train steps of every member (after a sync)."""
    fn = self.compiled or self.jitted
    jax.block_until_ready(self.carry)
    tick = time.perf_counter()
    for _ in range(steps):
      self.carry[:] = fn(*self.carry, *self.args)
    jax.block_until_ready(self.carry)
    return time.perf_counter() - tick

  def release(self) -> None:
    """Frees the device state (the trainer's dataset copy goes with it)."""
    self.carry = self.compiled = self.lowered = self.trainer = None


def compile_all(programs, threads: int, timeout_s: float | None = None
                ) -> list:
  """Lowers each program in order and compiles them on ``threads`` threads.

  Tracing stays on the calling thread; each program starts compiling as soon
  as it is lowered, so tracing overlaps compilation. Returns the programs
  not compiled after ``timeout_s`` (their daemon threads go on; the caller
  skips them). Order the list by priority.
  """
  import queue  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  todo = queue.Queue()

  def worker():
    while (p := todo.get()) is not None:
      try:
        p.compile()
      except Exception as e:  # pylint: disable=broad-except
        p.error = repr(e)[:1000]

  pool = [threading.Thread(target=worker, daemon=True)
          for _ in range(max(1, threads))]
  for t in pool:
    t.start()
  end = None if timeout_s is None else time.perf_counter() + timeout_s
  for p in programs:
    if end is not None and time.perf_counter() > end:
      break
    try:
      p.lower()
    except Exception as e:  # pylint: disable=broad-except
      p.error = repr(e)[:1000]
      continue
    todo.put(p)
  for _ in pool:
    todo.put(None)
  for t in pool:
    t.join(None if end is None else max(0.0, end - time.perf_counter()))
  return [p for p in programs if p.compiled is None and p.error is None]


def steps_for(run: Callable[[int], float], target_s: float,
              lo: int = 2, hi: int = 200) -> int:
  """Steps per timed round so that a round lasts about ``target_s``."""
  per_step = run(lo) / lo
  return int(min(hi, max(lo, math.ceil(target_s / max(per_step, 1e-6)))))


def interleaved_best(runs: dict[str, Callable[[], float]], rounds: int
                     ) -> dict[str, float]:
  """Best (least) seconds of each run over ``rounds`` interleaved rounds.

  Other load on a shared machine only ever adds time, so the minimum is the
  least noisy estimate; interleaving makes slow spells hit every run alike.
  """
  best = {name: float('inf') for name in runs}
  for _ in range(rounds):
    for name, run in runs.items():
      best[name] = min(best[name], run())
  return best


def device_summary() -> dict[str, Any]:
  """Backend, device kind and count, host cores, load, versions."""
  d = jax.devices()[0]
  load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
  import flax  # pylint: disable=g-import-not-at-top
  return {'backend': jax.default_backend(), 'device_kind': d.device_kind,
          'devices': jax.device_count(), 'host_cores': os.cpu_count(),
          'load_average_1min': round(load, 2), 'jax': jax.__version__,
          'flax': flax.__version__}
