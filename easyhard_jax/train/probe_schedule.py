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
  ``at_steps`` (set by derived configs, e.g. a cause probe matched to its
  control by :func:`matched_steps`) lists the global steps explicitly and
  replaces the fractions and ``every_epochs``.
  """
  probe = config.probe
  total = total_steps or config.epochs * steps_per_epoch
  at_steps = tuple(probe.get('at_steps', ()) or ())
  if at_steps:
    # Steps past the end are dropped, as for the other rules (a check with
    # another epoch length calls this too).
    return sorted(s for s in {int(s) for s in at_steps} | {total}
                  if 0 <= s <= total)
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


def window_steps(config, steps_per_epoch: int, total_steps: int,
                 window) -> list[int]:
  """The probe steps inside ``window`` (epochs ``(lo, hi]``), in order.

  A step's epoch is ``step / steps_per_epoch``, as records.load and
  analysis.scores.window_mask compute it.
  """
  lo, hi = (float(w) for w in window)
  return [s for s in probe_schedule(config, steps_per_epoch, total_steps)
          if lo < s / float(steps_per_epoch) <= hi]


def matched_steps(reference: list[int], reference_total: int,
                  total_steps: int, last_step: int) -> list[int]:
  """``reference``'s steps at the same shares of training in another run.

  Step s of a run of ``reference_total`` steps maps to the nearest step to
  ``s / reference_total * total_steps`` (at least 1, at most ``last_step``),
  so a run of another length (full-batch training: one step per epoch) is
  probed as often, and at the same points of its training, as the reference.

  Raises:
    ValueError: two reference steps fall on one step of this run (it has
      too few steps up to ``last_step`` to match them).
  """
  out = [min(max(1, int(math.floor(s * total_steps / reference_total +
                                   0.5))), last_step) for s in reference]
  if len(set(out)) != len(out):
    raise ValueError(
        f'Cannot probe {len(reference)} times at the shares of training of '
        f'steps {list(reference)} of {reference_total}: this run has only '
        f'{last_step} steps up to the end of its window (of {total_steps}); '
        f'it would probe at {out}. Train it longer.')
  return out


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
