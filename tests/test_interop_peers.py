"""Importers and exporters against files in the peers' own formats.

Each peer file is written here as the peer's code writes it (cartography's
jsonl, AUM's CSV, data_diet's class-sorted .npy) and each value checked
against a slow per-example reference written from the peer's definition.
"""

import csv
import json
import os

import numpy as np
import pytest

from easyhard_jax.analysis import score_store
from easyhard_jax.analysis import reference_order
from easyhard_jax.interop import dynamics_log
from easyhard_jax.interop import importers
from easyhard_jax.interop import peer_exports

N, C, SPE, EPOCHS = 30, 3, 2, 3


@pytest.fixture
def logged(tmp_path):
  """A logged workdir: 2 members, 3 epochs, a probe per epoch; its logits."""
  rng = np.random.default_rng(0)
  labels = rng.integers(0, C, N)
  ids = [f'train_{i:05d}' for i in range(N)]
  workdir = str(tmp_path / 'w')
  log = dynamics_log.DynamicsLog(workdir, labels, ids=ids,
                                 members=['cnn/s0', 'cnn/s1'],
                                 steps_per_epoch=SPE, keep_probs=True)
  fused = rng.normal(size=(2, EPOCHS, N, C)) * 2
  probes = rng.normal(size=(2, EPOCHS + 1, N, C))
  unseen = {(0, 1): 4}  # Member 0 never sees example 4 in epoch 1.
  for m, name in enumerate(['cnn/s0', 'cnn/s1']):
    log.probe(name, 0, probes[m, 0])
    for e in range(EPOCHS):
      idx = np.array([i for i in rng.permutation(N)
                      if unseen.get((m, e)) != i])
      for b, batch in enumerate(np.array_split(idx, SPE)):
        log.log(name, e * SPE + b, batch, fused[m, e, batch])
      log.probe(name, (e + 1) * SPE, probes[m, e + 1])
  log.close()
  return workdir, labels, ids, fused, probes, unseen


def _softmax(z):
  z = np.exp(z - z.max())
  return z / z.sum()


def test_cartography_jsonl_imports_as_cartography_computes(logged, tmp_path):
  workdir, labels, ids, _, _, _ = logged
  rng = np.random.default_rng(1)
  rows = rng.permutation(N)[:20]  # The peer's file covers a subset.
  logits = rng.normal(size=(4, N, C))
  td = tmp_path / 'model' / 'training_dynamics'
  td.mkdir(parents=True)
  for e in range(4):  # selection_utils.log_training_dynamics' records.
    with open(td / f'dynamics_epoch_{e}.jsonl', 'w') as f:
      for i in rng.permutation(rows):
        f.write(json.dumps({'guid': ids[i],
                            f'logits_epoch_{e}': logits[e, i].tolist(),
                            'gold': int(labels[i])}) + '\n')
  paths = importers.import_cartography(workdir, str(tmp_path / 'model'),
                                       by='id')
  got = {k: score_store.load_scores(workdir, k).values[0, 0]
         for k in paths}
  for i in range(N):
    if i not in rows:
      assert all(np.isnan(v[i]) for v in got.values())
      continue
    trend = [float(_softmax(logits[e, i])[labels[i]]) for e in range(4)]
    right = sum(int(np.argmax(logits[e, i]) == labels[i]) for e in range(4))
    np.testing.assert_allclose(got['cartography_confidence'][i],
                               np.mean(trend), rtol=1e-6)
    np.testing.assert_allclose(got['cartography_variability'][i],
                               np.std(trend), rtol=1e-5, atol=1e-7)
    assert got['cartography_correctness'][i] == right
  ref = reference_order.read_reference(paths['cartography_confidence'],
                                       'cartography_confidence',
                                       label_column='label')
  np.testing.assert_array_equal(ref['labels'], labels)
  with pytest.raises(ValueError, match='gold'):
    with open(td / 'dynamics_epoch_0.jsonl') as f:
      first = json.loads(f.readline())
    bad = tmp_path / 'bad'
    bad.mkdir()
    first['gold'] = (first['gold'] + 1) % C
    (bad / 'dynamics_epoch_0.jsonl').write_text(json.dumps(first) + '\n')
    importers.import_cartography(workdir, str(bad), by='id')


