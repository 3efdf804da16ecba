"""Pure train and probe steps for an ensemble of members of one architecture.

A *member* is one model (architecture, seed). Members of one architecture are
stacked on a leading axis of one state pytree and updated by one compiled
program. How the member axis is executed is a strategy:

- ``unroll``: a Python loop over members inside the jit (XLA sees M independent
  graphs; fastest on XLA:CPU, where vmapped convolutions become slow grouped
  convolutions).
- ``vmap``: ``jax.vmap`` over the member axis (one batched graph).

There is no ``lax.map`` strategy (members in a loop inside the program): on
XLA:CPU a convolution's gradient inside a while loop keeps its raw dimension
order and runs on the slow generic emitter instead of Eigen/YNNPACK (18x
slower per conv, 16x per ResNet-18 step; the cnn ran at 0.40x of training
the members one after another), and no flag changes that.

The train step computes per-example loss, correctness, logit margin, p(true)
and the predicted class from the same forward pass that produces the
gradient and scatters them by example index into device-resident [members,
examples] buffers. A batch row may be padding (the last batch of an epoch is
padded, not wrapped; its index is -1): padding has zero weight in the loss,
the gradient and the BatchNorm statistics and is never recorded, so every
example is presented, and recorded, exactly once per epoch.

Nothing about the run's length is a constant of the program: steps per
epoch and the learning-rate schedule's numbers arrive as traced
``optim.ScheduleArgs``, so runs that differ only in subset size or epochs
(the sweeps' fractions, the cause probes' epochs) share one compiled step.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from easyhard_jax.data import device_ops
from easyhard_jax.train import optim

STRATEGIES = ('unroll', 'vmap')


@flax.struct.dataclass
class TrainState:
  """One member's (or, stacked, all members') training state."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


class ExampleStats(NamedTuple):
  """Per-example statistics of one forward pass (each [B] or [M, B]).

  ``pred`` is the predicted class (arg-max logit, int32); ``correct`` is
  ``pred == label``.
  """
  loss: jax.Array
  correct: jax.Array
  margin: jax.Array
  p_true: jax.Array
  el2n: jax.Array
  pred: jax.Array


FUSED_FIELDS = ('loss', 'correct', 'margin', 'p_true', 'pred')


def per_example_stats(logits: jax.Array, labels: jax.Array) -> ExampleStats:
  """Cross-entropy, correctness, margin, p(true), EL2N and prediction."""
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  logp = jax.nn.log_softmax(logits)
  loss = -jnp.sum(logp * onehot, axis=-1)
  true_logit = jnp.sum(logits * onehot, axis=-1)
  other_max = jnp.max(jnp.where(onehot > 0, -jnp.inf, logits), axis=-1)
  el2n = jnp.linalg.norm(jnp.exp(logp) - onehot, axis=-1)
  pred = jnp.argmax(logits, -1).astype(jnp.int32)
  return ExampleStats(loss=loss,
                      correct=pred == labels,
                      margin=true_logit - other_max,
                      p_true=jnp.exp(-loss),
                      el2n=el2n,
                      pred=pred)


def empty_buffers(num_members: int, num_examples: int,
                  fields=FUSED_FIELDS) -> dict[str, jax.Array]:
  """Device buffers [M, N] for per-example statistics.

  Unseen examples hold NaN (float fields), False (``correct``) or -1
  (``pred``, int32).
  """
  shape = (num_members, num_examples)
  empty = {'correct': lambda: jnp.zeros(shape, bool),
           'pred': lambda: jnp.full(shape, -1, jnp.int32)}
  return {f: empty.get(f, lambda: jnp.full(shape, jnp.nan, jnp.float32))()
          for f in fields}


def _scatter(buffers, idx, stats: ExampleStats):
  """buffers[f][m, idx[m, b]] = stats.f[m, b]; padding (idx < 0) is dropped."""
  members = jnp.arange(idx.shape[0])[:, None]
  # JAX wraps negative indices, so padding goes past the end (then dropped).
  n = jax.tree.leaves(buffers)[0].shape[1]
  idx = jnp.where(idx >= 0, idx, n)
  return {f: buffers[f].at[members, idx].set(getattr(stats, f), mode='drop')
          for f in buffers}


