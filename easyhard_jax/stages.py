"""The study's stages: one table, stage -> entry point and config check.

:data:`STAGES` lists every stage in the study's order. A stage has one
name: its ``--mode``, its ``config.stages`` switch, its config block and the
directory it writes (``records``, ``analysis``, ``removal``, ...). Its row
holds its entry point (a function of ``(config, workdir)`` below, which
imports the stage's home module only when the stage runs), its config check
(``check_<name>``, the home module's own validation, run before any work)
and how the runner (``runner.py``: skip logic, stamps, lock, timings) treats
it. Each entry point and check names the home module's function;
tests/test_layout.py checks that they exist. Old stage names
(:data:`RENAMED`) are refused with the new one.
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


def records(config, workdir: str) -> None:
  """Trains every architecture's members; writes the records."""
  from easyhard_jax.train import ensemble
  _needs_own_training(config, workdir, 'records')
  ensemble.record_study(config, workdir)


def check_records(config) -> None:
  """The training fields, and whether a member fits the device's memory."""
  from easyhard_jax.train import config_checks
  config_checks.validate(config)
  config_checks.check_memory(config)


def analysis(config, workdir: str) -> None:
  """Scores, sets, agreement and similarity; then the exports."""
  from easyhard_jax.analysis import analyze
  from easyhard_jax.analysis import exports
  data = _dataset(config)
  analyze.run_analysis(config, workdir, train_images=data.train_images,
                       test_images=data.test_images)
  exports.write_exports(config, workdir)


def check_analysis(config) -> None:
  """config.analysis: window, set rule, levels, sizes."""
  from easyhard_jax.analysis import config_checks
  config_checks.validate(config)


def removal(config, workdir: str) -> None:
  """Retrains without the easiest, hardest or random examples."""
  from easyhard_jax.experiments import sweeps
  _needs_own_training(config, workdir, 'removal')
  sweeps.run_sweep(config, workdir, 'removal')


def check_removal(config) -> None:
  """config.removal: fractions, strategies, scores, budget, archs."""
  from easyhard_jax.experiments import sweeps
  sweeps.validate_config(config, 'removal')


def compression(config, workdir: str) -> None:
  """Retrains on subsets chosen by the scores, against random subsets."""
  from easyhard_jax.experiments import sweeps
  _needs_own_training(config, workdir, 'compression')
  sweeps.run_sweep(config, workdir, 'compression')


def check_compression(config) -> None:
  """config.compression: fractions, strategies, scores, budget, archs."""
  from easyhard_jax.experiments import sweeps
  sweeps.validate_config(config, 'compression')


def causes(config, workdir: str) -> None:
  """Retrains with one suspected cause changed per probe."""
  from easyhard_jax.experiments import causes as causes_lib
  _needs_own_training(config, workdir, 'causes')
  causes_lib.run_causes(config, workdir)


def check_causes(config) -> None:
  """config.causes: variants, sizes, archs inside the study."""
  from easyhard_jax.experiments import causes as causes_lib
  causes_lib.validate_config(config)


def heldout(config, workdir: str) -> None:
  """Members on random subsets: held-out consistency, C-score, memorization."""
  from easyhard_jax.experiments import heldout as heldout_lib
  _needs_own_training(config, workdir, 'heldout')
  heldout_lib.run_heldout(config, workdir)


def check_heldout(config) -> None:
  """config.heldout: ratios, members, archs."""
  from easyhard_jax.experiments import heldout as heldout_lib
  heldout_lib.validate_config(config)


def report(config, workdir: str) -> None:
  """The HTML report, summary.md and figures from the workdir's files."""
  from easyhard_jax.report import build
  data = _dataset(config)
  path = build.build_report(config, workdir, train_images=data.train_images,
                            test_images=data.test_images)
  logging.info('Report: %s', path)


def check_report(config) -> None:
  """config.report: the example grids' sizes."""
  from easyhard_jax.report import build
  build.validate_config(config)


