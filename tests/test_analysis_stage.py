"""The analysis stage end to end on synthetic records in a tmp workdir."""

import csv
import json
import os

import ml_collections
import numpy as np
import pytest

from configs import default
from easyhard_jax.analysis import exports
from easyhard_jax.storage import records
from easyhard_jax.analysis import score_store
from easyhard_jax.analysis import scores
from easyhard_jax.analysis import analyze
from easyhard_jax.experiments import subsets

SPE = 4  # Steps per epoch.
STEPS = [1, 2, 3, 4, 8, 12]  # Epochs 0.25, 0.5, 0.75, 1, 2, 3.


def _write_study(workdir, archs, n_train=60, n_test=60, seed=0, fused=True):
  """Writes records whose correctness follows a per-example difficulty.

  With ``fused``, also one training-pass chunk per epoch (3 epochs); the last
  one is partial (half the examples NaN: not presented).
  """
  rng = np.random.default_rng(seed)
  w = records.RecordWriter(workdir)
  truth = {}
  for split, n in (('train', n_train), ('test', n_test)):
    labels = rng.integers(0, 3, n).astype(np.int32)
    ids = [f'{split}_{i:05d}' for i in range(n)] if split == 'train' else None
    w.write_split_metadata(split, labels, ids)
    truth[split] = {'labels': labels, 'difficulty': rng.random(n),
                    'correct': [], 'margin': []}
  for arch, seeds in archs:
    members = [{'name': f'{arch}_s{s}', 'arch': arch, 'seed': s}
               for s in range(seeds)]
    w.begin_arch(arch, members, SPE, STEPS,
                 {'fields': {'arch': arch}, 'hash': f'test-{arch}'})
    for split in ('train', 'test'):
      t = truth[split]
      n = t['labels'].size
      cs, ms = [], []
      for i, step in enumerate(STEPS):
        skill = step / STEPS[-1]
        correct = rng.random((seeds, n)) * 0.6 + skill > t['difficulty'] + 0.3
        margin = (correct - 0.5 + 0.1 * rng.random((seeds, n))).astype(
            np.float32)
        p_true = rng.random((seeds, n)).astype(np.float32)
        w.write_chunk(arch, 'probe', split, i, step, {
            'correct': correct, 'loss': -np.log(p_true + 1e-3),
            'margin': margin, 'p_true': p_true, 'el2n': 1 - p_true})
        cs.append(correct)
        ms.append(margin)
      t['correct'].append(np.stack(cs, 1))
      t['margin'].append(np.stack(ms, 1))
    if fused:
      t = truth['train']
      n = t['labels'].size
      fm, fc = [], []
      for epoch in range(3):
        margin = (rng.normal(size=(seeds, n)) + epoch - t['difficulty']
                  ).astype(np.float32)
        if epoch == 2:
          margin[:, : n // 2] = np.nan
        seen = np.isfinite(margin)
        correct = seen & (np.nan_to_num(margin) > 0)
        p_true = np.where(seen, 1 / (1 + np.exp(-margin)), np.nan).astype(
            np.float32)
        w.write_chunk(arch, 'fused', 'train', epoch, (epoch + 1) * SPE, {
            'correct': correct, 'loss': -np.log(p_true), 'margin': margin,
            'p_true': p_true})
        fm.append(margin)
        fc.append(correct)
      t.setdefault('fused_margin', []).append(np.stack(fm, 1))
      t.setdefault('fused_correct', []).append(np.stack(fc, 1))
    w.finish_arch(arch)
  for t in truth.values():
    for key in ('correct', 'margin', 'fused_margin', 'fused_correct'):
      if key in t:
        t[key] = np.concatenate(t[key])
  return truth


def _config(intervals=True):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.analysis = default.get_config().analysis
  c.analysis.agreement.intervals = intervals
  c.analysis.sets.fraction = 0.2
  c.analysis.similarity.block_size = 16  # One padded shape.
  return c


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
def test_stage_writes_every_output(tmp_path):
  workdir = str(tmp_path)
  truth = _write_study(workdir, [('cnn', 2), ('vgg', 2)])
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8)
  test_images = rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8)
  feats = rng.normal(size=(60, 5)).astype(np.float32)
  result = analyze.run_analysis(_config(), workdir, train_images=images,
                              test_images=test_images, features=feats)
  out = os.path.join(workdir, 'analysis')
  assert sorted(os.listdir(out)) == ['analysis.json', 'mean_images.npz',
                                     'scores_test.csv', 'scores_test.npz',
                                     'scores_train.csv', 'scores_train.npz']
  with open(os.path.join(out, 'analysis.json')) as f:
    assert json.load(f) == result

  # CSV rows: example-index order, values of the loop reference.
  rows = _read_csv(os.path.join(out, 'scores_train.csv'))
  assert [int(r['example_index']) for r in rows] == list(range(60))
  c = truth['train']['correct']  # [M, P, N]; window (0, 1] = first 4 probes.
  fm, fc = truth['train']['fused_margin'], truth['train']['fused_correct']
  for i, r in enumerate(rows):
    assert r['tfds_id'] == f'train_{i:05d}'
    assert int(r['label']) == truth['train']['labels'][i]
    ref = np.mean([c[m, p, i] for m in range(4) for p in range(4)])
    assert float(r['easiness']) == pytest.approx(ref, abs=1e-6)
    ref_cnn = np.mean([c[m, p, i] for m in range(2) for p in range(4)])
    assert float(r['easiness/cnn']) == pytest.approx(ref_cnn, abs=1e-6)
    # Training-pass scores: AUM over the epochs each member saw the example
    # (the last epoch is partial), Toneva's count with never-learned = E.
    aum = [np.nanmean(fm[m, :, i]) for m in range(4)]
    assert float(r['aum']) == pytest.approx(np.mean(aum), abs=1e-5)
    ref_forget = []
    for m in range(4):
      seq = [bool(fc[m, e, i]) for e in range(3) if np.isfinite(fm[m, e, i])]
      ref_forget.append(3 if not any(seq) else sum(
          1 for a, b in zip(seq, seq[1:]) if a and not b))
    assert float(r['forgetting_events']) == pytest.approx(np.mean(ref_forget))
  for name in scores.SCORE_NAMES:
    assert name in rows[0]
  # Class-balanced sets (the default): k_c = round(0.2 * N_c) per class,
  # the easiest of each class.
  labels = truth['train']['labels']
  k = np.round(0.2 * np.bincount(labels, minlength=3)).astype(int)
  for col in ('is_easy', 'is_hard'):
    chosen = np.array([int(r[col]) for r in rows], bool)
    np.testing.assert_array_equal(np.bincount(labels[chosen], minlength=3), k)
  for cls in range(3):
    mine = [r for r in rows if int(r['label']) == cls]
    easiest = min(float(r['easiness']) for r in mine if r['is_easy'] == '1')
    assert all(float(r['easiness']) <= easiest for r in mine
               if r['is_easy'] == '0')
  test_rows = _read_csv(os.path.join(out, 'scores_test.csv'))
  assert [int(r['example_index']) for r in test_rows] == list(range(60))
  assert all(r['tfds_id'] == '' for r in test_rows)
  assert all(r['aum'] == 'nan' for r in test_rows)  # No training passes.

  assert result['sets']['train']['easy_size'] == k.sum()
  assert result['sets']['train']['class_rule'] == 'class_balanced'
  other = result['other_rule']
  assert other['class_rule'] == 'global'
  assert other['sets']['easy_size'] == 12  # round(0.2 * 60) overall.
  assert other['agreement']['set_rule'] == 'global'
  assert 'seed_interval' not in other['agreement']['arch_pairs']
  assert other['similarity']['pixels']['global']['class_balanced'] is False
  assert result['similarity']['pixels']['global']['class_balanced'] is True
  assert result['records']['train']['fused_epochs'] == [1.0, 2.0, 3.0]
  assert result['score_source']['aum'] == 'fused'
  tk = np.round(0.2 * np.bincount(truth['test']['labels'], minlength=3))
  assert result['sets']['test']['hard_size'] == tk.sum()
  assert result['records']['train']['window_probe_epochs'] == [
      0.25, 0.5, 0.75, 1.0]
  ag = result['agreement']
  assert np.asarray(ag['member_pairs']['easy_sets']['ratio']).shape == (4, 4)
  assert ag['arch_pairs']['members_per_arch'] == [2, 2]
  ci = ag['arch_pairs']['seed_interval']['intervals']['spearman']
  assert np.asarray(ci['lo']).shape == (2, 2)
  # Difficulty drives every member, so architectures agree.
  assert ag['arch_pairs']['spearman_easiness'][0][1] > 0.5
  assert result['similarity']['pixels']['global']['size'] <= k.sum()
  assert 'features' in result['similarity']['features']
  assert result['similarity']['colour']['easy']['mean'].__len__() == 3
  t = result['test']
  assert t['errors_in_hard']['set_share'] == pytest.approx(tk.sum() / 60)
  final_err = ~truth['test']['correct'][:, -1]
  assert t['errors_in_hard']['errors'] == final_err.sum(1).tolist()
  with np.load(os.path.join(out, 'mean_images.npz')) as z:
    assert z['train_easy_mean'].shape == (3, 8, 8, 3)
    assert z['test_all_count'].sum() == 60
    np.testing.assert_array_equal(
        z['train_all_count'], np.bincount(truth['train']['labels'],
                                          minlength=3))


