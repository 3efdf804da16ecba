"""Jitted per-member kernels behind :mod:`easyhard_jax.analysis.scores`.

Each kernel folds over the probe (or epoch) axis of [members, probes,
examples] arrays and returns [members, examples] statistics. The score
definitions, their orientation and the authors' conventions are documented
in :mod:`easyhard_jax.analysis.scores`, which re-exports these kernels.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Kernels loop over the probe axis, reading one contiguous [M, N] slab per
# probe and updating [M, N] accumulators. A reduction over the middle axis of
# [M, P, N] strides through memory and ran ~30x slower on XLA:CPU; unrolling
# by 2 lets XLA keep the carry in place (another ~6x; 4 gains little more).
_UNROLL = 2


def _probe_loop(arrays: dict[str, jax.Array], probe_mask: jax.Array,
                step, init):
  """Folds ``step(valid, slabs, carry)`` over the probes of [M, P, N] arrays."""
  p = next(iter(arrays.values())).shape[1]
  mask = probe_mask.astype(bool)

  def body(i, carry):
    slabs = {k: jax.lax.dynamic_index_in_dim(v, i, axis=1, keepdims=False)
             for k, v in arrays.items()}
    return step(mask[i], slabs, carry)

  return jax.lax.fori_loop(0, p, body, init, unroll=max(1, min(_UNROLL, p)))


def _zeros(x: jax.Array, dtype) -> jax.Array:
  return jnp.zeros((x.shape[0], x.shape[2]), dtype)


def _hits_step(valid, c, hits):
  return hits + (valid & c).astype(jnp.int32)


def _first_step(valid, c, carry):
  rank, last_wrong = carry  # rank: 1-based rank of this probe among masked.
  rank = rank + valid.astype(jnp.int32)
  return rank, jnp.where(valid & ~c, rank, last_wrong)


def _forget_step(valid, c, carry):
  prev, started, events, ever = carry
  events = events + (valid & started & prev & ~c).astype(jnp.int32)
  return jnp.where(valid, c, prev), started | valid, events, ever | (valid & c)


def _sum_step(valid, x, total):
  return total + jnp.where(valid, x.astype(jnp.float32), 0.0)


def _moments_step(valid, x, carry):
  # Welford's update: no cancellation for near-constant sequences.
  n, mean, m2 = carry
  x = x.astype(jnp.float32)
  n = n + valid.astype(jnp.float32)
  delta = x - mean
  new_mean = mean + jnp.where(valid, delta, 0.0) / jnp.maximum(n, 1.0)
  m2 = m2 + jnp.where(valid, delta * (x - new_mean), 0.0)
  return n, new_mean, m2


def _count(probe_mask: jax.Array) -> jax.Array:
  return jnp.sum(probe_mask.astype(jnp.int32))


@jax.jit
def member_accuracy(correct: jax.Array, probe_mask: jax.Array) -> jax.Array:
  """Fraction of the masked probes at which each member is correct.

  Args:
    correct: bool [M, P, N].
    probe_mask: bool [P].

  Returns:
    float32 [M, N]; its mean over members is the paper's easiness.
  """
  hits = _probe_loop({'c': correct}, probe_mask,
                     lambda v, s, h: _hits_step(v, s['c'], h),
                     _zeros(correct, jnp.int32))
  return hits.astype(jnp.float32) / _count(probe_mask).astype(jnp.float32)


@jax.jit
def window_mean(values: jax.Array, probe_mask: jax.Array) -> jax.Array:
  """Mean of ``values`` [M, P, N] over the masked probes -> float32 [M, N]."""
  total = _probe_loop({'x': values}, probe_mask,
                      lambda v, s, t: _sum_step(v, s['x'], t),
                      _zeros(values, jnp.float32))
  return total / _count(probe_mask).astype(jnp.float32)


@jax.jit
def window_std(values: jax.Array, probe_mask: jax.Array) -> jax.Array:
  """Population std of ``values`` [M, P, N] over masked probes -> [M, N]."""
  init = (jnp.float32(0.0), _zeros(values, jnp.float32),
          _zeros(values, jnp.float32))
  n, _, m2 = _probe_loop({'x': values}, probe_mask,
                         lambda v, s, c: _moments_step(v, s['x'], c), init)
  return jnp.sqrt(m2 / n)


@jax.jit
def first_learned(correct: jax.Array, probe_mask: jax.Array) -> jax.Array:
  """First probe from which each member stays correct (learned for good).

  Args:
    correct: bool [M, P, N].
    probe_mask: bool [P]; unmasked probes are skipped as if absent.

  Returns:
    int32 [M, N]: an index among the masked probes (0 = correct at every
    one of them); P_w = number of masked probes when the last one is wrong.
  """
  # The answer is one past the last masked probe that is wrong.
  _, last_wrong = _probe_loop({'c': correct}, probe_mask,
                              lambda v, s, c: _first_step(v, s['c'], c),
                              (jnp.int32(0), _zeros(correct, jnp.int32)))
  return last_wrong


@jax.jit
def forgetting_events(correct: jax.Array,
                      probe_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Counts correct -> wrong transitions between consecutive masked probes.

  Args:
    correct: bool [M, P, N].
    probe_mask: bool [P]; "consecutive" skips unmasked probes.

  Returns:
    (events int32 [M, N], never_learned bool [M, N]). ``events`` is 0 for a
    never-learned example; :func:`member_scores` maps those to P_w.
  """
  init = (_zeros(correct, bool), jnp.bool_(False), _zeros(correct, jnp.int32),
          _zeros(correct, bool))
  _, _, events, ever = _probe_loop(
      {'c': correct}, probe_mask, lambda v, s, c: _forget_step(v, s['c'], c),
      init)
  return events, ~ever


