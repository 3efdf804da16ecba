"""Per-example learning dynamics store: the system's core artifact.

Layout under ``WORKDIR/records``::

    manifest.json                       what exists (JSON, replaced atomically)
    labels_{split}.npy                  int32 [examples]
    ids_{split}.json                    TFDS ids (or null) per example
    {arch}/{source}_{split}_{k:04d}.npz one chunk: arrays [members, examples]

``source`` is ``probe`` (eval mode, no augmentation, at the scheduled probe
points) or ``fused`` (the training forward pass of each epoch, scattered by
example index). Chunk files are written once (temp file + rename) and only ever
added; re-writing a chunk after a resume writes identical values. Everything is
readable with numpy alone (``allow_pickle=False``).

``load(workdir, split)`` returns a :class:`Records` whose per-example arrays are
shaped [members, probes, examples]; members of all architectures are stacked in
the manifest's architecture order and align on the stable example index.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any, Mapping, Sequence

import numpy as np

FIELDS = ('correct', 'loss', 'margin', 'p_true', 'el2n')
SPLITS = ('train', 'test')
SOURCES = ('probe', 'fused')
_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Records:
  """Per-example records of a study, aligned on the stable example index.

  Attributes:
    correct: bool [members, probes, examples]; argmax == label.
    loss: float32 [M, P, N]; softmax cross-entropy.
    margin: float32 [M, P, N]; true-class logit minus the largest other logit
      (positive iff correct, ties aside).
    p_true: float32 [M, P, N]; softmax probability of the true class.
    el2n: float32 [M, P, N]; L2 norm of softmax minus one-hot (Paul et al.).
      NaN for ``fused`` records, which do not store it.
    labels: int32 [N].
    example_ids: int64 [N]; the stable index 0..N-1 of the split.
    tfds_ids: list of N strings or None where the source has no TFDS ids.
    members: list of M dicts with at least 'name', 'arch', 'seed'.
    probe_steps: int64 [P]; global train step at which each probe was taken.
    probe_epochs: float64 [P]; the same point in epochs (step / steps_per_epoch).
    split: 'train' or 'test'.
    source: 'probe' or 'fused'.
  """
  correct: np.ndarray
  loss: np.ndarray
  margin: np.ndarray
  p_true: np.ndarray
  el2n: np.ndarray
  labels: np.ndarray
  example_ids: np.ndarray
  tfds_ids: list[str] | None
  members: list[dict[str, Any]]
  probe_steps: np.ndarray
  probe_epochs: np.ndarray
  split: str
  source: str

  @property
  def num_members(self) -> int:
    return self.correct.shape[0]

  @property
  def archs(self) -> list[str]:
    """Architecture of each member, in member order."""
    return [m['arch'] for m in self.members]


def records_dir(workdir: str) -> str:
  return os.path.join(workdir, 'records')


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` via a temp file in the same dir + rename."""
  directory = os.path.dirname(path) or '.'
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-')
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


def atomic_write_json(path: str, obj: Any) -> None:
  atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def atomic_write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
  """Writes dict rows (same keys, first row's order) as CSV, atomically."""
  import csv
  import io
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
  writer.writeheader()
  writer.writerows(rows)
  atomic_write_bytes(path, buf.getvalue().encode())


def _atomic_savez(path: str, arrays: Mapping[str, np.ndarray]) -> None:
  import io
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  atomic_write_bytes(path, buf.getvalue())


def read_manifest(workdir: str) -> dict[str, Any]:
  """Returns the records manifest, or an empty one when none exists yet."""
  path = os.path.join(records_dir(workdir), 'manifest.json')
  if not os.path.exists(path):
    return {'version': _VERSION, 'archs': {}, 'arch_order': []}
  with open(path) as f:
    try:
      manifest = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(
          f'Records manifest {path} is not valid JSON ({e}). It is written '
          'atomically, so it was edited by hand or the disk is damaged; delete '
          f'{records_dir(workdir)} and rerun to record again.') from e
  return manifest


