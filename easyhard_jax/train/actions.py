"""Actions of the train loop, each run on its own steps.

The loop trains one step at a time and, after ``s`` steps, runs every action
due at ``s``, in the order given (as clu's periodic actions, with explicit
step sets): flush the fused epoch, write its metrics, probe, keep the state
for analysis, checkpoint. An action is due on the steps of ``on_steps`` and,
with ``every_steps`` = k, on every positive multiple of k. Step 0 (the
initial state) is due only through ``on_steps``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Sequence


@dataclasses.dataclass(frozen=True)
class Action:
  """A function of the step count, run on the steps it names.

  Attributes:
    name: for logs and tests.
    fn: called with the number of train steps done.
    on_steps: the steps it runs on.
    every_steps: also every positive multiple of this (0: none).
  """
  name: str
  fn: Callable[[int], None]
  on_steps: frozenset[int] = frozenset()
  every_steps: int = 0

  @classmethod
  def on(cls, name: str, fn: Callable[[int], None],
         steps: Iterable[int] = (), every_steps: int = 0) -> 'Action':
    """An action on ``steps`` (and every ``every_steps``)."""
    if every_steps < 0:
      raise ValueError(f'every_steps must be >= 0, got {every_steps}.')
    return cls(name, fn, frozenset(int(s) for s in steps), int(every_steps))

  def due(self, step: int) -> bool:
    """Whether the action runs after ``step`` train steps."""
    return step in self.on_steps or (
        self.every_steps > 0 and step > 0 and step % self.every_steps == 0)


def run_due(actions: Sequence[Action], step: int) -> list[str]:
  """Runs the actions due at ``step`` in order; returns their names."""
  ran = []
  for action in actions:
    if action.due(step):
      action.fn(step)
      ran.append(action.name)
  return ran
