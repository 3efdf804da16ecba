"""The study's scores against a published per-example score (--mode=compare).

``config.reference`` names a ``.npz`` or ``.csv`` file, the key (column) of
its score, the score's orientation and how its rows are ordered (``index``,
``tfds_id`` or ``original``: see :mod:`reference_order`, which puts the rows
in example-index order, through TFDS's hash order where needed).

The comparison (:func:`compare`), for every score of the analysis's score
artifact ``WORKDIR/analysis/scores_{split}.npz``
(``score_store.load_analysis_scores``: the float32 values the analysis
computed), on the examples with both values:
Spearman (average ranks for ties) over all of them and over the reference's
non-saturated part (reference strictly between its ``nonsaturated_band``
quantiles; (0, 1) = strictly inside its min and max); for each
``hard_tail_fractions`` f, the AUROC of the project's hardness for the
reference's hardest k = round(f n) examples, and the overlap of the two
hardest-k sets against hypergeometric chance, globally (k^2 / n) and
class-balanced (k_c = round(f n_c) per class, chance sum_c k_c^2 / n_c);
per class, the Spearman and AUROC within the class. The project's top-k
sets break ties by the early margin, as the analysis's sets do (for a
heavily tied score such as never_learned the tiebreak then picks most of
the set); the reference's by the lower example index. Hardness is the score
oriented so that higher is harder; ``variability`` has no hard end and gets
Spearman only (raw). Spearman's ranks compare values as float32, the AUROC's
(``label_noise.auroc``, NaN for a class with no positive or no negative:
null in the JSON, empty in the CSVs) as float64; on the analysis's float32
scores both orders are the same. Outputs:
``WORKDIR/compare/results.json``, ``results.csv`` (one row per score),
``per_class.csv`` and ``aligned.npz`` (the reference in example-index
order, NaN where it has no row).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax.numpy as jnp
import numpy as np

from easyhard_jax.storage import files
from easyhard_jax.analysis import score_store
from easyhard_jax.analysis import agreement
from easyhard_jax.analysis import label_noise
from easyhard_jax.analysis import reference_order
from easyhard_jax.analysis import scores as scores_lib
from easyhard_jax.analysis import sets as sets_lib

ORDERS = reference_order.ORDERS
ORIENTATIONS = (scores_lib.HIGHER_IS_EASIER, scores_lib.HIGHER_IS_HARDER)
_META = score_store.META_COLUMNS + score_store.SET_COLUMNS


# ----------------------------------------------------------------- metrics


def _bucket(n: int) -> int:
  """A padded length: a power of two, at least 64.

  Jitted kernels then compile once per size class, not once per class,
  subset or score.
  """
  size = max(64, 1 << (max(n, 1) - 1).bit_length())
  if size > 2 ** 23:  # float32 ranks (half-integers) are exact below this.
    raise ValueError(f'{n} examples: too many for float32 ranks.')
  return size


def _pad(x: np.ndarray, fill: Any, dtype: Any) -> np.ndarray:
  out = np.full(_bucket(x.size), fill, dtype)
  out[:x.size] = x
  return out


def _ranks(v: np.ndarray) -> np.ndarray:
  """Average ranks (ties share their mean rank) with the project's kernel.

  Values are replaced by integer codes of their float32 order (exact in
  float32 below 2^24) and padded with a larger code, which ranks after
  every real value and so leaves their ranks unchanged.
  """
  codes = np.unique(np.asarray(v, np.float32), return_inverse=True)[1]
  padded = _pad(codes, codes.max(initial=0) + 1, np.float32)
  return np.asarray(agreement.average_ranks(jnp.asarray(padded)),
                    np.float64)[:v.size]


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
  """Spearman's rho (average ranks for ties); None if either is constant."""
  if x.size < 3:
    return None
  rx, ry = _ranks(x), _ranks(y)
  rx, ry = rx - rx.mean(), ry - ry.mean()
  den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
  return float((rx * ry).sum() / den) if den > 0 else None


# The one AUROC (NaN for a class with no positive or no negative).
auroc = label_noise.auroc


