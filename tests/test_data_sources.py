"""Data sources: digits, TFDS (mock cifar10 / caltech101), Debian Fashion-MNIST, npz."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import quick_config
from easyhard_jax.storage import records
from easyhard_jax import runner
from easyhard_jax.data import sources


def test_digits_split_is_stable_and_complete():
  a = sources.load_dataset(quick_config(max_train_examples=0))
  b = sources.load_dataset(quick_config(max_train_examples=0))
  assert a.train_images.shape == (1438, 8, 8, 1)
  assert a.test_images.shape == (359, 8, 8, 1)
  assert a.train_images.dtype == np.uint8 and a.train_images.max() == 255
  np.testing.assert_array_equal(a.train_images, b.train_images)
  assert set(np.unique(a.train_labels)) == set(range(10))


def test_max_train_examples_keeps_the_stable_prefix():
  full = sources.load_dataset(quick_config(max_train_examples=0))
  cut = sources.load_dataset(quick_config(max_train_examples=100))
  np.testing.assert_array_equal(cut.train_images, full.train_images[:100])


@pytest.mark.slow
def test_tfds_cifar10_study_on_mock_data(tmp_path):
  config = quick_config(dataset='cifar10', max_train_examples=0,
                        batch_size=16, epochs=1)
  config.augment.horizontal_flip = True
  config.augment.crop_padding = 4
  with tfds.testing.mock_data(num_examples=40):
    data = sources.load_dataset(config)
    assert data.train_images.shape == (40, 32, 32, 3)
    assert data.num_classes == 10 and len(data.train_ids) == 40
    runner.run(config, str(tmp_path), 'records')
  r = records.load(str(tmp_path), 'train')
  assert r.correct.shape[0] == 2 and r.correct.shape[2] == 40
  assert r.tfds_ids == data.train_ids
  np.testing.assert_array_equal(r.labels, data.train_labels)


def test_tfds_variable_size_images_need_and_get_resizing():
  with tfds.testing.mock_data(num_examples=6):
    with pytest.raises(ValueError, match='image_size'):
      sources.load_dataset(quick_config(dataset='caltech101',
                                        max_train_examples=0))
    data = sources.load_dataset(quick_config(
        dataset='caltech101', image_size=24, max_train_examples=0))
  assert data.train_images.shape == (6, 24, 24, 3)
  assert data.num_classes == 102


def test_unknown_dataset_is_a_clear_error():
  with pytest.raises(ValueError, match='Unknown dataset .*no_such_set'):
    sources.load_dataset(quick_config(dataset='no_such_set'))


@pytest.mark.skipif(not os.path.isdir(sources.DEBIAN_FASHION_MNIST_DIR),
                    reason='apt-get install dataset-fashion-mnist')
def test_fashion_mnist_from_debian_files():
  data = sources.load_dataset(quick_config(dataset='fashion_mnist_debian',
                                           max_train_examples=0))
  assert data.train_images.shape == (60000, 28, 28, 1)
  assert data.test_images.shape == (10000, 28, 28, 1)
  assert np.bincount(data.train_labels).tolist() == [6000] * 10
  assert np.bincount(data.test_labels).tolist() == [1000] * 10
  assert 60 < data.train_images.mean() < 90  # Real images, not zeros.


def test_fashion_mnist_missing_files_name_the_fix(tmp_path):
  config = quick_config(dataset='fashion_mnist_debian')
  config.fashion_mnist_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError, match='apt-get install'):
    sources.load_dataset(config)


def _write_npz(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def test_npz_source_roundtrip_and_errors(tmp_path):
  rng = np.random.default_rng(0)
  good = dict(x_train=rng.integers(0, 255, (30, 12, 12), np.uint8),
              y_train=rng.integers(0, 3, 30),
              x_test=rng.integers(0, 255, (10, 12, 12), np.uint8),
              y_test=rng.integers(0, 3, 10))
  config = quick_config(dataset='npz', max_train_examples=0)
  config.npz_path = _write_npz(tmp_path / 'good.npz', **good)
  data = sources.load_dataset(config)
  assert data.train_images.shape == (30, 12, 12, 1)
  np.testing.assert_array_equal(data.test_labels, good['y_test'])

  config.npz_path = _write_npz(tmp_path / 'missing.npz',
                               **{k: v for k, v in good.items()
                                  if k != 'y_test'})
  with pytest.raises(KeyError, match="lacks arrays \\['y_test'\\]"):
    sources.load_dataset(config)

  config.npz_path = _write_npz(tmp_path / 'mismatch.npz',
                               **dict(good, y_train=good['y_train'][:5]))
  with pytest.raises(ValueError, match='train labels must be \\[N\\]'):
    sources.load_dataset(config)

  config.npz_path = _write_npz(tmp_path / 'float.npz',
                               **dict(good, x_test=good['x_test'] / 255.0))
  with pytest.raises(ValueError, match='must be uint8'):
    sources.load_dataset(config)

  config.npz_path = str(tmp_path / 'nope.npz')
  with pytest.raises(FileNotFoundError, match='nope.npz'):
    sources.load_dataset(config)
