"""The fused train step against a separate forward pass; members differ."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import quick_config
from easyhard_jax.data import device_ops
from easyhard_jax.data import sources
from easyhard_jax.train import ensemble
from easyhard_jax.train import steps as steps_lib


@pytest.fixture(scope='module')
def trainer():
  config = quick_config(seeds_per_arch=3)
  return ensemble.ArchTrainer(config, sources.load_dataset(config), 'cnn')


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


def test_fused_outputs_equal_separate_forward_pass(trainer):
  t = trainer
  states = t.init_states()
  perms = t.epoch_perms(0)
  m = 1  # Check a member that is not the first.
  state_m = _member(states, m)
  step = functools.partial(
      steps_lib.member_train_step, model=t.model, tx=t.tx,
      batch_size=t.config.batch_size, steps_per_epoch=t.spe,
      augment=device_ops.AugmentConfig(t.config.augment.crop_padding, False),
      mean=t.mean, std=t.std, dtype=t.dtype)
  _, (idx, fused) = jax.jit(step)(state_m, perms[m], t.aug_keys[m],
                                  t.num_kept[m], t.images['train'],
                                  t.labels['train'])
  # The same batch, rebuilt by hand, through a plain forward pass.
  idx_ref = device_ops.batch_indices(perms[m], 0, t.config.batch_size,
                                     t.num_kept[m])
  np.testing.assert_array_equal(idx, idx_ref)
  x = device_ops.augment(jax.random.fold_in(t.aug_keys[m], 0),
                         t.images['train'][idx_ref],
                         device_ops.AugmentConfig(
                             t.config.augment.crop_padding, False))
  x = device_ops.normalize(x, t.mean, t.std)
  logits, _ = t.model.apply({'params': state_m.params,
                             'batch_stats': state_m.batch_stats}, x,
                            train=True, mutable=['batch_stats'])
  ref = steps_lib.per_example_stats(logits, t.labels['train'][idx_ref])
  for f in ('loss', 'margin', 'p_true'):
    np.testing.assert_allclose(getattr(fused, f), getattr(ref, f), rtol=1e-5,
                               atol=1e-6, err_msg=f)
  np.testing.assert_array_equal(fused.correct, ref.correct)


def test_ensemble_step_scatters_by_example_index(trainer):
  t = trainer
  states = t.init_states()
  perms = t.epoch_perms(0)
  n = t.images['train'].shape[0]
  buffers = steps_lib.empty_buffers(t.num_members, n)
  step = jax.jit(functools.partial(
      steps_lib.ensemble_train_step, strategy='unroll', model=t.model,
      tx=t.tx, batch_size=t.config.batch_size, steps_per_epoch=t.spe,
      augment=device_ops.AugmentConfig(), mean=t.mean, std=t.std,
      dtype=t.dtype))
  _, buffers = step(states, buffers, perms, t.aug_keys, t.num_kept,
                    t.images['train'], t.labels['train'])
  seen = np.isfinite(np.asarray(buffers['loss']))
  perms = np.asarray(perms)
  for m in range(t.num_members):
    expected = np.zeros(n, bool)
    expected[perms[m, :t.config.batch_size]] = True
    np.testing.assert_array_equal(seen[m], expected)


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


def test_member_strategies_agree(trainer):
  t = trainer
  n = t.images['train'].shape[0]
  results = {}
  for strategy in ('unroll', 'vmap', 'map'):
    step = jax.jit(functools.partial(
        steps_lib.ensemble_train_step, strategy=strategy, model=t.model,
        tx=t.tx, batch_size=t.config.batch_size, steps_per_epoch=t.spe,
        augment=device_ops.AugmentConfig(1, True), mean=t.mean, std=t.std,
        dtype=t.dtype))
    states = t.init_states()
    buffers = steps_lib.empty_buffers(t.num_members, n)
    perms = t.epoch_perms(0)
    for _ in range(3):
      states, buffers = step(states, buffers, perms, t.aug_keys, t.num_kept,
                             t.images['train'], t.labels['train'])
    results[strategy] = (jax.device_get(states), jax.device_get(buffers))
  s_u, b_u = results['unroll']
  for other in ('vmap', 'map'):
    s_v, b_v = results[other]
    for a, b in zip(jax.tree.leaves(s_u.params), jax.tree.leaves(s_v.params)):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=other)
    np.testing.assert_allclose(b_u['loss'], b_v['loss'], rtol=1e-4,
                               atol=1e-5, err_msg=other)


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
