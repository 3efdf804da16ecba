"""Given training labels from a file: ``config.train_labels``.

A researcher studying real label noise trains on someone else's labels, e.g.
CIFAR-10N's human annotations (Wei et al., ICLR 2022). ``config.train_labels``
is ``PATH`` or ``PATH:KEY``:

- ``.npy``: an integer array [N] (no pickle);
- ``.npz``: the array ``KEY`` (no pickle);
- ``.csv``: a header row and the column ``KEY`` (default ``label``);
- ``.pt``: a torch-saved dict of numpy arrays (CIFAR-N's
  ``CIFAR-10_human.pt``; ``KEY`` e.g. ``aggre_label`` or ``worse_label``),
  read with an unpickler that admits numpy arrays and nothing else: never
  ``torch.load``, never ``allow_pickle=True`` on a user's file.

``config.train_labels_order`` says how the file's rows are ordered: ``index``
(row i is example i) or ``original`` (row k is the dataset's original key k,
e.g. CIFAR-10's binary order, mapped through TFDS's hash order). The file's
labels replace the training labels; where the file also has the clean labels
(``clean_label`` in CIFAR-N) they must equal the dataset's own, which checks
the order mapping. ``known_noisy`` (the positions whose given label differs
from the dataset's) feeds the label-issue analysis.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np

ORDERS = ('index', 'original')
CLEAN_KEY = 'clean_label'
# (module, name) pairs a numpy-only pickle may name; numpy 1 and 2 spellings.
_NUMPY_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', 'scalar'),
    ('numpy.core.numeric', '_frombuffer'),
    ('numpy._core.numeric', '_frombuffer'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('_codecs', 'encode'),
    ('collections', 'OrderedDict'),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles dicts/lists of numpy arrays; refuses every other class."""

  def find_class(self, module, name):
    if (module, name) not in _NUMPY_GLOBALS:
      raise pickle.UnpicklingError(
          f'refusing to unpickle {module}.{name}: a label file may hold only '
          'numpy arrays. Save the labels with np.save(path, labels) instead.')
    if module.startswith('numpy.core'):  # numpy 2 moved it to numpy._core.
      module = module.replace('numpy.core', 'numpy._core', 1)
      try:
        __import__(module)
      except ImportError:
        module = module.replace('numpy._core', 'numpy.core', 1)
    return super().find_class(module, name)

  def persistent_load(self, pid):
    raise pickle.UnpicklingError(
        'the file holds torch tensors; a label file must hold numpy arrays '
        '(save with {key: tensor.numpy()}).')


def read_pt(path: str) -> dict[str, np.ndarray]:
  """A torch zip-format file of numpy arrays, read without torch."""
  try:
    archive = zipfile.ZipFile(path)
  except zipfile.BadZipFile as e:
    raise ValueError(
        f'{path} is not a torch zip-format file (torch >= 1.6 save); save the '
        'labels with np.save instead.') from e
  with archive:
    pkl = [n for n in archive.namelist() if n.endswith('/data.pkl')
           or n == 'data.pkl']
    if len(pkl) != 1:
      raise ValueError(f'{path} has no single data.pkl; not a torch save.')
    try:
      obj = _NumpyOnlyUnpickler(io.BytesIO(archive.read(pkl[0]))).load()
    except pickle.UnpicklingError as e:
      raise ValueError(f'{path}: {e}') from e
  if not isinstance(obj, dict):
    raise ValueError(f'{path} holds a {type(obj).__name__}, not a dict of '
                     'label arrays.')
  return {str(k): np.asarray(v) for k, v in obj.items()}


def split_spec(spec: str) -> tuple[str, str | None]:
  """'PATH' or 'PATH:KEY' -> (path, key or None)."""
  path, key = spec, None
  head, sep, tail = spec.rpartition(':')
  if sep and head and os.sep not in tail and not os.path.exists(spec):
    path, key = head, tail
  return path, key


