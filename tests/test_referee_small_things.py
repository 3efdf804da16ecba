"""Issue 19, item 9: the Spearman null spread and seed-dependent subsets."""

import itertools

import numpy as np

from easyhard_jax.analysis import compare
from easyhard_jax.experiments import subsets


def test_spearman_null_sd_is_exact_over_all_orders():
  # Under independence every order of y is equally likely: over all n!
  # permutations the variance of rho is 1 / (n - 1), not 1 / n.
  n = 6
  x = np.arange(n, dtype=np.float64)
  rhos = [compare.spearman(x, np.asarray(p, np.float64))
          for p in itertools.permutations(range(n))]
  np.testing.assert_allclose(np.mean(rhos), 0.0, atol=1e-12)
  np.testing.assert_allclose(np.mean(np.square(rhos)), 1.0 / (n - 1),
                             rtol=1e-9)
  out = compare.compare_one(
      x, x[::-1].copy(), np.zeros(n, np.int64), np.ones(n, bool),
      fractions=(), num_classes=1)
  np.testing.assert_allclose(out['spearman_null_sd'], np.std(rhos),
                             rtol=1e-9)


def test_random_subsets_and_tiebreaks_depend_on_the_root_seed():
  rng = np.random.default_rng(0)
  n, k = 200, 50
  labels = rng.integers(0, 4, n)
  score = np.round(rng.random(n) * 4) / 4  # Few levels: ties decide a lot.
  for kind, strategy in (('removal', 'random'), ('compression', 'random'),
                         ('removal', 'easiest'), ('compression', 'stratified')):
    fn = subsets.MASK_FUNCTIONS[kind]
    kw = dict(score=score, score_name='easiness', labels=labels)
    a = fn(strategy, k, seed=(0, 1), **kw)
    b = fn(strategy, k, seed=(1, 1), **kw)  # Another config.seed.
    assert not (a == b).all(), strategy
    np.testing.assert_array_equal(a, fn(strategy, k, seed=(0, 1), **kw))
    # An int seed is the one-element sequence (exports use seed=0).
    np.testing.assert_array_equal(fn(strategy, k, seed=3, **kw),
                                  fn(strategy, k, seed=(3,), **kw))


def test_sweep_masks_follow_config_seed():
  import ml_collections
  from easyhard_jax.experiments import sweeps
  rng = np.random.default_rng(1)
  n = 120
  labels = rng.integers(0, 3, n)
  # No early margin: ties of the 5 easiness levels break at random.
  scores = {'easiness': np.round(rng.random(n) * 4) / 4}
  cfg = ml_collections.ConfigDict({'strategies': ('random', 'easiest'),
                                   'scores': ('easiness',), 'seeds': 2})

  def plan(root_seed):
    return sweeps._member_plan(  # pylint: disable=protected-access
        'removal', cfg, 'cnn', 0.3, n, scores, labels, 'removal/x', root_seed)

  (members, masks), (_, other) = plan(0), plan(5)
  assert [m['seed'] for m in members] == [0, 1, 0, 1]
  for a, b in zip(masks, other):
    assert not (a == b).all()  # Random picks and tie-breaks both move.
  np.testing.assert_array_equal(np.stack(masks), np.stack(plan(0)[1]))
