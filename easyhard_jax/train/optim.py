"""Optimizers, learning-rate schedules and the probe schedule, from the config."""

from __future__ import annotations

from typing import Callable

import optax


def learning_rate_schedule(config, steps_per_epoch: int,
                           total_steps: int | None = None) -> optax.Schedule:
  """``config.optimizer.schedule``: 'cosine', 'constant' or 'step'.

  Linear warm-up over ``warmup_epochs``; 'step' multiplies by ``decay_factor``
  at each epoch in ``decay_epochs``.
  """
  opt = config.optimizer
  total = total_steps or config.epochs * steps_per_epoch
  warmup = int(round(opt.get('warmup_epochs', 0.0) * steps_per_epoch))
  base = opt.learning_rate
  name = opt.get('schedule', 'cosine')
  if name == 'cosine':
    main = optax.cosine_decay_schedule(base, max(total - warmup, 1))
  elif name == 'constant':
    main = optax.constant_schedule(base)
  elif name == 'step':
    main = optax.piecewise_constant_schedule(
        base, {max(int(e * steps_per_epoch) - warmup, 1): opt.decay_factor
               for e in opt.decay_epochs})
  else:
    raise ValueError(f"optimizer.schedule must be 'cosine', 'constant' or "
                     f"'step', got {name!r}")
  if warmup == 0:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, base, warmup), main], [warmup])


_OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    'sgd': lambda lr, o: optax.sgd(lr, momentum=o.get('momentum', 0.9) or None,
                                   nesterov=o.get('nesterov', False)),
    'adam': lambda lr, o: optax.adam(lr, b1=o.get('b1', 0.9),
                                     b2=o.get('b2', 0.999)),
}


def make_optimizer(config, steps_per_epoch: int,
                   total_steps: int | None = None
                   ) -> optax.GradientTransformation:
  """SGD with momentum (or Adam) with L2 weight decay on every parameter."""
  opt = config.optimizer
  if opt.name not in _OPTIMIZERS:
    raise ValueError(f'optimizer.name must be one of {sorted(_OPTIMIZERS)}, '
                     f'got {opt.name!r}')
  lr = learning_rate_schedule(config, steps_per_epoch, total_steps)
  parts = []
  if opt.get('grad_clip_norm'):
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.get('weight_decay'):
    parts.append(optax.add_decayed_weights(opt.weight_decay))
  parts.append(_OPTIMIZERS[opt.name](lr, opt))
  return optax.chain(*parts)


def probe_schedule(config, steps_per_epoch: int,
                   total_steps: int | None = None) -> list[int]:
  """Global train steps at which the probe pass runs, sorted and unique.

  ``config.probe.first_epoch_fractions`` (e.g. (0.25, 0.5, 0.75)) places probes
  inside epoch 1; ``every_epochs`` adds one at the end of every k-th epoch;
  the end of training is always probed; ``at_init`` adds step 0.
  """
  probe = config.probe
  total = total_steps or config.epochs * steps_per_epoch
  steps = set()
  if probe.get('at_init', False):
    steps.add(0)
  fractions = tuple(probe.get('first_epoch_fractions', ()) or ())
  for f in fractions:
    if not 0.0 < f < 1.0:
      raise ValueError(
          f'probe.first_epoch_fractions must lie strictly between 0 and 1 '
          f'(got {fractions}); the end of epoch 1 is probed by every_epochs.')
    steps.add(max(1, int(round(f * steps_per_epoch))))
  every = probe.get('every_epochs', 1)
  if not isinstance(every, int) or every < 1:
    raise ValueError(f'probe.every_epochs must be an integer >= 1, got '
                     f'{every!r}.')
  steps.update(range(every * steps_per_epoch, total + 1,
                     every * steps_per_epoch))
  steps.add(total)
  return sorted(s for s in steps if s <= total)
