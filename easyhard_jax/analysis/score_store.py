"""The stores of per-example scores: numpy-only, no training code.

**The analysis's scores** (:func:`write_analysis_scores`,
:func:`load_analysis_scores`): the analysis stage writes every score of a
split once, as computed, into ``WORKDIR/analysis/scores_{split}.npz``
(losslessly: float32 as the kernels compute them; ``label_issue``, computed
in float64, stays float64), by example index and TFDS id, with the label and
the easy/hard sets; ``scores_{split}.csv`` beside it is the same table as
text for people (``.7g``). Every later reader (the exports and keep-lists,
the removal and compression masks, --mode=compare) reads the npz.

**After-the-fact scores**: ``checkpoint_scores.score_checkpoints`` (and
``--mode=checkpoint_probes`` for GraNd) writes one score per name as records
chunks under
``WORKDIR/checkpoint_probes/scores/{name}/records/``: a manifest (members,
checkpoint steps, fingerprint per member group) and one chunk
``{arch}/probe_{split}_{k:04d}.npz`` per checkpoint holding the array
``{name}``, float32 [members, examples] in the split's stable example order.
This module reads them (:func:`load_scores`, :func:`window_score`) without
importing JAX or train/, so the analysis can use them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import re
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from easyhard_jax.storage import files
from easyhard_jax.storage import records

_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]*')


def scores_dir(workdir: str, name: str) -> str:
  """Where the score ``name`` is stored (a records root of its own)."""
  if not _NAME.fullmatch(name):
    raise ValueError(f'A score name must be letters, digits, _ . - (a file '
                     f'name), got {name!r}.')
  return os.path.join(workdir, 'checkpoint_probes', 'scores', name)


def open_store(workdir: str, name: str, data) -> records.RecordWriter:
  """The records writer of score ``name``, with the splits' labels and ids."""
  writer = records.RecordWriter(scores_dir(workdir, name))
  writer.write_split_metadata('train', data.train_labels, data.train_ids)
  writer.write_split_metadata('test', data.test_labels, data.test_ids)
  return writer


@dataclasses.dataclass(frozen=True)
class Scores:
  """One after-the-fact score of a split.

  Attributes:
    name: the score's name.
    values: float32 [members, checkpoints, examples].
    steps: int64 [checkpoints], global train steps of the checkpoints.
    epochs: float64 [checkpoints], the same in epochs.
    members: member dicts (name, arch, seed, ...), in member order.
    labels: int32 [examples].
    example_ids: int64 [examples], the stable index 0..N-1.
    split: 'train' or 'test'.
    steps_per_epoch: train steps per epoch of the member groups.
  """
  name: str
  values: np.ndarray
  steps: np.ndarray
  epochs: np.ndarray
  members: list[dict[str, Any]]
  labels: np.ndarray
  example_ids: np.ndarray
  split: str
  steps_per_epoch: int

  def at(self, step: int) -> np.ndarray:
    """[members, examples] at checkpoint ``step``."""
    where = np.flatnonzero(self.steps == step)
    if not where.size:
      raise KeyError(f'No {self.name} at step {step}; have '
                     f'{self.steps.tolist()}.')
    return self.values[:, int(where[0])]


def load_scores(workdir: str, name: str, split: str = 'train',
                archs: Sequence[str] | None = None) -> Scores:
  """Reads a score written by checkpoint_scores.score_checkpoints (numpy only).

  Member groups are stacked in the store's order; they must share their
  checkpoint steps (the analysis checkpoints of one study do).
  """
  root = scores_dir(workdir, name)
  manifest = records.read_manifest(root)
  names = list(archs or manifest['arch_order'])
  unfinished = [a for a in names
                if not manifest['archs'].get(a, {}).get('complete')]
  if not names or unfinished:
    raise FileNotFoundError(
        f'Score {name!r} is not complete in {root} for {unfinished or names};'
        ' run checkpoint_scores.score_checkpoints (or --mode=checkpoint_probes '
        'for grand).')
  directory = records.records_dir(root)
  labels = files.np_load(os.path.join(directory, f'labels_{split}.npy'))
  values, members, steps = [], [], None
  for a in names:
    entry = manifest['archs'][a]
    chunks = entry['chunks'].get(f'probe_{split}', {})
    if len(chunks) != len(entry['schedule']):
      raise FileNotFoundError(f'Score {name!r} has no complete {split} split '
                              f'for {a!r} in {root}.')
    ordered = [chunks[str(k)] for k in range(len(chunks))]
    got = [c['step'] for c in ordered]
    if steps is not None and got != steps:
      raise ValueError(f'{a!r} was scored at steps {got}, {names[0]!r} at '
                       f'{steps}; load them one at a time (archs=[...]).')
    steps = got
    values.append(np.stack([records.read_chunk(
        os.path.join(directory, a, c['file']))[name] for c in ordered], 1))
    members.extend(entry['members'])
  spe = manifest['archs'][names[0]]['steps_per_epoch']
  steps = np.asarray(steps, np.int64)
  return Scores(name=name, values=np.concatenate(values).astype(np.float32),
                steps=steps, epochs=steps / float(spe), members=members,
                labels=labels.astype(np.int32),
                example_ids=np.arange(labels.shape[0], dtype=np.int64),
                split=split, steps_per_epoch=int(spe))


