"""Where a workdir's records came from: this tool's trainer or a log.

Records written by ``DynamicsLog`` carry ``origin = 'dynamics_log'`` in
each member group's fingerprint fields. The analysis, the report and the
comparison read them like any records; the stages that retrain members
with this tool (removal and compression sweeps, cause probes, checkpoint
probes) cannot, because nothing here knows your model or loop: they refuse
such a workdir with :func:`refuse_if_logged`.
"""

from __future__ import annotations

import os

from easyhard_jax.storage import files
from easyhard_jax.storage import records

ORIGIN = 'dynamics_log'
# Stages that train or restore this tool's models, and what they do.
NEEDS_OWN_TRAINING = {
    'records': 'trains the config\'s architectures',
    'removal': 'retrains without the easiest / hardest examples',
    'compression': 'retrains on compressed subsets',
    'causes': 'retrains with one suspected cause changed',
    'heldout': 'trains members on random subsets',
    'checkpoint_probes': 'restores this tool\'s saved checkpoints',
}


def logged_groups(workdir: str) -> list[str]:
  """Member groups of ``workdir``'s records written by a DynamicsLog."""
  if not files.exists(os.path.join(records.records_dir(workdir),
                                     'manifest.json')):
    return []
  try:
    manifest = records.read_manifest(workdir)
  except ValueError:  # Damaged: the records stage rebuilds it from chunks.
    return []
  return [a for a in manifest['arch_order']
          if (manifest['archs'][a].get('fingerprint') or {}).get(
              'fields', {}).get('origin') == ORIGIN]


def refuse_if_logged(workdir: str, stage: str, archs=None) -> None:
  """Raises when ``stage`` needs this tool's training and records are logged.

  Args:
    workdir: the study workdir.
    stage: a stage name; stages outside :data:`NEEDS_OWN_TRAINING` pass.
    archs: for 'records', the config's architectures: only a clash with a
      logged group refuses (other groups may be trained beside it).
  """
  if stage not in NEEDS_OWN_TRAINING:
    return
  logged = logged_groups(workdir)
  if stage == 'records' and archs is not None:
    logged = [a for a in logged if a in set(archs)]
  if logged:
    raise ValueError(
        f'--mode={stage} {NEEDS_OWN_TRAINING[stage]}, which needs this '
        f'tool\'s training, but the records of {logged} in {workdir} were '
        'logged from your own training loop (easyhard_jax.interop.'
        'DynamicsLog). On such a workdir run --mode=analysis, --mode=report '
        'and --mode=compare; to run the sweeps and cause probes, train the '
        'study with this tool in another --workdir.')