def _set_overlap(a: np.ndarray, b: np.ndarray, labels: np.ndarray | None,
                 num_classes: int) -> dict[str, Any]:
  """Overlap of two sets with hypergeometric chance (global or by class).

  Padding goes into an extra class holding neither set, which adds nothing
  to the chance level or its variance; the global null is the one-class
  case of the class-stratified one (chance |A||B| / n).
  """
  n = a.size
  lab = np.zeros(n, np.int32) if labels is None else labels
  c = 1 if labels is None else num_classes
  o = agreement.overlap_matrix(
      jnp.asarray(_pad(a, False, bool)[None]),
      jnp.asarray(_pad(b, False, bool)[None]),
      jnp.asarray(_pad(lab, c, np.int32)), num_classes=c + 1)
  keys = ('intersection', 'overlap', 'chance_overlap', 'ratio', 'z')
  return {k: float(np.asarray(o[k])[0, 0]) for k in keys} | {
      'size': int(a.sum())}


def _hardest(key: np.ndarray, k: Any, tiebreak: np.ndarray | None,
             labels: np.ndarray | None, num_classes: int) -> np.ndarray:
  """The k hardest (largest key), ties by tiebreak then lower index."""
  n = key.size
  key_p = jnp.asarray(_pad(key, 0.0, np.float32))
  tb = jnp.asarray(_pad(np.zeros(n) if tiebreak is None else tiebreak, 0.0,
                        np.float32))
  valid = jnp.asarray(_pad(np.ones(n, bool), False, bool))
  if labels is None:
    m = sets_lib.top_k_mask(key_p, k, tb, valid)
  else:
    m = sets_lib.top_k_per_class_mask(
        key_p, jnp.asarray(_pad(labels, 0, np.int32)),
        jnp.asarray(k, jnp.int32), tb, valid, num_classes=num_classes)
  return np.asarray(m)[:n]


def nonsaturated_mask(ref: np.ndarray, band: Sequence[float]) -> tuple[
    np.ndarray, list[float]]:
  """Finite reference values strictly between its band quantiles."""
  lo, hi = (float(b) for b in band)
  if not 0.0 <= lo < hi <= 1.0:
    raise ValueError(f'nonsaturated_band must be 0 <= lo < hi <= 1, got '
                     f'{tuple(band)}.')
  fin = np.isfinite(ref)
  q = np.quantile(ref[fin], [lo, hi])
  with np.errstate(invalid='ignore'):
    return fin & (ref > q[0]) & (ref < q[1]), [float(q[0]), float(q[1])]


def _hardness(values: np.ndarray, name: str) -> tuple[np.ndarray, str]:
  try:
    o = scores_lib.orientation(name)
  except KeyError:
    return values, 'unknown'
  return (values, o) if o == scores_lib.NEITHER else (
      -scores_lib.easier_key(values, name), o)


def compare_one(hard: np.ndarray, ref_hard: np.ndarray, labels: np.ndarray,
                nonsat: np.ndarray, *, fractions: Sequence[float],
                num_classes: int, oriented: bool = True,
                tiebreak: np.ndarray | None = None) -> dict[str, Any]:
  """Every statistic of one score against the reference (same examples).

  Args:
    hard: float [n] project hardness (higher = harder), finite.
    ref_hard: float [n] reference hardness, finite.
    labels: int [n].
    nonsat: bool [n], the reference's non-saturated part.
    fractions: hard-tail fractions.
    num_classes: C.
    oriented: False for a score without a hard end (Spearman only).
    tiebreak: float [n] hardness breaking ties of ``hard`` in top-k sets.

  Returns:
    {'examples', 'spearman', 'spearman_null_sd', 'nonsaturated': {...},
    'tails': [...], 'per_class': [...]}.
  """
  n = hard.size
  out: dict[str, Any] = {
      'examples': int(n), 'spearman': spearman(hard, ref_hard),
      # The scale of "no relation": under independence (all n! orders
      # equally likely, no ties) Var(rho) = 1 / (n - 1) exactly, as for
      # Pearson's r of ranks; 1 / sqrt(n) is only its large-n limit.
      'spearman_null_sd': float(1.0 / np.sqrt(max(n - 1, 1))),
      'nonsaturated': {'examples': int(nonsat.sum()),
                       'spearman': spearman(hard[nonsat], ref_hard[nonsat])}}
  counts = np.bincount(labels, minlength=num_classes)
  tails, tail_masks = [], []
  for f in fractions:
    k = int(round(f * n))
    pos = _hardest(ref_hard, k, None, None, num_classes)
    tail_masks.append(pos)
    t: dict[str, Any] = {'fraction': float(f), 'k': k}
    if oriented:
      kc = np.round(f * counts).astype(np.int32)
      t['auroc'] = auroc(hard, pos)
      t['top_k'] = _set_overlap(_hardest(hard, k, tiebreak, None,
                                         num_classes), pos, None, num_classes)
      t['top_k_class_balanced'] = _set_overlap(
          _hardest(hard, kc, tiebreak, labels, num_classes),
          _hardest(ref_hard, kc, None, labels, num_classes), labels,
          num_classes)
    tails.append(t)
  out['tails'] = tails
  per_class = []
  for c in np.flatnonzero(counts):
    m = labels == c
    row = {'class': int(c), 'examples': int(m.sum()),
           'spearman': spearman(hard[m], ref_hard[m])}
    if oriented:
      row['auroc'] = [auroc(hard[m], t[m]) for t in tail_masks]
      row['tail_examples'] = [int(t[m].sum()) for t in tail_masks]
    per_class.append(row)
  out['per_class'] = per_class
  return out


