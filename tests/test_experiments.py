"""Removal / compression subsets, budgets, and the cause probes."""

import copy
import itertools
import json
import os
import shutil
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import quick_config
from easyhard_jax.analysis import exports
from easyhard_jax.storage import records
from easyhard_jax import runner
from easyhard_jax.analysis import score_store
from easyhard_jax.data import loader
from easyhard_jax.data import sources
from easyhard_jax.experiments import causes
from easyhard_jax.experiments import noise_floor
from easyhard_jax.experiments import subsets
from easyhard_jax.experiments import sweeps
from easyhard_jax.train import ensemble
from easyhard_jax.train import run_spec
from easyhard_jax.train import steps as steps_lib


def _random_problem(n=300, classes=4, seed=0):
  rng = np.random.default_rng(seed)
  score = rng.integers(0, 5, n) / 4.0  # Many ties, like easiness.
  return score, rng.normal(size=n), rng.integers(0, classes, n)


@pytest.mark.parametrize('strategy', ['easiest', 'hardest'])
def test_removal_drops_the_chosen_end(strategy):
  score, aum, labels = _random_problem()
  keep = subsets.removal_mask(strategy, 90, score=score, score_name='easiness',
                              labels=labels, seed=0, aum=aum)
  removed = ~keep
  assert removed.sum() == 90
  # Slow reference: every removed example is at least as easy (hard) as
  # every kept one, under (easiness, aum) order.
  key = list(zip(score, aum))
  worst_kept = (max if strategy == 'easiest' else min)(
      k for k, m in zip(key, keep) if m)
  for k, m in zip(key, removed):
    if m:
      assert (k >= worst_kept) if strategy == 'easiest' else (k <= worst_kept)


def test_el2n_orientation_is_respected():
  score, aum, labels = _random_problem()
  keep = subsets.removal_mask('easiest', 50, score=score * 0 + aum,
                              score_name='el2n', labels=labels, seed=0)
  # For EL2N high = hard, so removing the easiest removes the lowest values.
  assert aum[~keep].max() <= aum[keep].min()


def test_balanced_quota_is_exact_and_proportional():
  _, _, labels = _random_problem(n=301, classes=3, seed=1)
  quota = subsets.class_quota(labels, 100)
  assert sum(quota.values()) == 100
  sizes = np.bincount(labels)
  for c, q in quota.items():
    assert abs(q - 100 * sizes[c] / sizes.sum()) < 1
  score, aum, _ = _random_problem(n=301, classes=3, seed=1)
  keep = subsets.removal_mask('hardest_balanced', 100, score=score,
                              score_name='easiness', labels=labels, seed=0,
                              aum=aum)
  for c, q in quota.items():
    assert (~keep & (labels == c)).sum() == q


def test_random_subsets_differ_by_seed_and_repeat_for_a_seed():
  score, _, labels = _random_problem()
  masks = [subsets.removal_mask('random', 100, score=score,
                                score_name='easiness', labels=labels, seed=s)
           for s in (0, 1, 0)]
  assert not np.array_equal(masks[0], masks[1])
  np.testing.assert_array_equal(masks[0], masks[2])


def test_stratified_compression_spans_all_easiness_levels():
  score, aum, labels = _random_problem()
  keep = subsets.compression_mask('stratified', 50, score=score,
                                  score_name='easiness', labels=labels,
                                  seed=0, aum=aum)
  assert keep.sum() == 50
  assert set(np.unique(score[keep])) == set(np.unique(score))
  drop = subsets.compression_mask('drop_easiest', 50, score=score,
                                  score_name='easiness', labels=labels,
                                  seed=0, aum=aum)
  assert score[drop].max() <= score[~drop].min() + 1e-9 or (
      score[drop].mean() < score[~drop].mean())


def test_bad_strategy_and_fraction_are_named():
  score, _, labels = _random_problem()
  with pytest.raises(ValueError, match='Unknown strategy'):
    subsets.removal_mask('median', 5, score=score, score_name='easiness',
                         labels=labels, seed=0)
  with pytest.raises(ValueError, match='Cannot remove'):
    subsets.removal_mask('random', 300, score=score, score_name='easiness',
                         labels=labels, seed=0)


