"""Dataset sources with a stable example index.

Every source returns a :class:`Dataset` whose train and test arrays are in the
source's canonical order; position ``i`` of a split is its stable example index
and all records, scores and exports use it. Sources are looked up by name:

- ``digits``: scikit-learn's 8x8 digits (embedded, offline). Example ``j`` of
  sklearn's order goes to test when ``j % 5 == 4``, else to train.
- ``fashion_mnist``: TFDS when prepared in ``data_dir``; otherwise the Debian
  ``dataset-fashion-mnist`` IDX files (``apt-get install dataset-fashion-mnist``).
- ``fashion_mnist_debian``: the Debian files only (IDX order).
- ``cifar10``: the canonical binary batches in ``config.cifar10_dir``
  (offline; :mod:`easyhard_jax.data.cifar_binary`), else TFDS; either way in
  TFDS's order with TFDS ids.
- ``npz``: a user's file with ``x_train``, ``y_train``, ``x_test``, ``y_test``
  (uint8 images [N,H,W(,C)], integer labels).
- anything else: a TFDS image-classification dataset by name through
  ``tfds.data_source`` (array_record; downloads and prepares on first use).

``config.train_labels`` replaces the train labels by a file's (e.g. CIFAR-10N
human labels; :mod:`easyhard_jax.data.label_files`).
``config.label_noise`` (fraction, seed) flips that fraction of the train
labels to a uniformly random other class, deterministically by seed (see
:func:`flip_labels`): a known set of label errors for the label-issue score.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from typing import Callable

import numpy as np
from absl import logging

DEBIAN_FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'


@dataclasses.dataclass(frozen=True)
class Dataset:
  """An in-memory image classification dataset (uint8 NHWC, int32 labels)."""
  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  train_ids: list[str] | None = None
  test_ids: list[str] | None = None

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])

  def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == 'train':
      return self.train_images, self.train_labels
    if name == 'test':
      return self.test_images, self.test_labels
    raise ValueError(f"split must be 'train' or 'test', got {name!r}")


def _checked(name: str, x_train, y_train, x_test, y_test, num_classes=None,
             train_ids=None, test_ids=None) -> Dataset:
  """Validates shapes, dtypes and labels; adds a channel axis when missing."""
  arrays = []
  for split, x, y in (('train', x_train, y_train), ('test', x_test, y_test)):
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
      x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
      raise ValueError(
          f'{name}: {split} images must be [N,H,W] or [N,H,W,C] with C in '
          f'(1, 3); got shape {x.shape}.')
    if x.dtype != np.uint8:
      raise ValueError(f'{name}: {split} images must be uint8 (0..255), got '
                       f'{x.dtype}; convert with (x * 255).astype(np.uint8).')
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
      raise ValueError(
          f'{name}: {split} labels must be [N] with N = {x.shape[0]} images; '
          f'got shape {y.shape}.')
    if not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
      raise ValueError(f'{name}: {split} labels must be integers >= 0.')
    if y.size and int(y.max()) > np.iinfo(np.int32).max:  # Before the cast.
      raise ValueError(f'{name}: {split} labels must be below 2**31 (class '
                       f'indices); got {int(y.max())}.')
    if x.shape[0] == 0:
      raise ValueError(f'{name}: the {split} split is empty.')
    arrays.append((np.ascontiguousarray(x), y.astype(np.int32)))
  (xtr, ytr), (xte, yte) = arrays
  if xtr.shape[1:] != xte.shape[1:]:
    raise ValueError(f'{name}: train images {xtr.shape[1:]} and test images '
                     f'{xte.shape[1:]} differ in shape; set config.image_size '
                     'to resize both.')
  inferred = int(max(ytr.max(), yte.max())) + 1
  if not num_classes:
    # Classes are 0..C-1 and every one has training examples; a stray label
    # (say 1000 among 0..9) would otherwise make 1001 classes silently.
    absent = np.setdiff1d(np.arange(inferred), ytr)
    if absent.size:
      raise ValueError(
          f'{name}: labels must be 0..C-1 with every class in the train '
          f'split; classes {absent[:10].tolist()}'
          f'{"..." if absent.size > 10 else ""} of 0..{inferred - 1} have no '
          'training example. Relabel, or set config.num_classes if some '
          'classes are truly absent.')
  num_classes = int(num_classes or inferred)
  if inferred > num_classes:
    raise ValueError(f'{name}: label {inferred - 1} >= num_classes '
                     f'{num_classes}.')
  return Dataset(name, xtr, ytr, xte, yte, num_classes, train_ids, test_ids)


def load_digits(config) -> Dataset:
  """scikit-learn's digits, 8x8x1, values rescaled from 0..16 to 0..255."""
  del config
  from sklearn import datasets as skdata
  bunch = skdata.load_digits()
  images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
  labels = bunch.target.astype(np.int32)
  test = np.arange(len(labels)) % 5 == 4
  return _checked('digits', images[~test], labels[~test], images[test],
                  labels[test], 10)


