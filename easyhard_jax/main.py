"""easyhard_jax command line: a thin absl app over the study stages.

  python -m easyhard_jax.main --config=configs/digits.py --workdir=/tmp/eh

Flags are only --config (with --config.field=value overrides), --workdir and
--mode; every knob lives in the config. The stages are listed in
``easyhard_jax.stages`` and run by ``easyhard_jax.runner``, so both can be
imported and tested.
"""

import logging as py_logging

from absl import app
from absl import flags
from ml_collections import config_flags

from easyhard_jax import runner
from easyhard_jax import stages

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Study config file.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for records, checkpoints and '
                    'results; a rerun resumes from it.')
# A string, not an enum: an old stage name gets the runner's message naming
# the new one (stages.RENAMED) instead of absl's list of values.
flags.DEFINE_string('mode', 'study', 'Stage to run, one of '
                    f'{", ".join(stages.MODES)}; study runs every stage of '
                    'the study in order.')
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries(py_logging.Filter):
  """Drops orbax's per-save INFO chatter; warnings and errors still show."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or '/orbax/' not in (
        record.pathname or '')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  for handler in py_logging.getLogger().handlers:
    handler.addFilter(_QuietLibraries())
  runner.run(FLAGS.config, FLAGS.workdir, FLAGS.mode)


if __name__ == '__main__':
  app.run(main)
