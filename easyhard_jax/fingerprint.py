"""Config fingerprints of records and stamps of every stage's outputs.

A workdir must hold what its config says. Each architecture's records carry
a *fingerprint*: the values of every config field that changes what is
recorded (data and subset, model and kwargs, width, optimizer and schedule,
augmentation, dtype, batch size, epochs, seeds, probe schedule), a digest of
the *content* of the files the data is read from (:func:`data_digest`: the
npz, IDX or CIFAR batch files, a label file) and a hash of them. A rerun
resumes or skips an architecture only when the fingerprints match; otherwise
:func:`check_match` raises naming each differing field.

Every later stage writes a *stamp* when it finishes: the hash of its own
config fields and of the stamps of the stages it reads. ``--mode=study``
trusts a stage's outputs only when the stamp on disk equals the stamp the
current config expects, so changing ``config.analysis.window`` reruns the
analysis and everything downstream of it, and a kill between two of a stage's
files (no stamp yet) reruns that stage. Files a stage reads (the comparison's
reference) count by content; the report's stamp holds the comparison's stamp
when a current one is on disk (OPTIONAL_INPUTS).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Sequence

from absl import logging

from easyhard_jax import config_fields
from easyhard_jax.storage import files

# Fields (dotted) that change what a study records; '{arch}' is filled in.
RECORD_FIELDS = (
    'dataset', 'data_dir', 'npz_path', 'fashion_mnist_dir', 'image_size',
    'num_classes', 'train_split', 'test_split', 'max_train_examples',
    'stream.enabled', 'stream.random_resized_crop', 'stream.crop_fraction',
    'stream.stats_examples', 'model_kwargs.{arch}', 'width', 'optimizer',
    'augment', 'batch_size', 'epochs', 'seed', 'seeds_per_arch', 'probe',
    'label_noise')
# Fields a rerun may change after a divergence: it then resumes from the
# last finite checkpoint instead of refusing the workdir.
RECOVERY_FIELDS = ('optimizer.learning_rate', 'optimizer.grad_clip_norm',
                   'optimizer.warmup_epochs', 'optimizer.decay_factor',
                   'optimizer.decay_epochs')

# Each later stage: its own config fields and the stages whose outputs it
# reads (the stamp covers theirs, so a change upstream reruns it).
STAGES = {
    'analysis': (('analysis', 'compression.fractions', 'report.max_classes'),
                ('records',)),
    'removal': (('removal',), ('analysis',)),
    'compression': (('compression',), ('analysis',)),
    'causes': (('causes',), ('analysis',)),
    # Not ('analysis',): an analysis change must not discard held-out members;
    # results.json keeps the analysis stamp its proxy judgement used. The
    # reference: results.json holds the comparison with it (members are
    # kept by their records' fingerprints, so only the estimate reruns).
    'heldout': (('heldout', 'reference'), ('records',)),
    'report': (('report',), ('analysis', 'removal', 'compression',
                             'causes')),
    'compare': (('reference',), ('analysis',)),
}
# Inputs a stage reads only when they exist ({stage: {input: its dir}}):
# the stamp holds the input's stamp when it is on disk and current, else
# None, so running --mode=compare later makes the study rebuild the report.
OPTIONAL_INPUTS = {'report': {'compare': 'compare'}}
# Config fields naming files whose content a stage's outputs depend on.
FILE_FIELDS = {'compare': ('reference.path',),
               'heldout': ('reference.path',)}
STAMP_NAME = 'stamp.json'
# A stamp names the stages it chains by the names they had when stamps were
# first written (before each stage took its directory's name): the hashes,
# and so every workdir stamped since, stay current across the rename.
STAMP_KEYS = {'records': 'record', 'analysis': 'analyze', 'removal': 'remove',
              'compression': 'compress', 'causes': 'probe_causes'}


def _plain(value: Any) -> Any:
  """A JSON-ready copy (ConfigDicts to dicts, tuples to lists)."""
  if hasattr(value, 'to_dict'):
    value = value.to_dict()
  return json.loads(json.dumps(value, sort_keys=True, default=str))


def flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  """{'a.b': leaf} for nested dicts; lists and scalars are leaves."""
  if isinstance(tree, dict) and tree:
    out = {}
    for k in sorted(tree):
      out.update(flatten(tree[k], f'{prefix}.{k}' if prefix else str(k)))
    return out
  return {prefix: tree}


def digest(obj: Any) -> str:
  """Short sha256 of the canonical JSON of ``obj``."""
  text = json.dumps(obj, sort_keys=True, separators=(',', ':'), default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def field_values(config, fields: Sequence[str], **fmt) -> dict[str, Any]:
  """Flattened {dotted field: value} of ``fields`` of ``config``."""
  out = {}
  for field in fields:
    name = field.format(**fmt)
    out.update(flatten(_plain(config_fields.get(config, name)), name))
  return out


# sha256 of files by (real path, size, mtime): a 170 MB CIFAR-10 directory
# is read once per process, however many fingerprints are taken.
_FILE_HASHES: dict[tuple[str, int, int], str] = {}
DATA_FIELD = 'data_sha256'


def file_sha256(path: str) -> str:
  """The sha256 hex digest of a file's content (streamed, cached)."""
  st = os.stat(path)
  key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
  if key not in _FILE_HASHES:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
      for block in iter(lambda: f.read(1 << 20), b''):
        h.update(block)
    _FILE_HASHES[key] = h.hexdigest()
  return _FILE_HASHES[key]


