"""A workdir's dynamics in the formats peers read (numpy only).

Written into ``WORKDIR/exports/peers/`` by :func:`write_peer_exports` (or
``python -m easyhard_jax.interop.peer_exports WORKDIR``), from any workdir
with records, trained here or logged with DynamicsLog. Each score is
computed per member over the training-pass (``fused``) records, one value
per epoch as the peers log them (probe records where a workdir has no
fused ones), then averaged over members.

* ``td_metrics_{split}.jsonl``: dataset cartography's data-map coordinates
  (``compute_train_dy_metrics``): guid (the record id, else the example
  index), index, threshold_closeness, confidence (mean p(true)),
  variability (np.std of p(true) over epochs), correctness (number of
  correct epochs), forgetfulness (1000 = never learnt). Read it with::

      df = pandas.read_json('td_metrics_train.jsonl', lines=True)
      cartography.selection.train_dy_filtering.plot_data_map(df, plot_dir)

* ``aum_values.csv``: AUM's file (``AUMCalculator.finalize``): sample_id
  (example index), aum (mean margin, true logit minus the largest other),
  largest first. Flag examples below the threshold-sample AUM with::

      df = pandas.read_csv('aum_values.csv')
      flagged = df[df.aum <= threshold].sample_id

* ``cleanlab_{split}.npz``: ``labels``; ``pred_probs`` [N, C], the members'
  mean softmax at their latest common probe, where the log kept them
  (``DynamicsLog(keep_probs=True)``; in-sample for the train split, so
  cleanlab's cross-validation caveat applies); ``ranked_label_issues``,
  this tool's label-issue ranking (analysis/label_issues_{split}.csv, most
  suspect first) where the analysis wrote one. Read it with::

      z = numpy.load('cleanlab_train.npz')
      issues = cleanlab.filter.find_label_issues(z['labels'], z['pred_probs'])
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np

from easyhard_jax.storage import files
from easyhard_jax.storage import records
from easyhard_jax.interop import dynamics_log

NEVER_LEARNT = 1000  # cartography's forgetfulness of a never-learnt example.


def _dynamics(workdir: str, split: str) -> records.Records:
  if split == 'train':
    try:
      return records.load(workdir, 'train', 'fused')
    except FileNotFoundError:
      pass
  return records.load(workdir, split, 'probe')


def _member_mean(x: np.ndarray) -> np.ndarray:
  with warnings.catch_warnings():  # An example no member saw stays NaN.
    warnings.simplefilter('ignore', RuntimeWarning)
    return np.nanmean(x, axis=0)


def cartography_metrics(rec: records.Records) -> dict[str, np.ndarray]:
  """Cartography's per-example metrics, per member, averaged over members.

  Epochs where the member did not see an example (``pred`` = -1) are left
  out of its statistics.
  """
  seen = rec.pred >= 0 if rec.pred is not None else np.ones_like(
      rec.correct)
  p = np.where(seen, rec.p_true, np.nan).astype(np.float64)
  correct = rec.correct & seen
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    confidence = np.nanmean(p, axis=1)  # [M, N]
    variability = np.nanstd(p, axis=1)
  forgotten = np.zeros(correct[:, 0].shape, np.int64)
  learnt = np.zeros(correct[:, 0].shape, bool)
  for e in range(correct.shape[1]):
    c, s = correct[:, e], seen[:, e]
    forgotten += learnt & s & ~c
    learnt = np.where(s, c, learnt)
  forget = np.where(correct.any(axis=1), forgotten, NEVER_LEARNT)
  conf = _member_mean(confidence)
  return {'confidence': conf, 'variability': _member_mean(variability),
          'correctness': correct.sum(axis=1).mean(axis=0),
          'forgetfulness': forget.mean(axis=0),
          'threshold_closeness': conf * (1 - conf)}


def _guids(rec: records.Records) -> list:
  if rec.tfds_ids is None:
    return [int(i) for i in rec.example_ids]
  return [str(t) for t in rec.tfds_ids]


def write_cartography(workdir: str, out_dir: str, split: str = 'train'
                      ) -> str:
  """``td_metrics_{split}.jsonl``; returns its path."""
  rec = _dynamics(workdir, split)
  m = cartography_metrics(rec)
  lines = []
  for i, guid in enumerate(_guids(rec)):
    row = {'guid': guid, 'index': int(rec.example_ids[i])}
    for k in ('threshold_closeness', 'confidence', 'variability',
              'correctness', 'forgetfulness'):
      row[k] = files.to_jsonable(float(m[k][i]))
    lines.append(json.dumps(row))
  path = os.path.join(out_dir, f'td_metrics_{split}.jsonl')
  files.atomic_write_bytes(path, ('\n'.join(lines) + '\n').encode())
  return path


def aum_values(rec: records.Records) -> np.ndarray:
  """Mean margin over the epochs each member saw, averaged over members."""
  seen = rec.pred >= 0 if rec.pred is not None else np.ones_like(
      rec.correct)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    per_member = np.nanmean(np.where(seen, rec.margin, np.nan), axis=1)
  return _member_mean(per_member)


def write_aum(workdir: str, out_dir: str) -> str:
  """``aum_values.csv`` (sample_id, aum), largest AUM first."""
  rec = _dynamics(workdir, 'train')
  aum = aum_values(rec)
  order = np.argsort(-np.nan_to_num(aum, nan=-np.inf), kind='stable')
  path = os.path.join(out_dir, 'aum_values.csv')
  files.atomic_write_csv(path, [{'sample_id': int(rec.example_ids[i]),
                                 'aum': f'{aum[i]:.7g}'} for i in order])
  return path


def mean_probs(workdir: str, split: str) -> np.ndarray | None:
  """Members' mean kept probabilities at their latest common step, or None."""
  manifest = records.read_manifest(workdir)
  kept = []
  for arch in manifest['arch_order']:
    for pos in range(len(manifest['archs'][arch]['members'])):
      path = dynamics_log.probs_path(workdir, arch, pos, split)
      if not files.exists(path):
        return None
      kept.append(records.read_chunk(path))
  if not kept:
    return None
  step = min(int(k['step']) for k in kept)
  if any(int(k['step']) != step for k in kept):
    warnings.warn(f'Kept probabilities are at different steps '
                  f'{sorted({int(k["step"]) for k in kept})}; no pred_probs.')
    return None
  return np.mean([k['probs'] for k in kept], axis=0).astype(np.float32)


