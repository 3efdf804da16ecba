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
import re
import zipfile
from typing import Any, Mapping, Sequence

import numpy as np
from absl import logging

from easyhard_jax.storage import files
from easyhard_jax import fingerprint as fingerprint_lib
from easyhard_jax.storage import record_manifest

FIELDS = ('correct', 'loss', 'margin', 'p_true', 'el2n', 'pred')
SPLITS = ('train', 'test')
SOURCES = ('probe', 'fused')
_VERSION = 1
_CHUNK_NAME = re.compile(r'(probe|fused)_(train|test)_(\d{4})\.npz')


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
    pred: int16 [M, P, N]; the predicted class (arg-max logit); -1 where
      unknown: an example a fused epoch did not present, or chunks written
      before predictions were recorded. Last, with a default, so
      constructions by keyword that predate it still work.
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
  pred: np.ndarray | None = None

  @property
  def num_members(self) -> int:
    return self.correct.shape[0]

  @property
  def archs(self) -> list[str]:
    """Architecture of each member, in member order."""
    return [m['arch'] for m in self.members]


def records_dir(workdir: str) -> str:
  return os.path.join(workdir, 'records')


REPAIR = ('rerun --mode=records with the same config and --workdir: it '
          'rebuilds what is damaged or missing')


def _empty_manifest() -> dict[str, Any]:
  return {'version': _VERSION, 'archs': {}, 'arch_order': []}


def read_manifest(workdir: str) -> dict[str, Any]:
  """Returns the records manifest, or an empty one when none exists yet."""
  path = os.path.join(records_dir(workdir), 'manifest.json')
  if not files.exists(path):
    return _empty_manifest()
  manifest = files.read_json(path, REPAIR + '.')
  error = record_manifest.structure_error(manifest)
  if error:
    raise ValueError(f'{path} is damaged (not a records manifest: {error}). '
                     f'To fix: {REPAIR}.')
  return manifest


def arch_complete(manifest: Mapping[str, Any], arch: str, root: str) -> bool:
  """``arch`` finished, and every chunk it finished with is registered.

  A manifest that says complete but lost chunk entries (or whose chunk
  files are gone) is not complete: --mode=records records them again.
  """
  entry = manifest['archs'].get(arch)
  if not (entry and entry.get('complete')):
    return False
  missing = record_manifest.missing_chunks(entry, os.path.join(root, arch))
  if missing:
    logging.warning('Records of %r in %s are marked complete but lack %s; '
                    'treating them as unfinished.', arch, root,
                    ', '.join(missing[:5]))
  return not missing


def read_chunk(path: str) -> dict[str, np.ndarray]:
  """Every array of one chunk (reading each checks the zip CRC)."""
  try:
    with np.load(files.readable(path), allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f'Record chunk {path} is unreadable ({e}). To fix: '
                     f'{REPAIR}.') from e


