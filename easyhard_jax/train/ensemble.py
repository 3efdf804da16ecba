"""The records stage: train every architecture's members and write records.

For each architecture, its ``seeds_per_arch`` members train together in one
compiled program (see steps.py). ``train_arch`` resolves the config once into
a run spec (run_spec.py) and runs the train loop of actions (loop.py): fused
records at each epoch end, probes, kept states and checkpoints on their
steps. A killed run restarts from the last checkpoint and rewrites identical
records; finished architectures are skipped.

Also the helpers the experiments and entry points share: member keys and
infos, steps per epoch, the records fingerprint of a group.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
from absl import logging

from easyhard_jax import config_fields
from easyhard_jax import distributed
from easyhard_jax.storage import files
from easyhard_jax.storage import records
from easyhard_jax.data import streaming
from easyhard_jax.train import config_checks
from easyhard_jax.train import loop
from easyhard_jax.train import members as members_lib
from easyhard_jax.train import run_spec
from easyhard_jax.train import trainer as trainer_lib


stream_salt = members_lib.stream_salt
Member = members_lib.Member
# The trainer lives in trainer.py; this name stays for its many callers.
ArchTrainer = trainer_lib.ArchTrainer


def member_keys(config, arch: str, members) -> jax.Array:
  """Per-member base keys of ``arch``'s members under ``config.seed``.

  A study member: fold_in(fold_in(key(seed), crc32(arch)), member seed). An
  experiment's member carries a stream name (``'causes/adam'``,
  ``'removal/frac_0.300'``, ...) that is folded into the root key first, so
  every experiment, variant and group has random streams (init, data order,
  augmentation) of its own, none a replay of the study's (Member.key).

  Args:
    config: the config (``config.seed`` is the root seed).
    arch: the architecture name.
    members: Members, member dicts ('seed', optional 'stream') or int seeds.

  Returns:
    Keys [len(members)].
  """
  return members_lib.member_keys([dataclasses.replace(
      Member.coerce(m, arch, config.seed), arch=arch,
      root_seed=int(config.seed)) for m in members])


def steps_per_epoch(config, num_examples: int) -> int:
  """Steps of one epoch of ``num_examples`` at ``config.batch_size``."""
  return math.ceil(num_examples / config.batch_size)


def study_fingerprint(config, arch: str, members=None, keep=None,
                      total_steps=None, stream: str = '') -> dict[str, Any]:
  """The records fingerprint of a member group (the study's by default)."""
  members = members or run_spec.study_members(config, arch, stream)
  return run_spec.fingerprint(config, arch, members, keep, total_steps)


def train_arch(config, data, arch: str, workdir: str,
               writer: records.RecordWriter, program: str | None = None,
               probe_until: float | None = None, stream: str = '',
               **group) -> None:
  """Trains one member group, writing probe and fused records.

  Resolves ``config`` once (run_spec.resolve) and runs train_group.

  Args:
    config, data, arch: as for run_spec.resolve.
    workdir: where checkpoints/, metrics.jsonl and tensorboard/ go.
    writer: the records writer of ``workdir``.
    program: name of this group of members in records and checkpoints
      (default: ``arch``); the experiments train one arch in several groups.
    probe_until: probe only up to this epoch (and at the end of training),
      for runs whose later probes nothing reads; None: the whole schedule.
    stream: the random stream of the default (study) members.
    **group: members, keep, total_steps (see run_spec.resolve); subsets
      and step budgets are how the experiments retrain on part of the data.

  Raises:
    FloatingPointError: a member diverged; nothing non-finite was written
      and the records' manifest marks it, so a rerun with a lower learning
      rate resumes from the last finite checkpoint.
  """
  spec = run_spec.resolve(config, data, arch, program=program,
                          probe_until=probe_until, stream=stream, **group)
  loop.train_group(spec, data, workdir, writer)


def record_study(config, workdir: str, data=None,
                 probe_until: float | None = None,
                 stream: str = '') -> list[str]:
  """The records stage: trains all architectures; returns the finished ones.

  ``data`` replaces ``load_dataset(config)`` (the cause probes pass modified
  copies: shuffled labels, filtered images); ``probe_until`` as train_arch;
  ``stream`` names the members' random stream ('' for the study; a cause
  probe's own, so no member replays a study member's keys).
  """
  config_checks.validate(config)
  files.makedirs(workdir)
  data = data or streaming.load(config)
  n = len(data.train_labels)
  if config.batch_size > n:
    raise ValueError(f'config.batch_size ({config.batch_size}) exceeds the '
                     f'{n} training examples of {config.dataset!r}; set '
                     f'config.batch_size <= {n}.')
  writer = records.RecordWriter(workdir)
  writer.write_split_metadata('train', data.train_labels, data.train_ids)
  writer.write_split_metadata('test', data.test_labels, data.test_ids)
  archs = config_fields.arch_list(config)
  for arch in archs:
    if writer.is_complete(arch):
      writer.check_fingerprint(arch, study_fingerprint(config, arch,
                                                          stream=stream))
      if not writer.damaged_chunks(arch):
        logging.info('%s: records complete, skipping.', arch)
        continue
      logging.warning('%s: re-recording damaged or missing chunks.', arch)
    train_arch(config, data, arch, workdir, writer, probe_until=probe_until,
               stream=stream)
  # Callers read the records next (the cause probes): on every process only
  # once process 0 has written them.
  distributed.barrier(f'records_written:{workdir}')
  return archs
