"""One name per stage, each stage checking its own config block.

A stage's name is its ``--mode``, its ``config.stages`` switch, its config
block and the directory it writes; the names it had before are refused
with the new one, and a workdir stamped under them stays current.
"""

import copy
import os

import pytest

from conftest import quick_config
from easyhard_jax import fingerprint
from easyhard_jax import runner
from easyhard_jax import stages
from easyhard_jax import validation

# (stage, a field of its own block, an impossible value).
OWN_FIELD = [
    ('records', 'batch_size', 0),
    ('analysis', 'analysis.source', 'neither'),
    ('removal', 'removal.fractions', (1.5,)),
    ('compression', 'compression.budget', 'hours'),
    ('causes', 'causes.variants', ('no_such_probe',)),
    ('heldout', 'heldout.ratios', (1.5,)),
    ('report', 'report.max_classes', 0),
    ('checkpoint_probes', 'checkpoint_probes.source', 'nowhere'),
]


def _set(config, dotted, value):
  *parents, leaf = dotted.split('.')
  node = config
  for p in parents:
    node = node[p]
  with config.unlocked():
    node[leaf] = value


def test_a_stage_has_one_name():
  config = quick_config()
  for stage in stages.STAGES:
    assert stage.out_dir == stage.name
    if stage.in_study:
      assert stage.name in config.stages, stage.name
  blocks = [s.name for s in stages.STAGES if s.name in config]
  assert set(blocks) >= {'analysis', 'removal', 'compression', 'causes',
                         'heldout', 'report', 'checkpoint_probes'}


@pytest.mark.parametrize('stage,field,value', OWN_FIELD)
def test_each_stage_checks_its_own_block(stage, field, value):
  config = quick_config()
  _set(config, field, value)
  with pytest.raises(ValueError, match=field.split('.')[-1]):
    stages.BY_NAME[stage].validate(config)
  with pytest.raises(ValueError, match=field.split('.')[-1]):
    validation.validate(config)
  for other in stages.STAGES:  # The field is its own stage's alone.
    if other.name != stage and other.validate is not None:
      other.validate(config)


@pytest.mark.parametrize('old', sorted(stages.RENAMED))
def test_an_old_mode_is_refused_naming_the_new_one(old, tmp_path):
  workdir = str(tmp_path / 'w')
  with pytest.raises(ValueError, match=f"'{stages.RENAMED[old]}'"):
    runner.run(quick_config(), workdir, old)
  assert not os.path.exists(workdir)  # Refused before any work.


def test_old_config_names_are_refused():
  config = quick_config()
  with config.unlocked():
    config.stages.probe_causes = False
  with pytest.raises(ValueError, match="'causes'"):
    validation.validate(config)
  config = quick_config()
  with config.unlocked():
    config.probe_checkpoints = copy.deepcopy(config.checkpoint_probes)
  with pytest.raises(ValueError, match="'checkpoint_probes'"):
    validation.validate(config)


def test_stamps_keep_the_names_they_were_written_with():
  """A workdir stamped before the rename stays current: the chained inputs
  keep their first keys, so the hashes are the ones written then."""
  config = quick_config()
  hashes = {'cnn': 'a' * 16}
  analysis = fingerprint.expected_stamp(config, 'analysis', hashes)
  removal = fingerprint.expected_stamp(config, 'removal', hashes)
  assert removal['inputs'] == {'analyze': analysis['hash']}
  assert removal['hash'] == fingerprint.digest(
      [removal['fields'], {'analyze': analysis['hash']}])
  assert analysis['inputs'] == {
      'record': fingerprint.expected_stamp(config, 'records', hashes)['hash']}
  report = fingerprint.expected_stamp(config, 'report', hashes)
  assert set(report['inputs']) == {'analyze', 'remove', 'compress',
                                   'probe_causes', 'compare'}
