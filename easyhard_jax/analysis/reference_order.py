"""Reading a published per-example score and putting it in example order.

Used by :mod:`easyhard_jax.analysis.compare` (--mode=compare).
``config.reference.order`` says how the file's rows are ordered:

* ``'index'``: row i is this project's example i (for a TFDS dataset: TFDS's
  stored order, what ``tfds.data_source`` returns).
* ``'tfds_id'``: a column (``tfds_id_column``) of ids. Either the ids the
  records keep (the dataset's ``id`` feature, e.g. CIFAR's ``train_16399``),
  or tf.data's ``tfds_id`` (``read_config=tfds.ReadConfig(add_tfds_id=True)``:
  ``'cifar10-train.array_record-00000-of-00001__123'``, a shard file and the
  row in it), mapped through the split's shard lengths to the stored order.
* ``'original'``: the order of the keys the TFDS builder generated before it
  wrote the dataset. TFDS sorts a split by ``hashing.Hasher(split).hash_key
  (key)`` (md5 salted with the split name; ``core/shuffle.py``: in memory a
  plain sort, on disk 1000 buckets by the hash's leading bits, each sorted,
  so also one global sort; ``core/writer.py`` and the Beam writer cut shards
  from that order). Builders whose keys are the original indices 0..N-1
  (CIFAR-10/100, MNIST-family) thus store example k at the rank of its key's
  hash; a file in the original order (CIFAR C-scores) maps through that
  rank. TFDS's own hasher does the hashing here.

Checks: with ``label_key`` the reference's own labels must equal the
records' after the mapping; in ``'original'`` order, record ids ending in
the original index (CIFAR's ``train_16399``) must agree with the hash
order, and the file must have one row per example of the whole split.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Sequence

from absl import logging
import numpy as np

from easyhard_jax.analysis import score_store
from easyhard_jax.storage import files

ORDERS = ('index', 'tfds_id', 'original')
_TFDS_ID = re.compile(r'^(?P<file>.+)-(?P<shard>\d{5})-of-(?P<num>\d{5})'
                      r'__(?P<row>\d+)$')
_ENDS_IN_INT = re.compile(r'(\d+)$')


def read_reference(path: str, key: str, id_column: str | None = None,
                   label_column: str | None = None) -> dict[str, Any]:
  """Reads a reference score (and optionally its id and label columns).

  Args:
    path: a ``.npz`` (arrays by key; no pickle) or ``.csv`` (header row).
    key: the array / column of the score.
    id_column: the array / column of ids, or None.
    label_column: the array / column of class labels, or None.

  Returns:
    {'values': float64 [R] (NaN where empty), 'ids': list of R strings or
    None, 'labels': int64 [R] or None}.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f'config.reference.path {path!r} does not exist.')
  wanted = [key] + [c for c in (id_column, label_column) if c]
  if path.endswith('.npz'):
    with np.load(path, allow_pickle=False) as z:
      missing = [k for k in wanted if k not in z.files]
      if missing:
        raise KeyError(f'{path} has no arrays {missing}; it has {z.files}.')
      cols = {k: z[k] for k in wanted}
  elif path.endswith('.csv'):
    rows = files.read_csv(path)
    if not rows:
      raise ValueError(f'{path} has no rows.')
    missing = [k for k in wanted if k not in rows[0]]
    if missing:
      raise KeyError(f'{path} has no columns {missing}; it has '
                     f'{list(rows[0])}.')
    cols = {k: [r[k] for r in rows] for k in wanted}
    cols[key] = [v if v.strip() else 'nan' for v in cols[key]]
  else:
    raise ValueError(f'config.reference.path must end in .npz or .csv: '
                     f'{path!r}.')
  values = np.asarray(cols[key]).astype(np.float64)
  if values.ndim != 1:
    raise ValueError(f'{path}[{key!r}] must be 1-D, got {values.shape}.')
  ids = None
  if id_column:
    ids = [x.decode() if isinstance(x, bytes) else str(x)
           for x in np.asarray(cols[id_column]).tolist()]
    if len(ids) != values.size:
      raise ValueError(f'{path}: {len(ids)} ids for {values.size} scores.')
  labels = None
  if label_column:
    labels = np.asarray(cols[label_column]).astype(np.int64)
    if labels.shape != values.shape:
      raise ValueError(f'{path}: {labels.size} labels for {values.size} '
                       'scores.')
  return {'values': values, 'ids': ids, 'labels': labels}


