"""Scalar metrics to JSON lines and TensorBoard, written by process 0 only.

``MetricsWriter(workdir).write(12, {'loss': 0.3}, prefix='train', kind='epoch')``
appends

    {"step": 12, "wall_time": 1795800000.1, "kind": "epoch", "train/loss": 0.3}

to ``WORKDIR/metrics.jsonl`` (the study's one metrics file, which the report
reads) and the scalar ``train/loss`` at step 12 to a TensorBoard event file
under ``WORKDIR/tensorboard/``; keyword fields go to the JSON line only. The event files
are written with tensorboardX (numpy + protobuf, no TensorFlow) and read by
TensorBoard, ``tensorboard.backend.event_processing.event_accumulator`` or
tbparse. Non-finite values go to TensorBoard as they are and to the JSON
lines as ``null`` (JSON has no NaN).

Every process may construct and call a writer; only ``jax.process_index() ==
0`` touches the disk, so multi-host loops need no ``if``.

A resumed run redoes the steps after its last checkpoint: a row whose
(arch, kind, step) is already in the file replaces the old row (the file is
rewritten atomically), so ``metrics.jsonl`` holds one row per (arch, kind,
step). A torn last line left by a killed run is dropped when a writer opens
the file.

On an object store (``gs://`` workdir), which cannot append, every write
uploads the whole file (one object, so never torn). The TensorBoard events
are written to a local temporary directory and uploaded whole into
``WORKDIR/tensorboard/`` by :meth:`MetricsWriter.flush` and
:meth:`MetricsWriter.close` and after a write that comes 30 s after the last
upload (the event file's own flush interval), so a killed run loses at most
30 s of TensorBoard points; ``metrics.jsonl`` loses none.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from typing import Any, Mapping

import jax

from easyhard_jax.storage import files


def _key(row: Mapping[str, Any]) -> tuple[Any, Any, Any]:
  """A row's identity, as the report reads it: (arch, kind, step)."""
  return (row.get('arch'), row.get('kind'), row.get('step'))


def _tag(prefix: str, name: str) -> str:
  prefix = prefix.strip('/')
  return f'{prefix}/{name}' if prefix else name


class MetricsWriter:
  """Appends scalars to ``metrics.jsonl`` and TensorBoard events.

  Attributes:
    enabled: whether this writer writes (requested and process 0).
    jsonl_path: the JSON lines file.
    tensorboard_dir: the TensorBoard log directory.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    """Opens (appends to) the writer's files.

    Args:
      workdir: the study workdir.
      enabled: False makes every call a no-op (e.g. for a dry run).
    """
    self.enabled = bool(enabled) and jax.process_index() == 0
    self.jsonl_path = os.path.join(workdir, 'metrics.jsonl')
    self.tensorboard_dir = os.path.join(workdir, 'tensorboard')
    self._jsonl = self._tb = None
    self._remote = files.is_remote(workdir)
    self._tb_local = None  # Local staging of the events on an object store.
    self._uploaded = 0.0
    self._open = False
    self._rows: dict[tuple[Any, Any, Any], str] = {}
    if not self.enabled:
      return
    files.makedirs(os.path.dirname(self.jsonl_path))
    # Imported here: workers that never write need not pay for it.
    import tensorboardX  # pylint: disable=g-import-not-at-top
    if self._remote:
      self._tb_local = tempfile.mkdtemp(prefix='easyhard-tensorboard-')
      self._uploaded = time.time()
    self._tb = tensorboardX.SummaryWriter(
        logdir=self._tb_local or self.tensorboard_dir, flush_secs=30)
    if self._load_rows():
      self._rewrite()
    self._open = True
    if not self._remote:
      self._jsonl = open(self.jsonl_path, 'a', encoding='utf-8')

  def _load_rows(self) -> bool:
    """Reads the rows already in the file; True when it needs a rewrite."""
    if not files.exists(self.jsonl_path):
      return False
    clean = True
    with files.open_file(self.jsonl_path, encoding='utf-8',
                         errors='replace') as f:
      for line in f:
        try:
          row = json.loads(line)
        except ValueError:
          row = None
        if not isinstance(row, dict):
          clean = False  # A torn line (a killed run): dropped.
          continue
        key = _key(row)
        clean = clean and key not in self._rows and line.endswith('\n')
        self._rows[key] = json.dumps(row) + '\n'
    return not clean

  def _rewrite(self) -> None:
    """Replaces the file by one row per key, atomically."""
    reopen = self._jsonl is not None
    if reopen:
      self._jsonl.close()
    files.atomic_write_bytes(self.jsonl_path,
                             ''.join(self._rows.values()).encode())
    if reopen:
      self._jsonl = open(self.jsonl_path, 'a', encoding='utf-8')

  def write(self, step: int, scalars: Mapping[str, Any],
            prefix: str = '', **fields: Any) -> None:
    """Writes one step's scalars (one JSON line, one TensorBoard point each).

    Args:
      step: the global step (the x axis in TensorBoard).
      scalars: {name: number}; numpy / jax scalars are converted with float().
      prefix: optional tag prefix, joined with '/' ('train' -> 'train/loss').
      **fields: JSON-serialisable context for the JSON line only (e.g.
        arch='cnn', kind='epoch', per-member lists).
    """
    if not self.enabled:
      return
    if not self._open:
      raise ValueError(f'MetricsWriter for {self.jsonl_path} is closed.')
    step = int(step)
    values = {_tag(prefix, k): float(v) for k, v in scalars.items()}
    row: dict[str, Any] = {'step': step, 'wall_time': round(time.time(), 3),
                           **fields}
    for tag, v in values.items():
      row[tag] = v if math.isfinite(v) else None
      self._tb.add_scalar(tag, v, global_step=step)
    line = json.dumps(row) + '\n'
    key = _key(row)
    if key in self._rows:  # A resumed run redoing a step.
      self._rows[key] = line  # Keeps the first row's place, as the report.
      self._rewrite()
      return
    self._rows[key] = line
    if self._remote:  # No append on an object store: the whole file.
      self._rewrite()
      if time.time() - self._uploaded > 30:
        self._tb.flush()
        self._upload_events()
      return
    self._jsonl.write(line)
    self._jsonl.flush()

  def _upload_events(self) -> None:
    """Copies the locally staged event files into the object store."""
    for directory, _, names in os.walk(self._tb_local):
      for name in names:
        local = os.path.join(directory, name)
        with open(local, 'rb') as f:
          files.atomic_write_bytes(os.path.join(
              self.tensorboard_dir, os.path.relpath(local, self._tb_local)),
                                   f.read())
    self._uploaded = time.time()

  def flush(self) -> None:
    """Pushes buffered events to disk (to the object store)."""
    if self._tb is not None:
      self._tb.flush()
      if self._tb_local:
        self._upload_events()
    if self._jsonl is not None:
      self._jsonl.flush()

  def close(self) -> None:
    """Flushes and closes the files; later calls to close() do nothing."""
    if self._tb is not None:
      self._tb.close()
      if self._tb_local:
        self._upload_events()
      self._tb = None
    if self._tb_local:
      shutil.rmtree(self._tb_local, ignore_errors=True)
      self._tb_local = None
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    self._open = False

  def __enter__(self) -> 'MetricsWriter':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