def test_stage_with_one_member_and_no_images(tmp_path):
  workdir = str(tmp_path)
  _write_study(workdir, [('cnn', 1)])
  cfg = _config()
  cfg.analysis.sets.method = 'all_correct'
  result = analyze.run_analysis(cfg, workdir)
  ag = result['agreement']
  assert 'skipped' in ag['member_pairs'] and 'skipped' in ag['arch_pairs']
  assert 'skipped' in result['similarity']
  assert 'skipped' in result['mean_images']
  assert 'skipped' in result['test']['errors_in_hard_leave_one_out']
  out = os.path.join(workdir, 'analysis')
  assert not os.path.exists(os.path.join(out, 'mean_images.npz'))
  assert os.path.exists(os.path.join(out, 'scores_test.csv'))
  cfg.analysis.test.enabled = False
  result = analyze.run_analysis(cfg, workdir)
  assert 'skipped' in result['test']
  assert not os.path.exists(os.path.join(out, 'scores_test.csv'))  # Stale.
  assert not os.path.exists(os.path.join(out, 'scores_test.npz'))
  rows = _read_csv(os.path.join(out, 'scores_train.csv'))
  for r in rows:
    assert (r['is_easy'] == '1') == (float(r['easiness']) == 1.0)
    assert (r['is_hard'] == '1') == (float(r['easiness']) == 0.0)


