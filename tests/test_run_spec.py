"""The run spec: frozen, resolved once, bad values named; members; defaults.

Also the rule that keeps the spec honest: no config field is read with a
default (``.get('field', default)``) that disagrees with configs/default.py.
"""

import ast
import dataclasses
import math
import os

import jax
import numpy as np
import pytest

from configs import default
from conftest import quick_config, random_dataset
from easyhard_jax.train import ensemble
from easyhard_jax.train import members as members_lib
from easyhard_jax.train import optim
from easyhard_jax.train import probe_schedule
from easyhard_jax.train import run_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _spec(**kw):
  return run_spec.resolve(quick_config(), random_dataset(num_train=100),
                          'cnn', **kw)


def test_spec_is_frozen_and_holds_resolved_values():
  spec = _spec()
  with pytest.raises(dataclasses.FrozenInstanceError):
    spec.total_steps = 1
  with pytest.raises(ValueError):  # The subset mask is read-only too.
    spec.keep[0, 0] = False
  config = quick_config()
  assert spec.steps_per_epoch == math.ceil(100 / config.batch_size)
  assert spec.total_steps == config.epochs * spec.steps_per_epoch
  assert spec.program == 'cnn' and spec.num_members == config.seeds_per_arch
  assert spec.probe_steps == tuple(probe_schedule.probe_schedule(
      config, spec.steps_per_epoch, spec.total_steps))
  assert spec.optimizer == optim.Optimizer.from_config(config)
  assert spec.optimizer.nesterov == config.optimizer.nesterov
  # The fingerprint the records carry, as the stage computes it.
  assert spec.fingerprint == ensemble.study_fingerprint(config, 'cnn')
  # An experiment group keeps no analysis checkpoints.
  assert _spec(program='cnn.0').analysis_steps == ()


@pytest.mark.parametrize('override,match', [
    ({'optimizer.name': 'lion'}, 'optimizer.name'),
    ({'optimizer.schedule': 'linear'}, 'optimizer.schedule'),
    ({'probe.first_epoch_fractions': (0.5, 1.0)}, 'first_epoch_fractions'),
    ({'probe.every_epochs': 0}, 'every_epochs'),
    ({'analysis_checkpoints': 'some'}, 'analysis_checkpoints'),
    ({'dtype': 'float16'}, 'dtype'),
    ({'member_strategy': 'pmap'}, 'member_strategy'),
    ({'checkpoint_every_epochs': 0}, 'checkpoint_every_epochs'),
    ({'epochs': 0}, 'at least one step'),
])
def test_resolve_names_a_bad_value(override, match):
  config = quick_config(**override)
  with pytest.raises(ValueError, match=match):
    run_spec.resolve(config, random_dataset(num_train=100), 'cnn')


def test_resolve_rejects_bad_groups():
  data = random_dataset(num_train=100)
  config = quick_config()
  uneven = np.arange(100)[None, :] < np.asarray([[50], [60]])
  with pytest.raises(ValueError, match='same nonzero count'):
    run_spec.resolve(config, data, 'cnn', keep=uneven)
  with pytest.raises(ValueError, match='keep must be bool'):
    run_spec.resolve(config, data, 'cnn', keep=np.ones((3, 100), bool))
  other = members_lib.study_members('cnn', 2, root_seed=config.seed + 1)
  with pytest.raises(ValueError, match='root seed'):
    run_spec.resolve(config, data, 'cnn', members=other)
  twins = [members_lib.Member.of('cnn/s0', 'cnn', s, config.seed)
           for s in (0, 1)]
  with pytest.raises(ValueError, match='repeat'):
    run_spec.resolve(config, data, 'cnn', members=twins)