class RecordWriter:
  """Writes records for one study workdir.

  With ``enabled=False`` (every process but 0 of a multi-process run) it keeps
  the manifest in memory, so the same calls work, and writes nothing. A
  damaged manifest is set aside (``manifest.damaged.json``) and rebuilt from
  the chunk files, which carry their step and fingerprint hash.
  """

  def __init__(self, workdir: str, enabled: bool | None = None):
    if enabled is None:
      import jax  # Only the writer needs JAX; loading records does not.
      enabled = jax.process_index() == 0
    self.enabled = enabled
    self.workdir = workdir
    self.root = records_dir(workdir)
    if enabled:
      files.makedirs(self.root)
    try:
      self.manifest = read_manifest(workdir)
    except ValueError as e:
      logging.warning('%s Rebuilding the manifest from the chunk files.', e)
      path = os.path.join(self.root, 'manifest.json')
      if enabled:
        files.rename(path, os.path.join(self.root, 'manifest.damaged.json'))
      self.manifest = _empty_manifest()

  def _flush_manifest(self) -> None:
    if self.enabled:
      files.atomic_write_json(os.path.join(self.root, 'manifest.json'),
                              self.manifest)

  def write_split_metadata(self, split: str, labels: np.ndarray,
                           tfds_ids: Sequence[str] | None) -> None:
    """Stores the labels (and TFDS ids) of a split, checking prior runs agree.

    Each file is checked on its own, so a run killed between the two (or a
    damaged one) is repaired here.
    """
    labels = np.asarray(labels, np.int32)
    path = os.path.join(self.root, f'labels_{split}.npy')
    ids_path = os.path.join(self.root, f'ids_{split}.json')
    old = None  # Checked on every process, so each stops with this error.
    if files.exists(path):
      try:
        old = np.load(files.readable(path), allow_pickle=False)
      except (OSError, ValueError) as e:
        logging.warning('Rewriting damaged %s (%s).', path, e)
    if old is not None:
      if old.shape != labels.shape or not np.array_equal(old, labels):
        raise ValueError(
            f'The {split} labels in {path} differ from the dataset being '
            'trained now: this workdir holds records of another dataset or '
            'config. Use a fresh --workdir.')
    if not self.enabled:
      return
    if old is None:
      files.atomic_save_npy(path, labels)
    ids = None if tfds_ids is None else list(map(str, tfds_ids))
    try:
      with files.open_file(ids_path) as f:
        ids_ok = json.load(f) == ids
    except (OSError, ValueError):
      ids_ok = False
    if not ids_ok:
      files.atomic_write_json(ids_path, ids)
    if self.manifest.setdefault('num_examples', {}).get(split) != int(
        labels.shape[0]):
      self.manifest['num_examples'][split] = int(labels.shape[0])
      self._flush_manifest()

  def begin_arch(self, arch: str, members: Sequence[Mapping[str, Any]],
                 steps_per_epoch: int, probe_steps: Sequence[int],
                 fingerprint: Mapping[str, Any]) -> None:
    """Registers a member group, or checks a registered one matches.

    A mismatch raises (see fingerprint.check_match), except after a
    divergence, when only the recovery fields (learning rate, clipping) may
    change: the change is kept in the entry's ``amendments``.
    """
    entry = self.manifest['archs'].get(arch)
    new = {'members': [dict(m) for m in members],
           'steps_per_epoch': int(steps_per_epoch),
           'schedule': [int(s) for s in probe_steps],
           'fingerprint': dict(fingerprint)}
    if entry is not None:
      self.check_fingerprint(arch, fingerprint)
      where, remove = self._where(arch)
      for key in ('members', 'steps_per_epoch', 'schedule'):
        if entry[key] != new[key]:
          raise ValueError(f'{where} were made with a different {key} '
                           f'({entry[key]} vs {new[key]}). Use a fresh '
                           f'--workdir or remove {remove}.')
      return
    new.update({'chunks': self._adopt_chunks(arch, fingerprint['hash']),
                'complete': False})
    self.manifest['archs'][arch] = new
    if arch not in self.manifest['arch_order']:
      self.manifest['arch_order'].append(arch)
    self._flush_manifest()

  def _where(self, arch: str) -> tuple[str, str]:
    """(what the records are, what to remove to record them afresh)."""
    ckpt = os.path.join(self.workdir, 'checkpoints', arch)
    kept = os.path.join(self.workdir, 'analysis_checkpoints', arch)
    return (f'Records of {arch!r} in {self.root}',
            f'{os.path.join(self.root, arch)}, {ckpt} and {kept} (and '
            f'delete "{arch}" from {self.root}/manifest.json, or remove '
            f'the whole {self.root})')

  def check_fingerprint(self, arch: str, fingerprint: Mapping[str, Any]
                        ) -> None:
    """Raises listing each differing field unless ``arch`` matches.

    After a divergence only the recovery fields (learning rate, schedule,
    clipping) may change; the change is kept in the entry's ``amendments``
    and the records resume from the last finite checkpoint.
    """
    entry = self.manifest['archs'][arch]
    stored = entry.get('fingerprint')
    diff = fingerprint_lib.differences(
        (stored or {}).get('fields', {}), fingerprint['fields'])
    if (entry.get('diverged') and stored and diff and
        set(diff) <= set(fingerprint_lib.RECOVERY_FIELDS)):
      logging.warning('%s: resuming after divergence with %s.', arch,
                      fingerprint_lib.describe(diff))
      entry.setdefault('amendments', []).append(
          {'after_step': entry['diverged']['step'],
           'changed': {k: list(v) for k, v in diff.items()}})
      entry['fingerprint'] = dict(fingerprint)
      entry.pop('diverged')
      self._flush_manifest()
    if fingerprint_lib.adopts_legacy(stored, fingerprint):
      entry['fingerprint'] = dict(fingerprint)
      self._flush_manifest()
    fingerprint_lib.check_match(entry.get('fingerprint'), fingerprint,
                                *self._where(arch))

  def _adopt_chunks(self, arch: str, hash_: str) -> dict[str, Any]:
    """Chunks on disk of this fingerprint (a manifest rebuilt after damage)."""
    chunks: dict[str, Any] = {}
    directory = os.path.join(self.root, arch)
    if not files.isdir(directory):
      return chunks
    for name in sorted(files.listdir(directory)):
      m = _CHUNK_NAME.fullmatch(name)
      if not m:
        continue
      try:
        z = read_chunk(os.path.join(directory, name))
      except ValueError:
        continue
      if str(z.get('fingerprint', '')) != hash_ or 'step' not in z:
        continue
      chunks.setdefault(f'{m[1]}_{m[2]}', {})[str(int(m[3]))] = {
          'file': name, 'step': int(z['step'])}
    if chunks:
      logging.info('%s: adopted %d chunk files from disk.', arch,
                   sum(map(len, chunks.values())))
    return chunks

  def write_chunk(self, arch: str, source: str, split: str, index: int,
                  step: int, arrays: Mapping[str, np.ndarray]) -> None:
    """Appends one probe's (or one epoch's) [members, examples] arrays.

    The chunk also stores its step and its group's fingerprint hash, so a
    damaged manifest can be rebuilt from the files.
    """
    if source not in SOURCES or split not in SPLITS:
      raise ValueError(f'bad source/split {source!r}/{split!r}')
    name = f'{source}_{split}_{index:04d}.npz'
    entry = self.manifest['archs'][arch]
    if self.enabled:
      payload = {k: np.asarray(v) for k, v in arrays.items()}
      if 'pred' in payload:  # Class indices: int16 on disk (-1 = unseen).
        pred = payload['pred']
        if pred.size and int(pred.max()) > np.iinfo(np.int16).max:
          raise ValueError(f'pred holds class {int(pred.max())}, beyond '
                           'int16; records store classes below 32768.')
        payload['pred'] = pred.astype(np.int16)
      payload['step'] = np.int64(step)
      payload['fingerprint'] = np.array(entry['fingerprint']['hash'])
      files.atomic_savez(os.path.join(self.root, arch, name), payload)
    chunks = entry['chunks'].setdefault(f'{source}_{split}', {})
    chunks[str(index)] = {'file': name, 'step': int(step)}
    self._flush_manifest()

  def damaged_chunks(self, arch: str) -> list[tuple[str, int, int]]:
    """(key, index, step) of registered chunks that cannot be read in full."""
    bad = []
    for key, chunks in self.manifest['archs'][arch]['chunks'].items():
      for index, c in chunks.items():
        try:
          read_chunk(os.path.join(self.root, arch, c['file']))
        except ValueError as e:
          logging.warning('%s', e)
          bad.append((key, int(index), int(c['step'])))
    return bad

  def forget_chunks(self, arch: str, from_step: int) -> None:
    """Unregisters chunks at or after ``from_step``: they will be rewritten."""
    entry = self.manifest['archs'][arch]
    for chunks in entry['chunks'].values():
      for index in [i for i, c in chunks.items() if c['step'] >= from_step]:
        del chunks[index]
    entry['complete'] = False
    self._flush_manifest()

  def mark_diverged(self, arch: str, step: int, member: str) -> None:
    self.manifest['archs'][arch]['diverged'] = {'step': int(step),
                                                'member': member}
    self._flush_manifest()

  def finish_arch(self, arch: str) -> None:
    entry = self.manifest['archs'][arch]
    entry['complete'] = True
    entry['chunk_keys'] = sorted(k for k, c in entry['chunks'].items() if c)
    self._flush_manifest()

  def is_complete(self, arch: str) -> bool:
    return arch_complete(self.manifest, arch, self.root)


