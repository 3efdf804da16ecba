"""Every config field checked before any work, with messages that name it.

``runner.run`` calls :func:`validate` on every process before loading data,
so a bad value stops the run at once instead of as a failure deep inside a
stage (or, in a multi-process run, as an unrelated collective timeout on
another process). Field values that become file names (architecture lists)
are checked against the model registry here, before they reach the disk.
"""

from __future__ import annotations

from easyhard_jax import config_fields
from easyhard_jax import models
from easyhard_jax.train import config_checks

# Architecture list fields: 'study' (= config.archs) or registry names.
ARCH_FIELDS = ('removal.archs', 'compression.archs', 'causes.archs',
               'probe_checkpoints.archs')


_field = config_fields.get


def _archs(config, field: str) -> list[str]:
  names = config_fields.arch_list(config, field)
  unknown = [a for a in names if a not in models.available()]
  if unknown or not names:
    raise ValueError(
        f'config.{field} must be \'study\' or comma-separated model names '
        f'(available: {", ".join(models.available())}); got '
        f'{_field(config, field)!r}.')
  return names


def _at_least(config, dotted: str, low: int = 1) -> None:
  value = _field(config, dotted)
  if value is None:
    return
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f'config.{dotted} must be an integer >= {low}, got '
                     f'{value!r}.')


def _validate_analysis(config) -> None:
  cfg = config.get('analysis')
  if cfg is None:
    return
  if cfg.source not in ('probe', 'fused'):
    raise ValueError("config.analysis.source must be 'probe' or 'fused', "
                     f'got {cfg.source!r}.')
  lo, hi = cfg.window
  if not 0 <= lo < hi:
    raise ValueError('config.analysis.window must be (start, end) in epochs '
                     f'with 0 <= start < end, got {tuple(cfg.window)}.')
  if not 0 < cfg.sets.fraction <= 0.5:
    raise ValueError('config.analysis.sets.fraction must lie in (0, 0.5] '
                     f'(easy and hard sets are disjoint), got '
                     f'{cfg.sets.fraction}.')


def _validate_causes(config) -> None:
  cfg = config.get('causes')
  if cfg is None:
    return
  from easyhard_jax.experiments import causes
  unknown = [v for v in cfg.variants if v not in causes.VARIANTS]
  if unknown:
    raise ValueError(f'Unknown config.causes.variants {unknown}; known: '
                     f'{sorted(causes.VARIANTS)}.')
  for field in ('causes.seeds', 'causes.epochs', 'causes.large_batch_size',
                'causes.full_batch_epochs'):
    _at_least(config, field)
  study = config_fields.arch_list(config)
  outside = [a for a in _archs(config, 'causes.archs') if a not in study]
  if outside:
    raise ValueError(f'config.causes.archs {outside} are not in the study '
                     '(config.archs); the baseline easiness comes from it.')


def validate(config) -> None:
  """Raises ValueError naming the field for any impossible config value."""
  config_checks.validate(config)
  for field in ARCH_FIELDS:
    if _field(config, field) is not None:
      _archs(config, field)
  from easyhard_jax.experiments import sweeps
  for kind, block in sweeps.KINDS.items():
    if config.get(block) is not None:
      sweeps.sweep_config(config, kind)
  _validate_causes(config)
  _validate_analysis(config)
