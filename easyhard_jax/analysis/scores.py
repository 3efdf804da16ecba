"""Per-example scores from records: easiness and learning-dynamics statistics.

Every score is first computed per member ([members, examples]) by a jitted
kernel, then averaged over members (all members, or the members of one
architecture). Two record sources feed them:

* **probe** records (eval mode, no augmentation, at the probe schedule:
  several probes in epoch 1, then one per epoch). Probes are chosen by a
  boolean mask over the probe axis, built from a window in epochs by
  :func:`window_mask`; the mask is a traced argument, so changing the window
  never recompiles.
* **fused** records (the training forward pass of every epoch, one record per
  epoch, NaN where an example was not presented): the scores whose authors
  define them over training presentations. Every epoch counts once.

=======================  =====  ======  =====================================
score                    easy   source  definition (per member, then the
                         at             mean over members)
=======================  =====  ======  =====================================
easiness                 high   probe   fraction of window probes correct:
                                window  the paper's easiness, the fraction of
                                        (member, probe) pairs correct
easiness/<arch>          high   probe   the same over one arch's members
cumulative_accuracy      high   probe   fraction of probes correct (per
                                dynam.  probe: epoch 1's extra probes count)
first_learned            low    probe   epoch of the first probe from which
                                dynam.  the example stays correct to the
                                        last probe; still wrong at the last
                                        probe: last probe's epoch + 1
probe_forgetting_events  low    probe   correct -> wrong transitions between
                                dynam.  consecutive probes; never correct:
                                        P_w, above any real count
never_learned            low    probe   1 if never correct, else 0 (so: the
                                dynam.  fraction of members)
el2n                     low    probe   mean ||softmax - onehot||_2 (Paul et
                                window  al. 2021); NaN for fused records
early_margin             high   probe   mean eval margin (true logit minus
                                window  the largest other) over the window
forgetting_events        low    fused   Toneva et al. 2019: correct -> wrong
                                        transitions between consecutive
                                        presentations; never correct at any
                                        presentation: E, the number of epochs
                                        (the authors' convention)
aum                      high   fused   Pleiss et al. 2020: assigned logit
                                        minus the largest other, averaged
                                        over every presentation
confidence               high   fused   Swayamdipta et al. 2020: mean p(true)
                                        over epochs
variability              neither fused  population std of p(true) over
                                        epochs; high = ambiguous, not hard
correctness              high   fused   fraction of epochs predicted correct
label_issue              low    probe   mean over the (member, probe) pairs
                                label-  of p(agreed class) on pairs
                                issues  predicting it, minus p(given label);
                                window  agreed = the most frequent other
                                        class (label_issues.py); over all
                                        members, not a per-member mean
grand/<arch>             low    checkp. Paul et al. 2021: loss-gradient
                                window  norm at the window's end, mean over
                                end     that arch's members (seeds)
grand                    low    checkp. mean over archs of each arch's
                                window  grand/<arch> rank / N (norms differ
                                end     by arch); one arch: its grand/<arch>
=======================  =====  ======  =====================================

"window" is ``config.analysis.window`` (default epochs (0, 1]) and "dynam."
``config.analysis.dynamics_window`` (default every probe after training
starts). P_w is the number of probes in the window, E the number of fused
epochs. A fused score is NaN for an example a member never saw (a subset
run), and the fused scores exist for the train split only.
"""

from __future__ import annotations

import functools
import types
from typing import Any, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from easyhard_jax.storage import records as records_lib
from easyhard_jax.analysis import score_kernels

HIGHER_IS_EASIER = 'higher_is_easier'
HIGHER_IS_HARDER = 'higher_is_harder'
NEITHER = 'neither'

