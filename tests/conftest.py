"""Shared fixtures: tiny study configs and one recorded quick study."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `from configs import ...` as main.py does.
  sys.path.insert(0, ROOT)


def quick_config(**overrides):
  """configs/digits_quick.py with dotted-name overrides."""
  from configs import digits_quick
  c = digits_quick.get_config()
  for key, value in overrides.items():
    target = c
    parts = key.split('.')
    for p in parts[:-1]:
      target = target[p]
    target[parts[-1]] = value
  return c


@pytest.fixture(scope='session')
def quick_study(tmp_path_factory):
  """(config, workdir) of a finished quick digits study (shared, read-only)."""
  from easyhard_jax import stages
  workdir = str(tmp_path_factory.mktemp('quick_study'))
  config = quick_config()
  stages.run(config, workdir, 'record')
  return config, workdir


@pytest.fixture(scope='session')
def one_epoch_study(tmp_path_factory):
  """(config, workdir) of a one-epoch quick study on one device."""
  from easyhard_jax import stages
  workdir = str(tmp_path_factory.mktemp('one_epoch_study'))
  config = quick_config(epochs=1)
  stages.run(config, workdir, 'record')
  return config, workdir


def assert_same_records(reference: str, other: str, tol: float = 1e-4):
  """Records equal up to float reduction order across devices.

  Losses must agree within ``tol``; correctness must be identical except for
  examples whose reference margin is itself within ``tol`` of a tie.
  """
  import numpy as np
  from easyhard_jax import records
  for split in ('train', 'test'):
    a, b = records.load(reference, split), records.load(other, split)
    np.testing.assert_array_equal(a.probe_steps, b.probe_steps)
    np.testing.assert_allclose(a.loss, b.loss, rtol=tol, atol=tol)
    flips = a.correct != b.correct
    assert not (flips & (np.abs(a.margin) > tol)).any(), (
        f'{split}: correctness differs away from ties at '
        f'{np.argwhere(flips)[:5].tolist()}')
  fa = records.load(reference, 'train', 'fused')
  fb = records.load(other, 'train', 'fused')
  np.testing.assert_allclose(fa.loss, fb.loss, rtol=tol, atol=tol)
