"""--mode=compare: a published per-example score against the study's scores.

Synthetic references whose relation to the scores is known, in each row
order (project index, id column, TFDS's original key order); the statistics
against slow references (scipy, pairwise counts, sorted sets); the TFDS
hash order against TFDS's own Shuffler and published CIFAR-10 orders.
"""

import json
import os
import shutil
import types

import ml_collections
import numpy as np
import pytest
from scipy import stats
from sklearn import metrics

from easyhard_jax.storage import files
from easyhard_jax.analysis import score_store
from easyhard_jax.analysis import label_noise
from easyhard_jax.analysis import compare as rc
from easyhard_jax.analysis import reference_order as ro
from easyhard_jax.report import reference_section
from easyhard_jax.report import sections

N, CLASSES = 400, 4


def _f32(x):
  """float32-representable float64, as the analysis's scores are."""
  return np.asarray(x, np.float32).astype(np.float64)


def _study(tmp_path, seed=0):
  """A workdir with the analysis's scores_train.npz, as CIFAR-like TFDS data.

  Example i (TFDS's stored order) has id 'train_{k:05d}' where k is the
  original key whose hash puts it at position i, as TFDS's cifar10 does.
  """
  rng = np.random.default_rng(seed)
  pos = ro.original_positions(N, 'train')
  orig = np.argsort(pos)  # orig[i] = the key stored at position i.
  labels = rng.integers(0, CLASSES, N)
  cols = {
      'easiness': _f32(rng.random(N)),
      'early_margin': _f32(rng.normal(size=N)),
      'el2n': _f32(rng.random(N)),
      'variability': _f32(rng.random(N)),
      'aum': _f32(np.where(np.arange(N) % 10 == 0, np.nan, rng.normal(size=N))),
  }
  workdir = str(tmp_path)
  none = np.zeros(N, bool)
  score_store.write_analysis_scores(workdir, 'train', score_store.score_table(
      np.arange(N), [f'train_{k:05d}' for k in orig], labels, cols,
      list(cols), none, none))
  return workdir, cols, labels, orig


def _config(path, **kw):
  c = ml_collections.ConfigDict({
      'dataset': 'no_such_tfds_dataset', 'train_split': 'train',
      'reference': {'path': path, 'key': 'score',
                    'orientation': 'higher_is_harder', 'split': 'train',
                    'order': 'index', 'tfds_id_column': 'tfds_id',
                    'label_key': '',
                    'hard_tail_fractions': (0.05, 0.1),
                    'nonsaturated_band': (0.0, 1.0)}})
  c.reference.update(kw)
  return c


def _known_reference(cols, seed=1):
  """Hardness ~ exp(1 - easiness) plus noise: a monotone transform."""
  rng = np.random.default_rng(seed)
  return _f32(np.exp(1.0 - cols['easiness']) + 0.05 * rng.normal(size=N))


def _scores(result):
  return {k: v for k, v in result['scores'].items() if 'skipped' not in v}


def test_original_positions_follow_tfds_shuffler():
  """TFDS's own writer shuffler orders keys as original_positions says."""
  from tensorflow_datasets.core import hashing
  from tensorflow_datasets.core import shuffle
  n = 500
  pos = ro.original_positions(n, 'train')
  shuffler = shuffle.Shuffler(dirpath='/nonexistent', hash_salt='train')
  for k in range(n):  # In memory (< 1 GB): no file is written.
    shuffler.add(k, str(k).encode())
  written = [int(data) for _, data in shuffler]
  np.testing.assert_array_equal(pos[np.asarray(written)], np.arange(n))
  hasher = hashing.Hasher('train')
  hashes = [hasher.hash_key(k) for k in written]
  assert all(a < b for a, b in zip(hashes, hashes[1:]))


def test_original_positions_reproduce_published_cifar10_order():
  """First examples of TFDS cifar10 as printed by TFDS users and its catalog.

  train: the first 16 ids of `tfds.load('cifar10')['train']` (unshuffled
  files) as printed in the Hugging Face course's TF chapter; test: the
  catalog's example record {'id': b'test_09933', 'label': 7}.
  """
  first = [16399, 1680, 47917, 17307, 27051, 48736, 26263, 1456, 19135,
           31598, 12970, 4223, 27152, 49635, 4093, 17537]
  pos = ro.original_positions(50000, 'train')
  np.testing.assert_array_equal(np.argsort(pos)[:16], first)
  assert np.argsort(ro.original_positions(10000, 'test'))[0] == 9933