def compare(table: Mapping[str, np.ndarray], ref: np.ndarray,
            orientation: str, *, fractions: Sequence[float] = (0.05, 0.1),
            band: Sequence[float] = (0.0, 1.0)) -> dict[str, Any]:
  """Compares every score column of an analysis scores table with ``ref``.

  Args:
    table: the analysis's score table of the split
      (``score_store.load_analysis_scores``).
    ref: float [N] reference in example-index order, NaN where missing.
    orientation: the reference's, one of :data:`ORIENTATIONS`.
    fractions: hard-tail fractions (AUROC positives and top-k sizes).
    band: quantile band of the non-saturated part.

  Returns:
    {'nonsaturated': {...}, 'hard_tail_fractions', 'scores': {name: ...}}.
  """
  if orientation not in ORIENTATIONS:
    raise ValueError(f'config.reference.orientation must be one of '
                     f'{ORIENTATIONS}, got {orientation!r}')
  ref_hard = ref if orientation == scores_lib.HIGHER_IS_HARDER else -ref
  labels = np.asarray(table['label'], np.int64)
  num_classes = int(labels.max()) + 1
  nonsat, bounds = nonsaturated_mask(ref, band)
  out: dict[str, Any] = {
      'nonsaturated': {'band': [float(b) for b in band], 'bounds': bounds,
                       'examples': int(nonsat.sum()),
                       'definition': 'reference strictly between these '
                                     'quantiles of itself'},
      'hard_tail_fractions': [float(f) for f in fractions], 'scores': {},
      'score_order': [k for k in table if k not in _META]}  # JSON sorts keys.
  margin = table.get('early_margin')
  for name, values in table.items():
    if name in _META:
      continue
    hard, o = _hardness(np.asarray(values, np.float64), name)
    valid = np.isfinite(hard) & np.isfinite(ref)
    if valid.sum() < 3:
      out['scores'][name] = {'orientation': o, 'skipped':
                             'fewer than 3 examples with both values'}
      continue
    tb = None
    if margin is not None and np.isfinite(margin[valid]).all():
      tb = -np.asarray(margin, np.float64)[valid]  # Hardness of early margin.
    res = compare_one(hard[valid], ref_hard[valid], labels[valid],
                      nonsat[valid], fractions=fractions,
                      num_classes=num_classes, tiebreak=tb,
                      oriented=o in ORIENTATIONS)
    out['scores'][name] = {'orientation': o} | res
  return out


# ----------------------------------------------------------------- the stage


def _shard_lengths(config: Any, split_name: str) -> Callable[[], list[int]]:
  def read():
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder(config.dataset, data_dir=config.get('data_dir'))
    return list(builder.info.splits[split_name].shard_lengths)
  return read


def _cell(v: Any) -> Any:
  """A CSV cell: an AUROC's NaN (no positive or no negative) stays empty."""
  return None if isinstance(v, float) and np.isnan(v) else v


def _rows(result: Mapping[str, Any]) -> tuple[list[dict], list[dict]]:
  """results.csv rows (one per score) and per_class.csv rows."""
  rows, per_class = [], []
  fr = result['hard_tail_fractions']
  for name, s in result['scores'].items():
    if 'skipped' in s:
      continue
    row = {'score': name, 'orientation': s['orientation'],
           'examples': s['examples'], 'spearman': s['spearman'],
           'spearman_nonsaturated': s['nonsaturated']['spearman']}
    for f, t in zip(fr, s['tails']):
      row[f'auroc_hardest_{f:g}'] = _cell(t.get('auroc'))
      for key in ('top_k', 'top_k_class_balanced'):
        row[f'{key}_ratio_{f:g}'] = (t.get(key) or {}).get('ratio')
    rows.append(row)
    for c in s['per_class']:
      pc = {'score': name, 'class': c['class'], 'examples': c['examples'],
            'spearman': c['spearman']}
      for f, a in zip(fr, c.get('auroc') or [None] * len(fr)):
        pc[f'auroc_hardest_{f:g}'] = _cell(a)
      per_class.append(pc)
  return rows, per_class


