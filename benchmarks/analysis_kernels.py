"""Jitted analysis kernels against slow obvious references, at study sizes.

  python -m benchmarks.analysis_kernels            # full sizes (minutes)
  python -m benchmarks.analysis_kernels --quick    # small sizes (seconds)

Full sizes: per-example statistics for 10 members x 200 probes x 50,000
examples; agreement between 100 members x 50,000 examples; within-set
distances of 5,000 of 50,000 examples of 3,072 values. JAX times are the best
of ``--repeats`` calls after a warm-up (compilation excluded,
``block_until_ready``); vectorized references likewise. The pure-Python loop references are timed on a slice
(of examples, pairs or rows) and scaled linearly to the full size, which the
output marks as "extrap."; vectorized numpy/scipy references, what a
careful user would write instead, run at full size (pdist on 1,000 rows,
scaled by the pair count).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats
from scipy.spatial import distance

from easyhard_jax.analysis import agreement
from easyhard_jax.analysis import scores
from easyhard_jax.analysis import sets
from easyhard_jax.analysis import similarity

FULL = dict(members=10, probes=200, examples=50_000, agree_members=100,
            images=50_000, set_size=5_000, dim=3_072)
QUICK = dict(members=4, probes=50, examples=5_000, agree_members=20,
             images=5_000, set_size=1_000, dim=3_072)


def _best(fn: Callable[[], Any], repeats: int) -> float:
  jax.block_until_ready(fn())  # Warm-up: compiles.
  best = float('inf')
  for _ in range(repeats):
    tick = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - tick)
  return best


def _once(fn: Callable[[], Any]) -> float:
  tick = time.perf_counter()
  fn()
  return time.perf_counter() - tick


def _row(name: str, jax_s: float, ref_s: float, ref: str) -> None:
  print(f'  {name:<34s} jax {jax_s:9.4f} s   {ref:<28s} {ref_s:10.3f} s'
        f'   speed-up {ref_s / jax_s:8.1f}x', flush=True)


def py_first_learned_and_forgetting(c: np.ndarray, n_cols: int
                                    ) -> tuple[np.ndarray, np.ndarray]:
  """The obvious loops over members, examples and probes (lists of bools)."""
  m_, p_, _ = c.shape
  first = np.zeros((m_, n_cols), np.int64)
  events = np.zeros((m_, n_cols), np.int64)
  for m in range(m_):
    rows = c[m, :, :n_cols].T.tolist()  # One Python list per example.
    for n, seq in enumerate(rows):
      last_wrong = -1
      ev = 0
      for p in range(p_):
        if not seq[p]:
          last_wrong = p
          if p and seq[p - 1]:
            ev += 1
      first[m, n] = last_wrong + 1
      events[m, n] = ev if any(seq) else p_
  return first, events


def np_first_learned_and_forgetting(c: np.ndarray) -> tuple[np.ndarray,
                                                             np.ndarray]:
  """Vectorized numpy over the whole array."""
  p_ = c.shape[1]
  wrong = ~c
  last_wrong = np.where(wrong.any(1), p_ - 1 - np.argmax(wrong[:, ::-1], 1),
                        -1)
  events = np.sum(c[:, :-1] & wrong[:, 1:], axis=1)
  events = np.where(c.any(1), events, p_)
  return last_wrong + 1, events


def bench_scores(cfg: dict[str, int], repeats: int, rng) -> None:
  m, p, n = cfg['members'], cfg['probes'], cfg['examples']
  print(f'Per-example statistics: {m} members x {p} probes x {n} examples')
  skill = np.linspace(-1.0, 2.0, p)[None, :, None]
  c = rng.random((m, p, n), np.float32) < 1 / (1 + np.exp(
      -(skill - rng.normal(size=(1, 1, n)))))
  v = rng.random((m, p, n), np.float32)
  cj, vj = jnp.asarray(c), jnp.asarray(v)
  allp = jnp.ones((p,), bool)
  window = jnp.asarray(np.arange(p) < p // 10)
  fl, (ev, never) = scores.first_learned(cj, allp), scores.forgetting_events(
      cj, allp)
  ref_first, ref_events = np_first_learned_and_forgetting(c)
  assert np.array_equal(np.asarray(fl), ref_first)
  assert np.array_equal(np.where(np.asarray(never), p, np.asarray(ev)),
                        ref_events)
  t_fl = _best(lambda: scores.first_learned(cj, allp), repeats)
  t_fe = _best(lambda: scores.forgetting_events(cj, allp), repeats)
  t_both = _best(lambda: (scores.first_learned(cj, allp),
                          scores.forgetting_events(cj, allp)), repeats)
  t_all = _best(lambda: scores.member_scores(cj, vj, vj, window, allp),
                repeats)
  cols = max(1, min(n, 2_000_000 // (m * p)))
  t_py = _once(lambda: py_first_learned_and_forgetting(c, cols)) * n / cols
  py_first, py_events = py_first_learned_and_forgetting(c, min(cols, 200))
  assert np.array_equal(py_first, ref_first[:, :min(cols, 200)])
  assert np.array_equal(py_events, ref_events[:, :min(cols, 200)])
  t_np = _best(lambda: np_first_learned_and_forgetting(c), repeats)
  _row('first_learned + forgetting', t_both, t_py,
       f'python loops (extrap. x{n / cols:.0f})')
  _row('first_learned + forgetting', t_both, t_np, 'numpy vectorized')
  print(f'  first_learned alone                jax {t_fl:9.4f} s')
  print(f'  forgetting_events alone            jax {t_fe:9.4f} s')
  print(f'  all 7 probe scores (member_scores) jax {t_all:9.4f} s')


def bench_agreement(cfg: dict[str, int], repeats: int, rng) -> None:
  m, n = cfg['agree_members'], cfg['examples']
  print(f'Agreement: {m} members x {n} examples ({m * (m - 1) // 2} pairs)')
  base = rng.random(n)
  easiness = np.round(np.clip(base + 0.5 * rng.random((m, n)), 0, 1) * 40
                      ) / 40  # Discrete, like real easiness: many ties.
  easiness = easiness.astype(np.float32)
  ej = jnp.asarray(easiness)
  k = n // 10
  easy = sets.top_k_mask(ej, k)
  easy_np = np.asarray(easy)
  t_sets = _best(lambda: sets.top_k_mask(ej, k), repeats)
  t_ov = _best(lambda: agreement.overlap_matrix(easy, easy), repeats)
  t_sp = _best(lambda: agreement.spearman_matrix(ej), repeats)
  got = np.asarray(agreement.spearman_matrix(ej))

  def py_pairs(fn, limit):
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    sel = pairs[:limit]
    secs = _once(lambda: [fn(i, j) for i, j in sel])
    return secs * len(pairs) / len(sel), len(pairs) / len(sel)

  t_py_ov, f_ov = py_pairs(
      lambda i, j: len(set(np.flatnonzero(easy_np[i]).tolist())
                       & set(np.flatnonzero(easy_np[j]).tolist())), 500)
  t_py_sp, f_sp = py_pairs(
      lambda i, j: stats.spearmanr(easiness[i], easiness[j]).statistic, 40)
  np.testing.assert_allclose(
      got[0, 1], stats.spearmanr(easiness[0], easiness[1]).statistic,
      atol=1e-5)

  def np_spearman():
    r = stats.rankdata(easiness, axis=1)
    return np.corrcoef(r)

  t_np_sp = _best(np_spearman, repeats)
  ef = easy_np.astype(np.float32)
  t_np_ov = _best(lambda: ef @ ef.T, repeats)
  _row('easy-set overlap matrix', t_ov, t_py_ov,
       f'python sets (extrap. x{f_ov:.0f})')
  _row('easy-set overlap matrix', t_ov, t_np_ov, 'numpy matmul')
  _row('spearman matrix', t_sp, t_py_sp,
       f'scipy.spearmanr/pair (x{f_sp:.0f})')
  _row('spearman matrix', t_sp, t_np_sp, 'rankdata + np.corrcoef')
  print(f'  top-k sets for {m} members          jax {t_sets:9.4f} s')


def bench_distances(cfg: dict[str, int], repeats: int, rng) -> None:
  n, k, d = cfg['images'], cfg['set_size'], cfg['dim']
  print(f'Within-set distances: {k} of {n} examples x {d} values (uint8)')
  x = rng.integers(0, 256, (n, d), dtype=np.uint8)
  idx = np.sort(rng.choice(n, k, replace=False)).astype(np.int32)
  xj, ij, vj = jnp.asarray(x), jnp.asarray(idx), jnp.ones((k,), bool)
  for metric in ('l2', 'cosine'):
    t = _best(lambda: similarity.mean_pairwise_distance(
        xj, ij, vj, metric=metric), repeats)
    got = float(similarity.mean_pairwise_distance(xj, ij, vj, metric=metric))
    xs = x[idx].astype(np.float64) / 255.0
    rows = max(1, min(k, 100))

    def py_rows():
      total = 0.0
      for i in range(rows):
        diff = xs - xs[i]
        if metric == 'l2':
          dist = np.sqrt(np.sum(diff * diff, axis=1))
        else:
          dist = 1.0 - (xs @ xs[i]) / (np.linalg.norm(xs, axis=1)
                                        * np.linalg.norm(xs[i]))
        total += dist.sum()
      return total

    t_py = _once(py_rows) * k / rows
    sub = min(k, 1000)
    name = 'euclidean' if metric == 'l2' else 'cosine'
    t_pd = _once(lambda: distance.pdist(xs[:sub], name)) * (k / sub) ** 2
    ref = distance.pdist(xs[:sub], name).mean()
    sub_got = float(similarity.mean_pairwise_distance(
        xj, ij[:sub], vj[:sub], metric=metric))
    assert abs(sub_got - ref) <= 1e-4 * abs(ref), (sub_got, ref)
    _row(f'mean pairwise {metric} ({got:.4f})', t, t_py,
         f'numpy row loop (x{k / rows:.0f})')
    _row(f'mean pairwise {metric}', t, t_pd,
         f'scipy pdist (x{(k / sub) ** 2:.0f})')


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='small sizes')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--only', choices=('scores', 'agreement', 'distances'))
  args = parser.parse_args(argv)
  cfg = QUICK if args.quick else FULL
  load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}, '
        f'{os.cpu_count()} CPUs, load average {load:.1f}; '
        f'{"quick" if args.quick else "full"} sizes')
  rng = np.random.default_rng(0)
  for name, fn in (('scores', bench_scores), ('agreement', bench_agreement),
                   ('distances', bench_distances)):
    if args.only in (None, name):
      fn(cfg, args.repeats, rng)


if __name__ == '__main__':
  main()
