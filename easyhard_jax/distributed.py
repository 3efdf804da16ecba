"""Multi-process start-up with JAX's own runtime (jax.distributed).

A study launched as several processes (Cloud TPU pod workers, SLURM tasks, or
processes given an explicit coordinator) calls :func:`maybe_initialize` before
any JAX computation. Every process then runs the same program over the global
mesh and feeds the same global batches (the dataset is replicated on every
device); process 0 alone writes records, metrics and reports, and all
processes take part in orbax checkpoint saves and restores (the workdir must be
on storage they share).

``config.distributed``:
  coordinator_address  'HOST:PORT' for explicit launches ('' = auto-detect)
  num_processes        explicit process count (0 = auto)
  process_id           this process's index (-1 = auto)
Auto-detection (no arguments to jax.distributed.initialize) is used when a
cluster environment is present: SLURM with more than one task, or a Cloud TPU
pod (TPU worker environment variables).

Forced host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``,
a CPU rehearsal of a sharded run) get a longer XLA:CPU collective timeout
from :func:`configure_host_devices`, also called by :func:`maybe_initialize`.
"""

from __future__ import annotations

import os
import re

import jax
import numpy as np
from absl import logging

_initialized = False

# XLA:CPU aborts the process ("Termination timeout for `...` of 40 seconds
# exceeded") when the devices of a collective do not all reach its rendezvous
# within this many seconds (default 40, xla/debug_options_flags.cc; read by
# xla/backends/cpu/collectives/in_process_communicator.cc). The abort seen
# with forced host devices was a deadlock of several programs in flight, fixed
# by train/mesh.py's one_in_flight (a longer timeout alone only turns it into
# a hang). This is a margin for the other cause: forced devices are threads
# sharing the machine's cores, so on a loaded machine one can be late. A real
# deadlock still ends in an abort, and XLA logs each stall after 20 s.
_TERMINATE_FLAG = 'xla_cpu_collective_call_terminate_timeout_seconds'
HOST_COLLECTIVE_TIMEOUT_S = 600


def forced_host_devices(xla_flags: str | None = None) -> int:
  """N of --xla_force_host_platform_device_count=N in XLA_FLAGS (else 0)."""
  flags = os.environ.get('XLA_FLAGS', '') if xla_flags is None else xla_flags
  found = re.findall(r'--xla_force_host_platform_device_count=(\d+)', flags)
  return int(found[-1]) if found else 0


def configure_host_devices() -> None:
  """Lengthens XLA:CPU's collective timeout when host devices are forced.

  Must run before the JAX backend starts (XLA reads XLA_FLAGS then); later
  it changes nothing. A timeout already in XLA_FLAGS is kept.
  """
  flags = os.environ.get('XLA_FLAGS', '')
  if forced_host_devices(flags) > 1 and _TERMINATE_FLAG not in flags:
    os.environ['XLA_FLAGS'] = (
        f'{flags} --{_TERMINATE_FLAG}={HOST_COLLECTIVE_TIMEOUT_S}'.strip())
    logging.info('Forced host devices: XLA:CPU collective timeout %d s.',
                 HOST_COLLECTIVE_TIMEOUT_S)


def _cluster_detected() -> bool:
  if int(os.environ.get('SLURM_NTASKS', '1')) > 1:
    return True
  return bool(os.environ.get('TPU_WORKER_HOSTNAMES', '').count(','))


def maybe_initialize(config) -> None:
  """Initialises jax.distributed once, when the launch asks for it."""
  global _initialized
  if _initialized:
    return
  configure_host_devices()
  cfg = config.get('distributed')
  address = cfg.get('coordinator_address', '') if cfg else ''
  if address:
    if cfg.num_processes < 1 or cfg.process_id < 0:
      raise ValueError('distributed.coordinator_address needs '
                       'distributed.num_processes >= 1 and '
                       'distributed.process_id >= 0.')
    # CPU processes need a collectives backend; harmless on GPU/TPU. Must be
    # set before any backend starts, so no jax.default_backend() here.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=address,
                               num_processes=cfg.num_processes,
                               process_id=cfg.process_id)
  elif _cluster_detected():
    jax.distributed.initialize()
  else:
    return
  _initialized = True
  logging.info('jax.distributed: process %d of %d, %d global devices.',
               jax.process_index(), jax.process_count(), jax.device_count())


def is_writer() -> bool:
  """True on the one process that writes records, metrics and reports."""
  return jax.process_index() == 0


# Decisions and barriers go through jax.distributed's coordination service
# (its key-value store and barriers), not through a device collective: a
# collective's first use sets up a gloo context that gives up when the
# processes arrive more than 30 s apart (as when process 0 alone writes an
# analysis or compiles late on a loaded machine). Every process makes the
# same calls in the same order, so a counter makes each key unique.
COORDINATION_TIMEOUT_S = 3600
_calls = 0


def _coordination_client():
  # pylint: disable-next=g-import-not-at-top
  from jax._src import distributed as jax_distributed
  return getattr(jax_distributed.global_state, 'client', None)


def _next_key(name: str) -> str:
  global _calls
  _calls += 1
  return f'easyhard_jax/{_calls}/{name}'


def shared_decision(value: bool) -> bool:
  """Process 0's decision, on every process.

  Decisions that read the workdir (is this finished? does it match?) are
  taken by process 0 alone: another process reading the same files while
  process 0 rewrites them could decide otherwise, and then the two would
  meet different collectives and hang.
  """
  if jax.process_count() == 1:
    return bool(value)
  client, key = _coordination_client(), _next_key('decision')
  if client is None:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(value))))
  if jax.process_index() == 0:
    client.key_value_set(key, '1' if value else '0')
    return bool(value)
  return client.blocking_key_value_get(
      key, COORDINATION_TIMEOUT_S * 1000) == '1'


def barrier(name: str) -> None:
  """Waits until every process gets here (a no-op with one process).

  Used after process 0 writes files the others read next (a sweep group's
  records) or removes files they would read.
  """
  if jax.process_count() == 1:
    return
  client, key = _coordination_client(), _next_key(name)
  if client is None:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(key)
    return
  client.wait_at_barrier(key, COORDINATION_TIMEOUT_S * 1000)


def fetch(tree):
  """Device values to host numpy, gathering across processes when needed."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return jax.tree.map(
      lambda x: multihost_utils.process_allgather(x, tiled=True), tree)


def put(tree, sharding):
  """Places host data (identical on every process) as global arrays.

  ``jax.device_put`` only reaches this process's devices; a multi-process
  mesh needs ``make_array_from_callback``. PRNG key arrays travel as their raw
  key data.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def one(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(one(jax.random.key_data(x)))
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, sharding)  # Already global: reshard.
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding,
                                        lambda idx: host[idx])

  return jax.tree.map(one, tree)
