"""A checkpoint restores only with the bytes it was saved with (issue 20.6).

orbax restores some single-bit flips in a data file without an error; the
checksum saved beside each checkpoint catches them, and the resume falls back
to the previous checkpoint.
"""

import glob
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from easyhard_jax.train import checkpoints


class State(dict):
  """A dict state with the ``step`` field restore_latest checks."""

  @property
  def step(self):
    return self['step']


jax.tree_util.register_pytree_node(
    State, lambda s: (list(s.values()), list(s.keys())),
    lambda keys, values: State(zip(keys, values)))


def _state(step, seed):
  rng = np.random.default_rng(seed)
  return State(w=jnp.asarray(rng.normal(size=(48, 40)).astype(np.float32)),
               step=jnp.asarray(step, jnp.int32))


def _raw_restore(directory, step, target):
  """orbax alone, without the checksum: what the project did before."""
  manager = ocp.CheckpointManager(directory)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def _silent_flip(directory, step, target, saved):
  """Flips one bit of the step's largest data file where orbax notices
  nothing but the values change; returns the offset."""
  data = max(glob.glob(os.path.join(directory, str(step), '**', 'd', '*'),
                       recursive=True), key=os.path.getsize)
  original = open(data, 'rb').read()
  for offset in range(len(original) - 1, len(original) // 2, -7):
    flipped = bytearray(original)
    flipped[offset] ^= 0x01
    with open(data, 'wb') as f:
      f.write(bytes(flipped))
    try:
      got = _raw_restore(directory, step, target)
    except Exception:  # pylint: disable=broad-except
      continue
    if not np.array_equal(np.asarray(got['w']), np.asarray(saved['w'])):
      return offset
  pytest.skip('no silent single-bit flip found in this orbax version')


def test_a_silently_flipped_bit_falls_back_to_the_previous_checkpoint(
    tmp_path, caplog):
  directory = str(tmp_path / 'ckpt')
  ckpt = checkpoints.Checkpointer(directory)
  first, second = _state(1, 0), _state(2, 1)
  ckpt.save(1, first)
  ckpt.save(2, second)
  ckpt.wait()
  assert sorted(os.listdir(directory)) == ['1', '2', 'checksum_1.json',
                                           'checksum_2.json']
  restored, step = ckpt.restore_latest(_state(0, 9))
  assert step == 2 and np.array_equal(restored['w'], second['w'])
  _silent_flip(directory, 2, _state(0, 9), second)
  with pytest.raises(RuntimeError, match='differ from the checksum'):
    ckpt.restore(2, _state(0, 9))
  with caplog.at_level('WARNING'):
    restored, step = ckpt.restore_latest(_state(0, 9))
  assert step == 1 and np.array_equal(restored['w'], first['w'])
  assert 'checksum' in caplog.text and 'falling back' in caplog.text


def test_checksum_files_follow_the_checkpoints_kept(tmp_path):
  directory = str(tmp_path / 'ckpt')
  ckpt = checkpoints.Checkpointer(directory, max_to_keep=2)
  for step in (1, 2, 3):
    ckpt.save(step, _state(step, step))
  ckpt.wait()
  ckpt.save(4, _state(4, 4))
  ckpt.wait()
  ckpt.delete_after(3)
  names = sorted(n for n in os.listdir(directory) if n.startswith('checksum'))
  assert names == [f'checksum_{s}.json' for s in ckpt.steps()]
  # A checkpoint without a checksum file (saved before them) restores.
  os.remove(os.path.join(directory, f'checksum_{ckpt.steps()[-1]}.json'))
  _, step = ckpt.restore_latest(_state(0, 9))
  assert step == ckpt.steps()[-1]


def test_a_damaged_checksum_file_rejects_its_checkpoint(tmp_path):
  directory = str(tmp_path / 'ckpt')
  ckpt = checkpoints.Checkpointer(directory)
  ckpt.save(1, _state(1, 0))
  ckpt.save(2, _state(2, 1))
  ckpt.wait()
  with open(os.path.join(directory, 'checksum_2.json'), 'w') as f:
    f.write('{"sha')
  _, step = ckpt.restore_latest(_state(0, 9))
  assert step == 1
  shutil.rmtree(directory)


def test_a_study_resumes_past_a_flipped_bit_to_identical_records(
    quick_study, tmp_path, caplog):
  from conftest import assert_identical_records
  from conftest import quick_config
  from easyhard_jax.storage import files
  from easyhard_jax.storage import records
  from easyhard_jax import runner
  _, workdir = quick_study
  copy = str(tmp_path / 'flipped')
  shutil.copytree(workdir, copy)
  manifest = records.read_manifest(copy)
  manifest['archs']['cnn']['complete'] = False
  files.atomic_write_json(os.path.join(copy, 'records', 'manifest.json'),
                          manifest)
  directory = os.path.join(copy, 'checkpoints', 'cnn')
  last = max(int(n) for n in os.listdir(directory) if n.isdigit())
  data = max(glob.glob(os.path.join(directory, str(last), '**', 'd', '*'),
                       recursive=True), key=os.path.getsize)
  flipped = bytearray(open(data, 'rb').read())
  flipped[len(flipped) // 2] ^= 0x01  # Inside the arrays' bytes.
  with open(data, 'wb') as f:
    f.write(bytes(flipped))
  with caplog.at_level('WARNING'):
    runner.run(quick_config(), copy, 'records')
  assert f'{directory}/{last} cannot be used' in caplog.text
  assert_identical_records(workdir, copy)
