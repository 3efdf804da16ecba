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
import itertools
import math
import os
import time
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from easyhard_jax import distributed
from easyhard_jax import metrics_writer
from easyhard_jax import models
from easyhard_jax import progress
from easyhard_jax import records
from easyhard_jax.data import device_ops
from easyhard_jax.data import loader
from easyhard_jax.data import sources
from easyhard_jax.data import streaming
from easyhard_jax.train import checkpoints
from easyhard_jax.train import config_checks
from easyhard_jax.train import mesh as mesh_lib
from easyhard_jax.train import optim
from easyhard_jax.train import steps as steps_lib


def _classic_rng(fn):
  """Runs ``fn`` (and so its tracing) with threefry_partitionable=False.

  JAX's partitionable threefry made ``model.init`` compile 10x slower on
  XLA:CPU (cnn: 17 s vs 1.4 s; resnet18: 30 s vs 5 s). Our random draws are
  small and per member, so the partitionable layout buys nothing here.
  """

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with jax.threefry_partitionable(False):
      return fn(*args, **kwargs)

  return wrapped


def member_keys(config, arch: str, seeds) -> jax.Array:
  """Per-member base keys: fold_in(fold_in(seed, crc32(arch)), member seed)."""
  root = jax.random.fold_in(jax.random.key(config.seed),
                            zlib.crc32(arch.encode()) & 0x7FFFFFFF)
  return jax.vmap(lambda i: jax.random.fold_in(root, i))(
      jnp.asarray(seeds, jnp.int32))


def member_infos(config, arch: str) -> list[dict[str, Any]]:
  """The study's members of ``arch``: seeds 0..seeds_per_arch-1, all data."""
  return [{'name': f'{arch}/s{i}', 'arch': arch, 'seed': i,
           'root_seed': int(config.seed)}
          for i in range(config.seeds_per_arch)]


def steps_per_epoch(config, num_examples: int) -> int:
  return math.ceil(num_examples / config.batch_size)


