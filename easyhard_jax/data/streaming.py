"""Streamed datasets: random-access sources decoded on host threads.

For datasets too large to sit in device memory (ImageNet), set
``config.stream.enabled = True``. The training images then stay on disk in
TFDS's array_record files, opened with ``tfds.data_source`` (random access by
stable index, no TensorFlow), and ``data/loader.py`` reads them with grain.
Everything else the study needs up front (labels, TFDS ids, channel
statistics) is read once and cached, so a resumed run starts at once.

Preprocessing is per example and deterministic: a train example's random
crop depends only on (root seed, architecture, member seed, epoch, example
index), so the same batch comes back after a restart, on any number of hosts
and threads. Sources that are small enough to load (digits, npz) can be
streamed too, through :class:`ArraySource`; the tests use this to check that
the streamed path writes the same records as the device-resident one.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
from typing import Any, Sequence

import numpy as np
from absl import logging

from easyhard_jax.data import device_ops
from easyhard_jax.data import sources

_ID_KEYS = ('id', 'file_name', 'image/filename', 'image/file_name')


class ArraySource:
  """In-memory arrays with the element format of a TFDS data source."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, ids=None):
    self.images, self.labels, self.ids = images, labels, ids

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, i: int) -> dict[str, Any]:
    ex = {'image': self.images[i], 'label': self.labels[i]}
    if self.ids is not None:
      ex['id'] = self.ids[i]
    return ex


def _example_id(ex: dict[str, Any], prefix: str, i: int) -> str:
  for key in _ID_KEYS:
    if key in ex:
      v = ex[key]
      return v.decode() if isinstance(v, bytes) else str(v)
  return f'{prefix}-{i}'


