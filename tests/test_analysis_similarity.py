"""Similarity kernels against loop and numpy references."""

import numpy as np
import pytest

from easyhard_jax.analysis import similarity


def ref_mean_distance(x, idx, metric):
  rows = [np.asarray(x[i], np.float64).ravel() for i in idx]
  if x.dtype == np.uint8:
    rows = [r / 255.0 for r in rows]
  total, count = 0.0, 0
  for i in range(len(rows)):
    for j in range(len(rows)):
      if i == j:
        continue
      a, b = rows[i], rows[j]
      if metric == 'l2':
        d = float(np.sqrt(np.sum((a - b) ** 2)))
      else:
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        d = 1.0 - (float(a @ b) / (na * nb) if na and nb else 0.0)
      total += d
      count += 1
  return total / count


@pytest.mark.parametrize('metric', ['l2', 'cosine'])
@pytest.mark.parametrize('k,block', [(2, 4), (7, 4), (33, 8)])
def test_mean_pairwise_distance_matches_loops(metric, k, block):
  rng = np.random.default_rng(k)
  x = (rng.random((50, 3, 2, 2)) + 3.0).astype(np.float32)  # Far from 0.
  x[1] = x[0]  # A duplicate pair (distance 0).
  idx = np.sort(rng.choice(50, k, replace=False))
  idx[:2] = [0, 1]
  # Padding rows (any index, valid=False) must not count.
  pad = np.concatenate([idx, [5, 5, 5]]).astype(np.int32)
  valid = np.arange(k + 3) < k
  got = float(similarity.mean_pairwise_distance(
      x, pad, valid, metric=metric, block_size=block))
  np.testing.assert_allclose(got, ref_mean_distance(x, idx, metric),
                             rtol=2e-4, atol=1e-6)


def test_mean_pairwise_distance_uint8_and_too_small():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (20, 12), dtype=np.uint8)
  idx = np.arange(0, 20, 2, dtype=np.int32)
  got = float(similarity.mean_pairwise_distance(x, idx, np.ones(10, bool)))
  np.testing.assert_allclose(got, ref_mean_distance(x, idx, 'l2'), rtol=1e-4)
  one = similarity.mean_pairwise_distance(x, idx[:1], np.ones(1, bool))
  assert np.isnan(float(one))


def test_pairwise_distance_compiles_once_per_padded_shape():
  x = np.random.default_rng(1).random((40, 6)).astype(np.float32)
  idx = np.arange(16, dtype=np.int32)
  similarity.mean_pairwise_distance(x, idx, np.ones(16, bool), block_size=8)
  before = similarity.mean_pairwise_distance._cache_size()
  for s in range(1, 6):
    similarity.mean_pairwise_distance(x, idx + s, np.arange(16) < 10 + s,
                                      block_size=8)
  assert similarity.mean_pairwise_distance._cache_size() == before


def test_colour_stats_match_numpy():
  rng = np.random.default_rng(2)
  im = rng.integers(0, 256, (30, 4, 5, 3), dtype=np.uint8)
  mask = rng.random(30) < 0.4
  sel = im[mask].astype(np.float64) / 255.0
  for chunk in (7, 1024):  # A remainder chunk, and one chunk of all rows.
    mean, std = similarity.colour_stats(im, mask, chunk=chunk)
    np.testing.assert_allclose(np.asarray(mean), sel.mean(axis=(0, 1, 2)),
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(std), sel.std(axis=(0, 1, 2)),
                               rtol=1e-4)
  gray_mean, _ = similarity.colour_stats(im[..., 0], mask)
  assert gray_mean.shape == (1,)


def ref_high_frequency(img, cutoff, remove_mean):
  img = np.asarray(img, np.float64)
  h, w, c = img.shape
  total = high = 0.0
  for ch in range(c):
    x = img[:, :, ch]
    if remove_mean:
      x = x - x.mean()
    f = np.fft.fft2(x)
    for u in range(h):
      for v in range(w):
        p = abs(f[u, v]) ** 2
        total += p
        fu, fv = np.fft.fftfreq(h)[u], np.fft.fftfreq(w)[v]
        if (fu ** 2 + fv ** 2) ** 0.5 > cutoff:
          high += p
  return high / total if total > 0 else 0.0


