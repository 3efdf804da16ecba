"""The analysis stage's own config checks (``config.analysis``).

``stages.STAGES`` runs :func:`validate` before any work, so a bad window,
set rule or level stops the run at once with the field's name. The check
that relates the window to the training run's probe schedule lives in
``validation.py``: it reads the training config (this package never
imports ``train/``).
"""

from __future__ import annotations

import math

from easyhard_jax import config_fields

_field = config_fields.get


def _one_of(config, dotted: str, allowed: tuple[str, ...]) -> None:
  value = _field(config, dotted)
  if value is not None and value not in allowed:
    raise ValueError(f'config.{dotted} must be one of {allowed}, got '
                     f'{value!r}.')


def validate(config) -> None:
  """Raises ValueError naming the ``config.analysis`` field that is wrong."""
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
  for field in ('analysis.dynamics_window', 'analysis.label_issues.window'):
    window = tuple(_field(config, field) or ())
    if window and (len(window) != 2 or not window[0] < window[1]):
      raise ValueError(f'config.{field} must be (start, end) in epochs with '
                       f'start < end, got {window}.')
  from easyhard_jax.analysis import sets  # pylint: disable=g-import-not-at-top
  try:
    sets.SetRule.from_config(cfg.sets)
  except ValueError as e:
    raise ValueError(f'config.analysis.{e}') from e
  config_fields.at_least(config, 'analysis.sets.k', 0)
  level = _field(config, 'analysis.agreement.ci_level')
  if not (isinstance(level, (int, float)) and 0 < level < 1):
    raise ValueError('config.analysis.agreement.ci_level must lie in (0, 1) '
                     f'(e.g. 0.95), got {level!r}.')
  for field in ('analysis.similarity.block_size',
                'analysis.similarity.max_set_size',
                'analysis.similarity.max_streamed_images'):
    config_fields.at_least(config, field)
  config_fields.at_least(config, 'analysis.label_issues.top_k', 0)
  _one_of(config, 'analysis.label_issues.calibration',
          ('class_threshold', 'none'))
  _one_of(config, 'analysis.label_issues.score', ('p_given', 'agreed_margin'))
  cutoff = _field(config, 'analysis.similarity.hf_cutoff')
  if cutoff is not None and not 0 < cutoff < math.sqrt(0.5):
    raise ValueError('config.analysis.similarity.hf_cutoff must lie in '
                     '(0, 0.707) cycles per pixel (the largest radius of a '
                     f'2-D spectrum), got {cutoff!r}.')
