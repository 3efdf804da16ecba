"""Per-example scores from records: easiness and learning-dynamics statistics.

Every score is first computed per member ([members, examples]) by a jitted
kernel, then averaged over members (all members, or the members of one
architecture). Probes are chosen by a boolean mask over the probe axis, built
from a window in epochs by :func:`window_mask`; the mask is a traced argument,
so changing the window never recompiles.

===================  =======  ======  =====================================
score                easy at  window  definition (per member, then the mean
                                      over members)
===================  =======  ======  =====================================
easiness             high     window  fraction of probes correct: the
                                      paper's easiness, the fraction of
                                      (member, probe) pairs correct
easiness/<arch>      high     window  the same over one arch's members
cumulative_accuracy  high     dynam.  fraction of probes correct
first_learned        low      dynam.  index (among the window's probes) of
                                      the first probe from which the
                                      example stays correct; P_w ("never")
                                      when the last probe is wrong
forgetting_events    low      dynam.  correct -> wrong transitions between
                                      consecutive probes (Toneva et al.
                                      2019); a never-correct example counts
                                      P_w, above any real count (at most
                                      P_w // 2): their "infinitely
                                      forgettable"
never_learned        low      dynam.  1 if never correct, else 0 (so: the
                                      fraction of members)
el2n                 low      window  mean ||softmax - onehot||_2 (Paul et
                                      al. 2021); NaN for fused records
aum                  high     window  mean margin, true logit minus the
                                      largest other (Pleiss et al. 2020)
confidence           high     dynam.  mean p(true) (dataset cartography,
                                      Swayamdipta et al. 2020)
variability          neither  dynam.  population std of p(true) over
                                      probes; high = ambiguous, not hard
===================  =======  ======  =====================================

"window" is ``config.analysis.window`` (default epochs (0, 1]) and "dynam."
``config.analysis.dynamics_window`` (default every probe after training
starts). P_w is the number of probes in the window.
"""

from __future__ import annotations

import functools
import types
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

HIGHER_IS_EASIER = 'higher_is_easier'
HIGHER_IS_HARDER = 'higher_is_harder'
NEITHER = 'neither'

#: Which end of each score is easy. Per-architecture columns are named
#: ``'<score>/<arch>'`` and share the orientation of ``<score>``.
SCORE_ORIENTATION: dict[str, str] = {
    'easiness': HIGHER_IS_EASIER,
    'cumulative_accuracy': HIGHER_IS_EASIER,
    'first_learned': HIGHER_IS_HARDER,
    'forgetting_events': HIGHER_IS_HARDER,
    'never_learned': HIGHER_IS_HARDER,
    'el2n': HIGHER_IS_HARDER,
    'aum': HIGHER_IS_EASIER,
    'confidence': HIGHER_IS_EASIER,
    'variability': NEITHER,
}
SCORE_NAMES = tuple(SCORE_ORIENTATION)


def orientation(name: str) -> str:
  """Returns the orientation of a score name (``'easiness/vgg16'`` included)."""
  base = name.split('/', 1)[0]
  if base not in SCORE_ORIENTATION:
    raise KeyError(f'Unknown score {name!r}; known: {SCORE_NAMES}')
  return SCORE_ORIENTATION[base]


def easier_key(values: Any, name: str) -> Any:
  """Orients a score so that higher means easier (negates hard-oriented ones).

  Args:
    values: the score (numpy or jax array).
    name: its name in :data:`SCORE_ORIENTATION`.

  Returns:
    ``values`` or ``-values``.

  Raises:
    ValueError: for a score with no easy end (``variability``).
  """
  o = orientation(name)
  if o == NEITHER:
    raise ValueError(f'Score {name!r} has no easy or hard end '
                     '(high variability means ambiguous); pick another score.')
  return values if o == HIGHER_IS_EASIER else -values


