"""Probe score kernels against slow loop references.

Conventions: easiness is the fraction of (member, window probe) pairs
correct; first_learned is the epoch of the first probe from which the
example stays correct to the last probe (still wrong at the last probe: the
last probe's epoch + 1); probe_forgetting_events counts correct -> wrong
transitions between consecutive probes (never correct: P_w, the number of
probes); early_margin is the mean eval margin over the window probes. The
training-pass scores (Toneva forgetting, AUM, cartography) are tested in
test_analysis_fused_scores.py.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from easyhard_jax.storage import records
from easyhard_jax.analysis import scores

SHAPES = [(1, 1, 5), (1, 7, 13), (3, 10, 40), (4, 5, 1)]


def _correct(rng, shape, p=0.6):
  c = rng.random(shape) < p
  if shape[2] >= 3:  # All-correct, all-wrong and a late-learned column.
    c[:, :, 0] = True
    c[:, :, 1] = False
    c[:, :, 2] = np.arange(shape[1])[None, :] >= shape[1] // 2
  return c


def _masks(rng, p):
  yield np.ones(p, bool)
  m = rng.random(p) < 0.5
  m[rng.integers(p)] = True
  yield m


def ref_first_learned(c, mask):
  m_, _, n_ = c.shape
  sel = [p for p in range(c.shape[1]) if mask[p]]
  out = np.zeros((m_, n_), np.int64)
  for m in range(m_):
    for n in range(n_):
      seq = [bool(c[m, p, n]) for p in sel]
      first = len(seq)
      for i in range(len(seq)):
        if all(seq[i:]):
          first = i
          break
      out[m, n] = first
  return out


def ref_forgetting(c, mask):
  m_, _, n_ = c.shape
  sel = [p for p in range(c.shape[1]) if mask[p]]
  events = np.zeros((m_, n_), np.int64)
  never = np.zeros((m_, n_), bool)
  for m in range(m_):
    for n in range(n_):
      seq = [bool(c[m, p, n]) for p in sel]
      events[m, n] = sum(1 for a, b in zip(seq, seq[1:]) if a and not b)
      never[m, n] = not any(seq)
  return events, never


def ref_window_stats(v, mask):
  m_, _, n_ = v.shape
  sel = [p for p in range(v.shape[1]) if mask[p]]
  mean = np.zeros((m_, n_))
  std = np.zeros((m_, n_))
  for m in range(m_):
    for n in range(n_):
      xs = [float(v[m, p, n]) for p in sel]
      mu = sum(xs) / len(xs)
      mean[m, n] = mu
      std[m, n] = (sum((x - mu) ** 2 for x in xs) / len(xs)) ** 0.5
  return mean, std


@pytest.mark.parametrize('shape', SHAPES)
def test_dynamics_kernels_match_loops(shape):
  rng = np.random.default_rng(sum(shape))
  c = _correct(rng, shape)
  for mask in _masks(rng, shape[1]):
    got = np.asarray(scores.first_learned(c, mask))
    np.testing.assert_array_equal(got, ref_first_learned(c, mask))
    ev, nv = scores.forgetting_events(c, mask)
    rev, rnv = ref_forgetting(c, mask)
    np.testing.assert_array_equal(np.asarray(ev), rev)
    np.testing.assert_array_equal(np.asarray(nv), rnv)
    acc = np.asarray(scores.member_accuracy(c, mask))
    np.testing.assert_allclose(acc, ref_window_stats(c.astype(float), mask)[0],
                               rtol=1e-6)


@pytest.mark.parametrize('shape', SHAPES)
def test_window_mean_and_std_match_loops(shape):
  rng = np.random.default_rng(7 + sum(shape))
  v = rng.normal(size=shape).astype(np.float32)
  v[..., 0] = 0.25  # Constant over probes: std exactly 0.
  for mask in _masks(rng, shape[1]):
    mean, std = ref_window_stats(v, mask)
    np.testing.assert_allclose(np.asarray(scores.window_mean(v, mask)), mean,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(scores.window_std(v, mask)), std,
                               rtol=1e-5, atol=1e-6)


def ref_first_learned_epoch(c, mask, epochs):
  """Epoch of the first window probe from which the example stays right."""
  sel = [p for p in range(c.shape[1]) if mask[p]]
  idx = ref_first_learned(c, mask)
  table = [epochs[p] for p in sel] + [epochs[sel[-1]] + 1.0]
  return np.asarray(table)[idx]


def test_member_scores_conventions():
  rng = np.random.default_rng(3)
  c = _correct(rng, (4, 6, 60))
  v = rng.random((4, 6, 60)).astype(np.float32)
  window = np.arange(6) < 3
  epochs = np.array([0.25, 0.5, 0.75, 1.0, 2.0, 3.0], np.float32)
  for dyn in (np.ones(6, bool), np.array([0, 1, 1, 0, 1, 1], bool)):
    out = scores.member_scores(c, v, v, window, dyn, probe_epochs=epochs)
    assert set(out) == set(scores.PROBE_SCORE_NAMES)
    ev, never = ref_forgetting(c, dyn)
    pw = int(dyn.sum())
    np.testing.assert_array_equal(np.asarray(out['probe_forgetting_events']),
                                  np.where(never, pw, ev))
    # A never-learned example ranks above every real count (at most P // 2).
    assert np.all(np.asarray(out['probe_forgetting_events'])[:, 1] == pw)
    # first_learned is in epochs: never (wrong at the last probe) is the
    # last probe's epoch + 1 = 4; always right is the first probe's epoch.
    np.testing.assert_array_equal(np.asarray(out['first_learned']),
                                  ref_first_learned_epoch(c, dyn, epochs))
    assert np.all(np.asarray(out['first_learned'])[:, 1] == 4.0)
    assert np.all(np.asarray(out['first_learned'])[:, 0] ==
                  epochs[np.argmax(dyn)])
    # Column 2 turns right for good at probe 3 (epoch 1.0) of the full
    # window.
    if dyn.all():
      assert np.all(np.asarray(out['first_learned'])[:, 2] == 1.0)
    np.testing.assert_allclose(np.asarray(out['early_margin']),
                               ref_window_stats(v, window)[0], rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out['easiness']),
                             ref_window_stats(c.astype(float), window)[0],
                             rtol=1e-6)


def test_window_mask_selects_half_open_interval():
  epochs = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 2.0, 3.0])
  np.testing.assert_array_equal(scores.window_mask(epochs, (0.0, 1.0)),
                                [0, 1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(scores.window_mask(epochs, (-1, np.inf)),
                                np.ones(7, bool))
  np.testing.assert_array_equal(scores.window_mask(epochs, (1.0, 2.0)),
                                [0, 0, 0, 0, 0, 1, 0])
  with pytest.raises(ValueError, match='selects none'):
    scores.window_mask(epochs, (3.0, 5.0))
  with pytest.raises(ValueError, match='lo < hi'):
    scores.window_mask(epochs, (1.0, 1.0))


def test_orientation_table_is_complete_and_used():
  assert set(scores.SCORE_ORIENTATION.values()) <= {
      scores.HIGHER_IS_EASIER, scores.HIGHER_IS_HARDER, scores.NEITHER}
  x = np.array([1.0, 2.0])
  np.testing.assert_array_equal(scores.easier_key(x, 'easiness'), x)
  np.testing.assert_array_equal(scores.easier_key(x, 'easiness/vgg16'), x)
  np.testing.assert_array_equal(scores.easier_key(x, 'el2n'), -x)
  np.testing.assert_array_equal(scores.easier_key(x, 'forgetting_events'), -x)
  np.testing.assert_array_equal(
      scores.easier_key(x, 'probe_forgetting_events'), -x)
  np.testing.assert_array_equal(scores.easier_key(x, 'early_margin'), x)
  np.testing.assert_array_equal(scores.easier_key(x, 'aum'), x)
  assert set(scores.PROBE_SCORE_NAMES) | set(scores.FUSED_SCORE_NAMES) | set(
      scores.ENSEMBLE_SCORE_NAMES) | set(
          scores.CHECKPOINT_SCORE_NAMES) == set(scores.SCORE_NAMES)
  with pytest.raises(ValueError, match='no easy or hard end'):
    scores.easier_key(x, 'variability')
  with pytest.raises(KeyError):
    scores.orientation('speed')


def _records(rng, m=4, p=6, n=60, archs=('a', 'b', 'a', 'b')):
  c = _correct(rng, (m, p, n))
  f = lambda: rng.random((m, p, n)).astype(np.float32)
  return records.Records(
      correct=c, loss=f(), margin=f() - 0.5, p_true=f(), el2n=f(),
      labels=rng.integers(0, 3, n).astype(np.int32),
      example_ids=np.arange(n, dtype=np.int64), tfds_ids=None,
      members=[{'name': f'm{i}', 'arch': archs[i], 'seed': i}
               for i in range(m)],
      probe_steps=np.arange(1, p + 1) * 10,
      probe_epochs=np.array([0.25, 0.5, 0.75, 1.0, 2.0, 3.0])[:p],
      split='train', source='probe')


def test_compute_scores_on_records_matches_loops():
  rng = np.random.default_rng(11)
  rec = _records(rng)
  out = scores.compute_scores(rec, (0.0, 1.0), (0.0, np.inf))
  window = np.array([1, 1, 1, 1, 0, 0], bool)
  assert out['archs'] == ['a', 'b']
  for gi, arch in enumerate(['a', 'b']):
    members = [i for i, m in enumerate(rec.members) if m['arch'] == arch]
    ref = np.zeros(rec.correct.shape[2])
    for n in range(ref.size):
      hits = [rec.correct[i, p, n] for i in members for p in range(6)
              if window[p]]
      ref[n] = sum(hits) / len(hits)
    np.testing.assert_allclose(out['example'][f'easiness/{arch}'], ref,
                               rtol=1e-6)
    np.testing.assert_allclose(out['arch']['easiness'][gi], ref, rtol=1e-6)
  mean, _ = ref_window_stats(rec.margin, window)
  np.testing.assert_allclose(out['example']['early_margin'], mean.mean(0),
                             rtol=1e-5)
  np.testing.assert_array_equal(
      out['member']['first_learned'],
      ref_first_learned_epoch(rec.correct, np.ones(6, bool),
                              rec.probe_epochs))
  with pytest.raises(ValueError, match='selects none'):
    scores.compute_scores(rec, (5.0, 9.0))


def test_kernels_compile_once_across_windows():
  rng = np.random.default_rng(5)
  c = jnp.asarray(_correct(rng, (4, 6, 60)))
  v = jnp.asarray(rng.random((4, 6, 60)), jnp.float32)
  traced = jax.jit(chex.assert_max_traces(scores.first_learned.__wrapped__,
                                          n=1))
  scores.member_scores(c, v, v, jnp.ones(6, bool), jnp.ones(6, bool))
  before = scores.member_scores._cache_size()
  for lo, hi in [(0, 1), (0, 2), (0.5, 3), (-1, 9)]:
    w = jnp.asarray(scores.window_mask(np.arange(1, 7) / 2, (lo, hi)))
    traced(c, w)  # Raises on a second trace.
    scores.member_scores(c, v, v, w, jnp.ones(6, bool))
  assert scores.member_scores._cache_size() == before


def test_group_mean_ignores_only_its_own_missing_values():
  # The counter-example: a NaN in group 0 must not reach group 1.
  values = jnp.asarray([[1.0, 2.0], [np.nan, 4.0], [5.0, 6.0], [7.0, 8.0]])
  got = np.asarray(scores.group_mean(values, jnp.asarray([0, 0, 1, 1]),
                                     num_groups=2))
  np.testing.assert_array_equal(got, [[1.0, 3.0], [6.0, 7.0]])
  # Against a per-group np.nanmean loop on random data with NaNs; a group
  # with every member NaN at an example, and an empty group, give NaN.
  rng = np.random.default_rng(0)
  v = rng.normal(size=(7, 50)).astype(np.float32)
  v[rng.random(v.shape) < 0.3] = np.nan
  gids = np.array([0, 2, 0, 2, 2, 0, 0], np.int32)
  v[[1, 3, 4], 7] = np.nan
  got = np.asarray(scores.group_mean(jnp.asarray(v), jnp.asarray(gids),
                                     num_groups=3))
  with np.errstate(all='ignore'), pytest.warns(RuntimeWarning):
    want = np.stack([np.nanmean(v[gids == g], axis=0) if (gids == g).any()
                     else np.full(50, np.nan) for g in range(3)])
  assert np.isnan(got[2, 7]) and np.isnan(got[1]).all()
  np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
