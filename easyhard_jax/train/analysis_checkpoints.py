"""Analysis checkpoints carry the records fingerprint of the run that made them.

The states kept for analysis (``WORKDIR/analysis_checkpoints/{arch}``, see
probe_schedule.analysis_checkpoint_steps) outlive the resume checkpoints and
are never rotated, so a workdir whose records were made again (another
learning rate, after ``rm -rf records checkpoints/{arch}``) could still hold
the old run's states. Two rules keep them the states of the records beside
them:

* a run of the record loop keeps only the states its own trajectory
  continues: those at or before the step it resumes from (all of them are
  dropped when it starts from step 0), and stamps the directory with its
  records fingerprint (:data:`STAMP_NAME`);
* whoever reads them (``--mode=checkpoint_probes``,
  probes/checkpoint_scores.py) checks that stamp against the config's
  fingerprint with :func:`check` and refuses states without it or with
  another.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from absl import logging

from easyhard_jax.storage import files
from easyhard_jax import fingerprint as fingerprint_lib
from easyhard_jax.train import checkpoints

STAMP_NAME = 'records_fingerprint.json'


def read_stamp(directory: str) -> dict[str, Any] | None:
  """The records fingerprint stored with the states (None: absent/damaged)."""
  try:
    with files.open_file(os.path.join(directory, STAMP_NAME)) as f:
      stamp = json.load(f)
  except (OSError, ValueError):
    return None
  return stamp if isinstance(stamp, dict) and 'hash' in stamp else None


def prepare(kept: checkpoints.Checkpointer, start: int,
            fingerprint: Mapping[str, Any]) -> set[int]:
  """Drops states a run starting at ``start`` does not continue; stamps it.

  Called on every process before any save of the run (orbax deletes and
  saves are collective); process 0 writes the stamp.

  Args:
    kept: the analysis checkpointer of one member group.
    start: the step the run resumes from (0: from scratch).
    fingerprint: the group's records fingerprint ({'hash', 'fields'}).

  Returns:
    The steps already saved that the run keeps (it saves the others).
  """
  stale = [s for s in kept.steps() if start == 0 or s > start]
  if stale:
    logging.info('%s: dropping analysis checkpoints at steps %s (this run '
                 'saves them again from its own states).', kept.directory,
                 stale)
    kept.delete_after(min(stale) - 1)
  files.atomic_write_json(os.path.join(kept.directory, STAMP_NAME),
                          dict(fingerprint))
  return set(kept.steps())


def check(directory: str, fingerprint: Mapping[str, Any]) -> None:
  """Raises ValueError unless the states in ``directory`` match the records.

  Args:
    directory: ``WORKDIR/analysis_checkpoints/{arch}``.
    fingerprint: the records fingerprint of the config being analysed.
  """
  stamp = read_stamp(directory)
  if stamp is not None and stamp['hash'] == fingerprint['hash']:
    return
  if stamp is None:
    why = ('carry no records fingerprint (saved by an older version, or '
           'damaged), so they cannot be matched to the records')
  else:
    diff = fingerprint_lib.differences(stamp.get('fields', {}),
                                       fingerprint['fields'])
    why = ('were saved by a run with other config values: ' +
           (fingerprint_lib.describe(diff) or 'other inputs'))
  raise ValueError(
      f'The analysis checkpoints in {directory} {why}. They are not the '
      'states of these records. To fix: remove the records, checkpoints/ and '
      f'analysis_checkpoints/ of this architecture ({directory}) and rerun '
      '--mode=records, or use the config that recorded them, or a fresh '
      '--workdir.')
