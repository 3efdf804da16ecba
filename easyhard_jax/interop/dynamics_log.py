"""DynamicsLog: per-example learning dynamics from any training loop.

numpy only (no JAX). A PyTorch, TensorFlow or plain-numpy loop calls::

    log = DynamicsLog(workdir, train_labels, test_labels=test_labels,
                      members=['resnet18/s0', 'resnet18/s1'],
                      steps_per_epoch=len(train_loader))
    log.log('resnet18/s0', step, example_index, logits)   # each train batch
    log.probe('resnet18/s0', step, logits, split='test')  # a full-split eval
    log.close()

and the workdir then holds the records contract of ``records.py`` (the same
manifest, chunk files, fingerprints and atomic writes), so ``--mode=analysis``,
``--mode=report`` and ``--mode=compare`` run on it unchanged.

* ``log`` takes the training pass of one batch: its stable example indices
  (0..N-1 in the dataset's canonical order, never batch positions) and their
  logits (or ``loss``/``correct``/``pred``/``margin`` when logits are too
  big). ``step`` is the global optimizer step of the batch, 0-based; epoch =
  step // steps_per_epoch. Each epoch becomes one ``fused`` chunk, as the
  trainer's fused statistics do (an example seen twice keeps the last).
* ``probe`` takes an eval-mode pass (no augmentation) over a whole split at
  ``step`` = optimizer steps taken so far (0 = at initialisation), in one
  call or batch by batch; the easiness scores are computed from these.
  Probe every member at the same steps, the last one at the end of
  training: a group counts as complete when its last probe ends training.
* Members are declared up front (``'arch/name'`` strings or dicts with
  'name' and 'arch'); members of one architecture form one record group,
  like the trainer's. Members may train one after another or interleaved:
  each member's finished epoch or probe is staged as its own file under
  ``records/_staging`` and a chunk is written when every member of its
  group has delivered it, so memory holds at most one epoch buffer and one
  probe buffer per member being logged ([N] per field: about 24 MB per
  member for 1.28M examples), whatever the number of epochs.
* A killed loop loses only the unfinished epoch and probe in memory; a new
  ``DynamicsLog`` with the same arguments resumes after what is on disk.

Records written here carry ``origin = 'dynamics_log'`` in their fingerprint
(see origin.py): the stages that retrain with this tool refuse them.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Sequence

import numpy as np

from easyhard_jax.storage import files
from easyhard_jax import fingerprint as fingerprint_lib
from easyhard_jax.storage import records
from easyhard_jax.interop import origin
from easyhard_jax.interop import per_example

FUSED_FIELDS = ('loss', 'correct', 'margin', 'p_true', 'pred')  # As trained.
_PIECE = re.compile(r'(probe|fused)_(train|test)_([es])(\d+)\.m(\d+)\.npz')


def _member_dicts(members: Sequence[Any]) -> list[dict[str, Any]]:
  out, seeds = [], {}
  for m in members:
    m = dict(m) if isinstance(m, Mapping) else {'name': str(m)}
    if 'name' not in m:
      raise ValueError(f'A member dict needs a "name": {m}.')
    m['name'] = str(m['name'])
    m.setdefault('arch', m['name'].split('/')[0])
    if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]*', str(m['arch'])):
      raise ValueError(f'Member {m["name"]!r}: its architecture '
                       f'{m["arch"]!r} becomes a directory name; use letters,'
                       ' digits, _ . - (e.g. "resnet18/s0").')
    m.setdefault('seed', seeds.get(m['arch'], 0))
    seeds[m['arch']] = seeds.get(m['arch'], 0) + 1
    m['origin'] = origin.ORIGIN
    out.append(files.to_jsonable(m))
  names = [m['name'] for m in out]
  if not out or len(set(names)) != len(names):
    raise ValueError(f'members must be distinct names, got {names}.')
  return out


def probs_path(workdir: str, arch: str, pos: int, split: str) -> str:
  """Where a member's latest probe probabilities are kept (keep_probs)."""
  return os.path.join(records.records_dir(workdir), 'probs',
                      f'{arch}.m{pos:03d}_{split}.npz')