@pytest.mark.parametrize('remove_mean', [True, False])
def test_high_frequency_fraction_matches_loops(remove_mean):
  rng = np.random.default_rng(3)
  im = rng.random((5, 8, 6, 2)).astype(np.float32)
  im[1] = np.linspace(0, 1, 8)[:, None, None]  # Smooth: little high freq.
  im[2] = 0.5  # Constant: no power once the mean is removed.
  for cutoff in (0.1, 0.3):
    got = similarity.per_image_high_frequency(im, cutoff, remove_mean,
                                              chunk=2)
    ref = [ref_high_frequency(i, cutoff, remove_mean) for i in im]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
  noise = similarity.per_image_high_frequency(im, 0.25, True)
  assert noise[0] > noise[1]


def test_class_mean_images_match_loops():
  rng = np.random.default_rng(4)
  im = rng.integers(0, 256, (23, 3, 3, 2), dtype=np.uint8)
  labels = rng.integers(0, 3, 23).astype(np.int32)
  labels[labels == 2] = 1  # Classes 2 and 3 absent.
  mask = rng.random(23) < 0.7
  means, counts = similarity.class_mean_images(im, labels, mask, 4, chunk=5)
  for c in range(4):
    sel = [i for i in range(23) if mask[i] and labels[i] == c]
    assert counts[c] == len(sel)
    if sel:
      np.testing.assert_allclose(
          means[c], np.mean([im[i] / 255.0 for i in sel], axis=0), rtol=1e-5)
    else:
      assert np.all(np.isnan(means[c]))


def test_set_distances_compares_equal_sizes():
  rng = np.random.default_rng(5)
  n = 120
  labels = np.repeat(np.arange(3), 40).astype(np.int32)
  x = rng.normal(size=(n, 16)).astype(np.float32)
  easy = np.zeros(n, bool)
  hard = np.zeros(n, bool)
  easy[labels == 0] = True
  easy[40:45] = True
  hard[100:] = True
  hard[60:65] = True
  x[easy] *= 0.1  # Easy examples alike, hard ones spread.
  out = similarity.set_distances(x, easy, hard, labels, max_set_size=15,
                                 block_size=8)
  g = out['global']
  assert g['size'] == 15
  assert g['l2']['easy'] < g['l2']['random'] and g['l2']['hard_over_easy'] > 1
  assert out['per_class'][0] is None  # No hard example in class 0.
  assert out['per_class'][1]['size'] == 5  # min(|easy|, |hard|) there.
  assert out['per_class'][2] is None  # No easy example in class 2.
  res = similarity.colour_and_frequency(
      rng.random((n, 4, 4, 3)).astype(np.float32),
      {'easy': easy, 'hard': hard, 'none': np.zeros(n, bool)})
  assert res['colour']['none'] is None
  assert res['high_frequency']['easy']['size'] == int(easy.sum())


def test_class_balanced_distances_match_class_composition():
  # Classes far apart, examples inside a class alike: an easy set of one
  # class looks "alike" against a global random set by class alone. With
  # class_balanced=True the random (and hard) sets take the same classes.
  rng = np.random.default_rng(6)
  labels = np.repeat(np.arange(4), 30).astype(np.int32)
  x = (10.0 * np.eye(4)[labels] + rng.normal(size=(120, 4))).astype(
      np.float32)
  easy = labels == 0
  hard = np.zeros(120, bool)
  hard[::3] = True  # Every class.
  glob = similarity.set_distances(x, easy, hard, labels, per_class=False,
                                  block_size=8)['global']
  bal = similarity.set_distances(x, easy, hard, labels, per_class=False,
                                 block_size=8, class_balanced=True)['global']
  assert glob['l2']['easy'] < 0.3 * glob['l2']['random']
  assert bal['class_balanced'] and not glob['class_balanced']
  assert bal['size'] == 10  # min(|easy_0|, |hard_0|) = 10 of class 0 only.
  assert 0.7 < bal['l2']['easy'] / bal['l2']['random'] < 1.3
  np.testing.assert_array_equal(
      similarity.stratified_counts(labels < 2, hard, labels, 1000),
      [10, 10, 0, 0])
  np.testing.assert_array_equal(
      similarity.stratified_counts(labels < 2, hard, labels, 10), [5, 5, 0, 0])
