"""Checks that run before anything is deleted: fields, files, sizes (issue 20).

Every bad value or damaged input file named here must stop the run before the
workdir lock is taken or any output is replaced, with a message that names
the field or the file.
"""

import os

import numpy as np
import pytest

from conftest import quick_config
from easyhard_jax import runner
from easyhard_jax import validation
from easyhard_jax.data import sources


def _npz(path, y_train, y_test=None, **extra):
  rng = np.random.default_rng(0)
  n = len(y_train)
  y_test = y_train[:8] if y_test is None else y_test
  np.savez(path, x_train=rng.integers(0, 255, (n, 8, 8), np.uint8),
           y_train=y_train, x_test=rng.integers(0, 255, (len(y_test), 8, 8),
                                                np.uint8),
           y_test=y_test, **extra)
  return str(path)


def test_int64_labels_beyond_int32_are_refused_not_wrapped(tmp_path):
  y = np.arange(40, dtype=np.int64) % 10
  wrapped = y.copy()
  wrapped[5] += 2**32  # int32 cast would turn it back into y[5].
  path = _npz(tmp_path / 'wrap.npz', wrapped, y[:8])
  config = quick_config(dataset='npz', npz_path=path)
  with pytest.raises(ValueError, match=r'train labels .* 2\*\*31'):
    sources.load_dataset(config)
  # The same labels without the offset load, as they are.
  config.npz_path = _npz(tmp_path / 'ok.npz', y)
  np.testing.assert_array_equal(sources.load_dataset(config).train_labels, y)


@pytest.mark.parametrize('overrides, message', [
    ({'analysis.sets.method': 'bogus'}, 'config.analysis.sets.method must'),
    ({'analysis.sets.tiebreak': 'coin'}, 'config.analysis.sets.tiebreak'),
    ({'analysis.similarity.block_size': 0},
     'analysis.similarity.block_size must be an integer >= 1'),
    ({'analysis.window': (5.0, 6.0)},
     r'analysis.window \(5.0, 6.0\) holds no probe: .* epochs 0.5, 1, 2'),
    ({'analysis.window': (0.6, 0.9)}, 'holds no probe'),
    ({'analysis.label_issues.window': (3.0, 4.0)},
     'label_issues.window .* holds no probe'),
    ({'analysis.dynamics_window': (2.0, 1.0)}, 'dynamics_window must be'),
    ({'analysis.agreement.ci_level': 1.0}, r'ci_level must lie in \(0, 1\)'),
    ({'analysis.agreement.ci_level': 0.0}, r'ci_level must lie in \(0, 1\)'),
    ({'analysis.similarity.hf_cutoff': 0.0}, 'hf_cutoff must lie in'),
    ({'report.max_classes': 0}, 'report.max_classes must be an integer'),
    ({'width': float('inf')}, 'width must be a finite number'),
    ({'width': float('nan')}, 'width must be a finite number'),
    ({'seed': 2**32}, r'config.seed must be an integer in \[0, 2\*\*31\)'),
    ({'seed': -1}, r'config.seed must be an integer in \[0, 2\*\*31\)'),
    ({'label_noise.seed': 2**40}, 'config.label_noise.seed must be'),
    ({'analysis.agreement.seed': 2**64}, 'agreement.seed must be'),
    ({'seeds_per_arch': 10**9},
     r'seeds_per_arch=1000000000: .* cnn members need at least .* GiB'),
])
def test_every_stage_field_is_checked_first(overrides, message):
  with pytest.raises(ValueError, match=message):
    validation.validate(quick_config(**overrides))


def test_window_at_the_last_probe_and_fused_source_pass():
  validation.validate(quick_config(**{'analysis.window': (1.5, 2.0)}))
  validation.validate(quick_config(**{'analysis.window': (0.0, 0.5)}))
  with pytest.raises(ValueError, match='holds no probe'):  # Fused: 1, 2.
    validation.validate(quick_config(**{'analysis.source': 'fused',
                                        'analysis.window': (0.0, 0.5)}))


