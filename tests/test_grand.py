"""GraNd (train/grand.py): vmapped per-example gradients vs one at a time."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from conftest import quick_config
from conftest import random_dataset
from easyhard_jax import after_the_fact
from easyhard_jax.data import device_ops
from easyhard_jax.train import grand
from easyhard_jax.train import steps as steps_lib

# float32 unit roundoff (2^-24). The fast path (vmap: weight gradients become
# batched contractions) and the reference (one example per jax.grad) sum
# each contraction in a different order. Two orders of a K-term float32 sum
# differ by at most about K * U relative to sum|terms|. The longest
# contraction of this network (digits' cnn at width 1/4: 16, 32, 64
# channels) is the input gradient of its last conv, 9 * 64 = 576 terms, so a
# gradient entry, and the norm (a sum of their squares), is within 576 * U
# ~ 3.4e-5 relative; typical errors grow like sqrt(K) and were ~3e-7 here.
U = 2.0 ** -24
RTOL = 576 * U


def _random_running_stats(states, seed):
  """BatchNorm running statistics far from init (mean 0, var 1), per member."""
  rng = np.random.default_rng(seed)

  def perturb(path, x):
    name = jax.tree_util.keystr(path)
    shape = np.shape(x)
    if 'var' in name:
      return jnp.asarray(rng.uniform(0.5, 2.0, shape), x.dtype)
    return jnp.asarray(rng.normal(0.0, 0.3, shape), x.dtype)

  return states.replace(batch_stats=jax.tree_util.tree_map_with_path(
      perturb, states.batch_stats))


def test_grand_matches_one_example_at_a_time():
  # Random pixels: no pooling ties or ReLU kinks (conftest.random_dataset).
  data = random_dataset(num_train=40, num_test=8)
  config = quick_config()
  # Batches of 16: 40 examples make a padded last batch (cut off).
  scorer = after_the_fact.Scorer(config, data, 'cnn',
                                 {grand.NAME: grand.grand_fn}, batch_size=16)
  t = scorer.trainer
  states = _random_running_stats(t.init_states(), seed=1)
  fast = scorer(states, 'train')[grand.NAME]
  assert fast.shape == (2, 40)

  x = device_ops.normalize(jnp.asarray(data.train_images), t.mean, t.std,
                           t.dtype)
  y = jnp.asarray(data.train_labels)

  @jax.jit
  def one_grad(params, batch_stats, image, label):
    def loss(p):
      logits = t.model.apply({'params': p, 'batch_stats': batch_stats},
                             image[None], train=False)
      return steps_lib.per_example_stats(logits, label[None]).loss[0]
    return jax.grad(loss)(params)

  for m in range(2):
    params = jax.tree.map(lambda a, m=m: a[m], states.params)
    stats = jax.tree.map(lambda a, m=m: a[m], states.batch_stats)
    ref = np.array([
        np.linalg.norm(np.asarray(ravel_pytree(
            one_grad(params, stats, x[i], y[i]))[0], np.float64))
        for i in range(40)])
    np.testing.assert_allclose(fast[m], ref, rtol=RTOL)
  # The members differ (own init) far beyond the tolerance.
  assert np.median(np.abs(fast[0] - fast[1]) / fast[0]) > 100 * RTOL
  assert (fast > 0).all()


def test_expected_grand_is_the_member_mean():
  scores = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
  scores[1, 0, 0] = np.nan
  out = grand.expected_grand(scores)
  assert out.shape == (3, 4)
  assert out[0, 0] == scores[0, 0, 0]
  np.testing.assert_allclose(out[2], scores[:, 2].mean(0))
