"""Forced host devices: the collective-timeout flag and one program in flight.

XLA:CPU aborted a digits record on 8 forced host devices when one device was
40 s late to a collective (issue 10, item 9). The fix raises that timeout
before the backend starts and, on XLA:CPU meshes of several devices, finishes
each sharded step before the next is dispatched. These tests check both
parts where they apply and that they stay off on one device.
"""

import os

import pytest

from conftest import quick_config
from conftest import run_script
from easyhard_jax import distributed
from easyhard_jax.train import mesh as mesh_lib

_FLAG = '--xla_cpu_collective_call_terminate_timeout_seconds'

_RUN = """
import os
from conftest import quick_config
from easyhard_jax import runner
from easyhard_jax.data import streaming
from easyhard_jax.train import ensemble
c = quick_config(epochs=1, max_train_examples=256)
runner.run(c, {workdir!r}, 'records')  # Sets the flag, then starts JAX.
import jax
assert jax.device_count() == 8, jax.devices()
t = ensemble.ArchTrainer(c, streaming.load(c), 'cnn')
assert t.mesh.shape['data'] == 8, t.mesh
assert t.train_step.one_in_flight and t.probe_step.one_in_flight
print('XLA_FLAGS=' + os.environ['XLA_FLAGS'])
"""


def test_timeout_flag_added_only_for_forced_devices(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
  distributed.configure_host_devices()
  flags = os.environ['XLA_FLAGS']
  assert f'{_FLAG}={distributed.HOST_COLLECTIVE_TIMEOUT_S}' in flags
  distributed.configure_host_devices()  # Idempotent.
  assert os.environ['XLA_FLAGS'] == flags
  # A timeout the user chose is kept; one device or no flag adds nothing.
  for given in (f'--xla_force_host_platform_device_count=4 {_FLAG}=5',
                '--xla_force_host_platform_device_count=1', ''):
    monkeypatch.setenv('XLA_FLAGS', given)
    distributed.configure_host_devices()
    assert os.environ['XLA_FLAGS'] == given
  assert distributed.forced_host_devices('--xla_cpu_max_isa=AVX2') == 0
  assert distributed.forced_host_devices(
      '--xla_force_host_platform_device_count=2 '
      '--xla_force_host_platform_device_count=16') == 16


def test_one_device_keeps_asynchronous_dispatch():
  """On one device the step function is returned unchanged (no cost)."""
  config = quick_config()
  mesh = mesh_lib.make_mesh(config, 2, 'unroll')
  assert not mesh_lib.serial_dispatch(mesh)
  step = lambda x: x
  assert mesh_lib.one_in_flight(mesh, step) is step


@pytest.mark.slow
def test_forced_devices_record_finishes(tmp_path):
  """A short record on 8 forced host devices finishes with the fix active."""
  out = run_script(_RUN, devices=8, timeout=300,
                   workdir=str(tmp_path / 'w'))
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'{_FLAG}={distributed.HOST_COLLECTIVE_TIMEOUT_S}' in out.stdout
