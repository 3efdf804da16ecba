"""The train loop's actions fire on exactly their steps, in order.

Checked twice: on the generic Action rule, and on a real GroupRun (tiny
data, stubbed actions) where the loop itself decides when each runs,
including a resumed run, a partial last epoch and a probe at step 0.
"""

import numpy as np
import pytest

from conftest import quick_config, random_dataset
from easyhard_jax.storage import records
from easyhard_jax.train import actions
from easyhard_jax.train import loop
from easyhard_jax.train import run_spec


def test_action_is_due_on_its_steps_and_every_multiple():
  a = actions.Action.on('x', lambda s: None, steps=[0, 3], every_steps=4)
  assert [s for s in range(13) if a.due(s)] == [0, 3, 4, 8, 12]
  b = actions.Action.on('y', lambda s: None, every_steps=5)
  assert not b.due(0)  # Step 0 only through on_steps.
  with pytest.raises(ValueError, match='every_steps'):
    actions.Action.on('z', lambda s: None, every_steps=-1)


def test_run_due_runs_in_order():
  calls = []
  acts = [actions.Action.on(n, lambda s, n=n: calls.append((n, s)), steps)
          for n, steps in (('a', [2]), ('b', [1, 2]), ('c', [2]))]
  assert actions.run_due(acts, 2) == ['a', 'b', 'c']
  assert actions.run_due(acts, 1) == ['b']
  assert calls == [('a', 2), ('b', 2), ('c', 2), ('b', 1)]


def _run(tmp_path, config, start=0, **group):
  """A GroupRun whose actions only log (action, step); returns the log."""
  data = random_dataset(num_train=100)
  spec = run_spec.resolve(config, data, 'cnn', **group)
  run = loop.GroupRun(spec, data, str(tmp_path),
                      records.RecordWriter(str(tmp_path)))
  log = []

  def restore():
    run.states, run.start = run.t.init_states(), start

  run.restore = restore
  for name in ('flush_epoch', 'write_epoch_metrics', 'probe', 'keep_state',
               'save_checkpoint'):
    setattr(run, name, lambda s, name=name: log.append((name, s)))
  run.run()
  return spec, log


def _expected(spec, start=0):
  spe, total = spec.steps_per_epoch, spec.total_steps
  ends = {min(e * spe, total) for e in range(1, -(-total // spe) + 1)}
  saves = {s for s in ends if s == total or (
      s % spe == 0 and (s // spe) % spec.checkpoint_every_epochs == 0)}
  out = []
  for s in range(start if start == 0 else start + 1, total + 1):
    out += [(name, s) for name, due in (
        ('flush_epoch', s in ends), ('write_epoch_metrics', s in ends),
        ('probe', s in spec.probe_steps),
        ('keep_state', s in spec.analysis_steps), ('save_checkpoint',
                                                   s in saves)) if due]
  return out


@pytest.mark.slow
def test_loop_fires_each_action_on_exactly_its_steps(tmp_path):
  # 100 examples, batch 32: 4 steps per epoch; 3 epochs; probes at init,
  # a quarter and a half of epoch 1 and every epoch end; all probes kept;
  # checkpoints every 2 epochs and at the end.
  config = quick_config(**{'epochs': 3, 'batch_size': 32,
                           'probe.at_init': True,
                           'probe.first_epoch_fractions': (0.25, 0.5),
                           'analysis_checkpoints': 'all_probes',
                           'checkpoint_every_epochs': 2})
  spec, log = _run(tmp_path / 'a', config)
  assert spec.probe_steps == (0, 1, 2, 4, 8, 12)
  assert log == _expected(spec)
  assert [s for n, s in log if n == 'save_checkpoint'] == [8, 12]
  assert [n for n, s in log if s == 8] == [
      'flush_epoch', 'write_epoch_metrics', 'probe', 'keep_state',
      'save_checkpoint']
  # Resumed after epoch 2: nothing at or before step 8 runs again.
  spec, log = _run(tmp_path / 'b', config, start=8)
  assert log == _expected(spec, start=8)
  assert log and min(s for _, s in log) == 12  # The next probe...


def test_loop_flushes_a_partial_last_epoch(tmp_path):
  # A step budget that ends inside epoch 3 (budget='steps').
  config = quick_config(**{'epochs': 3, 'batch_size': 32,
                           'probe.first_epoch_fractions': ()})
  spec, log = _run(tmp_path, config, total_steps=10, program='cnn.0')
  assert spec.analysis_steps == ()  # An experiment group keeps none.
  assert log == _expected(spec)
  assert [s for n, s in log if n == 'flush_epoch'] == [4, 8, 10]
  assert [s for n, s in log if n == 'save_checkpoint'] == [4, 8, 10]
  assert np.array_equal([s for n, s in log if n == 'probe'], [4, 8, 10])
