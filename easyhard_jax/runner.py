"""The runner: runs one stage, or the whole study, of ``stages.STAGES``.

``--mode=study`` runs every study stage in order. A stage whose outputs match
the config (records: their fingerprints; later stages: their stamps, see
fingerprint.py) is skipped, unless a stage before it ran in this invocation,
so an interrupted study resumes where it stopped and a changed config field
reruns what it changes. Stages can be switched off with
``config.stages.<name> = False``. An explicit ``--mode=X`` always runs X
(which itself resumes its finished parts).

Around the stages it validates the config, holds the workdir lock, writes
``config.json``, ``run_log.jsonl`` and ``timings.json``, and turns on the
compilation cache.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import time

import jax
from absl import logging

from easyhard_jax import config_fields
from easyhard_jax.storage import files
from easyhard_jax import fingerprint
from easyhard_jax.storage import records
from easyhard_jax import stages


def _record_hashes(config) -> dict[str, str]:
  """{arch: records fingerprint hash} of the config's architectures."""
  # pylint: disable-next=g-import-not-at-top
  from easyhard_jax.train import ensemble
  return {a: ensemble.study_fingerprint(config, a)['hash']
          for a in config_fields.arch_list(config)}


def _records_complete(config, workdir, hashes=None) -> bool:
  """Every config arch finished, with the config's fingerprint."""
  try:
    manifest = records.read_manifest(workdir)
  except ValueError:  # Damaged: the records stage rebuilds it.
    return False
  entries, root = manifest['archs'], records.records_dir(workdir)
  return all(records.arch_complete(manifest, a, root) and
             entries[a].get('fingerprint', {}).get('hash') == h
             for a, h in (hashes or _record_hashes(config)).items())


def is_complete(config, workdir: str, stage: str) -> bool:
  """True when ``stage``'s outputs match what the config expects.

  Records: every architecture finished with the config's fingerprint. Later
  stages: the stamp in the stage's directory equals the expected stamp (its
  config fields and its inputs' stamps), so a changed field or a kill before
  the stamp reruns the stage.
  """
  if stage == 'records':
    return _records_complete(config, workdir)
  stored = fingerprint.read_stamp(workdir, stages.BY_NAME[stage].out_dir)
  expected = fingerprint.expected_stamp(config, stage, _record_hashes(config),
                                        workdir)
  if not (stored and stored.get('hash') == expected['hash']):
    return False
  out_dir = os.path.join(workdir, stages.BY_NAME[stage].out_dir)
  missing = [f for f in stages.BY_NAME[stage].required
             if not files.exists(os.path.join(out_dir, f))]
  if missing:  # Written by an older version: the stage runs again.
    logging.warning('Stage %s: no %s (an older version\'s output); running '
                    'it again.', stage, missing)
    return False
  damaged = files.unreadable_outputs(out_dir)
  if damaged:  # As a missing stamp: the stage runs again.
    logging.warning('Stage %s: unreadable outputs %s; running it again.',
                    stage, damaged)
  return not damaged


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
  if files.exists(path):
    try:
      with files.open_file(path) as f:
        timings = json.load(f)
    except ValueError:
      timings = {}  # Informational only: start it again.
  # A workdir timed under the stages' old names keeps one entry per stage.
  timings = {stages.RENAMED.get(k, k): v for k, v in timings.items()}
  timings[stage] = round(seconds, 2)
  files.atomic_write_json(path, timings)


def _write_config_json(config, workdir: str, hashes) -> None:
  """``config.json``: the config of the records the workdir holds.

  Written when every architecture's records are complete with this config's
  fingerprints (created, replaced or found so), never by an invocation whose
  records stage failed or has not run: the report's header shows it.
  """
  try:
    complete = _records_complete(config, workdir, hashes)
  except ValueError:  # A damaged manifest: the records stage repairs it.
    complete = False
  if complete:
    files.atomic_write_json(os.path.join(workdir, 'config.json'),
                            json.loads(config.to_json_best_effort()))


def _log_invocation(config, workdir: str, mode: str) -> None:
  """One line of ``run_log.jsonl`` per invocation (config.json: see above)."""
  cfg = json.loads(config.to_json_best_effort())
  entry = {'time': datetime.datetime.now().isoformat(timespec='seconds'),
           'pid': os.getpid(), 'host': socket.gethostname(), 'mode': mode,
           'command': sys.argv, 'config': cfg}
  files.append_text(os.path.join(workdir, 'run_log.jsonl'),
                    json.dumps(entry, sort_keys=True) + '\n')