def read_scores_table(path: str) -> dict[str, np.ndarray]:
  """The analysis scores CSV as columns (example-index order checked)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'No {path}: run --mode=analysis first.')
  return score_store.read_scores_csv(path)


# ----------------------------------------------------------------- mapping


def original_positions(num_keys: int, split_name: str) -> np.ndarray:
  """Where TFDS stores the example of each key 0..num_keys-1.

  Args:
    num_keys: the builder's keys are 0..num_keys-1 (the original indices).
    split_name: the TFDS split as built ('train', 'test'): the hash salt.

  Returns:
    int64 [num_keys]: the stored position (index in TFDS's order) of key k.
  """
  # TFDS's own hasher: the order is whatever it computes, not a copy of it.
  # pylint: disable-next=g-import-not-at-top
  from tensorflow_datasets.core import hashing
  hasher = hashing.Hasher(split_name)
  hashes = [hasher.hash_key(k) for k in range(num_keys)]
  if len(set(hashes)) != num_keys:
    raise ValueError('Two keys share a hash; TFDS would refuse this split.')
  order = sorted(range(num_keys), key=hashes.__getitem__)  # 128-bit ints.
  pos = np.empty(num_keys, np.int64)
  pos[np.asarray(order, np.int64)] = np.arange(num_keys)
  return pos


def tfds_id_positions(ids: Sequence[str],
                      shard_lengths: Sequence[int]) -> np.ndarray:
  """Stored positions of tf.data tfds_ids ('FILE-00003-of-00016__17').

  Args:
    ids: tfds_id strings.
    shard_lengths: examples per shard of the split, in shard order.

  Returns:
    int64 [len(ids)]: shard offset + row within the shard.
  """
  offsets = np.concatenate([[0], np.cumsum(shard_lengths)]).astype(np.int64)
  out = np.empty(len(ids), np.int64)
  for i, s in enumerate(ids):
    m = _TFDS_ID.match(s)
    if not m:
      raise ValueError(f'{s!r} is neither a records id nor a tfds_id.')
    shard, num, row = int(m['shard']), int(m['num']), int(m['row'])
    if num != len(shard_lengths) or row >= shard_lengths[shard]:
      raise ValueError(f'{s!r} does not fit the split\'s {len(shard_lengths)} '
                       f'shards of {list(shard_lengths)} examples (another '
                       'version or file format of the dataset?).')
    out[i] = offsets[shard] + row
  return out


def _ids_check(positions: np.ndarray, example_ids: np.ndarray) -> dict:
  """Compares the hash mapping with ids ending in the original index."""
  n = example_ids.size
  found = [_ENDS_IN_INT.search(s) for s in example_ids]
  if not n or not all(found):
    return {'checked': 0, 'note': 'record ids do not end in an index'}
  orig = np.asarray([int(m[1]) for m in found], np.int64)
  keep = orig < positions.size
  agree = positions[orig[keep]] == np.flatnonzero(keep)
  return {'checked': int(keep.sum()), 'agree': int(agree.sum())}


def _split_size(shard_lengths: Callable[[], Sequence[int]] | None
                ) -> int | None:
  """The split's size from its shard lengths, None when unknown here."""
  if shard_lengths is None:
    return None
  try:
    return int(sum(shard_lengths()))
  except Exception as e:  # pylint: disable=broad-except
    # TFDS metadata missing (a dataset prepared elsewhere): the ids check
    # below is then the only guard.
    logging.info('Split size unknown (%s); not checked.', e)
    return None


def map_reference(order: str, values: np.ndarray, ids: Sequence[str] | None,
                  example_ids: np.ndarray, *, split_name: str,
                  shard_lengths: Callable[[], Sequence[int]] | None = None,
                  labels: np.ndarray | None = None,
                  example_labels: np.ndarray | None = None
                  ) -> tuple[np.ndarray, dict[str, Any]]:
  """Puts reference rows in this project's example-index order.

  Args:
    order: one of :data:`ORDERS`.
    values: float [R] reference values in the file's order.
    ids: R id strings (order='tfds_id') or None.
    example_ids: str [N], the records' ids per example ('' where none).
    split_name: the TFDS split name (hash salt for order='original').
    shard_lengths: returns the split's shard lengths (tf.data tfds_ids).
    labels: int [R], the reference's own labels per row, or None.
    example_labels: int [N], the records' labels (checked against
      ``labels`` after the mapping: a wrong order shows as disagreement).

  Returns:
    (float64 [N], NaN where no row maps; info dict for results.json).
  """
  n, r = example_ids.size, values.size
  info: dict[str, Any] = {'order': order, 'rows': int(r)}
  if order == 'index':
    pos = np.arange(r)
  elif order == 'tfds_id':
    if ids is None:
      raise ValueError("order='tfds_id' needs config.reference.tfds_id_column.")
    lookup = {s: i for i, s in enumerate(example_ids) if s}
    direct = np.asarray([lookup.get(s, -1) for s in ids], np.int64)
    if (direct >= 0).any():
      pos, info['ids'] = direct, 'record ids'
    else:
      if shard_lengths is None:
        raise ValueError('Reference ids match no record id and no shard '
                         'lengths are known to read them as tfds_ids.')
      pos, info['ids'] = tfds_id_positions(ids, shard_lengths()), 'tfds_id'
  elif order == 'original':
    if not any(example_ids):
      raise ValueError(
          'The records keep no TFDS ids: this dataset was not read from TFDS, '
          "so its example index already is the original order; use "
          "order='index'.")
    if '[' in split_name or '+' in split_name:
      raise ValueError(f"order='original' needs a whole TFDS split, got "
                       f'{split_name!r}.')
    total = _split_size(shard_lengths)
    if total is not None and total != r:
      raise ValueError(
          f"order='original' needs one row per example of the whole TFDS "
          f'split {split_name!r} ({total} examples); the reference has {r}.')
    pos = original_positions(r, split_name)
    info.update(hash_salt=split_name, ids_check=_ids_check(pos, example_ids))
    if info['ids_check'].get('agree', 0) < info['ids_check']['checked']:
      logging.warning('The TFDS hash mapping disagrees with the record ids '
                      '%s: are the reference keys the original indices?',
                      info['ids_check'])
  else:
    raise ValueError(
        f'config.reference.order must be one of {ORDERS}, got {order!r}'
        + (" (a file in TFDS's stored order is order='index'; one in the "
           "original order, as CIFAR C-scores, is order='original')"
           if order == 'tfds_order' else ''))
  ok = (pos >= 0) & (pos < n)
  hit = pos[ok]
  if np.unique(hit).size != hit.size:
    raise ValueError('Several reference rows map to one example.')
  out = np.full(n, np.nan)
  out[hit] = values[ok]
  info.update(unmatched_rows=int((~ok).sum()), examples=int(n),
              matched=int(np.isfinite(out).sum()))
  if labels is not None and example_labels is not None:
    agree = int((labels[ok] == example_labels[hit]).sum())
    info['labels_check'] = {'checked': int(hit.size), 'agree': agree}
    if agree < 0.99 * hit.size:
      raise ValueError(
          f"The reference's labels agree with the records' on {agree} of "
          f'{hit.size} examples after mapping with order={order!r}: the '
          'rows are in another order (or of another dataset or split).')
  if not info['matched']:
    raise ValueError(f'No reference row maps to an example with a value '
                     f"(order={order!r}, {r} rows, {n} examples).")
  return out, info