def _map_members(fn, strategy: str, *args, member_axis: str | None = None):
  """Applies ``fn`` per member over the leading (member) axis of ``args``.

  ``member_axis`` names the mesh axis that shards members (vmap only).
  """
  if strategy == 'vmap':
    return jax.vmap(fn, spmd_axis_name=member_axis)(*args)
  if strategy != 'unroll':
    raise ValueError(f'member strategy must be one of {STRATEGIES}, got '
                     f'{strategy!r}')
  num = jax.tree.leaves(args[0])[0].shape[0]
  outs = [fn(*jax.tree.map(lambda a, i=i: a[i], args)) for i in range(num)]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)


def masked_batch_norm(mask: jax.Array):
  """A context in which every nn.BatchNorm computes statistics over ``mask``.

  The models need not know about padding: the interceptor hands each
  BatchNorm call the row mask (bool [B], broadcast over the feature axes),
  so padded rows enter neither the batch mean and variance nor the running
  averages.
  """

  def interceptor(next_fun, args, kwargs, context):
    if (isinstance(context.module, nn.BatchNorm) and
        context.method_name == '__call__'):
      x = args[0]
      kwargs = dict(kwargs, mask=mask.reshape(mask.shape +
                                              (1,) * (x.ndim - 1)))
    return next_fun(*args, **kwargs)

  return nn.intercept_methods(interceptor)


