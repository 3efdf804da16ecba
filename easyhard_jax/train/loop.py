"""The train loop of one member group: train steps, and actions on their steps.

The host loop dispatches one jitted step per iteration and never reads
device values inside an epoch. After ``s`` steps it runs the actions due at
``s`` (actions.py), in this order:

  flush    epoch ends and the end: fetch the fused per-example buffers,
           check the loss is finite on what was presented, write the chunk;
  metrics  the same steps: the epoch's loss and accuracy per member;
  probe    the probe steps: the eval-mode pass over both splits, recorded;
  keep     the analysis-checkpoint steps: the state, kept after the run;
  save     every ``checkpoint_every_epochs`` epochs and the end: the resume
           checkpoint (after the probe, so a saved step is fully recorded).

Both saves go through one divergence guard (``_save``): a member with a
non-finite parameter is never saved; the run stops with an error naming the
member, the step and the last finite checkpoint, and the records' manifest
marks it. A killed run restarts from the last checkpoint and rewrites
identical records.
"""

from __future__ import annotations

import os
import sys
import time

import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging

from easyhard_jax import distributed
from easyhard_jax.storage import metrics_writer
from easyhard_jax.storage import records
from easyhard_jax.train import actions as actions_lib
from easyhard_jax.train import analysis_checkpoints
from easyhard_jax.train import checkpoints
from easyhard_jax.train import record_guards
from easyhard_jax.train import run_spec
from easyhard_jax.train import steps as steps_lib
from easyhard_jax.train import trainer as trainer_lib