def test_members_read_as_the_dicts_records_store():
  study = members_lib.study_members('cnn', 2, root_seed=0)
  assert [dict(m) for m in study] == [
      {'name': f'cnn/s{i}', 'arch': 'cnn', 'seed': i, 'root_seed': 0}
      for i in range(2)]
  m = members_lib.Member.of('cnn/r0.5/s1', 'cnn', 1, 0, 'heldout/r0.5',
                            ratio=0.5, kept=50)
  assert dict(m) == {'name': 'cnn/r0.5/s1', 'arch': 'cnn', 'seed': 1,
                     'root_seed': 0, 'stream': 'heldout/r0.5',
                     'ratio': 0.5, 'kept': 50}
  assert m['ratio'] == 0.5 and m.get('stream') == 'heldout/r0.5'
  assert members_lib.Member.coerce(dict(m), 'cnn', 0) == m
  assert hash(m) == hash(members_lib.Member.coerce(dict(m), 'cnn', 0))
  with pytest.raises(dataclasses.FrozenInstanceError):
    m.seed = 2
  # Keys: the stream is folded in first; a study member has none.
  root = jax.random.fold_in(jax.random.key(0),
                            members_lib.stream_salt('cnn'))
  np.testing.assert_array_equal(
      jax.random.key_data(study[1].key()),
      jax.random.key_data(jax.random.fold_in(root, 1)))
  assert not np.array_equal(jax.random.key_data(m.key()),
                            jax.random.key_data(study[1].key()))


def _default_fields():
  def flat(d, prefix=''):
    for k, v in d.items():
      if hasattr(v, 'items'):
        yield from flat(v, prefix + k + '.')
      else:
        yield prefix + k, v
  return dict(flat(default.get_config()))


def _config_reads_with_defaults(tree):
  """(dotted field, default literal, line) of each ``config...get(k, d)``.

  A receiver counts as the config when it is ``config`` (or an attribute
  chain from it), or a local name assigned from such a chain in the same
  function (``opt = config.optimizer``).
  """

  def chain(node):
    parts = []
    while isinstance(node, ast.Attribute):
      parts.append(node.attr)
      node = node.value
    if isinstance(node, ast.Name):
      return node.id, parts[::-1]
    return None, None

  for fn in ast.walk(tree):
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
      continue
    alias = {'config': []}
    for node in ast.walk(fn):
      if (isinstance(node, ast.Assign) and len(node.targets) == 1 and
          isinstance(node.targets[0], ast.Name)):
        root, parts = chain(node.value)
        if root in alias:
          alias[node.targets[0].id] = alias[root] + parts
    for node in ast.walk(fn):
      if not (isinstance(node, ast.Call) and
              isinstance(node.func, ast.Attribute) and
              node.func.attr == 'get' and len(node.args) == 2 and
              isinstance(node.args[0], ast.Constant)):
        continue
      root, parts = chain(node.func.value)
      if root not in alias:
        continue
      try:
        value = ast.literal_eval(node.args[1])
      except ValueError:
        value = ast.unparse(node.args[1])
      yield ('.'.join(alias[root] + parts + [node.args[0].value]), value,
             node.lineno)


def test_no_config_field_is_read_with_a_default_that_disagrees():
  fields = _default_fields()
  bad, seen = [], 0
  for top, _, names in os.walk(os.path.join(ROOT, 'easyhard_jax')):
    for name in sorted(names):
      if not name.endswith('.py'):
        continue
      path = os.path.join(top, name)
      with open(path) as f:
        tree = ast.parse(f.read())
      for field, value, line in _config_reads_with_defaults(tree):
        if field not in fields:
          continue  # Optional fields default.py leaves out (probe.at_steps).
        seen += 1
        want = fields[field]
        if isinstance(want, tuple) and isinstance(value, (list, tuple)):
          value = tuple(value)
        if value != want:
          bad.append(f'{os.path.relpath(path, ROOT)}:{line} reads {field} '
                     f'with default {value!r}; configs/default.py: {want!r}')
  assert seen >= 5  # The scan finds the reads it is about.
  assert not bad, '\n'.join(bad)


def test_config_carries_no_random_stream_field():
  # The experiments' streams are arguments (run_spec.resolve(stream=...)),
  # not a hidden config field.
  assert 'rng_stream' not in default.get_config()
  vstream = [m['stream'] for m in run_spec.study_members(
      quick_config(), 'cnn', stream='causes/adam')]
  assert vstream == ['causes/adam'] * quick_config().seeds_per_arch