def test_aum_csv_round_trips_through_export_and_import(logged):
  workdir, labels, _, fused, _, unseen = logged
  paths = peer_exports.write_peer_exports(workdir)
  with open(paths['aum']) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ['sample_id', 'aum']
  values = [float(r['aum']) for r in rows]
  assert values == sorted(values, reverse=True)
  for r in rows:  # Slow reference: AUMCalculator's margin, averaged.
    i = int(r['sample_id'])
    per_member = []
    for m in range(2):
      margins = []
      for e in range(EPOCHS):
        if unseen.get((m, e)) == i:
          continue
        z = fused[m, e, i]
        margins.append(z[labels[i]] - np.delete(z, labels[i]).max())
      per_member.append(np.mean(margins))
    np.testing.assert_allclose(float(r['aum']), np.mean(per_member),
                               rtol=1e-5, atol=1e-6)
  path = importers.import_aum(workdir, paths['aum'])
  with np.load(path) as z:
    got = z['aum_peer']
  np.testing.assert_allclose(got, peer_exports.aum_values(
      peer_exports._dynamics(workdir, 'train')), rtol=1e-6)
  with pytest.raises(IndexError, match='outside'):
    with open(paths['aum'], 'a') as f:
      f.write(f'{N},1.0\n')
    importers.import_aum(workdir, paths['aum'])


def test_cartography_export_matches_its_definition(logged):
  workdir, labels, ids, fused, _, unseen = logged
  path = peer_exports.write_peer_exports(workdir)['cartography_train']
  with open(path) as f:
    rows = [json.loads(line) for line in f]
  assert [r['guid'] for r in rows] == ids
  for r in rows:
    i = r['index']
    conf, var, right, forget = [], [], [], []
    for m in range(2):
      trend, corr = [], []
      for e in range(EPOCHS):
        if unseen.get((m, e)) == i:
          continue
        trend.append(_softmax(fused[m, e, i])[labels[i]])
        corr.append(bool(np.argmax(fused[m, e, i]) == labels[i]))
      conf.append(np.mean(trend))
      var.append(np.std(trend))
      right.append(sum(corr))
      learnt, n = False, 0  # compute_forgetfulness, as cartography has it.
      for c in corr:
        n += learnt and not c
        learnt = c
      forget.append(n if any(corr) else 1000)
    np.testing.assert_allclose(r['confidence'], np.mean(conf), rtol=1e-5)
    np.testing.assert_allclose(r['variability'], np.mean(var), rtol=1e-4,
                               atol=1e-6)
    assert r['correctness'] == np.mean(right)
    assert r['forgetfulness'] == np.mean(forget)


def test_cleanlab_file_holds_labels_and_mean_probabilities(logged):
  workdir, labels, _, _, probes, _ = logged
  path = peer_exports.write_peer_exports(workdir)['cleanlab_train']
  with np.load(path) as z:
    np.testing.assert_array_equal(z['labels'], labels)
    want = np.mean([[_softmax(p) for p in probes[m, -1]] for m in range(2)],
                   axis=0)
    np.testing.assert_allclose(z['pred_probs'], want, rtol=1e-5, atol=1e-7)
    assert 'ranked_label_issues' not in z  # No analysis ran.


def test_data_diet_class_sorted_scores_return_to_example_order(logged,
                                                               tmp_path):
  workdir, labels, _, _, _, _ = logged
  scores = np.random.default_rng(3).random(N).astype(np.float32)
  order = labels.argsort()  # data_diet.data.sort_by_class.
  path = str(tmp_path / 'ckpt_100.npy')
  np.save(path, scores[order])
  for given in (order, 'quicksort'):
    out = importers.import_data_diet(workdir, path, order=given, step=100)
    with np.load(out) as z:
      np.testing.assert_array_equal(z['el2n_data_diet'], scores)
  with pytest.raises(ValueError, match='does not sort the labels'):
    importers.import_data_diet(workdir, path, order=np.arange(N))


def test_any_score_file_by_index_or_id(logged, tmp_path):
  workdir, _, ids, _, _, _ = logged
  values = np.arange(N, dtype=np.float64) / 7
  np.save(tmp_path / 'cscore.npy', values)
  out = importers.import_score_file(workdir, str(tmp_path / 'cscore.npy'))
  np.testing.assert_allclose(score_store.load_scores(
      workdir, 'cscore').values[0, 0], values, rtol=1e-7)
  with open(tmp_path / 's.csv', 'w') as f:
    f.write('id,forget\n' + ''.join(f'{ids[i]},{values[i]}\n'
                                    for i in range(0, N, 2)))
  out = importers.import_score_file(workdir, str(tmp_path / 's.csv'),
                                    key='forget', id_key='id', by='id')
  with np.load(out) as z:
    np.testing.assert_allclose(z['forget'][::2], values[::2], rtol=1e-7)
    assert np.isnan(z['forget'][1::2]).all()
  with pytest.raises(KeyError, match='match no record id'):
    with open(tmp_path / 't.csv', 'w') as f:
      f.write('id,x\nnot_an_id,1\n')
    importers.import_score_file(workdir, str(tmp_path / 't.csv'), key='x',
                                id_key='id', by='id')
  assert os.path.exists(os.path.join(workdir, 'imported', 'cscore_train.npz'))
