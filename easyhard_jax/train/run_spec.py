"""The run spec: a config resolved once into what one member group trains with.

``resolve(config, data, arch, ...)`` reads the config, checks it, and returns
a frozen :class:`RunSpec`: members, subset, run length, dtype, member
strategy, mesh, model, optimizer and schedule, augmentation, probe and
analysis-checkpoint steps, checkpoint cadence and the records fingerprint.
Below it (ensemble.ArchTrainer, the train loop, its actions) functions take
these values, never the config; so what a run does is what its spec says,
and a field the config lacks, or holds a bad value of, fails here, naming it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh

from easyhard_jax import models
from easyhard_jax.data import device_ops
from easyhard_jax.train import config_checks
from easyhard_jax.train import mesh as mesh_lib
from easyhard_jax.train import members as members_lib
from easyhard_jax.train import optim
from easyhard_jax.train import probe_schedule
from easyhard_jax.train import record_guards

Member = members_lib.Member


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """Everything one member group's training reads, resolved and checked.

  Attributes:
    arch: model registry name.
    program: the group's name in records and checkpoints (``arch`` for a
      study; the experiments train one arch in several groups).
    members: the group's members.
    keep: bool [M, N] each member's training subset (read-only).
    num_train: training examples (N).
    steps_per_epoch: steps of one epoch of the (equal-sized) subsets.
    total_steps: the run's length in steps.
    batch_size, eval_batch_size: train and probe batch sizes.
    dtype: the compute dtype ('auto' resolved for this backend).
    strategy: how members share a program ('unroll' or 'vmap').
    mesh: the ('member', 'data') mesh.
    model: the Flax module.
    optimizer: the optimizer's static part (jit-static).
    schedule: the schedule's numbers for this run length (host arrays).
    augment: on-device augmentation settings.
    prefetch_batches: steps a streamed feed reads ahead.
    probe_steps: global steps of the probe pass.
    analysis_steps: steps whose states are kept for analysis.
    checkpoint_every_epochs, checkpoints_to_keep: resume checkpoints.
    learning_rate: ``config.optimizer.learning_rate`` (named by the
      divergence error).
    fingerprint: the records fingerprint of the group.
  """
  arch: str
  program: str
  members: tuple[Member, ...]
  keep: np.ndarray = dataclasses.field(compare=False, repr=False)
  num_train: int
  steps_per_epoch: int
  total_steps: int
  batch_size: int
  eval_batch_size: int
  dtype: Any
  strategy: str
  mesh: Mesh
  model: nn.Module
  optimizer: optim.Optimizer
  schedule: optim.ScheduleArgs = dataclasses.field(compare=False, repr=False)
  augment: device_ops.AugmentConfig
  prefetch_batches: int
  probe_steps: tuple[int, ...]
  analysis_steps: tuple[int, ...]
  checkpoint_every_epochs: int
  checkpoints_to_keep: int
  learning_rate: float
  fingerprint: Mapping[str, Any] = dataclasses.field(compare=False,
                                                     repr=False)

  @property
  def num_members(self) -> int:
    return len(self.members)

  @property
  def num_kept(self) -> np.ndarray:
    """int [M]: each member's training subset size."""
    return self.keep.sum(axis=1)

  @property
  def member_axis(self) -> str | None:
    """The mesh axis that shards members, or None."""
    return 'member' if self.mesh.shape['member'] > 1 else None

  def member_dicts(self) -> list[dict[str, Any]]:
    """The members as the dicts records store."""
    return [m.as_dict() for m in self.members]

  def member_keys(self) -> jax.Array:
    """Per-member base keys [M] (members.Member.key)."""
    return members_lib.member_keys(self.members)

  def is_checkpoint_step(self, step: int) -> bool:
    """A resume checkpoint is saved after ``step`` (an epoch end, the end)."""
    return step == self.total_steps or (
        step % self.steps_per_epoch == 0 and
        (step // self.steps_per_epoch) % self.checkpoint_every_epochs == 0)


def _keep_mask(keep, num_members: int, n: int) -> np.ndarray:
  keep = (np.ones((num_members, n), bool) if keep is None
          else np.array(keep, bool))
  kept = keep.sum(axis=1) if keep.ndim == 2 else np.zeros(1, int)
  if keep.shape != (num_members, n) or (kept != kept[0]).any() or (
      kept[0] == 0):
    raise ValueError(f'keep must be bool [members={num_members}, '
                     f'examples={n}] with the same nonzero count per '
                     f'member; got shape {keep.shape}, counts {kept}.')
  keep.flags.writeable = False
  return keep


def study_members(config, arch: str, stream: str = '') -> tuple[Member, ...]:
  """The records stage's members of ``arch`` (``config.seeds_per_arch``)."""
  return members_lib.study_members(arch, int(config.seeds_per_arch),
                                   int(config.seed), stream)


def resolve(config, data, arch: str, *,
            members: Sequence[Member | Mapping[str, Any]] | None = None,
            keep: np.ndarray | None = None,
            total_steps: int | None = None, program: str | None = None,
            probe_until: float | None = None, stream: str = ''
            ) -> RunSpec:
  """Resolves ``config`` for one member group of ``arch`` on ``data``.

  Args:
    config: the study (or experiment variant) config.
    data: the dataset (anything with train_labels, num_classes).
    arch: model registry name.
    members: the group's members (Members or member dicts); default the
      study's seeds on ``stream``.
    keep: optional bool [M, N] training subset per member (all members
      keep the same number of examples, which sets the epoch length).
    total_steps: training length; default ``config.epochs`` epochs.
    program: the group's name in records and checkpoints (default arch).
    probe_until: probe only up to this epoch (and at the end of training).
    stream: the random stream of the default members.

  A study group (no ``program``) keeps the analysis checkpoints of
  ``config.analysis_checkpoints``; a named group (an experiment's) none.

  Returns:
    The frozen RunSpec.

  Raises:
    ValueError: a bad value, naming the field.
  """
  members = tuple(Member.coerce(m, arch, config.seed) for m in members) if (
      members) else study_members(config, arch, stream)
  wrong = [m.name for m in members
           if m.arch != arch or m.root_seed != int(config.seed)]
  if wrong:
    raise ValueError(f'Members {wrong} are not of arch {arch!r} and root '
                     f'seed config.seed={config.seed}.')
  # A member is its name on its random stream (an experiment's variants
  # reuse the study's names on streams of their own).
  if len({(m.stream, m.name) for m in members}) != len(members):
    raise ValueError('Members repeat (same name on the same stream): '
                     f'{[(m.stream, m.name) for m in members]}.')
  n = len(data.train_labels)
  keep_mask = _keep_mask(keep, len(members), n)
  batch_size = int(config.batch_size)
  if batch_size < 1:
    raise ValueError(f'config.batch_size must be >= 1, got {batch_size}.')
  spe = math.ceil(int(keep_mask.sum(axis=1)[0]) / batch_size)
  total = int(total_steps or int(config.epochs) * spe)
  if total < 1:
    raise ValueError(f'The run must train at least one step; got '
                     f'config.epochs={config.epochs}, total_steps='
                     f'{total_steps}.')
  dtype = config_checks.compute_dtype(config)
  strategy = config_checks.member_strategy(config)
  plan = probe_schedule.ProbePlan.from_config(config.probe)
  probes = plan.steps(spe, total)
  if probe_until is not None:
    # s / spe: the probe's epoch exactly as records.load computes it.
    probes = [s for s in probes if s / float(spe) <= probe_until or s == total]
  analysis = probe_schedule.analysis_steps(
      config.analysis_checkpoints, config.analysis.window,
      plan.steps(spe, total), spe, total) if program is None else []
  every = int(config.checkpoint_every_epochs)
  if every < 1:
    raise ValueError('config.checkpoint_every_epochs must be >= 1, got '
                     f'{config.checkpoint_every_epochs!r}.')
  kwargs = dict(config.model_kwargs.get(arch, {}))
  model = models.get_model(arch, num_classes=data.num_classes,
                           width=config.width, dtype=dtype, **kwargs)
  return RunSpec(
      arch=arch, program=program or arch, members=members, keep=keep_mask,
      num_train=n, steps_per_epoch=spe, total_steps=total,
      batch_size=batch_size, eval_batch_size=int(config.eval_batch_size),
      dtype=dtype, strategy=strategy,
      mesh=mesh_lib.make_mesh(config, len(members), strategy), model=model,
      optimizer=optim.Optimizer.from_config(config),
      schedule=optim.Schedule.from_config(config.optimizer).args(spe, total),
      augment=device_ops.AugmentConfig(config.augment.crop_padding,
                                       bool(config.augment.horizontal_flip)),
      prefetch_batches=int(config.stream.prefetch_batches),
      probe_steps=tuple(probes), analysis_steps=tuple(analysis),
      checkpoint_every_epochs=every,
      checkpoints_to_keep=int(config.checkpoints_to_keep),
      learning_rate=config.optimizer.learning_rate,
      fingerprint=fingerprint(config, arch, members, keep, total_steps,
                              dtype))


def fingerprint(config, arch: str, members, keep=None, total_steps=None,
                dtype=None) -> dict[str, Any]:
  """The records fingerprint of a member group (record_guards)."""
  dtype = dtype if dtype is not None else config_checks.compute_dtype(config)
  return record_guards.group_fingerprint(
      config, arch, [dict(m) for m in members], keep, total_steps,
      jnp.dtype(dtype).name)
