"""Bootstrap over seeds: resample members within each architecture.

:func:`bootstrap_arch` replaces every member by a member of the same
architecture drawn with replacement, averages per architecture and applies
a statistic (explicit key); :func:`percentile_interval` turns the samples
into intervals. ``agreement.agreement_report`` uses them for the
architecture pairs.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from easyhard_jax.analysis import scores as scores_lib


def resample_table(group_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """Host-side tables for :func:`bootstrap_arch`.

  Args:
    group_ids: int [M], the architecture of each member.

  Returns:
    (members int32 [G, max members], group sizes int32 [G]).
  """
  gids = np.asarray(group_ids)
  g = int(gids.max()) + 1
  lists = [np.flatnonzero(gids == i) for i in range(g)]
  sizes = np.asarray([len(x) for x in lists], np.int32)
  table = np.zeros((g, sizes.max()), np.int32)
  for i, x in enumerate(lists):
    table[i, :len(x)] = x
  return table, sizes


@functools.partial(jax.jit, static_argnames=('stat_fn', 'num_groups',
                                             'num_samples', 'batch_size'))
def bootstrap_arch(key: jax.Array, member_values: Any, group_ids: jax.Array,
                   table: jax.Array, sizes: jax.Array, stat_args: Any = None,
                   *, stat_fn: Callable[[Any, Any], Any], num_groups: int,
                   num_samples: int, batch_size: int = 8) -> Any:
  """Bootstrap of an architecture-level statistic over seeds.

  Each sample replaces every member by a member of the same architecture
  drawn with replacement, averages the drawn members per architecture and
  applies ``stat_fn``.

  Args:
    key: a ``jax.random`` key.
    member_values: pytree of float [M, N] per-member scores.
    group_ids: int32 [M].
    table: int32 [G, max members], from :func:`resample_table`.
    sizes: int32 [G], from :func:`resample_table`.
    stat_args: a pytree of arrays passed on to ``stat_fn`` (traced).
    stat_fn: ``stat_fn(arch_values, stat_args)`` maps the pytree of [G, N]
      architecture-level means to a pytree of arrays (static: pass the same
      callable to reuse the compilation).
    num_groups: G.
    num_samples: B.
    batch_size: samples computed together (memory ~ batch * G * N).

  Returns:
    ``stat_fn``'s pytree with a leading axis of size B.
  """
  m = group_ids.shape[0]
  # Whole batches only: a remainder batch would be a second compiled body.
  padded = -(-num_samples // batch_size) * batch_size
  u = jax.random.uniform(key, (padded, m))
  size_m = sizes[group_ids]
  pos = jnp.minimum(jnp.floor(u * size_m).astype(jnp.int32), size_m - 1)
  draws = table[group_ids[None, :], pos]  # [B, M]

  def one(draw):
    resampled = jax.tree.map(lambda v: v[draw], member_values)
    arch = jax.tree.map(
        lambda v: scores_lib.group_mean(v, group_ids, num_groups=num_groups),
        resampled)
    return stat_fn(arch, stat_args)

  out = jax.lax.map(one, draws, batch_size=batch_size)
  return jax.tree.map(lambda x: x[:num_samples], out)


def percentile_interval(samples: Any, level: float) -> tuple[np.ndarray,
                                                             np.ndarray]:
  """Two-sided percentile interval over the leading (bootstrap) axis."""
  s = np.asarray(samples, np.float64)
  q = [50.0 * (1.0 - level), 50.0 * (1.0 + level)]
  with warnings.catch_warnings():
    # All-NaN cells (e.g. an empty set in every sample) stay NaN, quietly.
    warnings.simplefilter('ignore', RuntimeWarning)
    lo, hi = np.nanpercentile(s, q, axis=0)
  return lo, hi