class ArchTrainer:
  """Holds the compiled steps and device data of one architecture's members.

  Args:
    config: the study config.
    data: the dataset: a sources.Dataset (uint8, moved to the device here)
      or a streaming.StreamedData (read by a grain loader every step).
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
    self.streamed = isinstance(data, streaming.StreamedData)
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
    self.tx = optim.make_optimizer(config, self.spe, self.total_steps)
    self.mesh = mesh_lib.make_mesh(config, self.num_members, self.strategy)
    rep = self.replicated = mesh_lib.replicated(self.mesh)
    keys = member_keys(config, arch, [m['seed'] for m in self.members])
    self.init_keys, self.perm_keys, self.aug_keys = (
        distributed.put(jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(
            keys), rep) for i in range(3))
    # Every step input is a global array on the mesh (needed multi-process).
    self.num_kept = distributed.put(kept.astype(np.int32), rep)
    member_axis = 'member' if self.mesh.shape['member'] > 1 else None
    self.state_sharding = (mesh_lib.member_sharded(self.mesh) if member_axis
                           else rep)
    shard = dict(batch_sharding=mesh_lib.batch_sharding(self.mesh),
                 member_axis=member_axis)
    # numpy mean/std: constants in the programs.
    self.mean, self.std = ((data.mean, data.std) if self.streamed else
                           device_ops.channel_stats(data.train_images))
    aug = device_ops.AugmentConfig(config.augment.crop_padding,
                                   bool(config.augment.horizontal_flip))
    update = dict(strategy=self.strategy, model=self.model, tx=self.tx,
                  augment=aug, mean=self.mean, std=self.std, dtype=self.dtype,
                  **shard)
    if self.streamed:
      self.feed = loader.StreamFeed(
          data, self.mesh, member_axis, config.batch_size,
          config.eval_batch_size, [m['seed'] for m in self.members],
          config.seed, arch, config.stream.prefetch_batches)
      train_fn = steps_lib.ensemble_batch_train_step
    else:
      # The uint8 dataset is replicated on every device of the mesh.
      self.images = {s: distributed.put(data.split(s)[0], rep)
                     for s in records.SPLITS}
      self.labels = {s: distributed.put(data.split(s)[1], rep)
                     for s in records.SPLITS}
      self.probe_batch = min(config.eval_batch_size,
                             max(x.shape[0] for x in self.images.values()))
      train_fn = functools.partial(
          steps_lib.ensemble_train_step, batch_size=config.batch_size,
          steps_per_epoch=self.spe)
    self.train_step = _classic_rng(jax.jit(
        functools.partial(train_fn, **update), donate_argnums=(0, 1)))
    # Jitted per batch (not per split) so train and test share one compile.
    self.probe_step = jax.jit(
        functools.partial(
            steps_lib.ensemble_probe_step, model=self.model,
            strategy=self.strategy, mean=self.mean, std=self.std,
            dtype=self.dtype, **shard), static_argnames=('features',))
    perms = _classic_rng(jax.jit(
        lambda keys, keep, epoch: jax.vmap(
            lambda k, m: device_ops.epoch_permutation(
                jax.random.fold_in(k, epoch), m))(keys, keep)))
    keep_device = distributed.put(keep, rep)
    self.epoch_perms = lambda epoch: perms(self.perm_keys, keep_device, epoch)

  def epoch_feed(self, epoch: int, first_step: int = 0):
    """Per-step inputs of ``epoch`` from its step ``first_step`` on.

    Device-resident data: the epoch's permutations at every step (the step
    gathers its own batch). Streamed data: the loader's batches.
    """
    perms = self.epoch_perms(epoch)
    if not self.streamed:
      return itertools.repeat(perms)
    last = min(self.spe, self.total_steps - epoch * self.spe)
    return self.feed.epoch(distributed.fetch(perms), self.keep.sum(1), epoch,
                           first_step, last)

  def step(self, states, buffers, fed):
    """One train step of every member; ``fed`` comes from epoch_feed."""
    if self.streamed:
      return self.train_step(states, buffers, self.aug_keys, *fed)
    return self.train_step(states, buffers, fed, self.aug_keys,
                           self.num_kept, self.images['train'],
                           self.labels['train'])

  def _probe_batches(self, split: str):
    if self.streamed:
      yield from self.feed.probe(split)
      return
    images, labels = self.images[split], self.labels[split]
    n, b = images.shape[0], self.probe_batch
    for start in range(0, n, b):
      idx = distributed.put(np.minimum(np.arange(start, start + b), n - 1),
                            self.replicated)
      yield images[idx], labels[idx]

  @_classic_rng
  def init_states(self) -> steps_lib.TrainState:
    """Member-stacked initial state; each member has its own init key."""
    shape = (1,) + self.data.image_shape

    def init(key):
      variables = self.model.init(key, jnp.zeros(shape, self.dtype),
                                  train=False)
      params = variables['params']
      return steps_lib.TrainState(
          step=jnp.zeros((), jnp.int32), params=params,
          batch_stats=variables.get('batch_stats', {}),
          opt_state=self.tx.init(params))

    return jax.jit(jax.vmap(init), out_shardings=self.state_sharding)(
        self.init_keys)

  def probe(self, states, split: str, features: bool = False):
    """Eval-mode per-example statistics of every member on a whole split.

    The last batch is padded by repeating the final example; the padding is
    cut off on the host. Results stay on the device until the split is done.

    Returns:
      {field: [M, N]}, or with ``features`` ({field: [M, N]}, [M, N, D]).
    """
    n = len(getattr(self.data, f'{split}_labels'))
    outs = [self.probe_step(states, x, y, features=features)
            for x, y in self._probe_batches(split)]
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


def train_arch(config, data, arch: str, workdir: str,
               writer: records.RecordWriter, program: str | None = None,
               **trainer_kwargs) -> None:
  """Trains one architecture's members, writing probe and fused records.

  Args:
    config, data, arch: as for ArchTrainer.
    workdir: where checkpoints/, metrics.jsonl and tensorboard/ go.
    writer: the records writer of ``workdir``.
    program: name of this group of members in records and checkpoints
      (default: ``arch``); the experiments train one arch in several groups.
    **trainer_kwargs: members, keep, total_steps (see ArchTrainer); subsets
      and step budgets are how the experiments retrain on part of the data.
  """
  t = ArchTrainer(config, data, arch, **trainer_kwargs)
  schedule = optim.probe_schedule(config, t.spe, t.total_steps)
  arch = program or arch  # From here on: the name of this member group.
  writer.begin_arch(arch, t.members, t.spe, schedule)
  probe_index = {s: k for k, s in enumerate(schedule)}
  ckpt = checkpoints.Checkpointer(
      os.path.join(workdir, 'checkpoints', arch), config.checkpoints_to_keep)
  states = t.init_states()
  states, start = ckpt.restore_latest(states)
  if start:
    logging.info('%s: resuming at step %d (epoch %d)', arch, start,
                 start // t.spe)
  logging.info('%s: %d members, %d steps/epoch, strategy=%s, dtype=%s, '
               'probes at steps %s', arch, t.num_members, t.spe, t.strategy,
               jnp.dtype(t.dtype).name, schedule)

  tb = metrics_writer.MetricsWriter(workdir)
  bar = progress.Progress((t.total_steps - start) * config.batch_size *
                          t.num_members, desc=arch)

  def run_probe(step, states):
    k = probe_index[step]
    accs = {}
    for split in records.SPLITS:
      out = t.probe(states, split)
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
    if step in probe_index and (in_epoch != 0 or step == 0):
      run_probe(step, states)
    if in_epoch == 0 or feed is None:
      feed = t.epoch_feed(epoch, in_epoch)
      buffers = distributed.put(
          steps_lib.empty_buffers(t.num_members, t.num_train), t.replicated)
    states, buffers = t.step(states, buffers, next(feed))
    bar.update(config.batch_size * t.num_members)
    if in_epoch == t.spe - 1 or step + 1 == t.total_steps:
      fused = distributed.fetch(buffers)
      _check_finite(np.where(t.keep, fused['loss'], 0.0), arch, epoch)
      writer.write_chunk(arch, 'fused', 'train', epoch, step + 1, fused)
      dt, tick = time.time() - tick, time.time()
      losses = np.nanmean(np.where(t.keep, fused['loss'], np.nan), axis=1)
      tb.write(step + 1, {f'{m["name"]}/train_loss': l
                          for m, l in zip(t.members, losses)},
               arch=arch, kind='epoch', epoch=epoch + 1,
               train_loss=losses.round(5).tolist(),
               train_acc=((fused['correct'] & t.keep).sum(1) /
                          t.keep.sum(1)).round(4).tolist(),
               seconds=round(dt, 3))
      if step + 1 in probe_index:  # Before the checkpoint that marks it done.
        run_probe(step + 1, states)
      if (epoch + 1) % config.checkpoint_every_epochs == 0 or (
          step + 1 == t.total_steps):
        ckpt.save(step + 1, states)
  ckpt.wait()
  bar.close()
  tb.close()
  writer.finish_arch(arch)


def _check_finite(losses: np.ndarray, arch: str, epoch: int) -> None:
  bad = ~np.isfinite(losses).all(axis=1)
  if bad.any():
    raise FloatingPointError(
        f'Non-finite training loss for {arch} member(s) '
        f'{np.flatnonzero(bad).tolist()} in epoch {epoch + 1}. Lower '
        'config.optimizer.learning_rate, set optimizer.grad_clip_norm, or use '
        'dtype=float32; rerunning resumes from the last good checkpoint.')


def record_study(config, workdir: str, data=None) -> list[str]:
  """The record stage: trains all architectures; returns the finished ones.

  ``data`` replaces ``load_dataset(config)`` (the cause probes pass modified
  copies: shuffled labels, filtered images).
  """
  config_checks.validate(config)
  os.makedirs(workdir, exist_ok=True)
  data = data or streaming.load(config)
  writer = records.RecordWriter(workdir)
  writer.write_split_metadata('train', data.train_labels, data.train_ids)
  writer.write_split_metadata('test', data.test_labels, data.test_ids)
  archs = config_checks.arch_list(config)
  for arch in archs:
    if writer.is_complete(arch):
      logging.info('%s: records complete, skipping.', arch)
      continue
    train_arch(config, data, arch, workdir, writer)
  return archs
