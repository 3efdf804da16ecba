"""Optimizers and learning-rate schedules, from the config.

The schedule's numbers (steps per epoch, warm-up and total steps, step-decay
boundaries, base learning rate) are :class:`ScheduleArgs`: traced inputs of
the train step, not constants of its program. The optimizer's static part
(:class:`Optimizer`: kind, momentum, weight decay, schedule kind, ...) builds
the optax chain inside the step from them. So every subset size of a sweep
and every epoch count trains with one compiled program, and the optimizer
state (and every checkpoint) is exactly the optax chain's: nothing is added
to it.

The schedules follow optax's formulas op for op (cosine_decay_schedule,
linear_schedule, join_schedules, piecewise_constant_schedule), with Python
constants replaced by traced scalars.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

SCHEDULES = ('cosine', 'constant', 'step')
# A step-decay boundary that is never reached: the slot of a duplicate
# boundary (optax's dict keeps one). Far below int32 overflow of b - count.
_NEVER = 2**30


class ScheduleArgs(NamedTuple):
  """The schedule's numbers: traced inputs of the train step.

  Attributes:
    steps_per_epoch: int32 [] (the resident step's batch position too).
    warmup_steps: int32 [] linear warm-up from 0.
    total_steps: int32 [] training length (cosine decays to 0 there).
    boundaries: int32 [K] step-decay boundaries counted after warm-up,
      sorted; unused slots hold a step never reached. K is the number of
      ``decay_epochs`` for the 'step' schedule, else 0 (static: it sets
      the program's shape).
    learning_rate: float32 [] the base (peak) learning rate.
  """
  steps_per_epoch: jax.Array
  warmup_steps: jax.Array
  total_steps: jax.Array
  boundaries: jax.Array
  learning_rate: jax.Array


@dataclasses.dataclass(frozen=True)
class Schedule:
  """``config.optimizer``'s schedule numbers, in epochs (resolved once).

  Attributes:
    learning_rate: the base (peak) learning rate.
    warmup_epochs: linear warm-up from 0 over this many epochs.
    decay_epochs: the 'step' schedule's decay epochs (() for the others).
  """
  learning_rate: float
  warmup_epochs: float = 0.0
  decay_epochs: tuple[float, ...] = ()

  @classmethod
  def from_config(cls, opt) -> 'Schedule':
    """``config.optimizer``'s numbers (only 'step' reads decay_epochs)."""
    return cls(learning_rate=float(opt.learning_rate),
               warmup_epochs=float(opt.warmup_epochs),
               decay_epochs=(tuple(opt.decay_epochs)
                             if opt.schedule == 'step' else ()))

  def args(self, steps_per_epoch: int, total_steps: int) -> ScheduleArgs:
    """Host (numpy) ScheduleArgs for one run length.

    Warm-up is ``round(warmup_epochs * steps_per_epoch)`` steps; 'step'
    multiplies by ``decay_factor`` at each epoch of ``decay_epochs``.
    """
    warmup = int(round(self.warmup_epochs * steps_per_epoch))
    # As optax's {boundary: factor} dict: a repeated boundary counts once.
    bounds = sorted({max(int(e * steps_per_epoch) - warmup, 1)
                     for e in self.decay_epochs})
    bounds += [_NEVER] * (len(self.decay_epochs) - len(bounds))
    return ScheduleArgs(
        steps_per_epoch=np.int32(steps_per_epoch),
        warmup_steps=np.int32(warmup),
        total_steps=np.int32(total_steps),
        boundaries=np.asarray(bounds, np.int32).reshape(
            len(self.decay_epochs)),
        learning_rate=np.float32(self.learning_rate))


def schedule_args(config, steps_per_epoch: int,
                  total_steps: int | None = None) -> ScheduleArgs:
  """Host ScheduleArgs of ``config.optimizer`` (see Schedule.args).

  ``total_steps`` defaults to ``config.epochs`` epochs.
  """
  return Schedule.from_config(config.optimizer).args(
      steps_per_epoch, total_steps or config.epochs * steps_per_epoch)


def _cosine(s: ScheduleArgs) -> optax.Schedule:
  """optax.cosine_decay_schedule(lr, max(total - warmup, 1)), traced."""
  alpha, exponent = 0.0, 1.0  # optax's defaults, kept op for op.

  def schedule(count):
    decay_steps = jnp.maximum(s.total_steps - s.warmup_steps, 1).astype(
        jnp.float32)
    count = jnp.minimum(jnp.asarray(count).astype(jnp.float32), decay_steps)
    cosine_decay = 0.5 * (1 + jnp.cos(jnp.pi * count / decay_steps))
    decayed = (1 - alpha) * cosine_decay**exponent + alpha
    return s.learning_rate * decayed

  return schedule


def _constant(s: ScheduleArgs) -> optax.Schedule:
  return lambda count: s.learning_rate


def _step(s: ScheduleArgs, decay_factor: float) -> optax.Schedule:
  """optax.piecewise_constant_schedule(lr, {b: decay_factor}), traced."""

  def schedule(count):
    v = s.learning_rate
    for k in range(s.boundaries.shape[0]):
      indicator = jnp.maximum(0.0, jnp.sign(s.boundaries[k] - count))
      v = v * indicator + (1 - indicator) * decay_factor * v
    return v

  return schedule


def learning_rate_fn(kind: str, s: ScheduleArgs,
                     decay_factor: float = 0.1) -> optax.Schedule:
  """The learning rate at each step: ``kind`` after a linear warm-up.

  As optax.join_schedules([linear_schedule(0, lr, warmup), main],
  [warmup]); with no warm-up the join selects ``main`` at every step.

  Args:
    kind: 'cosine', 'constant' or 'step'.
    s: the schedule's numbers (traced or host).
    decay_factor: the 'step' schedule's factor per boundary.
  """
  main = {'cosine': lambda: _cosine(s), 'constant': lambda: _constant(s),
          'step': lambda: _step(s, decay_factor)}[kind]()

  def schedule(count):
    # max(., 1): the warm-up branch is never selected when warmup_steps is 0.
    warmup = jnp.maximum(s.warmup_steps, 1)
    # optax.linear_schedule(0.0, lr, warmup): polynomial, power 1.
    ramp = jnp.clip(count, 0, warmup)
    frac = 1 - ramp / warmup
    warm = (0.0 - s.learning_rate) * frac + s.learning_rate
    return jnp.where(count < s.warmup_steps, warm,
                     main(count - s.warmup_steps))

  return schedule


_OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    'sgd': lambda lr, o: optax.sgd(lr, momentum=o.momentum or None,
                                   nesterov=o.nesterov),
    'adam': lambda lr, o: optax.adam(lr, b1=o.b1, b2=o.b2),
}


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """The optimizer without its schedule's numbers (hashable: jit-static).

  Two runs that differ only in subset size, epochs or learning rate have
  equal Optimizers, so their train steps are one program.
  """
  name: str = 'sgd'
  schedule: str = 'cosine'
  momentum: float = 0.9
  nesterov: bool = True
  b1: float = 0.9
  b2: float = 0.999
  weight_decay: float = 0.0
  grad_clip_norm: float = 0.0
  decay_factor: float = 0.1

  @classmethod
  def from_config(cls, config) -> 'Optimizer':
    """``config.optimizer``'s static part; unknown names raise ValueError."""
    opt = config.optimizer
    if opt.name not in _OPTIMIZERS:
      raise ValueError(f'optimizer.name must be one of {sorted(_OPTIMIZERS)}'
                       f', got {opt.name!r}')
    if opt.schedule not in SCHEDULES:
      raise ValueError(f"optimizer.schedule must be 'cosine', 'constant' or "
                       f"'step', got {opt.schedule!r}")
    # b1 and b2 are not fields of configs/default.py (a declared one would
    # change every study's records fingerprint): optax's Adam defaults.
    return cls(name=opt.name, schedule=opt.schedule,
               momentum=float(opt.momentum or 0.0),
               nesterov=bool(opt.nesterov),
               b1=float(opt.get('b1', 0.9)), b2=float(opt.get('b2', 0.999)),
               weight_decay=float(opt.weight_decay or 0.0),
               grad_clip_norm=float(opt.grad_clip_norm or 0.0),
               decay_factor=float(opt.decay_factor))

  def tx(self, s: ScheduleArgs) -> optax.GradientTransformation:
    """The optax chain with the learning rate of ``s`` (traced or host).

    SGD with momentum (or Adam) with L2 weight decay on every parameter.
    Its state does not depend on ``s``: build it inside the step.
    """
    parts = []
    if self.grad_clip_norm:
      parts.append(optax.clip_by_global_norm(self.grad_clip_norm))
    if self.weight_decay:
      parts.append(optax.add_decayed_weights(self.weight_decay))
    lr = learning_rate_fn(self.schedule, s, self.decay_factor)
    parts.append(_OPTIMIZERS[self.name](lr, self))
    return optax.chain(*parts)
