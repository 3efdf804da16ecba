"""Compiled programs of the records stage, shared by every trainer.

An ArchTrainer (trainer.py) asks here for its train step, probe step, init
and epoch permutations. Each is jitted once per process for its static parts
(model, member strategy, optimizer kind, augmentation, mesh; the feed kind
and batch size), never per trainer: trainers that differ only in subset,
epochs, learning rate or data values (the sweep groups, the cause probes)
reuse one jitted function, so they are neither retraced nor recompiled. The
run length enters the train step as traced optim.ScheduleArgs and the
normalisation statistics as traced inputs, so equal static parts mean an
equal program, and the persistent compilation cache also hits across
processes.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from easyhard_jax.data import device_ops
from easyhard_jax.train import mesh as mesh_lib
from easyhard_jax.train import optim
from easyhard_jax.train import steps as steps_lib


def classic_rng(fn):
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


# {static key: jitted function}, for the life of the process.
_PROGRAMS: dict[tuple[Any, ...], Any] = {}


def _program(key: tuple[Any, ...], build):
  if key not in _PROGRAMS:
    _PROGRAMS[key] = build()
  return _PROGRAMS[key]


def _static_key(**static) -> tuple[Any, ...]:
  """A hashable key of a program's static parts."""
  return tuple(sorted(static.items(), key=lambda kv: kv[0]))


def train_step(step_kind: str, step_kwargs, *, optimizer, augment, model,
               strategy, dtype, mesh, member_axis):
  """The jitted train step of a feed kind (states and buffers donated).

  The normalisation ``mean`` and ``std`` are keyword inputs of the call
  (traced), not constants of the program.

  Args:
    step_kind: the feed's step_kind (a key of steps.TRAIN_STEPS).
    step_kwargs: the feed's static step arguments, as sorted (name, value)
      pairs (the resident step's batch size).
    optimizer, augment, model, strategy, dtype: as the step takes.
    mesh, member_axis: the mesh and the axis that shards members, or None.
  """

  def build():
    fn = functools.partial(
        steps_lib.TRAIN_STEPS[step_kind], **dict(step_kwargs),
        strategy=strategy, model=model, optimizer=optimizer, augment=augment,
        dtype=dtype, batch_sharding=mesh_lib.batch_sharding(mesh),
        member_axis=member_axis)
    # Forced host devices (XLA:CPU): one collective program in flight.
    return mesh_lib.one_in_flight(
        mesh, classic_rng(jax.jit(fn, donate_argnums=(0, 1))))

  return _program(('train', step_kind, step_kwargs) + _static_key(
      optimizer=optimizer, augment=augment, model=model,
      strategy=strategy, dtype=jnp.dtype(dtype).name, mesh=mesh,
      member_axis=member_axis), build)


def probe_step(*, model, strategy, dtype, mesh, member_axis):
  """The jitted probe step; per batch, so train and test share one compile.

  ``mean`` and ``std`` are keyword inputs of the call, as for train_step.
  """

  def build():
    fn = jax.jit(functools.partial(
        steps_lib.ensemble_probe_step, model=model, strategy=strategy,
        dtype=dtype, batch_sharding=mesh_lib.batch_sharding(mesh),
        member_axis=member_axis), static_argnames=('features',))
    return mesh_lib.one_in_flight(mesh, fn)

  return _program(('probe',) + _static_key(
      model=model, strategy=strategy,
      dtype=jnp.dtype(dtype).name, mesh=mesh, member_axis=member_axis), build)


def init_states(model, optimizer, image_shape, dtype, sharding):
  """keys [M] -> member-stacked initial TrainState (placed by sharding).

  The optimizer state does not depend on the schedule's numbers, so the
  chain that initialises it is built with placeholder ones.
  """

  def build():
    tx = optimizer.tx(optim.ScheduleArgs(*(np.int32(1),) * 3,
                                         np.zeros(0, np.int32),
                                         np.float32(0.0)))

    def init(key):
      variables = model.init(key, jnp.zeros((1,) + tuple(image_shape), dtype),
                             train=False)
      params = variables['params']
      return steps_lib.TrainState(
          step=jnp.zeros((), jnp.int32), params=params,
          batch_stats=variables.get('batch_stats', {}),
          opt_state=tx.init(params))

    return classic_rng(jax.jit(jax.vmap(init), out_shardings=sharding))

  return _program(('init', model, optimizer, tuple(image_shape),
                   jnp.dtype(dtype).name, sharding), build)


@classic_rng
@jax.jit
def epoch_perms(perm_keys, keep, epoch):
  """Each member's example order of ``epoch`` (kept examples first)."""
  return jax.vmap(lambda k, m: device_ops.epoch_permutation(
      jax.random.fold_in(k, epoch), m))(perm_keys, keep)
