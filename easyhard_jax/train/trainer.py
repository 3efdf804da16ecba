"""The trainer of one member group: its compiled steps and its data feed.

Built from a resolved run spec (run_spec.RunSpec); the train loop
(loop.py), the after-the-fact probes and the benchmarks drive it.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from easyhard_jax import distributed
from easyhard_jax.storage import records
from easyhard_jax.data import loader
from easyhard_jax.data import sources
from easyhard_jax.data import streaming
from easyhard_jax.train import mesh as mesh_lib
from easyhard_jax.train import programs
from easyhard_jax.train import run_spec
from easyhard_jax.train import steps as steps_lib


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

  def epoch_feed(self, epoch: int, first_step: int = 0, perms=None):
    """The feed's per-step inputs of ``epoch`` from its step ``first_step`` on.

    Device-resident data: the epoch's permutations at every step (the step
    gathers its own batch). Streamed data: the loader's batches.
    ``perms``: the epoch's permutations when the caller has them already.
    """
    last = min(self.spe, self.total_steps - epoch * self.spe)
    perms = self.epoch_perms(epoch) if perms is None else perms
    return self.feed.epoch(perms, epoch, first_step, last)

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