def write_cleanlab(workdir: str, out_dir: str, split: str = 'train'
                   ) -> str | None:
  """``cleanlab_{split}.npz``; None when there are neither probs nor issues."""
  labels = files.np_load(os.path.join(records.records_dir(workdir),
                                     f'labels_{split}.npy'))
  out = {'labels': labels.astype(np.int64)}
  probs = mean_probs(workdir, split)
  if probs is not None:
    out['pred_probs'] = probs
  issues = os.path.join(workdir, 'analysis', f'label_issues_{split}.csv')
  if files.exists(issues):
    out['ranked_label_issues'] = np.asarray(
        [int(r['index']) for r in files.read_csv(issues)], np.int64)
  if len(out) == 1:
    return None
  path = os.path.join(out_dir, f'cleanlab_{split}.npz')
  files.atomic_savez(path, out)
  return path


def write_peer_exports(workdir: str) -> dict[str, str]:
  """Every peer file this workdir can give; {what: path}."""
  out_dir = os.path.join(workdir, 'exports', 'peers')
  paths = {'cartography_train': write_cartography(workdir, out_dir),
           'aum': write_aum(workdir, out_dir)}
  for split in records.SPLITS:
    try:
      path = write_cleanlab(workdir, out_dir, split)
    except FileNotFoundError:
      continue
    if path:
      paths[f'cleanlab_{split}'] = path
  return paths


if __name__ == '__main__':
  if len(sys.argv) != 2:
    sys.exit('usage: python -m easyhard_jax.interop.peer_exports WORKDIR')
  for what, where in write_peer_exports(sys.argv[1]).items():
    print(f'{what}: {where}')
