"""Every config field checked before any work, with messages that name it.

``runner.run`` calls :func:`validate` on every process before loading data,
so a bad value stops the run at once instead of as a failure deep inside a
stage (or, in a multi-process run, as an unrelated collective timeout on
another process). Each stage checks its own config block (the ``validate``
of its row in ``stages.STAGES``, in the stage's home module); this module
adds what spans stages: seeds, the width, ``config.archs`` against the
model registry (the names become file names), the analysis windows against
the training run's probe schedule, and the input files (stage_inputs.py).
"""

from __future__ import annotations

import math

from easyhard_jax import config_fields
from easyhard_jax import stage_inputs
from easyhard_jax import stages

_field = config_fields.get


def _window_has_probes(config, field: str) -> None:
  """Refuses a window (lo, hi] in epochs that holds no probe of the run."""
  lo, hi = _field(config, field)
  if _field(config, 'analysis.source') == 'fused':
    epochs = [float(e) for e in range(1, config.epochs + 1)]
  else:
    from easyhard_jax.train import probe_schedule
    spe = 10_000  # Fine enough that fractions of an epoch land exactly.
    epochs = [s / spe for s in probe_schedule.probe_schedule(config, spe)]
  if not any(lo < e <= hi for e in epochs):
    shown = ', '.join(f'{e:g}' for e in epochs[:12])
    raise ValueError(
        f'config.{field} {(lo, hi)} holds no probe: the run probes at epochs '
        f'{shown}{" ..." if len(epochs) > 12 else ""} (the window is '
        '(start, end], in epochs). Choose a window inside the run.')


SEED_FIELDS = ('seed', 'label_noise.seed', 'analysis.agreement.seed',
               'analysis.similarity.seed', 'causes.label_seed')


def _validate_numbers(config) -> None:
  """Seeds JAX keys can hold, a finite width."""
  for field in SEED_FIELDS:
    value = _field(config, field)
    # jax.random.key keeps 32 bits: 2**32 would silently be seed 0.
    if value is not None and (isinstance(value, bool) or
                              not isinstance(value, int) or
                              not 0 <= value < 2**31):
      raise ValueError(f'config.{field} must be an integer in [0, 2**31), '
                       f'got {value!r} (larger seeds alias smaller ones).')
  width = config.get('width')
  if isinstance(width, (int, float)) and not math.isfinite(width):
    raise ValueError(f'config.width must be a finite number > 0, got '
                     f'{width!r}.')


def validate(config, mode: str | None = None,
             workdir: str | None = None) -> None:
  """Raises naming the field (or file) for any impossible config value.

  Args:
    config: the study config.
    mode: the ``--mode`` that will run (None: check every stage's inputs).
    workdir: the workdir, checked to be a usable directory path (or an
      object-store URL, ``gs://...``).
  """
  _validate_numbers(config)
  stages.validate(config)
  if config.get('analysis') is not None:
    _window_has_probes(config, 'analysis.window')
  if tuple(_field(config, 'analysis.label_issues.window') or ()):
    _window_has_probes(config, 'analysis.label_issues.window')
  stage_inputs.check(config, mode, workdir)
