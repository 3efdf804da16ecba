"""The record stage: train every architecture's members and write records.

For each architecture, its ``seeds_per_arch`` members train together in one
compiled program (see steps.py). The host loop dispatches one jitted step per
iteration and never reads device values inside an epoch; at the end of an epoch
it fetches the fused per-example buffers, checks the loss is finite, writes
records and saves an orbax checkpoint. A killed run restarts from the last
checkpoint and rewrites identical records; finished architectures are skipped.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
import zlib
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
from easyhard_jax.train import mesh as mesh_lib
from easyhard_jax.train import optim
from easyhard_jax.train import probe_schedule
from easyhard_jax.train import programs
from easyhard_jax.train import record_guards
from easyhard_jax.train import steps as steps_lib


def stream_salt(stream: str) -> int:
  """The 31-bit salt of a random stream's name (crc32, as for arch names)."""
  return zlib.crc32(stream.encode()) & 0x7FFFFFFF


def member_keys(config, arch: str, members) -> jax.Array:
  """Per-member base keys, derived from each member dict.

  A study member: fold_in(fold_in(key(seed), crc32(arch)), member seed). An
  experiment's member carries a ``'stream'`` name (``'causes/adam'``,
  ``'removal/frac_0.300'``, ...) that is folded into the root key first, so
  every experiment, variant and group has random streams (init, data order,
  augmentation) of its own, none a replay of the study's.

  Args:
    config: the config (``config.seed`` is the root seed).
    arch: the architecture name.
    members: member dicts ('seed', optional 'stream') or plain int seeds.

  Returns:
    Keys [len(members)].
  """
  keys = []
  for m in members:
    m = m if isinstance(m, dict) else {'seed': int(m)}
    root = jax.random.key(config.seed)
    if m.get('stream'):
      root = jax.random.fold_in(root, stream_salt(m['stream']))
    root = jax.random.fold_in(root, stream_salt(arch))
    keys.append(jax.random.fold_in(root, int(m['seed'])))
  return jnp.stack(keys)


def member_infos(config, arch: str) -> list[dict[str, Any]]:
  """The members of ``arch``: seeds 0..seeds_per_arch-1, all data.

  ``config.rng_stream`` (set by the experiments, absent in a study) names
  the members' random stream; the study's own members carry none, so their
  keys and records are those of every earlier version.
  """
  stream = config.get('rng_stream', '')
  return [{'name': f'{arch}/s{i}', 'arch': arch, 'seed': i,
           'root_seed': int(config.seed), **({'stream': stream} if stream
                                             else {})}
          for i in range(config.seeds_per_arch)]


def steps_per_epoch(config, num_examples: int) -> int:
  return math.ceil(num_examples / config.batch_size)


class ArchTrainer:
  """Holds the compiled steps and the data feed of one architecture's members.

  The steps come from programs.py, shared with every trainer of the same
  static parts; this trainer's run length is ``self.schedule`` (traced).

  Args:
    config: the study config.
    data: the dataset: a sources.Dataset (uint8, moved to the device) or a
      streaming.StreamedData (read by a grain loader every step); either is
      read through its feed (loader.make_feed), so the trainer has one path.
    arch: model registry name.
    members: member dicts (name, arch, seed, ...); default: the study's seeds.
    keep: optional bool [M, N] training subset per member (all members must
      keep the same number of examples, which sets the epoch length).
    total_steps: training length; default ``epochs`` epochs of the subset.
  """

  def __init__(self, config, data: sources.Dataset | streaming.StreamedData,
               arch: str,
               members: list[dict[str, Any]] | None = None,
               keep: np.ndarray | None = None,
               total_steps: int | None = None):
    self.config, self.data, self.arch = config, data, arch
    self.members = members or member_infos(config, arch)
    self.num_members = len(self.members)
    n = self.num_train = len(data.train_labels)
    keep = (np.ones((self.num_members, n), bool) if keep is None
            else np.asarray(keep, bool))
    kept = keep.sum(axis=1)
    if keep.shape != (self.num_members, n) or (kept != kept[0]).any() or (
        kept[0] == 0):
      raise ValueError(f'keep must be bool [members={self.num_members}, '
                       f'examples={n}] with the same nonzero count per '
                       f'member; got shape {keep.shape}, counts {kept}.')
    self.keep = keep
    self.spe = steps_per_epoch(config, int(kept[0]))
    self.total_steps = total_steps or config.epochs * self.spe
    self.dtype = config_checks.compute_dtype(config)
    self.strategy = config_checks.member_strategy(config)
    kwargs = dict(config.model_kwargs.get(arch, {}))
    self.model = models.get_model(arch, num_classes=data.num_classes,
                                  width=config.width, dtype=self.dtype,
                                  **kwargs)
    self.optimizer = optim.Optimizer.from_config(config)
    sched = optim.schedule_args(config, self.spe, self.total_steps)
    # The optax chain with this run's schedule as host constants (the train
    # step builds the same chain from the traced self.schedule).
    self.tx = self.optimizer.tx(sched)
    self.mesh = mesh_lib.make_mesh(config, self.num_members, self.strategy)
    rep = self.replicated = mesh_lib.replicated(self.mesh)
    # Every step input is a global array on the mesh (needed multi-process).
    self.schedule = distributed.put(sched, rep)
    keys = member_keys(config, arch, self.members)
    self.init_keys, self.perm_keys, self.aug_keys = (
        distributed.put(jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(
            keys), rep) for i in range(3))
    member_axis = 'member' if self.mesh.shape['member'] > 1 else None
    self.state_sharding = (mesh_lib.member_sharded(self.mesh) if member_axis
                           else rep)
    self.feed = loader.make_feed(
        data, self.mesh, member_axis, batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size, members=self.members,
        num_kept=kept, root_seed=config.seed, arch=arch,
        prefetch_batches=config.stream.prefetch_batches)
    # numpy mean/std; the programs take them as inputs (self.norm), so data
    # that differ only in their values (a low-pass probe) share programs.
    self.mean, self.std = self.feed.mean, self.feed.std
    self.norm = {'mean': distributed.put(np.asarray(self.mean, np.float32),
                                         rep),
                 'std': distributed.put(np.asarray(self.std, np.float32), rep)}
    self.probe_batch = self.feed.probe_batch
    aug = device_ops.AugmentConfig(config.augment.crop_padding,
                                   bool(config.augment.horizontal_flip))
    static = dict(strategy=self.strategy, model=self.model, dtype=self.dtype,
                  mesh=self.mesh, member_axis=member_axis)
    self.train_step = programs.train_step(
        self.feed.step_kind, tuple(sorted(self.feed.step_kwargs.items())),
        optimizer=self.optimizer, augment=aug, **static)
    self.probe_step = programs.probe_step(**static)
    self.epoch_perms = functools.partial(
        programs.epoch_perms, self.perm_keys, distributed.put(keep, rep))

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
                      total_steps=None) -> dict[str, Any]:
  """The records fingerprint of a member group (the study's by default)."""
  return record_guards.group_fingerprint(
      config, arch, members or member_infos(config, arch), keep, total_steps)