def _rank_epochs(probe_epochs: jax.Array, mask: jax.Array) -> jax.Array:
  """Epochs of the masked probes in order, then +inf (float32 [P])."""
  return jnp.sort(jnp.where(mask, probe_epochs.astype(jnp.float32), jnp.inf))


@jax.jit
def member_scores(correct: jax.Array, margin: jax.Array, el2n: jax.Array,
                  window: jax.Array, dynamics: jax.Array, *,
                  probe_epochs: jax.Array | None = None
                  ) -> dict[str, jax.Array]:
  """Every probe score of the module table, per member, in one pass.

  Args:
    correct: bool [M, P, N].
    margin: float [M, P, N].
    el2n: float [M, P, N].
    window: bool [P], the probes of the easiness window.
    dynamics: bool [P], the probes of the dynamics window.
    probe_epochs: float [P], the epoch of each probe (ascending); default
      1..P (first_learned is then a 1-based probe number).

  Returns:
    {score name: float32 [M, N]} for every name in
    :data:`PROBE_SCORE_NAMES`.
  """
  wmask, dmask = window.astype(bool), dynamics.astype(bool)
  p = correct.shape[1]
  if probe_epochs is None:
    probe_epochs = jnp.arange(1, p + 1, dtype=jnp.float32)
  f32, i32 = (_zeros(correct, jnp.float32), _zeros(correct, jnp.int32))
  both = jnp.stack([wmask, dmask], axis=1)  # [P, 2]: one loop for both.

  def step(valid, s, carry):
    w, d = valid[0], valid[1]
    win_hits, el2n_sum, margin_sum, dyn_hits, first, forget = carry
    return (_hits_step(w, s['c'], win_hits),
            _sum_step(w, s['el2n'], el2n_sum),
            _sum_step(w, s['margin'], margin_sum),
            _hits_step(d, s['c'], dyn_hits),
            _first_step(d, s['c'], first),
            _forget_step(d, s['c'], forget))

  init = (i32, f32, f32, i32, (jnp.int32(0), i32),
          (_zeros(correct, bool), jnp.bool_(False), i32,
           _zeros(correct, bool)))
  arrays = {'c': correct, 'margin': margin, 'el2n': el2n}
  (win_hits, el2n_sum, margin_sum, dyn_hits, (n_dyn, last_wrong),
   (_, _, events, ever)) = _probe_loop(arrays, both, step, init)
  n_win = _count(wmask).astype(jnp.float32)
  n_dyn_f = n_dyn.astype(jnp.float32)
  never = ~ever
  # last_wrong is the rank (0-based) among the dynamics probes of the first
  # probe from which the example stays correct; == n_dyn when the last probe
  # is wrong, which maps to one epoch after the last probe.
  ranked = _rank_epochs(probe_epochs, dmask)
  last_epoch = ranked[jnp.maximum(n_dyn - 1, 0)]
  first_epoch = jnp.where(last_wrong >= n_dyn, last_epoch + 1.0,
                          ranked[jnp.minimum(last_wrong, p - 1)])
  return {
      'easiness': win_hits.astype(jnp.float32) / n_win,
      'cumulative_accuracy': dyn_hits.astype(jnp.float32) / n_dyn_f,
      'first_learned': first_epoch,
      'probe_forgetting_events': jnp.where(never, n_dyn,
                                           events).astype(jnp.float32),
      'never_learned': never.astype(jnp.float32),
      'el2n': el2n_sum / n_win,
      'early_margin': margin_sum / n_win,
  }