def test_tfds_id_positions():
  ids = ['ds-train.array_record-00000-of-00003__2',
         'ds-train.array_record-00002-of-00003__1',
         'ds-train.array_record-00001-of-00003__0']
  np.testing.assert_array_equal(ro.tfds_id_positions(ids, [3, 5, 2]),
                                [2, 9, 3])
  with pytest.raises(ValueError, match='shards'):
    ro.tfds_id_positions(ids, [3, 7])
  with pytest.raises(ValueError, match='neither'):
    ro.tfds_id_positions(['train_00001'], [3])


def test_known_relation_in_index_order(tmp_path):
  workdir, cols, labels, _ = _study(tmp_path)
  ref = _known_reference(cols)
  path = str(tmp_path / 'ref.npz')
  np.savez(path, score=ref)
  res = rc.run_compare(_config(path), workdir)
  e = res['scores']['easiness']
  expected = stats.spearmanr(-cols['easiness'], ref).statistic
  # Exact ranks, float64 sums over 400 terms: far below 1e-9.
  assert abs(e['spearman'] - expected) < 1e-9
  assert e['spearman'] > 0.9
  # A score unrelated to the reference: |rho| within 4 sd of independence.
  for name in ('early_margin', 'el2n'):
    s = res['scores'][name]
    assert abs(s['spearman']) < 4 * s['spearman_null_sd'], name
  assert 'auroc' not in res['scores']['variability']['tails'][0]
  assert res['scores']['aum']['examples'] == N - N // 10  # NaN rows dropped.
  out = os.path.join(workdir, 'compare')
  for name in ('results.json', 'results.csv', 'per_class.csv',
               'aligned.npz'):
    assert os.path.exists(os.path.join(out, name)), name
  with np.load(os.path.join(out, 'aligned.npz')) as z:
    np.testing.assert_array_equal(z['reference'], ref)
  with open(os.path.join(out, 'results.json')) as f:
    assert json.load(f)['reference']['matched'] == N


def test_tail_statistics_against_slow_references(tmp_path):
  workdir, cols, labels, _ = _study(tmp_path)
  ref = _known_reference(cols)
  np.savez(str(tmp_path / 'ref.npz'), score=ref)
  res = rc.run_compare(_config(str(tmp_path / 'ref.npz')), workdir)
  hard, tb = -cols['easiness'], -cols['early_margin']
  idx = np.arange(N)
  for f, t in zip((0.05, 0.1), res['scores']['easiness']['tails']):
    k = int(round(f * N))
    pos = np.zeros(N, bool)
    pos[np.lexsort((idx, -ref))[:k]] = True  # Hardest k, ties: lower index.
    diff = hard[pos][:, None] - hard[~pos][None, :]
    slow_auc = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert abs(t['auroc'] - slow_auc) < 1e-12
    mine = np.zeros(N, bool)
    mine[np.lexsort((idx, -tb, -hard))[:k]] = True
    inter = (mine & pos).sum()
    assert t['top_k']['intersection'] == inter
    assert abs(t['top_k']['chance_overlap'] - (k * k / N) / k) < 1e-6
    counts = np.bincount(labels, minlength=CLASSES)
    kc = np.round(f * counts).astype(int)
    a, b = np.zeros(N, bool), np.zeros(N, bool)
    for c in range(CLASSES):
      m = np.flatnonzero(labels == c)
      a[m[np.lexsort((m, -tb[m], -hard[m]))[:kc[c]]]] = True
      b[m[np.lexsort((m, -ref[m]))[:kc[c]]]] = True
    cb = t['top_k_class_balanced']
    assert cb['intersection'] == (a & b).sum()
    chance = (kc * kc / counts).sum()
    # float32 chance: a few ulp of values < 100.
    assert abs(cb['chance_overlap'] * kc.sum() - chance) < 1e-4
  for row in res['scores']['easiness']['per_class']:
    m = labels == row['class']
    assert abs(row['spearman'] - stats.spearmanr(hard[m], ref[m]).statistic
               ) < 1e-9


