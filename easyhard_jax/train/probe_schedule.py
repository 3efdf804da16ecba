"""When to probe, and which states to keep for analysis after the run.

The probe schedule (global train steps of the eval-mode probe pass) and the
*analysis checkpoints*: states kept at the probe steps inside the easiness
window (mid-epoch ones too) and at the window's end, apart from the rolling
resume checkpoints, so that new scores (GraNd, features, a user's function)
can be computed after the run at the moments that define easiness.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

CHECKPOINT_POLICIES = ('window', 'all_probes', 'none')


@dataclasses.dataclass(frozen=True)
class ProbePlan:
  """When the probe pass runs, as values (``config.probe`` resolved).

  Attributes:
    first_epoch_fractions: probes inside epoch 1 at these shares of it.
    every_epochs: one probe at the end of every k-th epoch.
    at_init: also probe step 0.
    at_steps: explicit global steps (set by derived configs, e.g. a cause
      probe matched to its control by :func:`matched_steps`); when given,
      they replace the fractions and ``every_epochs``.
  """
  first_epoch_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
  every_epochs: int = 1
  at_init: bool = False
  at_steps: tuple[int, ...] = ()

  def __post_init__(self):
    for f in self.first_epoch_fractions:
      if not 0.0 < f < 1.0:
        raise ValueError(
            f'probe.first_epoch_fractions must lie strictly between 0 and 1 '
            f'(got {self.first_epoch_fractions}); the end of epoch 1 is '
            'probed by every_epochs.')
    every = self.every_epochs
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
      raise ValueError(f'probe.every_epochs must be an integer >= 1, got '
                       f'{every!r}.')

  @classmethod
  def from_config(cls, probe) -> 'ProbePlan':
    """``config.probe`` as a plan; a bad value raises ValueError naming it.

    ``at_steps`` is not a field of configs/default.py (a declared one would
    change every study's records fingerprint): only derived configs set it.
    """
    return cls(first_epoch_fractions=tuple(
                   float(f) for f in probe.first_epoch_fractions or ()),
               every_epochs=probe.every_epochs, at_init=bool(probe.at_init),
               at_steps=tuple(int(s) for s in probe.get('at_steps', ()) or ()))

  def steps(self, steps_per_epoch: int, total_steps: int) -> list[int]:
    """Global train steps at which the probe pass runs, sorted and unique.

    The end of training is always probed; steps past it are dropped (a
    check with another epoch length calls this too).
    """
    total = total_steps
    if self.at_steps:
      return sorted(s for s in set(self.at_steps) | {total} if 0 <= s <= total)
    steps = {0} if self.at_init else set()
    for f in self.first_epoch_fractions:
      steps.add(max(1, int(round(f * steps_per_epoch))))
    every = self.every_epochs * steps_per_epoch
    steps.update(range(every, total + 1, every))
    steps.add(total)
    return sorted(s for s in steps if s <= total)


def probe_schedule(config, steps_per_epoch: int,
                   total_steps: int | None = None) -> list[int]:
  """Global train steps at which ``config``'s probe pass runs (ProbePlan).

  ``total_steps`` defaults to ``config.epochs`` epochs.
  """
  return ProbePlan.from_config(config.probe).steps(
      steps_per_epoch, total_steps or config.epochs * steps_per_epoch)


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


def analysis_steps(policy, window, schedule: Sequence[int],
                   steps_per_epoch: int, total_steps: int) -> list[int]:
  """Steps whose states an analysis-checkpoint ``policy`` keeps.

  Args:
    policy: 'window': every probe step inside ``window`` (epochs
      ``(lo, hi]``, as the easiness window) plus the window's end;
      'all_probes': every probe step; 'none'; or a list of global steps.
    window: the easiness window (``config.analysis.window``).
    schedule: the probe steps.
    steps_per_epoch, total_steps: the run's length.
  """
  total = total_steps
  if isinstance(policy, str):
    if policy not in CHECKPOINT_POLICIES:
      raise ValueError(f'config.analysis_checkpoints must be one of '
                       f'{CHECKPOINT_POLICIES} or a list of steps, got '
                       f'{policy!r}.')
    if policy == 'none':
      return []
    if policy == 'all_probes':
      return list(schedule)
    lo, hi = (float(w) * steps_per_epoch for w in window)
    end = min(total, math.ceil(hi))
    return sorted({s for s in schedule if lo < s <= hi} | {end})
  steps = sorted({int(s) for s in policy})
  if any(not 0 < s <= total for s in steps):
    raise ValueError(f'config.analysis_checkpoints steps must lie in '
                     f'1..{total} (total train steps), got {steps}.')
  return steps


def analysis_checkpoint_steps(config, steps_per_epoch: int,
                              total_steps: int | None = None) -> list[int]:
  """Steps whose states ``config.analysis_checkpoints`` keeps (see
  :func:`analysis_steps`)."""
  total = total_steps or config.epochs * steps_per_epoch
  return analysis_steps(config.analysis_checkpoints, config.analysis.window,
                        probe_schedule(config, steps_per_epoch, total),
                        steps_per_epoch, total)