def _read_idx(path: str) -> np.ndarray:
  """Reads a (gzipped) IDX file as written by LeCun / Zalando."""
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rb') as f:
    data = f.read()
  magic = int.from_bytes(data[:4], 'big')
  if magic >> 8 != 0x08:  # 0x08 = unsigned byte payload
    raise ValueError(f'{path} is not an unsigned-byte IDX file.')
  ndim = magic & 0xFF
  shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
  payload = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if payload.size != int(np.prod(shape)):
    raise ValueError(f'{path} is truncated: header says {shape}.')
  return payload.reshape(shape)


def _fashion_mnist_files(config) -> dict[str, str]:
  """The four Debian IDX files, by kind, in config.fashion_mnist_dir."""
  root = config.get('fashion_mnist_dir') or DEBIAN_FASHION_MNIST_DIR
  return {k: os.path.join(root, f'{k}-idx{3 if "images" in k else 1}-ubyte.gz')
          for k in ('train-images', 'train-labels', 't10k-images',
                    't10k-labels')}


def load_fashion_mnist_debian(config) -> Dataset:
  """Fashion-MNIST from Debian's dataset-fashion-mnist IDX files."""
  files = _fashion_mnist_files(config)
  missing = [p for p in files.values() if not os.path.exists(p)]
  if missing:
    raise FileNotFoundError(
        f'Fashion-MNIST files not found: {missing}. Install them with '
        '`apt-get install dataset-fashion-mnist` or set '
        'config.fashion_mnist_dir to a folder holding the gzip IDX files.')
  a = {k: _read_idx(p) for k, p in files.items()}
  return _checked('fashion_mnist', a['train-images'], a['train-labels'],
                  a['t10k-images'], a['t10k-labels'], 10)


def load_fashion_mnist(config) -> Dataset:
  """TFDS's fashion_mnist when prepared locally, else Debian's files."""
  import tensorflow_datasets as tfds
  try:
    builder = tfds.builder('fashion_mnist', data_dir=config.get('data_dir'))
    prepared = builder.is_prepared()
  except Exception:  # pylint: disable=broad-except
    prepared = False
  if prepared or not os.path.isdir(
      config.get('fashion_mnist_dir') or DEBIAN_FASHION_MNIST_DIR):
    return load_tfds(config, 'fashion_mnist')
  logging.info('fashion_mnist is not prepared for TFDS; using Debian files.')
  return load_fashion_mnist_debian(config)


def load_npz(config) -> Dataset:
  """A user's .npz file with x_train, y_train, x_test, y_test."""
  path = config.get('npz_path')
  if not path:
    raise ValueError("dataset 'npz' needs config.npz_path=/path/to/file.npz")
  if not os.path.exists(path):
    raise FileNotFoundError(f'npz dataset {path} does not exist.')
  with np.load(path, allow_pickle=False) as z:
    need = ('x_train', 'y_train', 'x_test', 'y_test')
    missing = [k for k in need if k not in z.files]
    if missing:
      raise KeyError(f'{path} lacks arrays {missing}; it must hold {need} '
                     f'(found {sorted(z.files)}).')
    arrays = [z[k] for k in need]
  name = os.path.splitext(os.path.basename(path))[0]
  arrays = [_resize_all(x, config.get('image_size')) if i % 2 == 0 else x
            for i, x in enumerate(arrays)]
  return _checked(name, *arrays, num_classes=config.get('num_classes'))


def _resize_all(images, size):
  """Resizes a list/array of HWC uint8 images to size x size (bilinear)."""
  if not size:
    return np.asarray(images)
  from PIL import Image
  out = []
  for im in images:
    im = np.asarray(im)
    squeeze = im.ndim == 3 and im.shape[-1] == 1
    pil = Image.fromarray(im[..., 0] if squeeze else im)
    arr = np.asarray(pil.resize((size, size), Image.BILINEAR))
    out.append(arr[..., None] if arr.ndim == 2 else arr)
  return np.stack(out)