def run_compare(config: Any, workdir: str) -> dict[str, Any]:
  """--mode=compare: writes ``WORKDIR/compare`` and returns results.json.

  Args:
    config: the study config; ``config.reference`` as in configs/default.py.
    workdir: a workdir where the analysis stage has run.

  Returns:
    The dict written to ``WORKDIR/compare/results.json``.
  """
  rc = config.reference
  if not rc.path:
    raise ValueError('config.reference.path is empty: pass '
                     '--config.reference.path=/path/to/scores.npz (or .csv).')
  split = rc.get('split', 'train')
  split_name = config.get(f'{split}_split') or split
  table = score_store.load_analysis_scores(workdir, split)
  file = reference_order.read_reference(
      rc.path, rc.key, rc.tfds_id_column if rc.order == 'tfds_id' else None,
      rc.get('label_key') or None)
  ref, mapping = reference_order.map_reference(
      rc.order, file['values'], file['ids'], table['tfds_id'],
      split_name=split_name, shard_lengths=_shard_lengths(config, split_name),
      labels=file['labels'], example_labels=table['label'])
  result = compare(table, ref, rc.orientation,
                   fractions=tuple(rc.hard_tail_fractions),
                   band=tuple(rc.nonsaturated_band))
  result['reference'] = {'path': rc.path, 'key': rc.key,
                         'orientation': rc.orientation, 'split': split,
                         **mapping}
  result = files.to_jsonable(result)
  out = os.path.join(workdir, 'compare')
  if files.exists(os.path.join(out, 'results.json')):  # Written last.
    files.remove(os.path.join(out, 'results.json'))
  files.atomic_savez(os.path.join(out, 'aligned.npz'), {
      'example_index': table['example_index'], 'reference': ref,
      'label': table['label']})
  rows, per_class = _rows(result)
  if rows:
    files.atomic_write_csv(os.path.join(out, 'results.csv'), rows)
    files.atomic_write_csv(os.path.join(out, 'per_class.csv'), per_class)
  # results.json last (the runner's stamp follows it): a kill between the
  # files leaves no results.json next to another run's aligned.npz.
  files.atomic_write_json(os.path.join(out, 'results.json'), result)
  logging.info('Reference %s (%s order): %d of %d examples matched%s.',
               rc.path, rc.order, mapping['matched'], mapping['examples'],
               ''.join(f"; {k.replace('_', ' ')} {v.get('agree')} of "
                       f"{v.get('checked')} agree"
                       for k, v in mapping.items() if k.endswith('_check')
                       and v.get('checked')))
  for line in summary_lines(result):
    logging.info('%s', line)
  return result


def summary_lines(result: Mapping[str, Any]) -> list[str]:
  """A fixed-width table of the headline numbers, one line per score."""
  fr = result['hard_tail_fractions']
  lines = ['Hardness against the reference: Spearman (all examples, '
           "non-saturated part); for the reference's hardest f: AUROC, and "
           'the class-balanced top-f overlap / chance.']
  lines.append(f"{'score':<26}{'spearman':>9}{'nonsat':>8}" + ''.join(
      f"{f'auroc@{f:.0%}':>11}{f'top{f:.0%}/ch':>10}" for f in fr))
  fmt = lambda v, w: (f'{v:>{w}.3f}' if isinstance(v, (int, float)) and
                      np.isfinite(v) else f"{'-':>{w}}")
  for name, s in result['scores'].items():
    if 'skipped' in s:
      lines.append(f"{name:<26}{s['skipped']}")
      continue
    line = (f"{name:<26}{fmt(s['spearman'], 9)}"
            f"{fmt(s['nonsaturated']['spearman'], 8)}")
    for t in s['tails']:
      line += fmt(t.get('auroc'), 11) + fmt(
          (t.get('top_k_class_balanced') or {}).get('ratio'), 10)
    lines.append(line)
  return lines