def test_nonsaturated_part(tmp_path):
  workdir, cols, _, _ = _study(tmp_path)
  raw = _known_reference(cols)
  lo, hi = np.quantile(raw, [0.2, 0.9])
  ref = _f32(np.clip(raw, lo, hi))  # Saturated at both ends.
  np.savez(str(tmp_path / 'ref.npz'), score=ref)
  res = rc.run_compare(_config(str(tmp_path / 'ref.npz')), workdir)
  inside = (ref > ref.min()) & (ref < ref.max())
  ns = res['scores']['easiness']['nonsaturated']
  assert ns['examples'] == inside.sum() == res['nonsaturated']['examples']
  expected = stats.spearmanr(-cols['easiness'][inside], ref[inside]).statistic
  assert abs(ns['spearman'] - expected) < 1e-9
  # A quantile band instead of min / max.
  res = rc.run_compare(_config(str(tmp_path / 'ref.npz'),
                               nonsaturated_band=(0.25, 0.75)), workdir)
  q = np.quantile(ref, [0.25, 0.75])
  assert res['nonsaturated']['examples'] == ((ref > q[0]) & (ref < q[1])).sum()


def test_orderings_give_the_same_result(tmp_path, monkeypatch):
  """The same reference as index order, id column and original key order."""
  workdir, cols, labels, orig = _study(tmp_path)
  ref = _known_reference(cols)
  np.savez(str(tmp_path / 'index.npz'), score=ref)
  base = rc.run_compare(_config(str(tmp_path / 'index.npz')), workdir)
  # Original order: row k is the example whose TFDS key is k (C-scores,
  # with their labels).
  by_key, labels_by_key = np.empty(N), np.empty(N, np.int64)
  by_key[orig] = ref
  labels_by_key[orig] = labels
  np.savez(str(tmp_path / 'original.npz'), score=by_key,
           labels=labels_by_key)
  # An id column in a random row order (CSV), with the records' ids.
  perm = np.random.default_rng(5).permutation(N)
  rows = [{'tfds_id': f'train_{orig[i]:05d}', 'score': repr(float(ref[i]))}
          for i in perm]
  files.atomic_write_csv(str(tmp_path / 'ids.csv'), rows)
  # tf.data tfds_ids over two shards of 150 and 250 examples.
  monkeypatch.setattr(rc, '_shard_lengths',
                      lambda config, split: lambda: [150, 250])
  tfds_ids = [f'x-train.array_record-{int(i >= 150):05d}-of-00002__'
              f'{i - 150 * int(i >= 150)}' for i in perm]
  np.savez(str(tmp_path / 'tfdsid.npz'), score=ref[perm],
           tfds_id=np.asarray(tfds_ids))
  for path, order in (('original.npz', 'original'), ('ids.csv', 'tfds_id'),
                      ('tfdsid.npz', 'tfds_id')):
    res = rc.run_compare(_config(str(tmp_path / path), order=order),
                         workdir)
    assert _scores(res) == _scores(base), (path, order)
  assert res['reference']['ids'] == 'tfds_id'
  res = rc.run_compare(_config(str(tmp_path / 'original.npz'),
                               order='original', label_key='labels'),
                       workdir)
  assert res['reference']['ids_check'] == {'checked': N, 'agree': N}
  assert res['reference']['labels_check'] == {'checked': N, 'agree': N}
  # The original-order file read without the mapping: no relation left,
  # and its labels say so.
  res = rc.run_compare(_config(str(tmp_path / 'original.npz')), workdir)
  e = res['scores']['easiness']
  assert abs(e['spearman']) < 4 * e['spearman_null_sd']
  with pytest.raises(ValueError, match='another order'):
    rc.run_compare(_config(str(tmp_path / 'original.npz'),
                           label_key='labels'), workdir)
  # Independent noise in the right order: no relation either.
  np.savez(str(tmp_path / 'noise.npz'),
           score=np.random.default_rng(9).random(N))
  res = rc.run_compare(_config(str(tmp_path / 'noise.npz')), workdir)
  e = res['scores']['easiness']
  assert abs(e['spearman']) < 4 * e['spearman_null_sd']
  assert abs(e['tails'][1]['auroc'] - 0.5) < 0.2