def checkpoint_probes(config, workdir: str) -> None:
  """Records, features and GraNd from the saved checkpoints."""
  from easyhard_jax.probes import checkpoint_probes as probes_lib
  _needs_own_training(config, workdir, 'checkpoint_probes')
  probes_lib.checkpoint_probes(config, workdir)


def check_checkpoint_probes(config) -> None:
  """config.checkpoint_probes: source, splits, steps, batch size, archs."""
  from easyhard_jax.probes import checkpoint_probes as probes_lib
  probes_lib.validate_config(config)


def compare(config, workdir: str) -> None:
  """The study's scores against a published per-example score."""
  from easyhard_jax.analysis import compare as compare_lib
  compare_lib.run_compare(config, workdir)


@dataclasses.dataclass(frozen=True)
class Stage:
  """One row of the table.

  Attributes:
    name: the stage's one name: its ``--mode`` value, its
      ``config.stages`` field, its config block (where it has one) and the
      directory it writes under the workdir.
    run: the entry point, ``run(config, workdir)``.
    validate: ``validate(config)``: raises ValueError naming any of the
      stage's own config fields that is wrong (None: it has none). Every
      stage's check runs before any work, whatever the mode.
    out_dir: the directory it writes; a stamped stage (see fingerprint.py)
      keeps its stamp there. Equal to ``name`` (tests/test_layout.py).
    in_study: part of ``--mode=study`` (else run on request only).
    stamped: its outputs carry a stamp (records carry fingerprints).
    writer_only: host-only work: process 0 runs it, the others skip it.
    also_writes: directories besides ``out_dir``, replaced along with it.
    required: files under ``out_dir`` without which a stamped output counts
      as unfinished (an older version's output lacks them: the stage reruns).
  """
  name: str
  run: Callable[[Any, str], None]
  validate: Callable[[Any], None] | None = None
  in_study: bool = True
  stamped: bool = True
  writer_only: bool = False
  also_writes: tuple[str, ...] = ()
  required: tuple[str, ...] = ()

  @property
  def out_dir(self) -> str:
    return self.name


STAGES: tuple[Stage, ...] = (
    Stage('records', records, check_records, stamped=False),
    Stage('analysis', analysis, check_analysis, writer_only=True,
          also_writes=('exports', 'compare'), required=('scores_train.npz',)),
    Stage('removal', removal, check_removal),
    Stage('compression', compression, check_compression),
    Stage('causes', causes, check_causes),
    Stage('heldout', heldout, check_heldout),
    Stage('report', report, check_report, writer_only=True),
    Stage('checkpoint_probes', checkpoint_probes, check_checkpoint_probes,
          in_study=False, stamped=False),
    Stage('compare', compare, in_study=False, writer_only=True),
)
# The names stages had before each took its directory's name: a mode or a
# config.stages field under an old name is refused, naming the new one.
RENAMED = {'record': 'records', 'analyze': 'analysis', 'remove': 'removal',
           'compress': 'compression', 'probe_causes': 'causes',
           'probe_checkpoints': 'checkpoint_probes'}


def renamed_message(old: str, where: str) -> str:
  """What to write instead of a stage's old name ``old`` in ``where``."""
  return (f'{where} {old!r} is now {RENAMED[old]!r}: each stage has one name, '
          'that of the directory it writes (records, analysis, removal, '
          'compression, causes, checkpoint_probes). Workdirs written under '
          'the old names are read as they are.')


def validate(config) -> None:
  """Runs every stage's own config check (ValueError names the field)."""
  old = [s for s in RENAMED if s in (config.get('stages') or {})]
  if old:
    raise ValueError(renamed_message(old[0], 'config.stages field'))
  if config.get('probe_checkpoints') is not None:
    raise ValueError(renamed_message('probe_checkpoints', 'config block'))
  for stage in STAGES:
    if stage.validate is not None:
      stage.validate(config)


BY_NAME = {s.name: s for s in STAGES}
STUDY = tuple(s.name for s in STAGES if s.in_study)
MODES = ('study',) + tuple(BY_NAME)
