"""The files a run will read, checked before the lock or any deletion.

``validation.validate`` calls :func:`check` with the workdir and the mode, so
a damaged or missing input (the user's npz, a known-label-errors file, a
reference score file, the analysis's score artifact that --mode=removal,
compress and compare read, a workdir path that is a dangling link) stops the
run before ``runner.run`` takes the workdir lock or replaces any stage's
outputs, with a message that names the file and what to do. The stages read
the same files again later; these checks only make them fail first, and
clearly.
"""

from __future__ import annotations

import os
import zipfile
from typing import Sequence

import numpy as np

from easyhard_jax import config_fields
from easyhard_jax.storage import files

NPZ_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')
# Stages that read config.analysis.known_noisy / config.reference.path.
_KNOWN_NOISY_MODES = ('study', 'analysis')
_REFERENCE_MODES = ('compare',)
# Stages run on their own that read analysis/scores_{split}.npz (in a study,
# the analysis stage before them writes it).
_SCORE_MODES = ('removal', 'compression', 'compare')


def check_workdir(workdir: str) -> None:
  """Raises ValueError when ``workdir`` cannot be a directory.

  A dangling symbolic link (the workdir or a parent) made ``os.makedirs``
  raise a bare FileExistsError; a regular file in the path, NotADirectoryError.
  An object-store URL (``gs://...``) has neither: nothing to check.
  """
  if files.is_remote(workdir):
    return
  path = os.path.abspath(workdir)
  parts = []
  while True:
    parts.append(path)
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  for p in reversed(parts):
    if os.path.islink(p) and not os.path.exists(p):
      raise ValueError(
          f'--workdir {workdir}: {p} is a symbolic link to '
          f'{os.readlink(p)!r}, which does not exist. To fix: create the '
          'target directory, remove the link, or pass another --workdir.')
    if os.path.exists(p) and not os.path.isdir(p):
      raise ValueError(f'--workdir {workdir}: {p} is a file, not a '
                       'directory. To fix: pass another --workdir.')


def _npy_header(f) -> tuple[tuple[int, ...], np.dtype]:
  version = np.lib.format.read_magic(f)
  read = {(1, 0): np.lib.format.read_array_header_1_0,
          (2, 0): np.lib.format.read_array_header_2_0}.get(version)
  if read is None:
    raise ValueError(f'npy format version {version} is not supported')
  shape, _, dtype = read(f)
  return shape, dtype


def check_npz(path: str, keys: Sequence[str], field: str) -> None:
  """Checks that ``path`` is an npz holding ``keys`` readable without pickle.

  Reads only the zip directory and each array's header, so it costs nothing
  for a large file.

  Args:
    path: the file.
    keys: arrays it must hold.
    field: the config field that names it (for the message).

  Raises:
    FileNotFoundError, KeyError or ValueError naming the file and the fix.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'config.{field}: {path} does not exist (or is '
                            'not a file).')
  try:
    with zipfile.ZipFile(path) as zf:
      names = set(zf.namelist())
      missing = [k for k in keys if f'{k}.npy' not in names]
      if missing:
        raise KeyError(f'config.{field}: {path} lacks arrays {missing}; it '
                       f'must hold {tuple(keys)} (found '
                       f'{sorted(n[:-4] for n in names if n.endswith(".npy"))}'
                       ').')
      for k in keys:
        with zf.open(f'{k}.npy') as f:
          _, dtype = _npy_header(f)
        if dtype.hasobject:
          raise ValueError(
              f'config.{field}: array {k!r} of {path} holds Python objects '
              '(pickled data), which this project never loads. To fix: save '
              'it as a numeric array, e.g. np.savez(path, '
              f'{k}=np.asarray({k}, np.uint8 or np.int64)).')
  except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
    if str(e).startswith(f'config.{field}'):
      raise
    raise ValueError(f'config.{field}: {path} is not a readable .npz file '
                     f'({type(e).__name__}: {e}). To fix: write it with '
                     f'np.savez(path, {", ".join(k + "=..." for k in keys)})'
                     '.') from e


def _check_known_noisy(config) -> None:
  path = config_fields.get(config, 'analysis.known_noisy') or ''
  if not path:
    return
  # pylint: disable=g-import-not-at-top
  try:
    from easyhard_jax.analysis.label_noise import read_indices
  except ImportError:  # Before the known-noisy reader moved there.
    from easyhard_jax.analysis.label_issues import read_indices
  # pylint: enable=g-import-not-at-top
  try:
    # The range check needs the dataset's size: here only the contents.
    read_indices(path, np.iinfo(np.int64).max)
  except FileNotFoundError:
    raise
  except (ValueError, OSError, IndexError, UnicodeDecodeError) as e:
    raise ValueError(
        f'config.analysis.known_noisy: {path} cannot be read as train '
        f'example indices ({type(e).__name__}: {e}). It must be a .npy of '
        'integers, a .txt of whitespace-separated integers or a .csv with '
        "an 'example_index' column.") from e


def _check_reference(config) -> None:
  rc = config.get('reference')
  if rc is None or not rc.get('path'):
    raise ValueError('config.reference.path is empty: pass '
                     '--config.reference.path=/path/to/scores.npz (or .csv).')
  # pylint: disable-next=g-import-not-at-top
  from easyhard_jax.analysis import reference_order
  if rc.order not in reference_order.ORDERS:
    raise ValueError(f'config.reference.order must be one of '
                     f'{reference_order.ORDERS}, got {rc.order!r}.')
  try:
    reference_order.read_reference(
        rc.path, rc.key, rc.tfds_id_column if rc.order == 'tfds_id' else None,
        rc.get('label_key') or None)
  except (FileNotFoundError, KeyError):
    raise
  except (ValueError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as e:
    raise ValueError(f'config.reference.path: {rc.path} cannot be read '
                     f'({type(e).__name__}: {e}).') from e


def _check_scores(config, mode: str, workdir: str) -> None:
  """The analysis's score artifact of the split the stage reads exists."""
  # pylint: disable-next=g-import-not-at-top
  from easyhard_jax.analysis import score_store
  split = (config.reference.get('split', 'train') if mode == 'compare'
           else 'train')
  path = score_store.analysis_scores_path(workdir, split)
  if not files.isfile(path):
    raise FileNotFoundError(
        f"--mode={mode} reads the analysis's scores, and {path} does not "
        'exist: run --mode=analysis on this workdir first (or --mode=study). '
        'An analysis written before the scores were stored as npz has only '
        'the CSV; --mode=analysis writes both.')


def check(config, mode: str | None = None, workdir: str | None = None
          ) -> None:
  """Checks every file the run in ``mode`` reads (None: every stage's)."""
  if workdir is not None:
    check_workdir(workdir)
  if config.get('dataset') == 'npz':
    path = config.get('npz_path')
    if not path:
      raise ValueError("dataset 'npz' needs config.npz_path=/path/to/file.npz")
    check_npz(path, NPZ_KEYS, 'npz_path')
  if mode is None or mode in _KNOWN_NOISY_MODES:
    _check_known_noisy(config)
  if mode in _REFERENCE_MODES:
    _check_reference(config)
  if mode in _SCORE_MODES and workdir is not None:
    _check_scores(config, mode, workdir)
