"""DynamicsLog: the records contract from an outside training loop.

Round trips against records written by this tool's own writer and trainer,
numpy statistics against the trainer's JAX ones, the refusals, and that
importing the logger does not import JAX.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from easyhard_jax.storage import records
from easyhard_jax import stages
from easyhard_jax.interop import dynamics_log
from easyhard_jax.interop import origin
from easyhard_jax.interop import per_example


def _replay(source: str, target: str, archs=None) -> None:
  """Logs every value of ``source``'s records into ``target``, member by member.

  The members are replayed one after another (as a PyTorch user trains
  them), probes given in two batches, fused epochs in shuffled batches.
  """
  manifest = records.read_manifest(source)
  archs = archs or manifest['arch_order']
  train = records.load(source, 'train')
  test = records.load(source, 'test')
  fused = records.load(source, 'train', 'fused')
  spe = manifest['archs'][archs[0]]['steps_per_epoch']
  log = dynamics_log.DynamicsLog(
      target, train.labels, test_labels=test.labels, members=train.members,
      steps_per_epoch=spe, ids=train.tfds_ids, test_ids=test.tfds_ids)
  rng = np.random.default_rng(0)
  fused_steps = list(fused.probe_steps)
  for m, member in enumerate(train.members):
    name = member['name']
    for p, step in enumerate(train.probe_steps):
      for rec in (train, test):
        n = rec.labels.size
        for half in np.array_split(rng.permutation(n), 2):
          log.probe(name, int(step), split=rec.split, example_index=half,
                    **{f: getattr(rec, f)[m, p, half]
                       for f in ('loss', 'pred', 'margin', 'p_true',
                                 'el2n')})
      for e, end in enumerate(fused_steps):  # Epochs that end by this probe.
        if end <= step and end > (train.probe_steps[p - 1] if p else -1):
          seen = np.flatnonzero(fused.pred[m, e] >= 0)
          for b, batch in enumerate(np.array_split(rng.permutation(seen),
                                                   spe)):
            log.log(name, e * spe + b, batch,
                    **{f: getattr(fused, f)[m, e, batch]
                       for f in ('loss', 'pred', 'margin', 'p_true')})
  assert log.close() == {'complete': list(archs), 'waiting': {}}


def _assert_same(a: records.Records, b: records.Records) -> None:
  np.testing.assert_array_equal(a.probe_steps, b.probe_steps)
  np.testing.assert_array_equal(a.probe_epochs, b.probe_epochs)
  np.testing.assert_array_equal(a.labels, b.labels)
  assert a.tfds_ids == b.tfds_ids
  for f in records.FIELDS:
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
  assert [m['name'] for m in a.members] == [m['name'] for m in b.members]


def _write_like_trainer(workdir, rng, n=60, nt=20, c=4, spe=3):
  """Records of 2 members through RecordWriter, as the trainer calls it."""
  w = records.RecordWriter(workdir, enabled=True)
  y, yt = rng.integers(0, c, n), rng.integers(0, c, nt)
  w.write_split_metadata('train', y, None)
  w.write_split_metadata('test', yt, None)
  members = [{'name': f'cnn/s{i}', 'arch': 'cnn', 'seed': i}
             for i in range(2)]
  steps = [0, 1, spe, 2 * spe]
  w.begin_arch('cnn', members, spe, steps, {'fields': {}, 'hash': 'x'})
  for k, s in enumerate(steps):
    for split, labels in (('train', y), ('test', yt)):
      st = [per_example.from_logits(rng.normal(size=(labels.size, c)),
                                    labels) for _ in members]
      w.write_chunk('cnn', 'probe', split, k, s,
                    {f: np.stack([x[f] for x in st]) for f in st[0]})
  for e in range(2):
    st = [per_example.from_logits(rng.normal(size=(n, c)), y)
          for _ in members]
    arrays = {f: np.stack([x[f] for x in st]) for f in
              dynamics_log.FUSED_FIELDS}
    unseen = rng.random((2, n)) < 0.1  # A dropped last batch: never seen.
    for f, fill in (('loss', np.nan), ('margin', np.nan), ('p_true', np.nan),
                    ('correct', False), ('pred', -1)):
      arrays[f] = np.where(unseen, fill, arrays[f]).astype(arrays[f].dtype)
    w.write_chunk('cnn', 'fused', 'train', e, (e + 1) * spe, arrays)
  w.finish_arch('cnn')


def test_replayed_records_equal_the_writers(tmp_path):
  source, target = str(tmp_path / 'trained'), str(tmp_path / 'logged')
  _write_like_trainer(source, np.random.default_rng(1))
  _replay(source, target)
  for split, src in (('train', 'probe'), ('test', 'probe'),
                     ('train', 'fused')):
    _assert_same(records.load(source, split, src),
                 records.load(target, split, src))
  assert origin.logged_groups(target) == ['cnn']
  assert origin.logged_groups(source) == []
  assert not os.listdir(os.path.join(target, 'records', '_staging', 'cnn'))


def test_numpy_statistics_match_the_train_step():
  import jax.numpy as jnp
  from easyhard_jax.train import steps
  rng = np.random.default_rng(2)
  logits = (rng.normal(size=(300, 7)) * 3).astype(np.float32)
  labels = rng.integers(0, 7, 300)
  ours = per_example.from_logits(logits, labels)
  ref = steps.per_example_stats(jnp.asarray(logits), jnp.asarray(labels))
  for f in ('loss', 'margin', 'p_true', 'el2n'):
    np.testing.assert_allclose(ours[f], np.asarray(getattr(ref, f)),
                               rtol=1e-5, atol=1e-6, err_msg=f)
  np.testing.assert_array_equal(ours['pred'], np.asarray(ref.pred))
  np.testing.assert_array_equal(ours['correct'], np.asarray(ref.correct))


def _log(tmp_path, **kw):
  y = np.arange(20) % 4
  args = dict(members=['cnn/a', 'cnn/b'], steps_per_epoch=2)
  args.update(kw)
  return dynamics_log.DynamicsLog(str(tmp_path), y, **args)


def test_logger_refuses_wrong_shapes_indices_and_order(tmp_path):
  log = _log(tmp_path)
  z = np.zeros((5, 4))
  with pytest.raises(ValueError, match=r'expected \(batch=5, num_classes=4'):
    log.log('cnn/a', 0, np.arange(5), np.zeros((5, 3)))
  with pytest.raises(ValueError, match='1-D integer'):
    log.log('cnn/a', 0, np.arange(5.0), z)
  with pytest.raises(IndexError, match='example_index 20 is outside'):
    log.log('cnn/a', 0, np.arange(16, 21), z)
  with pytest.raises(IndexError, match='outside'):
    log.log('cnn/a', 0, np.array([-1, 0, 1, 2, 3]), z)
  with pytest.raises(KeyError, match='Unknown member'):
    log.log('vgg/a', 0, np.arange(5), z)
  with pytest.raises(ValueError, match='whole train split'):
    log.probe('cnn/a', 0, z)
  with pytest.raises(FloatingPointError, match='step 3'):
    log.log('cnn/a', 3, np.arange(5), np.full((5, 4), np.nan))
  log.log('cnn/a', 2, np.arange(5), z)
  with pytest.raises(ValueError, match='steps only go forward'):
    log.log('cnn/a', 1, np.arange(5), z)
  log.probe('cnn/a', 4, np.zeros((20, 4)))
  with pytest.raises(ValueError, match='probe steps only go forward'):
    log.probe('cnn/a', 4, np.zeros((20, 4)))
  log.probe('cnn/a', 6, np.zeros((10, 4)), example_index=np.arange(10))
  with pytest.raises(ValueError, match='covers 10 of 20'):
    log.probe('cnn/a', 8, np.zeros((20, 4)))
  with pytest.raises(ValueError, match='incomplete'):
    log.close()


def test_logger_refuses_a_changed_split_size(tmp_path):
  log = _log(tmp_path)
  log.close()
  with pytest.raises(ValueError, match='split of 20 examples.*21'):
    dynamics_log.DynamicsLog(str(tmp_path), np.arange(21) % 4,
                             members=['cnn/a', 'cnn/b'], steps_per_epoch=2)
  with pytest.raises(ValueError, match='another config'):
    _log(tmp_path, steps_per_epoch=3)


def test_resume_continues_and_a_group_waits_for_its_members(tmp_path):
  log = _log(tmp_path)
  log.probe('cnn/a', 0, np.zeros((20, 4)))
  log.log('cnn/a', 0, np.arange(10), np.zeros((10, 4)))
  log.probe('cnn/a', 2, np.zeros((20, 4)))  # The last probe ends training.
  assert log.close() == {'complete': [], 'waiting': {'cnn': ['cnn/b']}}
  log = _log(tmp_path)
  with pytest.raises(ValueError, match='epoch 0 is already recorded'):
    log.log('cnn/a', 1, np.arange(10), np.zeros((10, 4)))
  log.probe('cnn/b', 0, np.ones((20, 4)))
  log.log('cnn/b', 1, np.arange(10, 20), np.ones((10, 4)))
  log.probe('cnn/b', 2, np.ones((20, 4)))
  assert log.close() == {'complete': ['cnn'], 'waiting': {}}
  fused = records.load(str(tmp_path), 'train', 'fused')
  np.testing.assert_array_equal(fused.probe_steps, [2])
  assert (fused.pred[0, 0, :10] == 0).all() and (fused.pred[0, 0, 10:] < 0
                                                 ).all()
  assert (fused.pred[1, 0, 10:] == 0).all()


def test_retraining_stages_refuse_a_logged_workdir(tmp_path):
  from conftest import quick_config
  _log(tmp_path).close()
  config = quick_config()
  for stage in ('removal', 'compression', 'causes', 'checkpoint_probes',
                'records'):
    with pytest.raises(ValueError, match='logged from your own training'):
      getattr(stages, stage)(config, str(tmp_path))
  origin.refuse_if_logged(str(tmp_path), 'records', ['vgg11'])  # No clash.


def test_importing_the_logger_does_not_import_jax():
  code = ('import sys\n'
          'from easyhard_jax.interop import dynamics_log, importers, '
          'peer_exports\n'
          'assert "jax" not in sys.modules, sorted(m for m in sys.modules '
          'if "jax" in m)\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_logged_copy_of_a_trained_study_analyzes_identically(quick_study,
                                                             tmp_path):
  from easyhard_jax.analysis import analyze
  config, source = quick_study
  target = str(tmp_path / 'logged')
  _replay(source, target)
  for split, src in (('train', 'probe'), ('test', 'probe'),
                     ('train', 'fused')):
    _assert_same(records.load(source, split, src),
                 records.load(target, split, src))
  copy = str(tmp_path / 'trained')  # Analysis outputs go beside records.
  os.makedirs(copy)
  os.symlink(os.path.join(source, 'records'), os.path.join(copy, 'records'))
  a = analyze.run_analysis(config, copy)
  b = analyze.run_analysis(config, target)
  for name in ('scores_train.csv', 'scores_test.csv',
               'label_issues_train.csv'):
    with open(os.path.join(copy, 'analysis', name), 'rb') as f, open(
        os.path.join(target, 'analysis', name), 'rb') as g:
      assert f.read() == g.read(), name
  assert a['sets'] == b['sets'] and a['agreement'] == b['agreement']
