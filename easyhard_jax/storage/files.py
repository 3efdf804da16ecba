"""Crash-safe files: atomic writes, readers, stage commits, workdir lock.

Paths are local paths or object-store URLs (``gs://bucket/dir``; any scheme
``etils.epath`` knows, through its fsspec backend: ``gcsfs`` for ``gs://``).
The helpers below (:func:`exists`, :func:`listdir`, :func:`open_file`, ...)
take either; a local path takes the same ``os`` calls as before, an object
store goes through ``epath``. What differs on an object store is said where
it differs: there is no rename and no ``flock``, so a write is one object
upload (atomic there: a reader sees the old object or the new one, and an
upload cut short leaves no object) and the lock is a lease object
(:class:`WorkdirLock`).

Every file the study writes goes through here (bytes, JSON, CSV, npz, npy),
and the readers of files more than one stage reads (JSON, CSV). A file is written to a temp
file in its own directory, flushed, fsynced and renamed over the target, and
the directory is fsynced after the rename, so a kill (even ``kill -9`` or a
power cut) leaves either the old file or the new one, never a torn one. Temp
files start with ``.tmp-``; one left by a killed run is removed by
:func:`clear_stale_temp` at the start of the next run (which holds the
workdir lock, so no live writer owns it).

A *stage commit* makes a stage's outputs valid at one moment: the stage
writes its files, then :func:`commit_stage` writes the stage's stamp last
(see ``fingerprint.py``). Readers and the study's skip logic trust a stage's
outputs only when its stamp is present and matches, so a kill between two of
its files is repaired by rerunning the stage.
"""

from __future__ import annotations

import csv
import datetime
import errno
import fcntl
import functools
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
import zipfile
from typing import IO, Any, Mapping, Sequence

import numpy as np

from easyhard_jax.storage import lease

TEMP_PREFIX = '.tmp-'
LOCK_NAME = '.lock'
_writer = True
_URL = re.compile(r'[A-Za-z][A-Za-z0-9+.-]*://')


def is_remote(path: Any) -> bool:
  """Whether ``path`` is an object-store URL (``gs://...``), not a local path.

  ``file://`` URLs count as remote too: epath handles them, not ``os``.
  """
  return bool(_URL.match(os.fspath(path) if hasattr(path, '__fspath__')
                         else str(path)))


def epath_of(path: Any):
  """``path`` as an ``etils.epath.Path`` (imported only when needed).

  The first call turns off gcsfs's listings cache for every gcsfs made
  after it: another process may have written since this one listed a prefix
  (process 0 of a pod, or a killed run before its rerun), and a cached
  listing would answer exists / isdir / listdir with what was there then.
  """
  from etils import epath  # pylint: disable=g-import-not-at-top
  _read_listings_fresh()
  return epath.Path(path)


@functools.cache
def _read_listings_fresh() -> None:
  import fsspec  # pylint: disable=g-import-not-at-top
  for protocol in ('gs', 'gcs'):
    fsspec.config.conf.setdefault(protocol, {})['use_listings_cache'] = False


def exists(path: str) -> bool:
  """Whether a file or directory (an object or a prefix) is at ``path``."""
  if is_remote(path):
    return epath_of(path).exists()
  return os.path.exists(path)


def lexists(path: str) -> bool:
  """:func:`exists` that counts a dangling local symbolic link as present."""
  return exists(path) if is_remote(path) else os.path.lexists(path)


def isdir(path: str) -> bool:
  """A directory (on an object store: a prefix that holds objects)."""
  if is_remote(path):
    return epath_of(path).is_dir()
  return os.path.isdir(path)


def isfile(path: str) -> bool:
  if is_remote(path):
    return epath_of(path).is_file()
  return os.path.isfile(path)


def islink(path: str) -> bool:
  """A local symbolic link; an object store has none."""
  return False if is_remote(path) else os.path.islink(path)


def listdir(path: str) -> list[str]:
  """Names directly in ``path`` (unsorted, as ``os.listdir``).

  Raises:
    FileNotFoundError: no such directory (on an object store: no object
      under the prefix).
  """
  if is_remote(path):
    p = epath_of(path)
    if not p.is_dir():
      raise FileNotFoundError(errno.ENOENT, 'No such directory', path)
    return [c.name for c in p.iterdir()]
  return os.listdir(path)


def makedirs(path: str) -> None:
  """``os.makedirs(path, exist_ok=True)``; nothing to do on an object store.

  An object store has no directories: a prefix exists once an object is
  written under it.
  """
  if is_remote(path):
    return
  os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
  """Removes one file (object); FileNotFoundError when there is none."""
  if is_remote(path):
    epath_of(path).unlink()
  else:
    os.remove(path)


