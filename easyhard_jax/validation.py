"""Every config field checked before any work, with messages that name it.

``runner.run`` calls :func:`validate` on every process before loading data,
so a bad value stops the run at once instead of as a failure deep inside a
stage (or, in a multi-process run, as an unrelated collective timeout on
another process). Field values that become file names (architecture lists)
are checked against the model registry here, before they reach the disk.
"""

from __future__ import annotations

import math

from easyhard_jax import config_fields
from easyhard_jax import models
from easyhard_jax import stage_inputs
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
  _window_has_probes(config, 'analysis.window')
  for field in ('analysis.dynamics_window', 'analysis.label_issues.window'):
    window = tuple(_field(config, field) or ())
    if window and (len(window) != 2 or not window[0] < window[1]):
      raise ValueError(f'config.{field} must be (start, end) in epochs with '
                       f'start < end, got {window}.')
  if tuple(_field(config, 'analysis.label_issues.window') or ()):
    _window_has_probes(config, 'analysis.label_issues.window')
  from easyhard_jax.analysis import sets  # Its rule checks its own fields.
  try:
    sets.SetRule.from_config(cfg.sets)
  except ValueError as e:
    raise ValueError(f'config.analysis.{e}') from e
  _at_least(config, 'analysis.sets.k', 0)
  level = _field(config, 'analysis.agreement.ci_level')
  if not (isinstance(level, (int, float)) and 0 < level < 1):
    raise ValueError('config.analysis.agreement.ci_level must lie in (0, 1) '
                     f'(e.g. 0.95), got {level!r}.')
  for field in ('analysis.similarity.block_size',
                'analysis.similarity.max_set_size',
                'analysis.similarity.max_streamed_images',
                'report.examples_per_class', 'report.max_classes'):
    _at_least(config, field)
  _at_least(config, 'analysis.label_issues.top_k', 0)
  calibration = _field(config, 'analysis.label_issues.calibration')
  if calibration is not None and calibration not in ('class_threshold',
                                                     'none'):
    raise ValueError('config.analysis.label_issues.calibration must be '
                     f"'class_threshold' or 'none', got {calibration!r}.")
  kind = _field(config, 'analysis.label_issues.score')
  if kind is not None and kind not in ('p_given', 'agreed_margin'):
    raise ValueError('config.analysis.label_issues.score must be '
                     f"'p_given' or 'agreed_margin', got {kind!r}.")
  cutoff = _field(config, 'analysis.similarity.hf_cutoff')
  if cutoff is not None and not 0 < cutoff < math.sqrt(0.5):
    raise ValueError('config.analysis.similarity.hf_cutoff must lie in '
                     '(0, 0.707) cycles per pixel (the largest radius of a '
                     f'2-D spectrum), got {cutoff!r}.')


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
  if config.get('heldout') is not None:
    _archs(config, 'heldout.archs')
    from easyhard_jax.experiments import heldout
    heldout.heldout_config(config)
  config_checks.check_memory(config)
  stage_inputs.check(config, mode, workdir)
