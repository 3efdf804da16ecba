"""The held-out estimators, subset masks and the heldout stage.

Estimators (analysis/consistency.py) against slow per-example loops on
random masks and outcomes, including examples no member held out (NaN with
count 0, never a silent 0); the subset masks against the study's and the
sweeps' random streams; a tiny end-to-end heldout stage (slow).
"""

import json
import math
import os

import jax
import numpy as np
import pytest

from conftest import quick_config
from easyhard_jax.analysis import consistency
from easyhard_jax.experiments import heldout
from easyhard_jax.experiments import subsets
from easyhard_jax.train import ensemble


def _slow_estimate(correct, keep, member_ratio, ratios):
  """Per example, per ratio: plain loops over members."""
  m, n = correct.shape
  out = {}
  for r in ratios:
    t = consistency.ratio_tag(r)
    for name in ('consistency', 'consistency_se', 'in_accuracy',
                 'memorization', 'memorization_se'):
      out[f'{name}_{t}'] = np.full(n, np.nan)
    out[f'heldout_count_{t}'] = np.zeros(n, np.int64)
    out[f'in_count_{t}'] = np.zeros(n, np.int64)
    for i in range(n):
      held = [bool(correct[j, i]) for j in range(m)
              if member_ratio[j] == r and not keep[j, i]]
      seen = [bool(correct[j, i]) for j in range(m)
              if member_ratio[j] == r and keep[j, i]]
      out[f'heldout_count_{t}'][i] = len(held)
      out[f'in_count_{t}'][i] = len(seen)
      se = lambda p, c: math.sqrt(p * (1 - p) / c)
      if held:
        p = sum(held) / len(held)
        out[f'consistency_{t}'][i] = p
        out[f'consistency_se_{t}'][i] = se(p, len(held))
      if seen:
        out[f'in_accuracy_{t}'][i] = sum(seen) / len(seen)
      if held and seen:
        q = sum(seen) / len(seen)
        out[f'memorization_{t}'][i] = q - p
        out[f'memorization_se_{t}'][i] = math.sqrt(
            se(q, len(seen)) ** 2 + se(p, len(held)) ** 2)
  for name, se_name in (('consistency', 'consistency_se'),
                        ('memorization', 'memorization_se')):
    head = 'cscore' if name == 'consistency' else 'memorization'
    out[head] = np.full(n, np.nan)
    out[f'{head}_se'] = np.full(n, np.nan)
    if head == 'cscore':
      out['cscore_ratios'] = np.zeros(n, np.int64)
    for i in range(n):
      vals = [(out[f'{name}_{consistency.ratio_tag(r)}'][i],
               out[f'{se_name}_{consistency.ratio_tag(r)}'][i])
              for r in ratios]
      vals = [(v, s) for v, s in vals if not math.isnan(v)]
      if head == 'cscore':
        out['cscore_ratios'][i] = len(vals)
      if vals:
        out[head][i] = sum(v for v, _ in vals) / len(vals)
        out[f'{head}_se'][i] = math.sqrt(sum(s * s for _, s in vals)) / len(
            vals)
  out['heldout_count'] = sum(out[f'heldout_count_{consistency.ratio_tag(r)}']
                             for r in ratios)
  return out


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_estimates_equal_slow_loops_on_random_masks_and_outcomes(seed):
  rng = np.random.default_rng(seed)
  ratios = (0.5, 0.7, 0.9)
  m, n = 15, 60
  member_ratio = np.repeat(ratios, 5)
  keep = rng.random((m, n)) < member_ratio[:, None]
  keep[:, 0] = True                       # Never held out at any ratio.
  keep[:, 1] = member_ratio == 0.9        # Missing one ratio only.
  keep[:, 2] = False                      # Never trained on.
  correct = rng.random((m, n)) < 0.6
  got = consistency.estimate(correct, keep, member_ratio, ratios)
  want = _slow_estimate(correct, keep, member_ratio, ratios)
  assert set(got) == set(want)
  for k, v in want.items():
    if v.dtype == np.int64:
      np.testing.assert_array_equal(got[k], v, err_msg=k)
    else:
      np.testing.assert_allclose(got[k], v, rtol=1e-12, atol=1e-15,
                                 equal_nan=True, err_msg=k)
  assert got['heldout_count'][0] == 0 and np.isnan(got['cscore'][0])
  assert got['cscore_ratios'][1] == 2 and np.isfinite(got['cscore'][1])
  assert np.isnan(got['memorization'][2])  # Never in a subset.
  assert (got['cscore_ratios'][3:] >= 0).all()


def test_never_held_out_is_nan_with_count_zero_never_zero():
  correct = np.zeros((4, 3), bool)        # Every member wrong everywhere.
  keep = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 1], [1, 0, 1]], bool)
  est = consistency.estimate(correct, keep, np.full(4, 0.5), (0.5,))
  np.testing.assert_array_equal(est['heldout_count_r0.5'], [0, 3, 1])
  assert np.isnan(est['consistency_r0.5'][0])
  assert np.isnan(est['consistency_se_r0.5'][0])
  assert np.isnan(est['cscore'][0]) and est['cscore_ratios'][0] == 0
  np.testing.assert_array_equal(est['cscore'][1:], [0.0, 0.0])


