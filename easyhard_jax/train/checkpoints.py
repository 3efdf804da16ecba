"""orbax checkpointing of member-stacked train states, with automatic resume."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
  """A thin CheckpointManager wrapper: save by step, restore the latest."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    """Saves ``state`` at ``step`` (asynchronously; see :meth:`wait`)."""
    self.manager.save(step, args=ocp.args.StandardSave(state))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def restore(self, step: int, target: Any) -> Any:
    """Restores the checkpoint at ``step`` into the structure of ``target``."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    path = os.path.join(self.directory, str(step))
    try:
      return self.manager.restore(step,
                                  args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax raises many types for damaged files.
      others = [s for s in self.manager.all_steps() if s != step]
      fix = (f'delete {path} to resume from step {max(others)}'
             if others else f'delete {self.directory} to start this '
             'architecture over')
      raise RuntimeError(
          f'Checkpoint {path} could not be restored ({type(e).__name__}: '
          f'{str(e)[:300]}). It is damaged or was written by a different '
          f'config (architecture, width, seeds_per_arch, optimizer). To fix: '
          f'{fix}, or use a fresh --workdir.') from e

  def restore_latest(self, target: Any) -> tuple[Any, int]:
    """(restored state, its step) or (target, 0) when there is no checkpoint."""
    step = self.latest_step()
    if step is None:
      return target, 0
    state = self.restore(step, target)
    restored_steps = np.asarray(jax.device_get(state.step)).reshape(-1)
    if not (restored_steps == step).all():
      raise RuntimeError(
          f'Checkpoint {self.directory}/{step} holds train steps '
          f'{restored_steps.tolist()}, not {step}; delete it and rerun.')
    logging.info('Restored checkpoint %s/%d', self.directory, step)
    return state, step
