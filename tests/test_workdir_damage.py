"""Damaged workdir files are named, repaired or set aside (issue 20).

Checkpoint bit flips, manifest damage, unreadable JSON outputs, an
unescaped workdir path in summary.md.
"""

import os
import re
import shutil

import numpy as np
import pytest

from conftest import assert_identical_records
from conftest import quick_config
from easyhard_jax.storage import files
from easyhard_jax import fingerprint
from easyhard_jax.storage import records
from easyhard_jax import runner
from easyhard_jax.report import build
from easyhard_jax.report import html as html_lib


def test_summary_markdown_escapes_the_workdir_path():
  hostile = '/tmp/<img src=x onerror=alert(1)>/*b*_[l](http://e)\n# H &amp;'
  text = html_lib.render_summary('Title', f'dataset x | workdir {hostile}',
                                 [('Findings', ['one'])], [])
  lines = text.splitlines()
  assert lines[2].startswith('dataset x | workdir /tmp/')
  assert '\\<img' in text and not re.search(r'(?<!\\)[<>]', text)
  assert '\\*b\\*\\_\\[l\\]' in text and '\\&amp;' in text
  assert [l for l in lines if l.startswith('# ')] == ['# Title']
  assert os.sep in lines[2]


def _copy(quick_study, tmp_path, name='copy'):
  _, workdir = quick_study
  copy = str(tmp_path / name)
  shutil.copytree(workdir, copy)
  return workdir, copy


def _manifest_path(workdir):
  return os.path.join(workdir, 'records', 'manifest.json')


@pytest.mark.parametrize('damage', [
    {'archs': {'cnn': 5}},
    {'archs': {}, 'arch_order': ['cnn']},
    'chunk outside its directory',
])
def test_a_manifest_of_the_wrong_shape_is_named_and_rebuilt(
    quick_study, tmp_path, damage):
  reference, copy = _copy(quick_study, tmp_path)
  if damage == 'chunk outside its directory':
    manifest = records.read_manifest(copy)
    manifest['archs']['cnn']['chunks']['probe_train']['0']['file'] = (
        '../../../etc/passwd')
    damage = manifest
  files.atomic_write_json(_manifest_path(copy), damage)
  with pytest.raises(ValueError, match=r'manifest.json is damaged \(not a '
                     r'records manifest: .*To fix: rerun --mode=records'):
    records.load(copy, 'train')
  runner.run(quick_config(), copy, 'records')  # Rebuilt from the chunks.
  assert os.path.exists(os.path.join(copy, 'records',
                                     'manifest.damaged.json'))
  assert_identical_records(reference, copy)


@pytest.mark.parametrize('drop', ['probe_test', 'fused_train', 'all'])
def test_a_complete_manifest_that_lost_chunk_entries_is_recorded_again(
    quick_study, tmp_path, drop):
  reference, copy = _copy(quick_study, tmp_path)
  manifest = records.read_manifest(copy)
  entry = manifest['archs']['cnn']
  assert entry['complete']
  if drop == 'all':
    entry['chunks'] = {}
  elif drop == 'probe_test':
    del entry['chunks']['probe_test']['1']
  else:
    last = max(entry['chunks']['fused_train'], key=int)
    del entry['chunks']['fused_train'][last]
  files.atomic_write_json(_manifest_path(copy), manifest)
  with pytest.raises(FileNotFoundError, match='not complete'):
    records.load(copy, 'train', archs=['cnn'])
  assert not runner.is_complete(quick_config(), copy, 'records')
  runner.run(quick_config(), copy, 'records')
  assert records.read_manifest(copy)['archs']['cnn']['complete']
  assert_identical_records(reference, copy)


def test_json_reader_names_the_file_and_the_fix(tmp_path):
  path = tmp_path / 'analysis.json'
  path.write_text('{"records": {"train": ')
  with pytest.raises(ValueError, match=f'{path} is damaged .*To fix: rerun'):
    files.read_json(str(path))
  path.write_bytes(b'\xff\xfe{}')
  with pytest.raises(ValueError, match=f'{path} is damaged'):
    files.read_json(str(path), 'delete it.')


def test_an_unreadable_output_under_a_valid_stamp_counts_as_unfinished(
    tmp_path):
  config, workdir = quick_config(), str(tmp_path)
  out = os.path.join(workdir, 'analysis')
  files.atomic_write_json(os.path.join(out, 'analysis.json'), {'ok': 1})
  files.atomic_savez(os.path.join(out, 'means.npz'), {'a': np.arange(100)})
  # The stage's required score file (stages.Stage.required), intact.
  files.atomic_savez(os.path.join(out, 'scores_train.npz'),
                     {'example_index': np.arange(4)})
  fingerprint.commit_stage(workdir, 'analysis', fingerprint.expected_stamp(
      config, 'analysis', runner._record_hashes(config), workdir))
  assert runner.is_complete(config, workdir, 'analysis')
  with open(os.path.join(out, 'analysis.json'), 'w') as f:
    f.write('{"ok": ')  # Torn by hand; the stamp is still valid.
  assert not runner.is_complete(config, workdir, 'analysis')
  files.atomic_write_json(os.path.join(out, 'analysis.json'), {'ok': 1})
  path = os.path.join(out, 'means.npz')
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 3] ^= 0x10  # One bit inside the array's bytes.
  with open(path, 'wb') as f:
    f.write(bytes(data))
  assert files.unreadable_outputs(out) == [path]
  assert not runner.is_complete(config, workdir, 'analysis')


def test_report_names_a_damaged_results_file_and_survives_config_json(
    tmp_path):
  workdir = str(tmp_path)
  for name in ('config.json', os.path.join('removal', 'results.json')):
    os.makedirs(os.path.dirname(os.path.join(workdir, name)), exist_ok=True)
    with open(os.path.join(workdir, name), 'w') as f:
      f.write('{"lr": 0.1')
  build.build_report(quick_config(), workdir)
  with open(os.path.join(workdir, 'report', 'index.html')) as f:
    page = f.read()
  assert 'results.json is damaged' in page  # The removal section's note.
  with open(os.path.join(workdir, 'report', 'summary.md')) as f:
    assert 'dataset digits' in f.read()  # From the running config.