def _window_step(s: Scores, window: Sequence[float]) -> int | None:
  """The latest scored step inside the window (epochs ``(lo, hi]``)."""
  spe = s.steps_per_epoch
  lo, hi = float(window[0]) * spe, math.ceil(float(window[1]) * spe)
  inside = [int(t) for t in s.steps if lo < t <= hi]
  return max(inside) if inside else None


def _member_mean(values: np.ndarray) -> np.ndarray:
  with warnings.catch_warnings():  # All-NaN examples stay NaN.
    warnings.simplefilter('ignore', RuntimeWarning)
    return np.nanmean(values, axis=0).astype(np.float32)


def window_score(workdir: str, name: str, window: Sequence[float],
                 split: str = 'train') -> tuple[np.ndarray, int] | None:
  """(mean over members [N], step) at the easiness window's end, or None.

  The checkpoint is the latest scored one inside the window (epochs
  ``(lo, hi]``, the end rounded up to a step as the analysis checkpoints
  are). For GraNd this is the expected gradient norm over seeds (of every
  member of every architecture: see :func:`window_score_by_arch` for one
  expectation per architecture). None when the score was not computed (or
  not at a step inside the window).
  """
  try:
    s = load_scores(workdir, name, split)
  except FileNotFoundError:
    return None
  step = _window_step(s, window)
  return None if step is None else (_member_mean(s.at(step)), step)


def window_score_by_arch(
    workdir: str, name: str, window: Sequence[float], split: str = 'train'
) -> tuple[dict[str, np.ndarray], dict[str, int]] | None:
  """Per architecture: the mean over its members at the window's end.

  GraNd is an expectation over inits of one network (Paul et al.); raw
  gradient norms differ between architectures (median at init on digits:
  cnn 4.93, resnet18 7.55, vgg11 1.20), so a mean over every member would be
  dominated by one network. Each architecture is read on its own (its own
  latest step inside the window).

  Returns:
    ({arch: float32 [N]}, {arch: step}) in the store's architecture order,
    only architectures scored inside the window; None when there is none.
  """
  archs = records.read_manifest(scores_dir(workdir, name)).get(
      'arch_order', [])
  values, steps = {}, {}
  for a in archs:
    try:
      s = load_scores(workdir, name, split, archs=[a])
    except FileNotFoundError:
      continue
    step = _window_step(s, window)
    if step is not None:
      values[a], steps[a] = _member_mean(s.at(step)), step
  return (values, steps) if values else None


# ------------------------------------------------------------ analysis scores

META_COLUMNS = ('example_index', 'tfds_id', 'label')
SET_COLUMNS = ('is_easy', 'is_hard')
# npz member names hold no '/' (per-architecture columns are 'easiness/cnn'):
# stored as '__', read back as '/'.
_SLASH, _STORED_SLASH = '/', '__'


def analysis_scores_path(workdir: str, split: str) -> str:
  """``WORKDIR/analysis/scores_{split}.npz``: the analysis's scores."""
  return os.path.join(workdir, 'analysis', f'scores_{split}.npz')


def score_table(example_ids: np.ndarray, tfds_ids: Sequence[Any] | None,
                labels: np.ndarray, scores: Mapping[str, np.ndarray],
                names: Sequence[str], easy: np.ndarray,
                hard: np.ndarray) -> dict[str, np.ndarray]:
  """One split's score table in example-index order.

  Args:
    example_ids: int [N], the stable example index of each input row.
    tfds_ids: [N] TFDS ids (None entries, or None for all: unknown).
    labels: int [N].
    scores: {name: float [N]} as the analysis computed them.
    names: the score columns in order; one missing from ``scores`` is NaN
      (the training-pass scores on the test split).
    easy: bool [N], the easy set.
    hard: bool [N], the hard set.

  Returns:
    {column: array}: example_index int64, tfds_id str ('' where unknown),
    label int64, each score (float32 and float64 kept as computed, any
    other dtype as float32), is_easy and is_hard bool.
  """
  ids = np.asarray(example_ids, np.int64)
  order = np.argsort(ids, kind='stable')
  table = {
      'example_index': ids[order],
      'tfds_id': np.asarray(
          ['' if tfds_ids is None or tfds_ids[i] is None else str(tfds_ids[i])
           for i in order], dtype=str),
      'label': np.asarray(labels, np.int64)[order]}
  for name in names:
    if name not in scores:
      table[name] = np.full(ids.shape, np.nan, np.float32)
      continue
    v = np.asarray(scores[name])
    if v.dtype not in (np.float32, np.float64):
      v = v.astype(np.float32)
    table[name] = v[order]
  table['is_easy'] = np.asarray(easy, bool)[order]
  table['is_hard'] = np.asarray(hard, bool)[order]
  return table


