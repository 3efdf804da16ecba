"""Sharded steps over 8 forced host devices give the one-device records."""

import pytest

from conftest import assert_same_records
from conftest import quick_config
from conftest import run_script
from easyhard_jax.train import mesh as mesh_lib

_RUN = """
import jax
assert jax.device_count() == 8, jax.devices()
from conftest import quick_config
from easyhard_jax import runner
c = quick_config(epochs=1, mesh_shape={mesh!r}, member_strategy={strategy!r})
c.stream.enabled = {stream!r}
runner.run(c, {workdir!r}, 'records')
"""


@pytest.mark.slow
@pytest.mark.parametrize('mesh, strategy, stream', [
    ('auto', 'unroll', False), ('2,4', 'vmap', False), ('2,4', 'vmap', True)])
def test_sharded_records_equal_one_device(one_epoch_study, tmp_path, mesh,
                                          strategy, stream):
  """Device-resident and streamed (each device gets its block) runs."""
  _, reference = one_epoch_study
  workdir = str(tmp_path / 'sharded')
  out = run_script(_RUN, devices=8, timeout=400, mesh=mesh,
                   strategy=strategy, stream=stream, workdir=workdir)
  assert out.returncode == 0, out.stderr[-3000:]
  assert_same_records(reference, workdir)


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