def rmtree(path: str) -> None:
  """Removes a directory tree (every object under a prefix)."""
  if is_remote(path):
    epath_of(path).rmtree()
  else:
    shutil.rmtree(path)


def rename(src: str, dst: str) -> None:
  """``os.replace`` locally; copy then delete on an object store.

  Not atomic on an object store (it has no rename): use it only where a
  kill between the two steps leaves both files, never neither.
  """
  if is_remote(src) or is_remote(dst):
    epath_of(src).copy(epath_of(dst), overwrite=True)
    epath_of(src).unlink()
  else:
    os.replace(src, dst)


def open_file(path: str, mode: str = 'r', **kwargs) -> IO[Any]:
  """``open`` for a local path or an object-store URL.

  On an object store a reading handle is the whole object read into memory
  (one request, then seeks are free: numpy's zip reader seeks a lot), and
  only ``'w'``/``'wb'`` writes (no append: an object is written whole).
  """
  if not is_remote(path):
    return open(path, mode, **kwargs)  # pylint: disable=unspecified-encoding
  if 'r' in mode:
    data = epath_of(path).read_bytes()
    if 'b' in mode:
      return io.BytesIO(data)
    return io.TextIOWrapper(io.BytesIO(data),
                            encoding=kwargs.get('encoding') or 'utf-8',
                            errors=kwargs.get('errors'),
                            newline=kwargs.get('newline'))
  if 'a' in mode or '+' in mode:
    raise ValueError(f'{path}: an object store cannot append or update in '
                     'place; write the whole file with atomic_write_bytes.')
  return epath_of(path).open(mode, **kwargs)


def readable(path: str) -> Any:
  """What ``np.load`` and ``zipfile`` should read: a local path as it is, an
  object as an in-memory file of its bytes."""
  return open_file(path, 'rb') if is_remote(path) else path


def read_bytes(path: str) -> bytes:
  with open_file(path, 'rb') as f:
    return f.read()


def np_load(path: str, mmap_mode: str | None = None) -> Any:
  """``np.load(path, allow_pickle=False)`` of a local path or an object.

  An npz comes back as a ``NpzFile`` (use it in a ``with``). ``mmap_mode``
  maps a local file; an object is read into memory whole (nothing to map).
  """
  if is_remote(path):  # In memory: no object handle left open.
    return np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)
  return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)


def append_text(path: str, text: str) -> None:
  """Appends ``text`` to a log file, durably.

  Locally an append, flushed and fsynced. An object store cannot append: the
  object is read and written back whole with ``text`` after it (one upload,
  so a kill leaves the old log or the new one). Only for small logs written
  by the one process that holds the workdir lock (no two writers race).
  """
  if not _writer:
    return
  if is_remote(path):
    old = read_bytes(path) if exists(path) else b''
    epath_of(path).write_bytes(old + text.encode())
    return
  with open(path, 'a') as f:  # pylint: disable=unspecified-encoding
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


def set_writer(enabled: bool) -> None:
  """Only the writer process (process 0) writes; the others skip writes.

  Set once per invocation by runner.run, so every stage's results, exports
  and report are written by one process however the stage code is written.
  """
  global _writer
  _writer = bool(enabled)