def _empty(n: int, fields: Sequence[str]) -> dict[str, np.ndarray]:
  fill = {'correct': (False, bool), 'pred': (-1, np.int16)}
  return {f: np.full((n,), *fill.get(f, (np.nan, np.float32)))
          for f in fields}


class DynamicsLog:
  """Writes the records of your own training (see the module docstring).

  Args:
    workdir: the study workdir (records go to ``WORKDIR/records``); held
      locked (``WORKDIR/.lock``) until :meth:`close`.
    labels: int [N] train labels in the stable example order.
    members: the members' names (``'arch/anything'``) or dicts ('name',
      'arch', optional 'seed' and your own JSON fields).
    steps_per_epoch: optimizer steps per epoch (probe epochs = step / this).
    test_labels: int [N_test] test labels, to probe the test split.
    ids: optional N TFDS ids (or your own string ids) of the train split.
    test_ids: the same for the test split.
    num_classes: logits' width (default: the largest label + 1).
    meta: a JSON-able dict describing the run (optimizer, epochs, ...); kept
      in the fingerprint, so a reopened log must pass the same.
    keep_probs: also keep each member's softmax probabilities [N, C] of its
      latest complete probe given as logits (``records/probs/``), for the
      cleanlab export; costs N x C floats per member on disk and in memory.
  """

  def __init__(self, workdir: str, labels: Any, *, members: Sequence[Any],
               steps_per_epoch: int, test_labels: Any = None,
               ids: Sequence[str] | None = None,
               test_ids: Sequence[str] | None = None,
               num_classes: int | None = None,
               meta: Mapping[str, Any] | None = None,
               keep_probs: bool = False):
    if isinstance(steps_per_epoch, bool) or int(steps_per_epoch) < 1:
      raise ValueError(f'steps_per_epoch must be >= 1, got '
                       f'{steps_per_epoch!r}.')
    self.workdir = workdir
    self.spe = int(steps_per_epoch)
    self.keep_probs = bool(keep_probs)
    self.labels = {'train': self._check_labels(labels, 'labels')}
    if test_labels is not None:
      self.labels['test'] = self._check_labels(test_labels, 'test_labels')
    top = max(int(y.max(initial=-1)) for y in self.labels.values()) + 1
    self.num_classes = int(num_classes or top)
    if self.num_classes < top:
      raise ValueError(f'num_classes={num_classes} but a label is {top - 1}.')
    self.members = _member_dicts(members)
    self._where = {}  # name -> (arch, position in its group)
    self.groups: dict[str, list[dict[str, Any]]] = {}
    for m in self.members:
      group = self.groups.setdefault(m['arch'], [])
      self._where[m['name']] = (m['arch'], len(group))
      group.append(m)
    self.root = records.records_dir(workdir)
    self._lock = files.WorkdirLock(workdir).acquire()
    try:
      files.clear_stale_temp(workdir)
      self._check_sizes()
      self.writer = records.RecordWriter(workdir, enabled=True)
      self.writer.write_split_metadata('train', self.labels['train'], ids)
      if 'test' in self.labels:
        self.writer.write_split_metadata('test', self.labels['test'],
                                         test_ids)
      for arch, group in self.groups.items():
        fields = {'origin': origin.ORIGIN, 'arch': arch,
                  'members': fingerprint_lib.digest(group),
                  'steps_per_epoch': self.spe,
                  'num_classes': self.num_classes,
                  'num_examples': {s: int(y.size)
                                   for s, y in self.labels.items()},
                  'meta': files.to_jsonable(dict(meta or {}))}
        old = self.writer.manifest['archs'].get(arch, {})
        self.writer.begin_arch(
            arch, group, self.spe, old.get('schedule', []),
            {'fields': fields, 'hash': fingerprint_lib.digest(fields)})
    except BaseException:
      self._lock.release()
      raise
    self._fused: dict[str, dict[str, Any]] = {}
    self._probes: dict[tuple[str, str], dict[str, Any]] = {}
    self._closed = False

  # ------------------------------------------------------------- checks

  @staticmethod
  def _check_labels(labels: Any, what: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or not y.size or not np.issubdtype(y.dtype, np.integer):
      raise ValueError(f'{what} must be a non-empty 1-D integer array, got '
                       f'shape {y.shape} dtype {y.dtype}.')
    if y.min() < 0:
      raise ValueError(f'{what} holds a negative class ({int(y.min())}).')
    return y.astype(np.int32)

  def _check_sizes(self) -> None:
    for split, y in self.labels.items():
      path = os.path.join(self.root, f'labels_{split}.npy')
      if not files.exists(path):
        continue
      try:
        old = files.np_load(path, mmap_mode='r').shape[0]
      except (OSError, ValueError):
        continue  # Damaged: RecordWriter rewrites it.
      if old != y.size:
        raise ValueError(
            f'{self.workdir} holds records of a {split} split of {old} '
            f'examples, but this DynamicsLog was given {y.size} {split} '
            'labels. A changed split size is another dataset or subset: use '
            'a fresh workdir (or the full split, indexed 0..N-1).')

  def _check_open(self, member: str) -> tuple[str, int]:
    if self._closed:
      raise RuntimeError('This DynamicsLog is closed; open a new one on the '
                         'same workdir to continue.')
    if member not in self._where:
      raise KeyError(f'Unknown member {member!r}; declared: '
                     f'{list(self._where)}.')
    return self._where[member]

  @staticmethod
  def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not np.issubdtype(type(step), np.integer) \
        or int(step) < 0:
      raise ValueError(f'step must be an integer >= 0, got {step!r}.')
    return int(step)

  def _check_index(self, index: Any, split: str) -> np.ndarray:
    idx = np.asarray(index)
    n = self.labels[split].size
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
      raise ValueError(f'example_index must be a 1-D integer array (the '
                       f'stable indices of the batch), got shape {idx.shape} '
                       f'dtype {idx.dtype}.')
    bad = (idx < 0) | (idx >= n)
    if bad.any():
      raise IndexError(f'example_index {int(idx[bad][0])} is outside the '
                       f'{split} split (0..{n - 1}); indices are the stable '
                       'dataset indices, not positions in the batch.')
    return idx.astype(np.int64)

  def _stats(self, split: str, idx: np.ndarray, logits: Any,
             fields: Mapping[str, Any], step: int, member: str
             ) -> dict[str, np.ndarray]:
    y = self.labels[split][idx]
    if logits is None:
      return per_example.from_fields(y, idx.size, **fields)
    if fields:
      raise ValueError(f'Give logits or {sorted(fields)}, not both.')
    z = np.asarray(logits)
    if z.shape != (idx.size, self.num_classes):
      raise ValueError(f'logits have shape {z.shape}; expected (batch='
                       f'{idx.size}, num_classes={self.num_classes}).')
    if not np.isfinite(z).all():
      raise FloatingPointError(f'Non-finite logits of {member} at step '
                               f'{step}: the run diverged.')
    return per_example.from_logits(z, y)

  # ----------------------------------------------------------- staging

  def _staging(self, arch: str) -> str:
    return os.path.join(self.root, '_staging', arch)

  def _piece(self, arch: str, pos: int, source: str, split: str,
             key: str) -> str:
    return os.path.join(self._staging(arch),
                        f'{source}_{split}_{key}.m{pos:03d}.npz')

  def _recorded(self, member: str, source: str, split: str) -> set[int]:
    """Epochs (fused) or steps (probe) of ``member`` already on disk."""
    arch, pos = self._where[member]
    entry = self.writer.manifest['archs'][arch]
    chunks = entry['chunks'].get(f'{source}_{split}', {})
    done = {int(k) if source == 'fused' else int(c['step'])
            for k, c in chunks.items()}
    if files.isdir(self._staging(arch)):
      for name in files.listdir(self._staging(arch)):
        m = _PIECE.fullmatch(name)
        if m and (m[1], m[2], int(m[5])) == (source, split, pos):
          done.add(int(m[4]))
    return done

  def _stage(self, member: str, source: str, split: str, key: int,
             step: int, arrays: Mapping[str, np.ndarray]) -> None:
    arch, pos = self._where[member]
    tag = f'{"e" if source == "fused" else "s"}{key:010d}'
    files.atomic_savez(self._piece(arch, pos, source, split, tag),
                       {**arrays, 'step': np.int64(step)})
    self._assemble(arch, source, split, tag)

  def _assemble(self, arch: str, source: str, split: str, tag: str) -> None:
    """Writes the chunk once every member of ``arch`` has staged it."""
    group = self.groups[arch]
    paths = [self._piece(arch, j, source, split, tag)
             for j in range(len(group))]
    if not all(files.exists(p) for p in paths):
      return
    pieces = [records.read_chunk(p) for p in paths]
    step = max(int(p['step']) for p in pieces)
    entry = self.writer.manifest['archs'][arch]
    if source == 'fused':
      index = int(tag[1:])
    else:
      schedule = entry['schedule']
      if step in schedule:
        index = schedule.index(step)
      elif schedule and step < schedule[-1]:
        raise ValueError(
            f'{arch}: a {split} probe at step {step} after probes up to step '
            f'{schedule[-1]}: the members of a group (and the train and test '
            'splits) share one probe schedule, in increasing steps.')
      else:
        schedule.append(step)
        index = len(schedule) - 1
    fields = [f for f in pieces[0] if f != 'step']
    self.writer.write_chunk(arch, source, split, index, step,
                            {f: np.stack([p[f] for p in pieces])
                             for f in fields})
    if entry.get('complete'):  # More was logged after a close.
      entry['complete'] = False
    for p in paths:
      files.remove(p)

  # --------------------------------------------------------------- API

  def log(self, member: str, step: int, example_index: Any,
          logits: Any = None, **fields: Any) -> None:
    """Records one training batch of ``member``.

    Args:
      member: a declared member name.
      step: the global optimizer step of this batch (0-based).
      example_index: int [B], the batch's stable example indices.
      logits: float [B, num_classes] of the training forward pass; or leave
        it out and pass ``loss=``, ``correct=``, ``pred=``, ``margin=``,
        ``p_true=`` ([B] each; at least correct or pred).
    """
    self._check_open(member)
    step = self._check_step(step)
    idx = self._check_index(example_index, 'train')
    stats = self._stats('train', idx, logits, fields, step, member)
    epoch = step // self.spe
    state = self._fused.get(member)
    if state is not None and epoch < state['epoch']:
      raise ValueError(f'{member}: step {step} (epoch {epoch}) after a step '
                       f'of epoch {state["epoch"]}; steps only go forward.')
    if state is not None and epoch > state['epoch']:
      self._flush_epoch(member)
      state = None
    if state is None:
      if epoch in self._recorded(member, 'fused', 'train'):
        raise ValueError(f'{member}: epoch {epoch} is already recorded in '
                         f'{self.root}; a resumed loop continues with the '
                         'next epoch.')
      state = self._fused[member] = {
          'epoch': epoch, 'last': step,
          'buf': _empty(self.labels['train'].size, FUSED_FIELDS)}
    state['last'] = max(state['last'], step)
    for f in FUSED_FIELDS:
      state['buf'][f][idx] = stats[f]

  def _flush_epoch(self, member: str) -> None:
    state = self._fused.pop(member, None)
    if state is None:
      return
    end = min((state['epoch'] + 1) * self.spe, state['last'] + 1)
    self._stage(member, 'fused', 'train', state['epoch'], end, state['buf'])

  def probe(self, member: str, step: int, logits: Any = None, *,
            split: str = 'train', example_index: Any = None,
            **fields: Any) -> None:
    """Records an eval-mode pass of ``member`` over a split.

    Give the whole split at once (``example_index`` may then be left out:
    rows are examples 0..N-1) or batch by batch; the probe is stored when
    every example of the split has been given.

    Args:
      member: a declared member name.
      step: optimizer steps taken so far (0 = before training).
      logits: float [B, num_classes] (or the fields, as in :meth:`log`).
      split: 'train' or 'test' (test needs ``test_labels``).
      example_index: int [B] stable indices; default: 0..B-1 with B = N.
    """
    self._check_open(member)
    step = self._check_step(step)
    if split not in self.labels:
      raise ValueError(f'split {split!r}: this log has labels for '
                       f'{sorted(self.labels)} (pass test_labels= to probe '
                       'the test split).')
    n = self.labels[split].size
    if example_index is None:
      rows = np.asarray(logits if logits is not None else
                        next(iter(fields.values()), np.zeros(0))).shape[0]
      if rows != n:
        raise ValueError(f'A probe without example_index must cover the '
                         f'whole {split} split ({n} rows), got {rows}.')
      example_index = np.arange(n)
    idx = self._check_index(example_index, split)
    stats = self._stats(split, idx, logits, fields, step, member)
    state = self._fused.get(member)
    if state is not None and step >= (state['epoch'] + 1) * self.spe:
      self._flush_epoch(member)  # The epoch ended before this probe.
    key = (member, split)
    open_probe = self._probes.get(key)
    if open_probe is not None and open_probe['step'] != step:
      raise ValueError(
          f'{member}: the {split} probe at step {open_probe["step"]} covers '
          f'{int(open_probe["seen"].sum())} of {n} examples; finish it '
          f'before probing at step {step}.')
    if open_probe is None:
      done = self._recorded(member, 'probe', split)
      if done and step <= max(done):
        raise ValueError(f'{member}: a {split} probe at step {step}, but '
                         f'probes up to step {max(done)} are recorded; '
                         'probe steps only go forward.')
      open_probe = self._probes[key] = {
          'step': step, 'seen': np.zeros(n, bool),
          'buf': _empty(n, per_example.FIELDS)}
    for f in per_example.FIELDS:
      open_probe['buf'][f][idx] = stats[f]
    open_probe['seen'][idx] = True
    if self.keep_probs and logits is not None:
      probs = open_probe.setdefault(
          'probs', np.full((n, self.num_classes), np.nan, np.float32))
      z = np.asarray(logits, np.float64)
      z = np.exp(z - z.max(axis=1, keepdims=True))
      probs[idx] = z / z.sum(axis=1, keepdims=True)
    if open_probe['seen'].all():
      del self._probes[key]
      self._stage(member, 'probe', split, step, step, open_probe['buf'])
      if 'probs' in open_probe:
        arch, pos = self._where[member]
        files.atomic_savez(probs_path(self.workdir, arch, pos, split),
                           {'probs': open_probe['probs'],
                            'step': np.int64(step)})

  def close(self) -> dict[str, Any]:
    """Stores the last epochs, marks finished groups, releases the workdir.

    Returns:
      {'complete': groups whose every member delivered every chunk,
      'waiting': {group: members still to deliver staged chunks, or what
      the group lacks}}.

    Raises:
      ValueError: a probe was left incomplete (it is discarded).
    """
    if self._closed:
      return {}
    try:
      for member in list(self._fused):
        self._flush_epoch(member)
      partial = {k: int(v['seen'].sum()) for k, v in self._probes.items()}
      self._probes.clear()
      summary = {'complete': [], 'waiting': {}}
      for arch, group in self.groups.items():
        staged = (files.listdir(self._staging(arch))
                  if files.isdir(self._staging(arch)) else [])
        have = {}
        for name in staged:
          m = _PIECE.fullmatch(name)
          if m:
            have.setdefault(m[1] + m[2] + m[3] + m[4], set()).add(int(m[5]))
        missing = sorted({g['name'] for pos, g in enumerate(group)
                          for got in have.values() if pos not in got})
        if missing:
          summary['waiting'][arch] = missing
        elif self.writer.manifest['archs'][arch]['chunks']:
          self.writer.finish_arch(arch)
          if self.writer.is_complete(arch):
            summary['complete'].append(arch)
          else:  # records.py's check: the last probe ends training.
            summary['waiting'][arch] = [
                'a probe of every member at the end of training (at or '
                'after the last logged step + 1)']
      if partial:
        raise ValueError('Probes left incomplete (discarded): ' + '; '.join(
            f'{m} {s}: {c} of {self.labels[s].size} examples'
            for (m, s), c in partial.items()))
      return summary
    finally:
      self._closed = True
      self._lock.release()

  def __enter__(self) -> 'DynamicsLog':
    return self

  def __exit__(self, exc_type, *exc) -> None:
    if exc_type is None:
      self.close()
      return
    try:  # Keep what is finished; the loop's own error is the one to see.
      self.close()
    except ValueError:
      pass