def test_a_member_ratio_without_members_is_refused():
  with pytest.raises(ValueError, match='ratio 0.7'):
    consistency.estimate(np.zeros((2, 3), bool), np.zeros((2, 3), bool),
                         np.full(2, 0.5), (0.5, 0.7))


def test_halves_are_disjoint_cover_and_split_every_ratio():
  member_ratio = np.array([0.5, 0.9, 0.5, 0.5, 0.9, 0.9, 0.5, 0.9, 0.5])
  a, b = consistency.halves(member_ratio)
  assert not (a & b).any() and (a | b).all()
  for r in (0.5, 0.9):
    sel = member_ratio == r
    assert abs(int(a[sel].sum()) - int(b[sel].sum())) <= 1
    assert a[sel].any() and b[sel].any()


def test_between_halves_of_equal_estimates_is_perfect():
  rng = np.random.default_rng(3)
  a = rng.random(200)
  labels = rng.integers(0, 4, 200)
  res = consistency.between_halves(a, a.copy(), labels, fractions=(0.1,))
  assert res['spearman'] == pytest.approx(1.0)
  assert res['spearman_brown'] == pytest.approx(1.0)
  assert res['below_half']['auroc'] == pytest.approx(1.0)
  b = a.copy()
  b[:5] = np.nan                         # Missing in one half: left out.
  assert consistency.between_halves(a, b, labels,
                                    fractions=(0.1,))['examples'] == 195


def test_judge_ranks_an_exact_and_a_reversed_proxy():
  rng = np.random.default_rng(4)
  n = 300
  cscore = rng.random(n)
  cscore[:7] = np.nan                     # Never held out: left out.
  table = {'example_index': np.arange(n), 'label': rng.integers(0, 5, n),
           'easiness': cscore.copy(), 'el2n': cscore.copy(),
           'variability': rng.random(n)}
  table['easiness'][:7] = 0.5
  res = consistency.judge(table, cscore, fractions=(0.1,))
  easy, el2n = res['scores']['easiness'], res['scores']['el2n']
  assert easy['examples'] == n - 7
  assert easy['spearman'] == pytest.approx(1.0)
  assert easy['below_half']['auroc'] == pytest.approx(1.0)
  # el2n is hard-oriented: the same values read as the reverse ranking.
  assert el2n['spearman'] == pytest.approx(-1.0)
  assert el2n['below_half']['auroc'] == pytest.approx(0.0)
  assert 'below_half' not in res['scores']['variability']
  # Slow AUROC for C-score < 0.5 of easiness's hardness.
  ok = np.isfinite(cscore)
  hard, pos = -table['easiness'][ok], cscore[ok] < 0.5
  pairs = [(h1 > h0) + 0.5 * (h1 == h0) for h1 in hard[pos]
           for h0 in hard[~pos]]
  assert easy['below_half']['auroc'] == pytest.approx(np.mean(pairs))


def test_subset_masks_have_exact_size_and_their_own_stream():
  n, k = 1000, 700
  masks = np.stack([heldout.subset_mask(0, 'cnn', 0.7, j, n)
                    for j in range(32)])
  assert (masks.sum(1) == k).all()
  np.testing.assert_array_equal(masks[3],
                                heldout.subset_mask(0, 'cnn', 0.7, 3, n))
  others = [heldout.subset_mask(1, 'cnn', 0.7, 0, n),
            heldout.subset_mask(0, 'vgg11', 0.7, 0, n),
            heldout.subset_mask(0, 'cnn', 0.5, 0, n)[:n]]
  for o in others:
    assert not np.array_equal(o, masks[0])
  # Not the sweeps' random subsets of the same size and seeds.
  labels = np.zeros(n, np.int64)
  for seed in range(4):
    sweep = subsets.compression_mask('random', k, score=None,
                                     score_name='easiness', labels=labels,
                                     seed=seed)
    assert not np.array_equal(sweep, masks[seed])
  # Independent members: pairwise inclusion correlation near 0 (sd of a
  # correlation over 1000 examples ~0.032; 5 sd bound) and per-example
  # counts as a binomial(32, 0.7) (mean 22.4, variance ~6.7 up to the
  # fixed-size correction).
  corr = np.corrcoef(masks.astype(float))[np.triu_indices(32, 1)]
  assert np.abs(corr).max() < 0.16
  counts = masks.sum(0)
  assert abs(counts.mean() - 22.4) < 1e-9
  assert 5.0 < counts.var() < 8.5


