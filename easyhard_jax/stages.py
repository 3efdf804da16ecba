"""The study's stages, in order, and the dispatcher used by main.py.

``--mode=study`` runs every stage in order. A stage whose output is complete is
skipped, unless a stage before it ran in this invocation (its inputs may have
changed), so an interrupted study resumes where it stopped. Stages can be
switched off with ``config.stages.<name> = False``. An explicit ``--mode=X``
always runs X (which itself resumes its finished parts).
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import jax
from absl import logging

from easyhard_jax import records


def _dataset(config):
  from easyhard_jax.data import streaming
  return streaming.load(config)


def _record(config, workdir):
  from easyhard_jax.train import ensemble
  ensemble.record_study(config, workdir)


def _analyze(config, workdir):
  from easyhard_jax import exports
  from easyhard_jax.analysis import stage
  data = _dataset(config)
  stage.run_analysis(config, workdir, train_images=data.train_images,
                     test_images=data.test_images)
  exports.write_exports(config, workdir)


def _remove(config, workdir):
  from easyhard_jax.experiments import sweeps
  sweeps.run_sweep(config, workdir, 'remove')


def _compress(config, workdir):
  from easyhard_jax.experiments import sweeps
  sweeps.run_sweep(config, workdir, 'compress')


def _probe_causes(config, workdir):
  from easyhard_jax.experiments import causes
  causes.run_causes(config, workdir)


def _report(config, workdir):
  from easyhard_jax import report
  data = _dataset(config)
  path = report.build_report(config, workdir, train_images=data.train_images,
                             test_images=data.test_images)
  logging.info('Report: %s', path)


def _probe_checkpoints(config, workdir):
  from easyhard_jax.train import checkpoint_probe
  checkpoint_probe.probe_checkpoints(config, workdir)


def _records_complete(config, workdir) -> bool:
  from easyhard_jax.train import config_checks
  manifest = records.read_manifest(workdir)
  return all(manifest['archs'].get(a, {}).get('complete')
             for a in config_checks.arch_list(config))


def _exists(*parts) -> Callable[..., bool]:
  return lambda config, workdir: os.path.exists(os.path.join(workdir, *parts))


def _analysis_complete(config, workdir) -> bool:
  """analysis.json and the exports written after it (a kill between them)."""
  from easyhard_jax import exports
  paths = [os.path.join('analysis', 'analysis.json'),
           os.path.join('exports', 'scores_train.npz')]
  paths += [os.path.join('exports', 'keep_lists', f'{s}_keep{f:.2f}.csv')
            for f in config.compression.fractions
            for s in exports.KEEP_STRATEGIES]
  return all(os.path.exists(os.path.join(workdir, p)) for p in paths)


# name -> (run, is_complete); the order is the study's order.
STAGES = {
    'record': (_record, _records_complete),
    'analyze': (_analyze, _analysis_complete),
    'remove': (_remove, _exists('removal', 'results.json')),
    'compress': (_compress, _exists('compression', 'results.json')),
    'probe_causes': (_probe_causes, _exists('causes', 'results.json')),
    'report': (_report, _exists('report', 'index.html')),
}
# Run on request only (not part of --mode=study).
EXTRA_STAGES = {'probe_checkpoints': _probe_checkpoints}
MODES = ('study',) + tuple(STAGES) + tuple(EXTRA_STAGES)


def enable_compilation_cache(config) -> None:
  """Persists compiled programs, so resumes and reruns skip compilation."""
  path = config.get('compilation_cache_dir')
  if path:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(path))
    # 0.1 s, not JAX's default 1 s: the analysis and probe kernels compile
    # in 0.1-0.5 s each, and dozens of them made up most of a resumed small
    # study's time; op-by-op dispatch programs (< 0.1 s) stay uncached.
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.1)


def _record_timing(workdir: str, stage: str, seconds: float) -> None:
  path = os.path.join(workdir, 'timings.json')
  timings = {}
  if os.path.exists(path):
    with open(path) as f:
      timings = json.load(f)
  timings[stage] = round(seconds, 2)
  records.atomic_write_json(path, timings)


def run(config, workdir: str, mode: str = 'study') -> None:
  """Runs one stage, or every enabled stage in order for mode='study'."""
  if mode not in MODES:
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}.')
  from easyhard_jax import distributed
  distributed.maybe_initialize(config)  # Before any JAX computation.
  os.makedirs(workdir, exist_ok=True)
  enable_compilation_cache(config)
  writer = distributed.is_writer()
  if writer:
    records.atomic_write_json(os.path.join(workdir, 'config.json'),
                              json.loads(config.to_json_best_effort()))
  names = list(STAGES) if mode == 'study' else [mode]
  upstream_ran = False
  for name in names:
    fn, is_complete = STAGES.get(name, (EXTRA_STAGES.get(name), None))
    if mode == 'study':
      if not config.get('stages', {}).get(name, True):
        logging.info('Stage %s is switched off in config.stages.', name)
        continue
      if not upstream_ran and is_complete(config, workdir):
        logging.info('Stage %s is complete; skipping.', name)
        continue
    tick = time.time()
    logging.info('Stage %s starting.', name)
    fn(config, workdir)
    upstream_ran = True
    seconds = time.time() - tick
    logging.info('Stage %s done in %.1fs.', name, seconds)
    if writer:
      _record_timing(workdir, name, seconds)
