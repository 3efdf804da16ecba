"""Reading config fields that need more than attribute access.

Kept apart from ``train/config_checks.py`` (validation and backend-dependent
defaults) so the analysis and the report, which never import ``train/``,
resolve fields the same way as training.
"""

from __future__ import annotations

from typing import Any


def get(config: Any, dotted: str, default: Any = None) -> Any:
  """``config.a.b`` for ``'a.b'``, or ``default`` where a part is absent."""
  value = config
  for part in dotted.split('.'):
    if value is None or part not in value:
      return default
    value = value[part]
  return value


def at_least(config: Any, dotted: str, low: int = 1, *,
             required: bool = False) -> None:
  """Raises ValueError unless ``config.<dotted>`` is an integer >= ``low``.

  An absent (or None) field passes unless ``required``.
  """
  value = get(config, dotted)
  if value is None and not required:
    return
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f'config.{dotted} must be an integer >= {low}, got '
                     f'{value!r}.')


def arch_list(config: Any, field: str = 'archs') -> list[str]:
  """An architecture list field as a list of names.

  ``field`` is dotted (``'removal.archs'``); a value is a comma-separated
  string or a sequence, and 'study' (in a stage's block) means
  ``config.archs``.
  """
  archs = get(config, field)
  if archs is None:
    raise KeyError(f'config.{field} is not set.')
  if isinstance(archs, str):
    if archs.strip() == 'study' and field != 'archs':
      return arch_list(config)
    archs = [a.strip() for a in archs.split(',') if a.strip()]
  return list(archs)
