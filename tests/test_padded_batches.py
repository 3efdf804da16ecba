"""Every presentation counts: the last batch of an epoch is padded, not wrapped.

Each kept example is presented exactly once per epoch; the padding rows have
zero weight in the loss, the gradient and the BatchNorm statistics, and the
fused record never stores them (docs/records.md).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import quick_config
from conftest import random_dataset
from easyhard_jax.data import device_ops
from easyhard_jax.train import ensemble
from easyhard_jax.train import steps as steps_lib

EPS = float(np.finfo(np.float32).eps)


@pytest.fixture(scope='module')
def trainer():
  # 150 examples in batches of 64: 3 steps, the last with 22 real rows and
  # 42 padding rows. Random pixels: no pooling ties (see random_dataset).
  config = quick_config(seeds_per_arch=2)
  return ensemble.ArchTrainer(config, random_dataset(num_train=150), 'cnn')


@pytest.mark.parametrize('n,kept,batch', [(23, 23, 5), (23, 17, 5),
                                          (20, 20, 5), (7, 3, 8)])
def test_batch_indices_present_each_kept_example_once_per_epoch(
    n, kept, batch):
  perm = np.random.default_rng(n + kept).permutation(n).astype(np.int32)
  steps = -(-kept // batch)
  idx, valid = zip(*[device_ops.batch_indices(jnp.asarray(perm), s, batch,
                                              kept) for s in range(steps)])
  idx, valid = np.concatenate(idx), np.concatenate(valid)
  # The valid rows are the kept order, each once; the rest is padding.
  np.testing.assert_array_equal(idx[valid], perm[:kept])
  assert (~valid).sum() == steps * batch - kept
  assert valid[:kept].all() and not valid[kept:].any()
  # Padding still gathers a real, kept example (the batch stays well-formed).
  assert set(idx[~valid]) <= set(perm[:kept])


def test_scatter_drops_padding_rows_and_keeps_the_real_presentation():
  n = 6
  buffers = steps_lib.empty_buffers(2, n)
  idx = jnp.asarray([[3, 5, -1, -1], [0, -1, 2, -1]], jnp.int32)
  value = jnp.arange(8, dtype=jnp.float32).reshape(2, 4) + 1.0
  stats = steps_lib.ExampleStats(
      loss=value, correct=value > 2, margin=value, p_true=value, el2n=value,
      pred=value.astype(jnp.int32))
  out = jax.device_get(steps_lib._scatter(buffers, idx, stats))  # pylint: disable=protected-access
  expect = np.full((2, n), np.nan, np.float32)
  expect[0, 3], expect[0, 5], expect[1, 0], expect[1, 2] = 1, 2, 5, 7
  # -1 must not wrap to the last example (JAX normalises negative indices).
  np.testing.assert_array_equal(out['loss'], expect)
  np.testing.assert_array_equal(out['pred'],
                                np.nan_to_num(expect, nan=-1).astype(int))


def _update(t, tx):
  return jax.jit(functools.partial(
      steps_lib.member_update, model=t.model, tx=tx,
      augment=device_ops.AugmentConfig(), mean=t.mean, std=t.std,
      dtype=t.dtype))


@pytest.mark.slow
def test_padded_batch_gives_the_unpadded_gradient(trainer):
  t = trainer
  state = jax.tree.map(lambda a: a[0], t.init_states())
  images, labels = t.feed.images['train'], t.feed.labels['train']
  real, pad = 22, 42
  rows = np.random.default_rng(0).permutation(t.num_train)[:real + pad]
  key = jax.random.key(1)
  # SGD with learning rate 1: the parameter change is minus the gradient.
  update = _update(t, optax.sgd(1.0))
  ref, ref_stats = update(state, images[rows[:real]], labels[rows[:real]],
                          key)
  # Padding rows hold other examples: any leak into the gradient or the
  # BatchNorm statistics would show.
  valid = jnp.arange(real + pad) < real
  got, got_stats = update(state, images[rows], labels[rows], key, valid)
  leaky, _ = update(state, images[rows], labels[rows], key)

  def grads(new):
    return [np.asarray(a) - np.asarray(b) for a, b in
            zip(jax.tree.leaves(state.params), jax.tree.leaves(new.params))]

  # Per leaf: the two sums differ in length and order only; a 4-layer net's
  # gradient carries about 1e3 * EPS relative rounding (test_train_steps).
  for g_ref, g_got, g_leak in zip(grads(ref), grads(got), grads(leaky)):
    scale = np.abs(g_ref).max() + 1e-12
    np.testing.assert_allclose(g_got, g_ref, rtol=0, atol=1e3 * EPS * scale)
    assert np.abs(g_leak - g_ref).max() > 1e-2 * scale  # The test can fail.
  for a, b in zip(jax.tree.leaves(ref.batch_stats),
                  jax.tree.leaves(got.batch_stats)):
    np.testing.assert_allclose(b, a, rtol=1e3 * EPS, atol=1e3 * EPS)
  scale = float(np.abs(np.asarray(ref_stats.loss)).max())
  np.testing.assert_allclose(np.asarray(got_stats.loss)[:real],
                             ref_stats.loss, rtol=0, atol=1e3 * EPS * scale)


def test_epoch_records_every_example_exactly_once(trainer):
  t = trainer
  n, b = t.num_train, t.spec.batch_size
  assert t.spe == 3 and n % b  # The last batch is padded.
  step = jax.jit(functools.partial(
      steps_lib.ensemble_train_step, strategy='unroll', model=t.model,
      optimizer=t.optimizer, batch_size=b,
      augment=device_ops.AugmentConfig(1, False), mean=t.mean, std=t.std,
      dtype=t.dtype))
  states = t.init_states()
  perms = t.epoch_perms(0)
  order = np.asarray(perms)
  buffers = steps_lib.empty_buffers(t.num_members, n)
  before = np.asarray(buffers['loss'])
  for s in range(t.spe):
    states, buffers = step(states, buffers, t.aug_keys, t.schedule,
                           *t.feed.args(perms))
    after = np.asarray(buffers['loss'])
    written = np.isfinite(after) & ~np.isfinite(before)
    for m in range(t.num_members):
      expect = np.zeros(n, bool)
      expect[order[m, s * b:min((s + 1) * b, n)]] = True
      np.testing.assert_array_equal(written[m], expect)
    # A presentation once recorded is never overwritten within the epoch.
    kept = np.isfinite(before)
    np.testing.assert_array_equal(after[kept], before[kept])
    before = after
  assert np.isfinite(before).all()
  assert int(jax.device_get(states.step)[0]) == t.spe


def test_streamed_feed_pads_the_last_batch_as_the_resident_step():
  from easyhard_jax.data import streaming  # pylint: disable=g-import-not-at-top
  config = quick_config(max_train_examples=150)
  config.stream.enabled = True
  t = ensemble.ArchTrainer(config, streaming.load(config), 'cnn')
  assert t.feed.step_kind == 'streamed' and t.spe == 3
  perms = t.epoch_perms(0)
  labels = np.asarray(t.data.train_labels)
  for s, (_, y, idx) in enumerate(t.epoch_feed(0)):
    idx, y = np.asarray(idx), np.asarray(y)
    for m in range(t.num_members):
      ref, valid = device_ops.batch_indices(perms[m], s, config.batch_size,
                                            t.num_train)
      np.testing.assert_array_equal(idx[m], np.where(valid, ref, -1))
      np.testing.assert_array_equal(y[m], labels[np.asarray(ref)])
  assert s == t.spe - 1 and (idx < 0).sum() == t.num_members * (
      t.spe * config.batch_size - t.num_train)
