"""MetricsWriter: JSON lines + TensorBoard event files without TensorFlow."""

import json
import math
import os
import sys

import numpy as np
import pytest

from easyhard_jax.storage import metrics_writer

STEPS = [(0, {'loss': 2.5, 'acc': 0.1}),
         (10, {'loss': np.float32(1.25), 'acc': 0.5}),
         (20, {'loss': 0.75, 'acc': float('nan')})]


def _write(workdir, **kwargs):
  with metrics_writer.MetricsWriter(str(workdir), **kwargs) as w:
    for step, scalars in STEPS:
      w.write(step, scalars, prefix='train')
    w.write(20, {'acc': 0.9}, prefix='test/', kind='probe', accs=[0.9, 1])
  return w


def test_tensorboard_events_read_back_without_tensorflow(tmp_path,
                                                         monkeypatch):
  # None in sys.modules makes `import tensorflow` raise ImportError.
  monkeypatch.setitem(sys.modules, 'tensorflow', None)
  from tensorboard.backend.event_processing import event_accumulator
  w = _write(tmp_path)
  files = os.listdir(w.tensorboard_dir)
  assert files and all(f.startswith('events.out.tfevents') for f in files)
  acc = event_accumulator.EventAccumulator(w.tensorboard_dir)
  acc.Reload()
  assert sorted(acc.Tags()['scalars']) == ['test/acc', 'train/acc',
                                          'train/loss']
  loss = acc.Scalars('train/loss')
  assert [e.step for e in loss] == [0, 10, 20]
  np.testing.assert_allclose([e.value for e in loss], [2.5, 1.25, 0.75])
  train_acc = acc.Scalars('train/acc')
  assert train_acc[1].value == pytest.approx(0.5)
  assert math.isnan(train_acc[2].value)
  assert [(e.step, e.value) for e in acc.Scalars('test/acc')] == [
      (20, pytest.approx(0.9))]


def test_json_lines_hold_steps_and_prefixed_scalars(tmp_path):
  w = _write(tmp_path)
  assert w.jsonl_path == os.path.join(str(tmp_path), 'metrics.jsonl')
  with open(w.jsonl_path) as f:
    rows = [json.loads(line) for line in f]
  assert [r['step'] for r in rows] == [0, 10, 20, 20]
  assert rows[1]['train/loss'] == 1.25 and rows[1]['train/acc'] == 0.5
  assert rows[2]['train/acc'] is None  # NaN: JSON has none.
  assert rows[3] == {'step': 20, 'wall_time': rows[3]['wall_time'],
                     'kind': 'probe', 'accs': [0.9, 1], 'test/acc': 0.9}
  # A second writer (a resumed run) appends new rows only.
  with metrics_writer.MetricsWriter(str(tmp_path)) as w2:
    w2.write(30, {'loss': 0.5}, prefix='train')
  with open(w.jsonl_path) as f:
    assert [json.loads(l)['step'] for l in f] == [0, 10, 20, 20, 30]


def test_a_resumed_run_replaces_the_rows_it_redoes(tmp_path):
  _write(tmp_path)
  path = os.path.join(str(tmp_path), 'metrics.jsonl')
  with open(path, 'a') as f:
    f.write('{"step": 40, "train/lo')  # Torn by a kill.
  with metrics_writer.MetricsWriter(str(tmp_path)) as w:
    w.write(10, {'loss': 9.0}, prefix='train')  # Redone after a resume.
    w.write(10, {'loss': 8.0}, prefix='train', arch='vgg')  # Another arch.
    w.write(20, {'acc': 0.8}, prefix='test/', kind='probe', accs=[0.8])
  with open(path) as f:
    rows = [json.loads(line) for line in f]
  keys = [(r.get('arch'), r.get('kind'), r['step']) for r in rows]
  assert keys == [(None, None, 0), (None, None, 10), (None, None, 20),
                  (None, 'probe', 20), ('vgg', None, 10)]
  assert rows[1]['train/loss'] == 9.0 and rows[3]['test/acc'] == 0.8
  assert rows[4]['train/loss'] == 8.0
  assert not [n for n in os.listdir(tmp_path) if n.startswith('.tmp-')]


def test_disabled_writer_writes_nothing(tmp_path):
  _write(tmp_path, enabled=False)
  assert os.listdir(tmp_path) == []


def test_non_zero_process_writes_nothing(tmp_path, monkeypatch):
  monkeypatch.setattr(metrics_writer.jax, 'process_index', lambda: 1)
  _write(tmp_path)
  assert os.listdir(tmp_path) == []


def test_write_after_close_is_an_error(tmp_path):
  w = _write(tmp_path)
  w.close()  # Idempotent.
  with pytest.raises(ValueError, match='closed'):
    w.write(30, {'loss': 1.0})