def score_names(table: Mapping[str, np.ndarray]) -> list[str]:
  """The score columns of a table, in order."""
  return [k for k in table if k not in META_COLUMNS + SET_COLUMNS]


def table_csv_bytes(table: Mapping[str, np.ndarray]) -> bytes:
  """The table as CSV text for people: scores as ``.7g``, sets as 0/1."""
  names = score_names(table)
  cols = [np.asarray(table[c], np.float64) for c in names]
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator='\n')
  w.writerow(list(META_COLUMNS) + names + list(SET_COLUMNS))
  for i in range(table['example_index'].shape[0]):
    w.writerow([int(table['example_index'][i]), str(table['tfds_id'][i]),
                int(table['label'][i])] + [f'{c[i]:.7g}' for c in cols] +
               [int(table['is_easy'][i]), int(table['is_hard'][i])])
  return buf.getvalue().encode()


def write_analysis_scores(workdir: str, split: str,
                          table: Mapping[str, np.ndarray]) -> str:
  """Writes ``scores_{split}.npz`` and its CSV atomically; returns the npz."""
  path = analysis_scores_path(workdir, split)
  files.atomic_savez(path, {k.replace(_SLASH, _STORED_SLASH): v
                            for k, v in table.items()})
  files.atomic_write_bytes(path[:-len('.npz')] + '.csv',
                           table_csv_bytes(table))
  return path


def load_analysis_scores(workdir: str, split: str = 'train'
                         ) -> dict[str, np.ndarray]:
  """The analysis's score table of a split, as written (numpy only).

  Raises:
    FileNotFoundError: the analysis stage has not written it (an analysis
      from before the npz existed has only the CSV: run --mode=analysis).
    ValueError: it lacks a column or its rows are not in index order.
  """
  path = analysis_scores_path(workdir, split)
  if not files.exists(path):
    raise FileNotFoundError(
        f'No {path}: run --mode=analysis on this workdir first (an analysis '
        'written before the scores were stored as npz has only the CSV; '
        '--mode=analysis writes both).')
  with files.np_load(path) as z:
    table = {k.replace(_STORED_SLASH, _SLASH): z[k] for k in z.files}
  missing = [c for c in META_COLUMNS + SET_COLUMNS if c not in table]
  if missing:
    raise ValueError(f'{path} has no columns {missing}; rerun '
                     '--mode=analysis.')
  if not np.array_equal(table['example_index'],
                        np.arange(table['example_index'].shape[0])):
    raise ValueError(f'{path} is not in example-index order; rerun '
                     '--mode=analysis.')
  return table


# Integer columns of the analysis stage's scores_{split}.csv; tfds_id is a
# string; every other column is a float score.
SCORES_INT_COLUMNS = ('example_index', 'label', 'is_easy', 'is_hard')


def read_scores_csv(path: str, strict: bool = True) -> dict[str, np.ndarray]:
  """The analysis stage's ``scores_{split}.csv`` as columns.

  Args:
    path: ``WORKDIR/analysis/scores_{train,test}.csv``.
    strict: raise ValueError when the file has no rows or its rows are not
      in example-index order (both mean a damaged analysis); else return
      what is there (empty columns for a header-only file).

  Returns:
    {column: array}: :data:`SCORES_INT_COLUMNS` int64, ``tfds_id`` str
    ('' where unknown), every other column float64 (``nan`` and '' -> NaN).
  """
  with files.open_file(path, newline='') as f:
    reader = csv.reader(f)
    header = next(reader)
    rows = list(reader)
  if strict and not rows:
    raise ValueError(f'{path} has no rows; rerun --mode=analysis.')
  cols = list(zip(*rows)) if rows else [()] * len(header)
  out = {}
  for name, values in zip(header, cols):
    if name == 'tfds_id':
      out[name] = np.asarray(values, dtype=str)
    elif name in SCORES_INT_COLUMNS:
      out[name] = np.asarray(values, dtype=np.int64)
    else:
      out[name] = np.asarray([float(v) if v else np.nan for v in values],
                             np.float64)
  if strict and not np.array_equal(out['example_index'],
                                   np.arange(len(rows))):
    raise ValueError(f'{path} is not in example-index order; rerun '
                     '--mode=analysis.')
  return out