def _tfds_split(name: str, split: str, data_dir, image_size):
  import tensorflow_datasets as tfds
  source = tfds.data_source(name, split=split, data_dir=data_dir)
  images, labels, ids = [], [], []
  for i in range(len(source)):
    ex = source[i]
    images.append(np.asarray(ex['image']))
    labels.append(int(ex['label']))
    key = ex.get('id', ex.get('image/file_name'))
    ids.append(key.decode() if isinstance(key, bytes) else
               (str(key) if key is not None else f'{name}-{split}-{i}'))
  shapes = {im.shape for im in images}
  if len(shapes) > 1 and not image_size:
    raise ValueError(f'{name} images vary in size ({len(shapes)} shapes); set '
                     'config.image_size (e.g. 64) to resize them.')
  return _resize_all(images, image_size), np.asarray(labels), ids


def load_tfds(config, name: str | None = None) -> Dataset:
  """Any TFDS image classification dataset, read through tfds.data_source."""
  import tensorflow_datasets as tfds
  name = name or config.dataset
  try:
    builder = tfds.builder(name, data_dir=config.get('data_dir'))
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(
        f'Unknown dataset {name!r}: not one of {sorted(SOURCES)} and not a '
        'TFDS dataset name (see `tfds.list_builders()`).') from e
  features = builder.info.features
  if 'image' not in features or 'label' not in features:
    raise ValueError(f'TFDS dataset {name!r} has no image/label features; '
                     'easyhard_jax needs image classification data.')
  splits = list(builder.info.splits.keys())
  test_split = config.get('test_split') or (
      'test' if 'test' in splits or not splits else splits[-1])
  size = config.get('image_size')
  xtr, ytr, idtr = _tfds_split(name, config.get('train_split') or 'train',
                               config.get('data_dir'), size)
  xte, yte, idte = _tfds_split(name, test_split, config.get('data_dir'), size)
  return _checked(name, xtr, ytr, xte, yte,
                  features['label'].num_classes, idtr, idte)


def _load_cifar10(config) -> Dataset:
  # pylint: disable-next=g-import-not-at-top
  from easyhard_jax.data import cifar_binary
  return cifar_binary.load(config)


SOURCES: dict[str, Callable[..., Dataset]] = {
    'cifar10': _load_cifar10,
    'digits': load_digits,
    'fashion_mnist': load_fashion_mnist,
    'fashion_mnist_debian': load_fashion_mnist_debian,
    'npz': load_npz,
}


def label_noise_indices(num_examples: int, fraction: float,
                        seed: int) -> np.ndarray:
  """The train examples that label noise flips: sorted int64 indices.

  Exactly ``round(fraction * num_examples)`` distinct indices, drawn without
  replacement by ``numpy.random.default_rng(seed)``; they depend only on
  (N, fraction, seed), so the analysis recomputes them from the config.
  """
  fraction = float(fraction)
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f'config.label_noise.fraction must lie in [0, 1), got '
                     f'{fraction}.')
  k = int(round(fraction * num_examples))
  rng = np.random.default_rng(int(seed))
  return np.sort(rng.choice(num_examples, size=k, replace=False)).astype(
      np.int64)


