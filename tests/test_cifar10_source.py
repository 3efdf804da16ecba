"""CIFAR-10 from binary batch files, and given train labels from files.

Every file here is small and written by the test: synthetic batches in the
canonical record layout (1 label byte, then R, G, B planes of 32x32) and a
synthetic CIFAR-N-format torch file (a zip holding a protocol-2 pickle of a
dict of numpy arrays, as torch.save writes it).
"""

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from conftest import quick_config
from easyhard_jax.data import cifar_binary
from easyhard_jax.data import label_files
from easyhard_jax.data import sources

PER_BATCH = 12
TEST_RECORDS = 10


def _write_batches(directory, seed=0):
  """Six batch files; returns (train images, labels), (test ...) in file order."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  out = {}
  for name, n in [(f, PER_BATCH) for f in cifar_binary.TRAIN_FILES] + [
      (cifar_binary.TEST_FILE, TEST_RECORDS)]:
    labels = rng.integers(0, 10, n).astype(np.uint8)
    planes = rng.integers(0, 256, (n, 3, 32, 32), np.uint8)
    records = np.concatenate([labels[:, None], planes.reshape(n, -1)], axis=1)
    records.tofile(os.path.join(directory, name))
    out[name] = (planes, labels)
  train = [out[f] for f in cifar_binary.TRAIN_FILES]
  return ((np.concatenate([p for p, _ in train]),
           np.concatenate([l for _, l in train])), out[cifar_binary.TEST_FILE])


def _hash_order(num_keys, split):
  """Slow reference: keys sorted by TFDS's salted hash, one at a time."""
  from tensorflow_datasets.core import hashing
  hasher = hashing.Hasher(split)
  return sorted(range(num_keys), key=hasher.hash_key)


def _config(directory, **overrides):
  c = quick_config(dataset='cifar10', cifar10_dir=str(directory),
                   cifar10_verify=False, max_train_examples=0)
  for k, v in overrides.items():
    c[k] = v
  return c


def test_batches_are_read_into_tfds_order_with_tfds_ids(tmp_path):
  (planes, labels), (test_planes, test_labels) = _write_batches(tmp_path)
  ds = sources.load_dataset(_config(tmp_path))
  order = _hash_order(5 * PER_BATCH, 'train')
  assert ds.train_images.shape == (5 * PER_BATCH, 32, 32, 3)
  assert ds.train_ids == [f'train_{k:05d}' for k in order]
  np.testing.assert_array_equal(ds.train_labels, labels[order])
  # Channel c of pixel (r, q) of stored example i is plane c of its record.
  for i, k in enumerate(order[:5]):
    for c in range(3):
      np.testing.assert_array_equal(ds.train_images[i, :, :, c], planes[k, c])
  test_order = _hash_order(TEST_RECORDS, 'test')
  np.testing.assert_array_equal(ds.test_labels, test_labels[test_order])
  assert ds.test_ids[0] == f'test_{test_order[0]:05d}'
  assert ds.num_classes == 10


def test_checksums_missing_and_truncated_files_are_named(tmp_path):
  _write_batches(tmp_path)
  with pytest.raises(ValueError, match=r'data_batch_1.bin is damaged: md5'):
    sources.load_dataset(_config(tmp_path, cifar10_verify=True))
  os.remove(tmp_path / 'data_batch_3.bin')
  with pytest.raises(FileNotFoundError, match=r'data_batch_3.bin is missing.*'
                     r'fetch_cifar10.sh'):
    sources.load_dataset(_config(tmp_path))
  _write_batches(tmp_path)
  with open(tmp_path / 'test_batch.bin', 'ab') as f:
    f.write(b'\x00' * 17)
  with pytest.raises(ValueError, match='not whole 3073-byte records'):
    sources.load_dataset(_config(tmp_path))
  with pytest.raises(FileNotFoundError, match='is not a directory'):
    sources.load_dataset(_config(tmp_path / 'nowhere'))


def test_data_files_lists_batches_and_label_file(tmp_path):
  c = _config(tmp_path, train_labels=str(tmp_path / 'l.pt') + ':aggre_label')
  paths = sources.data_files(c)
  assert [os.path.basename(p) for p in paths] == [
      'data_batch_1.bin', 'data_batch_2.bin', 'data_batch_3.bin',
      'data_batch_4.bin', 'data_batch_5.bin', 'test_batch.bin', 'l.pt']


# ------------------------------------------------------------ label files


def _torch_style_pt(path, arrays, protocol=2):
  """What torch.save writes for a dict of numpy arrays (zip + data.pkl)."""
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', pickle.dumps(arrays, protocol=protocol))
    z.writestr('archive/version', '3\n')