def run(config, workdir: str, mode: str = 'study') -> None:
  """Runs one stage, or every enabled study stage in order for 'study'.

  Every config field is checked first, on every process, before any data is
  loaded. The workdir is locked for the whole invocation (process 0 of a
  multi-process run holds the lock); only process 0 writes files.

  Args:
    config: the study ConfigDict.
    workdir: the study workdir (created if absent).
    mode: 'study' or a stage name of ``stages.STAGES``.
  """
  if mode in stages.RENAMED:
    raise ValueError(stages.renamed_message(mode, '--mode'))
  if mode not in stages.MODES:
    raise ValueError(f'mode must be one of {stages.MODES}, got {mode!r}.')
  # pylint: disable=g-import-not-at-top
  from easyhard_jax import distributed
  from easyhard_jax import validation
  # pylint: enable=g-import-not-at-top
  distributed.maybe_initialize(config)  # Before any JAX computation.
  validation.validate(config, mode, workdir)  # Before the lock, any deletion.
  writer = distributed.is_writer()
  files.set_writer(writer)
  lock = files.WorkdirLock(workdir)
  if writer:
    lock.acquire()
  try:
    if writer:
      removed = files.clear_stale_temp(workdir)
      if removed:
        logging.info('Removed %d temp files left by a killed run.', removed)
      _log_invocation(config, workdir, mode)
    enable_compilation_cache(config)
    _run_stages(config, workdir, mode, writer)
  finally:
    lock.release()


def _clear_stale_outputs(config, workdir: str, stage: stages.Stage,
                         hashes) -> None:
  """Before a stage runs: drop its stamp, and outputs of another config.

  Outputs without a stamp are this config's unfinished work (a killed run):
  the stage resumes from them. Outputs whose stamp differs were made from
  other config values or inputs: they are removed, naming what changed.
  """
  stored = fingerprint.read_stamp(workdir, stage.out_dir)
  expected = fingerprint.expected_stamp(config, stage.name, hashes, workdir)
  if stored and stored.get('hash') != expected['hash']:
    changed = fingerprint.differences(stored.get('fields', {}),
                                      expected['fields'])
    inputs = [s for s, h in expected.get('inputs', {}).items()
              if stored.get('inputs', {}).get(s) != h]
    logging.warning(
        'Stage %s: replacing outputs made with other values (%s%s).',
        stage.name, fingerprint.describe(changed) or 'no own field',
        f'; changed inputs: {inputs}' if inputs else '')
    for d in (stage.out_dir,) + stage.also_writes:
      fingerprint.remove_outputs(os.path.join(workdir, d))
  else:
    fingerprint.invalidate(workdir, stage.out_dir)
  for name, stage_dir in fingerprint.OPTIONAL_INPUTS.get(stage.name,
                                                         {}).items():
    path = os.path.join(workdir, stage_dir)
    if files.lexists(path) and not fingerprint.current_stamp(
        config, name, hashes, workdir, stage_dir):
      # Unstamped (killed) or made from another analysis or reference: the
      # stage would show it as current.
      logging.warning('Removing %s: made from other inputs or unfinished; '
                      'rerun --mode=%s to have it in the %s.', path, name,
                      stage.name)
      fingerprint.remove_outputs(path)


def _run_stages(config, workdir: str, mode: str, writer: bool) -> None:
  # pylint: disable-next=g-import-not-at-top
  from easyhard_jax import distributed
  names = stages.STUDY if mode == 'study' else (mode,)
  hashes = _record_hashes(config)
  if writer:
    _write_config_json(config, workdir, hashes)
  upstream_ran = False
  for name in names:
    stage = stages.BY_NAME[name]
    if mode == 'study':
      if not config.get('stages', {}).get(name, True):
        logging.info('Stage %s is switched off in config.stages.', name)
        continue
      done = not upstream_ran and is_complete(config, workdir, name)
      if distributed.shared_decision(done):
        logging.info('Stage %s is complete; skipping.', name)
        continue
    if stage.writer_only and not writer:
      upstream_ran = True
      continue
    if stage.stamped and writer:
      _clear_stale_outputs(config, workdir, stage, hashes)
    if not stage.writer_only:  # Nothing read before process 0 cleared it.
      distributed.barrier(f'stage_start:{name}')
    tick = time.time()
    logging.info('Stage %s starting.', name)
    stage.run(config, workdir)
    upstream_ran = True
    if name == 'records' and writer:
      _write_config_json(config, workdir, hashes)
    if stage.stamped and writer:
      fingerprint.commit_stage(
          workdir, stage.out_dir,
          fingerprint.expected_stamp(config, name, hashes, workdir))
    seconds = time.time() - tick
    logging.info('Stage %s done in %.1fs.', name, seconds)
    if writer:
      _record_timing(workdir, name, seconds)