def window_mask(probe_epochs: Sequence[float] | np.ndarray,
                window: Sequence[float]) -> np.ndarray:
  """Selects the probes inside a window of epochs.

  Args:
    probe_epochs: float [P], the epoch of each probe (``Records.probe_epochs``).
    window: ``(lo, hi)``; a probe is selected iff ``lo < epoch <= hi``
      (``hi`` may be ``inf``).

  Returns:
    bool [P].

  Raises:
    ValueError: when the window is malformed or selects no probe.
  """
  epochs = np.asarray(probe_epochs, np.float64)
  if len(window) != 2 or not window[0] < window[1]:
    raise ValueError(f'A window is (lo, hi) with lo < hi, got {tuple(window)}')
  lo, hi = float(window[0]), float(window[1])
  # Probe epochs are step / steps_per_epoch; tolerate rounding at the edges.
  eps = 1e-9
  mask = (epochs > lo + eps) & (epochs <= hi + eps)
  if not mask.any():
    raise ValueError(
        f'The window ({lo}, {hi}] epochs selects none of the {epochs.size} '
        f'probes (at epochs {np.round(epochs, 4).tolist()}). Widen '
        'config.analysis.window / dynamics_window or probe more often.')
  return mask


def arch_groups(archs: Sequence[str]) -> tuple[list[str], np.ndarray]:
  """Groups members by architecture, in order of first appearance.

  Args:
    archs: the architecture of each member (``Records.archs``).

  Returns:
    (names [G], group id int32 [M]).
  """
  names: list[str] = []
  for a in archs:
    if a not in names:
      names.append(a)
  return names, np.asarray([names.index(a) for a in archs], np.int32)


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


@jax.jit
def member_scores(correct: jax.Array, margin: jax.Array, p_true: jax.Array,
                  el2n: jax.Array, window: jax.Array,
                  dynamics: jax.Array) -> dict[str, jax.Array]:
  """Every score of the module table, per member, in one pass over probes.

  Args:
    correct: bool [M, P, N].
    margin: float [M, P, N].
    p_true: float [M, P, N].
    el2n: float [M, P, N].
    window: bool [P], the probes of the easiness window.
    dynamics: bool [P], the probes of the dynamics window.

  Returns:
    {score name: float32 [M, N]} for every name in :data:`SCORE_NAMES`.
  """
  wmask, dmask = window.astype(bool), dynamics.astype(bool)
  f32, i32 = (_zeros(correct, jnp.float32), _zeros(correct, jnp.int32))
  both = jnp.stack([wmask, dmask], axis=1)  # [P, 2]: one loop for both.

  def step(valid, s, carry):
    w, d = valid[0], valid[1]
    win_hits, el2n_sum, aum_sum, dyn_hits, first, forget, moments = carry
    return (_hits_step(w, s['c'], win_hits),
            _sum_step(w, s['el2n'], el2n_sum),
            _sum_step(w, s['margin'], aum_sum),
            _hits_step(d, s['c'], dyn_hits),
            _first_step(d, s['c'], first),
            _forget_step(d, s['c'], forget),
            _moments_step(d, s['p_true'], moments))

  init = (i32, f32, f32, i32, (jnp.int32(0), i32),
          (_zeros(correct, bool), jnp.bool_(False), i32,
           _zeros(correct, bool)),
          (jnp.float32(0.0), f32, f32))
  arrays = {'c': correct, 'margin': margin, 'p_true': p_true, 'el2n': el2n}
  (win_hits, el2n_sum, aum_sum, dyn_hits, (n_dyn, last_wrong),
   (_, _, events, ever), (_, conf, m2)) = _probe_loop(arrays, both, step,
                                                       init)
  n_win = _count(wmask).astype(jnp.float32)
  n_dyn_f = n_dyn.astype(jnp.float32)
  never = ~ever
  return {
      'easiness': win_hits.astype(jnp.float32) / n_win,
      'cumulative_accuracy': dyn_hits.astype(jnp.float32) / n_dyn_f,
      'first_learned': last_wrong.astype(jnp.float32),
      'forgetting_events': jnp.where(never, n_dyn, events).astype(jnp.float32),
      'never_learned': never.astype(jnp.float32),
      'el2n': el2n_sum / n_win,
      'aum': aum_sum / n_win,
      'confidence': conf,
      'variability': jnp.sqrt(m2 / n_dyn_f),
  }