def flip_labels(labels: np.ndarray, num_classes: int, fraction: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Flips a fraction of labels to a uniformly random other class.

  Args:
    labels: int [N], the clean labels.
    num_classes: C >= 2.
    fraction: share of examples to flip, in [0, 1).
    seed: the flips' seed (indices and new classes).

  Returns:
    (noisy labels int32 [N], flipped indices int64 [k]); k =
    round(fraction * N), and every flipped label differs from the clean one.
  """
  labels = np.asarray(labels, np.int32)
  idx = label_noise_indices(labels.shape[0], fraction, seed)
  if idx.size and num_classes < 2:
    raise ValueError('label noise needs at least two classes.')
  # A second stream (seed, 1) for the new classes: the indices above stay a
  # function of (N, fraction, seed) alone.
  shift = np.random.default_rng([int(seed), 1]).integers(
      1, max(num_classes, 2), size=idx.size)
  noisy = labels.copy()
  noisy[idx] = (labels[idx] + shift) % num_classes
  return noisy, idx


def label_noise_fraction(config) -> float:
  """``config.label_noise.fraction`` (0.0 when the block is absent)."""
  block = config.get('label_noise')
  return float(block.get('fraction', 0.0)) if block is not None else 0.0


def check_label_noise(config, streamed: bool) -> None:
  """Refuses label noise on streamed data (the labels live in TFDS files)."""
  if streamed and label_noise_fraction(config) > 0:
    raise ValueError(
        'config.label_noise.fraction > 0 is applied to device-resident data '
        'only; streamed datasets (config.stream.enabled=True) read their '
        'labels from the TFDS files. Set config.stream.enabled=False (a '
        'dataset that fits in memory) or config.label_noise.fraction=0.')


def data_files(config) -> list[str]:
  """The local files a config's data is read from (for content hashes).

  The npz file, Debian's Fashion-MNIST IDX files when they are the source,
  the CIFAR-10 binary batches of ``config.cifar10_dir``, and the
  ``config.train_labels`` file; TFDS-prepared and embedded data have none.
  """
  paths = []
  name = config.dataset
  if name == 'npz' and config.get('npz_path'):
    paths.append(config.npz_path)
  elif name in ('fashion_mnist', 'fashion_mnist_debian'):
    root = config.get('fashion_mnist_dir') or DEBIAN_FASHION_MNIST_DIR
    if name == 'fashion_mnist_debian' or os.path.isdir(root):
      paths += list(_fashion_mnist_files(config).values())
  elif name == 'cifar10' and config.get('cifar10_dir'):
    # pylint: disable-next=g-import-not-at-top
    from easyhard_jax.data import cifar_binary
    paths += cifar_binary.batch_paths(config.cifar10_dir)
  if config.get('train_labels'):
    # pylint: disable-next=g-import-not-at-top
    from easyhard_jax.data import label_files
    paths.append(label_files.split_spec(config.train_labels)[0])
  return paths


def _load_source(config) -> Dataset:
  loader = SOURCES.get(config.dataset)
  return loader(config) if loader else load_tfds(config)


def _check_label_sources(config) -> None:
  if config.get('train_labels') and label_noise_fraction(config) > 0:
    raise ValueError(
        'config.train_labels and config.label_noise.fraction > 0 both change '
        'the train labels; use one (the known label errors would be '
        'ambiguous).')
  stream = config.get('stream')
  if config.get('train_labels') and stream is not None and stream.enabled:
    raise ValueError('config.train_labels applies to device-resident data '
                     'only; set config.stream.enabled=False.')


def train_label_errors(config, num_examples: int) -> np.ndarray:
  """Indices < num_examples whose ``config.train_labels`` label is not the
  dataset's own (reads the source again; for the label-issue analysis)."""
  from easyhard_jax.data import label_files  # pylint: disable=g-import-not-at-top
  _, noisy = label_files.given_labels(config, _load_source(config).train_labels)
  return noisy[noisy < num_examples]


def load_dataset(config) -> Dataset:
  """Loads ``config.dataset`` (a source name above or any TFDS name).

  ``config.train_labels`` first replaces the train labels by a file's; then
  ``config.max_train_examples`` keeps the first N train examples; then
  ``config.label_noise`` flips a fraction of their labels (see
  :func:`flip_labels`).
  """
  stream = config.get('stream')
  check_label_noise(config, bool(stream is not None and stream.enabled))
  _check_label_sources(config)
  ds = _load_source(config)
  if config.get('train_labels'):
    from easyhard_jax.data import label_files  # pylint: disable=g-import-not-at-top
    given, noisy = label_files.given_labels(config, ds.train_labels)
    logging.info('train_labels: %s gives %d of %d labels that differ from '
                 'the dataset\'s.', config.train_labels, noisy.size,
                 given.size)
    ds = dataclasses.replace(ds, train_labels=given)
  limit = config.get('max_train_examples')
  if limit:  # Keeps the first examples, so the stable index is unchanged.
    ds = dataclasses.replace(
        ds, train_images=ds.train_images[:limit],
        train_labels=ds.train_labels[:limit],
        train_ids=ds.train_ids[:limit] if ds.train_ids else None)
  if label_noise_fraction(config) > 0:
    noisy, idx = flip_labels(ds.train_labels, ds.num_classes,
                             config.label_noise.fraction,
                             config.label_noise.seed)
    logging.info('label_noise: flipped %d of %d train labels (seed %d).',
                 idx.size, noisy.size, config.label_noise.seed)
    ds = dataclasses.replace(ds, train_labels=noisy)
  return ds