def train_arch(config, data, arch: str, workdir: str,
               writer: records.RecordWriter, program: str | None = None,
               probe_until: float | None = None, **trainer_kwargs) -> None:
  """Trains one architecture's members, writing probe and fused records.

  Args:
    config, data, arch: as for ArchTrainer.
    workdir: where checkpoints/, metrics.jsonl and tensorboard/ go.
    writer: the records writer of ``workdir``.
    program: name of this group of members in records and checkpoints
      (default: ``arch``); the experiments train one arch in several groups.
    probe_until: probe only up to this epoch (and at the end of training),
      for runs whose later probes nothing reads; None: the whole schedule.
    **trainer_kwargs: members, keep, total_steps (see ArchTrainer); subsets
      and step budgets are how the experiments retrain on part of the data.

  Raises:
    FloatingPointError: a member diverged; nothing non-finite was written
      and the records' manifest marks it, so a rerun with a lower learning
      rate resumes from the last finite checkpoint.
  """
  t = ArchTrainer(config, data, arch, **trainer_kwargs)
  schedule = probe_schedule.probe_schedule(config, t.spe, t.total_steps)
  if probe_until is not None:
    # s / spe: the probe's epoch exactly as records.load computes it.
    schedule = [s for s in schedule
                if s / float(t.spe) <= probe_until or s == t.total_steps]
  fp = study_fingerprint(config, arch, t.members, trainer_kwargs.get('keep'),
                         trainer_kwargs.get('total_steps'))
  arch = program or arch  # From here on: the name of this member group.
  writer.begin_arch(arch, t.members, t.spe, schedule, fp)
  bound = record_guards.resume_bound(writer, arch, schedule, t.spe,
                                     t.total_steps)
  probe_index = {s: k for k, s in enumerate(schedule)}
  ckpt = checkpoints.Checkpointer(
      os.path.join(workdir, 'checkpoints', arch), config.checkpoints_to_keep)
  # States kept for analysis after the run (never deleted; see
  # probe_schedule.analysis_checkpoint_steps). Sweep groups keep none.
  keep_steps = set() if program else set(
      probe_schedule.analysis_checkpoint_steps(config, t.spe, t.total_steps))
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
  bar = tqdm.tqdm(total=(t.total_steps - start) * config.batch_size *
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
                                  config.optimizer.learning_rate)

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
    bar.update(config.batch_size * t.num_members)
    if in_epoch == t.spe - 1 or step + 1 == t.total_steps:
      fused = distributed.fetch(buffers)
      perms = np.asarray(distributed.fetch(t.epoch_perms(epoch)))
      seen, position = record_guards.presented(
          perms, t.keep.sum(1), in_epoch + 1, config.batch_size)
      bad = seen & ~np.isfinite(fused['loss'])
      if bad.any():
        m = int(np.flatnonzero(bad.any(axis=1))[0])
        first = int(position[m][bad[m]].min()) // config.batch_size
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
      if (epoch + 1) % config.checkpoint_every_epochs == 0 or (
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
                 probe_until: float | None = None) -> list[str]:
  """The record stage: trains all architectures; returns the finished ones.

  ``data`` replaces ``load_dataset(config)`` (the cause probes pass modified
  copies: shuffled labels, filtered images); ``probe_until`` as train_arch.
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
      writer.check_fingerprint(arch, study_fingerprint(config, arch))
      if not writer.damaged_chunks(arch):
        logging.info('%s: records complete, skipping.', arch)
        continue
      logging.warning('%s: re-recording damaged or missing chunks.', arch)
    train_arch(config, data, arch, workdir, writer, probe_until=probe_until)
  # Callers read the records next (the cause probes): on every process only
  # once process 0 has written them.
  distributed.barrier(f'records_written:{workdir}')
  return archs
