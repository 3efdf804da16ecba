"""GraNd (probes/grand.py): vmapped per-example gradients vs one at a time."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from conftest import quick_config
from conftest import random_dataset
from easyhard_jax.data import device_ops
from easyhard_jax.probes import checkpoint_scores
from easyhard_jax.probes import grand
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
  scorer = checkpoint_scores.Scorer(config, data, 'cnn',
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


def test_combine_by_rank_ignores_each_architectures_units():
  from easyhard_jax.analysis import scores
  rng = np.random.default_rng(0)
  a = rng.gamma(2.0, 2.0, 40)
  b = a * 0.2 + rng.normal(0, 0.05, 40)  # Another network: other units.
  got = scores.combine_by_rank({'cnn': a, 'vgg11': b})
  # Normalized ranks, by brute force (no ties in continuous draws).
  rank = lambda v: np.array([(v <= x).sum() for x in v]) / len(v)
  np.testing.assert_allclose(got, (rank(a) + rank(b)) / 2, rtol=1e-6)
  # Rescaling one architecture changes nothing; a raw mean would follow
  # whichever network has the larger norms.
  np.testing.assert_allclose(
      scores.combine_by_rank({'cnn': a, 'vgg11': b * 100.0}), got, rtol=1e-6)
  # NaN in one architecture: that example takes the other's rank alone,
  # and that architecture ranks its finite values only.
  b2 = b.copy()
  b2[3] = np.nan
  got = scores.combine_by_rank({'cnn': a, 'vgg11': b2})
  np.testing.assert_allclose(got[3], rank(a)[3], rtol=1e-6)
  keep = np.arange(40) != 3
  np.testing.assert_allclose(
      got[keep], (rank(a)[keep] + rank(b[keep])) / 2, rtol=1e-6)
  # One architecture: its expected GraNd as it is.
  np.testing.assert_array_equal(scores.combine_by_rank({'cnn': a}),
                                a.astype(np.float32))


def test_window_score_by_arch_keeps_each_architecture_apart(tmp_path):
  from easyhard_jax.storage import records
  from easyhard_jax.analysis import score_store
  n, spe = 6, 4
  workdir = str(tmp_path)
  w = records.RecordWriter(score_store.scores_dir(workdir, grand.NAME))
  w.write_split_metadata('train', np.zeros(n, np.int32), None)
  rng = np.random.default_rng(1)
  values = {'cnn': rng.gamma(2.0, 2.0, (2, 3, n)),  # [members, ckpts, N]
            'vgg11': rng.gamma(2.0, 0.5, (3, 3, n))}
  for arch, v in values.items():
    members = [{'name': f'{arch}/s{i}', 'arch': arch} for i in range(len(v))]
    w.begin_arch(arch, members, spe, [2, 4, 8], {'hash': arch})
    for k, step in enumerate([2, 4, 8]):
      w.write_chunk(arch, 'probe', 'train', k, step,
                    {grand.NAME: v[:, k].astype(np.float32)})
    w.finish_arch(arch)
  per_arch, steps = score_store.window_score_by_arch(workdir, grand.NAME,
                                                     (0.0, 1.0))
  assert steps == {'cnn': 4, 'vgg11': 4}  # Epoch 1 = step 4.
  for arch, v in values.items():
    np.testing.assert_allclose(per_arch[arch], v[:, 1].mean(0), rtol=1e-6)
  # The pooled mean (the old column) is over all 5 members of both.
  pooled, _ = score_store.window_score(workdir, grand.NAME, (0.0, 1.0))
  np.testing.assert_allclose(
      pooled, np.concatenate([values['cnn'][:, 1], values['vgg11'][:, 1]])
      .mean(0), rtol=1e-6)
  assert score_store.window_score_by_arch(workdir, grand.NAME,
                                          (3.0, 4.0)) is None
  assert score_store.window_score_by_arch(str(tmp_path / 'none'), grand.NAME,
                                          (0.0, 1.0)) is None
