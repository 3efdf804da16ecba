"""The record stage: train every architecture's members and write records.

For each architecture, its ``seeds_per_arch`` members train together in one
compiled program (see steps.py). The host loop dispatches one jitted step per
iteration and never reads device values inside an epoch; at the end of an epoch
it fetches the fused per-example buffers, checks the loss is finite, writes
records and saves an orbax checkpoint. A killed run restarts from the last
checkpoint and rewrites identical records; finished architectures are skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging

from easyhard_jax import config_fields
from easyhard_jax import distributed
from easyhard_jax import metrics_writer
from easyhard_jax import models
from easyhard_jax import records
from easyhard_jax.data import device_ops
from easyhard_jax.data import loader
from easyhard_jax.data import sources
from easyhard_jax.data import streaming
from easyhard_jax.train import analysis_checkpoints
from easyhard_jax.train import checkpoints
from easyhard_jax.train import config_checks
from easyhard_jax.train import members as members_lib
from easyhard_jax.train import mesh as mesh_lib
from easyhard_jax.train import optim
from easyhard_jax.train import probe_schedule
from easyhard_jax.train import programs
from easyhard_jax.train import record_guards
from easyhard_jax.train import run_spec
from easyhard_jax.train import steps as steps_lib


stream_salt = members_lib.stream_salt
Member = members_lib.Member


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


def member_infos(config, arch: str, stream: str = '') -> list[Member]:
  """The members of ``arch``: seeds 0..seeds_per_arch-1, all data.

  ``stream`` (set by the experiments; '' in a study) names the members'
  random stream; the study's own members carry none, so their keys and
  records are those of every earlier version.
  """
  return list(run_spec.study_members(config, arch, stream))


def steps_per_epoch(config, num_examples: int) -> int:
  """Steps of one epoch of ``num_examples`` at ``config.batch_size``."""
  return math.ceil(num_examples / config.batch_size)


class ArchTrainer:
  """Holds the compiled steps and the data feed of one member group.

  The steps come from programs.py, shared with every trainer of the same
  static parts; this trainer's run length is ``self.schedule`` (traced).
  Everything it reads is its ``spec`` (run_spec.RunSpec).

  Args:
    spec: the group's resolved run spec; or a config, resolved here with
      ``arch`` and ``group`` (members, keep, total_steps; see
      run_spec.resolve), for entry points that build a trainer directly.
    data: the dataset: a sources.Dataset (uint8, moved to the device) or a
      streaming.StreamedData (read by a grain loader every step); either is
      read through its feed (loader.make_feed), so the trainer has one path.
    arch: model registry name (with a config only).
  """

  def __init__(self, spec: run_spec.RunSpec | Any,
               data: sources.Dataset | streaming.StreamedData,
               arch: str | None = None, **group):
    if not isinstance(spec, run_spec.RunSpec):
      spec = run_spec.resolve(spec, data, arch, **group)
    self.spec, self.data, self.arch = spec, data, spec.arch
    self.members = spec.members
    self.num_members = spec.num_members
    self.num_train = spec.num_train
    self.keep = spec.keep
    self.spe = spec.steps_per_epoch
    self.total_steps = spec.total_steps
    self.dtype, self.strategy = spec.dtype, spec.strategy
    self.model, self.optimizer = spec.model, spec.optimizer
    # The optax chain with this run's schedule as host constants (the train
    # step builds the same chain from the traced self.schedule).
    self.tx = self.optimizer.tx(spec.schedule)
    self.mesh = spec.mesh
    rep = self.replicated = mesh_lib.replicated(self.mesh)
    # Every step input is a global array on the mesh (needed multi-process).
    self.schedule = distributed.put(spec.schedule, rep)
    keys = spec.member_keys()
    self.init_keys, self.perm_keys, self.aug_keys = (
        distributed.put(jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(
            keys), rep) for i in range(3))
    member_axis = spec.member_axis
    self.state_sharding = (mesh_lib.member_sharded(self.mesh) if member_axis
                           else rep)
    self.feed = loader.make_feed(
        data, self.mesh, member_axis, batch_size=spec.batch_size,
        eval_batch_size=spec.eval_batch_size, members=spec.member_dicts(),
        num_kept=spec.num_kept, root_seed=spec.members[0].root_seed,
        arch=spec.arch, prefetch_batches=spec.prefetch_batches)
    # numpy mean/std; the programs take them as inputs (self.norm), so data
    # that differ only in their values (a low-pass probe) share programs.
    self.mean, self.std = self.feed.mean, self.feed.std
    self.norm = {'mean': distributed.put(np.asarray(self.mean, np.float32),
                                         rep),
                 'std': distributed.put(np.asarray(self.std, np.float32), rep)}
    self.probe_batch = self.feed.probe_batch
    static = dict(strategy=self.strategy, model=self.model, dtype=self.dtype,
                  mesh=self.mesh, member_axis=member_axis)
    self.train_step = programs.train_step(
        self.feed.step_kind, tuple(sorted(self.feed.step_kwargs.items())),
        optimizer=self.optimizer, augment=spec.augment, **static)
    self.probe_step = programs.probe_step(**static)
    self.epoch_perms = functools.partial(
        programs.epoch_perms, self.perm_keys, distributed.put(self.keep, rep))

  def epoch_feed(self, epoch: int, first_step: int = 0):
    """The feed's per-step inputs of ``epoch`` from its step ``first_step`` on.

    Device-resident data: the epoch's permutations at every step (the step
    gathers its own batch). Streamed data: the loader's batches.
    """
    last = min(self.spe, self.total_steps - epoch * self.spe)
    return self.feed.epoch(self.epoch_perms(epoch), epoch, first_step, last)

  def step(self, states, buffers, fed):
    """One train step of every member; ``fed`` comes from epoch_feed."""
    return self.train_step(states, buffers, self.aug_keys, self.schedule,
                           *self.feed.args(fed), **self.norm)

  def probe_batches(self, split: str):
    """(images, labels) batches over ``split`` (the feed's probe batches)."""
    return self.feed.probe(split)

  def init_states(self) -> steps_lib.TrainState:
    """Member-stacked initial state; each member has its own init key."""
    init = programs.init_states(self.model, self.optimizer,
                                self.data.image_shape, self.dtype,
                                self.state_sharding)
    return init(self.init_keys)

  def probe(self, states, split: str, features: bool = False):
    """Eval-mode per-example statistics of every member on a whole split.

    The last batch is padded by repeating the final example; the padding is
    cut off on the host. Results stay on the device until the split is done.

    Returns:
      {field: [M, N]}, or with ``features`` ({field: [M, N]}, [M, N, D]).
    """
    n = len(getattr(self.data, f'{split}_labels'))
    # Without the optimizer state (the probe reads none): one probe program
    # serves SGD and Adam members alike.
    states = states.replace(opt_state=None)
    outs = [self.probe_step(states, x, y, features=features, **self.norm)
            for x, y in self.probe_batches(split)]
    stats = [o[0] for o in outs] if features else outs
    # Joined on the device: one gather per field, not one per batch.
    table = distributed.fetch({
        f: jnp.concatenate([getattr(o, f) for o in stats], axis=1)
        for f in records.FIELDS})
    table = {f: np.asarray(v)[:, :n] for f, v in table.items()}
    if not features:
      return table
    feats = distributed.fetch([o[1] for o in outs])  # Large: batch by batch.
    return table, np.concatenate(feats, axis=1)[:, :n]


def study_fingerprint(config, arch: str, members=None, keep=None,
                      total_steps=None, stream: str = '') -> dict[str, Any]:
  """The records fingerprint of a member group (the study's by default)."""
  return run_spec.fingerprint(
      config, arch, members or member_infos(config, arch, stream), keep,
      total_steps)


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
  train_group(spec, data, workdir, writer)


def train_group(spec: run_spec.RunSpec, data, workdir: str,
                writer: records.RecordWriter) -> None:
  """Trains the member group of ``spec``; see train_arch."""
  t = ArchTrainer(spec, data)
  schedule = list(spec.probe_steps)
  fp = spec.fingerprint
  arch = spec.program  # From here on: the name of this member group.
  writer.begin_arch(arch, spec.member_dicts(), t.spe, schedule, fp)
  bound = record_guards.resume_bound(writer, arch, schedule, t.spe,
                                     t.total_steps)
  probe_index = {s: k for k, s in enumerate(schedule)}
  ckpt = checkpoints.Checkpointer(
      os.path.join(workdir, 'checkpoints', arch), spec.checkpoints_to_keep)
  # States kept for analysis after the run (never deleted; see
  # probe_schedule.analysis_steps). Sweep groups keep none.
  keep_steps = set(spec.analysis_steps)
  kept = checkpoints.Checkpointer(
      os.path.join(workdir, 'analysis_checkpoints', arch),
      max_to_keep=None) if keep_steps else None

  def nonfinite(states) -> list[int]:
    ok = np.asarray(distributed.fetch(record_guards.finite_members(states)))
    return np.flatnonzero(~ok).tolist()

  def reject_nonfinite(states) -> str | None:
    bad = nonfinite(states)
    return f'non-finite parameters in member(s) {bad}' if bad else None

  states, start = ckpt.restore_latest(t.init_states(), before=bound,
                                      check=reject_nonfinite)
  ckpt.delete_after(start)  # Later ones are saved again, identically.
  last_good = start
  if start:
    logging.info('%s: resuming at step %d (epoch %d)', arch, start,
                 start // t.spe)
  logging.info('%s: %d members, %d steps/epoch, strategy=%s, dtype=%s, '
               'probes at steps %s', arch, t.num_members, t.spe, t.strategy,
               jnp.dtype(t.dtype).name, schedule)

  tb = metrics_writer.MetricsWriter(workdir)
  # Drawn on a terminal only (logs and CI get the per-epoch log lines).
  bar = tqdm.tqdm(total=(t.total_steps - start) * spec.batch_size *
                  t.num_members, desc=arch, unit='img', unit_scale=True,
                  disable=not sys.stderr.isatty(), leave=False)

  def fail(member: int, step: int):
    writer.mark_diverged(arch, step, t.members[member]['name'])
    ckpt.wait()
    if kept:
      kept.wait()
    bar.close()
    tb.close()
    return record_guards.diverged(arch, t.members[member]['name'], step,
                                  step // t.spe, last_good,
                                  spec.learning_rate)

  # Read once, before any save of this run, so every process of a
  # multi-process run takes the same decisions (a save is a collective).
  # States of another run (other config, or beyond this run's resume
  # point) are dropped, so every kept state is one of these records'.
  kept_already = (analysis_checkpoints.prepare(kept, start, fp) if kept
                  else set())

  def keep_state(step, states):
    if step not in keep_steps or step in kept_already:
      return
    bad_members = nonfinite(states)
    if bad_members:
      raise fail(bad_members[0], step)
    kept.save(step, states)

  def run_probe(step, states):
    k = probe_index[step]
    accs = {}
    for split in records.SPLITS:
      out = t.probe(states, split)
      bad = ~np.isfinite(out['loss']).all(axis=1)
      if bad.any():
        raise fail(int(np.flatnonzero(bad)[0]), step)
      writer.write_chunk(arch, 'probe', split, k, step, out)
      accs[split] = out['correct'].mean(axis=1).round(4).tolist()
    tb.write(step, {f'{m["name"]}/probe_{s}_acc': a[i]
                    for s, a in accs.items() for i, m in enumerate(t.members)},
             arch=arch, kind='probe', epoch=step / t.spe,
             train_acc=accs['train'], test_acc=accs['test'])
    logging.info('%s probe @ epoch %.2f: test acc %s', arch, step / t.spe,
                 accs['test'])

  buffers, feed, tick = None, None, time.time()
  for step in range(start, t.total_steps):
    epoch, in_epoch = divmod(step, t.spe)
    # Epoch-boundary probes run at the end of the epoch before (step > 0).
    if in_epoch != 0 or step == 0:  # Epoch ends: handled below.
      if step in probe_index:
        run_probe(step, states)
      keep_state(step, states)
    if in_epoch == 0 or feed is None:
      feed = t.epoch_feed(epoch, in_epoch)
      buffers = distributed.put(
          steps_lib.empty_buffers(t.num_members, t.num_train), t.replicated)
    states, buffers = t.step(states, buffers, next(feed))
    bar.update(spec.batch_size * t.num_members)
    if in_epoch == t.spe - 1 or step + 1 == t.total_steps:
      fused = distributed.fetch(buffers)
      perms = np.asarray(distributed.fetch(t.epoch_perms(epoch)))
      seen, position = record_guards.presented(
          perms, t.keep.sum(1), in_epoch + 1, spec.batch_size)
      bad = seen & ~np.isfinite(fused['loss'])
      if bad.any():
        m = int(np.flatnonzero(bad.any(axis=1))[0])
        first = int(position[m][bad[m]].min()) // spec.batch_size
        raise fail(m, epoch * t.spe + first)
      writer.write_chunk(arch, 'fused', 'train', epoch, step + 1, fused)
      dt, tick = time.time() - tick, time.time()
      losses = np.nanmean(np.where(seen, fused['loss'], np.nan), axis=1)
      tb.write(step + 1, {f'{m["name"]}/train_loss': l
                          for m, l in zip(t.members, losses)},
               arch=arch, kind='epoch', epoch=epoch + 1,
               train_loss=losses.round(5).tolist(),
               train_acc=((fused['correct'] & seen).sum(1) /
                          seen.sum(1)).round(4).tolist(),
               seconds=round(dt, 3))
      if step + 1 in probe_index:  # Before the checkpoint that marks it done.
        run_probe(step + 1, states)
      keep_state(step + 1, states)
      if (epoch + 1) % spec.checkpoint_every_epochs == 0 or (
          step + 1 == t.total_steps):
        bad_members = nonfinite(states)
        if bad_members:
          raise fail(bad_members[0], step + 1)
        ckpt.save(step + 1, states)
        last_good = step + 1
  ckpt.wait()
  if kept:
    kept.wait()
  bar.close()
  tb.close()
  writer.finish_arch(arch)


def record_study(config, workdir: str, data=None,
                 probe_until: float | None = None,
                 stream: str = '') -> list[str]:
  """The record stage: trains all architectures; returns the finished ones.

  ``data`` replaces ``load_dataset(config)`` (the cause probes pass modified
  copies: shuffled labels, filtered images); ``probe_until`` as train_arch;
  ``stream`` names the members' random stream ('' for the study; a cause
  probe's own, so no member replays a study member's keys).
  """
  config_checks.validate(config)
  os.makedirs(workdir, exist_ok=True)
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
