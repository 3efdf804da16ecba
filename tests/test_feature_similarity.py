"""Feature-space set distances against a slow numpy reference."""

import json
import os

import numpy as np

from test_analysis_similarity import ref_mean_distance

from easyhard_jax.analysis import feature_similarity as fs
from easyhard_jax.analysis import similarity

N, D, M = 60, 16, 2
# float32 unit roundoff. The kernel forms |a|^2 + |b|^2 - 2 a.b (D-term dot
# products, relative error ~ D * U of the norms, which are of the size of
# the squared distances for centred random rows) and sums K^2 pair
# distances (relative error ~ K^2 * U); K <= 30 here, so (K^2 + 4 D) * U.
U = 2.0 ** -24
RTOL = (30 ** 2 + 4 * D) * U


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  feats = rng.normal(size=(M, N, D)).astype(np.float16)
  feats[1] += np.float16(0.5)  # Members differ; cosine sees an offset.
  labels = rng.integers(0, 3, N)
  order = rng.permutation(N)
  easy = np.zeros(N, bool)
  hard = np.zeros(N, bool)
  easy[order[:25]] = True
  hard[order[25:45]] = True
  return feats, easy, hard, labels


def _check_section(section, chosen, feats):
  assert section['size'] == chosen['easy'].size
  assert section['members'] == M
  for metric in fs.METRICS:
    for name in fs.SET_NAMES:
      ref = [ref_mean_distance(np.asarray(feats[m]), chosen[name], metric) for m in range(M)]
      np.testing.assert_allclose(section['per_member'][metric][name], ref,
                                 rtol=RTOL)
      np.testing.assert_allclose(section[metric][name], np.mean(ref),
                                 rtol=RTOL)
    np.testing.assert_allclose(
        section[metric]['hard_over_easy'],
        section[metric]['hard'] / section[metric]['easy'], rtol=1e-12)


def test_feature_distances_match_numpy_reference():
  feats, easy, hard, labels = _inputs()
  for balanced in (False, True):
    kw = dict(seed=3, max_set_size=18, class_balanced=balanced)
    out = fs.feature_set_distances(feats, easy, hard, labels, **kw)
    sets = fs.choose_sets(easy, hard, labels, **kw)
    assert out['global']['class_balanced'] == balanced
    _check_section(out['global'], sets['global'], feats)
    for c in range(3):
      if sets['per_class'][c] is None:
        assert out['per_class'][c] is None
      else:
        _check_section(out['per_class'][c], sets['per_class'][c], feats)


def test_sets_are_the_pixel_views_sets():
  # One "member" of flattened pixels: the same sets and values as
  # similarity.set_distances draws and computes.
  feats, easy, hard, labels = _inputs(seed=1)
  pixels = feats[0].astype(np.float32)
  for balanced in (False, True):
    kw = dict(seed=5, max_set_size=15, class_balanced=balanced)
    ours = fs.feature_set_distances(pixels[None], easy, hard, labels, **kw)
    theirs = similarity.set_distances(pixels, easy, hard, labels, **kw)
    for metric in fs.METRICS:
      for name in fs.SET_NAMES + ('hard_over_easy',):
        np.testing.assert_allclose(ours['global'][metric][name],
                                   theirs['global'][metric][name], rtol=RTOL)
        for c, sec in theirs['per_class'].items():
          if sec is not None:
            np.testing.assert_allclose(ours['per_class'][c][metric][name],
                                       sec[metric][name], rtol=RTOL)


def test_several_architectures_average_every_member():
  feats, easy, hard, labels = _inputs(seed=2)
  wide = np.concatenate([feats, feats], axis=2)[:1]  # Another width, 1 member.
  out = fs.feature_set_distances({'a': feats, 'b': wide}, easy, hard, labels,
                                 per_class=False)
  assert set(out['by_arch']) == {'a', 'b'}
  g = out['global']
  assert g['members'] == M + 1
  for metric in fs.METRICS:
    per = (out['by_arch']['a']['global']['per_member'][metric]['hard'] +
           out['by_arch']['b']['global']['per_member'][metric]['hard'])
    np.testing.assert_allclose(g['per_member'][metric]['hard'], per,
                               rtol=1e-12)
    np.testing.assert_allclose(g[metric]['hard'], np.mean(per), rtol=1e-12)


def test_window_features_pick_the_last_kept_step(tmp_path):
  root = tmp_path / 'checkpoint_probes'
  (root / 'features').mkdir(parents=True)
  (root / 'records').mkdir()
  manifest = {'arch_order': ['cnn', 'vgg11'],
              'archs': {a: {'steps_per_epoch': 10} for a in ('cnn', 'vgg11')}}
  (root / 'records' / 'manifest.json').write_text(json.dumps(manifest))
  assert fs.load_window_features(str(tmp_path), (0.0, 3.0)) is None
  for arch, steps in (('cnn', (5, 10, 30, 40)), ('vgg11', (5, 10, 20))):
    for step in steps:
      np.savez(os.path.join(root, 'features', f'{arch}_step{step}_train.npz'),
               features=np.full((2, 4, 3), step, np.float16))
  got = fs.load_window_features(str(tmp_path), (0.0, 3.0))
  assert got.step == 10 and got.epoch == 1.0  # 30 lacks vgg11; 20 lacks cnn.
  assert got.features['cnn'].shape == (2, 4, 3)
  assert (got.features['vgg11'] == 10).all()
  assert fs.load_window_features(str(tmp_path), (0.0, 3.0), 'test') is None
  assert fs.load_window_features(str(tmp_path), (1.0, 3.0)) is None
  assert fs.load_window_features(str(tmp_path), (0.0, 4.0),
                                 archs=['cnn']).step == 40
