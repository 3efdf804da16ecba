"""Optimizers and learning-rate schedules, from the config."""

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
