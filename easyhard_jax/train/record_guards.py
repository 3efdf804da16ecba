"""What keeps the record loop honest: fingerprints, resume points, checks.

Used by the train loop (loop.py): the records fingerprint of a member group,
the step a run must resume before (so lost or damaged chunks are recorded
again), which examples a (possibly partial) epoch presented, and the checks
that keep non-finite values out of records and checkpoints.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from easyhard_jax import fingerprint as fingerprint_lib
from easyhard_jax.storage import records
from easyhard_jax.train import config_checks


def group_fingerprint(config, arch: str, members, keep=None,
                      total_steps=None, dtype: str | None = None
                      ) -> dict[str, Any]:
  """The records fingerprint of one member group (see fingerprint.py).

  ``dtype``: the resolved compute dtype's name (default: the config's).
  """
  subset = 'all' if keep is None else fingerprint_lib.digest(
      np.packbits(np.asarray(keep, bool), axis=-1).tolist())
  dtype = dtype or jnp.dtype(config_checks.compute_dtype(config)).name
  return fingerprint_lib.record_fingerprint(
      config, arch, dtype=dtype, members=[dict(m) for m in members],
      subset=subset, total_steps=total_steps)


def expected_chunks(schedule, spe: int, total_steps: int):
  """(key, index, step) of every chunk a finished group holds."""
  out = [(f'probe_{s}', k, step) for k, step in enumerate(schedule)
         for s in records.SPLITS]
  out += [('fused_train', e, min((e + 1) * spe, total_steps))
          for e in range(math.ceil(total_steps / spe))]
  return out


def resume_bound(writer, arch, schedule, spe, total_steps) -> int | None:
  """Resume from a checkpoint before this step (None: the latest is fine).

  Damaged chunks are unregistered first; the first chunk that is missing
  then sets the bound, so --mode=records re-records exactly what is lost.
  """
  damaged = writer.damaged_chunks(arch)
  if damaged:
    writer.forget_chunks(arch, min(step for _, _, step in damaged))
  have = writer.manifest['archs'][arch]['chunks']
  missing = [step for key, k, step in expected_chunks(schedule, spe,
                                                       total_steps)
             if str(k) not in have.get(key, {})]
  return min(missing) if missing else None


@jax.jit
def finite_members(states) -> jax.Array:
  """bool [M]: every parameter and BatchNorm statistic of a member finite."""
  leaves = jax.tree.leaves((states.params, states.batch_stats))
  return functools.reduce(jnp.logical_and, [
      jnp.isfinite(x).reshape(x.shape[0], -1).all(axis=1) for x in leaves])


def diverged(arch, member, step, epoch, last_good, lr) -> FloatingPointError:
  return FloatingPointError(
      f'{arch} member {member} diverged: non-finite values at step {step} '
      f'(epoch {epoch + 1}). Nothing non-finite was saved. To fix: lower '
      f'config.optimizer.learning_rate (now {lr}) or set '
      'config.optimizer.grad_clip_norm, or use dtype=float32, then rerun the '
      f'same command: it resumes from the last finite checkpoint (step '
      f'{last_good}).')


def presented(perms: np.ndarray, num_kept: np.ndarray, steps_done: int,
               batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(seen bool [M, N], position in the epoch's order int [M, N]).

  The examples of an epoch's first ``steps_done`` steps: positions
  0..steps_done*B-1 of each member's kept order (the last batch padded,
  not wrapped, as device_ops.batch_indices does). A partial last epoch
  (budget='steps') leaves the rest unseen; their fused statistics stay NaN
  by design.
  """
  m, n = perms.shape
  position = np.empty((m, n), np.int64)
  position[np.arange(m)[:, None], perms] = np.arange(n)[None, :]
  shown = np.minimum(steps_done * batch_size, num_kept)[:, None]
  return position < shown, position