def _data_files(config) -> list[str]:
  # pylint: disable-next=g-import-not-at-top
  from easyhard_jax.data import sources
  listed = getattr(sources, 'data_files', None)
  if listed is not None:
    return list(listed(config))
  # Until every source lists its files: the npz, the one file-backed source.
  path = config.get('npz_path') if config.get('dataset') == 'npz' else ''
  return [path] if path else []


def data_digest(config) -> str | None:
  """A digest of the content of the files the config's data is read from.

  None for data with no local files (embedded digits, TFDS-prepared data,
  whose builders check their own files). A file that cannot be read counts
  as 'missing' (loading the data then names it).
  """
  paths = _data_files(config)
  if not paths:
    return None
  contents = []
  for path in paths:
    try:
      contents.append([os.path.basename(path), file_sha256(path)])
    except OSError:
      contents.append([os.path.basename(path), 'missing'])
  return digest(contents)


def record_fingerprint(config, arch: str, *, dtype: str,
                       members: Sequence[Mapping[str, Any]],
                       subset: str = 'all',
                       total_steps: int | None = None) -> dict[str, Any]:
  """{'fields': {...}, 'hash': str} of one member group's records.

  Args:
    config: the study (or experiment variant) config.
    arch: the architecture (registry name).
    dtype: the resolved compute dtype name ('auto' depends on the backend).
    members: the group's member dicts (seed, stream, strategy, ...).
    subset: a digest of the subset masks ('all' for the full data).
    total_steps: the training length when not ``epochs`` epochs.
  """
  fields = field_values(config, RECORD_FIELDS, arch=arch)
  if not config_fields.get(config, 'label_noise.fraction'):
    # No label noise: the same hash as records made before the field.
    fields = {k: v for k, v in fields.items()
              if not k.startswith('label_noise')}
  data = data_digest(config)
  if data is not None:  # Embedded data: the same hash as before the field.
    fields[DATA_FIELD] = data
  fields.update({'arch': arch, 'dtype': dtype, 'subset': subset,
                 'total_steps': total_steps,
                 'members': digest([dict(m) for m in members])})
  return {'fields': fields, 'hash': digest(fields)}


def differences(old: Mapping[str, Any],
                new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
  """{field: (old, new)} for every field whose value differs."""
  return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
          if old.get(k) != new.get(k)}


def describe(diff: Mapping[str, tuple[Any, Any]]) -> str:
  return '; '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in diff.items())


def adopts_legacy(stored: Mapping[str, Any] | None,
                  new: Mapping[str, Any]) -> bool:
  """True when ``stored`` predates the data hash and matches otherwise.

  Records made before the data's content was fingerprinted carry no
  ``data_sha256``; they are adopted once with the current data's hash (a
  warning says it could not be checked) instead of being refused.
  """
  if not stored or DATA_FIELD in stored.get('fields', {}):
    return False
  diff = differences(stored.get('fields', {}), new['fields'])
  if set(diff) != {DATA_FIELD}:
    return False
  logging.warning(
      'Records made before data files were fingerprinted: adopting them with '
      'the current data (content hash %s); that the data is unchanged since '
      'they were made cannot be checked.', new['fields'][DATA_FIELD])
  return True


def check_match(stored: Mapping[str, Any] | None, new: Mapping[str, Any],
                what: str, remove_hint: str) -> None:
  """Raises ValueError listing each differing field, unless the hashes match.

  Args:
    stored: the fingerprint on disk (None: records made before fingerprints).
    new: the fingerprint of the current config.
    what: e.g. "Records of 'cnn' in /w/records".
    remove_hint: the path whose removal lets the new config record afresh.
  """
  if stored is not None and stored.get('hash') == new['hash']:
    return
  diff = (differences(stored.get('fields', {}), new['fields'])
          if stored is not None else {})
  detail = (describe(diff) if diff else
            'they carry no fingerprint (made by an older version)')
  raise ValueError(
      f'{what} were made with another config: {detail}. Either use a new '
      f'--workdir for the new config, or remove {remove_hint} to record this '
      'architecture again with it (or restore the old config values).')