def test_cifar_n_style_pt_in_original_order(tmp_path):
  (_, labels), _ = _write_batches(tmp_path)
  n = labels.size
  rng = np.random.default_rng(3)
  noisy = labels.astype(np.int64).copy()
  flip = np.sort(rng.choice(n, 9, replace=False))
  noisy[flip] = (noisy[flip] + 1 + rng.integers(0, 9, 9)) % 10
  pt = tmp_path / 'CIFAR-10_human.pt'
  _torch_style_pt(pt, {'clean_label': labels.astype(np.int64),
                       'aggre_label': noisy})
  c = _config(tmp_path, train_labels=f'{pt}:aggre_label',
              train_labels_order='original')
  ds = sources.load_dataset(c)
  order = np.asarray(_hash_order(n, 'train'))
  np.testing.assert_array_equal(ds.train_labels, noisy[order])
  # Known errors, in index order: where the stored example's key was flipped.
  expected = np.sort(np.flatnonzero(np.isin(order, flip)))
  np.testing.assert_array_equal(sources.train_label_errors(c, n), expected)
  np.testing.assert_array_equal(sources.train_label_errors(c, 10),
                                expected[expected < 10])
  # The wrong order: CIFAR-N's clean labels no longer match the dataset's.
  with pytest.raises(ValueError, match='another order'):
    sources.load_dataset(_config(tmp_path, train_labels=f'{pt}:aggre_label'))
  with pytest.raises(KeyError, match=r"keys are \['aggre_label', 'clean"):
    sources.load_dataset(_config(tmp_path, train_labels=f'{pt}:worse'))
  with pytest.raises(ValueError, match='both change'):
    c = _config(tmp_path, train_labels=f'{pt}:aggre_label')
    c.label_noise.fraction = 0.1
    sources.load_dataset(c)


class _Evil:

  def __reduce__(self):
    return (os.getcwd, ())


def test_pt_naming_any_other_class_is_refused(tmp_path):
  bad = tmp_path / 'bad.pt'
  _torch_style_pt(bad, {'aggre_label': np.zeros(3, np.int64),
                        'payload': _Evil()})
  with pytest.raises(ValueError, match=r'refusing to unpickle posix.getcwd'):
    label_files.read_label_file(f'{bad}:aggre_label')

  class _TensorPickler(pickle.Pickler):
    def persistent_id(self, obj):
      return ('storage', 'x') if isinstance(obj, bytes) else None

  buf = io.BytesIO()
  _TensorPickler(buf, protocol=2).dump({'aggre_label': b'tensor'})
  tensors = tmp_path / 'tensors.pt'
  with zipfile.ZipFile(tensors, 'w') as z:
    z.writestr('archive/data.pkl', buf.getvalue())
  with pytest.raises(ValueError, match='torch tensors'):
    label_files.read_label_file(f'{tensors}:aggre_label')
  not_zip = tmp_path / 'legacy.pt'
  not_zip.write_bytes(pickle.dumps({'a': 1}))
  with pytest.raises(ValueError, match='not a torch zip-format'):
    label_files.read_label_file(f'{not_zip}:a')


@pytest.mark.parametrize('protocol', [2, 5])
def test_numpy_pickles_of_any_protocol_load(tmp_path, protocol):
  values = np.arange(7, dtype=np.int64) % 10
  pt = tmp_path / 'p.pt'
  _torch_style_pt(pt, {'x': values}, protocol=protocol)
  got, clean = label_files.read_label_file(f'{pt}:x')
  np.testing.assert_array_equal(got, values)
  assert clean is None


def test_npy_csv_npz_label_files(tmp_path):
  values = np.array([3, 1, 4, 1, 5, 9, 2, 6])
  np.save(tmp_path / 'l.npy', values)
  np.testing.assert_array_equal(
      label_files.read_label_file(str(tmp_path / 'l.npy'))[0], values)
  np.savez(tmp_path / 'l.npz', given=values)
  np.testing.assert_array_equal(
      label_files.read_label_file(f"{tmp_path / 'l.npz'}:given")[0], values)
  with pytest.raises(KeyError, match='PATH:KEY'):
    label_files.read_label_file(str(tmp_path / 'l.npz'))
  (tmp_path / 'l.csv').write_text(
      'index,label\n' + ''.join(f'{i},{v}\n' for i, v in enumerate(values)))
  np.testing.assert_array_equal(
      label_files.read_label_file(str(tmp_path / 'l.csv'))[0], values)
  np.save(tmp_path / 'f.npy', values.astype(np.float32))
  with pytest.raises(ValueError, match='1-D integer array'):
    label_files.read_label_file(str(tmp_path / 'f.npy'))
  with pytest.raises(FileNotFoundError, match='does not exist'):
    label_files.read_label_file(str(tmp_path / 'nope.npy'))


def test_index_order_labels_replace_digits_labels(tmp_path):
  base = sources.load_dataset(quick_config(max_train_examples=0))
  given = base.train_labels.copy()
  given[[0, 5, 7]] = (given[[0, 5, 7]] + 1) % 10
  np.save(tmp_path / 'given.npy', given)
  c = quick_config(train_labels=str(tmp_path / 'given.npy'))
  ds = sources.load_dataset(c)
  np.testing.assert_array_equal(ds.train_labels[:c.max_train_examples],
                                given[:c.max_train_examples])
  np.testing.assert_array_equal(
      sources.train_label_errors(c, c.max_train_examples), [0, 5, 7])
  np.save(tmp_path / 'short.npy', given[:100])
  with pytest.raises(ValueError, match='has 100 labels'):
    sources.load_dataset(quick_config(train_labels=str(tmp_path /
                                                       'short.npy')))