def _as_labels(values, where: str) -> np.ndarray:
  values = np.asarray(values)
  if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
    raise ValueError(f'{where} must be a 1-D integer array, got '
                     f'{values.dtype} {values.shape}.')
  if values.size and (values.min() < 0 or values.max() > np.iinfo(
      np.int32).max):
    raise ValueError(f'{where} has labels outside 0..2**31-1.')
  return values.astype(np.int64)


def read_label_file(spec: str) -> tuple[np.ndarray, np.ndarray | None]:
  """Reads ``config.train_labels``: (given labels [R], clean labels or None).

  Raises:
    FileNotFoundError: the file does not exist.
    KeyError: the key is missing (the message lists the file's keys).
    ValueError: the file is not a label file of a known kind.
  """
  path, key = split_spec(spec)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'config.train_labels: {path} does not exist.')
  where = f'config.train_labels {spec}'
  ext = os.path.splitext(path)[1].lower()
  if ext == '.npy':
    return _as_labels(np.load(path, allow_pickle=False), where), None
  if ext == '.csv':
    # pylint: disable-next=g-import-not-at-top
    from easyhard_jax.storage import files
    rows = files.read_csv(path)
    column = key or 'label'
    if not rows or column not in rows[0]:
      raise KeyError(f'{where}: no column {column!r}; the file has '
                     f'{list(rows[0]) if rows else "no rows"}.')
    clean = ([int(r[CLEAN_KEY]) for r in rows] if CLEAN_KEY in rows[0]
             and column != CLEAN_KEY else None)
    labels = _as_labels([int(r[column]) for r in rows], where)
    return labels, None if clean is None else _as_labels(clean, where)
  if ext == '.npz':
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  elif ext == '.pt':
    arrays = read_pt(path)
  else:
    raise ValueError(f'{where}: use a .npy, .npz, .csv or .pt file.')
  if key is None:
    raise KeyError(f'{where}: name the labels as PATH:KEY; keys are '
                   f'{sorted(arrays)}.')
  if key not in arrays:
    raise KeyError(f'{where}: no key {key!r}; keys are {sorted(arrays)}.')
  clean = arrays.get(CLEAN_KEY) if key != CLEAN_KEY else None
  return (_as_labels(arrays[key], where),
          None if clean is None else _as_labels(clean, f'{where} clean'))


def to_index_order(values: np.ndarray, order: str, split: str = 'train'
                   ) -> np.ndarray:
  """Rows in ``order`` -> rows in the dataset's example-index order."""
  if order == 'index':
    return values
  if order == 'original':
    # pylint: disable-next=g-import-not-at-top
    from easyhard_jax.data import cifar_binary
    return values[cifar_binary.tfds_permutation(values.size, split)]
  raise ValueError(f'config.train_labels_order must be one of {ORDERS}, got '
                   f'{order!r}.')


def given_labels(config, source_labels: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
  """The file's labels in index order, checked against the source's.

  Args:
    config: with ``train_labels`` and ``train_labels_order``.
    source_labels: the dataset's own train labels (whole split, index order).

  Returns:
    (given labels int32 [N], known-noisy indices int64 [k]: where given
    differs from the dataset's own label).
  """
  spec = config.train_labels
  labels, clean = read_label_file(spec)
  n = source_labels.shape[0]
  if labels.size != n:
    raise ValueError(
        f'config.train_labels {spec} has {labels.size} labels; the train '
        f'split has {n} examples (set it before max_train_examples cuts it).')
  order = config.get('train_labels_order', 'index')
  labels = to_index_order(labels, order)
  if clean is not None:
    clean = to_index_order(clean, order)
    bad = np.flatnonzero(clean != source_labels)
    if bad.size:
      raise ValueError(
          f'config.train_labels {spec}: its {CLEAN_KEY} differs from the '
          f'dataset\'s labels at {bad.size} of {n} examples (first: index '
          f'{bad[0]}); the rows are in another order than '
          f'train_labels_order={order!r} says.')
  num_classes = int(source_labels.max()) + 1
  if labels.max() >= num_classes:
    raise ValueError(f'config.train_labels {spec} has label '
                     f'{int(labels.max())} >= {num_classes} classes.')
  return (labels.astype(np.int32),
          np.flatnonzero(labels != source_labels).astype(np.int64))
