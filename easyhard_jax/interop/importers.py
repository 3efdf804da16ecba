"""Peers' per-example scores into a workdir's score store (numpy only).

Each importer puts one score in the split's stable example order (NaN where
the file has no row) and writes it twice:

* into the score store (``score_store.py``): ``WORKDIR/checkpoint_probes/
  scores/{name}/records``, one member ``imported/{name}`` and one
  checkpoint, so ``score_store.load_scores(workdir, name)`` reads it;
* as ``WORKDIR/imported/{name}_{split}.npz`` (``example_index``, ``label``,
  ``tfds_id`` and the score under ``name``), a file ``--mode=compare`` reads
  with ``--config.reference.path=<it> --config.reference.key=<name>
  --config.reference.order=index --config.reference.label_key=label``.

The workdir must hold records (trained here or logged with DynamicsLog):
their labels and ids give the example order. Formats read (checked against
the peers' code):

* dataset cartography (allenai/cartography ``selection_utils.
  log_training_dynamics``): ``training_dynamics/dynamics_epoch_{e}.jsonl``,
  one JSON object per line with ``guid``, ``logits_epoch_{e}`` and
  ``gold``; gives confidence, variability (np.std over epochs) and
  correctness (number of correct epochs) as cartography's
  ``compute_train_dy_metrics`` defines them.
* AUM (asappresearch/aum ``AUMCalculator.finalize``): ``aum_values.csv``
  with columns ``sample_id,aum``.
* data_diet (mansheej/data_diet): ``.npy`` of [N] scores per checkpoint
  (``error_l2_norm_scores/ckpt_{step}.npy``) in *class-sorted* order: row r
  is example ``order[r]`` with ``order = labels.argsort()`` (numpy's
  default, unstable sort, of the TFDS-order labels). Pass the saved order
  when you have it; rebuilding it assumes the same numpy sort.
* any ``.npy`` (rows in example order), ``.npz`` or ``.csv`` with a score
  key and optionally an id key (ids = the records' ids or indices).
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any, Sequence

import numpy as np

from easyhard_jax.storage import files
from easyhard_jax import fingerprint as fingerprint_lib
from easyhard_jax.storage import records
from easyhard_jax.analysis import score_store

GROUP = 'imported'


def _split_meta(workdir: str, split: str) -> tuple[np.ndarray, list | None]:
  root = records.records_dir(workdir)
  path = os.path.join(root, f'labels_{split}.npy')
  if not files.exists(path):
    raise FileNotFoundError(
        f'No {split} records in {workdir}: an imported score is aligned on '
        'the records\' example order. Record or log the study first.')
  labels = files.np_load(path)
  ids_path = os.path.join(root, f'ids_{split}.json')
  ids = (files.read_json(ids_path, 'rerun the recording.')
         if files.exists(ids_path) else None)
  return labels, ids


def rows_to_index(keys: Sequence[Any], ids: Sequence[str] | None,
                  n: int, by: str = 'index') -> np.ndarray:
  """Example index of each row's key.

  Args:
    keys: the rows' identifiers (``guid``, ``sample_id``, ...).
    ids: the records' ids (TFDS ids) of the split, or None.
    n: examples in the split.
    by: 'index' (keys are example indices 0..n-1) or 'id' (keys are the
      records' ids).

  Returns:
    int64 [rows]; raises naming the first key that matches no example.
  """
  if by == 'index':
    try:
      out = np.asarray([int(k) for k in keys], np.int64)
    except (TypeError, ValueError) as e:
      raise ValueError(f'Keys are not example indices ({e}); pass by="id" '
                       'to match them to the records\' ids.') from e
    bad = (out < 0) | (out >= n)
    if bad.any():
      raise IndexError(f'Key {int(out[bad][0])} is outside 0..{n - 1}.')
  elif by == 'id':
    if ids is None:
      raise ValueError('The records keep no ids for this split; use '
                       'by="index".')
    where = {str(v): i for i, v in enumerate(ids)}
    missing = [k for k in keys if str(k) not in where]
    if missing:
      raise KeyError(f'{len(missing)} keys match no record id, e.g. '
                     f'{missing[:3]}.')
    out = np.asarray([where[str(k)] for k in keys], np.int64)
  else:
    raise ValueError(f'by must be "index" or "id", got {by!r}.')
  if np.unique(out).size != out.size:
    raise ValueError('Two rows name the same example.')
  return out


def store(workdir: str, name: str, values: np.ndarray, split: str = 'train',
          source: str = '', step: int = 0) -> str:
  """Writes a score in example order to the score store and imported/.

  Args:
    workdir: a workdir with records.
    name: the score's name (a file name).
    values: float [N] in example order, NaN where unknown.
    split: 'train' or 'test'.
    source: where it came from (kept in the store's fingerprint).
    step: the training step it was measured at, if known.

  Returns:
    The path of ``WORKDIR/imported/{name}_{split}.npz``.
  """
  labels, ids = _split_meta(workdir, split)
  values = np.asarray(values, np.float32)
  if values.shape != labels.shape:
    raise ValueError(f'{name}: {values.shape[0]} values for '
                     f'{labels.shape[0]} {split} examples.')
  root = score_store.scores_dir(workdir, name)
  writer = records.RecordWriter(root, enabled=True)
  for s in records.SPLITS:
    try:
      writer.write_split_metadata(s, *_split_meta(workdir, s))
    except FileNotFoundError:
      continue
  fields = {'origin': 'import', 'name': name, 'source': source}
  member = {'name': f'{GROUP}/{name}', 'arch': GROUP, 'seed': 0,
            'source': source}
  entry = writer.manifest['archs'].get(GROUP)
  if entry is not None and (entry['fingerprint']['fields'] != fields or
                            entry['schedule'] != [int(step)]):
    del writer.manifest['archs'][GROUP]  # Re-imported from another file.
    writer.manifest['arch_order'].remove(GROUP)
  writer.begin_arch(GROUP, [member], 1, [int(step)],
                    {'fields': fields, 'hash': fingerprint_lib.digest(fields)})
  writer.write_chunk(GROUP, 'probe', split, 0, int(step),
                     {name: values[None]})
  writer.finish_arch(GROUP)
  path = os.path.join(workdir, 'imported', f'{name}_{split}.npz')
  files.atomic_savez(path, {
      'example_index': np.arange(labels.size), 'label': labels,
      'tfds_id': np.asarray(['' if i is None else str(i)
                             for i in (ids or [None] * labels.size)]),
      name: values})
  return path


def _scatter(n: int, rows: np.ndarray, values: Sequence[float]) -> np.ndarray:
  out = np.full(n, np.nan, np.float32)
  out[rows] = np.asarray(values, np.float32)
  return out


def read_cartography(path: str) -> tuple[list[Any], np.ndarray, list]:
  """(guids, gold [R], logits per epoch [E][R, C]) of cartography's files.

  ``path`` is the ``training_dynamics`` directory (or the model dir holding
  it). cartography writes ``.jsonl`` and its reader opens ``.json``: both
  are read. Every epoch must list the same guids.
  """
  if os.path.isdir(os.path.join(path, 'training_dynamics')):
    path = os.path.join(path, 'training_dynamics')
  found = {}
  for f in glob.glob(os.path.join(path, 'dynamics_epoch_*.json*')):
    m = re.fullmatch(r'dynamics_epoch_(\d+)\.jsonl?', os.path.basename(f))
    if m:
      found[int(m[1])] = f
  if not found or sorted(found) != list(range(len(found))):
    raise FileNotFoundError(f'No dynamics_epoch_0..E.jsonl in {path} '
                            f'(found epochs {sorted(found)}).')
  guids, gold, logits = None, None, []
  for e in range(len(found)):
    with open(found[e]) as fh:
      rows = [json.loads(line) for line in fh if line.strip()]
    g = [r['guid'] for r in rows]
    order = {k: i for i, k in enumerate(g)}
    if guids is None:
      guids, gold = g, np.asarray([r['gold'] for r in rows], np.int64)
    elif set(g) != set(guids):
      raise ValueError(f'{found[e]} lists other guids than epoch 0.')
    logits.append(np.asarray([rows[order[k]][f'logits_epoch_{e}']
                              for k in guids], np.float64))
  return guids, gold, logits


def import_cartography(workdir: str, path: str, by: str = 'index',
                       split: str = 'train',
                       prefix: str = 'cartography') -> dict[str, str]:
  """Cartography's training dynamics -> confidence, variability, correctness.

  Args:
    workdir: a workdir with records.
    path: cartography's ``training_dynamics`` directory (or its parent).
    by: guids are example indices ('index') or the records' ids ('id').
    split: the split the guids index.
    prefix: scores are named ``{prefix}_confidence`` etc.

  Returns:
    {score name: path of its imported .npz}.
  """
  labels, ids = _split_meta(workdir, split)
  guids, gold, logits = read_cartography(path)
  rows = rows_to_index(guids, ids, labels.size, by)
  if not np.array_equal(labels[rows], gold):
    bad = int(np.flatnonzero(labels[rows] != gold)[0])
    raise ValueError(f'guid {guids[bad]!r}: gold {int(gold[bad])} but the '
                     f'records\' label is {int(labels[rows][bad])}; the '
                     'guids are not this split\'s examples (try by="id").')
  p_true, correct = [], []
  for z in logits:
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    p_true.append(p[np.arange(len(gold)), gold])
    correct.append(np.argmax(z, axis=1) == gold)
  p_true, correct = np.stack(p_true), np.stack(correct)
  scores = {'confidence': p_true.mean(0), 'variability': p_true.std(0),
            'correctness': correct.sum(0).astype(np.float64)}
  return {f'{prefix}_{k}': store(workdir, f'{prefix}_{k}',
                                 _scatter(labels.size, rows, v), split,
                                 os.path.abspath(path), len(logits))
          for k, v in scores.items()}


def import_aum(workdir: str, path: str, by: str = 'index',
               split: str = 'train', name: str = 'aum_peer') -> str:
  """AUM's ``aum_values.csv`` (sample_id, aum) -> score ``name``."""
  rows = files.read_csv(path)
  if not rows or not {'sample_id', 'aum'} <= set(rows[0]):
    raise ValueError(f'{path} is not an aum_values.csv (needs columns '
                     'sample_id,aum).')
  labels, ids = _split_meta(workdir, split)
  where = rows_to_index([r['sample_id'] for r in rows], ids, labels.size, by)
  return store(workdir, name, _scatter(labels.size, where,
                                       [float(r['aum']) for r in rows]),
               split, os.path.abspath(path))


def data_diet_order(labels: np.ndarray, kind: str = 'quicksort'
                    ) -> np.ndarray:
  """data_diet's class-sorted order: row r holds example ``order[r]``.

  data_diet sorts with ``Y.argmax(1).argsort()``: numpy's default sort,
  which is not stable; ``kind='stable'`` gives the order within each class
  that a stable sort would. Prefer the order data_diet's run saved.
  """
  return np.argsort(np.asarray(labels, np.int64), kind=kind)


def import_data_diet(workdir: str, path: str, order: Any = 'quicksort',
                     split: str = 'train', name: str = 'el2n_data_diet',
                     step: int = 0) -> str:
  """A data_diet score ``.npy`` (class-sorted rows) -> score ``name``.

  Args:
    workdir: a workdir with records (TFDS order, as data_diet loads).
    path: e.g. ``run_0/error_l2_norm_scores/ckpt_{step}.npy``.
    order: int [N] (row r = example order[r]), or a numpy sort kind to
      rebuild it from the records' labels (see :func:`data_diet_order`).
    split: the split scored.
    name: the score's name.
    step: the checkpoint step (in the file name).
  """
  labels, _ = _split_meta(workdir, split)
  scores = np.load(path, allow_pickle=False)
  if scores.shape != labels.shape:
    raise ValueError(f'{path} holds {scores.shape} scores for '
                     f'{labels.size} {split} examples (a subset run\'s '
                     'scores have no order here).')
  order = (data_diet_order(labels, order) if isinstance(order, str)
           else np.asarray(order, np.int64))
  if np.sort(order).tolist() != list(range(labels.size)):
    raise ValueError('order must be a permutation of 0..N-1.')
  if (np.diff(labels[order]) < 0).any():
    raise ValueError('order does not sort the labels by class: it is not '
                     'data_diet\'s order for these records.')
  return store(workdir, name, _scatter(labels.size, order, scores), split,
               os.path.abspath(path), step)


def import_score_file(workdir: str, path: str, key: str = 'score',
                      id_key: str | None = None, by: str = 'index',
                      split: str = 'train', name: str | None = None) -> str:
  """Any per-example score: ``.npy`` in example order, or ``.npz``/``.csv``.

  Args:
    workdir: a workdir with records.
    path: the file.
    key: the npz key or CSV column of the score (ignored for .npy).
    id_key: key/column of row identifiers; None = rows in example order.
    by: identifiers are example indices ('index') or the records' ids ('id').
    split: the split scored.
    name: the score's name (default: ``key``, or the .npy file's stem).
  """
  labels, ids = _split_meta(workdir, split)
  if path.endswith('.npy'):
    values, keys = np.load(path, allow_pickle=False), None
    name = name or re.sub(r'[^A-Za-z0-9_.-]', '_', os.path.basename(path)[:-4])
  elif path.endswith('.npz'):
    with np.load(path, allow_pickle=False) as z:
      values = z[key]
      keys = None if id_key is None else z[id_key].tolist()
  else:
    rows = files.read_csv(path)
    values = [float(r[key]) if r[key] not in ('', 'nan') else np.nan
              for r in rows]
    keys = None if id_key is None else [r[id_key] for r in rows]
  values = np.asarray(values, np.float64)
  if keys is None:
    if values.shape != labels.shape:
      raise ValueError(f'{path}: {values.size} rows for {labels.size} '
                       f'{split} examples; pass id_key= for a subset.')
    keys = range(labels.size)
  where = rows_to_index(list(keys), ids, labels.size, by)
  return store(workdir, name or key, _scatter(labels.size, where, values),
               split, os.path.abspath(path))
