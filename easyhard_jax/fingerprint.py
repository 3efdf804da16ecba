"""Config fingerprints of records and stamps of every stage's outputs.

A workdir must hold what its config says. Each architecture's records carry
a *fingerprint*: the values of every config field that changes what is
recorded (data and subset, model and kwargs, width, optimizer and schedule,
augmentation, dtype, batch size, epochs, seeds, probe schedule) and a hash of
them. A rerun resumes or skips an architecture only when the fingerprints
match; otherwise :func:`check_match` raises naming each differing field.

Every later stage writes a *stamp* when it finishes: the hash of its own
config fields and of the stamps of the stages it reads. ``--mode=study``
trusts a stage's outputs only when the stamp on disk equals the stamp the
current config expects, so changing ``config.analysis.window`` reruns the
analysis and everything downstream of it, and a kill between two of a stage's
files (no stamp yet) reruns that stage.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Sequence

from easyhard_jax import config_fields
from easyhard_jax import files

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
    'analyze': (('analysis', 'compression.fractions', 'report.max_classes'),
                ('record',)),
    'remove': (('removal',), ('analyze',)),
    'compress': (('compression',), ('analyze',)),
    'probe_causes': (('causes',), ('analyze',)),
    # Not ('analyze',): an analysis change must not discard held-out members;
    # results.json keeps the analysis stamp its proxy judgement used.
    'heldout': (('heldout',), ('record',)),
    'report': (('report',), ('analyze', 'remove', 'compress',
                             'probe_causes')),
}
STAMP_NAME = 'stamp.json'


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


def expected_stamp(config, stage: str, record_hashes: Mapping[str, str]
                   ) -> dict[str, Any]:
  """The stamp the current config expects of ``stage``'s outputs.

  ``record_hashes`` are the record fingerprints of the config's archs (the
  record stage's "stamp"); later stages chain their inputs' stamps.
  """
  if stage == 'record':
    return {'hash': digest(sorted(record_hashes.items())),
            'fields': dict(record_hashes)}
  own, inputs = STAGES[stage]
  fields = field_values(config, own)
  fields['archs'] = sorted(record_hashes)
  chained = {s: expected_stamp(config, s, record_hashes)['hash']
             for s in inputs}
  return {'hash': digest([fields, chained]), 'fields': fields,
          'inputs': chained}


def stamp_path(workdir: str, stage_dir: str) -> str:
  return os.path.join(workdir, stage_dir, STAMP_NAME)


def read_stamp(workdir: str, stage_dir: str) -> dict[str, Any] | None:
  """The stamp in ``WORKDIR/stage_dir``, or None when absent or damaged."""
  path = stamp_path(workdir, stage_dir)
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def commit_stage(workdir: str, stage_dir: str, stamp: Mapping[str, Any]
                 ) -> None:
  """Marks ``stage_dir``'s outputs complete: fsync the dir, stamp it last."""
  directory = os.path.join(workdir, stage_dir)
  os.makedirs(directory, exist_ok=True)
  files.fsync_dir(directory)
  files.atomic_write_json(stamp_path(workdir, stage_dir), dict(stamp))


def invalidate(workdir: str, stage_dir: str) -> None:
  """Removes a stage's stamp before it rewrites its outputs."""
  path = stamp_path(workdir, stage_dir)
  if os.path.exists(path):
    os.remove(path)
    files.fsync_dir(os.path.dirname(path))
