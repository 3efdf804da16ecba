"""The study's stages: one table, stage -> entry point.

:data:`STAGES` lists every ``--mode`` in the study's order: its entry point
(a function of ``(config, workdir)`` below, which imports the stage's home
module only when the stage runs), the directory it writes, and how the
runner (``runner.py``: skip logic, stamps, lock, timings) treats it. Each
entry point names the stage's home module and function; tests/test_layout.py
checks that they exist.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from absl import logging


def _dataset(config):
  from easyhard_jax import data
  return data.load(config)


def _needs_own_training(config, workdir: str, stage: str) -> None:
  """Refuses a workdir whose records were logged from outside training."""
  from easyhard_jax import config_fields
  from easyhard_jax.interop import origin
  origin.refuse_if_logged(workdir, stage, config_fields.arch_list(config))


def record(config, workdir: str) -> None:
  """Trains every architecture's members; writes the records."""
  from easyhard_jax.train import ensemble
  _needs_own_training(config, workdir, 'record')
  ensemble.record_study(config, workdir)


def analyze(config, workdir: str) -> None:
  """Scores, sets, agreement and similarity; then the exports."""
  from easyhard_jax.analysis import exports
  from easyhard_jax.analysis import analyze as analyze_lib
  data = _dataset(config)
  analyze_lib.run_analysis(config, workdir, train_images=data.train_images,
                           test_images=data.test_images)
  exports.write_exports(config, workdir)


def remove(config, workdir: str) -> None:
  """Retrains without the easiest, hardest or random examples."""
  from easyhard_jax.experiments import sweeps
  _needs_own_training(config, workdir, 'remove')
  sweeps.run_sweep(config, workdir, 'remove')


def compress(config, workdir: str) -> None:
  """Retrains on subsets chosen by the scores, against random subsets."""
  from easyhard_jax.experiments import sweeps
  _needs_own_training(config, workdir, 'compress')
  sweeps.run_sweep(config, workdir, 'compress')


def probe_causes(config, workdir: str) -> None:
  """Retrains with one suspected cause changed per probe."""
  from easyhard_jax.experiments import causes
  _needs_own_training(config, workdir, 'probe_causes')
  causes.run_causes(config, workdir)


def heldout(config, workdir: str) -> None:
  """Members on random subsets: held-out consistency, C-score, memorization."""
  from easyhard_jax.experiments import heldout as heldout_lib
  _needs_own_training(config, workdir, 'heldout')
  heldout_lib.run_heldout(config, workdir)


def report(config, workdir: str) -> None:
  """The HTML report, summary.md and figures from the workdir's files."""
  from easyhard_jax.report import build
  data = _dataset(config)
  path = build.build_report(config, workdir, train_images=data.train_images,
                            test_images=data.test_images)
  logging.info('Report: %s', path)


def probe_checkpoints(config, workdir: str) -> None:
  """Records, features and GraNd from the saved checkpoints."""
  from easyhard_jax.probes import probe_checkpoints as stage
  _needs_own_training(config, workdir, 'probe_checkpoints')
  stage.probe_checkpoints(config, workdir)


def compare(config, workdir: str) -> None:
  """The study's scores against a published per-example score."""
  from easyhard_jax.analysis import reference_compare
  reference_compare.run_compare(config, workdir)


@dataclasses.dataclass(frozen=True)
class Stage:
  """One row of the table.

  Attributes:
    name: the ``--mode`` value and ``config.stages`` field.
    run: the entry point, ``run(config, workdir)``.
    out_dir: the directory it writes under the workdir; a stamped stage
      (see fingerprint.py) keeps its stamp there.
    in_study: part of ``--mode=study`` (else run on request only).
    stamped: its outputs carry a stamp (records carry fingerprints).
    writer_only: host-only work: process 0 runs it, the others skip it.
    also_writes: directories besides ``out_dir``, replaced along with it.
    required: files under ``out_dir`` without which a stamped output counts
      as unfinished (an older version's output lacks them: the stage reruns).
  """
  name: str
  run: Callable[[Any, str], None]
  out_dir: str
  in_study: bool = True
  stamped: bool = True
  writer_only: bool = False
  also_writes: tuple[str, ...] = ()
  required: tuple[str, ...] = ()


STAGES: tuple[Stage, ...] = (
    Stage('record', record, 'records', stamped=False),
    Stage('analyze', analyze, 'analysis', writer_only=True,
          also_writes=('exports', 'compare'), required=('scores_train.npz',)),
    Stage('remove', remove, 'removal'),
    Stage('compress', compress, 'compression'),
    Stage('probe_causes', probe_causes, 'causes'),
    Stage('heldout', heldout, 'heldout'),
    Stage('report', report, 'report', writer_only=True),
    Stage('probe_checkpoints', probe_checkpoints, 'checkpoint_probes',
          in_study=False, stamped=False),
    Stage('compare', compare, 'compare', in_study=False, writer_only=True),
)
BY_NAME = {s.name: s for s in STAGES}
STUDY = tuple(s.name for s in STAGES if s.in_study)
MODES = ('study',) + tuple(BY_NAME)