def _file_digest(path: str) -> str | None:
  if not path:
    return None
  try:
    return file_sha256(os.path.expanduser(path))
  except OSError:
    return 'missing'


def current_stamp(config, stage: str, record_hashes: Mapping[str, str],
                  workdir: str, stage_dir: str) -> str | None:
  """The hash of ``stage``'s stamp on disk when it is current, else None.

  Current: the expected stamp; or, when this config names none of the
  stage's files (no config.reference.path: a study run after
  ``--mode=compare --config.reference.path=...``), a stamp made from the
  current inputs with whatever own values that run had.
  """
  stored = read_stamp(workdir, stage_dir)
  if not stored:
    return None
  want = expected_stamp(config, stage, record_hashes, workdir)
  if stored.get('hash') == want['hash']:
    return want['hash']
  names_files = any(config_fields.get(config, name)
                    for name in FILE_FIELDS.get(stage, ()))
  if not names_files and stored.get('inputs') == want['inputs']:
    return stored.get('hash')
  return None


def expected_stamp(config, stage: str, record_hashes: Mapping[str, str],
                   workdir: str | None = None) -> dict[str, Any]:
  """The stamp the current config expects of ``stage``'s outputs.

  ``record_hashes`` are the record fingerprints of the config's archs (the
  record stage's "stamp"); later stages chain their inputs' stamps. Files a
  stage reads (FILE_FIELDS) count by content. With ``workdir``, optional
  inputs (OPTIONAL_INPUTS) count by the current stamp on disk.
  """
  if stage == 'records':
    return {'hash': digest(sorted(record_hashes.items())),
            'fields': dict(record_hashes)}
  own, inputs = STAGES[stage]
  fields = field_values(config, own)
  fields['archs'] = sorted(record_hashes)
  for name in FILE_FIELDS.get(stage, ()):
    fields[f'{name}:sha256'] = _file_digest(config_fields.get(config, name))
  chained = {STAMP_KEYS.get(s, s): expected_stamp(config, s,
                                                 record_hashes)['hash']
             for s in inputs}
  for s, stage_dir in OPTIONAL_INPUTS.get(stage, {}).items():
    chained[s] = (None if workdir is None else
                  current_stamp(config, s, record_hashes, workdir, stage_dir))
  return {'hash': digest([fields, chained]), 'fields': fields,
          'inputs': chained}


def stamp_path(workdir: str, stage_dir: str) -> str:
  return os.path.join(workdir, stage_dir, STAMP_NAME)


def read_stamp(workdir: str, stage_dir: str) -> dict[str, Any] | None:
  """The stamp in ``WORKDIR/stage_dir``, or None when absent or damaged."""
  path = stamp_path(workdir, stage_dir)
  try:
    with files.open_file(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def commit_stage(workdir: str, stage_dir: str, stamp: Mapping[str, Any]
                 ) -> None:
  """Marks ``stage_dir``'s outputs complete: fsync the dir, stamp it last."""
  directory = os.path.join(workdir, stage_dir)
  files.makedirs(directory)
  files.fsync_dir(directory)
  files.atomic_write_json(stamp_path(workdir, stage_dir), dict(stamp))


def remove_outputs(path: str) -> None:
  """Removes outputs that are being replaced, or stops saying why it cannot.

  ``shutil.rmtree(..., ignore_errors=True)`` would leave a symlinked
  directory (or one it may not delete) in place and let the run reuse what it
  meant to replace. Nothing outside the workdir is deleted: a symlink is
  refused rather than followed.

  Args:
    path: a file or directory under the workdir (absent: nothing to do).

  Raises:
    RuntimeError: ``path`` is a symbolic link or could not be removed.
  """
  if files.islink(path):
    raise RuntimeError(
        f'{path} must be replaced (it holds outputs of other config values or '
        f'inputs) but it is a symbolic link to {os.readlink(path)!r}; nothing '
        'outside the workdir is deleted. To fix: remove the link (and its '
        'target if unwanted) and rerun, or use a fresh --workdir.')
  if not files.lexists(path):
    return
  try:
    if files.isdir(path):
      files.rmtree(path)
    else:
      files.remove(path)
  except OSError as e:
    raise RuntimeError(
        f'{path} must be replaced (it holds outputs of other config values or '
        f'inputs) but cannot be removed ({e}). To fix: remove it yourself and '
        'rerun, or use a fresh --workdir.') from e
  files.fsync_dir(os.path.dirname(path))


def invalidate(workdir: str, stage_dir: str) -> None:
  """Removes a stage's stamp before it rewrites its outputs."""
  path = stamp_path(workdir, stage_dir)
  if files.exists(path):
    files.remove(path)
    files.fsync_dir(os.path.dirname(path))