class RecordWriter:
  """Writes records for one study workdir.

  With ``enabled=False`` (every process but 0 of a multi-process run) it keeps
  the manifest in memory, so the same calls work, and writes nothing.
  """

  def __init__(self, workdir: str, enabled: bool | None = None):
    if enabled is None:
      import jax  # Only the writer needs JAX; loading records does not.
      enabled = jax.process_index() == 0
    self.enabled = enabled
    self.workdir = workdir
    self.root = records_dir(workdir)
    if enabled:
      os.makedirs(self.root, exist_ok=True)
    self.manifest = read_manifest(workdir)

  def _flush_manifest(self) -> None:
    if self.enabled:
      atomic_write_json(os.path.join(self.root, 'manifest.json'),
                        self.manifest)

  def write_split_metadata(self, split: str, labels: np.ndarray,
                           tfds_ids: Sequence[str] | None) -> None:
    """Stores the labels (and TFDS ids) of a split, checking prior runs agree."""
    labels = np.asarray(labels, np.int32)
    path = os.path.join(self.root, f'labels_{split}.npy')
    if not self.enabled:
      return
    if os.path.exists(path):
      old = np.load(path, allow_pickle=False)
      if old.shape != labels.shape or not np.array_equal(old, labels):
        raise ValueError(
            f'The {split} labels in {path} differ from the dataset being '
            'trained now: this workdir holds records of another dataset or '
            'config. Use a fresh --workdir.')
      return
    import io
    buf = io.BytesIO()
    np.save(buf, labels)
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_json(os.path.join(self.root, f'ids_{split}.json'),
                      None if tfds_ids is None else list(map(str, tfds_ids)))
    self.manifest.setdefault('num_examples', {})[split] = int(labels.shape[0])
    self._flush_manifest()

  def begin_arch(self, arch: str, members: Sequence[Mapping[str, Any]],
                 steps_per_epoch: int, probe_steps: Sequence[int]) -> None:
    """Registers an architecture's members and its probe schedule."""
    entry = self.manifest['archs'].get(arch)
    new = {'members': [dict(m) for m in members],
           'steps_per_epoch': int(steps_per_epoch),
           'schedule': [int(s) for s in probe_steps]}
    if entry is not None:
      for key in ('members', 'steps_per_epoch', 'schedule'):
        if entry[key] != new[key]:
          raise ValueError(
              f'Records for {arch!r} in {self.root} were made with a different '
              f'{key} ({entry[key]} vs {new[key]}). Use a fresh --workdir or '
              'restore the config that made them.')
      return
    new.update({'chunks': {}, 'complete': False})
    self.manifest['archs'][arch] = new
    if arch not in self.manifest['arch_order']:
      self.manifest['arch_order'].append(arch)
    self._flush_manifest()

  def write_chunk(self, arch: str, source: str, split: str, index: int,
                  step: int, arrays: Mapping[str, np.ndarray]) -> None:
    """Appends one probe's (or one epoch's) [members, examples] arrays."""
    if source not in SOURCES or split not in SPLITS:
      raise ValueError(f'bad source/split {source!r}/{split!r}')
    name = f'{source}_{split}_{index:04d}.npz'
    if self.enabled:
      _atomic_savez(os.path.join(self.root, arch, name),
                    {k: np.asarray(v) for k, v in arrays.items()})
    chunks = self.manifest['archs'][arch]['chunks'].setdefault(
        f'{source}_{split}', {})
    chunks[str(index)] = {'file': name, 'step': int(step)}
    self._flush_manifest()

  def finish_arch(self, arch: str) -> None:
    self.manifest['archs'][arch]['complete'] = True
    self._flush_manifest()

  def is_complete(self, arch: str) -> bool:
    entry = self.manifest['archs'].get(arch)
    return bool(entry and entry.get('complete'))


def _load_labels(root: str, split: str) -> tuple[np.ndarray, list[str] | None]:
  path = os.path.join(root, f'labels_{split}.npy')
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'No {split} records in {root}: run --mode=record first.')
  labels = np.load(path, allow_pickle=False)
  with open(os.path.join(root, f'ids_{split}.json')) as f:
    ids = json.load(f)
  return labels, ids


