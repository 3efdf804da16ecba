"""Checkpoint-based analysis: per-example records from saved orbax checkpoints.

``--mode=probe_checkpoints`` restores every saved step of every architecture
(from this workdir, or ``config.probe_checkpoints.source_workdir``) and runs
the eval-mode probe on the configured splits, writing records in the study's
format to ``WORKDIR/checkpoint_probes/`` (``records.load`` reads them, so
easiness can be recomputed at any saved step) and, when ``features`` is on,
penultimate-layer features per member as
``checkpoint_probes/features/{arch}_step{S}_{split}.npz`` (float16 [M, N, D]),
for similarity in feature space. Keep more checkpoints with
``config.checkpoints_to_keep``.
"""

from __future__ import annotations

import io
import os

import numpy as np
from absl import logging

from easyhard_jax import records
from easyhard_jax.data import streaming
from easyhard_jax.train import checkpoints
from easyhard_jax.train import config_checks
from easyhard_jax.train import ensemble


def probe_checkpoints(config, workdir: str) -> str:
  """Writes records (and features) for every saved checkpoint; returns dir."""
  cfg = config.probe_checkpoints
  source = cfg.source_workdir or workdir
  out = os.path.join(workdir, 'checkpoint_probes')
  data = streaming.load(config)
  writer = records.RecordWriter(out)
  writer.write_split_metadata('train', data.train_labels, data.train_ids)
  writer.write_split_metadata('test', data.test_labels, data.test_ids)
  archs = (config_checks.arch_list(config) if cfg.archs == 'study'
           else [a.strip() for a in cfg.archs.split(',')])
  for arch in archs:
    directory = os.path.join(source, 'checkpoints', arch)
    if not os.path.isdir(directory):
      raise FileNotFoundError(
          f'No checkpoints for {arch!r} in {directory}; run --mode=record, or '
          'set probe_checkpoints.source_workdir to the workdir that has them.')
    ckpt = checkpoints.Checkpointer(directory, config.checkpoints_to_keep)
    saved = sorted(ckpt.manager.all_steps())
    if not saved:
      raise FileNotFoundError(f'{directory} holds no finished checkpoint.')
    t = ensemble.ArchTrainer(config, data, arch)
    writer.begin_arch(arch, t.members, t.spe, saved,
                      ensemble.study_fingerprint(config, arch))
    target = t.init_states()
    for k, step in enumerate(saved):
      states = ckpt.restore(step, target)
      logging.info('%s: probing checkpoint step %d.', arch, step)
      for split in cfg.splits:
        if cfg.features:
          stats, feats = t.probe(states, split, features=True)
          buf = io.BytesIO()
          np.savez(buf, features=feats.astype(np.float16))
          records.atomic_write_bytes(
              os.path.join(out, 'features', f'{arch}_step{step}_{split}.npz'),
              buf.getvalue())
        else:
          stats = t.probe(states, split)
        writer.write_chunk(arch, 'probe', split, k, step, stats)
    writer.finish_arch(arch)
  return out


def default_config():
  """The probe_checkpoints knobs (embedded in configs/default.py)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict()
  c.source_workdir = ''        # '' = this workdir; or another study's workdir.
  c.archs = 'study'            # 'study' = config.archs, or comma-separated.
  c.splits = ('train', 'test')
  c.features = True            # Also save penultimate features (float16).
  return c