#: Which end of each score is easy. Per-architecture columns are named
#: ``'<score>/<arch>'`` and share the orientation of ``<score>``.
SCORE_ORIENTATION: dict[str, str] = {
    # From probe records (clean eval-mode measurements).
    'easiness': HIGHER_IS_EASIER,
    'cumulative_accuracy': HIGHER_IS_EASIER,
    'first_learned': HIGHER_IS_HARDER,
    'probe_forgetting_events': HIGHER_IS_HARDER,
    'never_learned': HIGHER_IS_HARDER,
    'el2n': HIGHER_IS_HARDER,
    'early_margin': HIGHER_IS_EASIER,
    # From fused records (training passes, one per epoch), as their authors
    # define them.
    'forgetting_events': HIGHER_IS_HARDER,
    'aum': HIGHER_IS_EASIER,
    'confidence': HIGHER_IS_EASIER,
    'variability': NEITHER,
    'correctness': HIGHER_IS_EASIER,
    # From the members' predicted classes together (analysis/label_issues.py).
    'label_issue': HIGHER_IS_HARDER,
    # From the kept checkpoints, when --mode=checkpoint_probes ran: GraNd
    # (Paul et al. 2021) at the window's end, the expectation over one
    # architecture's members ('grand/<arch>'); 'grand' combines them by
    # rank (combine_by_rank), or is that expectation with one architecture.
    'grand': HIGHER_IS_HARDER,
}
SCORE_NAMES = tuple(SCORE_ORIENTATION)
#: Scores of the training passes (fused records; train split only).
FUSED_SCORE_NAMES = ('forgetting_events', 'aum', 'confidence', 'variability',
                     'correctness')
#: Scores of every member's predictions together, not a mean over members.
ENSEMBLE_SCORE_NAMES = ('label_issue',)
#: Scores computed from the kept checkpoints (score_store.py), if present.
CHECKPOINT_SCORE_NAMES = ('grand',)
PROBE_SCORE_NAMES = tuple(
    n for n in SCORE_NAMES
    if n not in FUSED_SCORE_NAMES + ENSEMBLE_SCORE_NAMES +
    CHECKPOINT_SCORE_NAMES)
#: Where each score comes from, for tables ('probe', 'fused', 'checkpoint').
SCORE_SOURCE = {n: 'fused' if n in FUSED_SCORE_NAMES else
                'checkpoint' if n in CHECKPOINT_SCORE_NAMES else 'probe'
                for n in SCORE_NAMES}


def combine_by_rank(per_arch: Mapping[str, Any]) -> np.ndarray:
  """One score from several architectures' scores on their own scales.

  Each architecture's values are ranked (ties share their mean rank, NaNs
  left out and kept NaN) and divided by its count of finite values, so every
  architecture spans (0, 1] whatever its units; the result is the mean of
  these normalized ranks over the architectures with a value (NaN where
  none has one). With one architecture its values are returned as they are.
  Ranks keep the orientation (a higher raw value ranks higher).

  Args:
    per_arch: {arch: float [N]}.

  Returns:
    float32 [N].
  """
  cols = [np.asarray(v, np.float64) for v in per_arch.values()]
  if len(cols) == 1:
    return cols[0].astype(np.float32)
  ranks = np.full((len(cols), cols[0].shape[0]), np.nan)
  for row, v in zip(ranks, cols):
    ok = np.isfinite(v)
    if ok.any():
      row[ok] = stats.rankdata(v[ok]) / ok.sum()
  have = np.isfinite(ranks)
  total = np.where(have, ranks, 0.0).sum(0)
  count = have.sum(0)
  return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(
      np.float32)


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


# The kernels (jitted, per member) live in score_kernels; re-exported here.
member_accuracy = score_kernels.member_accuracy
window_mean = score_kernels.window_mean
window_std = score_kernels.window_std
first_learned = score_kernels.first_learned
forgetting_events = score_kernels.forgetting_events
member_scores = score_kernels.member_scores
fused_member_scores = score_kernels.fused_member_scores
presented_mask = score_kernels.presented_mask


@functools.partial(jax.jit, static_argnames='num_groups')
def group_mean(member_values: jax.Array, group_ids: jax.Array, *,
               num_groups: int) -> jax.Array:
  """Mean over the members of each group, each ignoring its own NaNs.

  A masked mean per group: a NaN of one member drops that member from its
  own group's mean at that example only, never touching another group (a
  0/1-weight matmul would spread it: 0 * NaN = NaN).

  Args:
    member_values: float [M, N].
    group_ids: int32 [M], the group of each member.
    num_groups: G.

  Returns:
    float32 [G, N]; NaN where a group has no member (or only NaNs) there.
  """
  v = member_values.astype(jnp.float32)
  onehot = (group_ids[None, :] == jnp.arange(num_groups)[:, None]).astype(
      jnp.float32)  # [G, M]
  present = ~jnp.isnan(v)
  hi = jax.lax.Precision.HIGHEST
  total = jnp.matmul(onehot, jnp.where(present, v, 0.0), precision=hi)
  count = jnp.matmul(onehot, present.astype(jnp.float32), precision=hi)
  return jnp.where(count > 0, total / jnp.maximum(count, 1.0), jnp.nan)