def load(workdir: str, split: str = 'train', source: str = 'probe',
         archs: Sequence[str] | None = None,
         complete_only: bool = True) -> Records:
  """Loads the records of a study.

  Args:
    workdir: the study's workdir (records live in ``WORKDIR/records``).
    split: 'train' or 'test'.
    source: 'probe' (clean eval-mode measurements at the probe schedule) or
      'fused' (training-pass statistics, one per epoch; train split only).
    archs: architectures to load, in this order; default: all in the manifest.
    complete_only: skip architectures whose training has not finished. When
      False, every architecture is cut to the probes all of them have.

  Returns:
    A :class:`Records` with arrays shaped [members, probes, examples].
  """
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  if source not in SOURCES:
    raise ValueError(f'source must be one of {SOURCES}, got {source!r}')
  root = records_dir(workdir)
  manifest = read_manifest(workdir)
  labels, tfds_ids = _load_labels(root, split)
  names = list(archs) if archs is not None else list(manifest['arch_order'])
  for a in names:
    if a not in manifest['archs']:
      raise KeyError(f'No records for architecture {a!r} in {root}; '
                     f'recorded: {manifest["arch_order"]}')
  if complete_only:
    names = [a for a in names if manifest['archs'][a]['complete']]
  if not names:
    raise FileNotFoundError(
        f'No finished architecture has records in {root}: let --mode=record '
        'finish (it resumes where it stopped) or pass complete_only=False.')
  key = f'{source}_{split}'
  per_arch = []
  for a in names:
    chunks = manifest['archs'][a]['chunks'].get(key, {})
    ordered = sorted((int(k), v) for k, v in chunks.items())
    # Only a gap-free prefix counts; a later chunk past a gap is from a rerun.
    prefix = []
    for i, (k, v) in enumerate(ordered):
      if k != i:
        break
      prefix.append(v)
    per_arch.append(prefix)
  num_probes = min(len(p) for p in per_arch)
  if num_probes == 0:
    raise FileNotFoundError(f'No {key} records yet in {root}.')
  steps = [c['step'] for c in per_arch[0][:num_probes]]
  out = {f: [] for f in FIELDS}
  members = []
  for a, chunks in zip(names, per_arch):
    if [c['step'] for c in chunks[:num_probes]] != steps:
      raise ValueError(f'Probe steps of {a!r} differ from {names[0]!r}; '
                       'architectures of one study share one schedule.')
    per_field = {f: [] for f in FIELDS}
    for c in chunks[:num_probes]:
      path = os.path.join(root, a, c['file'])
      try:
        with np.load(path, allow_pickle=False) as z:
          for f in FIELDS:
            per_field[f].append(z[f] if f in z else
                                np.full(z['loss'].shape, np.nan, np.float32))
      except (OSError, ValueError, KeyError) as e:
        raise ValueError(f'Record chunk {path} is unreadable ({e}); delete it '
                         'and the checkpoints after its step, then rerun '
                         '--mode=record to rebuild it.') from e
    for f in FIELDS:
      out[f].append(np.stack(per_field[f], axis=1))  # [M_a, P, N]
    members.extend(manifest['archs'][a]['members'])
  spe = manifest['archs'][names[0]]['steps_per_epoch']
  steps = np.asarray(steps, np.int64)
  return Records(
      correct=np.concatenate(out['correct']).astype(bool),
      loss=np.concatenate(out['loss']).astype(np.float32),
      margin=np.concatenate(out['margin']).astype(np.float32),
      p_true=np.concatenate(out['p_true']).astype(np.float32),
      el2n=np.concatenate(out['el2n']).astype(np.float32),
      labels=labels.astype(np.int32),
      example_ids=np.arange(labels.shape[0], dtype=np.int64),
      tfds_ids=tfds_ids,
      members=members,
      probe_steps=steps,
      probe_epochs=steps / float(spe),
      split=split,
      source=source)
