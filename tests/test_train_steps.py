"""The fused train step against a separate forward pass; members differ."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import quick_config
from conftest import random_dataset
from easyhard_jax.data import device_ops
from easyhard_jax.train import ensemble
from easyhard_jax.train import steps as steps_lib


@pytest.fixture(scope='module')
def trainer():
  # Random-valued images: no pooling ties or ReLU kinks (see random_dataset),
  # so two float paths differ only by rounding, on any CPU.
  config = quick_config(seeds_per_arch=3)
  return ensemble.ArchTrainer(config, random_dataset(), 'cnn')


# float32 unit roundoff. Two compilations of the same network may sum each
# dot product in another order; the error of a K-term sum is bounded by about
# K * EPS * sum|terms|, and through D layers such errors add up. The tests
# below scale EPS by those factors, stated where used.
EPS = float(np.finfo(np.float32).eps)


def _member(tree, i):
  return jax.tree.map(lambda a: a[i], tree)


def test_per_example_stats_match_definitions():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 5)).astype(np.float32)
  labels = rng.integers(0, 5, 7)
  stats = jax.device_get(steps_lib.per_example_stats(logits, labels))
  for i in range(7):
    p = np.exp(logits[i] - logits[i].max())
    p /= p.sum()
    others = np.delete(logits[i], labels[i])
    onehot = np.eye(5)[labels[i]]
    np.testing.assert_allclose(stats.loss[i], -np.log(p[labels[i]]), rtol=1e-5)
    np.testing.assert_allclose(stats.p_true[i], p[labels[i]], rtol=1e-5)
    np.testing.assert_allclose(stats.margin[i],
                               logits[i, labels[i]] - others.max(), rtol=1e-5)
    np.testing.assert_allclose(stats.el2n[i], np.linalg.norm(p - onehot),
                               rtol=1e-5)
    assert stats.correct[i] == (np.argmax(logits[i]) == labels[i])
    assert stats.pred[i] == np.argmax(logits[i])
  assert stats.pred.dtype == np.int32


def test_fused_outputs_equal_separate_forward_pass(trainer):
  t = trainer
  states = t.init_states()
  perms = t.epoch_perms(0)
  m = 1  # Check a member that is not the first.
  state_m = _member(states, m)
  step = functools.partial(
      steps_lib.member_train_step, model=t.model, tx=t.tx,
      batch_size=t.spec.batch_size, steps_per_epoch=t.spe,
      augment=device_ops.AugmentConfig(t.spec.augment.crop_padding, False),
      mean=t.mean, std=t.std, dtype=t.dtype)
  _, (idx, fused) = jax.jit(step)(state_m, perms[m], t.aug_keys[m],
                                  t.feed.num_kept[m], t.feed.images['train'],
                                  t.feed.labels['train'])
  # The same batch, rebuilt by hand, through a plain forward pass.
  idx_ref, valid = device_ops.batch_indices(perms[m], 0, t.spec.batch_size,
                                            t.feed.num_kept[m])
  assert np.asarray(valid).all()  # The first batch of an epoch is full.
  np.testing.assert_array_equal(idx, idx_ref)
  x = device_ops.augment(jax.random.fold_in(t.aug_keys[m], 0),
                         t.feed.images['train'][idx_ref],
                         device_ops.AugmentConfig(
                             t.spec.augment.crop_padding, False))
  x = device_ops.normalize(x, t.mean, t.std)
  logits, _ = t.model.apply({'params': state_m.params,
                             'batch_stats': state_m.batch_stats}, x,
                            train=True, mutable=['batch_stats'])
  ref = steps_lib.per_example_stats(logits, t.feed.labels['train'][idx_ref])
  # Logit error: 4 layers, each a sum of up to 3*3*C <= 300 terms, gives
  # about 4 * 300 * EPS relative to the logits' scale (1e3 * EPS ~ 1e-4);
  # loss, margin and p(true) are differences of logits or smooth in them.
  scale = float(np.abs(np.asarray(logits)).max()) + 1.0
  tol = 1e3 * EPS * scale
  for f in ('loss', 'margin', 'p_true'):
    np.testing.assert_allclose(getattr(fused, f), getattr(ref, f), rtol=0,
                               atol=tol, err_msg=f)
  # Correctness may flip only where the margin is within rounding of a tie.
  near_tie = np.abs(np.asarray(ref.margin)) <= tol
  np.testing.assert_array_equal(np.asarray(fused.correct)[~near_tie],
                                np.asarray(ref.correct)[~near_tie])
  # The predicted class may differ only where the two largest logits are
  # within rounding of each other.
  top2 = np.sort(np.asarray(logits), axis=-1)[:, -2:]
  clear = (top2[:, 1] - top2[:, 0]) > tol
  assert clear.mean() > 0.9
  np.testing.assert_array_equal(np.asarray(fused.pred)[clear],
                                np.asarray(ref.pred)[clear])


def test_ensemble_step_scatters_by_example_index(trainer):
  t = trainer
  states = t.init_states()
  perms = t.epoch_perms(0)
  n = t.num_train
  buffers = steps_lib.empty_buffers(t.num_members, n)
  step = jax.jit(functools.partial(
      steps_lib.ensemble_train_step, strategy='unroll', model=t.model,
      optimizer=t.optimizer, batch_size=t.spec.batch_size,
      augment=device_ops.AugmentConfig(), mean=t.mean, std=t.std,
      dtype=t.dtype))
  _, buffers = step(states, buffers, t.aug_keys, t.schedule,
                    *t.feed.args(perms))
  seen = np.isfinite(np.asarray(buffers['loss']))
  perms = np.asarray(perms)
  pred = np.asarray(buffers['pred'])
  for m in range(t.num_members):
    expected = np.zeros(n, bool)
    expected[perms[m, :t.spec.batch_size]] = True
    np.testing.assert_array_equal(seen[m], expected)
    # pred: a class where seen, -1 (the empty buffer) elsewhere.
    np.testing.assert_array_equal(pred[m] >= 0, expected)
  assert pred.max() < 10


def test_members_differ_in_init_order_and_outputs(trainer):
  t = trainer
  states = t.init_states()
  kernels = [np.asarray(leaf) for leaf in jax.tree.leaves(states.params)
             if leaf.ndim == 5]  # [members, kh, kw, cin, cout] conv kernels.
  k = kernels[0]
  assert not np.allclose(k[0], k[1]) and not np.allclose(k[1], k[2])
  perms = np.asarray(t.epoch_perms(0))
  assert not np.array_equal(perms[0], perms[1])
  assert sorted(perms[0]) == list(range(perms.shape[1]))
  out = t.probe(states, 'test')
  assert not np.allclose(out['loss'][0], out['loss'][1])
  # A new epoch gives a new order for the same member.
  assert not np.array_equal(np.asarray(t.epoch_perms(1))[0],
                            perms[0])


@pytest.mark.slow
def test_member_strategies_agree(trainer):
  t = trainer
  n = t.num_train
  results = {}
  for strategy in steps_lib.STRATEGIES:
    step = jax.jit(functools.partial(
        steps_lib.ensemble_train_step, strategy=strategy, model=t.model,
        optimizer=t.optimizer, batch_size=t.spec.batch_size,
        augment=device_ops.AugmentConfig(1, True), mean=t.mean, std=t.std,
        dtype=t.dtype))
    states = t.init_states()
    buffers = steps_lib.empty_buffers(t.num_members, n)
    perms = t.epoch_perms(0)
    for _ in range(3):
      states, buffers = step(states, buffers, t.aug_keys, t.schedule,
                             *t.feed.args(perms))
    results[strategy] = (jax.device_get(states), jax.device_get(buffers))
  s_u, b_u = results['unroll']
  # Three SGD steps (lr 0.1) of a 4-layer net on tie-free inputs: each step's
  # gradient carries about 1e3 * EPS relative rounding (as above), and the
  # steps compound it a few-fold; 1e4 * EPS (~1.2e-3) relative, with an
  # absolute floor at the parameters' typical size times that, bounds it.
  # A real bug (another member's batch, key or mask) moves values by O(1).
  tol = 1e4 * EPS
  for other in set(steps_lib.STRATEGIES) - {'unroll'}:
    s_v, b_v = results[other]
    for a, b in zip(jax.tree.leaves(s_u.params), jax.tree.leaves(s_v.params)):
      np.testing.assert_allclose(a, b, rtol=tol, atol=tol * 0.1,
                                 err_msg=other)
    np.testing.assert_allclose(b_u['loss'], b_v['loss'], rtol=tol, atol=tol,
                               err_msg=other)


def test_augmentation_crops_and_flips_per_example():
  images = jnp.arange(2 * 4 * 4, dtype=jnp.uint8).reshape(2, 4, 4, 1)
  images = jnp.tile(images, (64, 1, 1, 1))[:100]
  out = device_ops.augment(jax.random.key(0), images,
                           device_ops.AugmentConfig(1, True))
  assert out.shape == images.shape
  changed = np.any(np.asarray(out) != np.asarray(images), axis=(1, 2, 3))
  assert 0 < changed.sum() < len(changed)
  same_key = device_ops.augment(jax.random.key(0), images,
                                device_ops.AugmentConfig(1, True))
  np.testing.assert_array_equal(out, same_key)
