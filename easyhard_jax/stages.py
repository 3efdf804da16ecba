"""The study's stages, in order, and the dispatcher used by main.py."""

from __future__ import annotations

import json
import os
import time

import jax
from absl import logging

from easyhard_jax import records


def _record(config, workdir):
  from easyhard_jax.train import ensemble
  ensemble.record_study(config, workdir)


def _analyze(config, workdir):
  from easyhard_jax.analysis import stage
  from easyhard_jax.data import sources
  data = sources.load_dataset(config)
  stage.run_analysis(config, workdir, train_images=data.train_images,
                     test_images=data.test_images)


def _remove(config, workdir):
  from easyhard_jax.experiments import sweeps
  sweeps.run_sweep(config, workdir, 'remove')


def _compress(config, workdir):
  from easyhard_jax.experiments import sweeps
  sweeps.run_sweep(config, workdir, 'compress')


STAGES = {'record': _record, 'analyze': _analyze, 'remove': _remove,
          'compress': _compress}
MODES = ('study',) + tuple(STAGES)


def enable_compilation_cache(config) -> None:
  """Persists compiled programs, so resumes and reruns skip compilation."""
  path = config.get('compilation_cache_dir')
  if path:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(path))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)


def run(config, workdir: str, mode: str = 'study') -> None:
  """Runs one stage, or every stage in order for mode='study'."""
  os.makedirs(workdir, exist_ok=True)
  enable_compilation_cache(config)
  if jax.process_index() == 0:
    records.atomic_write_json(os.path.join(workdir, 'config.json'),
                              json.loads(config.to_json_best_effort()))
  names = list(STAGES) if mode == 'study' else [mode]
  for name in names:
    if mode == 'study' and not config.get('stages', {}).get(name, True):
      continue
    tick = time.time()
    logging.info('Stage %s starting.', name)
    STAGES[name](config, workdir)
    logging.info('Stage %s done in %.1fs.', name, time.time() - tick)
