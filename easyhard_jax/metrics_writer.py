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
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

import jax


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
    if not self.enabled:
      return
    os.makedirs(os.path.dirname(self.jsonl_path), exist_ok=True)
    # Imported here: workers that never write need not pay for it.
    import tensorboardX  # pylint: disable=g-import-not-at-top
    self._tb = tensorboardX.SummaryWriter(logdir=self.tensorboard_dir,
                                          flush_secs=30)
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
    if self._jsonl is None:
      raise ValueError(f'MetricsWriter for {self.jsonl_path} is closed.')
    step = int(step)
    values = {_tag(prefix, k): float(v) for k, v in scalars.items()}
    row: dict[str, Any] = {'step': step, 'wall_time': round(time.time(), 3),
                           **fields}
    for tag, v in values.items():
      row[tag] = v if math.isfinite(v) else None
      self._tb.add_scalar(tag, v, global_step=step)
    self._jsonl.write(json.dumps(row) + '\n')
    self._jsonl.flush()

  def flush(self) -> None:
    """Pushes buffered events to disk."""
    if self._tb is not None:
      self._tb.flush()
    if self._jsonl is not None:
      self._jsonl.flush()

  def close(self) -> None:
    """Flushes and closes the files; later calls to close() do nothing."""
    if self._tb is not None:
      self._tb.close()
      self._tb = None
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None

  def __enter__(self) -> 'MetricsWriter':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
