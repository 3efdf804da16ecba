"""The records manifest's structure, and whether a group's chunks are whole.

``records.read_manifest`` calls :func:`structure_error` on every manifest it
reads: a manifest of the wrong shape (``{"archs": {"cnn": 5}}``, a chunk
entry naming a file outside its directory) is *damaged*, so the writer sets
it aside and rebuilds it from the chunk files, and readers stop with an
error that names the file and the fix, instead of an AttributeError deep in
a stage. :func:`missing_chunks` compares the chunks an entry registers with
the ones a finished group holds, so a manifest that says ``complete`` but
lost chunk entries is not trusted as complete.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

from easyhard_jax.storage import files

CHUNK_KEY = re.compile(r'(probe|fused)_(train|test)')
CHUNK_NAME = re.compile(r'(probe|fused)_(train|test)_(\d{4})\.npz')


def _is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _entry_error(arch: str, entry: Any) -> str | None:
  if not isinstance(entry, dict):
    return f'archs[{arch!r}] is {type(entry).__name__}, not an object'
  members = entry.get('members')
  if not (isinstance(members, list) and members and all(
      isinstance(m, dict) and 'arch' in m for m in members)):
    return f'archs[{arch!r}].members is not a list of members'
  if not (_is_int(entry.get('steps_per_epoch')) and
          entry['steps_per_epoch'] > 0):
    return f'archs[{arch!r}].steps_per_epoch is not a positive integer'
  schedule = entry.get('schedule')
  if not (isinstance(schedule, list) and all(map(_is_int, schedule))):
    return f'archs[{arch!r}].schedule is not a list of steps'
  fp = entry.get('fingerprint')
  if not (isinstance(fp, dict) and isinstance(fp.get('hash'), str)):
    return f'archs[{arch!r}].fingerprint has no hash'
  if not isinstance(entry.get('complete'), bool):
    return f'archs[{arch!r}].complete is not true or false'
  chunks = entry.get('chunks')
  if not isinstance(chunks, dict):
    return f'archs[{arch!r}].chunks is not an object'
  for key, by_index in chunks.items():
    if not CHUNK_KEY.fullmatch(str(key)) or not isinstance(by_index, dict):
      return f'archs[{arch!r}].chunks has a bad entry {key!r}'
    for index, c in by_index.items():
      m = CHUNK_NAME.fullmatch(str(c.get('file', ''))) if isinstance(
          c, dict) else None
      if not (m and str(index).isdigit() and f'{m[1]}_{m[2]}' == key and
              int(m[3]) == int(index) and _is_int(c.get('step'))):
        return (f'archs[{arch!r}].chunks[{key!r}][{index!r}] is not a chunk '
                'entry of its own file')
  return None


def structure_error(manifest: Any) -> str | None:
  """What is wrong with a manifest's structure, or None when it is sound."""
  if not isinstance(manifest, dict):
    return 'not a JSON object'
  archs, order = manifest.get('archs'), manifest.get('arch_order')
  if not isinstance(archs, dict):
    return 'no "archs" object'
  if not (isinstance(order, list) and all(isinstance(a, str) for a in order)
          and sorted(order) == sorted(archs)):
    return '"arch_order" does not list the architectures of "archs"'
  if not isinstance(manifest.get('num_examples', {}), dict):
    return '"num_examples" is not an object'
  for arch, entry in archs.items():
    error = _entry_error(arch, entry)
    if error:
      return error
  return None


def missing_chunks(entry: Mapping[str, Any], directory: str | None = None
                   ) -> list[str]:
  """Chunks a finished group should hold that its entry lacks (or disk).

  Every source and split the group finished with (``chunk_keys``, kept by
  ``RecordWriter.finish_arch``) must still be registered, and each must
  cover its indices without a gap:
  each probe key one chunk per scheduled probe, each fused key one chunk per
  epoch up to the last scheduled step (the end of training). A finished
  group with no chunk at all lacks everything. With ``directory``, the
  registered files must also exist there.

  Args:
    entry: one architecture's manifest entry (structure already checked).
    directory: the group's chunk directory, or None to skip the disk.

  Returns:
    Descriptions of what is missing; empty when the group is whole.
  """
  chunks, schedule = entry['chunks'], entry['schedule']
  if not any(chunks.values()):
    return ['every chunk']
  out = [f'every {key} chunk' for key in entry.get('chunk_keys', [])
         if not chunks.get(key)]
  end = schedule[-1] if schedule else None
  for key, by_index in chunks.items():
    have = sorted(int(i) for i in by_index)
    if key.startswith('probe'):
      want = len(schedule)
    else:
      last = by_index.get(str(have[-1]), {}).get('step') if have else None
      want = len(have) + (0 if last == end else 1)
    gaps = sorted(set(range(want)) - set(have))
    out += [f'{key} {i}' for i in gaps]
    if directory is not None:
      out += [f'{key} {i} (file {c["file"]})' for i, c in by_index.items()
              if not files.exists(os.path.join(directory, c['file']))]
  return out