def test_score_npz_holds_exactly_the_float32_values_the_analysis_computed(
    tmp_path):
  """One score artifact: the npz is the computed values, bit for bit.

  The CSV beside it is the same table as text, the export is a byte copy,
  and the keep-lists are chosen from its values.
  """
  workdir = str(tmp_path)
  _write_study(workdir, [('cnn', 2), ('vgg', 2)])
  cfg = _config(intervals=False)
  cfg.compression = default.get_config().compression
  analyze.run_analysis(cfg, workdir)
  computed = scores.study_scores(workdir, cfg.analysis)['example']
  table = score_store.load_analysis_scores(workdir, 'train')
  assert set(computed) <= set(table)
  for name, values in computed.items():
    values = np.asarray(values)
    assert values.dtype == table[name].dtype == np.float32, name
    np.testing.assert_array_equal(table[name].view(np.uint32),
                                  values.view(np.uint32), err_msg=name)
  assert table['tfds_id'][7] == 'train_00007'
  assert table['is_easy'].dtype == bool and table['is_easy'].sum() > 0
  csv_path = os.path.join(workdir, 'analysis', 'scores_train.csv')
  with open(csv_path, 'rb') as f:
    assert f.read() == score_store.table_csv_bytes(table)
  rows = _read_csv(csv_path)
  assert [float(r['easiness']) for r in rows] == [
      float(f'{v:.7g}') for v in table['easiness']]

  exports.write_exports(cfg, workdir)
  for split in ('train', 'test'):
    with open(score_store.analysis_scores_path(workdir, split), 'rb') as a, \
        open(os.path.join(workdir, 'exports', f'scores_{split}.npz'),
             'rb') as b:
      assert a.read() == b.read()
  with np.load(os.path.join(workdir, 'exports', 'scores_train.npz')) as z:
    np.testing.assert_array_equal(z['easiness__cnn'],
                                  computed['easiness/cnn'])
  fraction = cfg.compression.fractions[0]
  keep = subsets.compression_mask(
      'stratified', int(round(fraction * 60)), score=table['easiness'],
      score_name='easiness', labels=table['label'], seed=0,
      aum=table['early_margin'])
  kept = np.loadtxt(os.path.join(workdir, 'exports', 'keep_lists',
                                 f'stratified_keep{fraction:.2f}.csv'),
                    delimiter=',', skiprows=1, usecols=0, dtype=int, ndmin=1)
  np.testing.assert_array_equal(kept, np.flatnonzero(keep))


def test_stage_reports_an_empty_window(tmp_path):
  workdir = str(tmp_path)
  _write_study(workdir, [('cnn', 1)])
  cfg = _config()
  cfg.analysis.window = (5.0, 9.0)
  with pytest.raises(ValueError, match='selects none'):
    analyze.run_analysis(cfg, workdir)
