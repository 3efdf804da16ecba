"""Checks that run before anything is deleted: fields, files, sizes (issue 20).

Every bad value or damaged input file named here must stop the run before the
workdir lock is taken or any output is replaced, with a message that names
the field or the file.
"""

import os

import numpy as np
import pytest

from conftest import quick_config
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
