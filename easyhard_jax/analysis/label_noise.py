"""Known label errors, and how well every score finds them.

With known label errors (``config.analysis.known_noisy``, clean labels that
differ from the given ones, or the flips of ``config.label_noise``)
:func:`detection_report` gives every score's AUROC and precision at k (k =
number of known errors), each score oriented so that harder = more suspect.
:func:`same_window_scores` recomputes every score on the same records at
one window (the label-issue window), so that the scores compete on equal
evidence (launch/label_noise_table.py tabulates them over noise seeds).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from easyhard_jax.analysis import scores as scores_lib


def read_indices(path: str, num_examples: int) -> np.ndarray:
  """Example indices from a .npy, .txt or .csv file (sorted, unique).

  A .csv holds one index per row in its ``example_index`` or ``index``
  column (or its first column), with or without a header; a .txt holds
  whitespace-separated integers.
  """
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'config.analysis.known_noisy: {path} does not '
                            'exist.')
  if path.endswith('.npy'):
    values = np.load(path, allow_pickle=False).ravel()
  elif path.endswith('.csv'):
    with open(path, newline='') as f:
      rows = [r for r in csv.reader(f) if r]
    col = 0
    if rows and not rows[0][0].strip().lstrip('-').isdigit():
      head = [h.strip() for h in rows.pop(0)]
      col = next((head.index(h) for h in ('example_index', 'index')
                  if h in head), 0)
    values = np.asarray([r[col] for r in rows], np.float64)
  else:
    with open(path) as f:
      values = np.asarray(f.read().split(), np.float64)
  values = np.asarray(values)
  if values.size and (np.any(values != np.round(values)) or
                      values.min() < 0 or values.max() >= num_examples):
    raise ValueError(f'{path} must hold integer train example indices in '
                     f'0..{num_examples - 1}.')
  return np.unique(values.astype(np.int64))


def known_noisy(config: Any, num_examples: int,
                clean_labels: np.ndarray | None = None,
                given_labels: np.ndarray | None = None
                ) -> tuple[np.ndarray | None, str]:
  """(known mislabelled train indices or None, where they come from).

  In order: ``config.analysis.known_noisy`` (a file) when set; else, with
  ``config.train_labels`` (a labels file such as CIFAR-10N's), the positions
  where its labels differ from the dataset's own; else, with both label
  arrays, the positions where the given labels differ from the clean ones
  (whatever set the given labels); else, with
  ``config.label_noise.fraction > 0``, the flipped indices, recomputed from
  the config by the function that flipped them.

  Args:
    config: the study config.
    num_examples: N, the train examples.
    clean_labels: optional int [N], the clean labels, where known.
    given_labels: optional int [N], the labels the members trained on.
  """
  from easyhard_jax.data import sources  # Data only, never train/.
  path = config.analysis.get('known_noisy', '')
  if path:
    return read_indices(path, num_examples), path
  if config.get('train_labels'):
    return (np.asarray(sources.train_label_errors(config, num_examples),
                       np.int64),
            f'config.train_labels ({config.train_labels}) against the '
            "dataset's labels")
  if clean_labels is not None and given_labels is not None:
    clean = np.asarray(clean_labels).ravel()
    given = np.asarray(given_labels).ravel()
    if clean.shape != (num_examples,) or given.shape != (num_examples,):
      raise ValueError(f'Clean and given labels must hold {num_examples} '
                       f'train labels each, got {clean.shape} and '
                       f'{given.shape}.')
    return (np.flatnonzero(clean != given).astype(np.int64),
            'given labels that differ from the clean ones')
  fraction = sources.label_noise_fraction(config)
  if fraction > 0:
    seed = int(config.label_noise.seed)
    return (sources.label_noise_indices(num_examples, fraction, seed),
            f'config.label_noise (fraction {fraction}, seed {seed})')
  return None, 'none'


def auroc(hardness: np.ndarray, positive: np.ndarray) -> float:
  """P(a positive is harder than a negative); ties count one half.

  The Mann-Whitney U statistic of the positives over ``p * q``, from
  midranks (``scipy.stats.rankdata``); NaN hardness ranks below every value.
  The one AUROC of the project: label-error detection, the comparison with
  a reference (--mode=compare) and the held-out judgement use it.

  Args:
    hardness: float [n], higher = harder (more suspect).
    positive: bool [n].

  Returns:
    The AUROC in [0, 1]; NaN when there is no positive or no negative (an
    empty class, or a class wholly inside a tail), which the JSON outputs
    write as null.
  """
  h = np.asarray(hardness, np.float64)
  h = np.where(np.isnan(h), -np.inf, h)
  pos = np.asarray(positive, bool)
  n_pos, n_neg = int(pos.sum()), int((~pos).sum())
  if not n_pos or not n_neg:
    return float('nan')
  ranks = stats.rankdata(h)  # Midranks: tied values share their mean rank.
  return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) /
               (n_pos * n_neg))


def precision_at_k(hardness: np.ndarray, positive: np.ndarray,
                   k: int) -> float:
  """Share of positives among the k hardest, ties at the cut shared.

  Examples tied with the k-th hardest count in proportion (the expected
  precision under a random order of the tie), so the result does not
  depend on how ties are broken. NaN hardness ranks below everything.
  """
  h = np.asarray(hardness, np.float64)
  h = np.where(np.isnan(h), -np.inf, h)
  pos = np.asarray(positive, bool)
  if k <= 0 or k > h.size:
    return float('nan')
  cut = np.sort(h)[::-1][k - 1]
  above, tied = h > cut, h == cut
  need = k - int(above.sum())
  hits = pos[above].sum() + need * pos[tied].sum() / tied.sum()
  return float(hits / k)


def detection_report(example: Mapping[str, np.ndarray],
                     noisy: np.ndarray, num_examples: int,
                     source: str) -> dict[str, Any]:
  """AUROC and precision at k of every score for the known label errors.

  Args:
    example: {score name: [N]} (the analysis's per-example scores).
    noisy: int [k] known mislabelled indices.
    num_examples: N.
    source: where the indices come from (for the JSON).

  Returns:
    {'source', 'known_noisy', 'examples', 'k', 'scores': {name: {'auroc',
    'precision_at_k', 'oriented'}}}; each score is oriented harder = more
    suspect (variability, which has no hard end, is used as is).
  """
  positive = np.zeros(num_examples, bool)
  positive[np.asarray(noisy, np.int64)] = True
  k = int(positive.sum())
  out = {}
  for name in scores_lib.SCORE_NAMES:
    if name not in example:
      continue
    v = np.asarray(example[name], np.float64)
    o = scores_lib.orientation(name)
    hard = v if o == scores_lib.NEITHER else -scores_lib.easier_key(v, name)
    out[name] = {'auroc': auroc(hard, positive),
                 'precision_at_k': precision_at_k(hard, positive, k),
                 'oriented': 'raw' if o == scores_lib.NEITHER else
                             'higher_is_harder',
                 'nan_examples': int(np.isnan(v).sum())}
  return {'source': source, 'known_noisy': k, 'examples': int(num_examples),
          'k': k, 'scores': out}


def _fused_in_window(fused: Any, window: Sequence[float]) -> Any:
  """Fused records restricted to the epochs e with lo < e <= hi."""
  keep = scores_lib.window_mask(fused.probe_epochs, window)
  p = keep.size
  sliced = {}
  for f in dataclasses.fields(fused):
    v = getattr(fused, f.name)
    if isinstance(v, np.ndarray) and v.ndim == 3 and v.shape[1] == p:
      sliced[f.name] = v[:, keep]
    elif isinstance(v, np.ndarray) and v.shape == (p,):
      sliced[f.name] = v[keep]
  return dataclasses.replace(fused, **sliced)


def same_window_scores(rec: Any, fused: Any, window: Sequence[float],
                       num_classes: int) -> dict[str, np.ndarray]:
  """Every score of one split on the same records at one window.

  Args:
    rec: train probe ``Records`` (with ``pred``).
    fused: the same members' fused ``Records``, or None.
    window: epochs (lo, hi]: the probes of every probe score (its easiness
      and its dynamics window both), the training-pass epochs of every
      fused score, and the (member, probe) pairs of the label-issue score.
    num_classes: C.

  Returns:
    {name: float64 [N]}, each oriented higher = more suspect (harder):
    every score with a hard end (per-architecture columns left out),
    ``label_issue[agreed_margin, <calibration>]`` for each of
    ``label_issues.CALIBRATIONS``, ``vote_share`` (the uncalibrated
    agreement) and ``-p(given)`` (the mean p(given label) over the window's
    pairs, negated: ``label_issue`` with ``score='p_given'``).
  """
  from easyhard_jax.analysis import label_issues  # Its kernels; no cycle.
  window = tuple(float(x) for x in window)
  if fused is not None:
    fused = _fused_in_window(fused, window)
  sc = scores_lib.compute_scores(rec, window, window, fused=fused)
  hard = {}
  for name, v in sc['example'].items():
    if '/' in name or scores_lib.orientation(name) == scores_lib.NEITHER:
      continue
    hard[name] = -np.asarray(scores_lib.easier_key(
        np.asarray(v, np.float64), name))
  mask = scores_lib.window_mask(rec.probe_epochs, window)
  for cal in label_issues.CALIBRATIONS:
    li = label_issues.label_issue_scores(rec.pred, rec.margin, rec.loss,
                                         rec.labels, mask, num_classes, cal,
                                         'agreed_margin')
    hard[f'{label_issues.NAME}[agreed_margin, {cal}]'] = li['score']
    if cal == 'none':
      hard['vote_share'] = li['agreement']
      hard['-p(given)'] = -li['p_given']
  return hard
