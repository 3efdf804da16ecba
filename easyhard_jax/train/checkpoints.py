"""orbax checkpointing of member-stacked train states, with automatic resume.

Every checkpoint has a SHA-256 of its state's bytes beside it
(``checksum_{step}.json`` in the manager's directory, written by process 0
when the save starts), and :meth:`Checkpointer.restore` checks it: orbax
restores a flipped bit in a data file without a word, and the run would
then continue from a state no run ever had. A mismatch makes the restore
fail, so :meth:`Checkpointer.restore_latest` falls back to the previous
checkpoint with a warning. Checkpoints saved before checksums existed (no
file) restore as before; states that span processes are not summed (no
process holds all of them).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from easyhard_jax.storage import files

_CHECKSUM = re.compile(r'checksum_(\d+)\.json')


def state_checksum(state: Any) -> str | None:
  """SHA-256 of every leaf's dtype, shape and bytes, in tree order.

  None when a leaf spans processes (no single process can read it).
  """
  leaves = jax.tree.leaves(state)
  if any(isinstance(x, jax.Array) and not x.is_fully_addressable
         for x in leaves):
    return None
  h = hashlib.sha256()
  for x in jax.device_get(leaves):
    x = np.ascontiguousarray(np.asarray(x))
    h.update(f'{x.dtype.str}{x.shape};'.encode())
    h.update(x.tobytes())
  return h.hexdigest()


class Checkpointer:
  """A thin CheckpointManager wrapper: save by step, restore the latest."""

  def __init__(self, directory: str, max_to_keep: int | None = 2):
    # An object-store URL stays as it is (abspath would make gs://b/x a
    # local path); orbax writes there through tensorstore and epath.
    self.directory = (directory.rstrip('/') if files.is_remote(directory)
                      else os.path.abspath(directory))
    # Multi-process saves meet at barriers named by step; two managers that
    # save the same step (resume and analysis checkpoints) need their own
    # names, or the second finds the first's barrier "already ongoing".
    prefix = 'ckpt_' + hashlib.sha1(self.directory.encode()).hexdigest()[:12]
    # cleanup_tmp_directories: a step a killed run left half-written is
    # removed before any save (locally orbax's tmp dir; on an object store,
    # where orbax writes the step in place, a step without its
    # commit_success.txt, which a new save into it would trip over).
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=prefix)))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def _checksum_path(self, step: int) -> str:
    return os.path.join(self.directory, f'checksum_{int(step)}.json')

  def save(self, step: int, state: Any) -> None:
    """Saves ``state`` at ``step`` (asynchronously; see :meth:`wait`)."""
    digest = state_checksum(state)  # Before the caller donates the state.
    if digest is not None and jax.process_index() == 0:
      files.atomic_write_json(self._checksum_path(step),
                              {'step': int(step), 'sha256': digest})
    self.manager.save(step, args=ocp.args.StandardSave(state))
    self._prune_checksums(keep=step)

  def _prune_checksums(self, keep: int) -> None:
    """Removes checksum files of steps orbax no longer holds."""
    if jax.process_index() != 0:
      return
    held = set(self.manager.all_steps()) | {keep}
    try:
      names = sorted(files.listdir(self.directory))
    except OSError:
      return
    for name in names:
      m = _CHECKSUM.fullmatch(name)
      if m and int(m[1]) not in held:
        try:
          files.remove(os.path.join(self.directory, name))
        except OSError:
          pass

  def verify(self, step: int, state: Any) -> None:
    """Raises RuntimeError when ``state`` differs from the saved checksum."""
    path = self._checksum_path(step)
    if not files.exists(path):
      return  # Saved before checksums, or by a multi-process run.
    try:
      stored = files.read_json(path, f'delete {path}.')['sha256']
    except (ValueError, KeyError, TypeError) as e:
      raise RuntimeError(f'its checksum file {path} is damaged ({e})') from e
    digest = state_checksum(state)
    if digest is not None and digest != stored:
      raise RuntimeError(
          f'its contents differ from the checksum saved with it ({path}): '
          'a data file was corrupted on disk')

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def restore(self, step: int, target: Any) -> Any:
    """Restores the checkpoint at ``step`` into the structure of ``target``."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    path = os.path.join(self.directory, str(step))
    try:
      state = self.manager.restore(step,
                                   args=ocp.args.StandardRestore(abstract))
      self.verify(step, state)
      return state
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

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def delete_after(self, step: int) -> None:
    """Deletes checkpoints past ``step`` (they will be saved again)."""
    for s in self.steps():
      if s > step:
        self.manager.delete(s)
    self._prune_checksums(keep=step)

  def restore_latest(self, target: Any, before: int | None = None,
                     check: Callable[[Any], str | None] | None = None
                     ) -> tuple[Any, int]:
    """(restored state, its step), or (target, 0) when none can be restored.

    Tries the newest checkpoint first (only those at steps < ``before`` when
    given) and falls back to older ones, with a warning, when a checkpoint
    cannot be restored or ``check(state)`` returns a reason to reject it (a
    non-finite parameter). Raises only when checkpoints exist and none of
    them can be restored.
    """
    candidates = [s for s in reversed(self.steps())
                  if before is None or s < before]
    errors = []
    for step in candidates:
      try:
        state = self.restore(step, target)
        restored_steps = np.asarray(jax.device_get(state.step)).reshape(-1)
        if not (restored_steps == step).all():
          raise RuntimeError(f'it holds train steps '
                             f'{restored_steps.tolist()}, not {step}')
        reason = check(state) if check else None
        if reason:
          raise RuntimeError(reason)
      except RuntimeError as e:
        errors.append(f'step {step}: {str(e)[:400]}')
        logging.warning('Checkpoint %s/%d cannot be used (%s); falling back '
                        'to an older one.', self.directory, step, e)
        continue
      if errors:
        logging.warning('Resuming from checkpoint %s/%d after skipping %d '
                        'newer one(s).', self.directory, step, len(errors))
      logging.info('Restored checkpoint %s/%d', self.directory, step)
      return state, step
    if errors:
      raise RuntimeError(
          f'No checkpoint in {self.directory} can be restored:\n  ' +
          '\n  '.join(errors) + f'\nTo fix: delete {self.directory} to '
          'train this architecture from the start (its records are rewritten '
          'identically), or use a fresh --workdir.')
    return target, 0
