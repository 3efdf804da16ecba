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
