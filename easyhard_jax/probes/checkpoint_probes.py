"""Checkpoint-based analysis: records, features and GraNd from saved states.

``--mode=checkpoint_probes`` restores the saved states of every architecture
(from this workdir, or ``config.checkpoint_probes.source_workdir``) and, for
each checkpoint, writes into ``WORKDIR/checkpoint_probes/``:

* the eval-mode probe records on ``splits``, in the study's format
  (``records.load(WORKDIR/checkpoint_probes, split)`` reads them, so
  easiness can be recomputed at any saved step);
* with ``features``, penultimate-layer features per member as
  ``features/{arch}_step{S}_{split}.npz`` (float16 [M, N, D]), for
  similarity in feature space (analysis/feature_similarity.py);
* with ``grand``, GraNd per member (probes/grand.py) on ``grand_splits``, in a
  chunk set of its own, the after-the-fact score store
  ``scores/grand/records/{arch}/probe_{split}_{k:04d}.npz`` (array ``grand``
  [M, N]); ``checkpoint_scores.load_scores(WORKDIR, 'grand')`` reads it as
  [members, checkpoints, examples].

``source`` picks the states: 'analysis' (default) the analysis checkpoints
(``analysis_checkpoints/{arch}``: every probe inside the easiness window and
the window's end, see config.analysis_checkpoints), 'resume' the rolling
resume checkpoints (``checkpoints/{arch}``: the last
``config.checkpoints_to_keep`` epoch ends).
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from easyhard_jax import config_fields
from easyhard_jax import models
from easyhard_jax.storage import files
from easyhard_jax.storage import records
from easyhard_jax.data import streaming
from easyhard_jax.probes import checkpoint_scores
from easyhard_jax.probes import grand
from easyhard_jax.train import ensemble


def validate_config(config) -> None:
  """Raises ValueError naming the ``config.checkpoint_probes`` field that is
  wrong."""
  cfg = config.get('checkpoint_probes')
  if cfg is None:
    return
  models.arch_field(config, 'checkpoint_probes.archs')
  if cfg.source not in checkpoint_scores.SOURCES:
    raise ValueError(f'config.checkpoint_probes.source must be one of '
                     f'{tuple(checkpoint_scores.SOURCES)}, got {cfg.source!r}.')
  for field in ('splits', 'grand_splits'):
    bad = [s for s in cfg[field] if s not in records.SPLITS]
    if bad:
      raise ValueError(f'config.checkpoint_probes.{field} must be a subset '
                       f'of {records.SPLITS}, got {tuple(cfg[field])}.')
  if any(isinstance(s, bool) or not isinstance(s, int) or s < 0
         for s in cfg.steps):
    raise ValueError('config.checkpoint_probes.steps must be global train '
                     f'steps (ints >= 0; () = all kept), got {cfg.steps}.')
  size = cfg.score_batch_size
  if isinstance(size, bool) or not isinstance(size, int) or size < 1:
    raise ValueError('config.checkpoint_probes.score_batch_size must be an '
                     f'integer >= 1, got {size!r}.')


def _save_features(out: str, arch: str, step: int, split: str,
                   feats: np.ndarray) -> None:
  files.atomic_savez(
      os.path.join(out, 'features', f'{arch}_step{step}_{split}.npz'),
      {'features': feats.astype(np.float16)})


def checkpoint_probes(config, workdir: str) -> str:
  """Writes records, features and GraNd for the saved checkpoints.

  Returns:
    ``WORKDIR/checkpoint_probes``.
  """
  cfg = config.checkpoint_probes
  validate_config(config)
  source = cfg.source_workdir or workdir
  out = os.path.join(workdir, 'checkpoint_probes')
  data = streaming.load(config)
  writer = records.RecordWriter(out)
  writer.write_split_metadata('train', data.train_labels, data.train_ids)
  writer.write_split_metadata('test', data.test_labels, data.test_ids)
  store = (checkpoint_scores.open_store(workdir, grand.NAME, data)
           if cfg.grand and cfg.grand_splits else None)
  archs = config_fields.arch_list(config, 'checkpoint_probes.archs')
  for arch in archs:
    ckpt, saved = checkpoint_scores.kept_checkpoints(
        config, source, arch, cfg.source, tuple(cfg.steps) or None)
    t = ensemble.ArchTrainer(config, data, arch)
    fingerprint = ensemble.study_fingerprint(config, arch)
    writer.begin_arch(arch, t.members, t.spe, saved, fingerprint)
    scorer = None
    if store:
      # Its own trainer: the same members and mesh, smaller batches.
      scorer = checkpoint_scores.Scorer(config, data, arch,
                                     {grand.NAME: grand.grand_fn},
                                     cfg.score_batch_size)
      store.begin_arch(arch, t.members, t.spe, saved, fingerprint)
    target = t.init_states()
    for k, step in enumerate(saved):
      states = ckpt.restore(step, target)
      logging.info('%s: probing checkpoint step %d (%s).', arch, step,
                   cfg.source)
      for split in cfg.splits:
        if cfg.features:
          stats, feats = t.probe(states, split, features=True)
          _save_features(out, arch, step, split, feats)
        else:
          stats = t.probe(states, split)
        writer.write_chunk(arch, 'probe', split, k, step, stats)
      for split in cfg.grand_splits if scorer else ():
        store.write_chunk(arch, 'probe', split, k, step,
                          scorer(states, split))
    writer.finish_arch(arch)
    if store:
      store.finish_arch(arch)
  return out

