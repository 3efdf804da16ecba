"""Intervals over seeds at the ensemble's own size: a stratified jackknife.

An architecture-pair statistic T (set overlap / chance, Jaccard, easiness
Spearman between two architectures) is computed from the mean of all n_g
members (seeds) of each architecture. What a rerun with fresh seeds would
change is T's seed-to-seed variation *at these ensemble sizes*; the interval
here covers E[T] over fresh n_g-member ensembles of the same recipe. It says
nothing about example sampling (the examples are the dataset's, fixed) and
nothing about the limit of infinitely many seeds.

Method: leave one seed out. :func:`resampled_stats` recomputes T with each
member dropped from its architecture's mean (its n_g - 1 siblings kept);
:func:`jackknife_interval` forms the stratified jackknife variance

    v = sum over the two architectures g of the pair:
        (n_g - 1) / n_g * sum_{i in g} (T_(i) - mean_{i in g} T_(i))^2,

which for a statistic linear in the members equals the textbook
sum_g S_g^2 / n_g (the same finite-population reasoning as
experiments/noise_floor.py with m = n - 1), and the interval
T +- t_q(df) sqrt(v) with Welch-Satterthwaite degrees of freedom from the two
architectures' terms (between min(n_g) - 1 and sum (n_g - 1)): with three
seeds a normal quantile would be too narrow.

The with-replacement bootstrap this replaces drew ~2.1 distinct members out
of 3 per architecture, so each resampled ensemble was smaller and noisier
than the one reported and every agreement statistic shifted down (its 95%
interval covered the fresh-ensemble mean in well under 90% of trials;
tests/test_seed_interval.py measures both).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

#: What the interval covers, for analysis.json and the report.
COVERS = ('seed-to-seed variation of the statistic at this ensemble size '
          '(all members of each architecture averaged): a stratified '
          'leave-one-seed-out jackknife, T +- t(df) * sd, df by '
          'Welch-Satterthwaite; not example sampling, and undefined (NaN) '
          'for an architecture with one member')


def _weighted_group_mean(values: jax.Array, group_ids: jax.Array,
                         weights: jax.Array, num_groups: int) -> jax.Array:
  """Per-group mean of [M, N] with member weights [M] (NaNs ignored)."""
  v = values.astype(jnp.float32)
  w = (group_ids[None, :] == jnp.arange(num_groups)[:, None]).astype(
      jnp.float32) * weights[None, :].astype(jnp.float32)
  present = ~jnp.isnan(v)
  hi = jax.lax.Precision.HIGHEST
  total = jnp.matmul(w, jnp.where(present, v, 0.0), precision=hi)
  count = jnp.matmul(w, present.astype(jnp.float32), precision=hi)
  return jnp.where(count > 0, total / jnp.where(count > 0, count, 1.0),
                   jnp.nan)


@functools.partial(jax.jit, static_argnames=('stat_fn', 'num_groups',
                                             'batch_size'))
def resampled_stats(member_values: Any, group_ids: jax.Array,
                    weights: jax.Array, stat_args: Any = None, *,
                    stat_fn: Callable[[Any, Any], Any], num_groups: int,
                    batch_size: int = 4) -> Any:
  """An architecture-level statistic under member weights, one row each.

  Args:
    member_values: pytree of float [M, N] per-member scores.
    group_ids: int32 [M], the architecture of each member.
    weights: float [B, M]: each row weights the members inside their
      architecture's mean (1 - eye(M): leave one out; multiplicities: a
      with-replacement bootstrap).
    stat_args: a pytree of arrays passed on to ``stat_fn`` (traced).
    stat_fn: ``stat_fn(arch_values, stat_args)`` maps the pytree of [G, N]
      architecture means to a pytree of arrays (static: pass the same
      callable to reuse the compilation).
    num_groups: G.
    batch_size: rows computed together (memory ~ batch * G * N).

  Returns:
    ``stat_fn``'s pytree with a leading axis of size B.
  """

  def one(w):
    arch = jax.tree.map(
        lambda v: _weighted_group_mean(v, group_ids, w, num_groups),
        member_values)
    return stat_fn(arch, stat_args)

  return jax.lax.map(one, weights, batch_size=batch_size)


def leave_one_out(member_values: Any, group_ids: Sequence[int],
                  stat_args: Any = None, *, stat_fn: Callable[[Any, Any], Any],
                  num_groups: int) -> tuple[Any, Any]:
  """``stat_fn`` with every member, and with each member left out in turn.

  Args:
    member_values, stat_args, stat_fn, num_groups: as
      :func:`resampled_stats`.
    group_ids: int [M], the architecture of each member.

  Returns:
    (full, loo): numpy pytrees of ``stat_fn``'s output, ``loo`` with a
    leading axis M (one compiled program computes both).
  """
  m = len(group_ids)
  weights = np.concatenate([np.ones((1, m)), 1.0 - np.eye(m)])
  out = resampled_stats(member_values, jnp.asarray(group_ids, jnp.int32),
                        jnp.asarray(weights, jnp.float32), stat_args,
                        stat_fn=stat_fn, num_groups=num_groups)
  out = jax.tree.map(np.asarray, out)
  return (jax.tree.map(lambda x: x[0], out),
          jax.tree.map(lambda x: x[1:], out))


def jackknife_interval(full: Any, loo: Any, group_ids: Sequence[int],
                       level: float) -> dict[str, np.ndarray]:
  """Stratified-jackknife interval of an architecture-pair matrix.

  Args:
    full: float [G, G], the statistic with every member (cell (a, b) depends
      on architectures a and b only).
    loo: float [M, G, G], the statistic with member i left out
      (:func:`leave_one_out`).
    group_ids: int [M], the architecture of each member.
    level: two-sided level, e.g. 0.95.

  Returns:
    {'lo', 'hi', 'sd', 'df'}: float64 [G, G] each; NaN where an architecture
    of the pair has one member (no seed spread to estimate) or a value is
    not finite. A cell whose jackknife values are all equal gets lo = hi.
  """
  full = np.asarray(full, np.float64)
  loo = np.asarray(loo, np.float64)
  gids = np.asarray(group_ids)
  g = full.shape[0]
  part = np.full((g, g, g), np.nan)  # part[h]: architecture h's term.
  sizes = np.bincount(gids, minlength=g)
  for h in range(g):
    if sizes[h] >= 2:
      x = loo[gids == h]
      part[h] = (sizes[h] - 1) / sizes[h] * np.sum(
          (x - x.mean(axis=0)) ** 2, axis=0)
  a, b = np.meshgrid(np.arange(g), np.arange(g), indexing='ij')
  pa, pb = part[a, a, b], part[b, a, b]
  pb = np.where(a == b, 0.0, pb)  # A diagonal cell has one architecture.
  var = pa + pb
  dof_a = np.maximum(sizes[a] - 1, 1).astype(np.float64)
  dof_b = np.maximum(sizes[b] - 1, 1).astype(np.float64)
  with np.errstate(invalid='ignore', divide='ignore'):
    df = var ** 2 / (pa ** 2 / dof_a + pb ** 2 / dof_b)
  # All terms zero: no spread, the interval is the point.
  df = np.where(var == 0.0, np.inf, df)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    q = stats.t.ppf(0.5 + level / 2.0, df)
  sd = np.sqrt(var)
  half = np.where(var == 0.0, 0.0, q * sd)
  bad = ~np.isfinite(full) | ~np.isfinite(var)
  nan = np.float64(np.nan)
  return {'lo': np.where(bad, nan, full - half),
          'hi': np.where(bad, nan, full + half),
          'sd': np.where(bad, nan, sd),
          'df': np.where(bad, nan, df)}