def _finished_looking_workdir(tmp_path):
  """A workdir whose analysis/ and exports/ must survive a refused run."""
  workdir = tmp_path / 'w'
  for d in ('analysis', 'exports'):
    (workdir / d).mkdir(parents=True)
    (workdir / d / 'keep.txt').write_text('results')
  (workdir / 'analysis' / 'stamp.json').write_text('{"hash": "old"}')
  return workdir


def _untouched(workdir):
  names = sorted(p.relative_to(workdir).as_posix()
                 for p in workdir.rglob('*'))
  assert names == ['analysis', 'analysis/keep.txt', 'analysis/stamp.json',
                   'exports', 'exports/keep.txt'], names


@pytest.mark.parametrize('overrides', [
    {'analysis.sets.method': 'bogus'},
    {'analysis.similarity.block_size': 0},
    {'analysis.window': (5.0, 6.0)},
])
def test_analysis_typo_deletes_nothing_and_takes_no_lock(tmp_path, overrides):
  workdir = _finished_looking_workdir(tmp_path)
  with pytest.raises(ValueError, match='config.analysis'):
    runner.run(quick_config(**overrides), str(workdir), 'study')
  _untouched(workdir)


@pytest.mark.parametrize('mode', ['removal', 'compression'])
def test_a_sweep_without_the_analysis_scores_is_refused_first(tmp_path,
                                                              mode):
  workdir = _finished_looking_workdir(tmp_path)
  with pytest.raises(FileNotFoundError,
                     match=r'scores_train\.npz does not exist.*--mode=analysis'):
    runner.run(quick_config(), str(workdir), mode)
  _untouched(workdir)


def test_known_noisy_with_a_non_number_is_refused_first(tmp_path):
  workdir = _finished_looking_workdir(tmp_path)
  bad = tmp_path / 'noisy.txt'
  bad.write_text('3 17 forty-two 8\n')
  config = quick_config(**{'analysis.known_noisy': str(bad)})
  with pytest.raises(ValueError, match=f'known_noisy: {bad} cannot be read'):
    runner.run(config, str(workdir), 'study')
  _untouched(workdir)
  bad.write_text('3 17 42 8\n')
  validation.validate(config)  # Readable now.


def test_object_and_garbage_npz_name_the_file(tmp_path):
  objects = str(tmp_path / 'objects.npz')
  # An object array where the labels should be.
  np.savez(objects, x_train=np.zeros((4, 8, 8), np.uint8),
           y_train=np.array([1, 'a', None, 2], dtype=object),
           x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.arange(2))
  garbage = tmp_path / 'garbage.npz'
  garbage.write_bytes(b'\x00garbage' * 50)
  workdir = tmp_path / 'w'
  for path, message in ((objects, "array 'y_train' of .*objects.npz holds "
                                  'Python objects'),
                        (str(garbage), 'garbage.npz is not a readable .npz')):
    config = quick_config(dataset='npz', npz_path=str(path))
    with pytest.raises(ValueError, match=message):
      runner.run(config, str(workdir), 'records')
    assert not workdir.exists()
  missing = quick_config(dataset='npz', npz_path=str(tmp_path / 'no.npz'))
  with pytest.raises(FileNotFoundError, match='no.npz does not exist'):
    validation.validate(missing)


def test_dangling_symlink_workdir_is_named(tmp_path):
  link = tmp_path / 'link'
  link.symlink_to(tmp_path / 'gone')
  with pytest.raises(ValueError, match=r'link is a symbolic link to .*gone'
                     r'.*, which does not exist'):
    runner.run(quick_config(), str(link), 'records')
  with pytest.raises(ValueError, match='is a symbolic link'):
    runner.run(quick_config(), str(link / 'sub'), 'records')
  (tmp_path / 'file').write_text('x')
  with pytest.raises(ValueError, match='is a file, not a directory'):
    runner.run(quick_config(), str(tmp_path / 'file' / 'w'), 'records')
