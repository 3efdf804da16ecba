"""When to probe, and which states to keep for analysis after the run.

The probe schedule (global train steps of the eval-mode probe pass) and the
*analysis checkpoints*: states kept at the probe steps inside the easiness
window (mid-epoch ones too) and at the window's end, apart from the rolling
resume checkpoints, so that new scores (GraNd, features, a user's function)
can be computed after the run at the moments that define easiness.
"""

from __future__ import annotations

import math

CHECKPOINT_POLICIES = ('window', 'all_probes', 'none')


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


def analysis_checkpoint_steps(config, steps_per_epoch: int,
                              total_steps: int | None = None) -> list[int]:
  """Steps whose states ``config.analysis_checkpoints`` keeps.

  'window' (default): every probe step inside ``config.analysis.window``
  (epochs ``(lo, hi]``, as the easiness window) plus the window's end;
  'all_probes': every probe step; 'none'; or a list of global steps.
  """
  policy = config.get('analysis_checkpoints', 'window')
  total = total_steps or config.epochs * steps_per_epoch
  schedule = probe_schedule(config, steps_per_epoch, total_steps)
  if isinstance(policy, str):
    if policy not in CHECKPOINT_POLICIES:
      raise ValueError(f'config.analysis_checkpoints must be one of '
                       f'{CHECKPOINT_POLICIES} or a list of steps, got '
                       f'{policy!r}.')
    if policy == 'none':
      return []
    if policy == 'all_probes':
      return schedule
    lo, hi = (float(w) * steps_per_epoch for w in config.analysis.window)
    end = min(total, math.ceil(hi))
    return sorted({s for s in schedule if lo < s <= hi} | {end})
  steps = sorted({int(s) for s in policy})
  if any(not 0 < s <= total for s in steps):
    raise ValueError(f'config.analysis_checkpoints steps must lie in '
                     f'1..{total} (total train steps), got {steps}.')
  return steps