def test_member_keys_are_not_the_studys():
  config = quick_config(**{'heldout.members': 3})
  members, _ = heldout.member_plan(config, 'cnn', 0.5, 100)
  study = ensemble.member_keys(config, 'cnn', [0, 1, 2])
  ours = ensemble.member_keys(config, 'cnn', members)
  other, _ = heldout.member_plan(config, 'cnn', 0.9, 100)
  theirs = ensemble.member_keys(config, 'cnn', other)
  data = lambda k: np.asarray(jax.random.key_data(k)).reshape(3, -1)
  for a in (study, theirs):
    for i in range(3):
      for j in range(3):
        assert not np.array_equal(data(ours)[i], data(a)[j])


@pytest.mark.parametrize('field,value', [
    ('heldout.ratios', (0.5, 1.0)), ('heldout.ratios', ()),
    ('heldout.members', 1), ('heldout.epochs', 0),
    ('heldout.hard_tail_fractions', (0.0,)), ('heldout.ratios', (0.5, 0.5))])
def test_bad_heldout_fields_are_refused(field, value):
  with pytest.raises(ValueError, match='config.heldout'):
    heldout.heldout_config(quick_config(**{field: value}))


@pytest.mark.slow
def test_heldout_stage_end_to_end(tmp_path):
  from easyhard_jax.storage import records
  from easyhard_jax import runner
  from easyhard_jax.report import build
  from easyhard_jax.report import sections
  workdir = str(tmp_path)
  config = quick_config(**{'heldout.members': 2, 'heldout.epochs': 1,
                           'heldout.ratios': (0.5, 0.9),
                           'heldout.members_per_program': 2})
  runner.run(config, workdir, 'heldout')
  out = os.path.join(workdir, 'heldout')
  with open(os.path.join(out, 'results.json')) as f:
    res = json.load(f)
  assert [c['members'] for c in res['counts']] == [2, 2]
  assert 'skipped' in res['proxies']      # No analysis in this workdir.
  with np.load(os.path.join(out, 'scores_train.npz')) as z:
    table = {k: z[k] for k in z.files}
  n = 512
  np.testing.assert_array_equal(table['example_index'], np.arange(n))
  # The written estimates are the estimator on the written records and masks.
  correct, keep, ratio = [], [], []
  for r in (0.5, 0.9):
    sub = os.path.join(out, consistency.ratio_tag(r))
    rec = records.load(sub, 'train', archs=['cnn.0'])
    correct.append(rec.correct[:, -1])
    with np.load(os.path.join(sub, 'masks_cnn.0.npz')) as z:
      keep.append(z['keep'])
    ratio += [r] * rec.correct.shape[0]
  keep = np.concatenate(keep)
  assert (keep.sum(1) == np.round(np.asarray(ratio) * n)).all()
  est = consistency.estimate(np.concatenate(correct), keep,
                             np.asarray(ratio), (0.5, 0.9))
  for k, v in est.items():
    np.testing.assert_array_equal(table[k], v, err_msg=k)
  never = table['heldout_count'] == 0
  assert never.any()                      # 2 members at 0.9: most examples.
  assert np.isnan(table['cscore'][never]).all()
  assert res['cscore']['missing'] == int(never.sum())
  # The report section reads it (the proxies: not judged, and says so).
  study = build.Study(config, workdir, None, None)
  sec = sections.build_section(study, 'heldout')
  assert sec.status == 'ok' and 'never held out' in sec.body_html
  assert 'Proxies not judged' in sec.body_html
  # A rerun trains nothing and rewrites the same estimates.
  runner.run(config, workdir, 'heldout')
  with np.load(os.path.join(out, 'scores_train.npz')) as z:
    np.testing.assert_array_equal(z['cscore'], table['cscore'])


def test_a_bad_reference_fails_before_any_training(tmp_path):
  """A wrong key in config.reference stops the stage before it trains."""
  ref = str(tmp_path / 'cscores.npz')
  np.savez(ref, scores=np.zeros(512, np.float32))
  workdir = str(tmp_path / 'w')
  os.makedirs(workdir)
  config = quick_config(**{'heldout.members': 2, 'heldout.epochs': 1,
                           'reference.path': ref, 'reference.key': 'score'})
  with pytest.raises(KeyError, match=r"no arrays \['score'\]"):
    heldout.run_heldout(config, workdir)
  assert not os.path.exists(os.path.join(workdir, 'heldout'))


def test_the_heldout_stamp_follows_the_reference_and_its_content(tmp_path):
  """results.json compares with config.reference: a new file reruns it."""
  from easyhard_jax import fingerprint
  ref = tmp_path / 'cscores.npz'
  np.savez(ref, scores=np.zeros(4, np.float32))
  hashes = {'cnn': 'h'}
  stamp = lambda c: fingerprint.expected_stamp(c, 'heldout', hashes)['hash']
  plain = stamp(quick_config())
  with_ref = stamp(quick_config(**{'reference.path': str(ref)}))
  assert with_ref != plain
  np.savez(ref, scores=np.ones(4, np.float32))  # Same path, new content.
  assert stamp(quick_config(**{'reference.path': str(ref)})) != with_ref
