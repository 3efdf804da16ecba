"""Sharded steps over 8 forced host devices give the one-device records."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from conftest import quick_config
from easyhard_jax import records
from easyhard_jax.train import mesh as mesh_lib

_RUN = """
import sys
sys.path.insert(0, {root!r})
import jax
assert jax.device_count() == 8, jax.devices()
from tests.conftest import quick_config
from easyhard_jax import stages
c = quick_config(mesh_shape={mesh!r}, member_strategy={strategy!r})
stages.run(c, {workdir!r}, 'record')
"""


@pytest.mark.parametrize('mesh, strategy', [('auto', 'unroll'),
                                            ('2,4', 'vmap')])
def test_sharded_records_equal_one_device(quick_study, tmp_path, mesh,
                                          strategy):
  _, reference = quick_study
  workdir = str(tmp_path / 'sharded')
  env = dict(os.environ,
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  subprocess.run([sys.executable, '-c', _RUN.format(
      root=ROOT, mesh=mesh, strategy=strategy, workdir=workdir)],
                 cwd=ROOT, env=env, check=True, timeout=400,
                 capture_output=True)
  for split in ('train', 'test'):
    a, b = records.load(reference, split), records.load(workdir, split)
    np.testing.assert_array_equal(a.probe_steps, b.probe_steps)
    np.testing.assert_array_equal(a.correct, b.correct)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-4, atol=1e-4)
  fa = records.load(reference, 'train', 'fused')
  fb = records.load(workdir, 'train', 'fused')
  np.testing.assert_allclose(fa.loss, fb.loss, rtol=1e-4, atol=1e-4)


def test_mesh_shapes_and_errors():
  config = quick_config(batch_size=64)
  assert mesh_lib.mesh_shape(config, 4, 'unroll', num_devices=8) == (1, 8)
  assert mesh_lib.mesh_shape(config, 4, 'vmap', num_devices=8) == (1, 8)
  config.mesh_shape = '2,4'
  assert mesh_lib.mesh_shape(config, 4, 'vmap', num_devices=8) == (2, 4)
  with pytest.raises(ValueError, match='needs member_strategy=vmap'):
    mesh_lib.mesh_shape(config, 4, 'unroll', num_devices=8)
  config.mesh_shape = '1,16'
  with pytest.raises(ValueError, match='16 devices'):
    mesh_lib.mesh_shape(config, 4, 'unroll', num_devices=8)
  config.mesh_shape = 'wide'
  with pytest.raises(ValueError, match="'auto' or 'MEMBERS,DATA'"):
    mesh_lib.mesh_shape(config, 4, 'unroll', num_devices=8)
