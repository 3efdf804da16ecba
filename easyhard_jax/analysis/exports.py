"""Exports for use outside easyhard_jax: scores as .npz and keep-lists.

Written by the analysis stage into ``WORKDIR/exports/``:

  scores_{split}.npz   a byte copy of the analysis's score artifact
                       ``analysis/scores_{split}.npz`` (score_store.py):
                       example_index, tfds_id (strings; '' where unknown),
                       label, every score as the analysis computed it
                       (float32; see analysis/scores.py: probe scores such as
                       easiness and early_margin, training-pass scores such
                       as aum and forgetting_events, NaN on the test split;
                       per-architecture columns are named e.g.
                       ``easiness__cnn``), is_easy, is_hard (bool); all in
                       example-index order, numpy-only.
  label_issues_{split}.csv
                       suspected label errors, most suspect first: index,
                       tfds_id, given_label, agreed_class (the class the
                       members predict most often instead of the given one;
                       -1 = none), agreement (its share of the early
                       (member, probe) predictions) and score (label_issue:
                       agreement, ties by lower early margin; see
                       analysis/label_issues.py).
  keep_lists/{strategy}_keep{fraction}.csv
                       the training examples to keep for a compressed subset
                       (columns example_index, tfds_id), for every fraction in
                       ``config.compression.fractions`` and the easiness-based
                       strategies ``drop_easiest`` and ``stratified``, chosen
                       from the artifact's easiness (ties: early_margin) by
                       the function that chooses the compression stage's masks.

A training script of your own reads a keep-list with e.g.
``np.loadtxt(path, delimiter=',', skiprows=1, usecols=0, dtype=int)``.
"""

from __future__ import annotations

import os

import numpy as np

from easyhard_jax.storage import files
from easyhard_jax.storage import records
from easyhard_jax.analysis import score_store
from easyhard_jax.experiments import subsets

KEEP_STRATEGIES = ('drop_easiest', 'stratified')


def _copy(src: str, dst: str) -> None:
  """Copies ``src`` to ``dst`` atomically; removes a stale ``dst`` if none."""
  if files.exists(src):
    files.atomic_write_bytes(dst, files.read_bytes(src))
  elif files.exists(dst):  # Not made by this analysis: not kept.
    files.remove(dst)


def write_exports(config, workdir: str) -> str:
  """Writes the .npz score tables and keep-lists; returns the export dir."""
  out_dir = os.path.join(workdir, 'exports')
  for split in records.SPLITS:
    _copy(score_store.analysis_scores_path(workdir, split),
          os.path.join(out_dir, f'scores_{split}.npz'))
    # Ranked by the analysis; copied as is.
    _copy(os.path.join(workdir, 'analysis', f'label_issues_{split}.csv'),
          os.path.join(out_dir, f'label_issues_{split}.csv'))
  train = score_store.load_analysis_scores(workdir, 'train')
  n = train['example_index'].shape[0]
  for fraction in config.compression.fractions:
    k = int(round(fraction * n))
    for strategy in KEEP_STRATEGIES:
      keep = subsets.compression_mask(
          strategy, k, score=train['easiness'], score_name='easiness',
          labels=train['label'], seed=0, aum=train.get('early_margin'))
      lines = ['example_index,tfds_id'] + [
          f'{i},{train["tfds_id"][i]}' for i in np.flatnonzero(keep)]
      files.atomic_write_bytes(
          os.path.join(out_dir, 'keep_lists',
                       f'{strategy}_keep{fraction:.2f}.csv'),
          ('\n'.join(lines) + '\n').encode())
  return out_dir