@jax.jit
def fused_member_scores(correct: jax.Array, margin: jax.Array,
                        p_true: jax.Array,
                        presented: jax.Array) -> dict[str, jax.Array]:
  """The training-pass scores of the module table, per member, in one pass.

  Each epoch of the fused records is one presentation of every example it
  holds; ``presented`` masks the others (a partial last epoch, a subset), so
  "consecutive presentations" skip epochs where the example was not drawn,
  as in the authors' code, which appends a statistic per presentation.

  Args:
    correct: bool [M, E, N], training-pass correctness.
    margin: float [M, E, N], assigned logit minus the largest other logit.
    p_true: float [M, E, N], softmax probability of the assigned label.
    presented: bool [M, E, N]; False where the example was not presented
      (its statistics are NaN there and ignored).

  Returns:
    {name: float32 [M, N]} for every name in :data:`FUSED_SCORE_NAMES`;
    NaN where a member never saw the example.
  """
  e = correct.shape[1]
  f32, i32 = (_zeros(correct, jnp.float32), _zeros(correct, jnp.int32))
  no = _zeros(correct, bool)

  def step(_, s, carry):
    n, hits, msum, mean, m2, prev, events, ever = carry
    pres = s['pres']
    c = s['c'] & pres
    n = n + pres.astype(jnp.int32)
    nf = jnp.maximum(n.astype(jnp.float32), 1.0)
    # Welford's update, element-wise (presentations differ per example).
    x = jnp.where(pres, s['p'].astype(jnp.float32), 0.0)
    delta = x - mean
    new_mean = mean + jnp.where(pres, delta / nf, 0.0)
    m2 = m2 + jnp.where(pres, delta * (x - new_mean), 0.0)
    # Toneva et al.: a forgetting event is a presentation classified wrong
    # right after a presentation classified right (prev starts False).
    events = events + (pres & prev & ~s['c']).astype(jnp.int32)
    return (n, hits + c.astype(jnp.int32),
            msum + jnp.where(pres, s['m'].astype(jnp.float32), 0.0),
            new_mean, m2, jnp.where(pres, c, prev), events, ever | c)

  init = (i32, i32, f32, f32, f32, no, i32, no)
  arrays = {'c': correct, 'm': margin, 'p': p_true, 'pres': presented}
  n, hits, msum, mean, m2, _, events, ever = _probe_loop(
      arrays, jnp.ones((e,), bool), step, init)
  seen = n > 0
  nf = jnp.maximum(n.astype(jnp.float32), 1.0)
  nan = jnp.float32(jnp.nan)
  return {
      # mtoneva/example_forgetting, order_examples_by_forgetting.py,
      # sort_examples_by_forgetting: "If example was never learned during
      # current training run, add max forgetting counts" (example_stats +=
      # npresentations, the number of training epochs), summed over runs.
      'forgetting_events': jnp.where(
          seen, jnp.where(ever, events, e).astype(jnp.float32), nan),
      # asappresearch/aum, AUMCalculator: sums[id] / counts[id] of
      # target logit - max other logit, one update per presentation.
      'aum': jnp.where(seen, msum / nf, nan),
      # allenai/cartography, compute_train_dy_metrics: np.mean and np.std
      # (population) of p(gold) over epochs; correctness there is the count
      # of correct epochs, here its fraction (the paper's definition; the
      # same order when every example is presented every epoch).
      'confidence': jnp.where(seen, mean, nan),
      'variability': jnp.where(seen, jnp.sqrt(m2 / nf), nan),
      'correctness': jnp.where(seen, hits.astype(jnp.float32) / nf, nan),
  }


def presented_mask(fused: Any) -> np.ndarray:
  """Which (member, epoch, example) entries of fused records were presented.

  Records may carry a ``seen`` field; otherwise an example not presented in
  an epoch holds NaN statistics (the training buffers start as NaN), so a
  finite margin marks a presentation.

  Args:
    fused: fused ``records.Records``.

  Returns:
    bool [M, E, N].
  """
  seen = getattr(fused, 'seen', None)
  if seen is not None:
    return np.asarray(seen, bool)
  return np.isfinite(np.asarray(fused.margin)) & np.isfinite(
      np.asarray(fused.p_true))