def _load_labels(root: str, split: str) -> tuple[np.ndarray, list[str] | None]:
  path = os.path.join(root, f'labels_{split}.npy')
  if not files.exists(path):
    raise FileNotFoundError(
        f'No {split} records in {root}: run --mode=records first.')
  ids_path = os.path.join(root, f'ids_{split}.json')
  try:
    labels = np.load(files.readable(path), allow_pickle=False)
    with files.open_file(ids_path) as f:
      ids = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f'The {split} metadata in {root} is missing or damaged '
                     f'({e}). To fix: {REPAIR}.') from e
  if ids is not None and len(ids) != labels.shape[0]:
    raise ValueError(f'{ids_path} holds {len(ids)} ids for {labels.shape[0]} '
                     f'labels. To fix: {REPAIR}.')
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
    unfinished = [a for a in names
                  if not arch_complete(manifest, a, root)]
    if archs is not None and unfinished:
      raise FileNotFoundError(
          f'Records of {unfinished} in {root} are not complete: run '
          '--mode=records (it resumes where it stopped).')
    names = [a for a in names if a not in unfinished]
  if not names:
    raise FileNotFoundError(
        f'No finished architecture has records in {root}: let --mode=records '
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
      z = read_chunk(os.path.join(root, a, c['file']))
      for f in FIELDS:
        # Chunks older than a field: NaN (el2n of fused records), or -1
        # for pred (written before predictions were recorded).
        per_field[f].append(z[f] if f in z else np.full(
            z['loss'].shape, *((-1, np.int16) if f == 'pred' else
                               (np.nan, np.float32))))
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
      source=source,
      pred=np.concatenate(out['pred']).astype(np.int16))
