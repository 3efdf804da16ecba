"""The device mesh: a member axis and a data axis.

Steps are plain ``jax.jit`` programs; sharding comes from where the arrays are
placed and from ``with_sharding_constraint`` on the batch, so XLA (GSPMD)
splits every batch over the ``data`` axis, averages gradients across it and
computes BatchNorm statistics over the global batch. Per-example outputs are
scattered by example index, so they land in the same place whichever device
computed them. The ``member`` axis shards the member-stacked state when the
``vmap`` strategy is used; ``unroll`` and ``map`` need it to be 1.

This is the successor of ``pmap`` with the same per-device semantics; the
package has no ``pmap`` code.

Forced host devices (``--xla_force_host_platform_device_count``) run every
device of a program as a task on one XLA:CPU thread pool, and a collective
holds its thread in a rendezvous until all devices arrive. With asynchronous
dispatch several sharded programs are in flight at once; the pool (max(cores,
devices) threads) then fills with devices of one program waiting for devices
that cannot get a thread, a deadlock that XLA:CPU ends after 40 s by
aborting the process ("Termination timeout for `collective permute ...`").
:func:`one_in_flight` runs such programs one at a time. Accelerators keep
asynchronous dispatch.
"""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ('member', 'data')


def mesh_shape(config, num_members: int, strategy: str,
               num_devices: int | None = None) -> tuple[int, int]:
  """(member, data) sizes from ``config.mesh_shape``: 'auto' or 'M,D'."""
  num_devices = num_devices or jax.device_count()
  spec = str(config.get('mesh_shape', 'auto'))
  batch = config.batch_size
  if spec == 'auto':
    data = math.gcd(num_devices, batch)
    member = 1
    if strategy == 'vmap':
      member = math.gcd(num_devices // data, num_members)
    return member, data
  try:
    member, data = (int(v) for v in spec.split(','))
  except ValueError as e:
    raise ValueError(f"mesh_shape must be 'auto' or 'MEMBERS,DATA' (e.g. "
                     f"'1,8'), got {spec!r}.") from e
  if member * data > num_devices or member < 1 or data < 1:
    raise ValueError(f'mesh_shape {spec} needs {member * data} devices; '
                     f'{num_devices} are visible.')
  if batch % data:
    raise ValueError(f'batch_size {batch} is not divisible by the data axis '
                     f'({data}) of mesh_shape {spec}.')
  if member > 1 and (strategy != 'vmap' or num_members % member):
    raise ValueError(f'A member axis of {member} needs member_strategy=vmap '
                     f'and a member count divisible by it ({num_members}).')
  return member, data


def make_mesh(config, num_members: int, strategy: str) -> Mesh:
  """A ('member', 'data') mesh over the first member*data devices."""
  member, data = mesh_shape(config, num_members, strategy)
  devices = jax.devices()[:member * data]
  try:  # Topology-aware (TPU): each host's devices adjacent on the data axis.
    grid = mesh_utils.create_device_mesh((member, data), devices=devices)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices).reshape(member, data)
  return Mesh(grid, AXES)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def member_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (member) axis over 'member', replicated over 'data'."""
  return NamedSharding(mesh, P('member'))


def batch_sharding(mesh: Mesh) -> NamedSharding | None:
  """Per-member batch [B, ...] split over 'data' (None on one device)."""
  if mesh.shape['data'] == 1:
    return None
  return NamedSharding(mesh, P('data'))


def serial_dispatch(mesh: Mesh) -> bool:
  """True where programs over ``mesh`` should run one at a time.

  That is XLA:CPU with more than one of this process's devices in the mesh
  (forced host devices): each device is a thread of one process, and a
  collective blocks its thread until every device arrives.
  """
  local = [d for d in mesh.devices.flat
           if d.process_index == jax.process_index()]
  return len(local) > 1 and local[0].platform == 'cpu'


def one_in_flight(mesh: Mesh, fn):
  """``fn`` (a jitted program over ``mesh``), finished before it returns.

  Where :func:`serial_dispatch` holds, the wrapper blocks on the program's
  outputs, so at most one collective program is in flight; everywhere else
  ``fn`` itself is returned (no cost on one device or on accelerators).
  """
  if not serial_dispatch(mesh):
    return fn

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    return jax.block_until_ready(fn(*args, **kwargs))

  wrapped.one_in_flight = True  # Marks the wrapper (tests look for it).
  return wrapped
