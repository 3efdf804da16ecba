"""Training subsets chosen by an easiness score: removal and compression.

A subset is a bool mask over the stable example index of the training split
(True = the example is trained on). Every strategy is a pure function of the
score, the labels, the size and a seed, so a resumed sweep rebuilds identical
masks. The seed is an int or a sequence of ints (the sweeps pass
``(config.seed, seed index)``, so another root seed draws other random
subsets and tie-breaks; an int ``s`` and ``(s,)`` give the same masks).
Scores are first oriented so that higher means easier
(``analysis.scores.easier_key``); ties (easiness takes few distinct values)
break by the early margin (mean eval margin over the window, also oriented;
the argument is still called ``aum``) and then at random per seed.

Removal strategies remove ``k`` examples:
  ``easiest``, ``hardest``, ``random`` and their ``*_balanced`` variants, which
  remove k_c examples from each class c in proportion to its size (largest
  remainder, so the total is exactly k).
Compression strategies keep ``k`` examples:
  ``drop_easiest`` (keep the k hardest), ``stratified`` (keep k examples at
  evenly spaced ranks of the score, so every easiness level stays), ``random``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from easyhard_jax.analysis import scores as scores_lib


Seed = int | Sequence[int]


def _entropy(seed: Seed) -> list[int]:
  return [int(s) for s in np.atleast_1d(np.asarray(seed, np.int64))]


def easiness_order(score: np.ndarray, score_name: str,
                   aum: np.ndarray | None, seed: Seed) -> np.ndarray:
  """Example indices from easiest to hardest (ties: margin, then random)."""
  key = np.asarray(scores_lib.easier_key(np.asarray(score, np.float64),
                                         score_name))
  if not np.isfinite(key).all():
    raise ValueError(f'Score {score_name!r} has non-finite values; pick a '
                     'score the records support (EL2N needs probe records).')
  tiebreak = np.zeros_like(key) if aum is None else np.asarray(aum, np.float64)
  noise = np.random.default_rng(_entropy(seed)).random(key.shape[0])
  return np.lexsort((noise, -tiebreak, -key))


def class_quota(labels: np.ndarray, k: int) -> dict[int, int]:
  """k split over classes in proportion to their sizes, summing exactly to k."""
  classes, sizes = np.unique(labels, return_counts=True)
  exact = k * sizes / sizes.sum()
  quota = np.floor(exact).astype(int)
  short = k - quota.sum()
  order = np.argsort(-(exact - quota), kind='stable')
  quota[order[:short]] += 1
  return dict(zip(classes.tolist(), quota.tolist()))


def _take_from_order(order: np.ndarray, k: int, labels: np.ndarray,
                     balanced: bool) -> np.ndarray:
  """The first k of ``order`` (globally, or the first k_c of each class)."""
  chosen = np.zeros(order.shape[0], bool)
  if not balanced:
    chosen[order[:k]] = True
    return chosen
  for c, kc in class_quota(labels, k).items():
    in_class = order[labels[order] == c]
    chosen[in_class[:kc]] = True
  return chosen


def _random_order(n: int, seed: Seed) -> np.ndarray:
  return np.random.default_rng(_entropy(seed) + [7]).permutation(n)


def removal_mask(strategy: str, k: int, *, score: np.ndarray,
                 score_name: str, labels: np.ndarray, seed: Seed,
                 aum: np.ndarray | None = None) -> np.ndarray:
  """Training mask after removing k examples with ``strategy``."""
  base, balanced = _parse(strategy, ('easiest', 'hardest', 'random'))
  n = labels.shape[0]
  if not 0 <= k < n:
    raise ValueError(f'Cannot remove {k} of {n} examples; fractions must be '
                     'in [0, 1).')
  if base == 'random':
    order = _random_order(n, seed)
  else:
    order = easiness_order(score, score_name, aum, seed)
    if base == 'hardest':
      order = order[::-1]
  return ~_take_from_order(order, k, labels, balanced)


def compression_mask(strategy: str, k: int, *, score: np.ndarray,
                     score_name: str, labels: np.ndarray, seed: Seed,
                     aum: np.ndarray | None = None) -> np.ndarray:
  """Training mask keeping k examples chosen with ``strategy``."""
  base, balanced = _parse(strategy, ('drop_easiest', 'stratified', 'random'))
  n = labels.shape[0]
  if not 0 < k <= n:
    raise ValueError(f'Cannot keep {k} of {n} examples; fractions must be in '
                     '(0, 1].')
  if base == 'random':
    return _take_from_order(_random_order(n, seed), k, labels, balanced)
  order = easiness_order(score, score_name, aum, seed)
  if base == 'drop_easiest':
    return _take_from_order(order[::-1], k, labels, balanced)
  # Stratified: evenly spaced ranks (within each class when balanced).
  keep = np.zeros(n, bool)
  groups = class_quota(labels, k).items() if balanced else [(None, k)]
  for c, kc in groups:
    sub = order if c is None else order[labels[order] == c]
    if kc:
      ranks = np.floor((np.arange(kc) + 0.5) * sub.shape[0] / kc).astype(int)
      keep[sub[ranks]] = True
  return keep


def _parse(strategy: str, bases: tuple[str, ...]) -> tuple[str, bool]:
  balanced = strategy.endswith('_balanced')
  base = strategy[:-len('_balanced')] if balanced else strategy
  if base not in bases:
    raise ValueError(f'Unknown strategy {strategy!r}; use one of {bases}, '
                     'each optionally with the suffix _balanced.')
  return base, balanced


MASK_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    'removal': removal_mask,
    'compression': compression_mask,
}