def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear (antialiased) resize of a uint8 HWC image with PIL."""
  from PIL import Image
  squeeze = img.shape[-1] == 1
  pil = Image.fromarray(img[..., 0] if squeeze else img)
  out = np.asarray(pil.resize((width, height), Image.BILINEAR))
  return out[..., None] if out.ndim == 2 else out


def center_crop(img: np.ndarray, size: int, crop_fraction: float) -> np.ndarray:
  """Resizes the shorter side to size / crop_fraction, then crops the centre."""
  h, w = img.shape[:2]
  short = int(round(size / crop_fraction))
  if min(h, w) != short:
    scale = short / min(h, w)
    h, w = max(size, round(h * scale)), max(size, round(w * scale))
    img = _resize(img, h, w)
  top, left = (h - size) // 2, (w - size) // 2
  return img[top:top + size, left:left + size]


def random_resized_crop(img: np.ndarray, size: int, rng: np.random.Generator,
                        scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> np.ndarray:
  """Inception-style crop: random area and aspect ratio, resized to size."""
  h, w = img.shape[:2]
  for _ in range(10):
    area = h * w * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area /
                                                                   aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
      return _resize(img[top:top + ch, left:left + cw], size, size)
  return center_crop(img, size, 1.0)


@dataclasses.dataclass
class StreamedData:
  """A dataset read example by example; the streamed twin of sources.Dataset.

  Attributes:
    name: dataset name.
    sources: {'train', 'test'} random-access sources (``len`` and ``[i]``
      giving {'image', 'label', ...}).
    labels, ids: per split, in stable-index order.
    num_classes: number of classes.
    image_shape: (H, W, C) after preprocessing.
    mean, std: per-channel statistics in [0, 1] units (from the train split).
    image_size: output side length, or None to keep the source's fixed shape.
    random_resized_crop: Inception crop for training (else a centre crop).
    crop_fraction: centre-crop share of the shorter side for evaluation.
    num_threads: host threads for decoding.
  """
  name: str
  sources: dict[str, Any]
  labels: dict[str, np.ndarray]
  ids: dict[str, list[str] | None]
  num_classes: int
  image_shape: tuple[int, int, int]
  mean: np.ndarray
  std: np.ndarray
  image_size: int | None = None
  random_resized_crop: bool = False
  crop_fraction: float = 0.875
  num_threads: int = 16

  @property
  def train_labels(self) -> np.ndarray:
    return self.labels['train']

  @property
  def test_labels(self) -> np.ndarray:
    return self.labels['test']

  @property
  def train_ids(self):
    return self.ids['train']

  @property
  def test_ids(self):
    return self.ids['test']

  @property
  def train_images(self) -> 'LazyImages':
    return LazyImages(self, 'train')

  @property
  def test_images(self) -> 'LazyImages':
    return LazyImages(self, 'test')

  def num_examples(self, split: str) -> int:
    return len(self.labels[split])

  def _decoded(self, split: str, i: int) -> np.ndarray:
    img = np.asarray(self.sources[split][int(i)]['image'])
    if img.ndim == 2:
      img = img[..., None]
    if img.shape[-1] != self.image_shape[-1]:  # Grayscale JPEGs in RGB sets.
      img = np.broadcast_to(img[..., :1], img.shape[:2] + self.image_shape[-1:])
    return np.ascontiguousarray(img)

  def eval_image(self, split: str, i: int) -> np.ndarray:
    """Example ``i`` of ``split`` as the probe pass sees it (uint8 HWC)."""
    img = self._decoded(split, i)
    if self.image_size:
      img = center_crop(img, self.image_size, self.crop_fraction)
    return self._checked(img, split, i)

  def train_image(self, i: int, seed: Sequence[int]) -> np.ndarray:
    """Train example ``i``, host-cropped with ``default_rng(seed)``."""
    if not (self.image_size and self.random_resized_crop):
      return self.eval_image('train', i)
    img = random_resized_crop(self._decoded('train', i), self.image_size,
                              np.random.default_rng(seed))
    return self._checked(img, 'train', i)

  def _checked(self, img: np.ndarray, split: str, i: int) -> np.ndarray:
    if img.shape != self.image_shape:
      raise ValueError(
          f'{self.name} {split} example {i} has shape {img.shape}, not '
          f'{self.image_shape}; set config.image_size to resize every image.')
    return img


class LazyImages:
  """[N, H, W, C] uint8 images decoded on demand (for analysis and report).

  Indexing with an int, a slice or an index array decodes just those
  examples on host threads; converting the whole thing with ``np.asarray``
  is allowed only below ``max_bytes``.
  """

  max_bytes = 4 << 30

  def __init__(self, data: StreamedData, split: str):
    self.data, self.split = data, split
    self.shape = (data.num_examples(split),) + tuple(data.image_shape)
    self.dtype, self.ndim = np.dtype(np.uint8), 4

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, key):
    if isinstance(key, (int, np.integer)):
      return self.data.eval_image(self.split, int(key) % self.shape[0])
    rows = np.arange(self.shape[0])[key]
    with concurrent.futures.ThreadPoolExecutor(self.data.num_threads) as pool:
      ims = list(pool.map(lambda i: self.data.eval_image(self.split, i), rows))
    return (np.stack(ims) if ims else
            np.zeros((0,) + self.shape[1:], np.uint8))

  def __array__(self, dtype=None, copy=None):
    del copy
    if int(np.prod(self.shape)) > self.max_bytes:
      raise MemoryError(
          f'{self.data.name} {self.split} has {self.shape[0]} images '
          f'({np.prod(self.shape) / 2**30:.0f} GiB); it is streamed and not '
          'loaded whole. Index it in chunks instead.')
    out = self[:]
    return out if dtype is None else out.astype(dtype)


def _read_index(source, prefix: str, num_threads: int):
  """Labels and ids of every example, read with threads."""
  n = len(source)
  chunks = [range(s, min(s + 1024, n)) for s in range(0, n, 1024)]

  def read(rows):
    labels, ids = [], []
    for i in rows:  # One example (and its image bytes) alive at a time.
      ex = source[i]
      labels.append(int(ex['label']))
      ids.append(_example_id(ex, prefix, i))
    return labels, ids

  labels, ids = [], []
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    for lb, ix in pool.map(read, chunks):
      labels += lb
      ids += ix
  return np.asarray(labels, np.int32), ids


def _tfds_sources(config, name: str, splits: dict[str, str]):
  """tfds.data_source per split, plus a label-only twin that skips decoding."""
  import tensorflow_datasets as tfds
  try:
    builder = tfds.builder(name, data_dir=config.get('data_dir'))
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f'Unknown dataset {name!r}: not a TFDS dataset name '
                     '(see `tfds.list_builders()`).') from e
  features = builder.info.features
  if 'image' not in features or 'label' not in features:
    raise ValueError(f'TFDS dataset {name!r} has no image/label features.')
  out, index = {}, {}
  for split, tfds_split in splits.items():
    out[split] = tfds.data_source(name, split=tfds_split,
                                  data_dir=config.get('data_dir'))
    try:  # Labels without decoding every JPEG (real array_record files).
      skip = tfds.data_source(
          name, split=tfds_split, data_dir=config.get('data_dir'),
          decoders={'image': tfds.decode.SkipDecoding()})
      skip[0]
      index[split] = skip
    except ModuleNotFoundError:  # Mocked sources need TensorFlow to skip.
      logging.warning('%s %s: indexing decodes every image (SkipDecoding '
                      'needs TensorFlow here).', name, tfds_split)
      index[split] = out[split]
  key = f'{name}|{builder.info.version}|{config.get("data_dir")}'
  return out, index, features['label'].num_classes, key


def _cached_index(config, name: str, split: str, source, num_threads: int,
                  dataset_key: str):
  """(labels, ids) of a split, cached under config.stream.index_cache_dir.

  The cache key holds the dataset version, data_dir, the TFDS split string
  and the split's length, so another split never reuses these labels.
  """
  cache = os.path.expanduser(config.stream.index_cache_dir or '')
  key = hashlib.sha1(f'{dataset_key}|{split}|{len(source)}'.encode()
                     ).hexdigest()[:12]
  safe = ''.join(ch if ch.isalnum() else '_' for ch in split)
  path = os.path.join(cache, f'{name}-{safe}-{key}.npz') if cache else ''
  if path and os.path.exists(path):
    with np.load(path, allow_pickle=False) as z:
      return z['labels'], [str(s) for s in z['ids']]
  logging.info('Indexing %s %s (%d examples)...', name, split, len(source))
  labels, ids = _read_index(source, f'{name}-{split}', num_threads)
  if path:
    os.makedirs(cache, exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}.npz'
    np.savez(tmp, labels=labels, ids=np.asarray(ids))
    os.replace(tmp, path)
  return labels, ids


def _image_shape(first: np.ndarray, image_size: int | None):
  channels = 1 if first.ndim == 2 else first.shape[-1]
  if image_size:
    return (image_size, image_size, channels)
  return tuple(first.shape[:2]) + (channels,)


def open_streamed(config) -> StreamedData:
  """Opens ``config.dataset`` for streaming (see the module docstring)."""
  s = config.stream
  threads = int(s.num_threads)
  if config.dataset in sources.SOURCES:  # Small sources: stream from memory.
    mem = sources.load_dataset(config)
    srcs = {split: ArraySource(*mem.split(split), ids)
            for split, ids in (('train', mem.train_ids),
                               ('test', mem.test_ids))}
    labels = {'train': mem.train_labels, 'test': mem.test_labels}
    ids = {'train': mem.train_ids, 'test': mem.test_ids}
    num_classes = mem.num_classes
  else:
    splits = {'train': config.get('train_split') or 'train',
              'test': config.get('test_split') or 'test'}
    srcs, index, num_classes, key = _tfds_sources(config, config.dataset,
                                                  splits)
    labels, ids = {}, {}
    for split, tfds_split in splits.items():
      labels[split], ids[split] = _cached_index(
          config, config.dataset, tfds_split, index[split], threads, key)
    limit = config.get('max_train_examples')
    if limit:  # The first N by stable index, as for in-memory sources.
      srcs['train'] = _Prefix(srcs['train'], limit)
      labels['train'], ids['train'] = labels['train'][:limit], ids[
          'train'][:limit]
  first = np.asarray(srcs['train'][0]['image'])
  data = StreamedData(
      name=config.dataset, sources=srcs, labels=labels, ids=ids,
      num_classes=int(config.get('num_classes') or num_classes),
      image_shape=_image_shape(first, config.get('image_size')),
      mean=np.zeros(1), std=np.ones(1), image_size=config.get('image_size'),
      random_resized_crop=bool(s.random_resized_crop),
      crop_fraction=float(s.crop_fraction), num_threads=threads)
  sample = LazyImages(data, 'train')[:int(s.stats_examples)]
  data.mean, data.std = device_ops.channel_stats(sample)
  return data


class _Prefix:
  """The first ``n`` examples of a random-access source."""

  def __init__(self, source, n: int):
    self.source, self.n = source, min(n, len(source))

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int):
    if not 0 <= i < self.n:
      raise IndexError(i)
    return self.source[i]


def load(config) -> sources.Dataset | StreamedData:
  """The study's data: streamed when ``config.stream.enabled``, else loaded."""
  stream = config.get('stream')
  if stream is not None and stream.enabled:
    sources.check_label_noise(config, streamed=True)
    return open_streamed(config)
  return sources.load_dataset(config)