def test_program_slices_split_members_evenly_within_the_limit():
  for n in range(1, 40):
    for limit in range(1, 9):
      slices = sweeps.program_slices(n, limit)
      sizes = [sl.stop - sl.start for sl in slices]
      # Contiguous, covering every member once, as few programs as the
      # limit allows, and sizes within one of each other.
      assert slices[0].start == 0 and slices[-1].stop == n
      assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))
      assert len(slices) == -(-n // limit)
      assert max(sizes) <= limit and max(sizes) - min(sizes) <= 1
  assert [sl.stop - sl.start for sl in sweeps.program_slices(10, 6)] == [5, 5]
  assert [sl.stop - sl.start for sl in sweeps.program_slices(10, 3)] == [
      3, 3, 2, 2]


def test_members_never_train_on_removed_examples():
  config = quick_config(epochs=1)
  data = sources.load_dataset(config)
  n = data.train_images.shape[0]
  rng = np.random.default_rng(0)
  keep = np.stack([rng.permutation(n) < n // 2 for _ in range(2)])
  t = ensemble.ArchTrainer(config, data, 'cnn', keep=keep)
  assert t.spe == int(np.ceil((n // 2) / config.batch_size))
  states = t.init_states()
  perms = t.epoch_perms(0)
  buffers = steps_lib.empty_buffers(2, n)
  for _ in range(t.spe):
    states, buffers = t.step(states, buffers, perms)
  seen = np.isfinite(np.asarray(buffers['loss']))
  np.testing.assert_array_equal(seen, keep)  # All kept seen, none removed.


@pytest.fixture(scope='module')
def study_copy(quick_study, tmp_path_factory):
  """The quick study with its analysis (the sweeps read its scores)."""
  config, workdir = quick_study
  copy_dir = str(tmp_path_factory.mktemp('sweeps'))
  shutil.copytree(workdir, copy_dir, dirs_exist_ok=True)
  runner.run(quick_config(), copy_dir, 'analysis')
  return config, copy_dir


@pytest.mark.slow
@pytest.mark.parametrize('budget', ['epochs', 'steps'])
def test_removal_sweep_budgets(study_copy, budget, tmp_path):
  _, workdir = study_copy
  workdir_b = str(tmp_path / budget)
  shutil.copytree(workdir, workdir_b)
  config = quick_config()
  config.removal.fractions = (0.5,)
  config.removal.strategies = ('easiest', 'random')
  config.removal.seeds = 1
  config.removal.epochs = 2
  config.removal.budget = budget
  runner.run(config, workdir_b, 'removal')
  with open(os.path.join(workdir_b, 'removal', 'results.json')) as f:
    result = json.load(f)
  steps = {r['strategy']: r['steps'] for r in result['rows']}
  full = result['full_steps']
  assert steps['full'] == full == 2 * 8  # 512 examples / 64 per batch.
  if budget == 'epochs':
    assert steps['easiest'] == steps['random'] == 2 * 4  # Half the data.
  else:
    assert steps['easiest'] == steps['random'] == full
  assert result['budget'] == budget and result['curves']
  assert not result['design']['across_groups'].startswith('paired')
  diffs = result['paired_differences']
  assert [(d['strategy'], d['baseline'], d['seeds']) for d in diffs] == [
      ('easiest', 'random', 1)]
  masks = np.load(os.path.join(workdir_b, 'removal', 'frac_0.500',
                               'masks_cnn.0.npz'))['keep']
  assert masks.shape == (2, 512) and (masks.sum(1) == 256).all()
  fused = records.load(os.path.join(workdir_b, 'removal', 'frac_0.500'),
                       'train', source='fused')
  np.testing.assert_array_equal(np.isfinite(fused.loss[:, 0]), masks)
  if budget == 'epochs':  # Fresh streams per group; paired within one.
    ref, frac = (records.load(os.path.join(workdir_b, 'removal', g),
                              'train', source='fused').members
                 for g in ('reference', 'frac_0.500'))
    assert {m['stream'] for m in ref} == {'removal/reference'}
    assert {m['stream'] for m in frac} == {'removal/frac_0.500'}
    data = sources.load_dataset(config)
    _assert_fresh_inits(config, data, records.load(workdir, 'train').members,
                        ref + frac)
    paired = _largest_kernels(config, data, frac)  # easiest/s0, random/s0.
    np.testing.assert_array_equal(paired[0], paired[1])
  # A rerun trains nothing and gives the same table.
  runner.run(config, workdir_b, 'removal')
  with open(os.path.join(workdir_b, 'removal', 'results.json')) as f:
    assert json.load(f)['rows'] == result['rows']


def test_random_labels_really_shuffle():
  config = quick_config()
  data = sources.load_dataset(config)
  _, shuffled = causes.VARIANTS['random_labels'](config, data,
                                                  config.causes)
  assert (shuffled.train_labels != data.train_labels).mean() > 0.8
  np.testing.assert_array_equal(np.bincount(shuffled.train_labels),
                                np.bincount(data.train_labels))
  np.testing.assert_array_equal(shuffled.test_labels, data.test_labels)


def test_lowpass_and_grayscale_inputs():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
  blurred = causes.gaussian_lowpass(images, 1.0)
  def hf(x):
    return np.abs(np.diff(x.astype(float), axis=1)).mean()
  assert hf(blurred) < 0.5 * hf(images)
  gray = causes.to_grayscale(images)
  assert (gray[..., 0] == gray[..., 1]).all()
  expected = np.round(images @ np.array([0.299, 0.587, 0.114]))
  np.testing.assert_allclose(gray[..., 0], expected, atol=1)
  one = images[..., :1]
  np.testing.assert_array_equal(causes.to_grayscale(one), one)


def _largest_kernels(config, data, members):
  """Each member's initial largest weight array (the real init path)."""
  t = ensemble.ArchTrainer(config, data, 'cnn', members=members)
  leaves = jax.tree_util.tree_leaves(t.init_states().params)
  return np.asarray(max(leaves, key=lambda x: x.size))


def _assert_fresh_inits(config, data, study_members, members):
  """Every experiment member's init differs from every study member's."""
  study = _largest_kernels(config, data, study_members)
  mine = _largest_kernels(config, data, members)
  for i, m in enumerate(members):
    assert m.get('stream'), m
    for j in range(study.shape[0]):
      # Distinct keys: independent draws, equal nowhere in practice (a
      # float32 normal draw repeats with probability ~2^-24 per weight).
      assert (mine[i] != study[j]).mean() > 0.99, (m['name'], j)


def test_member_keys_keep_the_study_keys_and_salt_experiments():
  config = quick_config()
  infos = run_spec.study_members(config, 'cnn')
  assert all('stream' not in m for m in infos)
  # Today's study keys, written out as the earlier formula did.
  root = jax.random.fold_in(jax.random.key(config.seed),
                            zlib.crc32(b'cnn') & 0x7FFFFFFF)
  old = jax.vmap(lambda i: jax.random.fold_in(root, i))(
      jnp.arange(len(infos), dtype=jnp.int32))
  np.testing.assert_array_equal(
      jax.random.key_data(ensemble.member_keys(config, 'cnn', infos)),
      jax.random.key_data(old))
  salted = run_spec.study_members(config, 'cnn', stream='causes/adam')
  assert [m['stream'] for m in salted] == ['causes/adam'] * len(infos)
  other = [dict(m, stream='causes/lowpass') for m in salted]
  keys = np.concatenate([jax.random.key_data(ensemble.member_keys(
      config, 'cnn', ms)) for ms in (infos, salted, other)])
  assert len({tuple(k) for k in keys}) == 3 * len(infos)
  # Host crops of the streamed path: the study's entropy is unchanged.
  assert loader._member_entropy(infos[1].as_dict()) == loader._member_entropy(
      1) == [1]
  assert loader._member_entropy(salted[1].as_dict()) == [
      zlib.crc32(b'causes/adam') & 0x7FFFFFFF, 1]


@pytest.mark.slow
def test_probe_causes_end_to_end(study_copy):
  study_config, workdir = study_copy
  config = quick_config()
  config.causes.variants = ('random_labels', 'grayscale')
  config.causes.seeds = 1
  config.causes.epochs = 1
  runner.run(config, workdir, 'causes')
  with open(os.path.join(workdir, 'causes', 'results.json')) as f:
    result = json.load(f)
  assert [r['variant'] for r in result['rows']] == ['reseed', 'random_labels',
                                                    'grayscale']
  assert not result['design']['paired']
  # The control: the study's members per architecture (2), fresh seeds;
  # its figures are over the 2 subsets of causes.seeds = 1 member.
  assert result['control']['members_per_arch'] == 2
  assert result['control']['subsets'] == 2
  for row in result['rows']:
    assert np.isfinite(row['easy_overlap_ratio'])
    assert -1 <= row['spearman_easiness'] <= 1
    assert row['members_per_arch'] == 1 and row['paired'] is False
    # Judged at the control's resolution (causes.match_window_probes).
    assert row['window_probes'] == result['control']['window_probes'] >= 1
    assert row['control_window_probes'] == row['window_probes']
    assert row['control_easy_overlap_ratio'] == (
        result['rows'][0]['easy_overlap_ratio'])
  grayscale = result['variants']['grayscale']
  assert set(grayscale['vs_control']) == set(noise_floor.FIGURES)
  data = sources.load_dataset(config)
  study_members = records.load(workdir, 'train').members
  members = [m for v in ('reseed', 'random_labels', 'grayscale')
             for m in records.load(os.path.join(workdir, 'causes', v),
                                   'train').members]
  assert len({m['stream'] for m in members}) == 3
  _assert_fresh_inits(study_config, data, study_members, members)
  with pytest.raises(ValueError,
                     match=r'Unknown (config\.)?causes\.variants'):
    bad = copy.deepcopy(config)
    bad.causes.variants = ('moonlight',)
    runner.run(bad, workdir, 'causes')


def test_analyze_writes_exports_and_keep_lists(study_copy):
  config, workdir = study_copy
  runner.run(quick_config(), workdir, 'analysis')
  z = np.load(os.path.join(workdir, 'exports', 'scores_train.npz'))
  n = config.max_train_examples
  np.testing.assert_array_equal(z['example_index'], np.arange(n))
  rec = records.load(workdir, 'train')
  np.testing.assert_array_equal(z['label'], rec.labels)
  assert z['is_easy'].sum() > 0 and z['is_hard'].sum() > 0
  for fraction in config.compression.fractions:
    path = os.path.join(workdir, 'exports', 'keep_lists',
                        f'drop_easiest_keep{fraction:.2f}.csv')
    kept = np.loadtxt(path, delimiter=',', skiprows=1, usecols=0, dtype=int,
                      ndmin=1)
    assert len(kept) == round(fraction * n)
    assert (np.diff(kept) > 0).all() and kept.max() < n
    # Dropping the easiest first keeps the hardest: kept easiness is lower.
    dropped = np.setdiff1d(np.arange(n), kept)
    assert z['easiness'][kept].mean() <= z['easiness'][dropped].mean()


def test_compress_masks_and_keep_lists_come_from_the_score_file(
    study_copy, tmp_path):
  """The compress stage and the keep-lists read analysis/scores_train.npz.

  Its easiness is replaced (the analysis stamp still holds), so masks that
  follow the file differ from masks recomputed from the records.
  """
  _, src = study_copy
  workdir = str(tmp_path / 'w')
  shutil.copytree(src, workdir)
  table = score_store.load_analysis_scores(workdir, 'train')
  original = table['easiness'].copy()
  table['easiness'] = (1.0 - original).astype(np.float32)  # Easy <-> hard.
  score_store.write_analysis_scores(workdir, 'train', table)
  config = quick_config()
  config.compression.strategies = ('drop_easiest',)
  config.compression.epochs = 1
  runner.run(config, workdir, 'compression')
  n, k = table['label'].size, int(round(0.5 * table['label'].size))
  mask = lambda score, seed: subsets.compression_mask(
      'drop_easiest', k, score=score, score_name='easiness',
      labels=table['label'], seed=seed, aum=table['early_margin'])
  keep = np.load(os.path.join(workdir, 'compression', 'frac_0.500',
                              'masks_cnn.0.npz'))['keep']
  np.testing.assert_array_equal(keep, [mask(table['easiness'],
                                            (config.seed, 0))])
  assert not np.array_equal(keep[0], mask(original, (config.seed, 0)))
  exports.write_exports(config, workdir)
  kept = np.loadtxt(os.path.join(workdir, 'exports', 'keep_lists',
                                 'drop_easiest_keep0.50.csv'),
                    delimiter=',', skiprows=1, usecols=0, dtype=int)
  np.testing.assert_array_equal(kept, np.flatnonzero(mask(table['easiness'],
                                                          0)))
  assert kept.size == k < n


def _toy_ensemble(n_per_arch, archs=('a', 'b'), n=50, probes=4, seed=0):
  rng = np.random.default_rng(seed)
  m = n_per_arch * len(archs)
  return noise_floor.Ensemble(
      hits=rng.integers(0, probes + 1, (m, n)), probes=probes,
      margin=rng.normal(size=(m, n)),
      arch_members={a: np.arange(i * n_per_arch, (i + 1) * n_per_arch)
                    for i, a in enumerate(archs)})


def test_control_subsets_take_m_members_of_every_architecture():
  ens = _toy_ensemble(4)
  subs = noise_floor.member_subsets(ens, 2, limit=100)
  assert len(subs) == 6 * 6  # C(4, 2) per architecture, both architectures.
  assert len({tuple(s) for s in subs}) == 36
  for s in subs:
    assert (np.isin(s, ens.arch_members['a']).sum() ==
            np.isin(s, ens.arch_members['b']).sum() == 2)
  capped = noise_floor.member_subsets(ens, 2, limit=10)
  assert len({tuple(s) for s in capped}) == 10
  assert all(any((s == t).all() for t in subs) for s in capped)
  with pytest.raises(ValueError, match='Cannot take 5'):
    noise_floor.member_subsets(ens, 5, limit=10)


def test_control_spread_undoes_the_finite_population_correction():
  # For a mean over members, the std over every m-of-n subset times
  # sqrt(n / (n - m)) is exactly S / sqrt(m), S the members' ddof=1 std:
  # the std of the mean of m independent members.
  x = np.random.default_rng(1).normal(size=5)
  means = [x[list(c)].mean() for c in itertools.combinations(range(5), 2)]
  got = noise_floor._mean_spread(means, 5, 2)
  np.testing.assert_allclose(got['mean'], x.mean(), rtol=1e-12)
  np.testing.assert_allclose(got['spread'], x.std(ddof=1) / np.sqrt(2),
                             rtol=1e-12)
  d = noise_floor.departure(got['mean'] + 3 * got['spread'], got, 5, 2, 2.0)
  np.testing.assert_allclose(d['z'], 3 / np.sqrt(1 + 2 / 5), rtol=1e-12)
  assert d['departs']
  assert noise_floor.departure(1.0, {'mean': 1.0, 'spread': None}, 5, 2,
                               2.0) == {'z': None, 'departs': None}


def test_paired_differences_pair_by_seed_within_a_group():
  rows = [dict(arch='cnn', fraction=0.5, strategy=st, score=sc, seed=s,
               acc=a) for st, sc, s, a in [
                   ('easiest', 'easiness', 0, 0.9), ('easiest', 'easiness', 1,
                                                     0.8),
                   ('random', 'none', 0, 0.7), ('random', 'none', 1, 0.75),
                   ('hardest_balanced', 'easiness', 0, 0.5),
                   ('random_balanced', 'none', 0, 0.6)]]
  diffs = {d['strategy']: d for d in sweeps.paired_differences(rows)}
  np.testing.assert_allclose(diffs['easiest']['test_acc_diff_mean'], 0.125)
  np.testing.assert_allclose(diffs['easiest']['test_acc_diff_std'],
                             np.std([0.2, 0.05], ddof=1))
  assert diffs['hardest_balanced']['baseline'] == 'random_balanced'
  np.testing.assert_allclose(diffs['hardest_balanced']['test_acc_diff_mean'],
                             -0.1)


def test_causes_report_puts_the_control_beside_every_probe(tmp_path):
  from easyhard_jax.report import experiment_sections
  control = {f: {'mean': 2.0, 'spread': 0.1} for f in noise_floor.FIGURES}

  def probe(value, z, departs):
    r = {f: value for f in noise_floor.FIGURES}
    r.update(epochs=6, members_per_arch=2, test_acc_mean=0.9,
             test_acc_std=0.01, control=control,
             vs_control={f: {'z': z, 'departs': departs}
                         for f in noise_floor.FIGURES},
             per_arch={a: {'easy_overlap_ratio': value, 'spearman': 0.5,
                           'control': {'easy_overlap_ratio': control[
                               'easy_overlap_ratio'], 'spearman': control[
                                   'spearman_easiness']}}
                       for a in ('cnn', 'vgg11')})
    return r
  variants = {'reseed': probe(2.0, 0.0, False),
              'adam': probe(2.05, 0.4, False),
              'random_labels': probe(1.0, -9.0, True)}
  path = tmp_path / 'results.json'
  path.write_text(json.dumps({
      'archs': ['cnn', 'vgg11'], 'seeds': 2, 'members_per_arch': 2,
      'control': {'name': 'reseed', 'members_per_arch': 3, 'subsets': 9,
                  'departure_z': 2.78, 'departure_level': 0.95},
      'variants': variants, 'rows': [{'variant': k} for k in variants],
      'baseline': {'epochs': 15, 'test_acc_mean': 0.97, 'test_acc_std': 0.01,
                   'cross_arch_easy_ratio': 3.0},
      'chance_test_acc': 0.1}))
  sec = experiment_sections.causes_section(str(path), 'causes', 'Causes', '')
  assert 'reseed control' in sec.figures[0].caption
  html = sec.body_html
  assert '<td>reseed (control)</td>' in html and '<td>2 ± 0.1</td>' in html
  assert '<td>2.05 (z +0.4)</td>' in html and '<td>none</td>' in html
  assert ('<td>easy overlap, hard overlap, Spearman, cross-arch '
          'agreement</td>') in html
  bullets = experiment_sections.causes_summary(str(path))
  assert bullets[0].startswith('reseed:') and 'noise floor' in bullets[0]
  assert bullets[1].endswith('within the seed spread of the control in '
                             'every figure.')
  assert 'departs from the control beyond the seed spread in: easy' in (
      bullets[2])