class GroupRun:
  """One run of a member group: its trainer, outputs and loop state.

  Args:
    spec: the group's resolved run spec.
    data: the dataset (as trainer.ArchTrainer takes it).
    workdir: where checkpoints/, analysis_checkpoints/, metrics.jsonl and
      tensorboard/ go.
    writer: the records writer of ``workdir``.
  """

  def __init__(self, spec: run_spec.RunSpec, data, workdir: str,
               writer: records.RecordWriter):
    self.spec, self.writer = spec, writer
    self.t = trainer_lib.ArchTrainer(spec, data)
    self.name = spec.program  # The member group's name in records.
    writer.begin_arch(self.name, spec.member_dicts(), spec.steps_per_epoch,
                      list(spec.probe_steps), spec.fingerprint)
    self.bound = record_guards.resume_bound(
        writer, self.name, list(spec.probe_steps), spec.steps_per_epoch,
        spec.total_steps)
    self.probe_index = {s: k for k, s in enumerate(spec.probe_steps)}
    self.ckpt = checkpoints.Checkpointer(
        os.path.join(workdir, 'checkpoints', self.name),
        spec.checkpoints_to_keep)
    # States kept for analysis after the run (never deleted; see
    # probe_schedule.analysis_steps). Experiment groups keep none.
    self.kept = checkpoints.Checkpointer(
        os.path.join(workdir, 'analysis_checkpoints', self.name),
        max_to_keep=None) if spec.analysis_steps else None
    self.workdir = workdir
    self.states = self.buffers = self.perms = self.bar = self.metrics = None
    self.start = self.last_good = 0
    self.kept_already: set[int] = set()
    self.tick = time.time()
    self.epoch_summary = None

  def actions(self) -> list[actions_lib.Action]:
    """The loop's actions, in the order they run at a step."""
    spec = self.spec
    spe, total = spec.steps_per_epoch, spec.total_steps
    epoch_ends = [min(e * spe, total) for e in range(1, -(-total // spe) + 1)]
    on = actions_lib.Action.on
    return [
        on('flush', self.flush_epoch, epoch_ends),
        on('metrics', self.write_epoch_metrics, epoch_ends),
        on('probe', self.probe, spec.probe_steps),
        on('keep', self.keep_state, set(spec.analysis_steps) -
           self.kept_already),
        on('save', self.save_checkpoint, [total],
           every_steps=spec.checkpoint_every_epochs * spe),
    ]

  def restore(self) -> None:
    """The latest finite checkpoint before the resume bound, or the init."""
    self.states, self.start = self.ckpt.restore_latest(
        self.t.init_states(), before=self.bound, check=self._reject)
    self.ckpt.delete_after(self.start)  # Saved again later, identically.
    self.last_good = self.start
    if self.start:
      logging.info('%s: resuming at step %d (epoch %d)', self.name,
                   self.start, self.start // self.spec.steps_per_epoch)
    # Read once, before any save of this run, so every process of a
    # multi-process run takes the same decisions (a save is a collective).
    # States of another run (other config, or beyond this run's resume
    # point) are dropped, so every kept state is one of these records'.
    if self.kept:
      self.kept_already = analysis_checkpoints.prepare(
          self.kept, self.start, self.spec.fingerprint)

  def run(self) -> None:
    """Trains from the restored step to the end, running the actions."""
    spec, t = self.spec, self.t
    self.restore()
    logging.info('%s: %d members, %d steps/epoch, strategy=%s, dtype=%s, '
                 'probes at steps %s', self.name, spec.num_members,
                 spec.steps_per_epoch, spec.strategy,
                 jnp.dtype(spec.dtype).name, list(spec.probe_steps))
    self.metrics = metrics_writer.MetricsWriter(self.workdir)
    # Drawn on a terminal only (logs and CI get the per-epoch log lines).
    self.bar = tqdm.tqdm(
        total=(spec.total_steps - self.start) * spec.batch_size *
        spec.num_members, desc=self.name, unit='img', unit_scale=True,
        disable=not sys.stderr.isatty(), leave=False)
    actions = self.actions()
    if self.start == 0:  # The initial state's probe and kept state.
      actions_lib.run_due(actions, 0)
    feed, self.tick = None, time.time()
    for step in range(self.start, spec.total_steps):
      epoch, in_epoch = divmod(step, spec.steps_per_epoch)
      if in_epoch == 0 or feed is None:
        self.perms = t.epoch_perms(epoch)  # Once per epoch: feed and flush.
        feed = t.epoch_feed(epoch, in_epoch, self.perms)
        self.buffers = distributed.put(
            steps_lib.empty_buffers(spec.num_members, spec.num_train),
            t.replicated)
      self.states, self.buffers = t.step(self.states, self.buffers,
                                         next(feed))
      self.bar.update(spec.batch_size * spec.num_members)
      actions_lib.run_due(actions, step + 1)
    self.close()
    self.writer.finish_arch(self.name)

  def close(self) -> None:
    """Waits for pending saves and closes the progress bar and metrics."""
    self.ckpt.wait()
    if self.kept:
      self.kept.wait()
    if self.bar is not None:
      self.bar.close()
    if self.metrics is not None:
      self.metrics.close()

  # The actions (each takes the number of train steps done).

  def flush_epoch(self, step: int) -> None:
    """Writes the fused records of the epoch that ends at ``step``."""
    spec = self.spec
    epoch = (step - 1) // spec.steps_per_epoch
    fused = distributed.fetch(self.buffers)
    perms = np.asarray(distributed.fetch(self.perms))
    seen, position = record_guards.presented(
        perms, spec.num_kept, step - epoch * spec.steps_per_epoch,
        spec.batch_size)
    bad = seen & ~np.isfinite(fused['loss'])
    if bad.any():
      m = int(np.flatnonzero(bad.any(axis=1))[0])
      first = int(position[m][bad[m]].min()) // spec.batch_size
      raise self._fail(m, epoch * spec.steps_per_epoch + first)
    self.writer.write_chunk(self.name, 'fused', 'train', epoch, step, fused)
    self.epoch_summary = (epoch, fused, seen)

  def write_epoch_metrics(self, step: int) -> None:
    """The flushed epoch's per-member train loss and accuracy."""
    epoch, fused, seen = self.epoch_summary
    dt, self.tick = time.time() - self.tick, time.time()
    losses = np.nanmean(np.where(seen, fused['loss'], np.nan), axis=1)
    self.metrics.write(
        step, {f'{m.name}/train_loss': l
               for m, l in zip(self.spec.members, losses)},
        arch=self.name, kind='epoch', epoch=epoch + 1,
        train_loss=losses.round(5).tolist(),
        train_acc=((fused['correct'] & seen).sum(1) /
                   seen.sum(1)).round(4).tolist(),
        seconds=round(dt, 3))

  def probe(self, step: int) -> None:
    """The eval-mode probe of both splits at ``step``, recorded."""
    spe, accs = self.spec.steps_per_epoch, {}
    for split in records.SPLITS:
      out = self.t.probe(self.states, split)
      bad = ~np.isfinite(out['loss']).all(axis=1)
      if bad.any():
        raise self._fail(int(np.flatnonzero(bad)[0]), step)
      self.writer.write_chunk(self.name, 'probe', split,
                              self.probe_index[step], step, out)
      accs[split] = out['correct'].mean(axis=1).round(4).tolist()
    self.metrics.write(
        step, {f'{m.name}/probe_{s}_acc': a[i] for s, a in accs.items()
               for i, m in enumerate(self.spec.members)},
        arch=self.name, kind='probe', epoch=step / spe,
        train_acc=accs['train'], test_acc=accs['test'])
    logging.info('%s probe @ epoch %.2f: test acc %s', self.name, step / spe,
                 accs['test'])

  def keep_state(self, step: int) -> None:
    """Keeps the state at ``step`` for analysis after the run."""
    self._save(self.kept, step)

  def save_checkpoint(self, step: int) -> None:
    """The resume checkpoint at ``step``."""
    self._save(self.ckpt, step)
    self.last_good = step

  # The divergence guard.

  def _nonfinite(self, states) -> list[int]:
    ok = np.asarray(distributed.fetch(record_guards.finite_members(states)))
    return np.flatnonzero(~ok).tolist()

  def _reject(self, states) -> str | None:
    bad = self._nonfinite(states)
    return f'non-finite parameters in member(s) {bad}' if bad else None

  def _save(self, checkpointer, step: int) -> None:
    """Saves the states, or stops the run if a member is non-finite."""
    bad = self._nonfinite(self.states)
    if bad:
      raise self._fail(bad[0], step)
    checkpointer.save(step, self.states)

  def _fail(self, member: int, step: int) -> FloatingPointError:
    """Marks the divergence, closes the run; returns the error to raise."""
    name = self.spec.members[member].name
    self.writer.mark_diverged(self.name, step, name)
    self.close()
    return record_guards.diverged(self.name, name, step,
                                  step // self.spec.steps_per_epoch,
                                  self.last_good, self.spec.learning_rate)


def train_group(spec: run_spec.RunSpec, data, workdir: str,
                writer: records.RecordWriter) -> None:
  """Trains the member group of ``spec``, writing probe and fused records.

  Raises:
    FloatingPointError: a member diverged; nothing non-finite was written
      and the records' manifest marks it, so a rerun with a lower learning
      rate resumes from the last finite checkpoint.
  """
  GroupRun(spec, data, workdir, writer).run()
