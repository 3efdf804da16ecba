"""Easy and hard sets: boolean masks over the examples of a split.

Rules (``config.analysis.sets.method``):

* ``all_correct``: easy = correct for every (member, probe) pair of the
  window (easiness 1), hard = wrong for every pair (easiness 0). Only for
  accuracy-type scores. Set sizes differ and may be zero.
* ``top_k``: easy = the k easiest by the score, hard = the k hardest, either
  k_c per class (``per_class``, class-balanced: the default) or globally.
  A global top-k set can be one class (on the digits default the global easy
  set is 144 of 144 class 1), so "easy examples look alike" can hold by
  class alone; the analysis reports both rules. Ties are broken by a
  secondary score (the early margin by default, in the same easy-high
  orientation), then by the example index, so sets are deterministic;
  without the secondary score an index tiebreak would make every member pick
  the same tied examples and inflate agreement.
* ``threshold``: easy = score on the easy side of ``easy_threshold``
  (inclusive), hard = on the hard side of ``hard_threshold``, in the score's
  own units (so for EL2N, easy means el2n <= easy_threshold).

Kernels take ``[N]`` or ``[R, N]`` (one row per member or architecture) and a
``valid`` mask for padding; they are jitted with ``k`` traced, so a new k never
recompiles. Masks index examples in the split's stable order; use
:func:`mask_to_indices` for sorted index arrays.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from easyhard_jax.analysis import scores as scores_lib

METHODS = ('top_k', 'all_correct', 'threshold')
_INT_MIN = np.iinfo(np.int32).min
_ACCURACY_SCORES = ('easiness', 'cumulative_accuracy', 'correctness')
TIEBREAKS = ('early_margin', 'none')
RULE_NAMES = ('class_balanced', 'global')
# Accuracies are means of at most ~1e5 (member, probe) bits; any true value
# below 1 is at least 1e-5 away, while float rounding of group means is 1e-7.
_ALL_TOL = 1e-6


def _rows(fn, key, *args):
  """Applies a 1-D kernel to [N] or to each row of [R, N]."""
  if key.ndim == 1:
    return fn(key, *args)
  in_axes = (0,) + tuple(0 if (a is not None and jnp.ndim(a) == 2) else None
                         for a in args)
  return jax.vmap(fn, in_axes=in_axes)(key, *args)


def sortable_int(x: jax.Array) -> jax.Array:
  """Maps float32 to int32 with the same order (-0.0 == 0.0; finite x)."""
  b = jax.lax.bitcast_convert_type(x.astype(jnp.float32) + 0.0, jnp.int32)
  return b ^ ((b >> 31) & 0x7FFFFFFF)


def _rank_below(k: jax.Array) -> jax.Array:
  """For each entry, how many entries are strictly smaller (int32 [N])."""
  return jnp.searchsorted(jnp.sort(k), k, side='left').astype(jnp.int32)


def _stage(comp, cand, labels, need, num_classes):
  """Splits candidates at each class's need-th largest ``comp``.

  Single-operand sorts only: XLA:CPU sorts one int32 array ~50x faster than
  the multi-operand sort behind ``jnp.lexsort``.
  """
  n = comp.shape[0]
  s = jnp.sort(jnp.where(cand, comp, _INT_MIN))
  count = jnp.bincount(labels, weights=cand.astype(jnp.int32),
                       length=num_classes).astype(jnp.int32)
  # Non-candidates sort first, then each class's candidates in a block
  # (comp is label * N + rank when there are several classes).
  start = n - jnp.sum(count) + jnp.cumsum(count) - count
  need = jnp.clip(need, 0, count)
  t = s[jnp.clip(start + count - need, 0, n - 1)][labels]
  live = cand & (need[labels] > 0)
  above, tie = live & (comp > t), live & (comp == t)
  left = need - jnp.bincount(labels, weights=above.astype(jnp.int32),
                             length=num_classes).astype(jnp.int32)
  return above, tie, left


def _top_k_core(key, k, tiebreak, valid, labels, largest, num_classes):
  """Top k per class by (key, tiebreak, lower index), in three stages."""
  n = key.shape[0]
  if num_classes * n >= 2 ** 31:
    raise ValueError(f'{num_classes} classes x {n} examples overflow int32.')
  sign = 1.0 if largest else -1.0
  k1, k2 = sortable_int(sign * key), sortable_int(sign * tiebreak)
  if num_classes > 1:
    k1 = labels * n + _rank_below(k1)
    k2 = labels * n + _rank_below(k2)
  k3 = labels * n + (n - 1 - jnp.arange(n, dtype=jnp.int32))
  need = jnp.broadcast_to(jnp.asarray(k, jnp.int32), (num_classes,))
  a1, tie, need = _stage(k1, valid, labels, need, num_classes)
  a2, tie, need = _stage(k2, tie, labels, need, num_classes)
  a3, tie, _ = _stage(k3, tie, labels, need, num_classes)
  return a1 | a2 | a3 | tie  # The last stage's keys are distinct.


@functools.partial(jax.jit, static_argnames='largest')
def top_k_mask(key: jax.Array, k: jax.Array | int,
               tiebreak: jax.Array | None = None,
               valid: jax.Array | None = None, *,
               largest: bool = True) -> jax.Array:
  """The k largest (or smallest) entries of a score, as a mask.

  Args:
    key: float [N] or [R, N], finite.
    k: how many per row (traced; clipped to the valid count).
    tiebreak: float like ``key``, or None; ranks ties of ``key`` in the same
      direction; remaining ties go to the lower example index.
    valid: bool [N] or [R, N]; invalid (padding) entries are never chosen.
    largest: True for the k largest, False for the k smallest.

  Returns:
    bool, the shape of ``key``.
  """
  if tiebreak is None:
    tiebreak = jnp.zeros_like(key)
  if valid is None:
    valid = jnp.ones(key.shape, bool)
  zeros = jnp.zeros(key.shape[-1:], jnp.int32)
  fn = lambda a, b, c: _top_k_core(a, k, b, c, zeros, largest, 1)
  return _rows(fn, key, tiebreak, valid)


@functools.partial(jax.jit, static_argnames=('largest', 'num_classes'))
def top_k_per_class_mask(key: jax.Array, labels: jax.Array,
                         k: jax.Array | int,
                         tiebreak: jax.Array | None = None,
                         valid: jax.Array | None = None, *,
                         num_classes: int, largest: bool = True) -> jax.Array:
  """The k largest (or smallest) entries of each class (class-balanced).

  Args:
    key: float [N] or [R, N], finite.
    labels: int [N], in [0, num_classes).
    k: scalar or int [num_classes]; a class with fewer valid examples gives
      all of them.
    tiebreak: as in :func:`top_k_mask`.
    valid: as in :func:`top_k_mask`.
    num_classes: number of classes (static).
    largest: True for the k largest per class.

  Returns:
    bool, the shape of ``key``.
  """
  if tiebreak is None:
    tiebreak = jnp.zeros_like(key)
  if valid is None:
    valid = jnp.ones(key.shape, bool)
  labels = jnp.asarray(labels, jnp.int32)
  fn = lambda a, b, c: _top_k_core(a, k, b, c, labels, largest, num_classes)
  return _rows(fn, key, tiebreak, valid)


@jax.jit
def all_correct_mask(correct: jax.Array, probe_mask: jax.Array) -> jax.Array:
  """Examples correct for every member at every masked probe -> bool [N]."""
  m = probe_mask.astype(bool)[None, :, None]
  return jnp.all(correct | ~m, axis=(0, 1))


@jax.jit
def all_wrong_mask(correct: jax.Array, probe_mask: jax.Array) -> jax.Array:
  """Examples wrong for every member at every masked probe -> bool [N]."""
  m = probe_mask.astype(bool)[None, :, None]
  return ~jnp.any(correct & m, axis=(0, 1))


def mask_to_indices(mask: Any) -> np.ndarray:
  """Indices of a mask's True entries, in example order (int64)."""
  return np.flatnonzero(np.asarray(mask)).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class SetRule:
  """How easy and hard sets are chosen (``config.analysis.sets``)."""
  method: str = 'top_k'
  score: str = 'easiness'
  k: int = 0
  fraction: float = 0.1
  per_class: bool = False
  easy_threshold: float = 0.9
  hard_threshold: float = 0.1
  tiebreak: str = 'early_margin'

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f'sets.method must be one of {METHODS}, got '
                       f'{self.method!r}')
    if self.score not in scores_lib.SCORE_NAMES:
      raise ValueError(f'sets.score must be one of {scores_lib.SCORE_NAMES}, '
                       f'got {self.score!r}')
    scores_lib.easier_key(0.0, self.score)  # Raises for 'variability'.
    if self.method == 'all_correct' and self.score not in _ACCURACY_SCORES:
      raise ValueError(f"sets.method='all_correct' needs an accuracy score "
                       f'{_ACCURACY_SCORES}, got {self.score!r}')
    if self.method == 'top_k' and self.k <= 0 and not 0 < self.fraction <= 1:
      raise ValueError('sets.top_k needs k > 0 or 0 < fraction <= 1, got '
                       f'k={self.k}, fraction={self.fraction}')
    if self.tiebreak not in TIEBREAKS:
      raise ValueError(f'sets.tiebreak must be one of {TIEBREAKS}, got '
                       f'{self.tiebreak!r} (the early-margin tiebreak was '
                       "called 'aum' before AUM became the training-pass "
                       'score of Pleiss et al.)')

  @classmethod
  def from_config(cls, sets_config: Any) -> 'SetRule':
    """Builds the rule from ``config.analysis.sets``."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(sets_config).items() if k in fields})

  @property
  def name(self) -> str:
    """'class_balanced' (top_k per class) or 'global' (every other rule)."""
    return ('class_balanced' if self.method == 'top_k' and self.per_class
            else 'global')

  def other(self) -> 'SetRule | None':
    """The same top_k rule with the other class rule; None for non-top_k."""
    if self.method != 'top_k':
      return None
    return dataclasses.replace(self, per_class=not self.per_class)

  def resolve_k(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """k for ``top_k``: a scalar, or int32 [num_classes] when per class."""
    labels = np.asarray(labels)
    if self.per_class:
      counts = np.bincount(labels, minlength=num_classes)
      if self.k > 0:
        return np.full((num_classes,), self.k, np.int32)
      return np.round(self.fraction * counts).astype(np.int32)
    if self.k > 0:
      return np.asarray(min(self.k, labels.size), np.int32)
    return np.asarray(int(round(self.fraction * labels.size)), np.int32)


def easy_hard_masks(rule: SetRule, score: Any, *, labels: Any = None,
                    num_classes: int | None = None, k: Any = None,
                    tiebreak: Any = None,
                    valid: Any = None) -> tuple[jax.Array, jax.Array]:
  """Applies a :class:`SetRule` to a score (traceable; usable under jit).

  Args:
    rule: the rule.
    score: the raw score named ``rule.score``, [N] or [R, N].
    labels: int [N]; needed when ``rule.per_class``.
    num_classes: static class count; needed when ``rule.per_class``.
    k: from ``rule.resolve_k`` (needed for ``top_k``).
    tiebreak: the raw early margin (ignored when ``rule.tiebreak ==
      'none'``).
    valid: bool mask for padding, or None.

  Returns:
    (easy, hard) bool masks shaped like ``score``.
  """
  score = jnp.asarray(score, jnp.float32)
  if rule.method == 'all_correct':
    easy, hard = score >= 1.0 - _ALL_TOL, score <= _ALL_TOL
  elif rule.method == 'threshold':
    key = scores_lib.easier_key(score, rule.score)
    sign = 1.0 if scores_lib.orientation(rule.score) == (
        scores_lib.HIGHER_IS_EASIER) else -1.0
    easy = key >= sign * rule.easy_threshold
    hard = key <= sign * rule.hard_threshold
  else:
    if k is None:
      raise ValueError('top_k sets need k (SetRule.resolve_k).')
    key = scores_lib.easier_key(score, rule.score)
    tb = None
    if rule.tiebreak != 'none' and tiebreak is not None:
      tb = jnp.broadcast_to(jnp.asarray(tiebreak, jnp.float32), key.shape)
    if rule.per_class:
      if labels is None or num_classes is None:
        raise ValueError('Per-class sets need labels and num_classes.')
      kw = dict(num_classes=num_classes)
      easy = top_k_per_class_mask(key, labels, k, tb, valid, largest=True, **kw)
      hard = top_k_per_class_mask(key, labels, k, tb, valid, largest=False,
                                  **kw)
    else:
      easy = top_k_mask(key, k, tb, valid, largest=True)
      hard = top_k_mask(key, k, tb, valid, largest=False)
    return easy, hard
  if valid is not None:
    easy, hard = easy & valid, hard & valid
  return easy, hard


def check_finite(score: np.ndarray, name: str) -> None:
  """Raises a clear error for NaN/inf in a selection score (fused EL2N)."""
  if not np.all(np.isfinite(score)):
    raise ValueError(
        f'Score {name!r} has non-finite values (fused records store no EL2N); '
        'choose another config.analysis.sets.score or source=probe.')


def class_composition_sample(rng: np.random.Generator, labels: np.ndarray,
                             counts: np.ndarray) -> np.ndarray:
  """A random set with ``counts[c]`` examples of each class c.

  Two such sets drawn independently have, by class, a hypergeometric
  intersection: the null that ``agreement.overlap_matrix(..., labels=...)``
  states. Classes with fewer examples give all of them.

  Args:
    rng: numpy generator.
    labels: int [N].
    counts: int [C], examples wanted per class.

  Returns:
    bool [N].
  """
  labels = np.asarray(labels)
  out = np.zeros(labels.shape, bool)
  for c, k in enumerate(np.asarray(counts)):
    pool = np.flatnonzero(labels == c)
    k = min(int(k), pool.size)
    if k > 0:
      out[rng.choice(pool, size=k, replace=False)] = True
  return out