def fsync_dir(directory: str) -> None:
  """Makes renames inside ``directory`` durable (a no-op where unsupported)."""
  if is_remote(directory):
    return  # An object store has no directory entries to sync.
  try:
    fd = os.open(directory or '.', os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` via a temp file in the same dir + rename.

  On an object store the write is one upload, which the store commits as a
  whole (an object store has no rename, and needs none: a reader sees the
  old object or the new one, and an upload cut short leaves no object).
  """
  if not _writer:
    return
  if is_remote(path):
    epath_of(path).write_bytes(bytes(data))
    return
  directory = os.path.dirname(path) or '.'
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX)
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results are for sharing.
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  fsync_dir(directory)


def to_jsonable(obj: Any) -> Any:
  """Numpy/jax values -> JSON types; NaN -> None, +-inf -> 'inf'/'-inf'."""
  if isinstance(obj, Mapping):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, np.generic):
    return to_jsonable(obj.item())
  if hasattr(obj, '__array__'):  # numpy and jax arrays.
    return to_jsonable(np.asarray(obj).tolist())
  if isinstance(obj, float):
    if math.isnan(obj):
      return None
    if math.isinf(obj):
      return 'inf' if obj > 0 else '-inf'
  return obj


def atomic_write_json(path: str, obj: Any) -> None:
  """``obj`` as indented JSON with sorted keys, atomically."""
  atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def atomic_write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
  """Writes dict rows (same keys, first row's order) as CSV, atomically."""
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
  writer.writeheader()
  writer.writerows(rows)
  atomic_write_bytes(path, buf.getvalue().encode())


def atomic_savez(path: str, arrays: Mapping[str, np.ndarray]) -> None:
  """``np.savez`` (no pickle needed to read it back), atomically."""
  buf = io.BytesIO()
  np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
  atomic_write_bytes(path, buf.getvalue())


def atomic_save_npy(path: str, array: np.ndarray) -> None:
  """``np.save`` of one array, atomically."""
  buf = io.BytesIO()
  np.save(buf, np.asarray(array))
  atomic_write_bytes(path, buf.getvalue())


STAGE_OUTPUT_FIX = ('rerun the same command (--mode=study, or the --mode '
                    'that wrote it): a damaged stage output counts as '
                    'unfinished and is made again.')


def read_json(path: str, fix: str = STAGE_OUTPUT_FIX) -> Any:
  """Reads a JSON file; a damaged one raises naming the file and ``fix``.

  The one JSON reader of the workdir's files: a bare JSONDecodeError names
  no file, so a damaged output would leave the user guessing.

  Args:
    path: the file.
    fix: what to do about a damaged one (default: rerun, for stage outputs).

  Returns:
    The parsed JSON value.

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file is not valid UTF-8 JSON; names ``path`` and ``fix``.
  """
  try:
    with open_file(path, encoding='utf-8') as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{path} is damaged ({type(e).__name__}: {e}). To fix: '
                     f'{fix}') from e


def unreadable_outputs(directory: str) -> list[str]:
  """Files directly in ``directory`` that cannot be read back (empty: none).

  JSON files must parse and npz files must pass their zip CRC checks. The
  runner counts a stage whose stamp is valid but whose output is unreadable
  as unfinished, so the study makes it again instead of failing on it later.
  """
  bad = []
  try:
    names = sorted(listdir(directory))
  except OSError:
    return bad
  for name in names:
    path = os.path.join(directory, name)
    if name.startswith(TEMP_PREFIX) or not isfile(path):
      continue
    try:
      if name.endswith('.json'):
        read_json(path)
      elif name.endswith('.npz'):
        with zipfile.ZipFile(readable(path)) as z:
          if z.testzip() is not None:
            raise ValueError('CRC mismatch')
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
      bad.append(path)
  return bad


def read_csv(path: str) -> list[dict[str, str]]:
  """Rows of a CSV written by :func:`atomic_write_csv`, as string dicts."""
  with open_file(path, newline='') as f:
    return list(csv.DictReader(f))


def clear_stale_temp(root: str, skip: Sequence[str] = ('checkpoints',)) -> int:
  """Removes ``.tmp-*`` files and dirs under ``root``; returns how many.

  Call only while holding the workdir lock: then no live writer owns them.
  Directories named in ``skip`` (orbax manages its own temporaries) are left.
  Nothing is written through temp files on an object store
  (:func:`atomic_write_bytes` uploads each file whole), so there is none to
  remove there.
  """
  if is_remote(root):
    return 0
  removed = 0
  for directory, dirs, names in os.walk(root):
    dirs[:] = [d for d in dirs if d not in skip]
    for name in list(dirs) + names:
      if not name.startswith(TEMP_PREFIX):
        continue
      path = os.path.join(directory, name)
      if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
        dirs.remove(name)
      else:
        os.remove(path)
      removed += 1
  return removed


WorkdirBusyError = lease.WorkdirBusyError
LEASE_SECONDS = lease.LEASE_SECONDS


class WorkdirLock:
  """One invocation's exclusive hold on a workdir.

  Locally, an exclusive ``fcntl.flock`` on ``WORKDIR/.lock``: the kernel
  drops it when its process dies, however it dies, so a lock file left by a
  killed run never blocks the next one; the file's contents (pid, start
  time, command) only serve the error message.

  On an object store (no ``flock``) it is a lease object (``lease.Lease``).
  """

  def __init__(self, workdir: str, lease_seconds: float | None = None):
    self.path = os.path.join(workdir, LOCK_NAME)
    self._fd = None
    self._lease = lease.Lease(self.path, lease_seconds) if is_remote(
        workdir) else None

  def acquire(self) -> 'WorkdirLock':
    if self._lease is not None:
      self._lease.acquire()
      return self
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        os.close(fd)
        raise
      holder = os.read(fd, 4096).decode(errors='replace').strip()
      os.close(fd)
      raise WorkdirBusyError(
          f'Another run is using this workdir ({holder or "unknown process"};'
          f' lock {self.path}). Wait for it to finish or stop it, or use '
          'another --workdir. A killed run never holds the lock.') from None
    os.ftruncate(fd, 0)
    started = datetime.datetime.now().isoformat(timespec='seconds')
    os.write(fd, (f'pid {os.getpid()}, started {started}, command '
                  f'{" ".join(sys.argv)}').encode())
    self._fd = fd
    return self

  def release(self) -> None:
    if self._lease is not None:
      self._lease.release()
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