def test_one_auroc_is_nan_for_an_empty_class_null_in_json_empty_in_csv():
  """One AUROC for compare, label errors and held-out: NaN with no positive
  or no negative (an empty class), written as null / an empty cell."""
  assert rc.auroc is label_noise.auroc
  h = np.array([0.1, 0.5, 0.5, 0.9, np.nan])
  assert np.isnan(rc.auroc(h, np.zeros(5, bool)))
  assert np.isnan(rc.auroc(h, np.ones(5, bool)))
  assert np.isnan(rc.auroc(h[:0], np.zeros(0, bool)))
  # NaN hardness ranks below every value; ties count one half.
  assert rc.auroc(h, np.array([0, 1, 0, 1, 0], bool)) == 5.5 / 6
  rng = np.random.default_rng(3)
  ties = rng.integers(0, 5, 200).astype(np.float64)
  pos = rng.random(200) < 0.3
  assert rc.auroc(ties, pos) == pytest.approx(
      metrics.roc_auc_score(pos, ties), abs=1e-12)
  # The reference's hardest 10% all lie in class 0: class 1 has no
  # positive, so its per-class AUROC is NaN.
  n = 40
  labels = np.repeat([0, 1], n // 2)
  ref_hard = np.where(labels == 0, 1.0, 0.0) + np.arange(n) * 1e-3
  res = rc.compare_one(rng.random(n), ref_hard, labels, np.ones(n, bool),
                       fractions=(0.1,), num_classes=2)
  assert np.isnan(res['per_class'][1]['auroc'][0])
  assert np.isfinite(res['per_class'][0]['auroc'][0])
  assert files.to_jsonable(res)['per_class'][1]['auroc'] == [None]
  result = {'hard_tail_fractions': [0.1],
            'scores': {'easiness': {'orientation': 'x', **res}}}
  _, per_class = rc._rows(result)  # pylint: disable=protected-access
  assert per_class[1]['auroc_hardest_0.1'] is None


def test_orientation_and_errors(tmp_path):
  workdir, cols, _, _ = _study(tmp_path)
  ref = _known_reference(cols)
  np.savez(str(tmp_path / 'easy.npz'), score=-ref)  # Higher = easier.
  res = rc.run_compare(_config(str(tmp_path / 'easy.npz'),
                               orientation='higher_is_easier'), workdir)
  assert res['scores']['easiness']['spearman'] > 0.9
  with pytest.raises(ValueError, match="order='original'"):
    rc.run_compare(_config(str(tmp_path / 'easy.npz'), order='tfds_order'),
                   workdir)
  np.savez(str(tmp_path / 'short.npz'), score=ref[:300])
  with pytest.raises(ValueError, match='whole TFDS'):
    ro.map_reference('original', ref[:300], None, np.asarray(['a'] * N),
                     split_name='train', shard_lengths=lambda: [N])
  with pytest.raises(ValueError, match='no TFDS ids'):
    ro.map_reference('original', ref, None, np.asarray([''] * N),
                     split_name='train')
  with pytest.raises(KeyError, match='nope'):
    rc.run_compare(_config(str(tmp_path / 'easy.npz'), key='nope'), workdir)


def test_report_section(tmp_path):
  workdir, cols, _, _ = _study(tmp_path)
  study = types.SimpleNamespace(workdir=workdir, scores=cols)
  sec = sections.build_section(study, 'reference')
  assert sec.status == 'not run'
  assert reference_section.summary(workdir) == []
  np.savez(str(tmp_path / 'ref.npz'), score=_known_reference(cols))
  rc.run_compare(_config(str(tmp_path / 'ref.npz')), workdir)
  sec = sections.build_section(study, 'reference')
  assert sec.status == 'ok'
  assert [f.name for f in sec.figures] == ['reference_bars',
                                           'reference_scatter']
  assert all(f.png.startswith(b'\x89PNG') for f in sec.figures)
  assert 'easiness per class' in sec.body_html
  lines = reference_section.summary(workdir)
  assert 'Easiness vs reference: Spearman 0.9' in lines[1]


@pytest.mark.slow
def test_compare_on_a_real_analysis(quick_study, tmp_path):
  """The analyze stage's own scores CSV, read by --mode=compare's function."""
  from easyhard_jax import runner
  config, src = quick_study
  workdir = str(tmp_path / 'study')
  shutil.copytree(src, workdir, ignore=shutil.ignore_patterns('checkpoints'))
  config = ml_collections.ConfigDict(config.to_dict())
  config.analysis.agreement.intervals = False
  runner.run(config, workdir, 'analysis')
  table = ro.read_scores_table(os.path.join(workdir, 'analysis',
                                            'scores_train.csv'))
  rng = np.random.default_rng(0)
  ref = table['easiness'] + 0.01 * rng.random(table['easiness'].size)
  np.savez(str(tmp_path / 'ref.npz'), c_score=ref)
  config.reference = _config(str(tmp_path / 'ref.npz'), key='c_score',
                             orientation='higher_is_easier').reference
  res = rc.run_compare(config, workdir)
  assert res['scores']['easiness']['spearman'] > 0.95
  assert 'forgetting_events' in _scores(res)