@functools.partial(jax.jit, static_argnames='num_groups')
def group_mean(member_values: jax.Array, group_ids: jax.Array, *,
               num_groups: int) -> jax.Array:
  """Mean over the members of each group as one matmul.

  Args:
    member_values: float [M, N].
    group_ids: int32 [M], the group of each member.
    num_groups: G.

  Returns:
    float32 [G, N]; NaN for a group without members.
  """
  onehot = (group_ids[None, :] == jnp.arange(num_groups)[:, None]).astype(
      jnp.float32)
  onehot = onehot / jnp.sum(onehot, axis=1, keepdims=True)
  return jnp.matmul(onehot, member_values.astype(jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)


def compute_scores(records: Any, window: Sequence[float] = (0.0, 1.0),
                   dynamics_window: Sequence[float] = (0.0, float('inf'))
                   ) -> dict[str, Any]:
  """Scores of every example of a split.

  Args:
    records: a ``records.Records`` (or any object with its fields).
    window: epochs (lo, hi] of easiness, EL2N and AUM.
    dynamics_window: epochs (lo, hi] of the learning-dynamics scores.

  Returns:
    A dict with ``'example'`` ({name: float32 [N]}, per-architecture
    easiness included as ``'easiness/<arch>'``), ``'member'`` ({name:
    float32 [M, N]}), ``'arch'`` ({name: float32 [G, N]}), ``'archs'`` (G
    names), ``'group_ids'`` (int32 [M]) and the two probe masks.
  """
  wmask = window_mask(records.probe_epochs, window)
  dmask = window_mask(records.probe_epochs, dynamics_window)
  per_member = member_scores(
      jnp.asarray(records.correct), jnp.asarray(records.margin),
      jnp.asarray(records.p_true), jnp.asarray(records.el2n),
      jnp.asarray(wmask), jnp.asarray(dmask))
  names, gids = arch_groups(records.archs)
  example, arch = {}, {}
  for k, v in per_member.items():
    example[k] = np.asarray(jnp.mean(v, axis=0))
    arch[k] = np.asarray(group_mean(v, jnp.asarray(gids),
                                    num_groups=len(names)))
  for gi, a in enumerate(names):
    example[f'easiness/{a}'] = arch['easiness'][gi]
  return {'example': example,
          'member': {k: np.asarray(v) for k, v in per_member.items()},
          'arch': arch, 'archs': names, 'group_ids': gids,
          'window_mask': wmask, 'dynamics_mask': dmask}


def scores_from_arrays(correct: np.ndarray, **kwargs: Any) -> dict[str, Any]:
  """Convenience for arrays without a Records: fills missing fields with NaN.

  Args:
    correct: bool [M, P, N].
    **kwargs: optional ``margin``, ``p_true``, ``el2n`` [M, P, N],
      ``probe_epochs`` [P] (default 1..P), ``archs`` (default one arch),
      ``window`` and ``dynamics_window`` (defaults: every probe).

  Returns:
    As :func:`compute_scores`.
  """
  correct = np.asarray(correct, bool)
  m, p, _ = correct.shape
  nan = np.full(correct.shape, np.nan, np.float32)
  r = types.SimpleNamespace(correct=correct)
  for f in ('margin', 'p_true', 'el2n'):
    setattr(r, f, np.asarray(kwargs.get(f, nan), np.float32))
  r.probe_epochs = np.asarray(kwargs.get('probe_epochs',
                                         np.arange(1, p + 1)), np.float64)
  r.archs = list(kwargs.get('archs', ['model'] * m))
  every = (float(r.probe_epochs.min()) - 1.0, float('inf'))
  return compute_scores(r, kwargs.get('window', every),
                        kwargs.get('dynamics_window', every))