def member_update(state: TrainState, x: jax.Array, y: jax.Array,
                  aug_key: jax.Array, valid: jax.Array | None = None, *,
                  model, tx, augment: device_ops.AugmentConfig, mean, std,
                  dtype, batch_sharding=None):
  """One SGD step of one member on a uint8 batch; returns (state, stats).

  ``valid`` (bool [B], default all True) marks the real rows: the loss is
  the mean over them, so the gradient and the BatchNorm statistics are
  those of the real rows alone, as an unpadded batch of them would give.
  ``batch_sharding`` (a NamedSharding over the mesh's data axis, or None)
  splits the batch across devices; GSPMD then all-reduces the gradient and
  the BatchNorm statistics over the global batch.
  """
  if valid is None:
    valid = jnp.ones(y.shape, bool)
  if batch_sharding is not None:
    x = jax.lax.with_sharding_constraint(x, batch_sharding)
    y = jax.lax.with_sharding_constraint(y, batch_sharding)
    valid = jax.lax.with_sharding_constraint(valid, batch_sharding)
  x = device_ops.augment(jax.random.fold_in(aug_key, state.step), x, augment)
  x = device_ops.normalize(x, mean, std, dtype)

  def loss_fn(params):
    with masked_batch_norm(valid):
      logits, new_vars = model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, x,
          train=True, mutable=['batch_stats'])
    stats = per_example_stats(logits, y)
    loss = jnp.sum(jnp.where(valid, stats.loss, 0.0)) / jnp.maximum(
        jnp.sum(valid), 1)
    return loss, (stats, new_vars['batch_stats'])

  grads, (stats, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = TrainState(step=state.step + 1,
                         params=optax.apply_updates(state.params, updates),
                         batch_stats=batch_stats, opt_state=opt_state)
  return new_state, stats


def member_train_step(state: TrainState, perm: jax.Array, aug_key: jax.Array,
                      num_kept: jax.Array, images: jax.Array,
                      labels: jax.Array, *, batch_size: int,
                      steps_per_epoch: jax.Array | int, **update_kwargs):
  """One step of one member on the device-resident dataset.

  The batch is the member's ``perm`` slice for this step (see
  device_ops.batch_indices); returns (new state, (indices, stats)), the
  indices -1 at the padding of an epoch's last batch. ``steps_per_epoch``
  may be traced (the ensemble steps pass it so).
  """
  idx, valid = device_ops.batch_indices(perm, state.step % steps_per_epoch,
                                        batch_size, num_kept)
  new_state, stats = member_update(state, images[idx], labels[idx], aug_key,
                                   valid, **update_kwargs)
  return new_state, (jnp.where(valid, idx, -1), stats)


def ensemble_train_step(states: TrainState, buffers, aug_keys: jax.Array,
                        schedule: optim.ScheduleArgs, perms: jax.Array,
                        num_kept: jax.Array, images: jax.Array,
                        labels: jax.Array, *, strategy: str,
                        optimizer: optim.Optimizer, record: bool = True,
                        member_axis: str | None = None, **member_kwargs):
  """One step of every member on the device-resident dataset.

  Fills the per-epoch example buffers. The data arguments (perms on) are
  those loader.ResidentFeed.args gives.

  Args:
    states: member-stacked TrainState (donated).
    buffers: dict of [M, N] per-example buffers for this epoch (donated).
    aug_keys: [M] per-member augmentation keys (step is folded in).
    schedule: the traced schedule numbers (steps per epoch, warm-up, total
      steps, ...): one program serves every subset size and run length.
    perms: int32 [M, N] this epoch's example order per member (kept first).
    num_kept: int32 [M] size of each member's training subset.
    images: uint8 [N, H, W, C] device-resident training images.
    labels: int32 [N].
    strategy: 'unroll' or 'vmap'.
    optimizer: the optimizer's static part; its optax chain is built here
      with the learning rate of ``schedule``.
    record: scatter per-example outputs (False only for benchmarking).
    member_axis: mesh axis that shards the members (vmap), or None.
    **member_kwargs: bound by functools.partial, see member_train_step.

  Returns:
    (new states, new buffers).
  """
  step = functools.partial(member_train_step, images=images, labels=labels,
                           steps_per_epoch=schedule.steps_per_epoch,
                           tx=optimizer.tx(schedule), **member_kwargs)
  states, (idx, stats) = _map_members(step, strategy, states, perms, aug_keys,
                                      num_kept, member_axis=member_axis)
  if record:
    buffers = _scatter(buffers, idx, stats)
  return states, buffers


def ensemble_batch_train_step(states: TrainState, buffers,
                              aug_keys: jax.Array,
                              schedule: optim.ScheduleArgs, images: jax.Array,
                              labels: jax.Array, indices: jax.Array, *,
                              strategy: str, optimizer: optim.Optimizer,
                              record: bool = True,
                              member_axis: str | None = None,
                              **update_kwargs):
  """One step of every member on host-fed batches (loader.StreamFeed).

  Args:
    states, buffers, aug_keys, schedule, strategy, optimizer, record,
      member_axis: as for ensemble_train_step.
    images: uint8 [M, B, H, W, C], each member's batch (from the loader).
    labels: int32 [M, B].
    indices: int32 [M, B] stable example indices of the batch rows (-1:
      padding, which has zero weight and is not recorded); the per-example
      outputs are scattered there.
    **update_kwargs: bound by functools.partial, see member_update.

  Returns:
    (new states, new buffers).
  """
  update = functools.partial(member_update, tx=optimizer.tx(schedule),
                             **update_kwargs)
  states, stats = _map_members(update, strategy, states, images, labels,
                               aug_keys, indices >= 0,
                               member_axis=member_axis)
  if record:
    buffers = _scatter(buffers, indices, stats)
  return states, buffers


# The train step each feed drives, by the loader feed's ``step_kind``.
TRAIN_STEPS = {'resident': ensemble_train_step,
               'streamed': ensemble_batch_train_step}


def ensemble_probe_step(states: TrainState, images: jax.Array,
                        labels: jax.Array, *, model, strategy: str, mean, std,
                        dtype, batch_sharding=None,
                        member_axis: str | None = None,
                        features: bool = False):
  """Eval-mode statistics of every member on one batch: each field [M, B].

  With ``features`` it returns ``(stats, penultimate features [M, B, D])``.
  """
  if batch_sharding is not None:
    images = jax.lax.with_sharding_constraint(images, batch_sharding)
  x = device_ops.normalize(images, mean, std, dtype)

  def member(state):
    out = model.apply({'params': state.params,
                       'batch_stats': state.batch_stats}, x, train=False,
                      return_features=features)
    if features:
      return per_example_stats(out[0], labels), out[1]
    return per_example_stats(out, labels)

  return _map_members(member, strategy, states, member_axis=member_axis)