def _check_fused(records: Any, fused: Any) -> None:
  m, _, n = np.shape(records.correct)
  fm, _, fn = np.shape(fused.correct)
  if (fm, fn) != (m, n):
    raise ValueError(f'Fused records are [{fm}, *, {fn}] but the probe '
                     f'records are [{m}, *, {n}]: they must be one study.')
  names = [x.get('name') for x in records.members]
  if [x.get('name') for x in fused.members] != names:
    raise ValueError('Fused and probe records hold different members; load '
                     'both from one workdir with the same archs.')


def compute_scores(records: Any, window: Sequence[float] = (0.0, 1.0),
                   dynamics_window: Sequence[float] = (0.0, float('inf')),
                   fused: Any = None) -> dict[str, Any]:
  """Scores of every example of a split.

  Args:
    records: a ``records.Records`` (or any object with its fields).
    window: epochs (lo, hi] of easiness, EL2N and the early margin.
    dynamics_window: epochs (lo, hi] of the probe learning-dynamics scores.
    fused: the same members' fused (training-pass) ``Records``, or None. With
      them the result also holds :data:`FUSED_SCORE_NAMES` (every epoch,
      once); without them those names are absent.

  Returns:
    A dict with ``'example'`` ({name: float32 [N]}, per-architecture
    easiness included as ``'easiness/<arch>'``), ``'member'`` ({name:
    float32 [M, N]}), ``'arch'`` ({name: float32 [G, N]}), ``'archs'`` (G
    names), ``'group_ids'`` (int32 [M]), the two probe masks and
    ``'fused_epochs'`` (float64 [E], or None).
  """
  wmask = window_mask(records.probe_epochs, window)
  dmask = window_mask(records.probe_epochs, dynamics_window)
  per_member = member_scores(
      jnp.asarray(records.correct), jnp.asarray(records.margin),
      jnp.asarray(records.el2n), jnp.asarray(wmask), jnp.asarray(dmask),
      probe_epochs=jnp.asarray(np.asarray(records.probe_epochs, np.float32)))
  fused_epochs = None
  if fused is not None:
    _check_fused(records, fused)
    per_member.update(fused_member_scores(
        jnp.asarray(fused.correct), jnp.asarray(fused.margin),
        jnp.asarray(fused.p_true), jnp.asarray(presented_mask(fused))))
    fused_epochs = np.asarray(fused.probe_epochs, np.float64)
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
          'window_mask': wmask, 'dynamics_mask': dmask,
          'fused_epochs': fused_epochs}


def load_fused(workdir: str, records: Any) -> Any:
  """The fused train records of the members of ``records``, or None.

  Args:
    workdir: the study workdir.
    records: train records loaded from it (probe or fused).

  Returns:
    fused ``records.Records`` with the same members, or None when the
    workdir holds none (e.g. records made by --mode=checkpoint_probes).
  """
  if getattr(records, 'source', None) == 'fused':
    return records
  try:
    fused = records_lib.load(workdir, 'train', source='fused',
                             archs=list(dict.fromkeys(records.archs)))
  except FileNotFoundError:
    return None
  if [m.get('name') for m in fused.members] != [
      m.get('name') for m in records.members]:
    logging.warning('Fused records hold other members than the %s records; '
                    'no training-pass scores.', records.source)
    return None
  return fused


def study_scores(workdir: str, analysis_config: Any,
                 split: str = 'train', archs: Sequence[str] | None = None,
                 window_scale: float = 1.0) -> dict[str, Any]:
  """:func:`compute_scores` of a workdir's records, fused scores included.

  Args:
    workdir: a workdir with records.
    analysis_config: ``config.analysis`` (source, window, dynamics_window).
    split: 'train' or 'test' (the test split has no fused scores).
    archs: the record groups to load (default: all finished ones).
    window_scale: stretches the easiness window (a run with other epochs).

  Returns:
    As :func:`compute_scores`.
  """
  source = analysis_config.source if split == 'train' else 'probe'
  rec = records_lib.load(workdir, split, source=source, archs=archs)
  fused = None
  if split == 'train' and analysis_config.get('fused_scores', True):
    if archs is None:
      fused = load_fused(workdir, rec)
    else:
      try:
        fused = records_lib.load(workdir, 'train', 'fused', archs=archs)
      except FileNotFoundError:
        fused = None
  window = tuple(w * window_scale for w in analysis_config.window)
  return compute_scores(rec, window, analysis_config.dynamics_window,
                        fused=fused)


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
